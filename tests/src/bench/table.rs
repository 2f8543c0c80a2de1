//! Plain-text tables for the terminal: a title, a header, right-aligned figures, and
//! notes under the table that say how the figures were taken.
use std::fmt::Write as _;

pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// The first column is left-aligned (names), the others right-aligned (figures).
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "row width != header width");
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i == 0 {
                    let _ = write!(s, "{cell:<w$}");
                } else {
                    let _ = write!(s, "  {cell:>w$}");
                }
            }
            s.trim_end().to_string()
        };
        let mut out = format!("\n== {}\n", self.title);
        out.push_str(&line(&self.header));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("  * {note}\n"));
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A figure with `decimals` decimals, or `-` when it is not a number.
pub fn fixed(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".into()
    }
}

/// A percentage with one decimal, or `-`.
pub fn percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{:.1}%", ratio * 100.0)
    } else {
        "-".into()
    }
}

/// One row of a per-packet table with the columns path, min ns, med ns, net min, net
/// med: written to `table`, and to `paths` (the part's JSON) under `key`.
pub fn net_row(
    table: &mut Table,
    paths: &mut serde_json::Map<String, serde_json::Value>,
    (name, key): (&str, &str),
    gross: super::stats::Stat,
    net: super::stats::Stat,
) {
    table.row(vec![
        name.to_string(),
        gross.min.to_string(),
        gross.median.to_string(),
        net.min.to_string(),
        net.median.to_string(),
    ]);
    paths.insert(
        key.to_string(),
        serde_json::json!({
            "name": name,
            "min_ns": gross.min,
            "median_ns": gross.median,
            "net_min_ns": net.min,
            "net_median_ns": net.median,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_notes_follow() {
        let mut t = Table::new("t", &["name", "ns"]);
        t.row(vec!["a".into(), "5".into()]);
        t.row(vec!["longer".into(), "1234".into()]);
        t.note("why");
        assert_eq!(
            t.render(),
            "\n== t\nname      ns\na          5\nlonger  1234\n  * why\n"
        );
        assert_eq!(fixed(f64::NAN, 1), "-");
        assert_eq!(percent(0.5), "50.0%");
    }
}
