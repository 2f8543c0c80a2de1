//! `lb-decap`: a DSR backend's side of IPIP and GUE (see `lb_userspace::decap`).
use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use lb_userspace::decap::{
    apply,
    settings::{Hook, IpPrefix, Settings, DEFAULT_CONFIG},
    stats,
};

/// Decapsulates IPIP and GUE from the load balancer on a direct-server-return backend:
/// attaches the decap program to the NICs, holds the VIPs on lo, sets the ARP sysctls and
/// the MSS clamp on the routes to the clients. Every flag replaces its key of the file.
#[derive(Debug, Parser)]
#[command(name = "lb-decap", version = env!("LB_BUILD"))]
struct Args {
    /// The settings file (YAML); read if it exists, or if given explicitly.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Removes everything lb-decap added (program, VIPs, sysctls, route MSS).
    #[arg(long)]
    detach: bool,
    /// A NIC encapsulated packets arrive on (repeat for several).
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    /// A VIP to hold on lo, IPv4 or IPv6 (repeat for several).
    #[arg(long = "vip")]
    vips: Vec<IpAddr>,
    /// The LB tier's prefix, IPv4 or IPv6: encapsulated packets from elsewhere are
    /// dropped.
    #[arg(long = "lb-prefix")]
    lb_prefixes: Vec<IpPrefix>,
    /// tc (ingress, default) or xdp.
    #[arg(long, value_enum)]
    hook: Option<Hook>,
    /// The GUE UDP destination port (default 6080).
    #[arg(long)]
    gue_port: Option<u16>,
    /// advmss on the IPv4 routes to the clients (default 1432; 0 leaves routes alone).
    #[arg(long)]
    mss: Option<u16>,
    /// advmss on the IPv6 routes to the clients (default 1392; 0 leaves routes alone).
    #[arg(long)]
    mss6: Option<u16>,
    /// A route to the clients that gets advmss, IPv4 or IPv6 (default the IPv4 default
    /// route).
    #[arg(long = "client-route")]
    client_routes: Vec<IpPrefix>,
    /// Where the links and counters are pinned (default /sys/fs/bpf/lb-decap).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// The record of what was changed (default /run/lb-decap/state.json).
    #[arg(long)]
    state_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The decap program's counters.
    Stats {
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let path = args.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
    let mut s = match std::fs::read_to_string(&path) {
        Ok(text) => Settings::parse(&text)
            .map_err(|e| anyhow::anyhow!("invalid settings {}: {e:#}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.config.is_none() => {
            Settings::default()
        }
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    if !args.interfaces.is_empty() {
        s.interfaces.clone_from(&args.interfaces);
    }
    if !args.vips.is_empty() {
        s.vips.clone_from(&args.vips);
    }
    if !args.lb_prefixes.is_empty() {
        s.lb_prefixes.clone_from(&args.lb_prefixes);
    }
    if !args.client_routes.is_empty() {
        s.client_routes.clone_from(&args.client_routes);
    }
    s.hook = args.hook.unwrap_or(s.hook);
    s.gue_port = args.gue_port.unwrap_or(s.gue_port);
    s.mss = args.mss.unwrap_or(s.mss);
    s.mss6 = args.mss6.unwrap_or(s.mss6);
    if let Some(p) = &args.pin_dir {
        s.pin_dir.clone_from(p);
    }
    if let Some(p) = &args.state_file {
        s.state_file.clone_from(p);
    }
    Ok(s)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let settings = settings(args)?;
    match (&args.command, args.detach) {
        (Some(Command::Stats { output }), _) => {
            let counters = stats::read(&settings.pin_dir)?;
            match output {
                Output::Table => print!("{}", stats::table(&counters)),
                Output::Json => println!("{}", stats::json(&counters)),
            }
        }
        (None, true) => match apply::detach(&settings)? {
            Some(a) => println!(
                "detached from {}; removed {} VIP(s), restored {} sysctl(s) and {} route(s)",
                a.interfaces.join(", "),
                a.vips.len(),
                a.sysctls.len(),
                a.routes.len()
            ),
            None => println!(
                "nothing to detach (no state file {})",
                settings.state_file.display()
            ),
        },
        (None, false) => {
            let a = apply::attach(&settings)?;
            println!(
                "attached ({:?}) to {}; VIPs on lo: {}; LB prefixes: {}",
                a.hook,
                a.interfaces.join(", "),
                settings
                    .vips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                settings
                    .lb_prefixes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-decap: {e:#}");
            ExitCode::FAILURE
        }
    }
}
