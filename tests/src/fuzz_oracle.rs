//! What the packet fuzz tests (`packet::fuzz` for TCP, `packet::fuzz_udp`) share: their
//! seeded generator and the parts of their oracle that do not depend on the protocol:
//! the expected outcomes, the rig's neighbours and NICs, and a NAT rewrite computed
//! independently of the data path (RFC 1624 incremental checksums).
use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::checksum::{replace2, replace4};

use crate::{
    frame::Mac,
    packet_rig::{backend_mac, run_once, Rig, CLIENT_MAC},
};

/// xorshift64*: small, seedable, and the same sequence everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Sources no router forwards from: 0/8, 127/8, 169.254/16, 224/4 and 240/4.
pub fn martian(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 169 && o[1] == 254)
}

/// What must happen to a frame, as far as the config decides it.
#[derive(Debug, PartialEq)]
pub enum Expected {
    PassUnchanged,
    Drop,
    /// DNAT to a backend of the service, sent (XDP_TX for the backend behind the ingress
    /// NIC) or handed to the kernel rewritten (its neighbour is unresolved).
    ToBackend,
    /// From a backend: rewritten back to the VIP if it belongs to a flow the run built,
    /// unchanged otherwise.
    ReplyOrUnchanged,
}

pub fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([f[at], f[at + 1]])
}

pub fn get32(f: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// The transport checksum a NAT rewrite updates.
#[derive(Clone, Copy)]
pub enum L4 {
    /// TCP's, at frame offset 50.
    Tcp,
    /// UDP's, at frame offset 40: a zero one (none sent) stays zero, and an update that
    /// comes out zero is sent as all ones.
    Udp,
}

/// `input` with the address at `addr_at` and the port at `port_at` replaced by the
/// output's, both checksums updated incrementally; and, if `hop` is given, the router
/// hop: TTL down (IP checksum updated) and the MACs set.
pub fn nat(
    input: &[u8],
    output: &[u8],
    addr_at: usize,
    port_at: usize,
    l4: L4,
    hop: Option<(Mac, Mac)>,
) -> Vec<u8> {
    let mut f = input.to_vec();
    let (old_addr, new_addr) = (get32(input, addr_at), get32(output, addr_at));
    let (old_port, new_port) = (get16(input, port_at), get16(output, port_at));
    f[addr_at..addr_at + 4].copy_from_slice(&output[addr_at..addr_at + 4]);
    f[port_at..port_at + 2].copy_from_slice(&output[port_at..port_at + 2]);
    let ip_check = replace4(get16(input, 24), old_addr, new_addr);
    f[24..26].copy_from_slice(&ip_check.to_ne_bytes());
    let check_at = match l4 {
        L4::Tcp => 50,
        L4::Udp => 40,
    };
    let check = get16(input, check_at);
    if !matches!(l4, L4::Udp) || check != 0 {
        let updated = replace2(replace4(check, old_addr, new_addr), old_port, new_port);
        let updated = match l4 {
            L4::Udp if updated == 0 => 0xffff,
            _ => updated,
        };
        f[check_at..check_at + 2].copy_from_slice(&updated.to_ne_bytes());
    }
    if let Some((dst_mac, src_mac)) = hop {
        let old = get16(&f, 22);
        f[22] -= 1;
        let check = replace2(get16(&f, 24), old, get16(&f, 22));
        f[24..26].copy_from_slice(&check.to_ne_bytes());
        f[0..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&src_mac);
    }
    f
}

/// The MAC the rig's permanent neighbour entries give `addr`, if any.
pub fn neighbour(addr: Ipv4Addr) -> Option<Mac> {
    match addr.octets() {
        [10, 10, 0, 2] => Some(CLIENT_MAC),
        [10, 10, 0, 77] => Some(backend_mac(77)),
        [10, 1, 0, last @ 11..=13] => Some(backend_mac(last)),
        _ => None,
    }
}

/// The rig's NICs: `c0` and its MAC, `b0` and its MAC.
pub struct Nics {
    pub c0: (u32, Mac),
    pub b0: (u32, Mac),
}

impl Nics {
    /// The NIC towards `addr`: `c0` for 10.10.0.0/24, `b0` for 10.1.0.0/24.
    pub fn towards(&self, addr: Ipv4Addr) -> (u32, Mac) {
        if addr.octets()[..3] == [10, 10, 0] {
            self.c0
        } else {
            self.b0
        }
    }
}

/// `LB_FUZZ_SEED` and `LB_FUZZ_PACKETS`, or the test's defaults: (seed, frames).
pub fn seed_and_count(default_seed: u64, default_count: usize) -> (u64, usize) {
    let var = |name: &str| std::env::var(name).ok();
    (
        var("LB_FUZZ_SEED")
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_seed),
        var("LB_FUZZ_PACKETS")
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_count),
    )
}

