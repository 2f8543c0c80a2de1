//! The limits on a real socket: a cap that makes room, timeouts, graceful stop.
use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use axum::{routing::get, Router};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use super::*;

const BOUND: Duration = Duration::from_secs(10);

type Started = (
    std::net::SocketAddr,
    Arc<ListenerStats>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

async fn start(limits: ConnectionLimits) -> Started {
    start_with(limits, Router::new().route("/", get(|| async { "hi" }))).await
}

async fn start_with(limits: ConnectionLimits, router: Router) -> Started {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ListenerStats::new("test", limits.max));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, router, limits, stats.clone(), stopped));
    (addr, stats, stop, task)
}

/// Reads until the server closes; what it said.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("the server closes within the bound")
        .unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_ok(addr: std::net::SocketAddr) {
    let mut s = timeout(BOUND, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut s).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hi"),
        "{answer:?}"
    );
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn at_the_cap_the_oldest_idle_connection_makes_room_for_a_request() {
    let limits = ConnectionLimits {
        max: 3,
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let (addr, stats, stop, task) = start(limits).await;
    let mut held = Vec::new();
    for i in 0..3u64 {
        held.push(TcpStream::connect(addr).await.unwrap());
        wait_for("accepted", || stats.accepted.load(Relaxed) == i + 1).await;
    }
    // A half-sent header on the newest.
    held[2].write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    assert_eq!(stats.open.load(Relaxed), 3);
    // Two more clients get answers; each takes the place of the oldest waiting one.
    get_ok(addr).await;
    assert_eq!(until_closed(&mut held[0]).await, "");
    wait_for("the answered one closed", || stats.open.load(Relaxed) == 2).await;
    held.push(TcpStream::connect(addr).await.unwrap());
    wait_for("accepted", || stats.open.load(Relaxed) == 3).await;
    get_ok(addr).await;
    assert_eq!(until_closed(&mut held[1]).await, "");
    wait_for("evictions counted", || stats.evicted.load(Relaxed) == 2).await;
    assert_eq!(stats.accepted.load(Relaxed), 6);
    assert_eq!(stats.refused.load(Relaxed), 0);
    // Stop: the waiting connections close, the serving task ends.
    stop.send(true).unwrap();
    assert_eq!(until_closed(&mut held[2]).await, "");
    assert_eq!(until_closed(&mut held[3]).await, "");
    timeout(BOUND, task).await.unwrap().unwrap();
    assert_eq!(
        stats.header_timeouts.load(Relaxed) + stats.idle_timeouts.load(Relaxed),
        0
    );
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_by_their_timeouts() {
    let limits = ConnectionLimits {
        max: 8,
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
    };
    let (addr, stats, _stop, _task) = start(limits).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    // One byte at a time, never the whole header: the header timeout runs from the
    // first byte and trickling does not extend it.
    let started = Instant::now();
    for b in b"GET / HTTP/1.1\r\n" {
        if slow.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(until_closed(&mut slow).await, "");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(until_closed(&mut silent).await, "");
    wait_for("timeouts counted", || {
        stats.header_timeouts.load(Relaxed) == 1 && stats.idle_timeouts.load(Relaxed) == 1
    })
    .await;
    wait_for("none open", || stats.open.load(Relaxed) == 0).await;
    // A keep-alive connection gets its answer, then is idle again.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut kept).await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hi"),
        "{answer:?}"
    );
    assert_eq!(stats.idle_timeouts.load(Relaxed), 2);
    assert_eq!(stats.evicted.load(Relaxed), 0);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_answering_a_new_one_gets_503() {
    let limits = ConnectionLimits {
        max: 2,
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let waiting = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (held, entered) = (gate.clone(), waiting.clone());
    let router = Router::new().route(
        "/slow",
        get(move || {
            let (gate, entered) = (held.clone(), entered.clone());
            async move {
                entered.fetch_add(1, Relaxed);
                let _permit = gate.acquire().await.unwrap();
                "done"
            }
        }),
    );
    let (addr, stats, _stop, _task) = start_with(limits, router).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    wait_for("both answering", || waiting.load(Relaxed) == 2).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    let answer = until_closed(&mut third).await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.ends_with(
            "{\"error\": \"lbd's test listener is at its cap of 2 connections, all being answered; retry\"}"
        ),
        "{answer:?}"
    );
    assert_eq!(stats.refused.load(Relaxed), 1);
    assert_eq!(stats.evicted.load(Relaxed), 0);
    gate.add_permits(2);
    for mut s in busy {
        let answer = until_closed(&mut s).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("done"),
            "{answer:?}"
        );
    }
}
