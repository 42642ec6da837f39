//! Stage counters, gauges and the sampled latency timer reach a StatsD listener.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pushfleet_tests::fleet::python_publish;
use pushfleet_tests::{Edge, PyClient, PyPublisher, Relay};

#[test]
fn statsd_receives_stage_counters_gauges_and_latency_samples() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = statsd.local_addr().unwrap().to_string();
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(
        &[&publisher.endpoint],
        &["--statsd", &addr, "--edge-id", "e1"],
    );
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("m");
    publisher.wait_for("subscribe", "m");
    // 64 deliveries: the latency timer samples one in 64.
    for i in 0..64 {
        publisher.publish("m", "e", &i.to_string());
    }
    for _ in 0..64 {
        client.recv();
    }
    publisher.send(&["m", "e", "{bad"]);

    let lines = collect(
        &statsd,
        &[
            "pushfleet.edge.e1.ingress.received:",
            "pushfleet.edge.e1.hub.published:",
            "pushfleet.edge.e1.deliver.delivered:",
            "pushfleet.edge.e1.ingress.dropped.data:1|c",
            "pushfleet.edge.e1.connections:1|g",
            "pushfleet.edge.e1.deliver.latency_us:",
        ],
    );
    let delivered: u64 = lines
        .iter()
        .filter_map(|l| l.strip_prefix("pushfleet.edge.e1.deliver.delivered:"))
        .filter_map(|v| v.strip_suffix("|c")?.parse::<u64>().ok())
        .sum();
    assert_eq!(delivered, 64, "counter increments add up to the deliveries");
    let timer = lines
        .iter()
        .find(|l| l.contains("deliver.latency_us:"))
        .unwrap();
    assert!(timer.ends_with("|ms|@0.015625"), "{timer}");
}

/// Reads StatsD lines until every `wanted` prefix has been seen (or 10 s pass, then
/// fails naming the missing one).
fn collect(statsd: &UdpSocket, wanted: &[&str]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; 65536];
    statsd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !wanted
            .iter()
            .all(|w| lines.iter().any(|l: &String| l.starts_with(w)))
    {
        if let Ok(n) = statsd.recv(&mut buf) {
            lines.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    for w in wanted {
        assert!(
            lines.iter().any(|l| l.starts_with(w)),
            "no {w} in {lines:#?}"
        );
    }
    lines
}

#[test]
fn the_relay_reports_received_forwarded_and_dropped_by_reason() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = statsd.local_addr().unwrap().to_string();
    let relay = Relay::start(&["--statsd", &addr, "--relay-id", "r1"]);
    let edge = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("m");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    let message = |c: &str, d: &str| (c.to_owned(), "e".to_owned(), d.to_owned());
    python_publish(
        &[relay.publish_endpoint()],
        &[message("m", "1"), message("m", "2"), message("nobody", "3")],
    );
    client.recv();
    client.recv();
    // A malformed publish, which the Python example would refuse to send.
    let raw = format!(
        "import zmq; s = zmq.Context().socket(zmq.PUSH); s.setsockopt(zmq.LINGER, 5000); \
         s.connect('{}'); s.send_multipart([b'm', b'e', b'{{bad'])",
        relay.publish_endpoint()
    );
    assert!(std::process::Command::new("python3")
        .arg("-c")
        .arg(raw)
        .status()
        .unwrap()
        .success());
    let lines = collect(
        &statsd,
        &[
            "pushfleet.relay.r1.received.zmq:",
            "pushfleet.relay.r1.forwarded:",
            "pushfleet.relay.r1.no_subscribers:1|c",
            "pushfleet.relay.r1.dropped.data:1|c",
            "pushfleet.relay.r1.channels:1|g",
            "pushfleet.relay.r1.edges:1|g",
        ],
    );
    let sum = |name: &str| -> u64 {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|v| v.strip_suffix("|c")?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(sum("pushfleet.relay.r1.forwarded:"), 2, "{lines:#?}");
    assert_eq!(sum("pushfleet.relay.r1.received.zmq:"), 4, "{lines:#?}");
}
