//! Cached routing decisions. A FIB lookup costs more than the rest of the forwarding
//! path together, and its answer for a destination rarely changes, so the data path
//! keeps it: per backend for packets towards backends, per flow (in the return entry)
//! for packets towards clients. The controller bumps a generation number every second;
//! an entry of an older generation is looked up again, so a changed route or neighbour
//! takes effect within about a second.

/// Where a rewritten packet leaves, and with which MACs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// Egress interface; 0 means "nothing cached".
    pub ifindex: u32,
    /// Generation the entry was filled in; stale unless equal to the current one.
    pub generation: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 20);
