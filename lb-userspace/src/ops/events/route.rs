//! `GET /v1/events[?since=SEQ][&service=S][&follow=1[&for=DURATION]]`: the kept
//! lifecycle events after `since`, one JSON object per line ([`EventLine`]); with
//! `follow`, then every new one as it is published, until `for` (default and at most
//! [`MAX_FOLLOW`]) passes, the client goes away or lbd stops. A follower that falls
//! [`KEPT`](super::KEPT) events behind (it does not read) is cut off with a last line
//! `{"error": ..., "lost": N, "resume_since": SEQ}`: lbd never waits for a reader.
//!
//! Followers hold their connection for as long as they follow, and a listener never
//! closes a connection that is being answered: so at most [`followers_cap`] follow at
//! once (half the admin listener's connection cap), and more are refused (503) rather
//! than let them fill the listener and shut out the admin calls.
use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures_util::stream;
use serde::Deserialize;
use tokio::{
    sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use super::{view::MAX_FOLLOW, EventLog, Published};
use crate::model::config::duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events numbered after this (default 0: every kept one).
    pub since: Option<u64>,
    /// Only this service's events.
    pub service: Option<String>,
    /// `1` or `true`: keep the answer open and stream new events.
    pub follow: Option<String>,
    /// How long to follow, e.g. `10m` (default and at most 1h).
    #[serde(rename = "for")]
    pub duration: Option<String>,
}

/// Whether to follow, and for how long; or an error naming the parameter.
pub fn follow_for(q: &EventsQuery) -> Result<Option<Duration>, String> {
    let follow = match q.follow.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => return Err(format!("follow: `{other}` is not 1, true, 0 or false")),
    };
    let how_long = match &q.duration {
        Some(text) => {
            let d = duration::parse(text).map_err(|e| format!("for: {e}"))?;
            if d.is_zero() || d > MAX_FOLLOW {
                return Err(format!(
                    "for: {} is out of range (more than 0, at most {})",
                    duration::format(d),
                    duration::format(MAX_FOLLOW)
                ));
            }
            d
        }
        None => MAX_FOLLOW,
    };
    Ok(follow.then_some(how_long))
}

#[derive(Clone)]
struct EventsState {
    log: Arc<EventLog>,
    stopped: watch::Receiver<bool>,
    /// One permit per follower that may be open at once.
    followers: Arc<Semaphore>,
    cap: usize,
}

/// How many followers may be open at once on an admin listener that holds at most
/// `listener_max` connections: half of them, so the other half is always there for the
/// admin calls (a listener at its cap refuses new connections when every open one is
/// being answered, and a follower is being answered for as long as it follows).
pub fn followers_cap(listener_max: u32) -> usize {
    (listener_max / 2) as usize
}

/// The events route, to merge into the admin API's router; at most `max_followers`
/// follow at once (see [`followers_cap`]).
pub fn router(log: Arc<EventLog>, stopped: watch::Receiver<bool>, max_followers: usize) -> Router {
    Router::new()
        .route("/v1/events", get(events))
        .with_state(EventsState {
            log,
            stopped,
            followers: Arc::new(Semaphore::new(max_followers)),
            cap: max_followers,
        })
}

/// What the stream still has to write.
struct Follow {
    /// For counting a cut-off follower.
    log: Arc<EventLog>,
    past: std::vec::IntoIter<Published>,
    rx: Option<broadcast::Receiver<Published>>,
    stopped: watch::Receiver<bool>,
    until: Instant,
    service: Option<String>,
    /// The last sequence number written, for the cut-off line's `resume_since`.
    last: u64,
    /// A follower's place under the cap, given back when the answer ends or the client
    /// goes away (the stream is dropped with the connection).
    _permit: Option<OwnedSemaphorePermit>,
}

