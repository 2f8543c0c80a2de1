//! `lbctl top`: a live view in one 80x24 screen, refreshed every second. `q` quits (the
//! terminal is put in raw mode only while top runs); `--duration` ends it by itself,
//! and without a terminal (scripts, tests) frames are printed one after another.
use std::{
    io::{IsTerminal, Read, Write},
    time::{Duration, Instant},
};

use clap::Args;

use super::{
    table::{bytes, human, rate},
    Ctx,
};
use crate::{
    model::config::BackendState,
    ops::views::{BackendStats, Counts, StatsView},
};

#[derive(Args)]
pub struct TopArgs {
    /// Stop after this many seconds (default: until q).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// Time between two frames.
const REFRESH: Duration = Duration::from_secs(1);

pub const WIDTH: usize = 80;
pub const HEIGHT: usize = 24;

pub fn run(ctx: &Ctx, args: TopArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let _raw = interactive.then(RawMode::enter).flatten();
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let stats: StatsView = client.get("/v1/stats")?;
        let frame = frame(&stats);
        let mut out = std::io::stdout().lock();
        if interactive {
            // Home, clear; raw mode needs explicit carriage returns.
            write!(out, "\x1b[H\x1b[2J{}", frame.replace('\n', "\r\n"))?;
        } else {
            writeln!(out, "{frame}")?;
        }
        out.flush()?;
        drop(out);
        let wait = match deadline {
            Some(d) if Instant::now() >= d => break,
            Some(d) => d.saturating_duration_since(Instant::now()).min(REFRESH),
            None => REFRESH,
        };
        if interactive {
            if quit_pressed(wait) {
                break;
            }
        } else {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// Most services, and most zones, a screen shows.
const MAX_ROWS: usize = 4;

/// One screen: at most [`HEIGHT`] lines of at most [`WIDTH`] characters.
pub fn frame(s: &StatsView) -> String {
    let mut lines = Vec::new();
    let up = s.uptime_secs;
    lines.push(format!(
        "lbd top  zone {}  up {}:{:02}:{:02}  flows {}/{}  q: quit",
        s.node_zone,
        up / 3600,
        up / 60 % 60,
        up % 60,
        s.flow_table_entries,
        s.flow_table_capacity
    ));
    lines.push(String::new());
    lines.push(heading("SERVICE"));
    for svc in s.services.iter().take(MAX_ROWS) {
        lines.push(format!("{:<34} {}", svc.service, columns(&svc.counts)));
    }
    lines.push(String::new());
    lines.push(heading("BACKEND               ZONE  STATE"));
    let zone_lines = s.zones.len().min(MAX_ROWS) + 2;
    let room = HEIGHT.saturating_sub(lines.len() + zone_lines + 2);
    lines.extend(backend_rows(s, room));
    lines.push(String::new());
    lines.push(heading("ZONE"));
    for z in s.zones.iter().take(MAX_ROWS) {
        lines.push(format!("{:<34} {}", z.zone, columns(&z.counts)));
    }
    lines.push(String::new());
    lines.extend(reason_lines(s));
    lines.truncate(HEIGHT);
    lines
        .iter()
        .map(|l| truncate(l, WIDTH))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The heading of a table: `name` over its first columns, then the traffic columns.
fn heading(name: &str) -> String {
    format!(
        "{name:<34} {:>7} {:>7} {:>7} {:>8} {:>9}",
        "CONNS", "NEW/S", "ACTIVE", "PKTS", "BYTES"
    )
}

/// The busiest backends (by new flows per second) in at most `room` lines, the last
/// saying how many did not fit.
fn backend_rows(s: &StatsView, room: usize) -> Vec<String> {
    let mut backends: Vec<_> = s.backends.iter().collect();
    backends.sort_by(|a, b| {
        b.counts
            .new_flows_per_sec
            .total_cmp(&a.counts.new_flows_per_sec)
    });
    let shown = if backends.len() > room {
        room.saturating_sub(1)
    } else {
        backends.len()
    };
    let mut lines = Vec::new();
    for b in backends.iter().take(shown) {
        // With one service the address says it all; with several, name the service.
        let name = if s.services.len() > 1 {
            format!(
                "{}/{}",
                b.service,
                std::net::SocketAddr::new(b.address, b.port)
            )
        } else {
            std::net::SocketAddr::new(b.address, b.port).to_string()
        };
        lines.push(format!(
            "{:<21} {:<5} {:<6} {}",
            truncate(&name, 21),
            truncate(&b.zone, 5),
            short_state(b),
            columns(&b.counts)
        ));
    }
    if backends.len() > shown {
        lines.push(format!(
            "  ... {} more backends (lbctl stats)",
            backends.len() - shown
        ));
    }
    lines
}

/// The data path's reason counters, wrapped onto as many lines as they need (the
/// screen keeps what it has room for).
fn reason_lines(s: &StatsView) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = "data path:".to_string();
    for r in &s.reasons {
        let r = format!("{} {}", r.reason, human(r.packets));
        if line.chars().count() + 2 + r.chars().count() > WIDTH && line != "data path:" {
            lines.push(std::mem::replace(&mut line, "          ".to_string()));
        }
        line.push_str("  ");
        line.push_str(&r);
    }
    lines.push(line);
    lines
}

/// The traffic columns of a row (under `CONNS NEW/S ACTIVE PKTS BYTES`).
fn columns(c: &Counts) -> String {
    format!(
        "{:>7} {:>7} {:>7} {:>8} {:>9}",
        human(c.connections),
        rate(c.new_flows_per_sec),
        human(c.active_flows),
        human(c.packets_to_backend + c.packets_to_client),
        bytes(c.bytes_to_backend + c.bytes_to_client)
    )
}

/// One word for what the backend does with new flows: `up`, `drain` (set by the
/// operator), `DOWN` (unhealthy), `?` (no verdict yet).
fn short_state(b: &BackendStats) -> &'static str {
    match (b.state, b.health.as_str()) {
        (BackendState::Draining, _) => "drain",
        (_, "unhealthy") => "DOWN",
        (_, "healthy") => "up",
        _ => "?",
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// Waits up to `wait` for a key; true if it was `q` (or Ctrl-C, which raw mode turns
/// into a byte).
fn quit_pressed(wait: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut fds, 1, wait.as_millis() as libc::c_int) };
    if ready <= 0 {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(std::io::stdin().read(&mut byte), Ok(1) if matches!(byte[0], b'q' | b'Q' | 3))
}

/// The terminal in non-canonical, no-echo mode, restored on drop.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<Self> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own.
        unsafe {
            let mut old: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut old) != 0 {
                return None;
            }
            let mut raw = old;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            // Hide the cursor while the view runs.
            print!("\x1b[?25l");
            Some(RawMode(old))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the saved settings.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0) };
        println!("\x1b[?25h");
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::ops::views::{Counts, ReasonCount, ServiceStats, ZoneStats};

