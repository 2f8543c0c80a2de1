//! `lb-decap stats`: the program's counters, as a table or JSON.
use std::path::Path;

use lb_common::decap::DecapCounter;

use super::program;

/// The counters as `name value` lines, names padded to one column.
pub fn table(counters: &[(DecapCounter, u64)]) -> String {
    let width = counters
        .iter()
        .map(|(c, _)| c.name().len())
        .max()
        .unwrap_or(0);
    counters
        .iter()
        .map(|(c, v)| format!("{:<width$}  {v}\n", c.name()))
        .collect()
}

/// The counters as one JSON object, name to value.
pub fn json(counters: &[(DecapCounter, u64)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = counters
        .iter()
        .map(|(c, v)| (c.name().to_string(), (*v).into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub fn read(pin_dir: &Path) -> anyhow::Result<Vec<(DecapCounter, u64)>> {
    program::read_counters(pin_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_as_a_table_and_as_json() {
        let c = [
            (DecapCounter::DecapIpip, 3),
            (DecapCounter::DropOutsidePrefix, 12),
        ];
        assert_eq!(
            table(&c),
            "decap_ipip           3\ndrop_outside_prefix  12\n"
        );
        assert_eq!(json(&c), r#"{"decap_ipip":3,"drop_outside_prefix":12}"#);
    }
}
