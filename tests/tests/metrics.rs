//! Stage counters, gauges and the sampled latency timer reach a StatsD listener.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pushfleet_tests::{Edge, PyClient, PyPublisher};

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

    let mut lines = Vec::new();
    let mut buf = [0u8; 65536];
    statsd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = [
        "pushfleet.edge.e1.ingress.received:",
        "pushfleet.edge.e1.hub.published:",
        "pushfleet.edge.e1.deliver.delivered:",
        "pushfleet.edge.e1.ingress.dropped.data:1|c",
        "pushfleet.edge.e1.connections:1|g",
        "pushfleet.edge.e1.deliver.latency_us:",
    ];
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
