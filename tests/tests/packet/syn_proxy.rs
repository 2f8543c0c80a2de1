//! Packet tests of the SYN proxy (docs/edge-protection.md): a proxied service's SYN is
//! answered with a cookie, only the client's ACK of a valid cookie opens the connection
//! to a backend (with the client's sequence number), the backend's SYN-ACK becomes the
//! ACK the backend expects, and every later packet has its sequence or acknowledgement
//! number translated, in both directions. Every output frame is compared whole against
//! one built from the RFC layouts (`lb_tests::proxy_frame`), checksums included, and
//! every step against the reason counters.
use std::net::Ipv4Addr;

use lb_common::counters::Reason;
use lb_tests::{
    caps,
    frame::{checksums_valid, Frame, ACK, FIN_ACK, PSH_ACK, RST_ACK, SYN, SYN_ACK},
    packet_exchange::run_counted,
    packet_rig::*,
    proxy_frame::{seq_of, ProxySegment},
};
use lb_userspace::kernel::KernelDataplane;

const PROXIED_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 122);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
/// The client's initial sequence number.
const CLIENT_ISN: u32 = 0xffff_ff00;

const CONFIG: &str = lb_tests::rig_config_with!(
    r#"  - name: proxied
    vip: 10.0.0.122
    port: 80
    syn_proxy: on
    backends:
      - { address: 10.1.0.11, port: 8080, zone: az-a }
"#
);

