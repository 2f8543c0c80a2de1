//! `lbctl`, the operator's CLI over lbd's admin API. One file per subcommand; they share
//! the [`client`] (HTTP over the unix socket), [`table`] rendering and [`Ctx`].
pub mod apply;
pub mod backend;
pub mod client;
pub mod compare;
pub mod completions;
pub mod config;
pub mod events;
pub mod explain;
pub mod filter;
pub mod health;
pub mod node;
pub mod service;
pub mod stats;
pub mod table;
pub mod top;
pub mod trace;
pub mod zone;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use self::client::{Client, ClientError, Endpoint, Timeouts};
use crate::{
    model::config::{duration, DEFAULT_API_SOCKET},
    ops::views::ChangeResult,
};

/// Exit status when lbd did not answer within the timeout (sysexits EX_TEMPFAIL: a
/// retry may succeed). Other failures exit 1, bad arguments 2.
pub const EXIT_TIMEOUT: u8 = 75;

/// Exit status when lbd refused a change because a data-path table is full (HTTP 507;
/// sysexits EX_CANTCREAT: what was asked could not be created). Not a retry as it
/// stands: a slot frees when a removed backend's deregistration delay passes, or a
/// larger `limits.*` needs a restart.
pub const EXIT_TABLE_FULL: u8 = 73;

/// Exit status when lbd refused a change that would open a service to every source (HTTP
/// 412: the last allow rule taken away without `--open`). Nothing was changed.
pub const EXIT_WOULD_OPEN: u8 = 6;

/// Control the XDP load balancer `lbd` through its admin API.
#[derive(Parser)]
#[command(name = "lbctl", version = env!("LB_BUILD"), propagate_version = true)]
pub struct Cli {
    /// lbd's admin socket (its `api.socket`).
    #[arg(long, global = true, env = "LBD_SOCKET", default_value = DEFAULT_API_SOCKET)]
    pub socket: PathBuf,
    /// lbd's TCP admin listener instead of the socket (its `api.listen`), as
    /// http://HOST:PORT; needs --token-file.
    #[arg(long, global = true, env = "LBD_API", value_name = "URL")]
    pub api: Option<String>,
    /// File whose first line is the bearer token for --api (and for http:// nodes).
    #[arg(long, global = true, env = "LBD_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Longest wait for a whole request, connecting included (e.g. 30s, 500ms).
    #[arg(long, global = true, env = "LBCTL_TIMEOUT", default_value = "30s", value_parser = duration::parse)]
    pub timeout: std::time::Duration,
    /// Longest wait to connect to lbd's socket.
    #[arg(long, global = true, env = "LBCTL_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub connect_timeout: std::time::Duration,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables for people.
    Table,
    /// JSON for scripts: the API's own answer.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Services: list, show, add, remove.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Backends: list, add, remove, drain, undrain, set-weight.
    #[command(subcommand)]
    Backend(backend::BackendCmd),
    /// Availability zones: list, drain, undrain.
    #[command(subcommand)]
    Zone(zone::ZoneCmd),
    /// Edge protection: a service's source rules, and the rate-limited sources.
    #[command(subcommand)]
    Filter(filter::FilterCmd),
    /// This LB node in the tier: status, drain, undrain (see docs/tier.md).
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Health of every backend as lbd knows it.
    Health,
    /// Counters per service, backend and zone.
    Stats(stats::StatsArgs),
    /// A live view, refreshed every second (q quits).
    Top(top::TopArgs),
    /// Make the services match a file (shows the diff; all or nothing).
    Apply(apply::ApplyArgs),
    /// Which backend a new and an existing connection of a tuple would take, and why.
    Explain(explain::ExplainArgs),
    /// Trace one service's packets: what the data path decided for each, live.
    Trace(trace::TraceArgs),
    /// Lifecycle events: backends healthy, unhealthy, draining, drained, deregistered; zones drained.
    Events(events::EventsArgs),
    /// The running desired state.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Shell completions, to stdout.
    Completions(completions::CompletionsArgs),
    /// The man page (roff), to stdout.
    Man,
}

/// What every subcommand gets.
pub struct Ctx {
    pub output: Output,
    endpoint: Endpoint,
    token: Option<String>,
    timeouts: Timeouts,
}

