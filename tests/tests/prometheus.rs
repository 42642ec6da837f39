//! `GET /metrics` on the edge's admin listener, the relay's HTTP port and herald's
//! status port, read by the real Prometheus parser (`prometheus_client` from PyPI):
//! every family named and typed as `monitoring/METRICS.md` says, with its labels,
//! and agreeing with `/stats`. The edge's public port has no `/metrics`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pushfleet_tests::fleet::ticker;
use pushfleet_tests::{eventually, http, Edge, Etcd, Herald, RawClient, Relay};
use serde_json::Value;

/// Parses an exposition with `prometheus_client.parser`; family name (as the parser
/// gives it: counters without `_total`) → the family as JSON.
fn parse(text: &str) -> BTreeMap<String, Value> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]
    out.append({"name": f.name, "type": f.type, "samples": samples})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused:\n{text}"
    );
    let families: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    families
        .into_iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f))
        .collect()
}

/// `GET path` as text, asserting 200 and the 0.0.4 content type.
fn scrape(addr: &str, path: &str) -> String {
    let (status, body) = http("GET", addr, path).unwrap();
    assert_eq!(status, 200, "GET {path} on {addr}: {body}");
    body
}

/// Checks that the families are exactly `expected` (name, type, label names of
/// each sample besides `id_label`), and that every sample carries `id_label=id`.
fn check_shape(
    families: &BTreeMap<String, Value>,
    expected: &[(&str, &str, &[&str])],
    id_label: &str,
    id: &str,
) {
    let names: BTreeSet<&str> = families.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, wanted, "family names");
    for (name, kind, labels) in expected {
        let family = &families[*name];
        assert_eq!(family["type"], *kind, "type of {name}");
        let samples = family["samples"].as_array().unwrap();
        for sample in samples {
            let sample_labels = sample["labels"].as_object().unwrap();
            assert_eq!(sample_labels[id_label], id, "{name}: {sample}");
            let mut own: Vec<&str> = sample_labels
                .keys()
                .map(String::as_str)
                .filter(|l| *l != id_label)
                .collect();
            own.sort_unstable();
            assert_eq!(own, *labels, "labels of {name}: {sample}");
            if *kind == "counter" {
                assert_eq!(sample["name"], format!("{name}_total"), "{sample}");
            }
        }
    }
}

/// The single sample of a family whose label `label` is `value` (or the only one).
fn value(families: &BTreeMap<String, Value>, name: &str, label: Option<(&str, &str)>) -> f64 {
    let samples = families[name]["samples"].as_array().unwrap();
    let found: Vec<&Value> = samples
        .iter()
        .filter(|s| label.is_none_or(|(l, v)| s["labels"][l] == v))
        .collect();
    assert_eq!(found.len(), 1, "{name} {label:?}: {samples:?}");
    found[0]["value"].as_f64().unwrap()
}

