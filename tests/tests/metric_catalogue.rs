//! One metric catalogue per binary, held against `monitoring/METRICS.md` and against
//! what the running binaries export.
//!
//! - Every row of METRICS.md's edge, relay and herald tables is the matching row of
//!   that binary's catalogue, in order: name (with label values), kind, unit, `/stats`
//!   field, Prometheus family and StatsD type.
//! - A real edge, relay and herald export, on `/stats`, `GET /metrics` and StatsD,
//!   exactly the names their catalogue gives each sink: nothing the catalogue lacks,
//!   and (StatsD, where only changes are sent) every gauge and nothing unknown.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use pushfleet_fleet::catalogue::{names, Kind, Metric, Sink};
use pushfleet_tests::fleet::python_publish;
use pushfleet_tests::{get_json, http, workspace_root, Edge, Etcd, Herald, PyClient, Relay};
use serde_json::Value;

use herald::metrics::CATALOGUE as HERALD;
use pushfleet_server::edge::telemetry::catalogue::{CATALOGUE as EDGE, STATS_IDENTITY as EDGE_ID};
use pushfleet_server::relay::metrics::{CATALOGUE as RELAY, STATS_IDENTITY as RELAY_ID};

/// A catalogue row as METRICS.md writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    name: String,
    kind: String,
    unit: String,
    stats: String,
    prometheus: String,
    statsd: String,
}

const NONE: &str = "—";

/// The rows of the table under `## <section>`.
fn doc_rows(section: &str) -> Vec<Row> {
    let text = std::fs::read_to_string(workspace_root().join("monitoring/METRICS.md")).unwrap();
    let start = text
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("no section {section}"));
    let body = &text[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let cell = |c: &str| c.trim().trim_matches('`').to_owned();
    body.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
            assert!(cells.len() >= 7, "a row of 7 cells: {line}");
            Row {
                name: cell(cells[0]),
                kind: cell(cells[1]),
                unit: cell(cells[2]),
                stats: cell(cells[3]),
                prometheus: cell(cells[4]),
                statsd: cell(cells[5]),
            }
        })
        .collect()
}

/// The same rows, written from a catalogue.
fn catalogue_rows<S>(catalogue: &[Metric<S>]) -> Vec<Row> {
    catalogue
        .iter()
        .map(|m| {
            let (name_tail, field_tail, prom_label) = match m.label {
                Some(l) if l.values.is_empty() => (
                    format!(".<{}>", l.name),
                    String::new(),
                    format!("{{{}}}", l.name),
                ),
                Some(l) => (
                    format!(".{{{}}}", l.values.join(",")),
                    format!(".<{}>", l.name),
                    format!("{{{}}}", l.name),
                ),
                None => (String::new(), String::new(), String::new()),
            };
            Row {
                name: format!("{}{name_tail}", m.name),
                kind: m.kind.as_str().to_owned(),
                unit: m.unit.to_owned(),
                stats: m
                    .stats
                    .map_or(NONE.to_owned(), |p| format!("{p}{field_tail}")),
                prometheus: if m.prometheus {
                    format!("{}{prom_label}", m.prometheus_name())
                } else {
                    NONE.to_owned()
                },
                statsd: match (m.statsd, m.kind) {
                    (false, _) => NONE,
                    (true, Kind::Counter) => "c",
                    (true, Kind::Gauge) => "g",
                    (true, Kind::Timer) => "ms",
                }
                .to_owned(),
            }
        })
        .collect()
}

fn assert_rows_match(section: &str, code: Vec<Row>) {
    let doc = doc_rows(section);
    for (i, (d, c)) in doc.iter().zip(&code).enumerate() {
        assert_eq!(
            d,
            c,
            "METRICS.md {section}, row {}: doc vs catalogue",
            i + 1
        );
    }
    assert_eq!(
        doc.len(),
        code.len(),
        "METRICS.md {section} has {} rows, the catalogue {}",
        doc.len(),
        code.len()
    );
}

#[test]
fn metrics_md_is_the_edge_catalogue() {
    assert_rows_match("Edge", catalogue_rows(EDGE));
}

#[test]
fn metrics_md_is_the_relay_catalogue() {
    assert_rows_match("Relay", catalogue_rows(RELAY));
}

#[test]
fn metrics_md_is_the_herald_catalogue() {
    assert_rows_match("herald", catalogue_rows(HERALD));
}

