//! The layering rule of `src/lib.rs`, checked over the source text: every path a file
//! names through `crate::`, `super::` or `self::` (in `use` items and in code) is
//! resolved to the module it points at, and
//! - an import from one layer into another must be one the rule allows ([`ALLOWED`]);
//! - sibling modules at every level (the layers themselves, the modules of a layer,
//!   the files of a module) must not import each other in a cycle (test modules are
//!   left out of this one: they are no dependency).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// What each part of the crate may import, as module-path prefixes (its own part is
/// always allowed). A part not listed here (the crate root, `daemon`, `preflight`,
/// `lbd_args`: the wiring) may import anything but the CLI, which only the manual pages
/// ([`CLI_USERS`]) render.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("dataplane", &["model"]),
    ("control", &["model", "dataplane"]),
    ("kernel", &["model", "dataplane"]),
    // The packet trace's route streams what the kernel's ring reader hands it.
    ("ops", &["model", "dataplane", "control", "kernel::trace"]),
    (
        "cli",
        &[
            "model::config",
            "model::desired::edit",
            "ops::views",
            "ops::node_view",
            "model::bird_reply",
            "ops::explain::view",
            "ops::trace::view",
            "ops::events::view",
        ],
    ),
];

/// The parts outside the CLI that may import it.
const CLI_USERS: &[&str] = &["man"];

type Module = Vec<String>;

/// One path named by one file: (the file's module, the module or item named).
type Edge = (Module, Module, PathBuf);

fn main_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds: `a/b.rs` and `a/b/mod.rs` are `a::b`; `a/b_tests.rs`
/// (included with `#[path]`) is `a::b::tests`.
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut segs: Module = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    match segs.last().map(String::as_str) {
        Some("mod" | "lib") => {
            segs.pop();
        }
        Some(last) if last.ends_with("_tests") => {
            let base = last.trim_end_matches("_tests").to_string();
            segs.pop();
            segs.push(base);
            segs.push("tests".to_string());
        }
        _ => {}
    }
    segs
}

/// The text without comments (line comments, doc comments included) and without the
/// contents of string literals.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                in_string = true;
                out.push('"');
            }
            '\'' => {
                // A char literal ('"', '{') must not open a string or a group; a
                // lifetime ('a) is kept as it is.
                let rest: String = chars.clone().take(3).collect();
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map(|i| i + 1)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(2)
                } else {
                    None
                };
                match len {
                    Some(n) => {
                        for _ in 0..n {
                            chars.next();
                        }
                        out.push_str("' '");
                    }
                    None => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path of a `use` tree, groups expanded: `a::{b, c::{d, self}}` -> `a::b`,
/// `a::c::d`, `a::c`.
fn expand(tree: &str) -> Vec<String> {
    // `x as y` keeps `x`; then spaces carry nothing.
    let words: Vec<&str> = tree.split_whitespace().collect();
    let tree: String = words.join(" ").replace(" as ", "@").replace(' ', "");
    let Some(open) = tree.find('{') else {
        let path = tree.split('@').next().unwrap();
        return vec![path.trim_end_matches("::").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every crate-relative path `code` names: the trees of its `use` items and the
/// `crate::`/`super::`/`self::` paths in its code, unresolved.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    // `use` items (`pub use`, `pub(crate) use` included), whole trees.
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + 4..];
        rest = tail;
        if before.is_some_and(is_ident) {
            continue;
        }
        let Some(end) = tail.find(';') else { break };
        let tree = tail[..end].trim();
        if tree.starts_with("crate::") || tree.starts_with("super::") || tree.starts_with("self::")
        {
            paths.extend(expand(tree));
        }
        rest = &tail[end..];
    }
    // Paths in code, outside `use` items.
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if code[..start]
                .chars()
                .last()
                .is_some_and(|c| is_ident(c) || c == ':')
            {
                continue;
            }
            if code[..start].trim_end().ends_with("use") {
                continue;
            }
            let end = code[start..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .map_or(code.len(), |e| start + e);
            let path = code[start..end].trim_end_matches(':');
            // A path that continues into a group was taken whole with its `use`.
            if code[end..].starts_with('{') {
                continue;
            }
            paths.push(path.to_string());
        }
    }
    paths
}

/// The module path `path` (named in module `from`) points at, from the crate root.
fn resolve(from: &Module, path: &str) -> Option<Module> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut at: Module = match segs.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => from[..from.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    for seg in segs {
        if seg == "*" {
            break;
        } else if seg == "super" {
            at.pop();
        } else if seg != "self" {
            at.push(seg.to_string());
        }
    }
    Some(at)
}

