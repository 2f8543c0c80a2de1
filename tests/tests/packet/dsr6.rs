//! Direct server return for IPv6 services through the real object (`lb_v6` hands a
//! placed packet to `lb_dsr6`): `dsr_l2` changes only the MACs (hop limit, addresses,
//! ports, checksum as the client sent them), and a backend reached through a gateway is
//! refused per packet. Every run checks the action, every output byte and the one reason
//! counter that moved.
use std::net::Ipv6Addr;

use lb_common::counters::Reason;
use lb_tests::{
    frame::{PSH_ACK, SYN},
    frame6::Frame6,
    packet_exchange::run_counted,
    packet_rig::*,
    rig_config_with,
};

use super::ipv6::table_backend6;

/// The rig's `web` (NAT) and the IPv6 DSR services.
const DSR6: &str = rig_config_with!(lb_tests::rig_dsr6_services!());

const L2_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x120);

fn to_vip(vip: Ipv6Addr, sport: u16, flags: u8, payload: usize) -> Frame6 {
    Frame6 {
        src_mac: CLIENT_MAC,
        src: CLIENT6,
        dst: vip,
        sport,
        flags,
        payload: vec![0x5a; payload],
        ..Frame6::default()
    }
}

#[test]
fn dsr_l2_over_ipv6_changes_only_the_macs() {
    let rig = Rig::build();
    let (c0, b0_mac) = (rig.c0, rig.b0_mac);
    rig.with_dataplane(DSR6, |c| {
        for (n, sport) in (41_000..41_012).enumerate() {
            // SYNs (which record their flow) and data segments without one (placed by
            // the table, as a flow another node saw open).
            let flags = if n % 2 == 0 { SYN } else { PSH_ACK };
            let frame = to_vip(L2_VIP, sport, flags, n * 3);
            let backend = table_backend6(c, "l2v6", &frame.flow_key());
            let r = run_counted(c.dataplane(), c0, &frame.bytes(), Reason::RedirectInterface);
            assert_eq!(r.action, XDP_REDIRECT, "port {sport}");
            let mut want = frame.bytes();
            want[0..6].copy_from_slice(&backend_mac(backend.octets()[15]));
            want[6..12].copy_from_slice(&b0_mac);
            assert_eq!(
                r.output, want,
                "port {sport}: only the MACs change, the hop limit too stays"
            );
        }
        let web = c
            .dataplane()
            .service_counters(service_id(c, "l2v6"))
            .unwrap();
        assert_eq!(web.new_flows, 6, "each SYN opened a flow");
    });
}

#[test]
fn a_dsr_l2_backend_behind_a_gateway_is_refused_per_packet() {
    let rig = Rig::build();
    let c0 = rig.c0;
    // 2001:db8:2::/64 is routed through the backend 2001:db8:1::12, which has a
    // neighbour entry: the lookup succeeds, with a gateway.
    lb_tests::netns::ns_ip(
        &rig.ns,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:2::/64",
            "via",
            "2001:db8:1::12",
            "dev",
            "b0",
        ],
    );
    let far = DSR6
        .replace("2001:db8:1::11\", port: 80", "2001:db8:2::11\", port: 80")
        .replace("2001:db8:1::12\", port: 80", "2001:db8:2::12\", port: 80")
        .replace("2001:db8:1::13\", port: 80", "2001:db8:2::13\", port: 80");
    assert_ne!(far, DSR6);
    rig.with_dataplane(&far, |c| {
        for sport in 42_000..42_004 {
            let frame = to_vip(L2_VIP, sport, PSH_ACK, 10);
            let r = run_counted(c.dataplane(), c0, &frame.bytes(), Reason::DropDsrNotOnLink);
            assert_eq!(r.action, XDP_DROP, "port {sport}");
        }
    });
}
