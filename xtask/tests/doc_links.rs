//! Every relative link in README.md and docs/*.md points at a file that exists, and a
//! link with `#anchor` at a heading of that file (GitHub's anchors), so that moving or
//! renaming a page or a section cannot leave dead links behind.
use std::{
    fs,
    path::{Path, PathBuf},
};

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
}

fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut docs = vec![root.join("README.md")];
    let mut pages: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    docs.extend(pages);
    docs
}

/// Markdown outside fenced code blocks, line by line.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of `[text](target)` links.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    targets
}

/// GitHub's anchor of a heading: lower case, spaces to hyphens, punctuation other than
/// `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

/// What is wrong with the relative links of `doc` (whose text is `text`).
fn broken_links(doc: &Path, text: &str) -> Vec<String> {
    let dir = doc.parent().expect("a document has a folder");
    let mut broken = Vec::new();
    for target in link_targets(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            doc.to_path_buf()
        } else {
            dir.join(path)
        };
        if !file.exists() {
            broken.push(format!("{}: `{target}`: no such file", doc.display()));
            continue;
        }
        if let Some(fragment) = fragment {
            let headings = fs::read_to_string(&file).map(|t| anchors(&t));
            if !headings.is_ok_and(|h| h.iter().any(|a| a == fragment)) {
                broken.push(format!(
                    "{}: `{target}`: no heading with that anchor",
                    doc.display()
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut links = 0;
    for doc in documents() {
        let text = fs::read_to_string(&doc).expect("documents are readable");
        links += link_targets(&text).len();
        broken.extend(broken_links(&doc, &text));
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(links > 0, "no links found: is the link parser broken?");
}

#[test]
fn a_dead_link_or_anchor_is_reported() {
    let readme = workspace_root().join("README.md");
    let text =
        "[ok](docs/config.md#reference) [file](docs/nope.md) [anchor](docs/config.md#nope)\n\
                ```\n[in code](not/checked.md)\n```\n";
    let broken = broken_links(&readme, text);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("docs/nope.md"), "{broken:?}");
    assert!(broken[1].contains("docs/config.md#nope"), "{broken:?}");
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" Reload (SIGHUP)"), "reload-sighup");
    assert_eq!(anchor(" `lbctl explain`"), "lbctl-explain");
    assert_eq!(
        anchor(" Restarts, upgrades, crashes"),
        "restarts-upgrades-crashes"
    );
    assert_eq!(
        anchor(" Kernel side: stage -> file -> map"),
        "kernel-side-stage---file---map"
    );
}
