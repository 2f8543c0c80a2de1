//! The pass-everything XDP program (`lb_pass`) on the veth peers of the LB's interfaces.
//!
//! The kernel's veth driver flushes XDP_TX frames towards the peer only when the peer
//! runs an XDP program (`veth_xdp_flush()` checks the peer queue's `xdp_prog`); with GRO
//! alone they wait in the peer's ring until other traffic schedules its NAPI, which
//! stalls a one-NIC lab. Physical NICs have no such peer and need nothing like this.
use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::limits::*;

use crate::netns;

/// `lb_pass` attached to one interface; detached when dropped.
pub struct PassProgram {
    _ebpf: Ebpf,
}

/// Loads the embedded object with every map shrunk to a token size, and `lb_pass` into
/// the kernel (not attached). Also the floor program of the per-packet benchmark.
pub fn load_pass_program() -> Ebpf {
    let mut ebpf = load_object_small();
    pass_program(&mut ebpf).load().expect("loading lb_pass");
    ebpf
}

/// The embedded object with every map shrunk to a token size, no program loaded yet.
pub fn load_object_small() -> Ebpf {
    let object = lb_userspace::kernel::ebpf_object::object().expect("the XDP object is embedded");
    let mut loader = EbpfLoader::new();
    for map in [
        MAP_SERVICE_INDEX,
        MAP_BACKENDS,
        MAP_RING,
        MAP_FLOWS,
        MAP_RETURN_FLOWS,
        MAP_FLOW_SLOTS,
    ] {
        loader.map_max_entries(map, 16);
    }
    loader
        .load(object)
        .unwrap_or_else(|e| panic!("loading the XDP object: {e}"))
}

pub fn pass_program(ebpf: &mut Ebpf) -> &mut Xdp {
    ebpf.program_mut(PROGRAM_PASS)
        .expect("lb_pass is in the object")
        .try_into()
        .expect("lb_pass is an XDP program")
}

/// Attaches `lb_pass` in native mode to `dev` in namespace `ns`.
pub fn attach_pass(ns: &str, dev: &str) -> PassProgram {
    let ebpf = netns::run_in(ns, || {
        let mut ebpf = load_pass_program();
        pass_program(&mut ebpf)
            .attach(dev, XdpMode::Driver)
            .unwrap_or_else(|e| panic!("attaching lb_pass to {dev} in {ns}: {e}"));
        ebpf
    });
    PassProgram { _ebpf: ebpf }
}
