//! herald driving a real HAProxy 2.6 (Debian) over its runtime API and agent
//! checks: edges fill server-template slots without a reload, a hot edge's weight
//! drops and new connections through HAProxy go mostly elsewhere, a killed edge
//! leaves rotation within its lease TTL, a new edge joins, and a restarted HAProxy
//! gets its slots back from the leader.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::fleet::ticker;
use pushfleet_tests::haproxy::Haproxy;
use pushfleet_tests::{eventually, free_port, Edge, Etcd, Herald, RawClient, Relay};

fn edge(relay: &Relay, etcd: &Etcd, id: &str) -> Edge {
    Edge::reporting(&relay.edge_endpoint(), &etcd.endpoint(), id, &[])
}

fn subscriber(addr: &str, channel: &str) -> RawClient {
    RawClient::subscribed(addr, channel)
}

/// `show servers state edges` as (slot, address:port, running, maintenance).
fn servers(haproxy: &Haproxy) -> Vec<(String, String, bool, bool)> {
    let text = haproxy
        .command("show servers state edges")
        .unwrap_or_default();
    let mut lines = text.lines().skip(1);
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(' ')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (name, addr, port, op, admin) = (
        col("srv_name"),
        col("srv_addr"),
        col("srv_port"),
        col("srv_op_state"),
        col("srv_admin_state"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let admin: u32 = f[admin].parse().unwrap_or(0);
            (
                f[name].to_owned(),
                format!("{}:{}", f[addr], f[port]),
                f[op] == "2",
                admin & 0x23 != 0,
            )
        })
        .collect()
}

fn slot_of(haproxy: &Haproxy, edge: &Edge) -> Option<String> {
    servers(haproxy)
        .into_iter()
        .find(|(_, addr, running, maint)| *addr == edge.addr() && *running && !*maint)
        .map(|(slot, ..)| slot)
}