/// A client segment to the proxied VIP from `sport`.
fn client(sport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Frame {
    Frame {
        dst: PROXIED_VIP,
        flags,
        seq,
        ack,
        payload: payload.to_vec(),
        ..client_syn(sport)
    }
}

/// A backend segment to the client's `sport`, as it arrives on `b0`.
fn backend(sport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Frame {
    Frame {
        src_mac: backend_mac(11),
        src: BACKEND,
        dst: CLIENT,
        sport: 8080,
        dport: sport,
        flags,
        seq,
        ack,
        payload: payload.to_vec(),
        ..Frame::default()
    }
}

/// Sends the client's SYN from `sport`; checks the proxy's SYN-ACK whole and returns
/// the cookie it carries.
fn cookie_for(dp: &KernelDataplane, c0: u32, sport: u16) -> u32 {
    let syn = client(sport, SYN, CLIENT_ISN, 0, b"");
    let r = run_counted(dp, c0, &syn.bytes(), Reason::TxSynCookie);
    assert_eq!(r.action, XDP_TX, "the SYN is answered where it came from");
    let cookie = seq_of(&r.output);
    let want = ProxySegment {
        dst_mac: syn.src_mac,
        src_mac: syn.dst_mac,
        seq: cookie,
        ack: CLIENT_ISN.wrapping_add(1),
        ..ProxySegment::syn_ack(PROXIED_VIP, CLIENT, 80, sport)
    };
    assert_eq!(r.output, want.bytes(), "the proxy's SYN-ACK");
    cookie
}

/// The whole handshake through the proxy for `sport`: the cookie, the client's ACK
/// turned into the SYN to the backend, the backend's SYN-ACK turned into the ACK to it.
/// Returns the cookie.
fn open(rig: &Rig, dp: &KernelDataplane, sport: u16) -> u32 {
    let cookie = cookie_for(dp, rig.c0, sport);
    let ack = client(
        sport,
        ACK,
        CLIENT_ISN.wrapping_add(1),
        cookie.wrapping_add(1),
        b"",
    );
    let r = run_counted(dp, rig.c0, &ack.bytes(), Reason::RedirectInterface);
    assert_eq!(r.action, XDP_REDIRECT);
    let syn = ProxySegment {
        dst_mac: backend_mac(11),
        src_mac: rig.b0_mac,
        src: CLIENT,
        dst: BACKEND,
        sport,
        dport: 8080,
        // One router hop.
        ttl: 63,
        seq: CLIENT_ISN,
        ack: 0,
        flags: SYN,
        window: 65535,
        mss: true,
    };
    assert_eq!(r.output, syn.bytes(), "the SYN to the backend");
    let syn_ack = backend(sport, SYN_ACK, BACKEND_ISN, CLIENT_ISN.wrapping_add(1), b"");
    let r = run_counted(dp, rig.b0, &syn_ack.bytes(), Reason::TxSynProxyAck);
    assert_eq!(r.action, XDP_TX, "the ACK goes back to the backend");
    let ack_to_backend = ProxySegment {
        dst_mac: backend_mac(11),
        src_mac: syn_ack.dst_mac,
        src: CLIENT,
        dst: BACKEND,
        sport,
        dport: 8080,
        ttl: 64,
        seq: CLIENT_ISN.wrapping_add(1),
        ack: BACKEND_ISN.wrapping_add(1),
        flags: ACK,
        window: 65535,
        mss: false,
    };
    assert_eq!(r.output, ack_to_backend.bytes(), "the ACK to the backend");
    cookie
}

/// `frame` as forwarded to the backend: one hop on, to 10.1.0.11:8080.
fn to_backend(rig: &Rig, frame: &Frame) -> Vec<u8> {
    Frame {
        dst_mac: backend_mac(11),
        src_mac: rig.b0_mac,
        dst: BACKEND,
        dport: 8080,
        ttl: frame.ttl - 1,
        ..frame.clone()
    }
    .bytes()
}

/// `frame` (from the backend) as forwarded to the client: one hop on, from the VIP.
fn to_client(rig: &Rig, frame: &Frame) -> Vec<u8> {
    Frame {
        dst_mac: CLIENT_MAC,
        src_mac: rig.c0_mac,
        src: PROXIED_VIP,
        sport: 80,
        ttl: frame.ttl - 1,
        ..frame.clone()
    }
    .bytes()
}

#[test]
fn a_proxied_connection_opens_only_on_a_valid_cookie_and_is_translated_both_ways() {
    let rig = Rig::build();
    // Loaded with only the capabilities lbd serves with: the verifier accepts the proxy
    // without CAP_PERFMON's leniency.
    rig.with_dataplane_loaded_with(CONFIG, Some(&caps::SERVING), |c| {
        let dp = c.dataplane();
        let sport = 41000;
        let cookie = open(&rig, dp, sport);
        // Client data: its acknowledgement number moves from the cookie's space to the
        // backend's; nothing else changes but the NAT.
        let data = client(
            sport,
            PSH_ACK,
            CLIENT_ISN.wrapping_add(1),
            cookie.wrapping_add(1),
            b"GET / HTTP/1.0\r\n\r\n",
        );
        let r = run_counted(dp, rig.c0, &data.bytes(), Reason::RedirectInterface);
        let want = Frame {
            ack: BACKEND_ISN.wrapping_add(1),
            ..data.clone()
        };
        assert_eq!(
            r.output,
            to_backend(&rig, &want),
            "client data to the backend"
        );
        assert!(checksums_valid(&r.output));
        // Backend data: its sequence number moves to the cookie's space.
        let reply = backend(
            sport,
            PSH_ACK,
            BACKEND_ISN.wrapping_add(1),
            CLIENT_ISN.wrapping_add(1 + 18),
            b"HTTP/1.0 200 OK\r\n",
        );
        let r = run_counted(dp, rig.b0, &reply.bytes(), Reason::RedirectInterface);
        let want = Frame {
            seq: cookie.wrapping_add(1),
            ..reply.clone()
        };
        assert_eq!(
            r.output,
            to_client(&rig, &want),
            "backend data to the client"
        );
        assert!(checksums_valid(&r.output));
        // Later segments keep the same offset.
        let ack = client(
            sport,
            ACK,
            CLIENT_ISN.wrapping_add(1 + 18),
            cookie.wrapping_add(1 + 17),
            b"",
        );
        let r = run_counted(dp, rig.c0, &ack.bytes(), Reason::RedirectInterface);
        let want = Frame {
            ack: BACKEND_ISN.wrapping_add(1 + 17),
            ..ack.clone()
        };
        assert_eq!(r.output, to_backend(&rig, &want));
    });
}

#[test]
fn a_forged_cookie_or_a_packet_of_no_handshake_is_dropped_and_counted() {
    let rig = Rig::build();
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let sport = 42000;
        let cookie = cookie_for(dp, rig.c0, sport);
        let isn = CLIENT_ISN.wrapping_add(1);
        for (what, frame) in [
            (
                "an ACK of a made-up cookie",
                client(sport, ACK, isn, 0x1234_5679, b""),
            ),
            (
                // The cookie's top 8 bits count the minutes of the kernel's cookie clock
                // (`tcp_cookie_time`); a cookie older than 2 is refused.
                "an ACK of the cookie as if minted 16 minutes earlier (stale)",
                client(
                    sport,
                    ACK,
                    isn,
                    cookie.wrapping_sub(16 << 24).wrapping_add(1),
                    b"",
                ),
            ),
            (
                "an ACK of another sequence number",
                client(sport, ACK, isn.wrapping_add(1), cookie.wrapping_add(1), b""),
            ),
            (
                "the cookie from another port",
                client(sport + 1, ACK, isn, cookie.wrapping_add(1), b""),
            ),
            (
                "a RST",
                client(sport, RST_ACK, isn, cookie.wrapping_add(1), b""),
            ),
            (
                "a FIN",
                client(sport, FIN_ACK, isn, cookie.wrapping_add(1), b""),
            ),
        ] {
            let r = run_counted(dp, rig.c0, &frame.bytes(), Reason::DropSynCookieInvalid);
            assert_eq!(r.action, XDP_DROP, "{what}");
        }
        // None of them opened anything: the backend's SYN-ACK finds no flow of ours.
        let syn_ack = backend(sport, SYN_ACK, BACKEND_ISN, isn, b"");
        let r = run_counted(dp, rig.b0, &syn_ack.bytes(), Reason::PassNoService);
        assert_eq!(r.action, XDP_PASS);
        // The genuine ACK still opens the connection.
        let ack = client(sport, ACK, isn, cookie.wrapping_add(1), b"");
        let r = run_counted(dp, rig.c0, &ack.bytes(), Reason::RedirectInterface);
        assert_eq!(dst_ip_port(&r.output), (BACKEND, 8080));
    });
}

