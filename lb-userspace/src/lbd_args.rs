//! `lbd`'s command line, in the library so that its manual page (see [`crate::man`]) is
//! generated from the same definition the binary parses.
use std::path::PathBuf;

use clap::Parser;

/// XDP L4 load balancer daemon: attaches the data path to the configured NICs and keeps
/// its tables in line with the config.
#[derive(Parser)]
#[command(
    name = "lbd",
    version = env!("LB_BUILD"),
    after_help = "Exit status:\n  \
        0   stopped on SIGTERM/SIGINT, or --check/--detach succeeded\n  \
        1   a failure while running or talking to the kernel (worth a retry)\n  \
        2   bad command-line arguments\n  \
        75  the pin directory is held by another lbd (its pid is named)\n  \
        78  invalid config or state file, or a config this host cannot run (missing \
        interface or token file, pin_dir not on bpffs, incompatible pinned maps, maps \
        too large, a listener address in use); nothing in the kernel was changed"
)]
pub struct LbdArgs {
    /// Config file (YAML).
    #[arg(long, short, default_value = "/etc/lbd/lb.yaml")]
    pub config: PathBuf,
    /// Validate the config (and the state file, if there is one) against this host and
    /// exit (0 valid, 78 invalid).
    #[arg(long)]
    pub check: bool,
    /// Withdraw the announced VIPs and wait (up to 5 s) until that is seen on lo and, with
    /// the config's announce.bird_socket, in BIRD's table; then detach the data path
    /// from every NIC and remove its pinned state, and exit.
    /// Established connections through it are cut. Needs only the pin directory: from
    /// --pin-dir, else the config's pin_dir key (the rest of the config and the state
    /// file are not read). Refused while an lbd runs on it, unless --force.
    #[arg(long, conflicts_with = "check")]
    pub detach: bool,
    /// With --detach: the pin directory to remove (no config is read).
    #[arg(long, requires = "detach")]
    pub pin_dir: Option<PathBuf>,
    /// With --detach: detach even while an lbd runs on the pin directory.
    #[arg(long, requires = "detach")]
    pub force: bool,
}
