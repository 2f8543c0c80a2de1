//! The config reference (`docs/config.md`) against the parser: every key the parser
//! accepts has a row in the reference, every row names a key the parser accepts, and the
//! page's example parses. The keys are not listed here: they are asked of the parser,
//! which names the fields it expects when it meets an unknown one (every config struct
//! denies unknown fields, as the config module promises).
use std::{collections::BTreeSet, path::PathBuf};

use lb_userspace::model::config::Config;
use serde_yaml_ng::{Mapping, Value};

/// A key no config struct has; the parser's complaint about it lists those it has.
const PROBE: &str = "no_such_key_in_any_config_struct";

/// One step from the top of the file to a key.
#[derive(Clone)]
enum Step {
    Key(String),
    /// Every element of a list (written `[]` in the reference).
    Each,
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md")
}

/// `services[].health.type`: how the reference writes a key.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Each => out.push_str("[]"),
        }
    }
    out
}

/// A document holding the probe key at `path` and nothing else.
fn probe_document(path: &[Step]) -> String {
    let mut value = Value::Mapping(Mapping::from_iter([(Value::from(PROBE), Value::from(0))]));
    for step in path.iter().rev() {
        value = match step {
            Step::Key(key) => {
                Value::Mapping(Mapping::from_iter([(Value::from(key.as_str()), value)]))
            }
            Step::Each => Value::Sequence(vec![value]),
        };
    }
    serde_yaml_ng::to_string(&value).expect("a probe document serializes")
}

/// The fields of the struct at `path`, as the parser names them, or `None` when the
/// value there is not a struct (a scalar, a list of scalars, a map of names to values).
fn struct_fields(path: &[Step]) -> Option<Vec<String>> {
    let message = match serde_yaml_ng::from_str::<Config>(&probe_document(path)) {
        Ok(_) => return None,
        Err(e) => e.to_string(),
    };
    let unknown = format!("unknown field `{PROBE}`, expected ");
    let at = message.find(&unknown)? + unknown.len();
    // "one of `a`, `b`", "`a` or `b`" or "`a`", then " at line N column M".
    let list = &message[at..];
    let list = list.split(" at line ").next().unwrap_or(list);
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

fn collect_keys(path: &mut Vec<Step>, keys: &mut Vec<String>) {
    let fields = struct_fields(path).unwrap_or_else(|| {
        panic!(
            "the parser named no fields at `{}`: is it still a struct that denies unknown fields?",
            render(path)
        )
    });
    for field in fields {
        path.push(Step::Key(field));
        keys.push(render(path));
        if struct_fields(path).is_some() {
            collect_keys(path, keys);
        } else {
            path.push(Step::Each);
            if struct_fields(path).is_some() {
                collect_keys(path, keys);
            }
            path.pop();
        }
        path.pop();
    }
}

/// Every key the parser accepts, nested keys included, in the parser's order.
fn accepted_keys() -> Vec<String> {
    let mut keys = Vec::new();
    collect_keys(&mut Vec::new(), &mut keys);
    keys
}

/// The keys of the reference tables: rows that start with a key in backticks.
fn documented_keys(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("` |"))
        .map(|(key, _)| key.to_string())
        .collect()
}

#[test]
fn the_walk_reaches_nested_structs_and_lists_of_structs() {
    let keys = accepted_keys();
    for key in [
        "node.zone",
        "api.connections.max",
        "services[].backends[].weight",
        "services[].health.flap_flips",
    ] {
        assert!(
            keys.iter().any(|k| k == key),
            "`{key}` not found among {keys:?}"
        );
    }
}

#[test]
fn every_config_key_has_a_row_in_the_reference() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/config.md is readable");
    let documented = documented_keys(&doc);
    let missing: Vec<String> = accepted_keys()
        .into_iter()
        .filter(|key| !documented.contains(key))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/config.md has no reference row (`| `KEY` | ...`) for these keys the parser \
         accepts: {missing:?}"
    );
}

#[test]
fn every_row_of_the_reference_is_a_key_the_parser_accepts() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/config.md is readable");
    let accepted: BTreeSet<String> = accepted_keys().into_iter().collect();
    let stale: Vec<String> = documented_keys(&doc)
        .into_iter()
        .filter(|key| !accepted.contains(key))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/config.md documents keys the parser does not accept: {stale:?}"
    );
}

#[test]
fn the_example_of_the_reference_parses() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/config.md is readable");
    let start = doc
        .find("```yaml\n")
        .expect("docs/config.md has a YAML example")
        + 8;
    let len = doc[start..]
        .find("```")
        .expect("the YAML example is closed");
    let example = &doc[start..start + len];
    if let Err(e) = serde_yaml_ng::from_str::<Config>(example) {
        panic!("the example in docs/config.md does not parse: {e}");
    }
}
