//! Heartbeats, slow clients, connection limits, drain and shutdown, configuration.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use pushfleet_tests::process::binary;
use pushfleet_tests::{http, Edge, PyClient, PyPublisher, RawClient};

const T: Duration = Duration::from_secs(5);

#[test]
fn silent_clients_are_closed_and_answering_ones_stay() {
    let publisher = PyPublisher::start();
    let edge = Edge::start(
        &[&publisher.endpoint],
        &[
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-timeout",
            "700ms",
        ],
    );
    // websockets answers pings by itself; the raw client never does.
    let mut alive = PyClient::connect(&edge.ws_url(), false);
    let mut silent = RawClient::connect(&edge.addr(), None);
    let ping = silent.read_frame(T).unwrap();
    assert_eq!(ping.opcode, 9, "the edge pings");
    let started = Instant::now();
    assert_eq!(silent.expect_close(T), Some(1001));
    // Closed by the 700 ms timeout, not by the 60 s default.
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1000));
    alive.subscribe("still-here");
    let stats = edge.stats();
    assert_eq!(stats["heartbeat_timeouts"], 1);
    assert_eq!(stats["connections"], 1);
}

/// A client that subscribes and then never reads, while large messages pour in.
fn stalled_reader(edge: &Edge, channel: &str) -> RawClient {
    let mut c = RawClient::connect(&edge.addr(), None);
    c.send_text(&format!(
        r#"{{"method":"subscribe","channel":"{channel}"}}"#
    ));
    assert_eq!(c.recv_json(T).unwrap()["type"], "subscribed");
    c
}

/// Floods one stalled and one reading client under `policy`; returns the stats.
fn flood(policy: &str) -> serde_json::Value {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(
        &[&publisher.endpoint],
        &["--send-queue", "8", "--slow-client", policy],
    );
    let _stalled = stalled_reader(&edge, "firehose");
    let mut reader = PyClient::connect(&edge.ws_url(), false);
    reader.subscribe("firehose");
    publisher.wait_for("subscribe", "firehose");
    // ~26 MB in total: far more than loopback socket buffers hold. Paced so that a
    // client that reads keeps up, while the stalled one cannot.
    let blob = format!("\"{}\"", "x".repeat(64 * 1024));
    let count = 400u64;
    for i in 0..count {
        publisher.publish("firehose", &format!("e{i}"), &blob);
        std::thread::sleep(Duration::from_millis(2));
    }
    for i in 0..count {
        let m = reader.recv();
        assert_eq!(
            m["event"],
            format!("e{i}"),
            "the reading client must get everything in order"
        );
    }
    edge.wait_stats("slow client handled", |s| {
        s["drops"]["slow_client"].as_u64().unwrap_or(0) > 0
    })
}

#[test]
fn a_stalled_client_loses_its_oldest_messages_and_slows_nobody() {
    let stats = flood("drop-oldest");
    assert_eq!(stats["slow_client_disconnects"], 0);
    assert_eq!(stats["connections"], 2);
}

#[test]
fn a_stalled_client_is_disconnected_under_the_disconnect_policy() {
    let stats = flood("disconnect");
    assert_eq!(stats["slow_client_disconnects"], 1);
}

#[test]
fn a_stalled_client_keeps_only_recent_messages_under_conflate() {
    let stats = flood("conflate");
    assert_eq!(stats["slow_client_disconnects"], 0);
}

#[test]
fn upgrades_beyond_the_connection_limit_get_503() {
    let publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &["--max-connections", "2"]);
    let _a = RawClient::connect(&edge.addr(), None);
    let _b = RawClient::connect(&edge.addr(), None);
    let (status, body) = ws_upgrade_status(&edge.addr());
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("over_capacity"));
    assert_eq!(edge.stats()["connections_refused"], 1);
}

fn ws_upgrade_status(addr: &str) -> (u16, String) {
    pushfleet_tests::raw::upgrade_response(addr, "/ws", "13")
}

