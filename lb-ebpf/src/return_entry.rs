//! The reply direction's flow entry (backend -> client): what the source of a reply is
//! rewritten back to, and where its cached route to the client lives.
use core::{mem::MaybeUninit, ptr::write_volatile};

use lb_common::flow::{FlowKey, FlowTarget, NatReturn};

use crate::maps::RETURN_FLOWS;

/// Writes the entry into `out`. Built in place and zeroed by explicit word stores: a zero
/// `NextHop` (byte-array MACs) written or copied as a value becomes a `memset` call, whose
/// variable stack offsets the verifier refuses without CAP_PERFMON.
#[inline(always)]
fn init(out: &mut MaybeUninit<NatReturn>, vip: u32, vport: u16, target: &FlowTarget) {
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
        (*p).vip = vip;
        (*p).vport = vport;
        (*p).service = target.service;
        (*p).backend = target.backend;
    }
}

/// Inserts a fresh return entry under `key` (backend -> client): replies of `target`'s
/// flow get `vip`:`vport` back as their source. If the table is full the LRU evicts its
/// coldest entry; an error would only mean the reply is not rewritten,
/// which the client answers with a reset.
#[inline(always)]
pub fn insert(key: FlowKey, vip: u32, vport: u16, target: &FlowTarget) {
    let mut nat = MaybeUninit::uninit();
    init(&mut nat, vip, vport, target);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference on purpose: a by-value copy of the zeroed entry is the \
                  memset the verifier refuses (see init)"
    )]
    let _ = RETURN_FLOWS.insert(key, unsafe { &*nat.as_ptr() }, 0);
}
