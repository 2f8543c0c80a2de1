//! The reply path (`lb_reply`, tail-called by `lb_xdp` for a backend's reply that finds
//! no flow entry) and edge protection (`lb_edge`, `lb_place`) outlive `lbd` like the
//! rest of the data path: the kernel empties a program array once no process and no pin
//! holds it, so its array is pinned, and the next `lbd` puts its own programs there. The
//! SYN proxy's `lb_proxy`, direct server return's `lb_dsr`, UDP's `lb_udp` and IPv6's `lb_v6`
//! and `lb_v6_syn` share the array.
use aya::maps::{Map, MapData, ProgramArray};
use lb_common::limits::{
    MAP_PROGRAMS, PROGRAMS_SLOTS, PROGRAMS_SLOT_DSR, PROGRAMS_SLOT_EDGE, PROGRAMS_SLOT_PLACE,
    PROGRAMS_SLOT_PROXY, PROGRAMS_SLOT_REPLY, PROGRAMS_SLOT_UDP, PROGRAMS_SLOT_V6,
    PROGRAMS_SLOT_V6_SYN,
};
use lb_tests::{lab_config, running_lb::pin_dir, scenario::three_zones, RunningLb};
use lb_userspace::kernel::pins::PinDir;

/// The program ids in the pinned program array's slots.
fn reply_programs(lb: &RunningLb) -> Vec<u32> {
    let data = MapData::from_pin(PinDir::new(pin_dir(&lb.lab)).map_path(MAP_PROGRAMS))
        .expect("the program array is pinned");
    let array = ProgramArray::try_from(Map::ProgramArray(data)).unwrap();
    array.indices().map(|i| i.unwrap()).collect()
}

const SLOTS: [u32; 8] = [
    PROGRAMS_SLOT_REPLY,
    PROGRAMS_SLOT_EDGE,
    PROGRAMS_SLOT_PLACE,
    PROGRAMS_SLOT_PROXY,
    PROGRAMS_SLOT_DSR,
    PROGRAMS_SLOT_UDP,
    PROGRAMS_SLOT_V6,
    PROGRAMS_SLOT_V6_SYN,
];

/// The indices the kernel lists for the array: every slot of it (slots 7 and 8 are kept
/// for programs to come), which holds each of [`SLOTS`].
fn all_slots() -> Vec<u32> {
    assert!(SLOTS.iter().all(|s| *s < PROGRAMS_SLOTS));
    (0..PROGRAMS_SLOTS).collect()
}

#[test]
fn the_reply_path_stays_in_place_while_lbd_is_stopped() {
    let lab = three_zones();
    let config = lab_config(&lab, &[1, 1, 1]);
    let mut lb = RunningLb::start(lab, &config);
    assert_eq!(reply_programs(&lb), all_slots());
    lb.stop_lbd();
    assert_eq!(
        reply_programs(&lb),
        all_slots(),
        "lb_reply, lb_edge, lb_place, lb_proxy, lb_dsr and lb_udp are still in their slots with no lbd running"
    );
    lb.restart_lbd();
    assert_eq!(reply_programs(&lb), all_slots());
}