impl Ctx {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.endpoint, self.timeouts)?)
    }

    /// A client of another node: a socket path or http://HOST:PORT (with --token-file).
    pub fn client_of(&self, node: &str) -> anyhow::Result<Client> {
        let endpoint = Endpoint::parse(node, self.token.as_deref()).map_err(anyhow::Error::msg)?;
        Ok(Client::new(&endpoint, self.timeouts)?)
    }

    /// Prints `value` as JSON, or `table()` for people.
    pub fn print<T: Serialize>(&self, value: &T, table: impl FnOnce() -> String) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(value).expect("views serialize")
            ),
            Output::Table => print!("{}", table()),
        }
    }

    /// Prints what a change did.
    pub fn print_change(&self, result: &ChangeResult, already: &str) {
        self.print(result, || {
            if result.changes.is_empty() {
                format!("no change: {already}\n")
            } else {
                result.changes.iter().map(|c| format!("{c}\n")).collect()
            }
        })
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let token = cli
        .token_file
        .as_deref()
        .map(client::read_token)
        .transpose()?;
    let endpoint = match &cli.api {
        Some(url) => Endpoint::parse(url, token.as_deref()).map_err(anyhow::Error::msg)?,
        None => Endpoint::Socket(cli.socket),
    };
    let ctx = Ctx {
        output: cli.output,
        endpoint,
        token,
        timeouts: Timeouts {
            connect: cli.connect_timeout,
            request: cli.timeout,
        },
    };
    match cli.command {
        Command::Service(cmd) => service::run(&ctx, cmd),
        Command::Backend(cmd) => backend::run(&ctx, cmd),
        Command::Zone(cmd) => zone::run(&ctx, cmd),
        Command::Filter(cmd) => filter::run(&ctx, cmd),
        Command::Node(cmd) => node::run(&ctx, cmd),
        Command::Health => health::run(&ctx),
        Command::Stats(args) => stats::run(&ctx, args),
        Command::Top(args) => top::run(&ctx, args),
        Command::Apply(args) => apply::run(&ctx, args),
        Command::Config(cmd) => config::run(&ctx, cmd),
        Command::Explain(args) => explain::run(&ctx, args),
        Command::Trace(args) => trace::run(&ctx, args),
        Command::Events(args) => events::run(&ctx, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
    }
}

/// The exit status for an error `run` returned.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(wait) = e.downcast_ref::<node::DrainWaitError>() {
        return wait.exit_code();
    }
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Timeout { .. }) => EXIT_TIMEOUT,
        Some(ClientError::Api { status: 507, .. }) => EXIT_TABLE_FULL,
        Some(ClientError::Api { status: 412, .. }) => EXIT_WOULD_OPEN,
        _ if e.is::<compare::DigestsDiffer>() => compare::EXIT_DIGESTS_DIFFER,
        _ => 1,
    }
}

/// Percent-encodes a path segment (names are a safe alphabet, but a typo may not be).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn a_full_table_has_its_own_exit_status_and_one_line() {
        // As lbctl reads the API's 507 (see `ops::api::error`).
        let e = anyhow::Error::from(ClientError::Api {
            status: 507,
            message: "no room in the data path: writing backend 10.1.0.3 (id 2): map BACKENDS \
                      is full: 2 entries (sized by limits.max_backends) (nothing was changed)"
                .into(),
        });
        assert_eq!(exit_code(&e), EXIT_TABLE_FULL);
        assert_eq!(
            format!("{e:#}"),
            "no room in the data path: writing backend 10.1.0.3 (id 2): map BACKENDS is full: \
             2 entries (sized by limits.max_backends) (nothing was changed) (HTTP 507)"
        );
        let other = anyhow::Error::from(ClientError::Api {
            status: 500,
            message: "applying".into(),
        });
        assert_eq!(exit_code(&other), 1);
        let opening = anyhow::Error::from(ClientError::Api {
            status: 412,
            message: "192.0.2.0/24 is the last allow rule of service `web`".into(),
        });
        assert_eq!(exit_code(&opening), EXIT_WOULD_OPEN);
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_socket_flag_wins_over_the_default() {
        let cli = Cli::try_parse_from(["lbctl", "--socket", "/tmp/x.sock", "health"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        let cli = Cli::try_parse_from(["lbctl", "stats", "-o", "json"]).unwrap();
        assert!(cli.output == Output::Json);
    }

    #[test]
    fn ipv6_addresses_parse_in_brackets_where_a_port_follows() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command);
        let add = parse(&[
            "lbctl",
            "service",
            "add",
            "web6",
            "--vip",
            "2001:db8::100",
            "--port",
            "80",
        ]);
        let Ok(Command::Service(service::ServiceCmd::Add { vip, .. })) = add else {
            panic!("service add with an IPv6 VIP")
        };
        assert_eq!(vip, "2001:db8::100".parse::<std::net::IpAddr>().unwrap());
        let add = parse(&[
            "lbctl",
            "backend",
            "add",
            "web6",
            "[2001:db8::11]:8080",
            "--zone",
            "a",
        ]);
        let Ok(Command::Backend(backend::BackendCmd::Add { backend, .. })) = add else {
            panic!("backend add with an IPv6 address")
        };
        assert_eq!(backend.to_string(), "[2001:db8::11]:8080");
        assert_eq!(segment(&backend.to_string()), "%5B2001:db8::11%5D:8080");
        let unbracketed = parse(&[
            "lbctl",
            "backend",
            "add",
            "web6",
            "2001:db8::11:8080",
            "--zone",
            "a",
        ]);
        assert!(unbracketed.is_err());
        let explain = parse(&[
            "lbctl",
            "explain",
            "[2001:db8::2]:40000",
            "[2001:db8::100]:80",
        ]);
        let Ok(Command::Explain(args)) = explain else {
            panic!("explain with an IPv6 tuple")
        };
        assert_eq!(args.vip.to_string(), "[2001:db8::100]:80");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("10.1.0.11:8080"), "10.1.0.11:8080");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
