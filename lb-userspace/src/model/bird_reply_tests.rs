//! Replies captured from BIRD 2.0.12 (`bird_fixtures/`, greeting included), parsed.
use super::*;

/// A fixture as BIRD sent it: the greeting line, then the reply.
fn fixture(text: &str) -> (String, &str) {
    let (greet, reply) = text.split_once('\n').expect("a greeting line");
    (greeting(greet).expect("a greeting"), reply)
}

const PROTOCOLS_UP: &str = include_str!("bird_fixtures/protocols_up.txt");
const PROTOCOLS_DOWN: &str = include_str!("bird_fixtures/protocols_down.txt");
const BFD_UP: &str = include_str!("bird_fixtures/bfd_up.txt");
const BFD_DOWN: &str = include_str!("bird_fixtures/bfd_down.txt");
const ROUTE_ON_LO: &str = include_str!("bird_fixtures/route_on_lo.txt");
const ROUTE_NOT_FOUND: &str = include_str!("bird_fixtures/route_not_found.txt");
const EXPORT_SESSION_DOWN: &str = include_str!("bird_fixtures/export_session_down.txt");

fn protocol(name: &str, proto: &str, state: &str, since: &str, info: &str) -> Protocol {
    Protocol {
        name: name.into(),
        proto: proto.into(),
        state: state.into(),
        since: since.into(),
        info: info.into(),
    }
}

#[test]
fn the_greeting_names_the_version() {
    assert_eq!(fixture(PROTOCOLS_UP).0, "BIRD 2.0.12 ready.");
    assert!(greeting("1002-x").is_err());
}

#[test]
fn show_protocols_gives_each_protocol_and_the_bgp_session_state() {
    let (_, reply) = fixture(PROTOCOLS_UP);
    assert!(is_complete(reply));
    assert_eq!(
        protocols(&parse(reply).unwrap()),
        [
            protocol("device1", "Device", "up", "07:33:27.542", ""),
            protocol("vips", "Direct", "up", "07:33:27.542", ""),
            protocol("bfd1", "BFD", "up", "07:33:27.542", ""),
            protocol("upstream", "BGP", "up", "07:46:46.211", "Established"),
        ]
    );
    let (_, reply) = fixture(PROTOCOLS_DOWN);
    assert_eq!(
        protocols(&parse(reply).unwrap())[3],
        protocol(
            "upstream",
            "BGP",
            "start",
            "07:46:50.387",
            "Active Socket: Connection refused"
        )
    );
}

#[test]
fn show_bfd_sessions_gives_each_session_with_its_protocol() {
    let session = |state: &str, since: &str| BfdSession {
        protocol: "bfd1".into(),
        address: "10.10.0.2".into(),
        interface: "nv0".into(),
        state: state.into(),
        since: since.into(),
    };
    let (_, up) = fixture(BFD_UP);
    assert_eq!(
        bfd_sessions(&parse(up).unwrap()),
        [session("Up", "07:46:45.853")]
    );
    let (_, down) = fixture(BFD_DOWN);
    assert_eq!(
        bfd_sessions(&parse(down).unwrap()),
        [session("Down", "07:46:50.365")]
    );
}

#[test]
fn a_route_out_of_lo_is_found_and_not_found_is_no_route() {
    let (_, on_lo) = fixture(ROUTE_ON_LO);
    assert_eq!(route_on_lo(parse(on_lo)), Ok(true));
    let (_, not_found) = fixture(ROUTE_NOT_FOUND);
    assert!(is_complete(not_found));
    assert_eq!(route_on_lo(parse(not_found)), Ok(false));
    // Another error is no answer, not "no route".
    let (_, error) = fixture(EXPORT_SESSION_DOWN);
    assert_eq!(
        route_on_lo(parse(error)),
        Err(ReplyError::Bird {
            code: 9001,
            message: "No valid tables".into()
        })
    );
}

#[test]
fn a_reply_is_complete_only_at_its_last_line() {
    let (_, reply) = fixture(PROTOCOLS_UP);
    let cut = &reply[..reply.len() - "0000 \n".len()];
    assert!(!is_complete(cut));
    assert_eq!(parse(cut), Err(ReplyError::Incomplete));
    assert!(!is_complete("0000 "), "no newline yet");
    assert_eq!(
        parse("1002-a\nbogus\n0000 \n"),
        Err(ReplyError::Malformed("bogus".into()))
    );
}
