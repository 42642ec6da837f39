//! Edges keep their real load in etcd under a lease, as herald reads it: refreshed
//! every interval, draining reported at once, gone when the edge dies, back after an
//! etcd outage that never stopped the edge serving.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::{eventually, get_json, Edge, Etcd, PyClient, PyPublisher};
use serde_json::Value;

const KEY: &str = "/pushfleet/edges/e1";

fn report(etcd: &Etcd) -> Option<Value> {
    etcd.get_prefix(KEY)
        .into_iter()
        .find(|(k, _)| k == KEY)
        .and_then(|(_, v)| serde_json::from_str(&v).ok())
}

#[test]
fn an_edge_reports_its_load_and_state_and_leaves_when_it_dies() {
    let etcd = Etcd::start();
    let mut publisher = PyPublisher::start();
    let mut edge = Edge::reporting(
        &publisher.endpoint,
        &etcd.endpoint(),
        "e1",
        &["--drain-spread", "1s", "--drain-timeout", "20s"],
    );
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("load");
    publisher.wait_for("subscribe", "load");
    for i in 0..50 {
        publisher.publish("load", "e", &i.to_string());
    }
    for _ in 0..50 {
        client.recv();
    }
    let first = eventually(Duration::from_secs(10), "a report with the client", || {
        report(&etcd).filter(|r| r["connections"] == 1 && r["subscriptions"] == 1)
    });
    assert_eq!(first["id"], "e1");
    assert_eq!(first["address"], edge.addr());
    assert_eq!(first["state"], "ready");
    assert_eq!(first["channels"], 1);
    assert!(first["rss_bytes"].as_u64().unwrap() > 1 << 20, "{first}");
    assert!(first["cpus"].as_u64().unwrap() >= 1, "{first}");
    // Refreshed every interval.
    let t0 = first["at_ms"].as_u64().unwrap();
    eventually(Duration::from_secs(5), "a newer report", || {
        report(&etcd).filter(|r| r["at_ms"].as_u64() > Some(t0))
    });
    let stats = edge.stats();
    assert_eq!(stats["msgs_in"], 50);

    // Draining shows at once (well before the next interval matters).
    let (status, _) = pushfleet_tests::http("POST", &edge.admin_addr(), "/drain").unwrap();
    assert_eq!(status, 202);
    eventually(Duration::from_secs(3), "draining reported", || {
        report(&etcd).filter(|r| r["state"] == "draining")
    });

    // SIGKILL: no goodbye, the lease expires (TTL 2 s) and the record is gone.
    edge.signal("KILL");
    edge.wait_exit(Duration::from_secs(5)).unwrap();
    eventually(Duration::from_secs(8), "the record expired", || {
        report(&etcd).is_none().then_some(())
    });
}

#[test]
fn an_etcd_outage_never_stops_an_edge_and_it_registers_again() {
    let etcd = Etcd::start();
    let mut publisher = PyPublisher::start();
    let edge = Edge::reporting(&publisher.endpoint, &etcd.endpoint(), "e1", &[]);
    eventually(Duration::from_secs(10), "registered", || report(&etcd));
    let (client_port, peer_port, data_dir) = etcd.kill();

    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("still");
    publisher.wait_for("subscribe", "still");
    publisher.publish("still", "e", "1");
    assert_eq!(client.recv()["data"], 1);
    assert!(get_json(&edge.addr(), "/healthz").is_some());

    let etcd = Etcd::start_on(client_port, peer_port, Some(data_dir));
    let back = eventually(Duration::from_secs(15), "registered again", || {
        report(&etcd).filter(|r| r["connections"] == 1)
    });
    assert_eq!(back["state"], "ready");
}

#[test]
fn a_drain_order_in_etcd_drains_the_edge_which_then_leaves() {
    let etcd = Etcd::start();
    let publisher = PyPublisher::start();
    let mut edge = Edge::reporting(
        &publisher.endpoint,
        &etcd.endpoint(),
        "e1",
        &["--drain-spread", "500ms", "--drain-timeout", "5s"],
    );
    let client = PyClient::connect(&edge.ws_url(), false);
    eventually(Duration::from_secs(10), "registered", || report(&etcd));
    etcd.put("/pushfleet/drain/e1", "scale-in: fewest connections");
    // The client is told to reconnect elsewhere (1012), the edge exits cleanly and
    // takes its record with it.
    assert_eq!(client.closed(Duration::from_secs(5)), 1012);
    let status = edge
        .wait_exit(Duration::from_secs(10))
        .expect("exit after draining");
    assert!(status.success(), "{status:?}");
    assert!(edge.log_text().contains("drain ordered through etcd"));
    eventually(Duration::from_secs(3), "the record gone at once", || {
        report(&etcd).is_none().then_some(())
    });
}
