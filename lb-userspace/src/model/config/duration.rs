//! Durations as operators write them: a number and a unit, `500ms`, `2s`, `1.5s`, `1m`,
//! `1h`. A bare number is refused: `30` could mean seconds or milliseconds.
use std::{fmt, time::Duration};

use serde::{de, Deserializer, Serializer};

/// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "" => return Err(format!("`{text}` needs a unit: ms, s, m or h")),
        _ => return Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 500ms, 2s or 1m"))?;
    let millis = value * millis_per_unit;
    if !millis.is_finite() || millis > u32::MAX as f64 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_micros((millis * 1000.0).round() as u64))
}

/// The shortest exact spelling: `500ms`, `2s`, `1m`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// For `#[serde(with = "duration")]`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// For `#[serde(with = "duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as 500ms, 2s or 1m")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_format_back() {
        let cases = [
            ("500ms", 500, "500ms"),
            ("2s", 2_000, "2s"),
            ("1.5s", 1_500, "1500ms"),
            ("1m", 60_000, "1m"),
            ("1h", 3_600_000, "1h"),
            ("0s", 0, "0s"),
            (" 30s ", 30_000, "30s"),
        ];
        for (text, millis, back) in cases {
            let d = parse(text).unwrap();
            assert_eq!(d, Duration::from_millis(millis), "{text}");
            assert_eq!(format(d), back, "{text}");
        }
    }

    #[test]
    fn bad_spellings_are_refused() {
        for (text, words) in [
            ("30", "needs a unit"),
            ("2 s", "unknown unit"),
            ("5d", "unknown unit"),
            ("s", "not a duration"),
            ("1.2.3s", "not a duration"),
            ("-1s", "unknown unit"),
            ("9999999h", "too long"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(words), "{text}: {err}");
        }
    }
}
