//! Flow ageing through the real program: the data path stamps flows with the
//! controller's clock, and the controller's walk removes idle ones by state.
use lb_common::flow::FLOW_F_ESTABLISHED;
use lb_tests::{
    frame::{dst_ip, Frame},
    packet_rig::*,
};
use lb_userspace::config::FlowTimeouts;

#[test]
fn idle_flows_expire_by_state_and_active_ones_stay() {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    rig.with_dataplane(CONFIG, |c| {
        let t = FlowTimeouts::default();
        let dp = c.dataplane_mut();
        dp.set_clock(1000).unwrap();
        // A bare SYN (to the round-robin service: a SYN to `web` records nothing), and a
        // connection whose client acknowledged its backend's SYN-ACK.
        let half_open = Frame {
            dst: "10.0.0.110".parse().unwrap(),
            ..client_syn(52000)
        };
        let b1 = dst_ip(&run_once(dp.program(), c0, &half_open.bytes()).output);
        let open = client_syn(52001);
        let b2 = dst_ip(&run_once(dp.program(), c0, &open.bytes()).output);
        syn_ack_passes(dp, b0, &open, b2);
        run_once(dp.program(), c0, &ack_of(&open).bytes());
        let stamped = dp.flows.get(&open.flow_key(), 0).unwrap();
        assert_eq!(stamped.last_seen, 1000);
        assert_ne!(stamped.state & FLOW_F_ESTABLISHED, 0);

        // 31 s later the bare SYN is gone, both directions; the connection is not.
        assert_eq!(dp.expire_flows(1000 + 31, &t).unwrap(), 1);
        assert!(dp.flows.get(&half_open.flow_key(), 0).is_err());
        assert!(dp.return_flows.get(&half_open.reply_key(b1), 0).is_err());
        assert!(dp.flows.get(&open.flow_key(), 0).is_ok());

        // A packet at 1300 refreshes it: still there at 1300 + 350, gone after.
        dp.set_clock(1300).unwrap();
        run_once(
            dp.program(),
            c0,
            &Frame {
                flags: 0x10,
                ..open.clone()
            }
            .bytes(),
        );
        assert_eq!(dp.expire_flows(1300 + 350, &t).unwrap(), 0);
        assert_eq!(dp.expire_flows(1300 + 351, &t).unwrap(), 1);
        assert!(dp.flows.get(&open.flow_key(), 0).is_err());
        assert!(dp.return_flows.get(&open.reply_key(b2), 0).is_err());
    });
}
