//! IPv6 services as the controller writes them into the real maps (see
//! `lb_common::ipv6`): the service map, the backend slots and the IPv6 address array, and
//! the address prefilter, read back through the pinned maps rather than through the
//! controller; then a table flip, adoption by the next `lbd`, and removal. Real object,
//! no packets: the IPv6 data path is tested on its own.
use std::net::Ipv6Addr;

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{
    backend::{Backend, BACKEND_F_PRESENT},
    filter::{filter_slot, FILTER_BACKENDS, FILTER_TOTAL_WORDS, FILTER_VIPS},
    flow::{FlowTarget, FLOW_F_COUNTED, FLOW_F_ESTABLISHED},
    ipv6::{addr6_wire, fold, Addr6, FlowKey6, NatReturn6, ServiceKey6, FAMILY_IPV6},
    limits::{
        MAP_ACTIVE_FLOWS, MAP_ADDR_FILTER, MAP_BACKENDS, MAP_BACKEND_ADDRS6, MAP_FLOWS6,
        MAP_RETURN_FLOWS6, MAP_RING, MAP_SERVICES6,
    },
    net::{ipv4_wire, PROTO_TCP},
    service::{ring_slot_base, ServiceMeta, POLICY_MAGLEV, SERVICE_F_NAT, SERVICE_F_STATELESS_SYN},
};
use lb_tests::{needs, netns::unique_prefix};
use lb_userspace::{
    control::tables::Controller,
    kernel::{pins::PinDir, KernelDataplane},
    model::config::{self, Config, FlowTimeouts},
};

const RING: u32 = 1009;
const VIP6: &str = "2001:db8::100";
const B1: &str = "2001:db8:1::11";
const B2: &str = "2001:db8:1::12";
const B3: &str = "2001:db8:1::13";

/// `web` (IPv4, ids: service 0, backends 0 and 1), then `web6` on [VIP6]:443 with
/// `backends6`, weight 1 each (ids: service 1, backends from 2), if any are given.
fn config_text(backends6: Option<&[&str]>) -> String {
    let mut yaml = format!(
        "node: {{ zone: az-a }}\ninterfaces: [lo]\ncluster: {{ ring_size: {RING} }}\n\
         limits: {{ flow_table_size: 4096, flow_table_size6: 2048, max_services: 8, \
         max_backends: 64 }}\n\
         services:\n  - name: web\n    vip: 10.0.0.100\n    port: 80\n    backends:\n      \
         - {{ address: 10.1.0.11, port: 8080, zone: az-a }}\n      \
         - {{ address: 10.1.0.12, port: 8080, zone: az-a }}\n"
    );
    if let Some(backends) = backends6 {
        yaml.push_str(&format!(
            "  - name: web6\n    vip: {VIP6}\n    port: 443\n    backends:\n"
        ));
        for b in backends {
            yaml.push_str(&format!(
                "      - {{ address: {b}, port: 8443, zone: az-a }}\n"
            ));
        }
    }
    yaml
}

fn parse(text: &str) -> Config {
    config::parse(text).expect("the test's config is valid")
}

fn addr6(text: &str) -> Addr6 {
    addr6_wire(text.parse::<Ipv6Addr>().unwrap().octets())
}

/// The pin directory of one test, removed with everything in it on drop.
struct Pins(PinDir);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove_all() {
            eprintln!("removing {}: {e}", self.0.root().display());
        }
    }
}

fn pinned(pins: &PinDir, name: &str) -> MapData {
    MapData::from_pin(pins.map_path(name)).unwrap_or_else(|e| panic!("{name} is pinned: {e}"))
}

fn services6(pins: &PinDir) -> Vec<(ServiceKey6, ServiceMeta)> {
    let map: HashMap<_, ServiceKey6, ServiceMeta> =
        HashMap::try_from(Map::HashMap(pinned(pins, MAP_SERVICES6))).unwrap();
    map.iter().map(Result::unwrap).collect()
}

fn backends(pins: &PinDir, ids: std::ops::Range<u32>) -> Vec<Backend> {
    let map: Array<_, Backend> = Array::try_from(Map::Array(pinned(pins, MAP_BACKENDS))).unwrap();
    ids.map(|id| map.get(&id, 0).unwrap()).collect()
}

