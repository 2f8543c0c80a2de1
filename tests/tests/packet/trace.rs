//! The sampled packet trace (see `lb_common::trace`): exact records for the packets of a
//! traced service, none for another service's or for a trace switched off. Real object,
//! BPF_PROG_TEST_RUN (see `lb_tests::packet_rig`).
use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};
use lb_common::{
    counters::Reason,
    trace::{
        TraceRecord, TRACE_DECISION_FLOW_HIT, TRACE_DECISION_NEW_FLOW, TRACE_DECISION_REFUSED,
        TRACE_DECISION_REPLY_RECOVERED, TRACE_DECISION_STATELESS_FORWARD,
        TRACE_DECISION_STATELESS_SYN, TRACE_DECISION_SYN_CACHE, TRACE_DIR_TO_BACKEND,
        TRACE_DIR_TO_CLIENT, TRACE_NO_BACKEND,
    },
};
use lb_tests::{
    frame::{dst_ip, Frame, ACK, SYN},
    packet_rig::*,
};
use lb_userspace::{control::tables::Controller, kernel::KernelDataplane};

/// Every record in the ring, with the timestamp checked (non-zero, in order) and zeroed
/// so that the rest compares exactly.
pub(crate) fn drain(ring: &mut RingBuf<MapData>) -> Vec<TraceRecord> {
    let mut out = Vec::new();
    let mut last = 0;
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<TraceRecord>(), "record size");
        // SAFETY: TraceRecord is plain integers and the item is exactly one record.
        let mut r: TraceRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        assert!(r.ns != 0 && r.ns >= last, "timestamp {} after {last}", r.ns);
        last = r.ns;
        r.ns = 0;
        out.push(r);
    }
    out
}

/// The record the data path must write for `frame` (as sent by the client or backend).
fn expected(
    frame: &Frame,
    service: u32,
    backend: u32,
    direction: u8,
    decision: u8,
    action: u32,
    reason: u32,
) -> TraceRecord {
    let key = frame.flow_key();
    TraceRecord {
        ns: 0,
        service,
        backend,
        src_addr: [key.src_addr, 0, 0, 0],
        dst_addr: [key.dst_addr, 0, 0, 0],
        src_port: key.src_port,
        dst_port: key.dst_port,
        proto: 6,
        tcp_flags: frame.flags,
        direction,
        decision,
        action,
        reason,
        family: lb_common::trace::TRACE_FAMILY_IPV4,
        _pad: 0,
    }
}

