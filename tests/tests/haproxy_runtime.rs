//! herald's HAProxy runtime API client against a real HAProxy 2.6 running the
//! repository's `haproxy/haproxy.cfg`: an empty server-template slot is filled with
//! a real edge, WebSocket clients reach it through HAProxy, and weight, drain and
//! maintenance take effect. Also pins down how HAProxy 2.6 treats agent replies
//! (and a missing agent), which herald's agent relies on.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::io::haproxy::{
    block_on, Client, HaproxyError, OpState, RuntimeAddr, ServerAdmin, ServerState,
};
use pushfleet_tests::haproxy::Haproxy;
use pushfleet_tests::{eventually, free_port, http, Edge, PyClient, PyPublisher};

const WAIT: Duration = Duration::from_secs(10);

/// A stand-in for herald's agent-check port: records what each check sent (the
/// slot's `agent-send`, or "" for a slot without one) and answers per name,
/// "up\n" unless told otherwise ("up" touches neither weight nor admin state, so
/// what the runtime API sets is what a test sees).
struct Agent {
    port: u16,
    replies: Arc<Mutex<HashMap<String, String>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start() -> Agent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let replies = Arc::new(Mutex::new(HashMap::<String, String>::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (replies.clone(), seen.clone());
        // Lives as long as the test process; one check at a time is plenty.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // HAProxy sends agent-send right after connecting, without a
                // newline (the runtime API cannot set one), and nothing at all for
                // a slot without agent-send: one short read covers both.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = [0u8; 256];
                let n = stream.read(&mut buf).unwrap_or(0);
                let name = String::from_utf8_lossy(&buf[..n]).into_owned();
                let text = r.lock().unwrap().get(&name).cloned();
                let _ = stream.write_all(text.as_deref().unwrap_or("up\n").as_bytes());
                s.lock().unwrap().push(name);
            }
        });
        Agent {
            port,
            replies,
            seen,
        }
    }

    /// From now on, checks sending `name` get `text`.
    fn set_reply(&self, name: &str, text: &str) {
        self.replies
            .lock()
            .unwrap()
            .insert(name.to_owned(), text.to_owned());
    }

    /// How many checks have sent `name` so far.
    fn checks(&self, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    /// Waits until HAProxy has run `n` more checks sending `name`: whatever
    /// HAProxy made of the reply has then happened.
    fn wait_checks(&self, name: &str, n: usize) {
        let start = self.checks(name);
        eventually(WAIT, &format!("{n} agent checks sending {name:?}"), || {
            (self.checks(name) >= start + n).then_some(())
        });
    }
}

fn client(haproxy: &Haproxy) -> Client {
    Client::new(RuntimeAddr::parse(&haproxy.runtime_addr()).unwrap())
}

fn slot(client: &Client, name: &str) -> ServerState {
    block_on(client.servers("edges"))
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no slot {name}"))
}

/// Waits until slot `name` satisfies `check`.
fn wait_slot(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&ServerState) -> bool,
) -> ServerState {
    eventually(WAIT, what, || {
        block_on(client.servers("edges"))
            .ok()?
            .into_iter()
            .find(|s| s.name == name && check(s))
    })
}

/// Fills slot `name` with `edge` the way herald does.
fn fill(client: &Client, name: &str, edge: &Edge, agent_send: &str) {
    block_on(client.set_addr("edges", name, "127.0.0.1".parse().unwrap(), edge.port)).unwrap();
    block_on(client.set_agent_send("edges", name, agent_send)).unwrap();
    block_on(client.set_state("edges", name, ServerAdmin::Ready)).unwrap();
}