fn addrs6(pins: &PinDir, ids: std::ops::Range<u32>) -> Vec<Addr6> {
    let map: Array<_, Addr6> =
        Array::try_from(Map::Array(pinned(pins, MAP_BACKEND_ADDRS6))).unwrap();
    ids.map(|id| map.get(&id, 0).unwrap()).collect()
}

fn u32_array(pins: &PinDir, name: &str, from: u32, len: u32) -> Vec<u32> {
    let map: Array<_, u32> = Array::try_from(Map::Array(pinned(pins, name))).unwrap();
    (from..from + len)
        .map(|i| map.get(&i, 0).unwrap())
        .collect()
}

/// The prefilter words that the IPv4 addresses `v4` (VIP first, then backends) and the
/// IPv6 ones `v6` (VIP first, then backends) set, computed from the layout alone.
fn filter_words(v4: &[[u8; 4]], v6: &[&str]) -> Vec<u32> {
    let mut words = vec![0u32; FILTER_TOTAL_WORDS as usize];
    let mut set = |bitmap, word| {
        let (at, mask) = filter_slot(bitmap, word);
        words[at as usize] |= mask;
    };
    for (i, a) in v4.iter().enumerate() {
        set(
            if i == 0 { FILTER_VIPS } else { FILTER_BACKENDS },
            ipv4_wire(*a),
        );
    }
    for (i, a) in v6.iter().enumerate() {
        set(
            if i == 0 { FILTER_VIPS } else { FILTER_BACKENDS },
            fold(&addr6(a)),
        );
    }
    words
}

fn backend6(weight_milli: u32) -> Backend {
    Backend {
        addr: 0,
        port: 8443u16.to_be(),
        family: FAMILY_IPV6,
        flags: BACKEND_F_PRESENT,
        weight_milli,
        service: 1,
    }
}

#[test]
fn an_ipv6_service_reaches_the_maps_flips_is_adopted_and_is_removed() {
    needs::packet();
    let pins = Pins(PinDir::new(format!("/sys/fs/bpf/{}", unique_prefix())));
    let two = parse(&config_text(Some(&[B1, B2])));
    let key = ServiceKey6 {
        addr: addr6(VIP6),
        port: 443u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_IPV6,
    };
    let meta = |active_slot| ServiceMeta {
        id: 1,
        active_slot,
        policy: POLICY_MAGLEV,
        flags: SERVICE_F_NAT | SERVICE_F_STATELESS_SYN,
        table_len: 0,
        _pad: 0,
    };
    let v4 = [[10, 0, 0, 100], [10, 1, 0, 11], [10, 1, 0, 12]];

    let dp = KernelDataplane::load(&two, Some(&pins.0)).expect("loading the XDP object");
    let mut controller = Controller::new(dp, RING);
    controller.apply(&two).expect("filling the maps");
    assert_eq!(services6(&pins.0), [(key, meta(0))]);
    assert_eq!(backends(&pins.0, 2..4), [backend6(1000), backend6(1000)]);
    assert_eq!(addrs6(&pins.0, 2..4), [addr6(B1), addr6(B2)]);
    assert_eq!(
        u32_array(&pins.0, MAP_ADDR_FILTER, 0, FILTER_TOTAL_WORDS),
        filter_words(&v4, &[VIP6, B1, B2])
    );
    let live = u32_array(&pins.0, MAP_RING, ring_slot_base(1, 0, RING), RING);
    assert!(
        live.contains(&2) && live.contains(&3),
        "both backends have a share"
    );
    assert!(live.iter().all(|id| *id == 2 || *id == 3), "{live:?}");

    // A third backend: its address and slot, then the ring of slot 1, then the flip.
    let three = parse(&config_text(Some(&[B1, B2, B3])));
    controller.apply(&three).expect("adding a backend");
    assert_eq!(services6(&pins.0), [(key, meta(1))]);
    assert_eq!(addrs6(&pins.0, 2..5), [addr6(B1), addr6(B2), addr6(B3)]);
    assert_eq!(backends(&pins.0, 4..5), [backend6(1000)]);
    let flipped = u32_array(&pins.0, MAP_RING, ring_slot_base(1, 1, RING), RING);
    assert!(
        (2..5).all(|id| flipped.contains(&id)),
        "every backend has a share"
    );
    assert!(flipped.iter().all(|id| (2..5).contains(id)), "{flipped:?}");
    drop(controller);

    // The next lbd adopts the pinned maps: the same ids, nothing to rewrite.
    let dp = KernelDataplane::load(&three, Some(&pins.0)).expect("adopting the pinned maps");
    let live = dp.live_state().unwrap();
    assert_eq!(live.services6, [(key, meta(1))]);
    assert_eq!(
        live.backend_addrs6.into_iter().collect::<Vec<_>>(),
        [(2, addr6(B1)), (3, addr6(B2)), (4, addr6(B3))]
    );
    let live = dp.live_state().unwrap();
    let mut controller = Controller::adopt(dp, RING, &three, &live);
    let summary = controller.apply(&three).expect("applying after adoption");
    assert_eq!(summary.backends_written, 0, "{summary:?}");
    assert_eq!(summary.services_removed, 0, "{summary:?}");

    // Removal: the service, its slots and their addresses go, and its prefilter bits.
    let gone = parse(&config_text(None));
    let summary = controller.apply(&gone).expect("removing the IPv6 service");
    assert_eq!(summary.services_removed, 1, "{summary:?}");
    assert_eq!(services6(&pins.0), []);
    assert_eq!(backends(&pins.0, 2..5), [Backend::default(); 3]);
    assert_eq!(addrs6(&pins.0, 2..5), [Addr6::default(); 3]);
    assert_eq!(
        u32_array(&pins.0, MAP_ADDR_FILTER, 0, FILTER_TOTAL_WORDS),
        filter_words(&v4, &[])
    );
}

