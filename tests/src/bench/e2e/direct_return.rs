//! The backends' own way to the client for the direct-server-return variants: a second
//! client NIC (`cl1`, no address) on the backends' bridge, and on each backend a route
//! to the client's address on that segment. The client answers ARP for its address
//! there, so the replies go from backend to client without crossing the LB namespace,
//! as in a DSR deployment; the client's packets still reach the VIP through the LB.
//! Removed on drop (the client's `rp_filter` 0 stays: no other variant has asymmetric
//! paths).
use crate::{netns, topology::Lab};

const CLIENT_PORT: &str = "cl1";
const SWITCH_PORT: &str = "swcd";

pub struct DirectReturn {
    client_ns: String,
    backend_ns: Vec<String>,
    client: String,
}

impl DirectReturn {
    pub fn add(lab: &Lab) -> DirectReturn {
        let (cl, sw) = (lab.client_ns(), lab.switch_ns());
        netns::ip(&[
            "link",
            "add",
            CLIENT_PORT,
            "netns",
            cl,
            "type",
            "veth",
            "peer",
            "name",
            SWITCH_PORT,
            "netns",
            sw,
        ]);
        netns::ns_ip(sw, &["link", "set", SWITCH_PORT, "master", "br0", "up"]);
        netns::ns_ip(cl, &["link", "set", CLIENT_PORT, "up"]);
        for (ns, dev) in [(cl, CLIENT_PORT), (sw, SWITCH_PORT)] {
            netns::ns_ethtool(ns, &["-K", dev, "tx", "off", "gro", "on"]);
        }
        // Replies come from the VIP, which the client routes through the LB, on `cl1`;
        // ARP requests for its address come from the backends' subnet, routed likewise.
        for conf in ["all", "default", CLIENT_PORT] {
            netns::ns_sysctl(cl, &format!("net.ipv4.conf.{conf}.rp_filter"), "0");
        }
        let client = format!("{}/32", lab.client_addr());
        for i in 0..lab.backend_count() {
            netns::ns_ip(lab.backend_ns(i), &["route", "add", &client, "dev", "eth0"]);
        }
        DirectReturn {
            client_ns: cl.to_string(),
            backend_ns: (0..lab.backend_count())
                .map(|i| lab.backend_ns(i).to_string())
                .collect(),
            client,
        }
    }
}

impl Drop for DirectReturn {
    fn drop(&mut self) {
        for ns in &self.backend_ns {
            let _ = netns::try_ns_ip(ns, &["route", "del", &self.client, "dev", "eth0"]);
            // The next variant's `cl1` has another MAC: a neighbour entry still
            // reachable would send its first replies to this one's for seconds.
            let _ = netns::try_ns_ip(ns, &["neigh", "flush", "to", &self.client, "dev", "eth0"]);
        }
        let _ = netns::try_ns_ip(&self.client_ns, &["link", "del", CLIENT_PORT]);
    }
}
