//! Reading `lbd`'s log: it stamps every line with UTC milliseconds
//! (`[2026-11-25T10:20:42.123Z INFO  lb_userspace::control::fleet] ...`), so a test can put lbd's
//! events (a failed probe, a state change) on the same clock as its own connections.
//!
//! lbd logs a table change only once the new table is live, so a line's stamp is an
//! upper bound on when the data path changed: a connection that started after the
//! [`live_after`] of that line met the new table, however loaded the machine is.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The timestamp of one log line, if it starts with `[YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn line_time(line: &str) -> Option<SystemTime> {
    let stamp = line.strip_prefix('[')?.get(..24)?;
    let b = stamp.as_bytes();
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let millis = secs * 1000 + num(20..23)?;
    Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).ok()?))
}

/// Every line containing `needle`, with its time.
pub fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<(SystemTime, &'a str)> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| Some((line_time(l)?, l)))
        .collect()
}

/// The time of the first line containing `needle`.
pub fn first_time(log: &str, needle: &str) -> Option<SystemTime> {
    lines_with(log, needle).first().map(|(t, _)| *t)
}

/// Milliseconds from `a` to `b` (negative when `b` is earlier).
pub fn millis_between(a: SystemTime, b: SystemTime) -> i64 {
    match b.duration_since(a) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The first instant certainly after the line stamped `stamp` was written (stamps are
/// truncated to the millisecond).
pub fn live_after(stamp: SystemTime) -> SystemTime {
    stamp + Duration::from_millis(1)
}

/// One table swap lbd logged (`tables updated in X ms: ...`): the new table went live
/// between `begun` and `done`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableUpdate {
    pub begun: SystemTime,
    pub done: SystemTime,
}

/// Every table swap in `log`, in order.
pub fn table_updates(log: &str) -> Vec<TableUpdate> {
    lines_with(log, "tables updated in ")
        .into_iter()
        .filter_map(|(done, line)| {
            let ms: f64 = line
                .split("tables updated in ")
                .nth(1)?
                .split(" ms")
                .next()?
                .parse()
                .ok()?;
            // The swap began this long before the line; one more millisecond for the
            // stamp's truncation.
            let took = Duration::from_micros((ms * 1000.0) as u64) + Duration::from_millis(1);
            Some(TableUpdate {
                begun: done.checked_sub(took)?,
                done: live_after(done),
            })
        })
        .collect()
}

/// The table swaps logged after the first line containing `needle` (found by the
/// lines' order, not their stamps, which two lines may share); none without that line.
pub fn updates_after(log: &str, needle: &str) -> Vec<TableUpdate> {
    let Some(at) = log.find(needle) else {
        return Vec::new();
    };
    let next_line = log[at..].find('\n').map_or(log.len(), |n| at + n);
    table_updates(&log[next_line..])
}

/// The first of [`updates_after`].
pub fn first_update_after(log: &str, needle: &str) -> Option<TableUpdate> {
    updates_after(log, needle).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_the_epoch() {
        let t = line_time("[2026-11-25T10:20:42.123Z INFO  lbd] x").unwrap();
        // 2026-11-25 is day 20782 since 1970-01-01.
        let want = (20_782 * 86_400 + 10 * 3600 + 20 * 60 + 42) * 1000 + 123;
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_millis(), want);
        assert_eq!(
            line_time("[2000-02-29T00:00:00.000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        assert!(line_time("lbd: invalid config").is_none());
        assert!(line_time("[2026-11-25T10:20:42Z INFO] no millis").is_none());
    }

    #[test]
    fn lines_are_found_with_their_times() {
        let log = "[2026-11-25T10:00:00.100Z INFO  a] probe failed\n[2026-11-25T10:00:00.350Z WARN  a] x -> unhealthy\n";
        assert_eq!(
            millis_between(
                first_time(log, "probe failed").unwrap(),
                first_time(log, "unhealthy").unwrap()
            ),
            250
        );
        assert_eq!(lines_with(log, "nothing"), []);
    }

    #[test]
    fn table_updates_span_the_swap_and_the_stamps_truncation() {
        let log = "[2026-11-25T10:00:00.100Z WARN  a] x -> unhealthy\n\
                   [2026-11-25T10:00:00.250Z INFO  a] tables updated in 10.5 ms: 1 services flipped\n";
        let updates = table_updates(log);
        let stamp = first_time(log, "tables updated").unwrap();
        assert_eq!(
            updates,
            [TableUpdate {
                begun: stamp - Duration::from_micros(11_500),
                done: stamp + Duration::from_millis(1),
            }]
        );
        assert_eq!(first_update_after(log, "-> unhealthy"), Some(updates[0]));
        assert_eq!(first_update_after(log, "tables updated"), None);
        assert_eq!(first_update_after(log, "nothing"), None);
    }
}