async fn events(State(state): State<EventsState>, Query(q): Query<EventsQuery>) -> Response {
    let how_long = match follow_for(&q) {
        Ok(how_long) => how_long,
        // The admin API's error shape (`crate::ops::api::error`), which this module,
        // below the runtime the API's handlers share, does not import.
        Err(message) => {
            let body = axum::Json(serde_json::json!({ "error": message }));
            return (axum::http::StatusCode::BAD_REQUEST, body).into_response();
        }
    };
    let permit = match how_long {
        None => None,
        Some(_) => match state.followers.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                state.log.count_refused();
                log::warn!(
                    "refused an events follower: {} already follow (the cap keeps room on \
                     the admin listener for other calls)",
                    state.cap
                );
                let message = format!(
                    "too many event followers: {} already follow, the most allowed (half of \
                     api.connections.max); retry later, or read without follow",
                    state.cap
                );
                let body = axum::Json(serde_json::json!({ "error": message }));
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            }
        },
    };
    let since = q.since.unwrap_or(0);
    let (past, rx) = state.log.follow(since);
    let follow = Follow {
        log: state.log.clone(),
        past: past.into_iter(),
        rx: how_long.is_some().then_some(rx),
        stopped: state.stopped,
        until: Instant::now() + how_long.unwrap_or_default(),
        service: q.service,
        last: since,
        _permit: permit,
    };
    let lines = stream::unfold(follow, |mut f| async move {
        let text = next_line(&mut f).await?;
        Some((Ok::<_, Infallible>(Bytes::from(text)), f))
    });
    (
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The next line to write, or `None` when the answer is over.
async fn next_line(f: &mut Follow) -> Option<String> {
    let wanted =
        |l: &Published, service: &Option<String>| service.as_ref().is_none_or(|s| *s == l.service);
    for line in f.past.by_ref() {
        f.last = line.seq;
        if wanted(&line, &f.service) {
            return Some(line.to_json_line());
        }
    }
    loop {
        let rx = f.rx.as_mut()?;
        if *f.stopped.borrow() {
            return None;
        }
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep_until(f.until) => return None,
            _ = f.stopped.changed() => return None,
        };
        match received {
            Ok(line) => {
                f.last = line.seq;
                if wanted(&line, &f.service) {
                    return Some(line.to_json_line());
                }
            }
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                f.rx = None;
                log::warn!("an events follower fell {lost} events behind and was cut off");
                f.log.count_cut();
                return Some(cut_off_line(lost, f.last));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// The last line to a follower that fell behind.
fn cut_off_line(lost: u64, last: u64) -> String {
    let mut text = serde_json::json!({
        "error": format!(
            "events stream cut off: this reader fell behind and {lost} events were dropped for it; reconnect with since={last}"
        ),
        "lost": lost,
        "resume_since": last,
    })
    .to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::{Event, EventKind};

    fn q(follow: Option<&str>, duration: Option<&str>) -> EventsQuery {
        EventsQuery {
            follow: follow.map(str::to_string),
            duration: duration.map(str::to_string),
            ..EventsQuery::default()
        }
    }

    #[test]
    fn follow_and_its_duration_are_bounded_naming_the_parameter() {
        assert_eq!(follow_for(&q(None, None)).unwrap(), None);
        assert_eq!(follow_for(&q(Some("1"), None)).unwrap(), Some(MAX_FOLLOW));
        assert_eq!(
            follow_for(&q(Some("true"), Some("90s"))).unwrap(),
            Some(Duration::from_secs(90))
        );
        let refused = |query| follow_for(&query).unwrap_err();
        assert!(refused(q(Some("yes"), None)).starts_with("follow: "));
        assert!(refused(q(Some("1"), Some("2h"))).starts_with("for: 2h is out of range"));
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_gets_a_last_line_saying_where_to_resume() {
        let log = Arc::new(EventLog::default());
        log.publish(vec![Event::zone(EventKind::ZoneDrained, "web", "az-a")]);
        let (past, rx) = log.follow(0);
        let (_stop, stopped) = watch::channel(false);
        let mut f = Follow {
            log: log.clone(),
            past: past.into_iter(),
            rx: Some(rx),
            stopped,
            until: Instant::now() + Duration::from_secs(5),
            service: None,
            last: 0,
            _permit: None,
        };
        let first = next_line(&mut f).await.unwrap();
        assert!(first.contains("\"seq\":1"), "{first}");
        let many = (0..super::super::KEPT + 3)
            .map(|_| Event::zone(EventKind::ZoneUndrained, "web", "az-a"))
            .collect();
        log.publish(many);
        let last = next_line(&mut f).await.unwrap();
        let value: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert_eq!(value["lost"], 3);
        assert_eq!(value["resume_since"], 1);
        assert_eq!(next_line(&mut f).await, None, "the answer ends");
        assert_eq!(log.followers_cut(), 1);
    }

    /// Followers on a real listener: at most half its connections follow, the rest are
    /// refused with 503, and an admin call still gets in, however many try to follow.
    #[tokio::test]
    async fn followers_are_capped_below_the_listener_cap_so_admin_calls_get_in() {
        use tokio::{
            io::{AsyncReadExt, AsyncWriteExt},
            net::{TcpListener, TcpStream},
            time::timeout,
        };

        use crate::{
            model::config::ConnectionLimits,
            ops::listeners::{serve, stats::ListenerStats},
        };

        const BOUND: Duration = Duration::from_secs(10);
        let limits = ConnectionLimits {
            max: 4,
            ..ConnectionLimits::default()
        };
        let log = Arc::new(EventLog::default());
        let (stop, stopped) = watch::channel(false);
        let router = router(log.clone(), stopped.clone(), followers_cap(limits.max))
            .route("/", get(|| async { "hi" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ListenerStats::new("test", limits.max));
        let task = tokio::spawn(serve(listener, router, limits.clone(), stats, stopped));

        // Sends `request` and reads what arrives first (a follower's answer stays open).
        let ask = |request: &'static str| async move {
            let mut s = timeout(BOUND, TcpStream::connect(addr))
                .await
                .unwrap()
                .unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut buf = vec![0; 4096];
            let n = timeout(BOUND, s.read(&mut buf))
                .await
                .expect("an answer within the bound")
                .unwrap();
            (s, String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        const FOLLOW: &str = "GET /v1/events?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut held = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..limits.max {
            let (s, answer) = ask(FOLLOW).await;
            statuses.push(answer.lines().next().unwrap_or_default().to_string());
            held.push(s);
        }
        assert_eq!(
            statuses,
            [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 503 Service Unavailable",
                "HTTP/1.1 503 Service Unavailable"
            ]
        );
        assert_eq!(log.followers_refused(), 2);
        let (_, answer) = ask("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");

        // A follower that goes away gives its place back.
        drop(held.remove(0));
        let mut again = String::new();
        for _ in 0..100 {
            let (s, answer) = ask(FOLLOW).await;
            again = answer.lines().next().unwrap_or_default().to_string();
            held.push(s);
            if again == "HTTP/1.1 200 OK" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(again, "HTTP/1.1 200 OK");
        stop.send(true).unwrap();
        drop(held);
        timeout(BOUND, task).await.unwrap().unwrap();
    }
}