/// Every leaf of a JSON object, as dotted paths.
fn leaves(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The /stats fields a catalogue promises, plus the identity fields.
fn expected_stats<S>(catalogue: &[Metric<S>], identity: &[&str]) -> BTreeSet<String> {
    names(catalogue, Sink::Stats)
        .into_iter()
        .map(|(n, _)| n)
        .chain(identity.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// (family, type) of every `# TYPE` line.
fn families(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

fn expected_families<S>(catalogue: &[Metric<S>], prefix: &str) -> BTreeSet<(String, String)> {
    names(catalogue, Sink::Prometheus)
        .into_iter()
        .map(|(n, k)| (format!("{prefix}_{n}"), k.as_str().to_owned()))
        .collect()
}

/// StatsD lines received for `duration`.
fn statsd_lines(socket: &UdpSocket, duration: Duration) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut lines = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines
}

/// Checks StatsD `lines` sent under `prefix`: each is a catalogue name of the right
/// type (a `<label>` part matches any one node), and every gauge was sent.
fn check_statsd<S>(catalogue: &[Metric<S>], prefix: &str, lines: &[String]) {
    let wanted = names(catalogue, Sink::Statsd);
    let type_of = |k: Kind| match k {
        Kind::Counter => "c",
        Kind::Gauge => "g",
        Kind::Timer => "ms",
    };
    let matches = |pattern: &str, name: &str| match pattern.find(".<") {
        Some(i) => name
            .strip_prefix(&pattern[..=i])
            .is_some_and(|node| !node.is_empty() && !node.contains('.')),
        None => pattern == name,
    };
    let mut seen = BTreeSet::new();
    for line in lines {
        let rest = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{line} is not under {prefix}"));
        let (name, value) = rest.split_once(':').unwrap();
        let kind = value.split('|').nth(1).unwrap();
        let row = wanted
            .iter()
            .find(|(pattern, _)| matches(pattern, name))
            .unwrap_or_else(|| panic!("StatsD sent {name}, which the catalogue lacks"));
        assert_eq!(kind, type_of(row.1), "{line}: type");
        seen.insert(row.0.clone());
    }
    for (name, kind) in &wanted {
        if *kind == Kind::Gauge {
            assert!(seen.contains(name), "gauge {name} never sent: {lines:#?}");
        }
    }
}

#[test]
fn edge_and_relay_export_exactly_their_catalogues() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = statsd.local_addr().unwrap().to_string();
    let relay = Relay::start(&["--statsd", &addr, "--relay-id", "r1"]);
    let edge = Edge::start(
        &[&relay.edge_endpoint()],
        &["--statsd", &addr, "--edge-id", "e1"],
    );
    let mut client = PyClient::connect(&edge.ws_url(), true);
    client.subscribe("m");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    let message = |c: &str, d: &str| (c.to_owned(), "e".to_owned(), d.to_owned());
    python_publish(
        &[relay.publish_endpoint()],
        &[message("m", "1"), message("nobody", "3")],
    );
    let refused = pushfleet_tests::fleet::http_body("POST", &relay.http_addr(), "/publish", "{bad");
    assert_eq!(refused.map(|(status, _)| status), Some(400));
    client.recv();
    let lines = statsd_lines(&statsd, Duration::from_millis(2500));

    let stats = edge.stats();
    let mut got = BTreeSet::new();
    leaves(&stats, "", &mut got);
    assert_eq!(got, expected_stats(EDGE, &EDGE_ID), "edge /stats fields");
    let (_, text) = http("GET", &edge.admin_addr(), "/metrics").unwrap();
    assert_eq!(
        families(&text),
        expected_families(EDGE, "pushfleet_edge"),
        "edge /metrics families"
    );
    let edge_lines: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("pushfleet.edge."))
        .cloned()
        .collect();
    check_statsd(EDGE, "pushfleet.edge.e1.", &edge_lines);

    let mut got = BTreeSet::new();
    leaves(&relay.stats(), "", &mut got);
    assert_eq!(got, expected_stats(RELAY, &RELAY_ID), "relay /stats fields");
    let (_, text) = http("GET", &relay.http_addr(), "/metrics").unwrap();
    assert_eq!(
        families(&text),
        expected_families(RELAY, "pushfleet_relay"),
        "relay /metrics families"
    );
    let relay_lines: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("pushfleet.relay."))
        .cloned()
        .collect();
    check_statsd(RELAY, "pushfleet.relay.r1.", &relay_lines);
    assert!(
        relay_lines
            .iter()
            .any(|l| l == "pushfleet.relay.r1.http.rejected:1|c"),
        "the refused request was counted: {relay_lines:#?}"
    );
}

#[test]
fn herald_exports_exactly_its_catalogue() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = statsd.local_addr().unwrap().to_string();
    let etcd = Etcd::start();
    let relay = Relay::start(&[]);
    let _edge = Edge::reporting(&relay.edge_endpoint(), &etcd.endpoint(), "e1", &[]);
    let herald = Herald::start(
        &etcd.endpoint(),
        &[
            "--statsd",
            &addr,
            "--herald-id",
            "h1",
            "--interval",
            "300ms",
        ],
    );
    pushfleet_tests::eventually(Duration::from_secs(10), "herald sees e1", || {
        get_json(&herald.http_addr(), "/status").filter(|s| s["views"].get("e1").is_some())
    });
    let lines = statsd_lines(&statsd, Duration::from_millis(1500));
    check_statsd(HERALD, "pushfleet.herald.h1.", &lines);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pushfleet.herald.h1.weight.e1:")),
        "per-edge gauges are sent: {lines:#?}"
    );
    let (_, text) = http("GET", &herald.http_addr(), "/metrics").unwrap();
    assert_eq!(
        families(&text),
        expected_families(HERALD, "pushfleet_herald"),
        "herald /metrics families"
    );
}
