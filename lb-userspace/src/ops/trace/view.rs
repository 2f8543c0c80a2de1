//! A trace record as `lbctl trace` shows it: one JSON object per packet, or one line.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use lb_common::{
    counters::REASONS,
    trace::{decision_name, TraceRecord, TRACE_DIR_TO_CLIENT, TRACE_FAMILY_IPV6, TRACE_NO_BACKEND},
};
use serde::{Deserialize, Serialize};

/// One traced packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceLine {
    /// CLOCK_MONOTONIC nanoseconds when the data path saw the packet.
    pub ns: u64,
    pub service: String,
    /// `to_backend` (client -> VIP) or `to_client` (backend -> client).
    pub direction: String,
    /// Source `addr:port` (`[addr]:port` for IPv6) as the packet arrived.
    pub src: String,
    /// Destination `addr:port` (`[addr]:port` for IPv6) as the packet arrived.
    pub dst: String,
    /// TCP flags, e.g. `S`, `SA`, `A`, `FA`, `R`.
    pub flags: String,
    /// What the data path decided (see `lb_common::trace::TRACE_DECISION_*`).
    pub decision: String,
    /// The backend `addr:port` (or `id N` if it left the service since), or null.
    pub backend: Option<String>,
    /// `drop`, `pass`, `tx` or `redirect`.
    pub action: String,
    /// The counted reason, or null where only the reason counters tell.
    pub reason: Option<String>,
}

/// Backend `addr:port` by backend id, for one service.
pub type BackendNames = BTreeMap<u32, String>;

/// The line for `record` of service `service`.
pub fn line(record: &TraceRecord, service: &str, backends: &BackendNames) -> TraceLine {
    let at = |addr: [u32; 4], port: u16| {
        let ip = if record.family == TRACE_FAMILY_IPV6 {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(addr) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))
        };
        SocketAddr::new(ip, u16::from_be(port)).to_string()
    };
    TraceLine {
        ns: record.ns,
        service: service.to_string(),
        direction: if record.direction == TRACE_DIR_TO_CLIENT {
            "to_client"
        } else {
            "to_backend"
        }
        .into(),
        src: at(record.src_addr, record.src_port),
        dst: at(record.dst_addr, record.dst_port),
        flags: tcp_flags(record.tcp_flags),
        decision: decision_name(record.decision).into(),
        backend: (record.backend != TRACE_NO_BACKEND).then(|| {
            backends
                .get(&record.backend)
                .cloned()
                .unwrap_or_else(|| format!("id {}", record.backend))
        }),
        action: match record.action {
            1 => "drop".into(),
            2 => "pass".into(),
            3 => "tx".into(),
            4 => "redirect".into(),
            other => format!("action {other}"),
        },
        reason: REASONS
            .get(record.reason as usize)
            .map(|(_, name)| name.to_string()),
    }
}

/// tcpdump's letters for the flags set, in its order.
pub fn tcp_flags(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'C'),
    ];
    let s: String = LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| c)
        .collect();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} -> {} [{}] {} backend={} {} reason={}",
            self.ns,
            self.direction,
            self.src,
            self.dst,
            self.flags,
            self.decision,
            self.backend.as_deref().unwrap_or("-"),
            self.action,
            self.reason.as_deref().unwrap_or("-"),
        )
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{
        counters::Reason,
        trace::{TRACE_DECISION_FLOW_HIT, TRACE_DIR_TO_BACKEND, TRACE_NO_REASON},
    };

    use super::*;

    #[test]
    fn a_record_reads_in_host_order_with_names() {
        let record = TraceRecord {
            ns: 7,
            service: 0,
            backend: 3,
            src_addr: [u32::from_ne_bytes([10, 10, 0, 2]), 0, 0, 0],
            dst_addr: [u32::from_ne_bytes([10, 0, 0, 100]), 0, 0, 0],
            src_port: 40000u16.to_be(),
            dst_port: 80u16.to_be(),
            proto: 6,
            tcp_flags: 0x12,
            direction: TRACE_DIR_TO_BACKEND,
            decision: TRACE_DECISION_FLOW_HIT,
            action: 4,
            reason: Reason::RedirectInterface as u32,
            family: lb_common::trace::TRACE_FAMILY_IPV4,
            _pad: 0,
        };
        let names = BackendNames::from([(3, "10.1.0.11:8080".to_string())]);
        let l = line(&record, "web", &names);
        assert_eq!(
            l.to_string(),
            "7 to_backend 10.10.0.2:40000 -> 10.0.0.100:80 [SA] flow_hit \
             backend=10.1.0.11:8080 redirect reason=redirect_interface"
        );
        let gone = TraceRecord {
            backend: 9,
            reason: TRACE_NO_REASON,
            action: 2,
            tcp_flags: 0,
            ..record
        };
        let l = line(&gone, "web", &names);
        assert_eq!(
            (
                l.backend.as_deref(),
                l.reason,
                l.action.as_str(),
                l.flags.as_str()
            ),
            (Some("id 9"), None, "pass", "none")
        );
        // An IPv6 record: the four words in wire order, written as Prometheus and lbctl
        // write an IPv6 socket address.
        let words = |a: Ipv6Addr| -> [u32; 4] {
            let o = a.octets();
            core::array::from_fn(|i| u32::from_ne_bytes(o[4 * i..4 * i + 4].try_into().unwrap()))
        };
        let v6 = TraceRecord {
            src_addr: words("2001:db8:10::2".parse().unwrap()),
            dst_addr: words("2001:db8::100".parse().unwrap()),
            family: TRACE_FAMILY_IPV6,
            ..record
        };
        let l = line(&v6, "web6", &names);
        assert_eq!(
            (l.src.as_str(), l.dst.as_str()),
            ("[2001:db8:10::2]:40000", "[2001:db8::100]:80")
        );
    }
}
