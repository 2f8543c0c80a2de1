//! `events`: what lbd does with its lifecycle events besides streaming them on the API
//! (see `crate::ops::events`): an optional command run for each.
use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{collector::Collector, duration};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookConfig>,
}

/// A command run for each event, with the event as one JSON line on its stdin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The program (an absolute path) and its arguments; no shell.
    pub command: Vec<String>,
    /// A run still going after this is killed.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Runs at once at most; later events wait (and past 1024 waiting, are dropped).
    #[serde(default = "default_max_running")]
    pub max_running: u32,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_running() -> u32 {
    4
}

/// Longest accepted `events.hook.timeout`.
pub const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) fn check_events(c: &mut Collector, events: &EventsConfig) {
    let Some(hook) = &events.hook else {
        return;
    };
    match hook.command.first() {
        None => c.err("events.hook.command", "is empty: name the program to run"),
        Some(program) if !PathBuf::from(program).is_absolute() => c.err(
            "events.hook.command",
            format!("`{program}` must be an absolute path (lbd runs it without a shell or PATH)"),
        ),
        Some(_) => {}
    }
    if hook.timeout < Duration::from_millis(100) || hook.timeout > MAX_HOOK_TIMEOUT {
        c.err(
            "events.hook.timeout",
            format!(
                "{} is out of range 100ms..={}",
                duration::format(hook.timeout),
                duration::format(MAX_HOOK_TIMEOUT)
            ),
        );
    }
    if !(1..=64).contains(&hook.max_running) {
        c.err(
            "events.hook.max_running",
            format!("{} is out of range 1..=64", hook.max_running),
        );
    }
}

#[cfg(test)]
mod tests {
    fn problems(events: &str) -> Vec<String> {
        let text = format!("node: {{ zone: az-a }}\ninterfaces: [eth0]\nevents: {events}\n");
        match super::super::parse(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn a_hook_needs_an_absolute_program_and_bounded_runs() {
        assert!(problems("{ hook: { command: [/usr/local/bin/on-event, --quiet] } }").is_empty());
        assert!(problems("{}").is_empty());
        assert_eq!(
            problems("{ hook: { command: [] } }"),
            ["events.hook.command"]
        );
        assert_eq!(
            problems("{ hook: { command: [on-event] } }"),
            ["events.hook.command"]
        );
        assert_eq!(
            problems("{ hook: { command: [/bin/true], timeout: 11m, max_running: 0 } }"),
            ["events.hook.timeout", "events.hook.max_running"]
        );
    }
}
