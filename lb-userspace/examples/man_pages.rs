//! Writes the manual pages of `lbd` and `lbctl` into the directory given; what
//! `cargo xtask man` (and so `cargo xtask build`) runs.
use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: man_pages DIR");
        return ExitCode::from(2);
    };
    match lb_userspace::man::write_all(&dir) {
        Ok(pages) => {
            println!("{} manual pages in {}", pages.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "man_pages: writing the manual pages into {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
