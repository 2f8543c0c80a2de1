//! `lbctl explain`'s answer checked against where the real XDP program sends the packets
//! (BPF_PROG_TEST_RUN in the packet rig, see `lb_tests::packet_rig`): for a new tuple,
//! a handshake in flight, a flow with an entry (also after its backend was drained,
//! when the entry and the table disagree), and a round-robin service on a pinned CPU.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use lb_tests::{
    frame::{dst_ip, Frame, ACK},
    netns,
    packet_rig::*,
};
use lb_userspace::{
    config::{self, BackendState},
    controller::Controller,
    explain::{explain, ExplainView},
    loader::KernelDataplane,
    runtime::Runtime,
};

fn ask(rt: &Runtime<KernelDataplane>, frame: &Frame) -> ExplainView {
    explain(
        rt,
        SocketAddrV4::new(frame.src, frame.sport),
        SocketAddrV4::new(frame.dst, frame.dport),
        Instant::now(),
    )
    .expect("explain")
}

/// The address of the backend a choice names; it must name one.
fn named(c: &lb_userspace::explain::view::ChoiceView) -> Ipv4Addr {
    let b = c
        .backend
        .as_ref()
        .unwrap_or_else(|| panic!("no backend: {c:?}"));
    b.address.parse::<SocketAddrV4>().unwrap().ip().to_owned()
}