/// The outcome of a run as far as the action alone decides it: `Ok(Some(outcome))` for
/// a frame passed unchanged or dropped as expected, `Ok(None)` for a rewrite still to be
/// checked ([`check_rewrite`]), or what is wrong.
pub fn outcome_of_action(
    expected: &Expected,
    action: u32,
    unchanged: bool,
) -> Result<Option<&'static str>, String> {
    use crate::packet_rig::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
    match (expected, action) {
        (Expected::PassUnchanged | Expected::ReplyOrUnchanged, XDP_PASS) if unchanged => {
            Ok(Some("pass unchanged"))
        }
        (Expected::Drop, XDP_DROP) => Ok(Some("drop")),
        (Expected::ToBackend | Expected::ReplyOrUnchanged, XDP_PASS | XDP_TX | XDP_REDIRECT)
            if !unchanged =>
        {
            Ok(None)
        }
        _ => Err(format!(
            "expected {expected:?}, got action {action} (unchanged: {unchanged})"
        )),
    }
}

/// Checks a rewritten frame sent `towards` an address the config allows, from NIC
/// `ingress`: the action the rig's neighbours and NICs call for (XDP_TX back out of the
/// ingress NIC, XDP_REDIRECT to the other, XDP_PASS with no neighbour), and every byte
/// of `output` as [`nat`] computes it from `input`.
#[expect(
    clippy::too_many_arguments,
    reason = "one oracle step, each input a frame fact"
)]
pub fn check_rewrite(
    nics: &Nics,
    ingress: u32,
    input: &[u8],
    action: u32,
    output: &[u8],
    towards: Ipv4Addr,
    (addr_at, port_at): (usize, usize),
    l4: L4,
) -> Result<(), String> {
    use crate::packet_rig::{XDP_PASS, XDP_REDIRECT, XDP_TX};
    let (egress, egress_mac) = nics.towards(towards);
    let (want_action, hop) = match neighbour(towards) {
        Some(mac) if egress == ingress => (XDP_TX, Some((mac, egress_mac))),
        Some(mac) => (XDP_REDIRECT, Some((mac, egress_mac))),
        None => (XDP_PASS, None),
    };
    if action != want_action {
        return Err(format!(
            "action {action}, expected {want_action} towards {towards}"
        ));
    }
    let want = nat(input, output, addr_at, port_at, l4, hop);
    if output != want {
        let at = output
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "byte {at}: {:#04x}, expected {:#04x}",
            output[at], want[at]
        ));
    }
    Ok(())
}

/// Runs `count` frames from `frame` (seeded with `seed`; each with whether it arrives on
/// the backends' NIC) through the rig's data path loaded with `config`, checking each run
/// with `check` (NICs, ingress, input, action, output) and panicking on the first wrong
/// one; then requires every outcome (passed unchanged or rewritten, dropped, sent
/// rewritten) at least `at_least` times, or the oracle would prove little. Returns the
/// outcome counts.
pub fn run(
    label: &str,
    config: &str,
    (seed, count): (u64, usize),
    at_least: usize,
    mut frame: impl FnMut(&mut Rng) -> (Vec<u8>, bool) + Send,
    check: impl Fn(&Nics, u32, &[u8], u32, &[u8]) -> Result<&'static str, String> + Sync,
) -> BTreeMap<&'static str, usize> {
    let rig = Rig::build();
    let (c0, b0) = (rig.c0, rig.b0);
    let nics = Nics {
        c0: (rig.c0, rig.c0_mac),
        b0: (rig.b0, rig.b0_mac),
    };
    let outcomes = rig.with_dataplane(config, |c| {
        let program = c.dataplane().program();
        let mut rng = Rng(seed | 1);
        let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for n in 0..count {
            let (input, from_backend) = frame(&mut rng);
            let ifindex = if from_backend { b0 } else { c0 };
            let r = run_once(program, ifindex, &input);
            match check(&nics, ifindex, &input, r.action, &r.output) {
                Ok(kind) => *outcomes.entry(kind).or_default() += 1,
                Err(e) => panic!(
                    "{label} frame #{n} (LB_FUZZ_SEED={seed}): {e}\ninput  {input:02x?}\noutput {:02x?}",
                    r.output
                ),
            }
        }
        outcomes
    });
    println!("{label} seed {seed:#x}, {count} frames: {outcomes:?}");
    assert_eq!(outcomes.values().sum::<usize>(), count);
    for kind in ["pass unchanged", "pass rewritten", "drop", "sent rewritten"] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > at_least,
            "{kind}: {outcomes:?}"
        );
    }
    outcomes
}
