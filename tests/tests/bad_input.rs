//! Bad client input gets the right error reply or close code, and nobody else on the
//! edge notices.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::raw::deflate;
use pushfleet_tests::{http, Edge, PyClient, PyPublisher, RawClient};
use serde_json::Value;

const T: Duration = Duration::from_secs(5);

/// An edge with a small message cap, a publisher, and an observer subscribed to
/// `watch` that must keep receiving whatever the others do.
struct Fixture {
    publisher: PyPublisher,
    edge: Edge,
    observer: PyClient,
    published: u64,
}

impl Fixture {
    fn new(extra: &[&str]) -> Fixture {
        let publisher = PyPublisher::start();
        let mut args = vec!["--max-message-size", "4096"];
        args.extend_from_slice(extra);
        let edge = Edge::start(&[&publisher.endpoint], &args);
        let mut observer = PyClient::connect(&edge.ws_url(), true);
        observer.subscribe("watch");
        publisher.wait_for("subscribe", "watch");
        Fixture {
            publisher,
            edge,
            observer,
            published: 0,
        }
    }

    /// Publishes on `watch` and checks the observer still gets it.
    fn observer_still_receives(&mut self) {
        self.published += 1;
        self.publisher
            .publish("watch", "e", &self.published.to_string());
        let m = self.observer.recv();
        assert_eq!(m["data"], self.published, "observer lost a message: {m}");
    }

    fn raw(&self) -> RawClient {
        RawClient::connect(&self.edge.addr(), None)
    }
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "expected an error reply: {reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {reply}"
    );
    reply["error"].as_str().unwrap_or_default()
}

