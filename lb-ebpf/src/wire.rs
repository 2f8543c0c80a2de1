//! Header fields read and written as 16-bit words. network-types declares multi-byte
//! fields as byte arrays (alignment 1), which the BPF backend reads and writes a byte at a
//! time, with shifts to combine them. Every field touched through here sits at an even
//! offset of the frame or of a map value or stack copy, and frames start at an even
//! address, so these 16-bit accesses are aligned: the verifier needs no leniency for them.
//! Values keep wire order in native integers (`from_ne_bytes` semantics, little-endian
//! BPF).

#[inline(always)]
pub unsafe fn get16(p: *const u8) -> u16 {
    core::ptr::read(p as *const u16)
}

#[inline(always)]
pub unsafe fn set16(p: *mut u8, v: u16) {
    core::ptr::write(p as *mut u16, v)
}

/// A 32-bit field (an IPv4 address) at an even, not necessarily 4-aligned, address.
#[inline(always)]
pub unsafe fn get32(p: *const u8) -> u32 {
    get16(p) as u32 | (get16(p.add(2)) as u32) << 16
}

#[inline(always)]
pub unsafe fn set32(p: *mut u8, v: u32) {
    set16(p, v as u16);
    set16(p.add(2), (v >> 16) as u16);
}

/// Copies a 6-byte MAC address.
#[inline(always)]
pub unsafe fn copy_mac(dst: *mut u8, src: *const u8) {
    set16(dst, get16(src));
    set16(dst.add(2), get16(src.add(2)));
    set16(dst.add(4), get16(src.add(4)));
}
