//! The README's first command, `deploy/local/fleet.sh`, as a user runs it: the whole
//! fleet comes up (etcd, 2 relays, 3 edges, herald, HAProxy, the Python ticker and the
//! StatsD → Graphite pipeline), the URLs it prints answer, a WebSocket client through
//! HAProxy receives the ticker compressed, every part's metrics reach Graphite, and
//! Ctrl-C stops every part and frees every port.

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::time::Duration;

use pushfleet_tests::local_fleet::LocalFleet;
use pushfleet_tests::{eventually, get_json, http, PyClient};

#[test]
fn the_local_fleet_comes_up_answers_its_urls_and_stops_cleanly() {
    let mut fleet = LocalFleet::start_with(true);
    let front = fleet.front();

    // The demo page and the client, through HAProxy; `/` leads to the page.
    let (status, page) = http("GET", &front, "/demo/").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("pushfleet.js"), "{page}");
    let (status, client) = http("GET", &front, "/demo/pushfleet.js").unwrap();
    assert_eq!(status, 200);
    assert!(client.contains("Pushfleet"), "the browser client");
    assert_eq!(http("GET", &front, "/").unwrap().0, 302);

    // herald sees all three edges, has put them in HAProxy, and is reachable
    // through HAProxy under /herald/.
    let status = eventually(Duration::from_secs(20), "3 edges ready in herald", || {
        get_json(&front, "/herald/status").filter(|s| {
            (1..=3).all(|n| s["views"][format!("edge-{n}")]["verdict"] == "ready")
                && s["slots"].as_object().is_some_and(|o| o.len() == 3)
        })
    });
    assert_eq!(status["leader"], true, "{status}");
    assert!(get_json(&fleet.herald_http(), "/status").is_some());
    let (code, stats) = http("GET", &fleet.haproxy_stats(), "/").unwrap();
    assert_eq!(code, 200);
    assert!(stats.contains("edges"), "HAProxy's stats page");
    let (code, _) = http("GET", &fleet.relay_http(0), "/healthz").unwrap();
    assert_eq!(code, 200);

    // The Python ticker's ticks reach a compressed client through HAProxy.
    let mut client = PyClient::connect(&format!("ws://{front}/ws"), true);
    assert!(
        client
            .extensions
            .as_deref()
            .is_some_and(|e| e.contains("permessage-deflate")),
        "{:?}",
        client.extensions
    );
    client.subscribe("ticker_INR");
    let tick = client.recv();
    assert_eq!(tick["channel"], "ticker_INR", "{tick}");
    assert_eq!(tick["event"], "tick", "{tick}");
    assert!(tick["data"]["price"].is_number(), "{tick}");
    drop(client);

    // Every part reports to the pipeline: edges, relays and herald land in Graphite.
    for target in [
        "stats.gauges.pushfleet.edge.edge-1.connections",
        "stats.gauges.pushfleet.relay.relay-1.edges",
        "stats.gauges.pushfleet.herald.*.edges",
    ] {
        eventually(Duration::from_secs(30), target, || {
            let path = format!("/render?target={target}&from=-5min&format=json");
            let (code, body) = http("GET", &fleet.graphite(), &path)?;
            let series: serde_json::Value = serde_json::from_str(&body).ok()?;
            let points = series.get(0)?["datapoints"].as_array()?.clone();
            (code == 200 && points.iter().any(|p| p[0].is_number())).then_some(())
        });
    }

    // Ctrl-C: everything stops, every port is free, no part is left running.
    let pids = fleet.pids();
    assert_eq!(pids.len(), 1 + 1 + 2 + 3 + 1 + 1 + 1, "{pids:?}");
    let status = fleet.interrupt(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        fleet.output()
    );
    assert!(fleet.output().contains("every port is free"));
    for port in fleet.ports() {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
    for (name, pid) in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "{name} (pid {pid}) still running"
        );
    }
}
