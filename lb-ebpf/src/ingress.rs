//! Client -> VIP: find or create the flow, rewrite towards its backend, forward, count.
use core::{mem::MaybeUninit, ptr::write_volatile};

use aya_ebpf::bindings::{BPF_ANY, BPF_NOEXIST};
use aya_ebpf::programs::XdpContext;
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    counters::Reason,
    flow::{FlowKey, FlowTarget, NatReturn, FLOW_F_CLOSED, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    net::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    service::ServiceMeta,
};

use crate::{
    count,
    flow_state::{self, Side},
    forward,
    maps::{self, BACKENDS, FLOWS, NEXTHOPS, RETURN_FLOWS},
    packet::Packet,
    rewrite, select,
};

/// Handles a packet whose destination may be a VIP. `None`: not to any VIP:port (and no
/// tracked flow), so not ours.
#[inline(always)]
pub fn handle(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    // Established flows first: their packets need no service lookup.
    let existing = if pkt.tcp_valid {
        existing_flow(pkt)
    } else {
        Existing::Miss
    };
    let (target, backend, new_flow) = match existing {
        Existing::Hit(target, backend) => {
            if !forward::ttl_allows(pkt) {
                return Some(count::pass(Reason::PassTtlExpired));
            }
            (target, backend, false)
        }
        miss => {
            let service = maps::service_of(pkt)?;
            if !pkt.tcp_valid {
                return Some(count::drop(Reason::DropMalformedTcp));
            }
            if !forward::ttl_allows(pkt) {
                return Some(count::pass(Reason::PassTtlExpired));
            }
            match new_flow(pkt, &service, matches!(miss, Existing::Replace)) {
                Some((target, backend, new)) => (target, backend, new),
                None => return Some(count::drop(Reason::DropNoBackend)),
            }
        }
    };
    rewrite::dnat(pkt, backend.addr, backend.port);
    count::to_backend(&target, pkt.frame_len, new_flow);
    count::attempt_to_backend(target.backend, pkt.tcp_flags);
    Some(match NEXTHOPS.get_ptr_mut(target.backend) {
        Some(cache) => forward::forward(ctx, pkt, cache),
        None => forward::forward(ctx, pkt, core::ptr::null_mut()),
    })
}

enum Existing {
    /// A live flow and its backend.
    Hit(FlowTarget, Backend),
    /// An entry that must be replaced: a SYN on a closed flow (a new connection reusing
    /// the tuple), or a flow whose backend slot was freed.
    Replace,
    Miss,
}

#[inline(always)]
fn existing_flow(pkt: &Packet) -> Existing {
    let Some(entry) = FLOWS.get_ptr_mut(pkt.flow) else {
        return Existing::Miss;
    };
    let target = unsafe { *entry };
    let Some(backend) = backend_by_id(target.backend) else {
        return Existing::Replace;
    };
    if is_syn(pkt) {
        // A SYN opens a connection even when its tuple has an entry (a client reusing
        // a source port, or retransmitting): after a close, or when the entry's backend
        // takes no new flows any more (unhealthy, draining), it is placed afresh instead
        // of following the entry; a retransmit to an eligible backend stays put.
        if target.state & FLOW_F_CLOSED != 0 {
            return Existing::Replace;
        }
        if backend.weight_milli == 0 {
            flow_state::abandon(entry);
            return Existing::Replace;
        }
    }
    flow_state::observe(entry, pkt.tcp_flags, Side::Client);
    flow_state::touch(entry, &target, is_syn(pkt));
    if pkt.has_payload || pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        ensure_return_entry(pkt, &target, &backend);
    }
    Existing::Hit(target, backend)
}

#[inline(always)]
fn is_syn(pkt: &Packet) -> bool {
    pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A newly selected backend for the flow, recorded in both flow maps and counted as
/// active.
#[inline(always)]
fn new_flow(
    pkt: &Packet,
    service: &ServiceMeta,
    replace: bool,
) -> Option<(FlowTarget, Backend, bool)> {
    let syn = is_syn(pkt);
    let id = select::pick(service, &pkt.flow, syn);
    let backend = backend_by_id(id)?;
    let target = FlowTarget {
        backend: id,
        service: service.id,
        // Picked up mid-connection (a non-SYN miss) counts as established.
        state: if syn {
            FLOW_F_COUNTED
        } else {
            FLOW_F_COUNTED | FLOW_F_ESTABLISHED
        },
        last_seen: maps::now_secs(),
        _pad: 0,
    };
    // Two CPUs may miss on the same new flow at once (a retransmitted SYN): only the
    // insert that creates the entry counts it, and the other CPU follows that entry.
    let flags = if replace { BPF_ANY } else { BPF_NOEXIST };
    if FLOWS.insert(pkt.flow, target, flags as u64).is_err() {
        let existing = unsafe { FLOWS.get(pkt.flow) }.copied()?;
        let backend = backend_by_id(existing.backend)?;
        return Some((existing, backend, false));
    }
    flow_state::opened(id);
    insert_return_entry(pkt, &target, &backend);
    Some((target, backend, true))
}

/// The reply direction's key: backend -> client.
#[inline(always)]
fn return_key(pkt: &Packet, backend: &Backend) -> FlowKey {
    FlowKey {
        src_addr: backend.addr,
        dst_addr: pkt.flow.src_addr,
        src_port: backend.port,
        dst_port: pkt.flow.src_port,
        proto: pkt.flow.proto,
        family: pkt.flow.family,
        _pad: [0; 2],
    }
}

/// Writes the return entry of a new flow, with nothing cached yet, into `out`. Built in
/// place and zeroed by explicit word stores: a zero `NextHop` (byte-array MACs) written or
/// copied as a value becomes a `memset` call, whose variable stack offsets the verifier
/// refuses without CAP_PERFMON.
#[inline(always)]
fn init_nat_return(out: &mut MaybeUninit<NatReturn>, pkt: &Packet, target: &FlowTarget) {
    const WORDS: usize = core::mem::size_of::<NatReturn>() / 4;
    const _: () = assert!(WORDS == 9);
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
        (*p).vip = pkt.flow.dst_addr;
        (*p).vport = pkt.flow.dst_port;
        (*p).service = target.service;
        (*p).backend = target.backend;
    }
}

/// Inserts a fresh return entry. If the table is full the LRU evicts its coldest entry;
/// an error would only mean the reply is not rewritten, which the client answers with a
/// reset.
#[inline(always)]
fn insert_return_entry(pkt: &Packet, target: &FlowTarget, backend: &Backend) {
    let mut nat = MaybeUninit::uninit();
    init_nat_return(&mut nat, pkt, target);
    // By reference on purpose: a by-value copy of the zeroed entry is the memset the
    // verifier refuses (see init_nat_return).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let _ = RETURN_FLOWS.insert(return_key(pkt, backend), unsafe { &*nat.as_ptr() }, 0);
}

/// The two directions' entries are evicted independently; a client packet that will be
/// answered (data, FIN, RST) puts a lost reply-direction entry back before the backend
/// answers. Pure ACKs are not answered, so they skip the lookup.
#[inline(always)]
fn ensure_return_entry(pkt: &Packet, target: &FlowTarget, backend: &Backend) {
    if unsafe { RETURN_FLOWS.get(return_key(pkt, backend)) }.is_none() {
        insert_return_entry(pkt, target, backend);
    }
}

#[inline(always)]
fn backend_by_id(id: u32) -> Option<Backend> {
    let backend = BACKENDS.get(id).copied()?;
    (backend.flags & BACKEND_F_PRESENT != 0).then_some(backend)
}