#[test]
fn a_filled_slot_carries_websocket_traffic_and_obeys_weight_drain_and_maint() {
    let agent = Agent::start();
    let haproxy = Haproxy::start(3, agent.port);
    let client = client(&haproxy);

    let slots = block_on(client.servers("edges")).unwrap();
    assert_eq!(
        slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["edge1", "edge2", "edge3"]
    );
    for s in &slots {
        assert!(s.admin_state.is_maint(), "{s:?}");
        assert_eq!(s.op_state, OpState::Stopped);
        assert_eq!(s.socket_addr(), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!((s.weight, s.initial_weight), (100, 100));
    }

    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let edge_id = format!("edge-{}", edge.port);
    fill(&client, "edge1", &edge, &edge_id);
    // Leaving maintenance counts as up before any check ran; wait for a real
    // health check of the edge's /healthz.
    let up = wait_slot(&client, "edge1", "edge1 running with a passed check", |s| {
        s.op_state == OpState::Running && s.check_passed()
    });
    assert_eq!(up.socket_addr(), Some(edge.addr().parse().unwrap()));
    assert!(
        !up.admin_state.is_maint() && !up.admin_state.is_drain(),
        "{up:?}"
    );
    agent.wait_checks(&edge_id, 1);
    for other in ["edge2", "edge3"] {
        assert!(slot(&client, other).admin_state.is_maint());
    }

    // A WebSocket client through HAProxy, with compression negotiated end to end.
    let mut ws = PyClient::connect(&haproxy.ws_url(), true);
    assert!(
        ws.extensions
            .as_deref()
            .is_some_and(|e| e.contains("permessage-deflate")),
        "{:?}",
        ws.extensions
    );
    ws.subscribe("ticker_INR");
    publisher.wait_for("subscribe", "ticker_INR");
    publisher.publish("ticker_INR", "tick", r#"{"price":101.5}"#);
    let m = ws.recv();
    assert_eq!(m["channel"], "ticker_INR");
    assert_eq!(m["data"]["price"], 101.5);
    edge.wait_stats("the client via HAProxy", |s| s["connections"] == 1);

    // Weight: percent of the configured 100.
    block_on(client.set_weight("edges", "edge1", 40)).unwrap();
    assert_eq!(
        block_on(client.get_weight("edges", "edge1")).unwrap(),
        (40, 100)
    );
    assert_eq!(slot(&client, "edge1").weight, 40);

    // Drain: still up and checked, existing connections keep flowing, new ones
    // find no server (HAProxy answers 503 itself).
    block_on(client.set_state("edges", "edge1", ServerAdmin::Drain)).unwrap();
    let drained = slot(&client, "edge1");
    assert!(drained.admin_state.is_drain(), "{drained:?}");
    assert_eq!(drained.op_state, OpState::Running);
    publisher.publish("ticker_INR", "tick", r#"{"price":102}"#);
    assert_eq!(ws.recv()["data"]["price"], 102);
    let ws_addr = format!("127.0.0.1:{}", haproxy.ws_port);
    assert_eq!(http("GET", &ws_addr, "/healthz").map(|r| r.0), Some(503));

    // Back to ready: new connections are served again.
    block_on(client.set_state("edges", "edge1", ServerAdmin::Ready)).unwrap();
    assert_eq!(http("GET", &ws_addr, "/healthz").map(|r| r.0), Some(200));

    // Maintenance: the slot leaves the pool and stays out (agent checks keep
    // running in maintenance, and "up" does not lift it).
    block_on(client.set_state("edges", "edge1", ServerAdmin::Maint)).unwrap();
    let gone = slot(&client, "edge1");
    assert!(gone.admin_state.is_maint(), "{gone:?}");
    assert_eq!(gone.op_state, OpState::Stopped);
    agent.wait_checks(&edge_id, 2);
    assert!(slot(&client, "edge1").admin_state.is_maint());
    assert_eq!(http("GET", &ws_addr, "/healthz").map(|r| r.0), Some(503));

    // The stats page lists the slots.
    let (status, page) = http("GET", &haproxy.stats_addr(), "/").unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("edge1") && page.contains("edge3"),
        "{}",
        haproxy.stats_url()
    );

    // HAProxy's refusals come back as errors with its own words.
    let err = block_on(client.set_weight("edges", "nope", 50)).unwrap_err();
    assert!(
        matches!(&err, HaproxyError::Refused(r) if r == "No such server."),
        "{err}"
    );
    let err = block_on(client.servers("nope")).unwrap_err();
    assert!(
        matches!(&err, HaproxyError::Refused(r) if r == "Can't find backend."),
        "{err}"
    );
    let err = block_on(client.get_weight("nope", "edge1")).unwrap_err();
    assert!(matches!(err, HaproxyError::Unexpected { .. }), "{err}");
}

#[test]
fn agent_replies_set_weight_and_state_and_ready_lifts_maintenance() {
    let agent = Agent::start();
    let haproxy = Haproxy::start(2, agent.port);
    let client = client(&haproxy);
    let publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let edge_id = format!("edge-{}", edge.port);
    fill(&client, "edge1", &edge, &edge_id);
    wait_slot(&client, "edge1", "edge1 up", |s| {
        s.op_state == OpState::Running && s.check_passed()
    });

    // HAProxy 2.6's grammar: "NN%" is relative to the configured weight...
    agent.set_reply(&edge_id, "25% ready\n");
    wait_slot(&client, "edge1", "weight 25 from the agent", |s| {
        s.weight == 25
    });
    // ...and "weight:NN" is not part of it: ignored.
    agent.set_reply(&edge_id, "weight:70\n");
    agent.wait_checks(&edge_id, 2);
    assert_eq!(slot(&client, "edge1").weight, 25);

    // "drain" drains; "ready" undoes it, and also undoes a drain set through the
    // runtime API: the agent has the last word on every check.
    agent.set_reply(&edge_id, "drain\n");
    wait_slot(&client, "edge1", "drained by the agent", |s| {
        s.admin_state.is_drain()
    });
    agent.set_reply(&edge_id, "ready\n");
    wait_slot(&client, "edge1", "ready from the agent", |s| {
        !s.admin_state.is_drain()
    });
    block_on(client.set_state("edges", "edge1", ServerAdmin::Drain)).unwrap();
    wait_slot(
        &client,
        "edge1",
        "the agent's ready overrides the drain",
        |s| !s.admin_state.is_drain(),
    );

    // Agent checks run even in maintenance, on empty slots too (sending ""): a
    // "ready" takes an empty slot out of maintenance, pointing at 127.0.0.1:1
    // until its health check fails. "up" leaves it alone.
    agent.wait_checks("", 2);
    assert!(slot(&client, "edge2").admin_state.is_maint());
    agent.set_reply("", "ready\n");
    wait_slot(&client, "edge2", "an empty slot out of maintenance", |s| {
        !s.admin_state.is_maint()
    });
    wait_slot(&client, "edge2", "its health check fails", |s| {
        s.op_state == OpState::Stopped && !s.check_passed()
    });
}

#[test]
fn without_an_agent_servers_stay_up_on_health_checks_alone() {
    // Nothing listens on the agent port: every agent check is refused.
    let haproxy = Haproxy::start(1, free_port());
    let client = client(&haproxy);
    let publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    fill(&client, "edge1", &edge, "edge-1");
    wait_slot(&client, "edge1", "edge1 up", |s| {
        s.op_state == OpState::Running && s.check_passed()
    });
    block_on(client.set_weight("edges", "edge1", 60)).unwrap();
    // Wait for the refusals to be recorded, then check nothing changed.
    eventually(WAIT, "a refused agent check", || {
        let stat = haproxy.command("show stat")?;
        let header: Vec<&str> = stat
            .lines()
            .next()?
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let agent = header.iter().position(|h| *h == "agent_status")?;
        stat.lines()
            .find(|l| l.starts_with("edges,edge1,"))
            .and_then(|l| l.split(',').nth(agent))
            .filter(|status| status.contains("L4CON"))
            .map(|_| ())
    });
    let s = slot(&client, "edge1");
    assert_eq!(s.op_state, OpState::Running, "{s:?}");
    assert!(
        !s.admin_state.is_maint() && !s.admin_state.is_drain(),
        "{s:?}"
    );
    assert_eq!(s.weight, 60);
    assert!(
        !haproxy.log_text().contains("edges/edge1 is DOWN"),
        "{}",
        haproxy.log_text()
    );
}