fn weight(haproxy: &Haproxy, slot: &str) -> u32 {
    let reply = haproxy
        .command(&format!("get weight edges/{slot}"))
        .unwrap_or_default();
    reply
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(0)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn connections(edge: &Edge) -> u64 {
    edge.stats()["connections"].as_u64().unwrap()
}

#[test]
fn herald_fills_haproxy_moves_weights_off_a_hot_edge_and_follows_the_fleet() {
    let etcd = Etcd::start();
    let relay = Relay::start(&[]);
    let agent_port = free_port();
    let mut haproxy = Haproxy::start(4, agent_port);
    let runtime = haproxy.runtime_addr();
    let flags = |id: &str| -> Vec<String> {
        [
            "--herald-id",
            id,
            "--interval",
            "300ms",
            "--stale-after",
            "3s",
            "--capacity-msgs-out",
            "500",
            "--haproxy-runtime",
            runtime.as_str(),
            "--haproxy-slots",
            "4",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let mut herald = Herald::start_on(&etcd.endpoint(), agent_port, &strs(&flags("h1")));
    eventually(Duration::from_secs(10), "h1 leads", || {
        (herald.status()["leader"] == true).then_some(())
    });
    // A second instance stands by (its agent port is not the one HAProxy asks).
    let standby = Herald::start(&etcd.endpoint(), &strs(&flags("h2")));
    let mut edges: Vec<Edge> = ["hot", "cool-1", "cool-2"]
        .iter()
        .map(|id| edge(&relay, &etcd, id))
        .collect();
    // Every edge enters HAProxy without a reload, and passes its health check.
    let slots: Vec<String> = edges
        .iter()
        .map(|e| {
            eventually(Duration::from_secs(15), "edge placed and up", || {
                slot_of(&haproxy, e)
            })
        })
        .collect();

    // Same connection count everywhere (2 each), but the hot edge's two subscribers
    // hold a busy channel: connection count is not work.
    let _direct: Vec<RawClient> = edges
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            let channel = if i == 0 { "busy" } else { "quiet" };
            [
                subscriber(&e.addr(), channel),
                subscriber(&e.addr(), channel),
            ]
        })
        .collect();
    relay.wait_stats("channels held", |s| s["channels"] == 2);
    let _ticker = ticker(
        &relay.publish_endpoint(),
        "busy",
        400,
        &format!("haproxy-ticker-{}", relay.ports.http),
    );
    eventually(
        Duration::from_secs(15),
        "the hot edge's HAProxy weight drops",
        || {
            let (hot, cool) = (weight(&haproxy, &slots[0]), weight(&haproxy, &slots[1]));
            (hot < 50 && cool > 100).then_some(())
        },
    );
    assert!(herald.status()["pushes"].as_u64().unwrap() > 0);

    // New connections through HAProxy go mostly to the cool edges.
    let before: Vec<u64> = edges.iter().map(connections).collect();
    let front = format!("127.0.0.1:{}", haproxy.ws_port);
    let _through: Vec<RawClient> = (0..30).map(|_| subscriber(&front, "quiet")).collect();
    let gained: Vec<u64> = edges
        .iter()
        .zip(&before)
        .map(|(e, b)| connections(e) - b)
        .collect();
    eprintln!(
        "30 new connections through HAProxy: hot {}, cool-1 {}, cool-2 {}",
        gained[0], gained[1], gained[2]
    );
    assert_eq!(gained.iter().sum::<u64>(), 30);
    assert!(gained[0] <= 6, "the hot edge took {} of 30", gained[0]);

    // An edge killed without a goodbye leaves rotation once its lease expires (2 s).
    edges[2].signal("KILL");
    let dead_slot = slots[2].clone();
    eventually(
        Duration::from_secs(10),
        "the dead edge's slot in maintenance",
        || {
            servers(&haproxy)
                .into_iter()
                .find(|(s, _, _, maint)| *s == dead_slot && *maint)
                .map(|_| ())
        },
    );
    let agent_checks = herald.status()["agent_checks"].as_u64().unwrap();
    assert!(agent_checks > 0, "HAProxy's agent checks reach herald");
    let before: Vec<_> = servers(&haproxy)
        .into_iter()
        .filter(|(.., maint)| !maint)
        .collect();

    // The leader dies; the standby takes over, adopts HAProxy's slots as they are
    // (nothing moves), and places the next edge itself.
    herald.service.kill();
    eventually(Duration::from_secs(15), "h2 leads", || {
        (standby.status()["leader"] == true).then_some(())
    });
    eventually(Duration::from_secs(5), "h2 adopted the slots", || {
        (standby.status()["slots"].as_object().map(|m| m.len()) == Some(before.len())).then_some(())
    });
    let after: Vec<_> = servers(&haproxy)
        .into_iter()
        .filter(|(.., maint)| !maint)
        .collect();
    assert_eq!(
        before.iter().map(|(s, a, ..)| (s, a)).collect::<Vec<_>>(),
        after.iter().map(|(s, a, ..)| (s, a)).collect::<Vec<_>>(),
        "a leader change moved slots"
    );
    // A new edge joins without a reload.
    edges.push(edge(&relay, &etcd, "late"));
    let late_slot = eventually(
        Duration::from_secs(15),
        "the new edge placed and up",
        || slot_of(&haproxy, &edges[3]),
    );

    // HAProxy restarts (its runtime changes are gone: every slot back in
    // maintenance): the leader notices on its next verification and fills the
    // same slots again.
    haproxy.restart();
    let live = [(0, slots[0].clone()), (1, slots[1].clone()), (3, late_slot)];
    for (i, slot) in &live {
        let again = eventually(
            Duration::from_secs(15),
            "the restarted HAProxy refilled",
            || slot_of(&haproxy, &edges[*i]),
        );
        assert_eq!(&again, slot, "refilled in the same slot");
    }
}
