//! herald against real processes: etcd 3.4, a relay, edges reporting their load, a
//! publisher making one edge hot. Weights follow load; agent checks answer in
//! HAProxy 2.6's grammar; one instance leads and another takes over.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::fleet::ticker;
use pushfleet_tests::{eventually, Edge, Etcd, Herald, RawClient, Relay};
use serde_json::Value;

fn edge(relay: &Relay, etcd: &Etcd, id: &str) -> Edge {
    Edge::reporting(&relay.edge_endpoint(), &etcd.endpoint(), id, &[])
}

/// A subscriber that never reads: deliveries pile into its socket buffer, which is
/// work the edge does (and reports) all the same.
fn subscriber(edge: &Edge, channel: &str) -> RawClient {
    RawClient::subscribed(&edge.addr(), channel)
}

fn percent(status: &Value, id: &str) -> u64 {
    status["views"][id]["percent"].as_u64().unwrap_or(0)
}

#[test]
fn a_hot_edge_gets_a_lower_weight_and_agent_checks_say_so() {
    let etcd = Etcd::start();
    let relay = Relay::start(&[]);
    let edges: Vec<Edge> = ["hot", "cool-1", "cool-2"]
        .iter()
        .map(|id| edge(&relay, &etcd, id))
        .collect();
    // 20 subscribers of the busy channel on "hot", one on each cool edge.
    let _hot: Vec<RawClient> = (0..20).map(|_| subscriber(&edges[0], "busy")).collect();
    let _cool: Vec<RawClient> = edges[1..].iter().map(|e| subscriber(e, "busy")).collect();
    relay.wait_stats("busy held", |s| s["channels"] == 1 && s["edges"] == 3);
    let herald = Herald::start(
        &etcd.endpoint(),
        &[
            "--interval",
            "300ms",
            "--stale-after",
            "3s",
            "--capacity-msgs-out",
            "1000",
        ],
    );
    eventually(
        Duration::from_secs(10),
        "three edges seen and ready",
        || {
            let s = herald.status();
            (s["views"].as_object().map(|v| v.len()) == Some(3)
                && ["hot", "cool-1", "cool-2"]
                    .iter()
                    .all(|id| s["views"][id]["verdict"] == "ready"))
            .then_some(())
        },
    );
    // Idle edges weigh about the same (their idle CPU differs a little).
    let reply = herald.agent_check("hot");
    let idle: u64 = reply.trim_end_matches("% ready\n").parse().unwrap();
    assert!((80..=125).contains(&idle), "{reply}");

    let _ticker = ticker(
        &relay.publish_endpoint(),
        "busy",
        100,
        &format!("herald-ticker-{}", relay.ports.http),
    );
    let status = eventually(
        Duration::from_secs(10),
        "the hot edge's weight drops",
        || {
            let s = herald.status();
            (percent(&s, "hot") < 60 && percent(&s, "cool-1") > 100).then_some(s)
        },
    );
    let hot = percent(&status, "hot");
    let reply = herald.agent_check("hot");
    let reply_percent: u64 = reply.trim_end_matches("% ready\n").parse().unwrap_or(0);
    assert!(
        reply.ends_with("% ready\n") && reply_percent < 70,
        "{reply} (status said {hot}%)"
    );
    assert!(herald.agent_check("cool-1").ends_with("% ready\n"));
    assert_eq!(
        herald.agent_check("nobody"),
        "up\n",
        "unknown names leave weights alone"
    );
    assert!(
        status["recent"]
            .as_array()
            .is_some_and(|r| r.iter().any(|d| d["id"] == "hot")),
        "the decision is logged: {status}"
    );
    assert_eq!(status["leader"], true);

    // Draining shows as `drain` at once.
    let (code, _) = pushfleet_tests::http("POST", &edges[2].admin_addr(), "/drain").unwrap();
    assert_eq!(code, 202);
    eventually(Duration::from_secs(5), "cool-2 draining", || {
        (herald.agent_check("cool-2") == "drain\n").then_some(())
    });
    // The live page is served.
    let (code, page) = pushfleet_tests::http("GET", &herald.http_addr(), "/").unwrap();
    assert!(code == 200 && page.contains("<title>herald</title>"));
}

#[test]
fn herald_holds_weights_without_etcd_and_a_follower_takes_over_from_a_dead_leader() {
    let etcd = Etcd::start();
    let relay = Relay::start(&[]);
    let _a = edge(&relay, &etcd, "a");
    let flags = ["--interval", "300ms", "--stale-after", "2s"];
    let mut first = Herald::start(
        &etcd.endpoint(),
        &[&flags[..], &["--herald-id", "h1"]].concat(),
    );
    eventually(Duration::from_secs(10), "h1 leads", || {
        (first.status()["leader"] == true).then_some(())
    });
    let second = Herald::start(
        &etcd.endpoint(),
        &[&flags[..], &["--herald-id", "h2"]].concat(),
    );
    eventually(Duration::from_secs(5), "h2 sees edge a", || {
        (second.status()["views"]["a"]["verdict"] == "ready").then_some(())
    });
    assert_eq!(second.status()["leader"], false);
    assert_eq!(
        second.agent_check("a"),
        "100% ready\n",
        "followers answer agent checks too"
    );

    // The leader dies: its lease expires and h2 takes over.
    first.service.kill();
    eventually(Duration::from_secs(15), "h2 leads", || {
        (second.status()["leader"] == true).then_some(())
    });

    // etcd dies: h2 keeps the last weights and says so.
    let (client_port, peer_port, data_dir) = etcd.kill();
    let held = eventually(Duration::from_secs(10), "holding", || {
        let s = second.status();
        (s["holding"] == true).then_some(s)
    });
    assert_eq!(held["views"]["a"]["verdict"], "ready", "{held}");
    assert_eq!(second.agent_check("a"), "100% ready\n");

    // etcd returns: reports flow again, herald stops holding and leads again.
    let _etcd = Etcd::start_on(client_port, peer_port, Some(data_dir));
    eventually(Duration::from_secs(20), "recovered", || {
        let s = second.status();
        (s["holding"] == false && s["leader"] == true && s["views"]["a"]["verdict"] == "ready")
            .then_some(())
    });
}
