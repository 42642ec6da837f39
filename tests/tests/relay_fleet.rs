//! Relays as a tier: sharding over two relays, a relay killed and restarted
//! mid-stream, an edge frozen while a flood goes on, and relays and edges finding
//! each other through a real etcd 3.4 (and carrying on when it dies).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pushfleet_tests::fleet::{publish_cli, publish_cli_background, python_publish};
use pushfleet_tests::process::log_dir;
use pushfleet_tests::{
    eventually, workspace_root, Edge, Etcd, PyClient, RawClient, Relay, RelayPorts,
};
use serde_json::json;

/// Owner relay of each channel according to the Rust CLI (`pushfleet-publish shard`).
fn owners_by_cli(relays: &[String], channels: &[String]) -> HashMap<String, String> {
    let mut args: Vec<&str> = Vec::new();
    for r in relays {
        args.extend(["--relay", r.as_str()]);
    }
    args.push("shard");
    args.extend(channels.iter().map(String::as_str));
    let out = publish_cli(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (c, o) = l.split_once(' ').unwrap();
            (c.to_owned(), o.to_owned())
        })
        .collect()
}

/// The same, according to the Python example's shard function.
fn owners_by_python(relays: &[String], channels: &[String]) -> HashMap<String, String> {
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import pushfleet_publish as pp
relays, channels = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({c: pp.owner(relays, c) for c in channels}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(workspace_root().join("clients").join("python"))
        .arg(serde_json::to_string(relays).unwrap())
        .arg(serde_json::to_string(channels).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn subscribe_all(client: &mut PyClient, channels: &[String]) {
    for c in channels {
        client.subscribe(c);
    }
}

/// Receives `count` messages; per channel, checks `data.n` and `seq` both count up
/// by one from `first`.
fn expect_in_order(client: &PyClient, count: usize, first: &HashMap<String, (u64, u64)>) {
    let mut next = first.clone();
    for _ in 0..count {
        let m = client.recv();
        let channel = m["channel"].as_str().unwrap().to_owned();
        let expected = next
            .get_mut(&channel)
            .unwrap_or_else(|| panic!("unexpected {m}"));
        assert_eq!(
            (m["data"]["n"].as_u64(), m["seq"].as_u64()),
            (Some(expected.0), Some(expected.1)),
            "{m}"
        );
        *expected = (expected.0 + 1, expected.1 + 1);
    }
}

#[test]
fn channels_are_sharded_over_two_relays_and_a_misrouted_publish_is_handed_over_once() {
    let (p1, p2) = (RelayPorts::free(), RelayPorts::free());
    let set = [p1.publish_endpoint(), p2.publish_endpoint()];
    let joined = set.join(",");
    let r1 = Relay::start_on(p1, &["--relays", &joined]);
    let r2 = Relay::start_on(p2, &["--relays", &joined]);
    let edges = [&r1.edge_endpoint()[..], &r2.edge_endpoint()[..]];
    let a = Edge::start(&edges, &[]);
    let b = Edge::start(&edges, &[]);
    let channels: Vec<String> = (0..24).map(|i| format!("shard-{i}")).collect();
    let mut on_a = PyClient::connect(&a.ws_url(), false);
    let mut on_b = PyClient::connect(&b.ws_url(), true);
    subscribe_all(&mut on_a, &channels);
    subscribe_all(&mut on_b, &channels);
    for r in [&r1, &r2] {
        r.wait_stats("every channel held, both edges", |s| {
            s["channels"] == 24 && s["edges"] == 2 && s["relays"] == 2
        });
    }

    // The Rust CLI and the Python example agree on every owner.
    let owners = owners_by_cli(&set, &channels);
    assert_eq!(owners, owners_by_python(&set, &channels));
    let on_r1 = channels.iter().filter(|c| owners[*c] == set[0]).count();
    assert!(
        on_r1 > 0 && on_r1 < 24,
        "24 channels all on one relay: {owners:?}"
    );

    // Shard-aware publishing (the CLI's file mode): each relay receives exactly the
    // channels it owns, and hands nothing over.
    let file = log_dir().join(format!("shard-{}.jsonl", p1.http));
    let mut lines = String::new();
    for n in 1..=5 {
        for c in &channels {
            lines.push_str(&json!({"channel": c, "event": "t", "data": {"n": n}}).to_string());
            lines.push('\n');
        }
    }
    std::fs::write(&file, lines).unwrap();
    let out = publish_cli(&[
        "--relay",
        &set[0],
        "--relay",
        &set[1],
        "file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let start: HashMap<String, (u64, u64)> = channels.iter().map(|c| (c.clone(), (1, 1))).collect();
    expect_in_order(&on_a, 120, &start);
    expect_in_order(&on_b, 120, &start);
    let (s1, s2) = (r1.stats(), r2.stats());
    assert_eq!(
        s1["received"]["zmq"].as_u64(),
        Some(5 * on_r1 as u64),
        "{s1}"
    );
    assert_eq!(
        s2["received"]["zmq"].as_u64(),
        Some(5 * (24 - on_r1) as u64),
        "{s2}"
    );
    assert_eq!(
        (s1["to_owner"].as_u64(), s2["to_owner"].as_u64()),
        (Some(0), Some(0))
    );

    // A publisher that knows only relay 1 still gets every channel numbered by its
    // owner: relay 1 hands relay 2's share over, once.
    let naive: Vec<(String, String, String)> = channels
        .iter()
        .map(|c| (c.clone(), "t".to_owned(), json!({"n": 6}).to_string()))
        .collect();
    python_publish(&[set[0].clone()], &naive);
    let next: HashMap<String, (u64, u64)> = channels.iter().map(|c| (c.clone(), (6, 6))).collect();
    expect_in_order(&on_a, 24, &next);
    expect_in_order(&on_b, 24, &next);
    let s1 = r1.stats();
    let s2 = r2.wait_stats("hand-over counted", |s| {
        s["received"]["from_peer"].as_u64() == Some((24 - on_r1) as u64)
    });
    assert_eq!(s1["to_owner"].as_u64(), Some((24 - on_r1) as u64), "{s1}");
    assert_eq!(s2["to_owner"], 0, "{s2}");
    for e in [&a, &b] {
        let s = e.stats();
        assert_eq!(
            (
                s["upstream"]["lost"].as_u64(),
                s["upstream"]["resets"].as_u64()
            ),
            (Some(0), Some(0)),
            "{s}"
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_relay_killed_mid_stream_loses_only_what_was_in_flight() {
    let ports = RelayPorts::free();
    let relay = Relay::start_on(ports, &[]);
    let edge = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("tick");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    let endpoint = ports.publish_endpoint();
    let _ticker = publish_cli_background(
        &[
            "--relay",
            &endpoint,
            "ticker",
            "--channels",
            "tick",
            "--rate",
            "200",
            "--duration",
            "60s",
        ],
        &format!("ticker-{}", ports.http),
    );
    let mut last_n = 0;
    for _ in 0..20 {
        let m = client.recv();
        last_n = m["data"]["n"].as_u64().unwrap();
    }

    let mut relay = relay;
    relay.service.kill();
    let killed = Instant::now();
    // Whatever was already on its way to the client may still arrive.
    while let Some(m) = client.try_recv(Duration::from_millis(300)) {
        last_n = m["data"]["n"].as_u64().unwrap_or(last_n);
    }
    let relay = Relay::start_on(ports, &[]);
    let first = client
        .try_recv(Duration::from_secs(15))
        .expect("no message after the restart");
    let gap = killed.elapsed();
    let resumed_n = first["data"]["n"].as_u64().unwrap();
    let lost = resumed_n - last_n - 1;
    eprintln!(
        "relay restart: delivery resumed {:.0} ms after the kill; {lost} messages lost (n {last_n} -> {resumed_n})",
        gap.as_secs_f64() * 1000.0
    );
    assert!(
        resumed_n > last_n,
        "messages went backwards: {last_n} then {resumed_n}"
    );
    // The restarted relay numbers from 1 again; the edge notices and says so.
    assert_eq!(first["seq"], 1, "{first}");
    // In order from there on, without further loss.
    let mut n = resumed_n;
    for _ in 0..20 {
        let m = client.recv();
        n += 1;
        assert_eq!(m["data"]["n"].as_u64(), Some(n), "{m}");
    }
    edge.wait_stats("reset seen", |s| {
        s["upstream"]["resets"].as_u64() >= Some(1)
    });
    assert_eq!(
        relay.stats()["channels"],
        1,
        "the edge resubscribed by itself"
    );
    // Messages the ticker queued while no relay listened were delivered, not dropped:
    // the only loss is what the killed relay held, bounded by the kill-to-restart window.
    assert!(lost < 200 * 15, "{lost} lost");
}

#[test]
fn a_frozen_edge_costs_the_relay_bounded_memory_and_the_other_edge_nothing() {
    const FREEZE: Duration = Duration::from_secs(8);
    // 5,000 messages of 2 KB: a 10 MB bound per edge, 1 s of this flood.
    let relay = Relay::start(&["--edge-queue", "5000"]);
    let frozen = Edge::start(&[&relay.edge_endpoint()], &[]);
    let healthy = Edge::start(&[&relay.edge_endpoint()], &[]);
    let subscribe = |edge: &Edge, channel: &str| {
        let mut c = RawClient::connect(&edge.addr(), None);
        c.send_text(&format!(
            r#"{{"method":"subscribe","channel":"{channel}"}}"#
        ));
        assert_eq!(
            c.recv_json(Duration::from_secs(5)).unwrap()["type"],
            "subscribed"
        );
        c
    };
    // Flood subscribers that never read (their edge drops for them; that is not
    // what is measured here), and a reading client on the healthy edge's probe channel.
    let _flood_frozen = subscribe(&frozen, "flood");
    let _probe_frozen = subscribe(&frozen, "probe");
    let _flood_healthy = subscribe(&healthy, "flood");
    let mut probe = PyClient::connect(&healthy.ws_url(), false);
    probe.subscribe("probe");
    relay.wait_stats("both channels on both edges", |s| {
        s["channels"] == 2 && s["edges"] == 2
    });

    let endpoint = relay.publish_endpoint();
    let tag = relay.ports.http;
    // 5,000 msg/s of ~2 KB: 10 MB/s that a relay without a per-edge bound would pile
    // up for the frozen edge (80 MB over the freeze).
    let _flood = publish_cli_background(
        &[
            "--relay",
            &endpoint,
            "ticker",
            "--channels",
            "flood",
            "--rate",
            "5000",
            "--size",
            "2000",
            "--duration",
            "40s",
        ],
        &format!("flood-{tag}"),
    );
    let _probes = publish_cli_background(
        &[
            "--relay",
            &endpoint,
            "ticker",
            "--channels",
            "probe",
            "--rate",
            "20",
            "--duration",
            "40s",
        ],
        &format!("probe-{tag}"),
    );
    healthy.wait_stats("flood flowing", |s| s["msgs_in"].as_u64() > Some(5000));
    // The probe lag with every edge running, for comparison (after dropping what
    // queued up in the client's pipe while nobody read it).
    while probe.try_recv(Duration::from_millis(50)).is_some() {}
    let mut lag_before = 0u64;
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(2) {
        if let Some(m) = probe.try_recv(Duration::from_millis(200)) {
            lag_before =
                lag_before.max(now_ms().saturating_sub(m["data"]["t"].as_u64().unwrap_or(0)));
        }
    }
    let rss_before = relay.service.rss_kib();
    let lost_before = frozen.stats()["upstream"]["lost"].as_u64().unwrap();
    let healthy_lost_before = healthy.stats()["upstream"]["lost"].as_u64().unwrap();

    frozen.signal("STOP");
    let frozen_at = Instant::now();
    let (mut rss_max, mut probes, mut worst_lag) = (rss_before, 0u64, 0u64);
    while frozen_at.elapsed() < FREEZE {
        if let Some(m) = probe.try_recv(Duration::from_millis(200)) {
            if m["channel"] == "probe" {
                probes += 1;
                worst_lag =
                    worst_lag.max(now_ms().saturating_sub(m["data"]["t"].as_u64().unwrap()));
            }
        }
        rss_max = rss_max.max(relay.service.rss_kib());
    }
    let healthy_stats = healthy.stats();
    frozen.signal("CONT");

    let growth_mib = rss_max.saturating_sub(rss_before) / 1024;
    eprintln!(
        "frozen edge: relay RSS {} MiB -> max {} MiB (+{growth_mib} MiB) over {FREEZE:?}; healthy edge: {probes} probes, worst lag {worst_lag} ms (before the freeze: {lag_before} ms)",
        rss_before / 1024,
        rss_max / 1024
    );
    assert!(
        growth_mib < 40,
        "relay grew {growth_mib} MiB while an edge was frozen"
    );
    assert!(
        probes >= 20 * FREEZE.as_secs() / 2,
        "the healthy edge starved: {probes} probes"
    );
    assert!(
        worst_lag < 1000,
        "probe lag {worst_lag} ms on the healthy edge"
    );
    // Nothing lost by the healthy edge while the other was frozen.
    assert_eq!(
        healthy_stats["upstream"]["lost"].as_u64(),
        Some(healthy_lost_before),
        "{healthy_stats}"
    );

    // The frozen edge's backlog was dropped at the relay, and the edge counts it.
    let after = frozen.wait_stats("the gap counted", |s| {
        s["upstream"]["lost"].as_u64().unwrap() > lost_before + 1000
    });
    eprintln!(
        "frozen edge counted {} lost upstream",
        after["upstream"]["lost"]
    );
}

#[test]
fn relays_and_edges_find_each_other_in_etcd_and_carry_on_without_it() {
    let etcd = Etcd::start();
    let e = etcd.endpoint();
    let r1 = Relay::start(&["--etcd", &e, "--lease-ttl", "2s"]);
    let edge = Edge::start(&[], &["--etcd", &e]);
    let channels: Vec<String> = (0..16).map(|i| format!("found-{i}")).collect();
    let mut client = PyClient::connect(&edge.ws_url(), false);
    subscribe_all(&mut client, &channels);
    edge.wait_stats("connected to relay 1", |s| s["zmq_peers_connected"] == 1);
    r1.wait_stats("subscriptions", |s| s["channels"] == 16);

    let mut r2 = Relay::start(&["--etcd", &e, "--lease-ttl", "2s"]);
    edge.wait_stats("connected to both relays", |s| {
        s["zmq_peers_connected"] == 2
    });
    r2.wait_stats("subscriptions on relay 2", |s| s["channels"] == 16);
    r1.wait_stats("relay 1 sees two relays", |s| s["relays"] == 2);

    let publish_all = |n: u64, via: &[&str]| {
        let file = log_dir().join(format!("etcd-{}-{n}.jsonl", r1.ports.http));
        let lines: String = channels
            .iter()
            .map(|c| json!({"channel": c, "event": "t", "data": {"n": n}}).to_string() + "\n")
            .collect();
        std::fs::write(&file, lines).unwrap();
        let mut args = via.to_vec();
        args.extend(["file", file.to_str().unwrap()]);
        let out = publish_cli(&args);
        assert!(out.status.success(), "{out:?}");
    };
    let received = |n: u64| {
        let mut seen: Vec<String> = (0..channels.len())
            .map(|_| {
                let m = client.recv();
                assert_eq!(m["data"]["n"].as_u64(), Some(n), "{m}");
                m["channel"].as_str().unwrap().to_owned()
            })
            .collect();
        seen.sort();
        let mut expected = channels.clone();
        expected.sort();
        assert_eq!(seen, expected);
    };
    publish_all(1, &["--etcd", &e]);
    received(1);
    let (s1, s2) = (r1.stats(), r2.stats());
    let split = (
        s1["received"]["zmq"].as_u64().unwrap(),
        s2["received"]["zmq"].as_u64().unwrap(),
    );
    assert_eq!(split.0 + split.1, 16, "{s1} {s2}");
    assert!(
        split.0 > 0 && split.1 > 0,
        "the etcd-aware publisher used one relay only: {split:?}"
    );

    // A relay that dies leaves etcd when its lease expires; the edge lets go of it.
    r2.service.kill();
    edge.wait_stats("relay 2 dropped", |s| s["zmq_peers_connected"] == 1);
    r1.wait_stats("relay 1 alone", |s| s["relays"] == 1);
    publish_all(2, &["--etcd", &e]);
    received(2);
    assert_eq!(r1.stats()["received"]["zmq"].as_u64(), Some(split.0 + 16));

    // etcd dies: everything already connected keeps working.
    let (client_port, peer_port, data_dir) = etcd.kill();
    publish_all(3, &["--relay", &r1.publish_endpoint()]);
    received(3);
    assert!(pushfleet_tests::get_json(&edge.addr(), "/healthz").is_some());
    let later = eventually(Duration::from_secs(5), "edge still connected", || {
        pushfleet_tests::get_json(&edge.admin_addr(), "/stats")
            .filter(|s| s["zmq_peers_connected"] == 1)
    });
    assert_eq!(later["upstream"]["lost"], 0, "{later}");

    // etcd returns (same address and data): relay 1 registers again by itself, and a
    // publisher that asks etcd finds it.
    let _etcd = Etcd::start_on(client_port, peer_port, Some(data_dir));
    eventually(Duration::from_secs(15), "relay 1 back in etcd", || {
        let out = publish_cli(&["--etcd", &e, "--connect-timeout", "1s", "shard", "x"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains(&r1.publish_endpoint())).then_some(())
    });
    publish_all(4, &["--etcd", &e]);
    received(4);
}

#[test]
fn sigterm_takes_a_relay_out_of_etcd_at_once_and_exits_cleanly() {
    let etcd = Etcd::start();
    let e = etcd.endpoint();
    // A long lease: leaving etcd early must come from the relay itself, not expiry.
    let mut relay = Relay::start(&["--etcd", &e, "--lease-ttl", "30s"]);
    let listed = || {
        let out = publish_cli(&["--etcd", &e, "--connect-timeout", "1s", "shard", "x"]);
        String::from_utf8_lossy(&out.stdout).contains(&relay.publish_endpoint())
    };
    eventually(Duration::from_secs(10), "relay registered", || {
        listed().then_some(())
    });
    relay.service.signal("TERM");
    let status = relay.service.wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // Revoked, not left to expire: a publisher asking etcd no longer finds it.
    let out = publish_cli(&["--etcd", &e, "--connect-timeout", "1s", "shard", "x"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(&relay.publish_endpoint()), "{text}");
    assert!(relay.service.log_text().contains("deregistered from etcd"));
}