/// Runs `frame` through the program; it must be redirected. Returns the backend.
fn send(rt: &Runtime<KernelDataplane>, c0: u32, frame: &Frame) -> Ipv4Addr {
    let r = run_once(rt.controller().dataplane().program(), c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{frame:?}");
    dst_ip(&r.output)
}

fn with_runtime(rig: &Rig, f: impl FnOnce(&mut Runtime<KernelDataplane>, u32) + Send) {
    let (c0, b0) = (rig.c0, rig.b0);
    netns::run_in(&rig.ns, move || {
        let config = config::parse(CONFIG).expect("rig config is valid");
        let mut dp = KernelDataplane::load(&config, None).expect("loading the XDP object");
        dp.add_egress(c0).expect("devmap insert");
        dp.add_egress(b0).expect("devmap insert");
        let controller = Controller::new(dp, config.cluster.ring_size);
        let (mut rt, _) = Runtime::start(config, controller, Instant::now()).expect("start");
        f(&mut rt, c0)
    })
}

#[test]
fn explain_names_the_backend_each_packet_of_a_hash_placed_tuple_takes() {
    let rig = Rig::build();
    let b0 = rig.b0;
    with_runtime(&rig, |rt, c0| {
        let syn = client_syn(40001);
        let ack = ack_of(&syn);
        // A new tuple: both packets placed by the ring.
        let v = ask(rt, &syn);
        assert_eq!(
            (v.new_connection.by.as_str(), v.flow_entry.is_none()),
            ("policy", true)
        );
        let first = named(&v.new_connection);
        assert_eq!(send(rt, c0, &syn), first);
        // The handshake in flight: its slot names the backend the SYN went to.
        let v = ask(rt, &syn);
        assert_eq!(
            v.syn_cache.as_ref().map(|s| s.backend_id),
            v.new_connection.backend.as_ref().map(|b| b.id)
        );
        assert_eq!(v.existing_connection.by, "syn_cache");
        assert_eq!(named(&v.existing_connection), first);
        syn_ack_passes(rt.controller().dataplane(), b0, &syn, first);
        assert_eq!(send(rt, c0, &ack), first);
        // The ACK recorded the flow and spent the slot.
        let v = ask(rt, &syn);
        assert_eq!(v.syn_cache, None);
        assert_eq!(v.existing_connection.by, "flow_entry");
        assert_eq!(named(&v.existing_connection), first);
        let entry = v.flow_entry.expect("the ACK recorded the flow");
        assert_eq!(entry.flags, ["counted", "established"]);

        // Drained, its backend keeps the flow but takes no new one: the entry and the
        // table now disagree, and each packet goes where explain says.
        let mut drained = rt.config().clone();
        let web = drained
            .services
            .iter_mut()
            .find(|s| s.name == "web")
            .unwrap();
        web.backends
            .iter_mut()
            .find(|b| b.address == first)
            .unwrap()
            .state = BackendState::Draining;
        rt.reload(drained, Instant::now()).expect("reload");
        let v = ask(rt, &syn);
        assert_eq!(v.existing_connection.by, "flow_entry");
        assert_eq!(named(&v.existing_connection), first);
        let b = v.existing_connection.backend.as_ref().unwrap();
        assert_eq!((b.state.as_str(), b.takes_new_flows), ("draining", false));
        assert_eq!(v.new_connection.by, "policy");
        let fresh = named(&v.new_connection);
        assert_ne!(fresh, first);
        let data = Frame {
            payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            ..ack.clone()
        };
        assert_eq!(send(rt, c0, &data), first);
        assert_eq!(send(rt, c0, &syn), fresh);

        // Tuples with no state at all: a SYN goes by the policy, a bare ACK by the
        // table, statelessly (many tuples, so a wrong hash cannot match by chance).
        for sport in 41000..41024 {
            let syn = client_syn(sport);
            let v = ask(rt, &syn);
            assert_eq!(v.new_connection.by, "policy");
            assert_eq!(
                send(rt, c0, &syn),
                named(&v.new_connection),
                "SYN from {sport}"
            );
            let stray = Frame {
                flags: ACK,
                ..client_syn(sport + 1000)
            };
            let v = ask(rt, &stray);
            assert_eq!(
                (v.existing_connection.by.as_str(), v.flow_entry.is_none()),
                ("table", true)
            );
            let went = send(rt, c0, &stray);
            assert_eq!(
                went,
                named(&v.existing_connection),
                "ACK from {}",
                sport + 1000
            );
            // It recorded nothing but a forwarded slot naming where it went, for the reply.
            let v = ask(rt, &stray);
            assert_eq!(v.flow_entry, None);
            assert_eq!(v.syn_cache, None);
            let slot = v.forwarded_slot.expect("the forwarded packet's slot");
            assert_eq!(slot.backend.unwrap().address, format!("{went}:8080"));
        }
    });
}

#[test]
fn explain_says_dropped_for_a_martian_source_and_the_program_drops_it() {
    let rig = Rig::build();
    with_runtime(&rig, |rt, c0| {
        let syn = Frame {
            src: Ipv4Addr::new(127, 0, 0, 1),
            ..client_syn(40005)
        };
        let v = ask(rt, &syn);
        assert_eq!(
            (
                v.new_connection.by.as_str(),
                v.new_connection.backend.is_none()
            ),
            ("dropped", true)
        );
        let r = run_once(rt.controller().dataplane().program(), c0, &syn.bytes());
        assert_eq!(r.action, XDP_DROP);
    });
}

#[test]
fn explain_names_the_round_robin_backend_of_the_receiving_cpu() {
    let rig = Rig::build();
    with_runtime(&rig, |rt, c0| {
        // BPF_PROG_TEST_RUN runs on the calling CPU: its cursor is the one that moves.
        pin_to_cpu(0);
        let syn = Frame {
            dst: Ipv4Addr::new(10, 0, 0, 110),
            ..client_syn(40003)
        };
        for round in 0..5 {
            let syn = Frame {
                sport: 40003 + round,
                ..syn.clone()
            };
            let v = ask(rt, &syn);
            let cpu0 = v
                .table
                .round_robin_next
                .iter()
                .find(|n| n.cpu == 0)
                .and_then(|n| n.backend.as_ref())
                .expect("CPU 0's next");
            let want: Ipv4Addr = cpu0
                .address
                .parse::<SocketAddrV4>()
                .unwrap()
                .ip()
                .to_owned();
            assert_eq!(send(rt, c0, &syn), want, "round {round}");
            // Recorded by the SYN: a retransmit follows the entry.
            let v = ask(rt, &syn);
            assert_eq!(v.new_connection.by, "flow_entry");
            assert_eq!(named(&v.new_connection), want);
            assert_eq!(send(rt, c0, &syn), want);
        }
    });
}
