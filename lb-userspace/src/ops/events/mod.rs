//! Lifecycle events as operators and scripts see them: numbered, stamped, the last
//! [`KEPT`] kept for `GET /v1/events`, and broadcast to followers (the API's streams and
//! the event hook) through a bounded channel. Publishing never waits: a follower that
//! falls [`KEPT`] events behind loses them and is told so (see [`route`]).
pub mod hook;
pub mod route;
pub mod view;

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;

pub use self::view::EventLine;
use crate::model::events::Event;

/// Events kept for readers that come later, and the most a follower may fall behind.
pub const KEPT: usize = 1024;

pub type Published = Arc<EventLine>;

pub struct EventLog {
    kept: Mutex<Kept>,
    tx: broadcast::Sender<Published>,
    /// Followers cut off for falling behind.
    cut: AtomicU64,
    /// Follow requests refused because the followers' cap was reached.
    refused: AtomicU64,
    /// What became of the events given to the hook.
    hook: Arc<hook::HookCounts>,
}

#[derive(Default)]
struct Kept {
    next_seq: u64,
    lines: VecDeque<Published>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            kept: Mutex::new(Kept {
                next_seq: 1,
                lines: VecDeque::new(),
            }),
            tx: broadcast::channel(KEPT).0,
            cut: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            hook: Arc::default(),
        }
    }
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers, stamps, keeps and broadcasts `events`, in order. Never waits.
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut kept = self.lock();
        for e in events {
            let line = Arc::new(EventLine {
                seq: kept.next_seq,
                time_unix_ms: now,
                event: e.kind,
                service: e.service,
                backend: e.backend,
                zone: e.zone,
                detail: e.detail,
            });
            kept.next_seq += 1;
            if kept.lines.len() == KEPT {
                kept.lines.pop_front();
            }
            kept.lines.push_back(line.clone());
            // No receiver is no error: nobody follows.
            let _ = self.tx.send(line);
        }
    }

    /// The kept events after `since`, and a receiver of every later one: taken under
    /// one lock, so a follower sees each event exactly once.
    pub fn follow(&self, since: u64) -> (Vec<Published>, broadcast::Receiver<Published>) {
        let kept = self.lock();
        let past = kept
            .lines
            .iter()
            .filter(|l| l.seq > since)
            .cloned()
            .collect();
        (past, self.tx.subscribe())
    }

    /// The kept events after `since`.
    pub fn since(&self, since: u64) -> Vec<Published> {
        self.follow(since).0
    }

    /// Events published since lbd started.
    pub fn published(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Counts a follower cut off for falling behind.
    pub fn count_cut(&self) {
        self.cut.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a follow request refused at the followers' cap.
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Follow requests refused at the followers' cap since lbd started.
    pub fn followers_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Followers cut off for falling behind since lbd started.
    pub fn followers_cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// What became of the events given to the hook.
    pub fn hook_counts(&self) -> &Arc<hook::HookCounts> {
        &self.hook
    }

    /// A receiver of every event published from now on (the hook's).
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::EventKind;

    fn zone_event(zone: &str) -> Event {
        Event::zone(EventKind::ZoneDrained, "web", zone)
    }

    #[test]
    fn events_are_numbered_kept_and_followed_without_gap_or_repeat() {
        let log = EventLog::default();
        log.publish(vec![zone_event("a"), zone_event("b")]);
        let (past, mut rx) = log.follow(1);
        assert_eq!(past.iter().map(|l| l.seq).collect::<Vec<_>>(), [2]);
        log.publish(vec![zone_event("c")]);
        let next = rx.try_recv().unwrap();
        assert_eq!((next.seq, next.zone.as_str()), (3, "c"));
        assert!(rx.try_recv().is_err());
        assert_eq!(log.published(), 3);
    }

    #[test]
    fn only_the_last_kept_events_stay_and_a_slow_follower_is_told_how_many_it_lost() {
        let log = EventLog::default();
        let mut rx = log.subscribe();
        log.publish((0..KEPT + 5).map(|i| zone_event(&i.to_string())).collect());
        let kept = log.since(0);
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].seq, 6);
        assert_eq!(
            rx.try_recv().unwrap_err(),
            broadcast::error::TryRecvError::Lagged(5)
        );
    }

    #[test]
    fn a_line_is_one_json_object_without_an_absent_backend() {
        let log = EventLog::default();
        log.publish(vec![zone_event("az-b")]);
        let line = log.since(0)[0].to_json_line();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "zone_drained");
        assert_eq!(value["zone"], "az-b");
        assert!(value.get("backend").is_none());
        assert!(line.ends_with("}\n"));
    }
}
