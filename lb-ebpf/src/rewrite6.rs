//! Rewrite for IPv6 (NAT66): one address and one port, with the L4 checksum updated
//! incrementally for the 128-bit change of the pseudo-header (IPv6 has no header
//! checksum). Offsets are constants: without CAP_PERFMON the verifier refuses a variable
//! added to a packet pointer, so TCP and UDP each have their own.
use lb_common::{
    checksum::{replace16, replace2, udp6_replace},
    ipv6::Addr6,
};

use crate::{parse6::Packet6, v6::addr_at, wire};

// Offsets in the IPv6, TCP and UDP headers.
const IP_SRC: usize = 8;
const IP_DST: usize = 24;
const SPORT: usize = 0;
const DPORT: usize = 2;
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// Destination NAT of a TCP segment: VIP:port -> backend address:port (wire order).
#[inline(always)]
pub fn dnat_tcp(pkt: &Packet6, addr: &Addr6, port: u16) {
    unsafe {
        let old = swap_addr(pkt.ip.add(IP_DST), addr);
        let old_port = swap_port(pkt.l4.add(DPORT), port);
        let check = pkt.l4.add(TCP_CHECK);
        let sum = replace16(wire::get16(check), &old, addr);
        wire::set16(check, replace2(sum, old_port, port));
    }
}

/// Source NAT of a TCP segment on the way back: backend -> VIP:port (wire order).
#[inline(always)]
pub fn snat_tcp(pkt: &Packet6, addr: &Addr6, port: u16) {
    unsafe {
        let old = swap_addr(pkt.ip.add(IP_SRC), addr);
        let old_port = swap_port(pkt.l4.add(SPORT), port);
        let check = pkt.l4.add(TCP_CHECK);
        let sum = replace16(wire::get16(check), &old, addr);
        wire::set16(check, replace2(sum, old_port, port));
    }
}

/// Destination NAT of a UDP datagram (whose checksum is not zero: see `udp6`).
#[inline(always)]
pub fn dnat_udp(pkt: &Packet6, addr: &Addr6, port: u16) {
    unsafe {
        let old = swap_addr(pkt.ip.add(IP_DST), addr);
        let old_port = swap_port(pkt.l4.add(DPORT), port);
        let check = pkt.l4.add(UDP_CHECK);
        wire::set16(
            check,
            udp6_replace(wire::get16(check), &old, addr, old_port, port),
        );
    }
}

/// Source NAT of a UDP datagram on the way back.
#[inline(always)]
pub fn snat_udp(pkt: &Packet6, addr: &Addr6, port: u16) {
    unsafe {
        let old = swap_addr(pkt.ip.add(IP_SRC), addr);
        let old_port = swap_port(pkt.l4.add(SPORT), port);
        let check = pkt.l4.add(UDP_CHECK);
        wire::set16(
            check,
            udp6_replace(wire::get16(check), &old, addr, old_port, port),
        );
    }
}

/// The UDP checksum field as it is (wire order).
#[inline(always)]
pub fn udp_check(pkt: &Packet6) -> u16 {
    unsafe { wire::get16(pkt.l4.add(UDP_CHECK)) }
}

/// Writes `addr` at `at` (16 bytes inside the frame) and returns what was there.
#[inline(always)]
pub unsafe fn swap_addr(at: *mut u8, addr: &Addr6) -> Addr6 {
    let old = addr_at(at as usize);
    wire::set32(at, addr[0]);
    wire::set32(at.add(4), addr[1]);
    wire::set32(at.add(8), addr[2]);
    wire::set32(at.add(12), addr[3]);
    old
}

/// Writes `port` at `at` and returns what was there.
#[inline(always)]
pub unsafe fn swap_port(at: *mut u8, port: u16) -> u16 {
    let old = wire::get16(at);
    wire::set16(at, port);
    old
}
