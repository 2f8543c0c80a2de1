//! Plain aligned tables for humans, the way `kubectl get` prints them.
pub struct Table {
    headers: Vec<&'static str>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `headers` ending in `>` are right-aligned (the `>` is not printed).
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_end_matches('>')).collect(),
            right: headers.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .zip(&self.right)
                .map(|((cell, w), right)| {
                    if *right {
                        format!("{cell:>w$}")
                    } else {
                        format!("{cell:<w$}")
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out.push('\n');
        out
    }
}

/// 1234567 -> `1.2M`: counters in tables stay narrow; `-o json` has exact values.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        n.to_string()
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// Bytes with binary units: `1.5Ki`, `12Mi`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "Ki", "Mi", "Gi", "Ti"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

pub fn rate(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        human(v.round() as u64)
    }
}

/// A digest as 12 hex digits (its 48 bits; `/metrics` and `-o json` give the same number
/// in decimal), `-` before the data path is programmed.
pub fn digest(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |d| format!("{d:012x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_numbers_shrink() {
        let mut t = Table::new(&["NAME", "COUNT>"]);
        t.row(vec!["web".into(), "7".into()]);
        t.row(vec!["api-long".into(), "1234".into()]);
        assert_eq!(
            t.render(),
            "NAME      COUNT\nweb           7\napi-long   1234\n"
        );
        assert_eq!(human(999), "999");
        assert_eq!(human(1234), "1.2k");
        assert_eq!(human(12_345_678), "12M");
        assert_eq!(bytes(1536), "1.5Ki");
        assert_eq!(rate(2.25), "2.2");
    }
}
