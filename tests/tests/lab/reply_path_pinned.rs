//! The reply path (`lb_reply`, tail-called by `lb_xdp` for a backend's reply that finds
//! no flow entry) and edge protection (`lb_edge`, `lb_place`) outlive `lbd` like the
//! rest of the data path: the kernel empties a program array once no process and no pin
//! holds it, so its array is pinned, and the next `lbd` puts its own programs there. The
//! SYN proxy's `lb_proxy`, direct server return's `lb_dsr`, UDP's `lb_udp` and IPv6's `lb_v6`,
//! `lb_dsr6`, `lb_edge6` and `lb_v6_syn` share the array.
use aya::maps::{Map, MapData, ProgramArray};
use lb_common::limits::{
    MAP_PROGRAMS, PROGRAMS_SLOT_DSR, PROGRAMS_SLOT_DSR6, PROGRAMS_SLOT_EDGE, PROGRAMS_SLOT_EDGE6,
    PROGRAMS_SLOT_PLACE, PROGRAMS_SLOT_PROXY, PROGRAMS_SLOT_REPLY, PROGRAMS_SLOT_UDP,
    PROGRAMS_SLOT_V6, PROGRAMS_SLOT_V6_SYN,
};
use lb_tests::{lab_config, running_lb::pin_dir, scenario::three_zones, RunningLb};
use lb_userspace::kernel::pins::PinDir;

/// The slots of the pinned program array that hold a program. A program array's indices
/// are all of its slots, filled or not: each is looked up (`bpf(2)` BPF_MAP_LOOKUP_ELEM,
/// which answers a program array's filled slot with the program's id, and ENOENT for an
/// empty one).
fn reply_programs(lb: &RunningLb) -> Vec<u32> {
    use std::os::fd::{AsFd, AsRawFd};
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let data = MapData::from_pin(PinDir::new(pin_dir(&lb.lab)).map_path(MAP_PROGRAMS))
        .expect("the program array is pinned");
    let fd = data.fd().as_fd().as_raw_fd();
    let array = ProgramArray::try_from(Map::ProgramArray(data)).unwrap();
    array
        .indices()
        .map(|i| i.unwrap())
        .filter(|slot| {
            let mut id = 0u32;
            let mut attr = [0u8; 32];
            attr[0..4].copy_from_slice(&(fd as u32).to_ne_bytes());
            attr[8..16].copy_from_slice(&(slot as *const u32 as u64).to_ne_bytes());
            attr[16..24].copy_from_slice(&(&mut id as *mut u32 as u64).to_ne_bytes());
            // SAFETY: bpf(2) reads the attribute and the key and writes the 4-byte value,
            // all of which outlive the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_ELEM,
                    attr.as_mut_ptr(),
                    attr.len(),
                )
            };
            r == 0 && id != 0
        })
        .collect()
}

const SLOTS: [u32; 10] = [
    PROGRAMS_SLOT_REPLY,
    PROGRAMS_SLOT_EDGE,
    PROGRAMS_SLOT_PLACE,
    PROGRAMS_SLOT_PROXY,
    PROGRAMS_SLOT_DSR,
    PROGRAMS_SLOT_UDP,
    PROGRAMS_SLOT_V6,
    PROGRAMS_SLOT_DSR6,
    PROGRAMS_SLOT_EDGE6,
    PROGRAMS_SLOT_V6_SYN,
];

#[test]
fn the_reply_path_stays_in_place_while_lbd_is_stopped() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    assert_eq!(reply_programs(&lb), SLOTS);
    lb.stop_lbd();
    assert_eq!(
        reply_programs(&lb),
        SLOTS,
        "lb_reply, lb_edge, lb_place, lb_proxy, lb_dsr, lb_udp, lb_v6, lb_dsr6, lb_edge6 and lb_v6_syn are still in their slots with no lbd running"
    );
    lb.restart_lbd();
    assert_eq!(reply_programs(&lb), SLOTS);
}
