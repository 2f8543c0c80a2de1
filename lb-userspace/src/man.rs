//! The manual pages, rendered from the clap definitions that `lbd` and `lbctl` parse, so
//! that they cannot drift from the real flags: `lbd.8`, and `lbctl.1` with one page per
//! subcommand (`lbctl-backend-drain.1`, ...), which `lbctl.1` names, as git's do.
//! `cargo xtask build` writes them to `<target dir>/man/`.
use std::{
    io,
    path::{Path, PathBuf},
};

use clap::CommandFactory;

use crate::{cli::Cli, lbd_args::LbdArgs};

/// One manual page: its file name and its roff text.
pub struct Page {
    pub file_name: String,
    pub roff: Vec<u8>,
}

/// `lbd.8`: a daemon, so section 8.
pub fn lbd() -> io::Result<Page> {
    // The binary's name, not the package's (clap's default).
    render(LbdArgs::command().name("lbd"), "8")
}

/// `lbctl.1`, then a page per subcommand at every depth.
pub fn lbctl() -> io::Result<Vec<Page>> {
    // As `clap_mangen::generate_to` does: the `help` subcommand is no page of its own.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages)?;
    Ok(pages)
}

fn collect(cmd: &clap::Command, pages: &mut Vec<Page>) -> io::Result<()> {
    pages.push(render(cmd.clone(), "1")?);
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

fn render(cmd: clap::Command, section: &str) -> io::Result<Page> {
    let man = clap_mangen::Man::new(cmd).section(section);
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    Ok(Page {
        file_name: man.get_filename(),
        roff,
    })
}

/// Writes every page into `dir` (created if missing) and returns their paths.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut pages = vec![lbd()?];
    pages.extend(lbctl()?);
    pages
        .into_iter()
        .map(|page| {
            let path = dir.join(&page.file_name);
            std::fs::write(&path, &page.roff)?;
            Ok(path)
        })
        .collect()
}
