//! The per-CPU flow cache (see `lb_common::flow::FlowCacheEntry`): a flow's plain packets
//! skip the table once its CPU cached it, and whatever replaces or deletes entries
//! empties every CPU's cache. Real object, BPF_PROG_TEST_RUN, the thread pinned to one
//! CPU so that every call sees the same CPU's cache.
use lb_tests::{
    frame::{dst_ip, Frame},
    packet_rig::*,
};
use lb_userspace::loader::KernelDataplane;

const ACK: u8 = 0x10;
const RST: u8 = 0x04;

fn send(dp: &KernelDataplane, c0: u32, frame: &Frame) -> std::net::Ipv4Addr {
    let r = run_once(dp.program(), c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{frame:?}");
    dst_ip(&r.output)
}

#[test]
fn plain_packets_use_the_cache_until_lbd_invalidates_it() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        pin_to_cpu(0);
        let dp = c.dataplane_mut();
        let syn = client_syn(53000);
        let ack = Frame {
            flags: ACK,
            ..syn.clone()
        };
        let backend = send(dp, c0, &syn);
        send(dp, c0, &ack); // records the flow
        send(dp, c0, &ack); // finds it in the table, caches it
                            // Deleted behind the data path's back: the cache still knows the flow, so the
                            // next ACK goes where it went and records nothing.
        dp.flows.remove(&syn.flow_key()).unwrap();
        assert_eq!(send(dp, c0, &ack), backend);
        assert!(
            dp.flows.get(&syn.flow_key(), 0).is_err(),
            "served from the cache"
        );
        // What lbd does after deleting flows: the next ACK misses the cache and the
        // table, and the ring records the flow again.
        dp.invalidate_flow_caches().unwrap();
        assert_eq!(send(dp, c0, &ack), backend);
        assert!(dp.flows.get(&syn.flow_key(), 0).is_ok(), "recorded again");
    });
}

#[test]
fn a_new_connection_on_a_reused_tuple_is_not_served_from_the_cache() {
    let rig = Rig::build();
    let c0 = rig.c0;
    rig.with_dataplane(CONFIG, |c| {
        pin_to_cpu(0);
        let dp = c.dataplane();
        let syn = client_syn(53001);
        let ack = Frame {
            flags: ACK,
            ..syn.clone()
        };
        send(dp, c0, &syn);
        send(dp, c0, &ack);
        send(dp, c0, &ack); // cached
        send(
            dp,
            c0,
            &Frame {
                flags: RST,
                ..syn.clone()
            },
        ); // closes the flow
        let before = dp.service_counters(0).unwrap().new_flows;
        // A new connection on the same tuple: its SYN deletes the closed entry (a SYN
        // to `web` records nothing), and its ACK must record the new flow, not follow
        // the cached old one.
        send(dp, c0, &syn);
        assert!(dp.flows.get(&syn.flow_key(), 0).is_err());
        send(dp, c0, &ack);
        let flow = dp
            .flows
            .get(&syn.flow_key(), 0)
            .expect("the new flow is recorded");
        assert_eq!(flow.state & lb_common::flow::FLOW_F_CLOSED, 0);
        assert_eq!(dp.service_counters(0).unwrap().new_flows, before + 1);
    });
}