fn edges(root: &Path) -> Vec<Edge> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut edges = Vec::new();
    for file in files {
        if file.starts_with(root.join("bin")) {
            continue;
        }
        let from = module_of(root, &file);
        let code = code_of(&fs::read_to_string(&file).unwrap());
        for path in named_paths(&code) {
            if let Some(to) = resolve(&from, &path) {
                edges.push((from.clone(), to, file.clone()));
            }
        }
    }
    edges
}

fn starts_with(path: &Module, prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}

/// Why `from` may not name `to`, if it may not.
fn upward(from: &Module, to: &Module) -> Option<String> {
    let (Some(from_part), Some(to_part)) = (from.first(), to.first()) else {
        return None;
    };
    if from_part == to_part {
        return None;
    }
    let Some((_, allowed)) = ALLOWED.iter().find(|(part, _)| part == from_part) else {
        return (to_part == "cli" && !CLI_USERS.contains(&from_part.as_str()))
            .then(|| format!("{from_part} imports the CLI"));
    };
    if allowed.iter().any(|prefix| starts_with(to, prefix)) {
        return None;
    }
    Some(format!("{from_part} may import only {allowed:?}"))
}

/// Violations of the rule, one line each.
fn violations(edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for (from, to, file) in edges {
        if let Some(why) = upward(from, to) {
            out.push(format!(
                "{}: {} -> {}: {why}",
                file.display(),
                from.join("::"),
                to.join("::")
            ));
        }
    }
    // Sibling graphs: for an edge between two modules below a common parent, the
    // children of that parent they lie in.
    let mut graphs: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, to, _) in edges {
        // A test may use what it needs to observe its module; it is no dependency.
        if from.iter().any(|s| s == "tests") {
            continue;
        }
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        let (Some(a), Some(b)) = (from.get(common), to.get(common)) else {
            continue; // a module naming its own ancestor or descendant
        };
        graphs
            .entry(from[..common].to_vec())
            .or_default()
            .entry(a.clone())
            .or_default()
            .insert(b.clone());
    }
    for (parent, graph) in &graphs {
        if let Some(cycle) = find_cycle(graph) {
            out.push(format!(
                "cycle among the modules of `{}`: {}",
                if parent.is_empty() {
                    "crate".to_string()
                } else {
                    parent.join("::")
                },
                cycle.join(" -> ")
            ));
        }
    }
    out
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &String,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn imports_point_down_the_layers_and_never_in_a_cycle() {
    let edges = edges(&main_dir());
    assert!(edges.len() > 100, "only {} imports found", edges.len());
    let found = violations(&edges);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn edges_of(file: &str, module: &str, text: &str) -> Vec<Edge> {
    let from: Module = module.split("::").map(String::from).collect();
    named_paths(&code_of(text))
        .into_iter()
        .filter_map(|path| resolve(&from, &path))
        .map(|to| (from.clone(), to, PathBuf::from(file)))
        .collect()
}

#[test]
fn the_check_sees_an_upward_import_a_grouped_one_and_a_path_in_code() {
    let upward = edges_of(
        "model/plan.rs",
        "model::plan",
        "use crate::{\n    model::config::Config,\n    control::tables::Controller,\n};",
    );
    assert_eq!(
        violations(&upward),
        ["model/plan.rs: model::plan -> control::tables::Controller: model may import only []"]
    );
    let in_code = edges_of(
        "kernel/load.rs",
        "kernel::load",
        "fn f() { let _ = crate::ops::stats::read(); } // crate::control::x",
    );
    assert_eq!(
        violations(&in_code),
        [
            "kernel/load.rs: kernel::load -> ops::stats::read: kernel may import only \
             [\"model\", \"dataplane\"]"
        ]
    );
    let via_super = edges_of(
        "cli/top.rs",
        "cli::top",
        "use super::super::{ops::views::StatsView, ops::shared::SharedRuntime};",
    );
    assert_eq!(violations(&via_super).len(), 1);
    assert!(violations(&edges_of(
        "ops/stats.rs",
        "ops::stats",
        "use crate::model::plan::Plan;"
    ))
    .is_empty());
}

#[test]
fn the_check_sees_a_cycle_between_sibling_files() {
    let mut edges = edges_of(
        "model/config/validate.rs",
        "model::config::validate",
        "use super::validate_policy::check;",
    );
    edges.extend(edges_of(
        "model/config/validate_policy.rs",
        "model::config::validate_policy",
        "use super::validate::Collector;",
    ));
    assert_eq!(
        violations(&edges),
        ["cycle among the modules of `model::config`: validate -> validate_policy -> validate"]
    );
    // A child naming its parent's items, and the parent its child's, is no cycle.
    let mut edges = edges_of(
        "ops/trace/mod.rs",
        "ops::trace",
        "pub use self::view::Line;",
    );
    edges.extend(edges_of(
        "ops/trace/view.rs",
        "ops::trace::view",
        "use super::Tracer;",
    ));
    assert!(violations(&edges).is_empty());
}
