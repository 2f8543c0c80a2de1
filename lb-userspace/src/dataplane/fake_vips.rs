//! [`VipAddresses`] in memory, for tests: what is held, and every change made.
use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use anyhow::bail;

use crate::dataplane::VipAddresses;

#[derive(Debug, Default)]
pub struct FakeVips {
    /// The /32s lbd holds now.
    pub held: BTreeSet<IpAddr>,
    /// Every call that changed something: (true: announced, false: withdrawn, VIP).
    pub changes: Vec<(bool, IpAddr)>,
    /// While set, every announce and withdraw fails (as a netlink error would).
    pub failing: bool,
    /// The lifetime last set.
    pub lifetime: Duration,
    /// Every renewal, in order.
    pub renewed: Vec<IpAddr>,
}

impl VipAddresses for FakeVips {
    fn announced(&self) -> anyhow::Result<Vec<IpAddr>> {
        Ok(self.held.iter().copied().collect())
    }

    fn announce(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        if self.failing {
            bail!("adding {vip}/32: injected failure");
        }
        if self.held.insert(vip) {
            self.changes.push((true, vip));
        }
        Ok(())
    }

    fn withdraw(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        if self.failing {
            bail!("removing {vip}/32: injected failure");
        }
        if self.held.remove(&vip) {
            self.changes.push((false, vip));
        }
        Ok(())
    }

    fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    fn renew(&mut self, vip: IpAddr) -> anyhow::Result<()> {
        if self.failing {
            bail!("renewing {vip}/32: injected failure");
        }
        self.renewed.push(vip);
        Ok(())
    }
}
