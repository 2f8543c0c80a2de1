//! The exchanges packet tests make through the [`crate::packet_rig::Rig`] again and
//! again: a run that must move exactly one reason counter, a client packet that must be
//! redirected, a backend's answer, a full handshake. One copy
//! here, so every test sends the same frames and checks them the same way.
use std::net::Ipv4Addr;

use lb_common::counters::{Reason, REASONS};
use lb_userspace::kernel::KernelDataplane;

use crate::{
    frame::{dst_ip, Frame, SYN_ACK},
    packet_rig::{ack_of, backend_mac, run_once, RunResult, BACKEND_ISN, XDP_REDIRECT},
};

/// Runs a frame and checks that exactly one reason counter moved, by one.
pub fn run_counted(dp: &KernelDataplane, ifindex: u32, frame: &[u8], reason: Reason) -> RunResult {
    counted(dp, reason, || run_once(dp.program(), ifindex, frame))
}

/// `run`, which must move exactly one reason counter (`reason`), by one.
pub fn counted(dp: &KernelDataplane, reason: Reason, run: impl FnOnce() -> RunResult) -> RunResult {
    let before = dp.reason_counters().unwrap();
    let result = run();
    let after = dp.reason_counters().unwrap();
    for (slot, (r, name)) in REASONS.iter().enumerate() {
        let want = before[slot] + u64::from(*r == reason);
        assert_eq!(
            after[slot], want,
            "counter {name} after a frame expected to count {reason:?}"
        );
    }
    result
}

/// Sends a frame from the client side (`rig_c0`) and returns where it went (the rewritten
/// destination); the frame must be redirected.
pub fn send(dp: &KernelDataplane, rig_c0: u32, frame: &Frame) -> Ipv4Addr {
    let r = run_once(dp.program(), rig_c0, &frame.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "{frame:?}");
    dst_ip(&r.output)
}

/// `backend`:`port`'s segment with `flags` to the client that sent `to`, as it arrives on
/// `b0`: sequence number [`BACKEND_ISN`], acknowledging `to`, so that as a SYN-ACK it is
/// the one [`ack_of`] acknowledges.
pub fn answer(to: &Frame, backend: Ipv4Addr, port: u16, flags: u8) -> Frame {
    Frame {
        src_mac: backend_mac(backend.octets()[3]),
        src: backend,
        dst: to.src,
        sport: port,
        dport: to.sport,
        flags,
        seq: BACKEND_ISN,
        ack: to.seq.wrapping_add(1),
        ..Frame::default()
    }
}

/// [`answer`] from the rig's backend port 8080.
pub fn reply(to: &Frame, backend: Ipv4Addr, flags: u8) -> Frame {
    answer(to, backend, 8080, flags)
}

/// A full handshake (the client's `syn`, the backend's SYN-ACK, the client's ACK of it), each
/// packet redirected on; returns the backend. Whichever packet records the flow, both
/// directions are recorded once the three have passed.
pub fn handshake(dp: &KernelDataplane, rig: (u32, u32), syn: &Frame) -> Ipv4Addr {
    let (c0, b0) = rig;
    let sport = syn.sport;
    let r = run_once(dp.program(), c0, &syn.bytes());
    assert_eq!(r.action, XDP_REDIRECT, "SYN from {sport}");
    let backend = dst_ip(&r.output);
    let r = run_once(dp.program(), b0, &reply(syn, backend, SYN_ACK).bytes());
    assert_eq!(r.action, XDP_REDIRECT, "SYN-ACK to {sport}");
    let ack = ack_of(syn);
    let r = run_once(dp.program(), c0, &ack.bytes());
    assert_eq!(
        (r.action, dst_ip(&r.output)),
        (XDP_REDIRECT, backend),
        "ACK from {sport}"
    );
    backend
}
