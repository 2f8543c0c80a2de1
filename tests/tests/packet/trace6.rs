//! The sampled packet trace of IPv6 packets (`lb_v6`, `lb_v6_syn`): exact records,
//! addresses in all four words and family 6, for a traced IPv6 service's handshake
//! through the SYN cache (the SYN-ACK traced as nothing, as over IPv4), its packets both
//! ways, a stateless forward and a refused packet; none once the trace is off. Real object,
//! BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::net::Ipv6Addr;

use lb_common::{
    counters::Reason,
    trace::{
        TraceRecord, TRACE_DECISION_FLOW_HIT, TRACE_DECISION_REFUSED,
        TRACE_DECISION_STATELESS_FORWARD, TRACE_DECISION_STATELESS_SYN, TRACE_DECISION_SYN_CACHE,
        TRACE_DIR_TO_BACKEND, TRACE_DIR_TO_CLIENT, TRACE_FAMILY_IPV6, TRACE_NO_BACKEND,
    },
};
use lb_tests::{
    frame::{ACK, SYN},
    frame6::Frame6,
    packet_rig::*,
};

use super::{
    ipv6::{backend_id6, client_from, table_backend6, V6_CONFIG},
    trace::drain,
};

/// The record the data path must write for `frame` as it arrived.
fn expected(
    frame: &Frame6,
    ids: (u32, u32),
    how: (u8, u8),
    action: u32,
    reason: u32,
) -> TraceRecord {
    let key = frame.flow_key();
    TraceRecord {
        ns: 0,
        service: ids.0,
        backend: ids.1,
        src_addr: key.src_addr,
        dst_addr: key.dst_addr,
        src_port: key.src_port,
        dst_port: key.dst_port,
        proto: 6,
        tcp_flags: frame.flags,
        direction: how.0,
        decision: how.1,
        action,
        reason,
        family: TRACE_FAMILY_IPV6,
        _pad: 0,
    }
}

#[test]
fn a_traced_ipv6_service_gets_one_exact_record_per_packet_both_ways() {
    let rig = Rig::build();
    rig.with_dataplane(V6_CONFIG, |c| {
        let web6 = service_id(c, "web6");
        let redirect = Reason::RedirectInterface as u32;
        let mut trace = c.dataplane_mut().take_trace().expect("the trace maps");
        let mut ring = trace.take_ring().expect("the ring");
        trace.set_sample(web6, 1).unwrap();
        let dp = c.dataplane();

        // The handshake of the hash-placed `web6`: the SYN leaves a slot, the backend's
        // SYN-ACK goes back through it, the ACK proving it records the flow, the next
        // segment hits the flow.
        let syn = client_from(CLIENT6, 42_000, SYN);
        let addr = table_backend6(c, "web6", &syn.flow_key());
        let b = backend_id6(c, "web6", addr);
        assert_eq!(
            super::stateless_syn6::handshake6(dp, rig.c0, rig.b0, &syn),
            addr
        );
        let ack = Frame6 {
            flags: ACK,
            seq: syn.seq.wrapping_add(1),
            ack: BACKEND_ISN.wrapping_add(1),
            ..syn.clone()
        };
        assert_eq!(
            run_once(dp.program(), rig.c0, &ack.bytes()).action,
            XDP_REDIRECT
        );
        let reply = Frame6 {
            src_mac: backend_mac(addr.octets()[15]),
            src: addr,
            dst: CLIENT6,
            sport: 8080,
            dport: 42_000,
            flags: ACK,
            ..Frame6::default()
        };
        assert_eq!(
            run_once(dp.program(), rig.b0, &reply.bytes()).action,
            XDP_REDIRECT
        );
        // An ACK of no flow goes by the table, recording nothing.
        let stray = client_from(CLIENT6, 42_001, ACK);
        let stray_b = backend_id6(c, "web6", table_backend6(c, "web6", &stray.flow_key()));
        assert_eq!(
            run_once(dp.program(), rig.c0, &stray.bytes()).action,
            XDP_REDIRECT
        );
        // A SYN from the loopback address is refused.
        let martian = client_from(Ipv6Addr::LOCALHOST, 42_002, SYN);
        assert_eq!(
            run_once(dp.program(), rig.c0, &martian.bytes()).action,
            XDP_DROP
        );

        let (to, back) = (TRACE_DIR_TO_BACKEND, TRACE_DIR_TO_CLIENT);
        let martian_why = Reason::DropMartianSource as u32;
        assert_eq!(
            drain(&mut ring),
            vec![
                expected(
                    &syn,
                    (web6, b),
                    (to, TRACE_DECISION_STATELESS_SYN),
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &ack,
                    (web6, b),
                    (to, TRACE_DECISION_SYN_CACHE),
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &ack,
                    (web6, b),
                    (to, TRACE_DECISION_FLOW_HIT),
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &reply,
                    (web6, b),
                    (back, TRACE_DECISION_FLOW_HIT),
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &stray,
                    (web6, stray_b),
                    (to, TRACE_DECISION_STATELESS_FORWARD),
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &martian,
                    (web6, TRACE_NO_BACKEND),
                    (to, TRACE_DECISION_REFUSED),
                    XDP_DROP,
                    martian_why
                ),
            ]
        );

        // Off: nothing more.
        trace.set_sample(web6, 0).unwrap();
        assert_eq!(
            run_once(dp.program(), rig.c0, &ack.bytes()).action,
            XDP_REDIRECT
        );
        assert_eq!(drain(&mut ring), Vec::new());
    });
}
