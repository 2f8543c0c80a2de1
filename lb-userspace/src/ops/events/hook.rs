//! `events.hook`: a command run for each lifecycle event, with the event as one JSON
//! line on its stdin and in its environment (`LB_EVENT`, `LB_EVENT_SEQ`, `LB_SERVICE`,
//! `LB_BACKEND`, `LB_ZONE`). It runs on its own task, fed by the event broadcast, so lbd's
//! loop never waits for it: at most `max_running` at once, each killed after `timeout`,
//! and events that find the runner [`KEPT`](super::KEPT) behind are dropped, logged and
//! counted. The command gets none of lbd's capabilities (its ambient set is cleared),
//! its stdin is the event, its stdout is discarded and its stderr is lbd's (the journal).
//!
//! A command rather than a webhook URL: it needs no HTTP client, TLS or credentials in
//! lbd, and a command can POST to a webhook itself (`curl --data-binary @-`).
use std::{
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use log::{info, warn};
use tokio::{
    io::AsyncWriteExt,
    process::Command,
    sync::{broadcast, watch, Semaphore},
    task::JoinHandle,
};

use super::{EventLog, Published};
use crate::model::config::HookConfig;

/// What became of each event given to the hook (for `/metrics`).
#[derive(Debug, Default)]
pub struct HookCounts {
    pub ok: AtomicU64,
    /// The command exited with a failure status or was killed by a signal.
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    /// The command could not be started.
    pub not_started: AtomicU64,
    /// Never run: the runner was too far behind.
    pub dropped: AtomicU64,
}

impl HookCounts {
    /// `(result label, count)` for each outcome.
    pub fn by_result(&self) -> [(&'static str, u64); 5] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("ok", get(&self.ok)),
            ("failed", get(&self.failed)),
            ("timeout", get(&self.timed_out)),
            ("not_started", get(&self.not_started)),
            ("dropped", get(&self.dropped)),
        ]
    }
}

/// Runs `hook` for every event published to `log` from now on, until `stopped`.
pub fn start(hook: HookConfig, log: &EventLog, stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    let rx = log.subscribe();
    let counts = log.hook_counts().clone();
    info!(
        "event hook: {} for each event (at most {} at once, each at most {:?})",
        hook.command.join(" "),
        hook.max_running,
        hook.timeout
    );
    tokio::spawn(run(hook, rx, counts, stopped))
}

async fn run(
    hook: HookConfig,
    mut rx: broadcast::Receiver<Published>,
    counts: Arc<HookCounts>,
    mut stopped: watch::Receiver<bool>,
) {
    let hook = Arc::new(hook);
    let slots = Arc::new(Semaphore::new(hook.max_running as usize));
    loop {
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = stopped.changed() => return,
        };
        let event = match received {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                counts.dropped.fetch_add(lost, Ordering::Relaxed);
                warn!(
                    "event hook: {lost} events dropped without running the hook: it fell behind (runs that last long, or too many events)"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = stopped.changed() => return,
        };
        let (hook, counts) = (hook.clone(), counts.clone());
        tokio::spawn(async move {
            let _slot = slot;
            run_one(&hook, &event, &counts).await;
        });
    }
}

/// One run of the hook for `event`, bounded by its timeout.
async fn run_one(hook: &HookConfig, event: &Published, counts: &HookCounts) {
    let what = format!(
        "event hook for event {} ({})",
        event.seq,
        event.event.name()
    );
    let mut command = Command::new(&hook.command[0]);
    command
        .args(&hook.command[1..])
        .env("LB_EVENT", event.event.name())
        .env("LB_EVENT_SEQ", event.seq.to_string())
        .env("LB_SERVICE", &event.service)
        .env("LB_BACKEND", event.backend.as_deref().unwrap_or(""))
        .env("LB_ZONE", &event.zone)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // A group of its own, so that a timeout kills whatever it started too (a shell's
        // `curl`), not only the command itself.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec, and only makes one prctl system
    // call, which is async-signal-safe (no allocation, no lock).
    unsafe {
        command.pre_exec(|| {
            // Ambient capabilities survive exec; lbd's (CAP_BPF, CAP_NET_ADMIN) must not
            // reach a script.
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            counts.not_started.fetch_add(1, Ordering::Relaxed);
            warn!("{what}: cannot start {}: {e}", hook.command[0]);
            return;
        }
    };
    let line = event.to_json_line();
    let finished = tokio::time::timeout(hook.timeout, async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin is no failure.
            let _ = stdin.write_all(line.as_bytes()).await;
        }
        child.wait().await
    })
    .await;
    match finished {
        Ok(Ok(status)) if status.success() => {
            counts.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(status)) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            warn!("{what}: {} {status}", hook.command[0]);
        }
        Ok(Err(e)) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            warn!("{what}: waiting for {}: {e}", hook.command[0]);
        }
        Err(_) => {
            counts.timed_out.fetch_add(1, Ordering::Relaxed);
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: a plain kill(2) of the group the child leads (its pid is not
                // reaped yet, so neither it nor its group id can have been reused).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            warn!(
                "{what}: {} still running after {:?}: killed",
                hook.command[0], hook.timeout
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        model::events::{Event, EventKind},
        model::plan::BackendRef,
    };

    fn hook(script: &str, timeout: Duration) -> HookConfig {
        HookConfig {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout,
            max_running: 1,
        }
    }

    fn drained_event() -> Published {
        let log = EventLog::default();
        let at = BackendRef {
            service: "web".into(),
            address: std::net::Ipv4Addr::new(10, 1, 0, 12).into(),
            port: 8080,
        };
        let detail = "no flows left".to_string();
        log.publish(vec![Event::backend(
            EventKind::BackendDrained,
            &at,
            "az-b",
            detail,
        )]);
        log.since(0).remove(0)
    }

    #[tokio::test]
    async fn the_command_gets_the_event_on_stdin_and_in_its_environment() {
        let out = std::env::temp_dir().join(format!("lb-hook-{}", std::process::id()));
        let script = format!(
            "cat > {0}; echo \"$LB_EVENT $LB_EVENT_SEQ $LB_SERVICE $LB_BACKEND $LB_ZONE\" >> {0}",
            out.display()
        );
        let counts = HookCounts::default();
        let event = drained_event();
        run_one(&hook(&script, Duration::from_secs(5)), &event, &counts).await;
        let written = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(
            written,
            format!(
                "{}backend_drained 1 web 10.1.0.12:8080 az-b\n",
                event.to_json_line()
            )
        );
        assert_eq!(counts.by_result()[0], ("ok", 1));
    }

    #[tokio::test]
    async fn a_failing_or_hanging_or_missing_command_is_counted_as_such() {
        let counts = HookCounts::default();
        let event = drained_event();
        run_one(&hook("exit 3", Duration::from_secs(5)), &event, &counts).await;
        let started = std::time::Instant::now();
        run_one(
            &hook("sleep 30", Duration::from_millis(200)),
            &event,
            &counts,
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed at its timeout"
        );
        let missing = HookConfig {
            command: vec!["/nonexistent/lb-hook".into()],
            ..hook("", Duration::from_secs(1))
        };
        run_one(&missing, &event, &counts).await;
        assert_eq!(
            counts.by_result(),
            [
                ("ok", 0),
                ("failed", 1),
                ("timeout", 1),
                ("not_started", 1),
                ("dropped", 0)
            ]
        );
    }

    /// Whether process `pid` is gone or a zombie (killed, waiting to be reaped).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_command_started_too() {
        let pidfile = std::env::temp_dir().join(format!("lb-hook-pid-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let counts = HookCounts::default();
        run_one(
            &hook(&script, Duration::from_millis(300)),
            &drained_event(),
            &counts,
        )
        .await;
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&pidfile);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !dead(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            dead(pid),
            "the shell's sleep {pid} outlived the hook's timeout"
        );
        assert_eq!(counts.by_result()[2], ("timeout", 1));
    }
}
