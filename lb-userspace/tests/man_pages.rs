//! The manual pages are generated from the clap definitions and name every subcommand
//! and every flag: each command's page holds its own flags, and each command with
//! subcommands names them on its page, which exists.
use std::collections::BTreeMap;

use clap::CommandFactory;
use lb_userspace::{cli::Cli, lbd_args::LbdArgs, man};

/// How roff writes `--name` (hyphens escaped).
fn roff_long(name: &str) -> String {
    format!("\\-\\-{}", name.replace('-', "\\-"))
}

fn text(roff: &[u8]) -> &str {
    std::str::from_utf8(roff).expect("manual pages are UTF-8")
}

/// Every flag of `cmd` (long and short forms), as the page writes them.
fn flags(cmd: &clap::Command) -> Vec<String> {
    let mut flags = Vec::new();
    for arg in cmd.get_arguments().filter(|arg| !arg.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            flags.push(roff_long(long));
        }
        if let Some(short) = arg.get_short() {
            flags.push(format!("\\-{short}"));
        }
    }
    flags
}

fn check_flags(page: &str, cmd: &clap::Command, file_name: &str) {
    for flag in flags(cmd) {
        assert!(
            page.contains(&flag),
            "{file_name} does not name the flag {flag}"
        );
    }
}

#[test]
fn the_lbd_page_names_every_flag() {
    let page = man::lbd().expect("lbd.8 renders");
    assert_eq!(page.file_name, "lbd.8");
    let cmd = LbdArgs::command();
    let text = text(&page.roff);
    assert!(text.contains("\n.TH lbd 8 "), "{text}");
    assert!(
        flags(&cmd).len() >= 5,
        "lbd has --config, --check, --detach, --pin-dir, --force"
    );
    check_flags(text, &cmd, &page.file_name);
}

#[test]
fn the_lbctl_pages_name_every_subcommand_and_flag() {
    let pages: BTreeMap<String, Vec<u8>> = man::lbctl()
        .expect("lbctl's pages render")
        .into_iter()
        .map(|page| (page.file_name, page.roff))
        .collect();
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut seen = 0;
    let mut stack = vec![(cmd, "lbctl".to_string())];
    while let Some((cmd, name)) = stack.pop() {
        let file_name = format!("{name}.1");
        let page = pages
            .get(&file_name)
            .unwrap_or_else(|| panic!("no page {file_name} among {:?}", pages.keys()));
        let page = text(page);
        check_flags(page, &cmd, &file_name);
        for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            // The parent's SUBCOMMANDS section refers to the sub's page by name.
            let sub_name = format!("{name}-{}", sub.get_name());
            let reference = format!("{}(1)", sub_name.replace('-', "\\-"));
            assert!(
                page.contains(&reference),
                "{file_name} does not name the subcommand `{}` ({reference})",
                sub.get_name()
            );
            stack.push((sub.clone(), sub_name));
        }
        seen += 1;
    }
    assert_eq!(seen, pages.len(), "a page for every command, and no other");
    // The top page, every group and a leaf of each group: the walk went everywhere.
    for expected in [
        "lbctl.1",
        "lbctl-backend.1",
        "lbctl-backend-set-weight.1",
        "lbctl-man.1",
    ] {
        assert!(pages.contains_key(expected), "no {expected}");
    }
}

#[test]
fn write_all_writes_every_page() {
    let dir = std::env::temp_dir().join(format!("lb-man-pages-{}", std::process::id()));
    let written = man::write_all(&dir).expect("the pages are written");
    let expected = 1 + man::lbctl().expect("lbctl's pages render").len();
    let files = std::fs::read_dir(&dir)
        .expect("the directory exists")
        .count();
    std::fs::remove_dir_all(&dir).expect("the directory is removed");
    assert_eq!(written.len(), expected);
    assert_eq!(files, expected);
    assert!(written.iter().any(|p| p.ends_with("lbd.8")));
    assert!(written.iter().any(|p| p.ends_with("lbctl.1")));
}
