//! BIRD's control-socket replies, parsed (BIRD 2; the protocol of `birdc`, see BIRD's
//! `doc/prog-intro` and `sysdep/unix/main.c`): after a greeting line, each command gets
//! reply lines `CODE-text` (more follow), ` text` (continues the previous code) and a
//! last `CODE text`; codes 8000-9999 are errors (8xxx run-time, 9xxx parse). lbd only
//! reads BIRD (`show protocols`, `show bfd sessions`, `show route <vip>/32`); the
//! fixtures in `bird_fixtures/` are replies captured from BIRD 2.0.12 running the
//! shipped `deploy/bird/` configs.
use serde::{Deserialize, Serialize};

/// One reply line: its code (inherited by a continuation line) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// BIRD answered with an error code.
    #[error("BIRD answered {code}: {message}")]
    Bird { code: u16, message: String },
    #[error("not a BIRD reply line: {0:?}")]
    Malformed(String),
    #[error("the reply ended without its last line")]
    Incomplete,
}

/// A line's code, and whether more lines follow (`-`) or it is the last (` `).
fn coded(line: &str) -> Option<(u16, bool)> {
    let bytes = line.as_bytes();
    if bytes.len() < 5 || !bytes[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..4].parse().ok()?;
    match bytes[4] {
        b'-' => Some((code, false)),
        b' ' => Some((code, true)),
        _ => None,
    }
}

/// Whether `text` (read so far, after the greeting) holds a whole reply: its last
/// complete line is a last line.
pub fn is_complete(text: &str) -> bool {
    let Some(body) = text.strip_suffix('\n') else {
        return false;
    };
    let last = body.rsplit('\n').next().unwrap_or(body);
    coded(last).is_some_and(|(_, last)| last)
}

/// The lines of one whole reply, or BIRD's error.
pub fn parse(text: &str) -> Result<Vec<Line>, ReplyError> {
    let mut lines = Vec::new();
    let mut code = None;
    for raw in text.lines() {
        if let Some((c, last)) = coded(raw) {
            if (8000..10000).contains(&c) {
                return Err(ReplyError::Bird {
                    code: c,
                    message: raw[5..].trim().to_string(),
                });
            }
            code = Some(c);
            lines.push(Line {
                code: c,
                text: raw[5..].to_string(),
            });
            if last {
                return Ok(lines);
            }
        } else if let (Some(rest), Some(c)) = (raw.strip_prefix(' '), code) {
            lines.push(Line {
                code: c,
                text: rest.to_string(),
            });
        } else {
            return Err(ReplyError::Malformed(raw.to_string()));
        }
    }
    Err(ReplyError::Incomplete)
}

/// The greeting BIRD sends on connect (`0001 BIRD 2.0.12 ready.`): its text.
pub fn greeting(line: &str) -> Result<String, ReplyError> {
    match coded(line.trim_end_matches('\n')) {
        Some((1, true)) => Ok(line[5..].trim().to_string()),
        _ => Err(ReplyError::Malformed(line.to_string())),
    }
}

/// A row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protocol {
    pub name: String,
    /// `BGP`, `BFD`, `Direct`, ...
    pub proto: String,
    /// `up`, `start`, `down`, ...
    pub state: String,
    pub since: String,
    /// For BGP the session state (`Established`, `Active`, ...) and the last error.
    pub info: String,
}

/// `show protocols`: code 1002 rows (the 2002 line is the header).
pub fn protocols(lines: &[Line]) -> Vec<Protocol> {
    lines
        .iter()
        .filter(|l| l.code == 1002)
        .filter_map(|l| {
            let mut words = l.text.split_whitespace();
            let name = words.next()?.to_string();
            let proto = words.next()?.to_string();
            let _table = words.next()?;
            let state = words.next()?.to_string();
            let since = words.next()?.to_string();
            let info = words.collect::<Vec<_>>().join(" ");
            Some(Protocol {
                name,
                proto,
                state,
                since,
                info,
            })
        })
        .collect()
}

/// A row of `show bfd sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdSession {
    /// The BFD protocol instance the session belongs to.
    pub protocol: String,
    pub address: String,
    pub interface: String,
    /// `Up`, `Down`, `Init`, `AdminDown`.
    pub state: String,
    pub since: String,
}

/// `show bfd sessions`: code 1020, a `name:` line per BFD protocol, a header, then a
/// row per session.
pub fn bfd_sessions(lines: &[Line]) -> Vec<BfdSession> {
    let mut protocol = String::new();
    let mut sessions = Vec::new();
    for l in lines.iter().filter(|l| l.code == 1020) {
        let text = l.text.trim();
        if let Some(name) = text.strip_suffix(':') {
            protocol = name.to_string();
            continue;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() < 4 || words[0] == "IP" {
            continue;
        }
        sessions.push(BfdSession {
            protocol: protocol.clone(),
            address: words[0].to_string(),
            interface: words[1].to_string(),
            state: words[2].to_string(),
            since: words[3].to_string(),
        });
    }
    sessions
}

/// Whether the reply to `show route <vip>/32` holds a route out of `lo` (what `protocol
/// direct` on `lo` makes of lbd's /32, and what BIRD exports): BIRD's 8001 `Network not
/// found` is no route; any other error is passed on.
pub fn route_on_lo(reply: Result<Vec<Line>, ReplyError>) -> Result<bool, ReplyError> {
    match reply {
        Ok(lines) => Ok(lines
            .iter()
            .any(|l| l.code == 1007 && l.text.trim() == "dev lo")),
        Err(ReplyError::Bird { code: 8001, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "bird_reply_tests.rs"]
mod tests;
