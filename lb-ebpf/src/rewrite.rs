//! Rewrite: NAT of one address and one port, with incremental checksum updates (the TCP
//! checksum covers the addresses through its pseudo-header).
use lb_common::checksum::{replace2, replace4};

use crate::{packet::Packet, wire};

// Offsets in the IPv4 and TCP headers.
const IP_CHECK: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const TCP_SPORT: usize = 0;
const TCP_DPORT: usize = 2;
const TCP_CHECK: usize = 16;

/// Destination NAT: VIP:port -> backend address:port (both wire order).
#[inline(always)]
pub fn dnat(pkt: &Packet, addr: u32, port: u16) {
    unsafe { nat(pkt, IP_DST, TCP_DPORT, addr, port) }
}

/// Source NAT on the way back: backend address:port -> VIP:port (both wire order).
#[inline(always)]
pub fn snat(pkt: &Packet, addr: u32, port: u16) {
    unsafe { nat(pkt, IP_SRC, TCP_SPORT, addr, port) }
}

/// Replaces the address at `addr_at` of the IP header and the port at `port_at` of the
/// TCP header, and patches both checksums.
#[inline(always)]
unsafe fn nat(pkt: &Packet, addr_at: usize, port_at: usize, addr: u32, port: u16) {
    let ip = pkt.ip as *mut u8;
    let tcp = pkt.tcp as *mut u8;
    let old_addr = wire::get32(ip.add(addr_at));
    let old_port = wire::get16(tcp.add(port_at));
    wire::set32(ip.add(addr_at), addr);
    wire::set16(tcp.add(port_at), port);
    let ip_check = replace4(wire::get16(ip.add(IP_CHECK)), old_addr, addr);
    wire::set16(ip.add(IP_CHECK), ip_check);
    let tcp_check = replace4(wire::get16(tcp.add(TCP_CHECK)), old_addr, addr);
    wire::set16(tcp.add(TCP_CHECK), replace2(tcp_check, old_port, port));
}
