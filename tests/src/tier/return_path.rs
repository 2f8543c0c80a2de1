//! Which way the tier's replies went, checked after a test's load: in NAT they cross the
//! tier (mostly through another node than their flow's, which translates them by its
//! reverse map); in a DSR mode they never touch a node, and every client was served
//! through the VIP.
use crate::{
    netns,
    tier::{load::Figures, running::OWN_ADDRESS_SERVER, RunningTier},
};

const REVERSE_MAPPED: &str = "lb_service_replies_reverse_mapped_total{service=\"web\"}";

impl RunningTier {
    /// Panics unless the replies of `figures`' connections took the path of the lab's
    /// mode (see the module docs).
    pub fn assert_return_path(&self, figures: &Figures) {
        let reverse: u64 = self.per_node(REVERSE_MAPPED).iter().sum();
        if !self.lab.mode().is_dsr() {
            assert!(
                reverse > 0,
                "no reply crossed to another node than its flow's: the tier was not tested"
            );
            return;
        }
        let mode = self.lab.mode().key();
        assert_eq!(reverse, 0, "{mode}: a node translated replies");
        let direct = r1_received_from_r2(&self.lab.r1());
        assert!(
            direct > 0,
            "{mode}: no reply took R2's direct link to R1: the replies did not bypass the tier"
        );
        let by_own_address = figures
            .answered
            .iter()
            .map(|c| &c.backend)
            .chain(figures.long_lived.iter().map(|l| &l.backend))
            .filter(|b| *b == OWN_ADDRESS_SERVER)
            .count();
        assert_eq!(
            by_own_address, 0,
            "{mode}: connections answered by a backend's own address, not through the VIP"
        );
        println!("{mode}: 0 replies through the nodes, {direct} packets on R2's direct link to R1");
    }
}

/// Packets R1 received on its port `r2` (from R2's direct link).
fn r1_received_from_r2(r1: &str) -> u64 {
    let out = netns::ns_ip(r1, &["-j", "-s", "link", "show", "r2"]);
    let links: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j -s link in {r1}: {e}"));
    links[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packets count for r2 in {r1}: {out}"))
}
