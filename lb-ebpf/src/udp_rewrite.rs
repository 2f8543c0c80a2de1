//! Rewrite for UDP: NAT of one address and one port, with incremental checksum updates
//! (the UDP checksum covers the addresses through its pseudo-header; a zero one means
//! none over IPv4 and stays zero, see `lb_common::checksum::udp_replace`).
use lb_common::checksum::{replace4, udp_replace};

use crate::{datagram::Datagram, wire};

// Offsets in the IPv4 and UDP headers.
const IP_CHECK: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const UDP_SPORT: usize = 0;
const UDP_DPORT: usize = 2;
const UDP_CHECK: usize = 6;

/// Destination NAT: VIP:port -> backend address:port (both wire order).
#[inline(always)]
pub fn dnat(dg: &Datagram, addr: u32, port: u16) {
    unsafe { nat(dg, IP_DST, UDP_DPORT, addr, port) }
}

/// Source NAT on the way back: backend address:port -> VIP:port (both wire order).
#[inline(always)]
pub fn snat(dg: &Datagram, addr: u32, port: u16) {
    unsafe { nat(dg, IP_SRC, UDP_SPORT, addr, port) }
}

/// Replaces the address at `addr_at` of the IP header and the port at `port_at` of the
/// UDP header, and patches both checksums.
#[inline(always)]
unsafe fn nat(dg: &Datagram, addr_at: usize, port_at: usize, addr: u32, port: u16) {
    let ip = dg.ip as *mut u8;
    let udp = dg.udp;
    let old_addr = wire::get32(ip.add(addr_at));
    let old_port = wire::get16(udp.add(port_at));
    wire::set32(ip.add(addr_at), addr);
    wire::set16(udp.add(port_at), port);
    let ip_check = replace4(wire::get16(ip.add(IP_CHECK)), old_addr, addr);
    wire::set16(ip.add(IP_CHECK), ip_check);
    let udp_check = wire::get16(udp.add(UDP_CHECK));
    let udp_check = udp_replace(udp_check, old_addr, addr, old_port, port);
    wire::set16(udp.add(UDP_CHECK), udp_check);
}