    #[test]
    fn a_frame_fits_80x24_whatever_the_size_of_the_lb() {
        let counts = Counts {
            connections: 123_456_789,
            new_flows_per_sec: 12345.6,
            active_flows: 99_999,
            packets_to_backend: u64::MAX / 4,
            bytes_to_backend: u64::MAX / 4,
            ..Default::default()
        };
        let stats = StatsView {
            node_zone: "az-a-very-long-zone-name".into(),
            uptime_secs: 1_000_000,
            rate_interval_secs: 1.0,
            services: (0..10)
                .map(|i| ServiceStats {
                    service: format!("service-with-a-long-name-{i}"),
                    counts,
                })
                .collect(),
            backends: (0..1000)
                .map(|i| BackendStats {
                    service: "web".into(),
                    address: Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250) as u8).into(),
                    port: 8080,
                    zone: "az-b".into(),
                    state: BackendState::Draining,
                    health: "unknown".into(),
                    counts,
                })
                .collect(),
            zones: (0..3)
                .map(|i| ZoneStats {
                    zone: format!("az-{i}"),
                    counts,
                })
                .collect(),
            reasons: vec![
                ReasonCount {
                    reason: "redirect_interface".into(),
                    packets: 1 << 40,
                },
                ReasonCount {
                    reason: "pass_no_service".into(),
                    packets: 12,
                },
            ],
            flow_table_entries: 262_144,
            flow_table_capacity: 262_144,
            flow_table6_entries: 0,
            flow_table6_capacity: 65_536,
            flow_table_overflow_entries: 0,
            flow_table_overflow_capacity: 131_072,
        };
        let f = frame(&stats);
        let lines: Vec<&str> = f.lines().collect();
        assert!(lines.len() <= HEIGHT, "{} lines:\n{f}", lines.len());
        for l in &lines {
            assert!(l.chars().count() <= WIDTH, "too wide: {l:?}");
        }
        assert!(f.contains("more backends"), "{f}");
    }
}