/// Values of `name` keyed by their label `label`.
fn label_values(families: &BTreeMap<String, Value>, name: &str, label: &str) -> BTreeSet<String> {
    families[name]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["labels"][label].as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

const NONE: &[&str] = &[];
const REASON: &[&str] = &["reason"];

const EDGE_FAMILIES: [(&str, &str, &[&str]); 34] = [
    ("pushfleet_edge_ingress_received", "counter", NONE),
    ("pushfleet_edge_ingress_bytes", "counter", NONE),
    ("pushfleet_edge_ingress_upstream_lost", "counter", NONE),
    ("pushfleet_edge_ingress_upstream_resets", "counter", NONE),
    ("pushfleet_edge_ingress_dropped", "counter", REASON),
    ("pushfleet_edge_hub_filtered", "counter", NONE),
    ("pushfleet_edge_hub_published", "counter", NONE),
    ("pushfleet_edge_hub_worker_queue_full", "counter", NONE),
    ("pushfleet_edge_deflate_messages", "counter", NONE),
    ("pushfleet_edge_deflate_bytes_in", "counter", NONE),
    ("pushfleet_edge_deflate_bytes_out", "counter", NONE),
    ("pushfleet_edge_deliver_enqueued", "counter", NONE),
    ("pushfleet_edge_deliver_delivered", "counter", NONE),
    ("pushfleet_edge_deliver_bytes", "counter", NONE),
    ("pushfleet_edge_deliver_dropped", "counter", REASON),
    ("pushfleet_edge_deliver_slow_disconnects", "counter", NONE),
    ("pushfleet_edge_queue_depth", "gauge", NONE),
    ("pushfleet_edge_connections_accepted", "counter", NONE),
    ("pushfleet_edge_connections_refused", "counter", NONE),
    ("pushfleet_edge_handshake_failures", "counter", NONE),
    ("pushfleet_edge_protocol_closes", "counter", NONE),
    ("pushfleet_edge_heartbeat_timeouts", "counter", NONE),
    ("pushfleet_edge_client_errors", "counter", &["code"]),
    ("pushfleet_edge_connections", "gauge", NONE),
    ("pushfleet_edge_connections_compressed", "gauge", NONE),
    ("pushfleet_edge_subscriptions", "gauge", NONE),
    ("pushfleet_edge_channels", "gauge", NONE),
    ("pushfleet_edge_zmq_peers_connected", "gauge", NONE),
    ("pushfleet_edge_latency_p50_seconds", "gauge", NONE),
    ("pushfleet_edge_latency_p99_seconds", "gauge", NONE),
    ("pushfleet_edge_latency_max_seconds", "gauge", NONE),
    ("pushfleet_edge_latency_window_deliveries", "gauge", NONE),
    ("pushfleet_edge_draining", "gauge", NONE),
    ("pushfleet_edge_uptime_seconds", "gauge", NONE),
];

const RELAY_FAMILIES: [(&str, &str, &[&str]); 9] = [
    ("pushfleet_relay_received", "counter", &["source"]),
    ("pushfleet_relay_forwarded", "counter", NONE),
    ("pushfleet_relay_to_owner", "counter", NONE),
    ("pushfleet_relay_no_subscribers", "counter", NONE),
    ("pushfleet_relay_dropped", "counter", REASON),
    ("pushfleet_relay_http_rejected", "counter", NONE),
    ("pushfleet_relay_channels", "gauge", NONE),
    ("pushfleet_relay_edges", "gauge", NONE),
    ("pushfleet_relay_relays", "gauge", NONE),
];

const HERALD_FAMILIES: [(&str, &str, &[&str]); 10] = [
    ("pushfleet_herald_weight_percent", "gauge", &["edge"]),
    ("pushfleet_herald_load", "gauge", &["edge"]),
    ("pushfleet_herald_edges", "gauge", NONE),
    ("pushfleet_herald_leader", "gauge", NONE),
    ("pushfleet_herald_holding", "gauge", NONE),
    ("pushfleet_herald_decisions", "counter", NONE),
    ("pushfleet_herald_agent_checks", "counter", NONE),
    ("pushfleet_herald_haproxy_pushes", "counter", NONE),
    ("pushfleet_herald_haproxy_push_errors", "counter", NONE),
    ("pushfleet_herald_scale_steps", "counter", &["step"]),
];

const PUBLISH_DROP_REASONS: [&str; 7] = [
    "frames",
    "utf8",
    "channel",
    "event",
    "data",
    "seq",
    "too_large",
];

#[test]
fn metrics_endpoints_parse_as_prometheus_and_agree_with_stats() {
    let etcd = Etcd::start();
    let relay = Relay::start(&["--relay-id", "r1"]);
    let edge = Edge::reporting(&relay.edge_endpoint(), &etcd.endpoint(), "e1", &[]);
    let _subscriber = RawClient::subscribed(&edge.addr(), "prom");
    relay.wait_stats("prom held", |s| s["channels"] == 1);
    let _ticker = ticker(&relay.publish_endpoint(), "prom", 200, "prom-ticker");
    edge.wait_stats("deliveries", |s| s["msgs_out"].as_u64() > Some(20));
    let herald = Herald::start(&etcd.endpoint(), &["--interval", "300ms"]);
    eventually(Duration::from_secs(10), "herald sees e1", || {
        herald.status()["views"].get("e1").map(|_| ())
    });

    check_edge(&edge);
    check_relay(&relay);
    check_herald(&herald);
}

fn check_edge(edge: &Edge) {
    let families = parse(&scrape(&edge.admin_addr(), "/metrics"));
    let stats = edge.stats();
    check_shape(&families, &EDGE_FAMILIES, "edge", "e1");
    let mut ingress_reasons = set(&PUBLISH_DROP_REASONS);
    ingress_reasons.insert("ingress_full".to_owned());
    assert_eq!(
        label_values(&families, "pushfleet_edge_ingress_dropped", "reason"),
        ingress_reasons
    );
    assert_eq!(
        label_values(&families, "pushfleet_edge_deliver_dropped", "reason"),
        set(&["slow_client", "closed"])
    );
    let codes: Vec<&str> = stats["client_errors"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        label_values(&families, "pushfleet_edge_client_errors", "code"),
        set(&codes)
    );
    for (name, field) in [
        ("pushfleet_edge_ingress_received", "msgs_in"),
        ("pushfleet_edge_deliver_delivered", "msgs_out"),
    ] {
        let scraped = value(&families, name, None);
        let now = stats[field].as_f64().unwrap();
        assert!(
            scraped > 0.0 && scraped <= now,
            "{name} {scraped} vs /stats {field} {now}"
        );
    }
    assert_eq!(
        value(&families, "pushfleet_edge_connections", None),
        stats["connections"].as_f64().unwrap()
    );
    assert_eq!(value(&families, "pushfleet_edge_connections", None), 1.0);
    assert_eq!(value(&families, "pushfleet_edge_channels", None), 1.0);
    let p99 = value(&families, "pushfleet_edge_latency_p99_seconds", None);
    assert!((0.0..1.0).contains(&p99), "p99 in seconds: {p99}");

    let (status, _) = http("GET", &edge.addr(), "/metrics").unwrap();
    assert_eq!(status, 404, "the public listener has no /metrics");
}

fn check_relay(relay: &Relay) {
    let families = parse(&scrape(&relay.http_addr(), "/metrics"));
    let stats = relay.stats();
    check_shape(&families, &RELAY_FAMILIES, "relay", "r1");
    assert_eq!(
        label_values(&families, "pushfleet_relay_received", "source"),
        set(&["zmq", "from_peer", "http"])
    );
    let mut reasons = set(&PUBLISH_DROP_REASONS);
    reasons.insert("owner_unavailable".to_owned());
    assert_eq!(
        label_values(&families, "pushfleet_relay_dropped", "reason"),
        reasons
    );
    let forwarded = value(&families, "pushfleet_relay_forwarded", None);
    let now = stats["forwarded"].as_f64().unwrap();
    assert!(
        forwarded > 0.0 && forwarded <= now,
        "forwarded {forwarded} vs {now}"
    );
    let zmq = value(
        &families,
        "pushfleet_relay_received",
        Some(("source", "zmq")),
    );
    assert!(zmq > 0.0 && zmq <= stats["received"]["zmq"].as_f64().unwrap());
    assert_eq!(value(&families, "pushfleet_relay_edges", None), 1.0);
    assert_eq!(value(&families, "pushfleet_relay_channels", None), 1.0);
}

fn check_herald(herald: &Herald) {
    let text = scrape(&herald.http_addr(), "/metrics");
    let families = parse(&text);
    let status = herald.status();
    let id = status["herald_id"].as_str().unwrap();
    // No scaling here: the step family has HELP and TYPE but no samples.
    check_shape(&families, &HERALD_FAMILIES, "herald", id);
    assert_eq!(
        label_values(&families, "pushfleet_herald_weight_percent", "edge"),
        set(&["e1"])
    );
    // Weights move with load between two reads: only the range is certain.
    let weight = value(&families, "pushfleet_herald_weight_percent", None);
    assert!((0.0..=100.0).contains(&weight), "weight {weight}");
    let edges = status["views"].as_object().unwrap().len() as f64;
    assert_eq!(value(&families, "pushfleet_herald_edges", None), edges);
    let decisions = value(&families, "pushfleet_herald_decisions", None);
    assert!(decisions >= 1.0, "e1's first weight is a decision");
    let checks = value(&families, "pushfleet_herald_agent_checks", None);
    assert!(checks <= status["agent_checks"].as_f64().unwrap());
}
