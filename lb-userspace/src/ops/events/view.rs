//! What `GET /v1/events` writes, shared with `lbctl events`.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::events::EventKind;

/// The longest one follow lasts: a client that wants more reconnects with `since`.
pub const MAX_FOLLOW: Duration = Duration::from_secs(3600);

/// One published event, as `GET /v1/events` writes it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// 1, 2, ... in the order lbd noted them since it started.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    pub event: EventKind,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub zone: String,
    pub detail: String,
}

impl EventLine {
    /// The line, newline included.
    pub fn to_json_line(&self) -> String {
        let mut text = serde_json::to_string(self).expect("event lines serialize");
        text.push('\n');
        text
    }
}

impl std::fmt::Display for EventLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = self.backend.as_deref().unwrap_or("-");
        let ms = self.time_unix_ms % 86_400_000;
        let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
        write!(
            f,
            "{:>6} {h:02}:{m:02}:{s:02}.{:03}Z {:<20} {} {} {} {}",
            self.seq,
            ms % 1000,
            self.event.name(),
            self.service,
            what,
            self.zone,
            self.detail
        )
    }
}
