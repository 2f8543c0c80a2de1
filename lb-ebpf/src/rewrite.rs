//! Rewrite: NAT of one address and one port, with incremental checksum updates (the TCP
//! checksum covers the addresses through its pseudo-header).
use lb_common::checksum::{replace2, replace4};

use crate::packet::Packet;

/// Destination NAT: VIP:port -> backend address:port (both wire order).
#[inline(always)]
pub fn dnat(pkt: &Packet, addr: u32, port: u16) {
    unsafe {
        let ip = pkt.ip;
        let tcp = pkt.tcp;
        let old_addr = u32::from_ne_bytes((*ip).dst_addr);
        let old_port = u16::from_ne_bytes((*tcp).dest);
        (*ip).dst_addr = addr.to_ne_bytes();
        (*tcp).dest = port.to_ne_bytes();
        fix_checksums(pkt, old_addr, addr, old_port, port);
    }
}

/// Source NAT on the way back: backend address:port -> VIP:port (both wire order).
#[inline(always)]
pub fn snat(pkt: &Packet, addr: u32, port: u16) {
    unsafe {
        let ip = pkt.ip;
        let tcp = pkt.tcp;
        let old_addr = u32::from_ne_bytes((*ip).src_addr);
        let old_port = u16::from_ne_bytes((*tcp).source);
        (*ip).src_addr = addr.to_ne_bytes();
        (*tcp).source = port.to_ne_bytes();
        fix_checksums(pkt, old_addr, addr, old_port, port);
    }
}

#[inline(always)]
unsafe fn fix_checksums(pkt: &Packet, old_addr: u32, addr: u32, old_port: u16, port: u16) {
    let ip = pkt.ip;
    let tcp = pkt.tcp;
    let ip_check = replace4(u16::from_ne_bytes((*ip).check), old_addr, addr);
    (*ip).check = ip_check.to_ne_bytes();
    let tcp_check = replace4(u16::from_ne_bytes((*tcp).check), old_addr, addr);
    (*tcp).check = replace2(tcp_check, old_port, port).to_ne_bytes();
}