/// A client's connection to `web6` and its return entry, as the data path records them,
/// pinned to backend `id` at `address`, last seen at `last_seen`.
fn flow6(client: u16, id: u32, address: &str, last_seen: u32) -> [(FlowKey6, u32); 2] {
    let forward = FlowKey6 {
        src_addr: addr6("2001:db8:c::2"),
        dst_addr: addr6(VIP6),
        src_port: client.to_be(),
        dst_port: 443u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_IPV6,
        _pad: [0; 2],
    };
    let back = FlowKey6 {
        src_addr: addr6(address),
        dst_addr: forward.src_addr,
        src_port: 8443u16.to_be(),
        dst_port: forward.src_port,
        ..forward
    };
    [(forward, last_seen), (back, id)]
}

#[test]
fn ipv6_flows_expire_count_and_are_purged_with_their_backend() {
    needs::packet();
    let pins = Pins(PinDir::new(format!("/sys/fs/bpf/{}", unique_prefix())));
    let two = parse(&config_text(Some(&[B1, B2])));
    let dp = KernelDataplane::load(&two, Some(&pins.0)).expect("loading the XDP object");
    let mut controller = Controller::new(dp, RING);
    controller.apply(&two).expect("filling the maps");

    // Backend ids 2 (B1) and 3 (B2): one idle and one recent flow each.
    let flows = [
        flow6(1001, 2, B1, 100),
        flow6(1002, 2, B1, 1000),
        flow6(1003, 3, B2, 100),
        flow6(1004, 3, B2, 1000),
    ];
    let mut forward: HashMap<_, FlowKey6, FlowTarget> =
        HashMap::try_from(Map::LruHashMap(pinned(&pins.0, MAP_FLOWS6))).unwrap();
    let mut back: HashMap<_, FlowKey6, NatReturn6> =
        HashMap::try_from(Map::LruHashMap(pinned(&pins.0, MAP_RETURN_FLOWS6))).unwrap();
    for [(key, last_seen), (reverse, id)] in flows {
        let target = FlowTarget {
            backend: id,
            service: 1,
            state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
            last_seen,
            _pad: 0,
        };
        forward.insert(key, target, 0).unwrap();
        let nat = NatReturn6 {
            vip: addr6(VIP6),
            vport: 443u16.to_be(),
            service: 1,
            backend: id,
            ..NatReturn6::default()
        };
        back.insert(reverse, nat, 0).unwrap();
    }
    // The client ports of the entries left in each direction.
    let keys = |map: &HashMap<MapData, FlowKey6, FlowTarget>| {
        let mut ports: Vec<u16> = map
            .keys()
            .map(|k| u16::from_be(k.unwrap().src_port))
            .collect();
        ports.sort();
        ports
    };
    let keys6 = |map: &HashMap<MapData, FlowKey6, NatReturn6>| {
        let mut ports: Vec<u16> = map
            .keys()
            .map(|k| u16::from_be(k.unwrap().dst_port))
            .collect();
        ports.sort();
        ports
    };

    // The data path counted three flows for backend 2, two are open: one ended unseen.
    let mut active: Array<_, u64> =
        Array::try_from(Map::Array(pinned(&pins.0, MAP_ACTIVE_FLOWS))).unwrap();
    active.set(2, 3, 0).unwrap();
    let dp = controller.dataplane_mut();
    assert_eq!(dp.reconcile_active_flows(&[2]).unwrap(), [(2, 1)]);
    // The scan counted the four IPv6 entries as the IPv6 table's occupancy, apart from the
    // empty IPv4 table's.
    assert_eq!((dp.flow_entries(), dp.flow_entries6()), (0, 4));

    // Established flows expire after 350 s idle: the two seen at 100 go, both ways.
    assert_eq!(dp.expire_flows(1000, &FlowTimeouts::default()).unwrap(), 2);
    assert_eq!(keys(&forward), [1002, 1004]);
    assert_eq!(keys6(&back), [1002, 1004]);

    // B2 leaves: its flows are purged with its slot.
    let one = parse(&config_text(Some(&[B1])));
    let summary = controller.apply(&one).expect("removing a backend");
    assert_eq!(summary.flows_purged, 1, "{summary:?}");
    assert_eq!(keys(&forward), [1002]);
    assert_eq!(keys6(&back), [1002]);
}