#[test]
fn a_traced_service_gets_one_exact_record_per_packet_and_others_none() {
    let rig = Rig::build();
    rig.with_dataplane(CONFIG, |c| {
        let web = service_id(c, "web");
        let rr = service_id(c, "rr");
        let empty = service_id(c, "empty");
        let redirect = Reason::RedirectInterface as u32;
        let backend_of =
            |c: &Controller<KernelDataplane>, name: &str, addr: Ipv4Addr| backend_id(c, name, addr);
        let mut trace = c.dataplane_mut().take_trace().expect("the trace maps");
        let mut ring = trace.take_ring().expect("the ring");
        for (id, every) in [(web, 1), (rr, 1), (empty, 1)] {
            trace.set_sample(id, every).unwrap();
        }
        let dp = c.dataplane();

        // A handshake to the hash-placed `web`: the SYN leaves a slot, the ACK records
        // the flow from it, the next segment hits the flow.
        let syn = client_syn(41_000);
        let r = run_once(dp.program(), rig.c0, &syn.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let backend = dst_ip(&r.output);
        let b = backend_of(c, "web", backend);
        // The SYN-ACK goes back through the SYN cache, traced as nothing.
        syn_ack_passes(dp, rig.b0, &syn, backend);
        let ack = ack_of(&syn);
        for _ in 0..2 {
            let r = run_once(dp.program(), rig.c0, &ack.bytes());
            assert_eq!((r.action, dst_ip(&r.output)), (XDP_REDIRECT, backend));
        }
        let to = TRACE_DIR_TO_BACKEND;
        assert_eq!(
            drain(&mut ring),
            vec![
                expected(
                    &syn,
                    web,
                    b,
                    to,
                    TRACE_DECISION_STATELESS_SYN,
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &ack,
                    web,
                    b,
                    to,
                    TRACE_DECISION_SYN_CACHE,
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &ack,
                    web,
                    b,
                    to,
                    TRACE_DECISION_FLOW_HIT,
                    XDP_REDIRECT,
                    redirect
                ),
            ]
        );

        // A SYN to `rr` records its flow; a SYN to `empty` is dropped; a SYN to the
        // untraced `sh` writes nothing.
        let rr_syn = Frame {
            dst: vip_of(c, "rr"),
            ..client_syn(41_001)
        };
        let r = run_once(dp.program(), rig.c0, &rr_syn.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let rr_backend = backend_of(c, "rr", dst_ip(&r.output));
        let empty_syn = Frame {
            dst: vip_of(c, "empty"),
            ..client_syn(41_002)
        };
        assert_eq!(
            run_once(dp.program(), rig.c0, &empty_syn.bytes()).action,
            XDP_DROP
        );
        let sh_syn = Frame {
            dst: vip_of(c, "sh"),
            ..client_syn(41_003)
        };
        assert_eq!(
            run_once(dp.program(), rig.c0, &sh_syn.bytes()).action,
            XDP_REDIRECT
        );
        let drop = Reason::DropNoBackend as u32;
        assert_eq!(
            drain(&mut ring),
            vec![
                expected(
                    &rr_syn,
                    rr,
                    rr_backend,
                    to,
                    TRACE_DECISION_NEW_FLOW,
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &empty_syn,
                    empty,
                    TRACE_NO_BACKEND,
                    to,
                    TRACE_DECISION_REFUSED,
                    XDP_DROP,
                    drop
                ),
            ]
        );

        // An ACK without an entry is forwarded by the table; its backend's reply recovers
        // the flow in `lb_reply`, traced as the reply it is.
        let lost = Frame {
            flags: ACK,
            ..client_syn(41_004)
        };
        let r = run_once(dp.program(), rig.c0, &lost.bytes());
        assert_eq!(r.action, XDP_REDIRECT);
        let lost_backend = dst_ip(&r.output);
        let lb = backend_of(c, "web", lost_backend);
        let reply = Frame {
            src_mac: backend_mac(lost_backend.octets()[3]),
            src: lost_backend,
            dst: lost.src,
            sport: 8080,
            dport: lost.sport,
            flags: ACK,
            ..Frame::default()
        };
        assert_eq!(
            run_once(dp.program(), rig.b0, &reply.bytes()).action,
            XDP_REDIRECT
        );
        assert_eq!(
            drain(&mut ring),
            vec![
                expected(
                    &lost,
                    web,
                    lb,
                    to,
                    TRACE_DECISION_STATELESS_FORWARD,
                    XDP_REDIRECT,
                    redirect
                ),
                expected(
                    &reply,
                    web,
                    lb,
                    TRACE_DIR_TO_CLIENT,
                    TRACE_DECISION_REPLY_RECOVERED,
                    XDP_REDIRECT,
                    redirect
                ),
            ]
        );

        // Switched off (0), the same kinds of packets write nothing.
        for id in [web, rr, empty] {
            trace.set_sample(id, 0).unwrap();
        }
        let dp = c.dataplane();
        for (n, dst) in [vip_of(c, "web"), vip_of(c, "rr"), vip_of(c, "empty")]
            .into_iter()
            .enumerate()
        {
            let syn = Frame {
                dst,
                flags: SYN,
                ..client_syn(42_000 + n as u16)
            };
            run_once(dp.program(), rig.c0, &syn.bytes());
            let ack = Frame { flags: ACK, ..syn };
            run_once(dp.program(), rig.c0, &ack.bytes());
        }
        assert_eq!(drain(&mut ring), vec![], "records with every trace off");
        assert_eq!(trace.lost().unwrap(), 0, "records lost");
    });
}

/// A full ring loses records and counts each one: 512 KiB holds exactly 6,553 records of
/// 72 bytes behind the kernel's 8-byte header.
#[test]
fn records_that_find_the_ring_full_are_counted_as_lost() {
    const FIT: u64 = (lb_common::trace::TRACE_RING_BYTES / 80) as u64;
    assert_eq!(FIT, 6_553);
    let sent = FIT + 539;
    let rig = Rig::build();
    rig.with_dataplane(CONFIG, |c| {
        let web = service_id(c, "web");
        let mut trace = c.dataplane_mut().take_trace().expect("the trace maps");
        let mut ring = trace.take_ring().expect("the ring");
        trace.set_sample(web, 1).unwrap();
        let dp = c.dataplane();
        for n in 0..sent {
            let syn = client_syn(1024 + n as u16);
            assert_eq!(
                run_once(dp.program(), rig.c0, &syn.bytes()).action,
                XDP_REDIRECT
            );
        }
        assert_eq!(drain(&mut ring).len() as u64, FIT, "records in the ring");
        assert_eq!(trace.lost().unwrap(), sent - FIT, "records lost");
    });
}