#[test]
fn bad_requests_get_error_replies_and_the_connection_stays_usable() {
    let mut f = Fixture::new(&["--max-subscriptions", "2"]);
    let mut c = f.raw();
    let cases = [
        ("{not json", "invalid_json"),
        ("[1,2,3]", "invalid_request"),
        (r#"{"channel":"a"}"#, "invalid_request"),
        (
            r#"{"method":"publish","channel":"a","id":9}"#,
            "unknown_method",
        ),
        (
            r#"{"method":"subscribe","channel":"no spaces"}"#,
            "invalid_channel",
        ),
        (r#"{"method":"subscribe","channel":""}"#, "invalid_channel"),
        (
            r#"{"method":"unsubscribe","channel":"never"}"#,
            "not_subscribed",
        ),
    ];
    for (request, code) in cases {
        c.send_text(request);
        let reply = c
            .recv_json(T)
            .unwrap_or_else(|| panic!("no reply to {request}"));
        assert_eq!(error_code(&reply), code, "for {request}");
    }
    c.send_frame(true, false, 2, b"\x00\x01binary", true);
    assert_eq!(error_code(&c.recv_json(T).unwrap()), "unsupported_frame");
    let id_echo = {
        c.send_text(r#"{"method":"nope","channel":"a","id":9}"#);
        c.recv_json(T).unwrap()
    };
    assert_eq!(id_echo["id"], 9);

    c.send_text(r#"{"method":"subscribe","channel":"a"}"#);
    c.send_text(r#"{"method":"subscribe","channel":"b"}"#);
    c.send_text(r#"{"method":"subscribe","channel":"c"}"#);
    assert_eq!(c.recv_json(T).unwrap()["type"], "subscribed");
    assert_eq!(c.recv_json(T).unwrap()["type"], "subscribed");
    assert_eq!(
        error_code(&c.recv_json(T).unwrap()),
        "too_many_subscriptions"
    );
    // Subscribing twice is idempotent, not an error.
    c.send_text(r#"{"method":"subscribe","channel":"a"}"#);
    assert_eq!(c.recv_json(T).unwrap()["type"], "subscribed");
    f.observer_still_receives();
    let stats = f.edge.stats();
    assert_eq!(stats["client_errors"]["invalid_json"], 1);
    assert_eq!(stats["client_errors"]["unknown_method"], 2);
    assert_eq!(stats["client_errors"]["too_many_subscriptions"], 1);
    assert_eq!(stats["connections"], 2);
}

/// Sends `bytes` on a fresh connection and returns the close code the edge answers.
fn close_code_for(f: &Fixture, extensions: Option<&str>, bytes: &[u8]) -> Option<u16> {
    let mut c = RawClient::connect(&f.edge.addr(), extensions);
    c.send_raw(bytes);
    let code = c.expect_close(T);
    assert!(
        c.eof_within(T),
        "the edge should close the TCP connection after a protocol error"
    );
    code
}

fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    pushfleet_tests::raw::encode_client_frame(fin, rsv1, opcode, payload, mask)
}

#[test]
fn protocol_violations_get_the_right_close_codes() {
    let mut f = Fixture::new(&[]);
    let deflate_offer = Some("permessage-deflate");
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (
            "unmasked client frame",
            None,
            frame(true, false, 1, b"{}", false),
            1002,
        ),
        (
            "oversized frame",
            None,
            frame(true, false, 1, &vec![b' '; 5000], true),
            1009,
        ),
        (
            "oversized fragmented message",
            None,
            {
                let mut b = frame(false, false, 1, &vec![b' '; 3000], true);
                b.extend(frame(true, false, 0, &vec![b' '; 3000], true));
                b
            },
            1009,
        ),
        (
            "invalid UTF-8 text",
            None,
            frame(true, false, 1, b"{\"a\":\"\xff\xfe\"}", true),
            1007,
        ),
        (
            "RSV1 without negotiation",
            None,
            frame(true, true, 1, &deflate(b"{}"), true),
            1002,
        ),
        (
            "RSV1 on a control frame",
            deflate_offer,
            frame(true, true, 9, b"", true),
            1002,
        ),
        (
            "unknown opcode",
            None,
            frame(true, false, 3, b"", true),
            1002,
        ),
        (
            "continuation without start",
            None,
            frame(true, false, 0, b"x", true),
            1002,
        ),
        (
            "fragmented ping",
            None,
            frame(false, false, 9, b"", true),
            1002,
        ),
        (
            "deflate bomb",
            deflate_offer,
            frame(true, true, 1, &deflate(&vec![b'a'; 10 << 20]), true),
            1009,
        ),
        (
            "corrupt deflate data",
            deflate_offer,
            frame(true, true, 1, b"\xff\xff\xff\xff", true),
            1007,
        ),
        (
            "invalid close code",
            None,
            frame(true, false, 8, &1005u16.to_be_bytes(), true),
            1002,
        ),
    ];
    for (what, ext, bytes, expected) in &cases {
        assert_eq!(close_code_for(&f, *ext, bytes), Some(*expected), "{what}");
        f.observer_still_receives();
    }
    let stats = f
        .edge
        .wait_stats("closed connections gone", |s| s["connections"] == 1);
    assert_eq!(stats["protocol_closes"], cases.len() as u64, "{stats}");
}

#[test]
fn a_clean_close_is_echoed() {
    let f = Fixture::new(&[]);
    let mut c = f.raw();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send_frame(true, false, 8, &payload, true);
    assert_eq!(c.expect_close(T), Some(1000));
    assert!(c.eof_within(T));
}

#[test]
fn compressed_client_requests_are_inflated() {
    let mut f = Fixture::new(&[]);
    let mut c = RawClient::connect(&f.edge.addr(), Some("permessage-deflate"));
    let request = br#"{"method":"subscribe","channel":"watch","id":"z"}"#;
    c.send_frame(true, true, 1, &deflate(request), true);
    let ack = c.recv_json(T).unwrap();
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["id"], "z");
    f.observer_still_receives();
    assert_eq!(c.recv_json(T).unwrap()["data"], 1);
}

#[test]
fn pings_are_answered_with_pongs() {
    let f = Fixture::new(&[]);
    let mut c = f.raw();
    c.send_frame(true, false, 9, b"hello", true);
    let pong = c.read_frame(T).unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"hello"[..]));
}

#[test]
fn bad_handshakes_get_http_errors() {
    let f = Fixture::new(&[]);
    let (status, body) = http("GET", &f.edge.addr(), "/ws").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("bad_handshake"), "{body}");
    let (status, _) = http("POST", &f.edge.addr(), "/ws").unwrap();
    assert_eq!(status, 405);
    let (status, body) = http("GET", &f.edge.addr(), "/nope").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("not_found"));
    // Upgrades are checked on the raw socket: wrong path, wrong version.
    let upgrade = |path: &str, version: &str| {
        pushfleet_tests::raw::upgrade_response(&f.edge.addr(), path, version).1
    };
    let wrong_path = upgrade("/socket", "13");
    assert!(wrong_path.starts_with("HTTP/1.1 404"), "{wrong_path}");
    assert!(wrong_path.contains("not_found"));
    let wrong_version = upgrade("/ws", "8");
    assert!(wrong_version.starts_with("HTTP/1.1 426"), "{wrong_version}");
    assert!(wrong_version
        .to_ascii_lowercase()
        .contains("sec-websocket-version: 13"));
    assert_eq!(f.edge.stats()["handshake_failures"], 1);
    // Admin calls never live on the public port.
    let (status, _) = http("POST", &f.edge.addr(), "/drain").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn random_garbage_after_the_handshake_never_hurts_the_edge() {
    let mut f = Fixture::new(&["--heartbeat-interval", "1s", "--heartbeat-timeout", "2s"]);
    // A fixed-seed xorshift: the same bytes every run, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..60 {
        let extensions = (round % 2 == 0).then_some("permessage-deflate");
        let mut c = RawClient::connect(&f.edge.addr(), extensions);
        let len = 16 + (next() % 4096) as usize;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 {
            // Start with a plausible masked header so the payload path is exercised too.
            garbage[0] = 0x81 | if round % 2 == 0 { 0x40 } else { 0 };
            garbage[1] = 0x80 | 126;
        }
        c.send_raw(&garbage);
        // Whatever the bytes were, the edge answers with a close or waits for more;
        // either way this connection ends by the heartbeat timeout at the latest.
        let _ = c.expect_close(Duration::from_secs(4));
        if round % 10 == 0 {
            f.observer_still_receives();
        }
    }
    f.observer_still_receives();
    let stats = f
        .edge
        .wait_stats("garbage connections gone", |s| s["connections"] == 1);
    assert!(stats["protocol_closes"].as_u64().unwrap() > 0, "{stats}");
}