/// lbd reads its LRU flow maps a batch at a time (`kernel::batch`): a map of more entries
/// than one batch holds comes back whole, each entry once with its own value, through the
/// walk itself and through the reconciliation that counts with it; an empty map comes
/// back empty.
#[test]
fn a_batched_walk_reads_every_entry_of_a_map_larger_than_a_batch_once() {
    needs::packet();
    const ENTRIES: u16 = 6000;
    let pins = Pins(PinDir::new(format!("/sys/fs/bpf/{}", unique_prefix())));
    let text =
        config_text(Some(&[B1])).replace("flow_table_size6: 2048", "flow_table_size6: 16384");
    assert_ne!(text, config_text(Some(&[B1])), "the limits line changed");
    let cfg = parse(&text);
    let dp = KernelDataplane::load(&cfg, Some(&pins.0)).expect("loading the XDP object");
    let mut controller = Controller::new(dp, RING);
    controller.apply(&cfg).expect("filling the maps");
    assert_eq!(
        lb_userspace::kernel::batch::entries(&controller.dataplane().flows6).count(),
        0,
        "an empty map"
    );

    let mut forward: HashMap<_, FlowKey6, FlowTarget> =
        HashMap::try_from(Map::LruHashMap(pinned(&pins.0, MAP_FLOWS6))).unwrap();
    let mut inserted = Vec::new();
    for client in 1000..1000 + ENTRIES {
        let [(key, _), _] = flow6(client, 2, B1, 0);
        let target = FlowTarget {
            backend: 2,
            service: 1,
            state: FLOW_F_COUNTED | FLOW_F_ESTABLISHED,
            last_seen: u32::from(client) * 7,
            _pad: 0,
        };
        forward.insert(key, target, 0).unwrap();
        inserted.push((u16::from_be(key.src_port), target.last_seen));
    }
    let mut walked: Vec<(u16, u32)> =
        lb_userspace::kernel::batch::entries(&controller.dataplane().flows6)
            .map(|entry| {
                let (key, target) = entry.expect("the batched walk");
                (u16::from_be(key.src_port), target.last_seen)
            })
            .collect();
    walked.sort();
    assert_eq!(walked.len(), inserted.len(), "entries walked");
    let differ = walked.iter().zip(&inserted).filter(|(w, i)| w != i).count();
    assert_eq!(differ, 0, "every entry once, with its value");

    let dp = controller.dataplane_mut();
    dp.reconcile_active_flows(&[2])
        .expect("the reconciliation walk");
    assert_eq!(dp.flow_entries6(), u64::from(ENTRIES));
}