#[test]
fn sigterm_drains_clients_with_spread_reconnect_hints_then_exits() {
    let mut publisher = PyPublisher::start();
    let mut edge = Edge::start(
        &[&publisher.endpoint],
        &["--drain-spread", "1s", "--drain-timeout", "5s"],
    );
    let mut clients: Vec<PyClient> = (0..4)
        .map(|_| PyClient::connect(&edge.ws_url(), true))
        .collect();
    for c in &mut clients {
        c.subscribe("d");
    }
    publisher.wait_for("subscribe", "d");
    let started = Instant::now();
    edge.signal("TERM");
    // While draining: unhealthy for the load balancer, and no new sockets.
    let (_, body) = pushfleet_tests::eventually(T, "healthz 503", || {
        http("GET", &edge.addr(), "/healthz").filter(|(s, _)| *s == 503)
    });
    assert!(body.contains("draining"), "{body}");
    assert_eq!(ws_upgrade_status(&edge.addr()).0, 503);
    // Messages keep flowing to clients not yet told to leave.
    publisher.publish("d", "e", "1");
    for c in &clients {
        let mut hint = c.recv();
        if hint["data"] == 1 {
            hint = c.recv();
        }
        assert_eq!(hint["type"], "reconnect", "{hint}");
        assert_eq!(hint["reason"], "draining");
        assert!(hint["retry_after_ms"].as_u64().is_some());
        assert_eq!(c.closed(T), 1012);
    }
    let status = edge
        .wait_exit(Duration::from_secs(5))
        .expect("edge should exit once drained");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drain took {:?}",
        started.elapsed()
    );
}

#[test]
fn admin_drain_then_a_second_signal_exits_at_once() {
    let publisher = PyPublisher::start();
    let mut edge = Edge::start(
        &[&publisher.endpoint],
        &["--drain-spread", "20s", "--drain-timeout", "60s"],
    );
    // Ten clients, told to leave at random moments over 20 s: the edge stays occupied
    // (each one alone might draw a moment within the first second and leave).
    let _clients: Vec<RawClient> = (0..10)
        .map(|_| RawClient::connect(&edge.addr(), None))
        .collect();
    let (status, body) = http("POST", &edge.admin_addr(), "/drain").unwrap();
    assert_eq!(status, 202, "{body}");
    pushfleet_tests::eventually(T, "draining state", || {
        edge.stats()["state"]
            .as_str()
            .filter(|s| *s == "draining")
            .map(|_| ())
    });
    edge.signal("TERM");
    assert!(
        edge.wait_exit(Duration::from_millis(500)).is_none(),
        "first signal only drains"
    );
    edge.signal("TERM");
    let status = edge
        .wait_exit(Duration::from_secs(3))
        .expect("second signal exits at once");
    assert!(status.success());
}

#[test]
fn the_drain_timeout_bounds_shutdown() {
    let publisher = PyPublisher::start();
    let mut edge = Edge::start(
        &[&publisher.endpoint],
        &["--drain-spread", "900ms", "--drain-timeout", "1s"],
    );
    // A raw client that never answers the close handshake keeps its connection open
    // past the timeout.
    let _stubborn = RawClient::connect(&edge.addr(), None);
    edge.signal("INT");
    let status = edge
        .wait_exit(Duration::from_secs(4))
        .expect("exit after the drain timeout");
    assert!(status.success());
    let log = edge.log_text();
    assert!(log.contains("drain timeout passed"), "{log}");
}

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    let cases: &[&[&str]] = &[
        &["--zmq-connect", "udp://x:1"],
        &[
            "--zmq-connect",
            "tcp://127.0.0.1:1",
            "--heartbeat-interval",
            "10s",
            "--heartbeat-timeout",
            "5s",
        ],
        &[
            "--zmq-connect",
            "tcp://127.0.0.1:1",
            "--drain-spread",
            "40s",
        ],
        &["--zmq-connect", "tcp://127.0.0.1:1", "--send-queue", "0"],
    ];
    let unparsable: &[&[&str]] = &[
        &[],
        &[
            "--zmq-connect",
            "tcp://127.0.0.1:1",
            "--listen",
            "256.0.0.1:1",
        ],
        &[
            "--zmq-connect",
            "tcp://127.0.0.1:1",
            "--deflate-level",
            "12",
        ],
        &[
            "--zmq-connect",
            "tcp://127.0.0.1:1",
            "--heartbeat-interval",
            "soon",
        ],
        &["--zmq-connect", "tcp://127.0.0.1:1", "--no-such-flag"],
    ];
    // Cross-field rules and clap's own parse errors end the same way: exit 64, one line.
    for args in cases.iter().chain(unparsable) {
        let out = Command::new(binary("pushfleet-server"))
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("invalid configuration"), "{stderr}");
    }
    let out = Command::new(binary("pushfleet-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--slow-client"));
}
