//! `lbctl config dump`: the running desired state (the config file with the state
//! file's services), as YAML that `lbctl apply -f` and `lbd --config` accept.
use clap::Subcommand;

use super::Ctx;
use crate::model::config::Config;

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Print the whole desired state.
    Dump,
}

pub fn run(ctx: &Ctx, cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Dump => {
            let config: Config = ctx.client()?.get("/v1/config")?;
            ctx.print(&config, || {
                serde_yaml_ng::to_string(&config).unwrap_or_else(|e| format!("{e}\n"))
            });
        }
    }
    Ok(())
}
