//! What `lb-decap` changed on this host, written after every step, so `--detach` (or
//! the rollback of a failed attach) undoes exactly that and nothing of the operator's.
use std::{net::IpAddr, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::settings::{Hook, IpPrefix};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    pub hook: Hook,
    /// Where the links and the counters are pinned.
    pub pin_dir: std::path::PathBuf,
    /// Whether the counters map is pinned (and the pin directory was created).
    pub counters_pinned: bool,
    /// NICs with a pinned link.
    pub interfaces: Vec<String>,
    /// VIPs added to `lo` (not those that were there already).
    pub vips: Vec<IpAddr>,
    /// Sysctls changed, with the value each had before.
    pub sysctls: Vec<SysctlChange>,
    /// Routes given `advmss`, with the value each had before.
    pub routes: Vec<RouteChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlChange {
    pub name: String,
    pub previous: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteChange {
    pub prefix: IpPrefix,
    pub previous_advmss: Option<u32>,
}

impl Applied {
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file whole (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).expect("plain data");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_through_its_file() {
        let dir = std::env::temp_dir().join(format!("lb-decap-state-{}", std::process::id()));
        let path = dir.join("state.json");
        assert_eq!(Applied::load(&path).unwrap(), None);
        let applied = Applied {
            hook: Hook::Xdp,
            pin_dir: "/sys/fs/bpf/x".into(),
            counters_pinned: true,
            interfaces: vec!["eth0".into()],
            vips: vec![std::net::Ipv4Addr::new(10, 0, 0, 100).into()],
            sysctls: vec![SysctlChange {
                name: "net.ipv4.conf.all.arp_ignore".into(),
                previous: "0".into(),
            }],
            routes: vec![RouteChange {
                prefix: "0.0.0.0/0".parse().unwrap(),
                previous_advmss: None,
            }],
        };
        applied.save(&path).unwrap();
        assert_eq!(Applied::load(&path).unwrap(), Some(applied));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