#[test]
fn a_fin_and_a_reset_pass_through_proxied_flows_translated() {
    let rig = Rig::build();
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let sport = 43000;
        let cookie = open(&rig, dp, sport);
        let fin = client(
            sport,
            FIN_ACK,
            CLIENT_ISN.wrapping_add(1),
            cookie.wrapping_add(1),
            b"",
        );
        let r = run_counted(dp, rig.c0, &fin.bytes(), Reason::RedirectInterface);
        let want = Frame {
            ack: BACKEND_ISN.wrapping_add(1),
            ..fin.clone()
        };
        assert_eq!(r.output, to_backend(&rig, &want), "the client's FIN");
        let fin_back = backend(
            sport,
            FIN_ACK,
            BACKEND_ISN.wrapping_add(1),
            CLIENT_ISN.wrapping_add(2),
            b"",
        );
        let r = run_counted(dp, rig.b0, &fin_back.bytes(), Reason::RedirectInterface);
        let want = Frame {
            seq: cookie.wrapping_add(1),
            ..fin_back.clone()
        };
        assert_eq!(r.output, to_client(&rig, &want), "the backend's FIN");

        // Another connection, reset by the backend in mid-flow.
        let sport = 43001;
        let cookie = open(&rig, dp, sport);
        let rst = backend(
            sport,
            RST_ACK,
            BACKEND_ISN.wrapping_add(1),
            CLIENT_ISN.wrapping_add(1),
            b"",
        );
        let r = run_counted(dp, rig.b0, &rst.bytes(), Reason::RedirectInterface);
        let want = Frame {
            seq: cookie.wrapping_add(1),
            ..rst.clone()
        };
        assert_eq!(r.output, to_client(&rig, &want), "the backend's RST");

        // And one the client resets.
        let sport = 43002;
        let cookie = open(&rig, dp, sport);
        let rst = client(
            sport,
            RST_ACK,
            CLIENT_ISN.wrapping_add(1),
            cookie.wrapping_add(1),
            b"",
        );
        let r = run_counted(dp, rig.c0, &rst.bytes(), Reason::RedirectInterface);
        let want = Frame {
            ack: BACKEND_ISN.wrapping_add(1),
            ..rst.clone()
        };
        assert_eq!(r.output, to_backend(&rig, &want), "the client's RST");
    });
}

#[test]
fn a_backend_refusing_the_proxied_syn_resets_the_client_at_the_cookie() {
    let rig = Rig::build();
    rig.with_dataplane(CONFIG, |c| {
        let dp = c.dataplane();
        let sport = 44000;
        let cookie = cookie_for(dp, rig.c0, sport);
        let isn = CLIENT_ISN.wrapping_add(1);
        let ack = client(sport, ACK, isn, cookie.wrapping_add(1), b"");
        run_counted(dp, rig.c0, &ack.bytes(), Reason::RedirectInterface);
        // Data the client sends before the backend answered cannot be translated yet.
        let early = client(sport, PSH_ACK, isn, cookie.wrapping_add(1), b"early");
        let r = run_counted(dp, rig.c0, &early.bytes(), Reason::DropSynProxyOpening);
        assert_eq!(r.action, XDP_DROP);
        // RFC 793: the RST refusing a SYN has sequence number 0; the client expects the
        // cookie + 1.
        let refused = backend(sport, RST_ACK, 0, isn, b"");
        let r = run_counted(dp, rig.b0, &refused.bytes(), Reason::RedirectInterface);
        let want = Frame {
            seq: cookie.wrapping_add(1),
            ..refused.clone()
        };
        assert_eq!(r.output, to_client(&rig, &want));
    });
}

fn dst_ip_port(frame: &[u8]) -> (Ipv4Addr, u16) {
    (
        lb_tests::frame::dst_ip(frame),
        lb_tests::frame::dst_port(frame),
    )
}
