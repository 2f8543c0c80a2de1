//! The IPv6 flow entries, services and backends: what `lb_v6`'s stages look up and
//! record. The flow value and its state word are IPv4's (`flow.rs` keeps them); only the
//! keys and the return entry carry 16-byte addresses.
use core::{mem::MaybeUninit, ptr::write_volatile};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use lb_common::{
    backend::Backend,
    flow::FlowTarget,
    ipv6::{Addr6, FlowKey6, NatReturn6, ServiceKey6, FAMILY_IPV6},
    service_index::{pack_meta, PackedMeta},
};

use crate::{
    flow,
    lookup::backend_by_id,
    maps::{BACKEND_ADDRS6, FLOWS6, RETURN_FLOWS6, SERVICES6},
    parse6::Packet6,
};

/// Backend `id` and its IPv6 address, if that slot holds an IPv6 backend.
#[inline(always)]
pub fn backend6(id: u32) -> Option<(Backend, Addr6)> {
    let backend = backend_by_id(id).filter(|b| b.family == FAMILY_IPV6)?;
    let addr = BACKEND_ADDRS6.get(id).copied()?;
    Some((backend, addr))
}

/// The IPv6 service at the packet's VIP:port (and protocol), packed as the IPv4 index
/// packs it, so that selection reads it the same way.
#[inline(always)]
pub fn service6(flow: &FlowKey6) -> Option<PackedMeta> {
    let key = ServiceKey6 {
        addr: flow.dst_addr,
        port: flow.dst_port,
        proto: flow.proto,
        family: flow.family,
    };
    let meta = unsafe { SERVICES6.get(key) }.copied()?;
    pack_meta(&meta).map(PackedMeta)
}

/// A placed packet's backend: its entry, its address.
pub type Placed6 = (FlowTarget, Backend, Addr6);

/// Records the flow of `pkt` on the backend of `target` in both IPv6 flow maps, counted
/// as new and active. `replace`: an entry of an earlier flow on the tuple is there to be
/// overwritten. `Some(.., false)`: another CPU recorded the flow first, and this packet
/// follows its entry.
#[inline(always)]
pub fn record(
    pkt: &Packet6,
    target: &FlowTarget,
    backend: Backend,
    addr: Addr6,
    replace: bool,
) -> Option<(Placed6, bool)> {
    if insert_new(pkt, target, &backend, &addr, replace) {
        return Some(((*target, backend, addr), true));
    }
    let existing = unsafe { FLOWS6.get(pkt.flow) }.copied()?;
    let (backend, addr) = backend6(existing.backend)?;
    Some(((existing, backend, addr), false))
}

/// Inserts the flow of `pkt` (`target`) and its return entry, counted as new and active;
/// whether it did. Without `replace` the insert fails if the tuple has an entry: two CPUs
/// may miss on the same new flow at once, and only the insert that creates the entry
/// counts it.
#[inline(always)]
pub fn insert_new(
    pkt: &Packet6,
    target: &FlowTarget,
    backend: &Backend,
    addr: &Addr6,
    replace: bool,
) -> bool {
    let flags = if replace { BPF_ANY } else { BPF_NOEXIST };
    if FLOWS6.insert(pkt.flow, target, flags as u64).is_err() {
        return false;
    }
    flow::opened(target.backend);
    insert_return(pkt, target, backend, addr);
    true
}

/// The two directions' entries are evicted independently: a client packet that will be
/// answered puts a lost reply-direction entry back before the backend answers.
#[inline(always)]
pub fn ensure_return(pkt: &Packet6, target: &FlowTarget, backend: &Backend, addr: &Addr6) {
    if unsafe { RETURN_FLOWS6.get(return_key(pkt, backend, addr)) }.is_none() {
        insert_return(pkt, target, backend, addr);
    }
}

/// The reply direction's key: backend -> client.
#[inline(always)]
fn return_key(pkt: &Packet6, backend: &Backend, addr: &Addr6) -> FlowKey6 {
    FlowKey6 {
        src_addr: *addr,
        dst_addr: pkt.flow.src_addr,
        src_port: backend.port,
        dst_port: pkt.flow.src_port,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
        _pad: [0; 2],
    }
}

/// The client -> VIP key of the flow a reply (backend -> client) belongs to, whose return
/// entry gives `vip`:`vport`.
#[inline(always)]
pub fn forward_key(pkt: &Packet6, vip: &Addr6, vport: u16) -> FlowKey6 {
    FlowKey6 {
        src_addr: pkt.flow.dst_addr,
        dst_addr: *vip,
        src_port: pkt.flow.dst_port,
        dst_port: vport,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
        _pad: [0; 2],
    }
}

/// Inserts the return entry of `pkt`'s flow (client -> VIP) on `backend`: its replies
/// get the VIP:port back as their source. Built in place and zeroed by explicit word
/// stores, as `return_entry::insert` does (a zero `NextHop` copied as a value becomes
/// the `memset` the verifier refuses without CAP_PERFMON). If the table is full the LRU
/// evicts its coldest entry.
#[inline(always)]
fn insert_return(pkt: &Packet6, target: &FlowTarget, backend: &Backend, addr: &Addr6) {
    const WORDS: usize = core::mem::size_of::<NatReturn6>() / 4;
    const _: () = assert!(WORDS == 12);
    let mut out = MaybeUninit::<NatReturn6>::uninit();
    let p = out.as_mut_ptr();
    unsafe {
        let words = p as *mut u32;
        write_volatile(words, 0);
        write_volatile(words.add(1), 0);
        write_volatile(words.add(2), 0);
        write_volatile(words.add(3), 0);
        write_volatile(words.add(4), 0);
        write_volatile(words.add(5), 0);
        write_volatile(words.add(6), 0);
        write_volatile(words.add(7), 0);
        write_volatile(words.add(8), 0);
        write_volatile(words.add(9), 0);
        write_volatile(words.add(10), 0);
        write_volatile(words.add(11), 0);
        (*p).vip = pkt.flow.dst_addr;
        (*p).vport = pkt.flow.dst_port;
        (*p).service = target.service;
        (*p).backend = target.backend;
    }
    let key = return_key(pkt, backend, addr);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference on purpose: a by-value copy of the zeroed entry is the \
                  memset the verifier refuses"
    )]
    let _ = RETURN_FLOWS6.insert(key, unsafe { &*out.as_ptr() }, 0);
}

/// A flow entry of a live IPv6 backend of the entry's service: the entry and its backend.
#[inline(always)]
pub fn followed(entry: *mut FlowTarget) -> Option<Placed6> {
    let target = unsafe { *entry };
    let (backend, addr) = backend6(target.backend).filter(|(b, _)| b.service == target.service)?;
    Some((target, backend, addr))
}

/// Creates a new flow's target.
#[inline(always)]
pub fn new_target(backend: u32, service: u32, state: u64, now: u32) -> FlowTarget {
    FlowTarget {
        backend,
        service,
        state,
        last_seen: now,
        _pad: 0,
    }
}
