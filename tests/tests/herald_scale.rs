//! herald scales the fleet through its exec actuator, with real processes: load
//! above the high watermark starts a new edge (the hook launches it), which
//! registers, joins HAProxy without a reload and takes the new connections; load below the low watermark drains the edge with the
//! fewest connections through etcd, its clients reconnect elsewhere and resubscribe,
//! getting the channel's latest value at once (snapshot) and every message after it,
//! and once the edge has left the hook is told to release it. Each scaling action is
//! counted once in StatsD.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushfleet_tests::fleet::{ticker, FAST_SCALING};
use pushfleet_tests::haproxy::Haproxy;
use pushfleet_tests::process::{binary, log_dir};
use pushfleet_tests::{eventually, free_port, Edge, Etcd, Herald, RawClient, Relay};

fn subscriber(edge: &Edge, channel: &str) -> RawClient {
    RawClient::subscribed(&edge.addr(), channel)
}

/// Kills, by the PID the hook recorded, an edge the hook started (our grandchild).
struct Launched(std::path::PathBuf);

impl Drop for Launched {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.trim())
                .status();
        }
    }
}

/// Collects StatsD lines on a thread until dropped (at most 120 s), so the socket's
/// buffer never overflows however long the test runs.
struct StatsdSink {
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl StatsdSink {
    fn start() -> StatsdSink {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let (lines, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (into, stopped) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 65536];
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    into.lock().unwrap().extend(text.lines().map(str::to_owned));
                }
            }
        });
        StatsdSink { addr, lines, stop }
    }

    /// The sum of counter `name`'s increments so far.
    fn counted(&self, name: &str) -> u64 {
        let prefix = format!("{name}:");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                l.strip_prefix(&prefix)?
                    .strip_suffix("|c")?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for StatsdSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn herald_scales_out_on_load_and_in_by_draining_the_cheapest_edge() {
    let statsd = StatsdSink::start();
    let etcd = Etcd::start();
    let relay = Relay::start(&[]);
    let edge_flags = |id: &str| -> Vec<String> {
        [
            "--etcd",
            &etcd.endpoint(),
            "--edge-id",
            id,
            "--load-interval",
            "300ms",
            "--lease-ttl",
            "2s",
            "--drain-spread",
            "300ms",
            "--drain-timeout",
            "5s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let first_flags = edge_flags("first");
    let first = Edge::start(
        &[&relay.edge_endpoint()],
        &first_flags.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // The exec hook: `scale_out` launches an edge (recording its PID), `release`
    // records the edge released.
    let dir = log_dir();
    let tag = relay.ports.http;
    let (pid_file, released) = (
        dir.join(format!("scale-{tag}.pid")),
        dir.join(format!("scale-{tag}.released")),
    );
    let _launched = Launched(pid_file.clone());
    let port = free_port();
    let hook = format!(
        "case \"$PUSHFLEET_SCALE_ACTION\" in \
         scale_out) {bin} --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin} --zmq-connect {zmq} {flags} \
            >{log} 2>&1 & echo $! > {pid} ;; \
         release) echo \"$PUSHFLEET_EDGE_ID\" >> {released} ;; \
         esac",
        bin = binary("pushfleet-server").display(),
        admin = free_port(),
        zmq = relay.edge_endpoint(),
        flags = edge_flags("second").join(" "),
        log = dir.join(format!("scale-{tag}-second.log")).display(),
        pid = pid_file.display(),
        released = released.display(),
    );
    // HAProxy in front, driven by herald (agent checks and runtime API).
    let agent_port = free_port();
    let haproxy = Haproxy::start(4, agent_port);
    let runtime = haproxy.runtime_addr();
    let herald = Herald::start_on(
        &etcd.endpoint(),
        agent_port,
        &[
            &FAST_SCALING[..],
            &["--scale", "exec", "--scale-exec", &hook],
            &["--haproxy-runtime", &runtime, "--haproxy-slots", "4"],
            &["--statsd", &statsd.addr, "--herald-id", "hs"],
        ]
        .concat(),
    );

    // Load: 20 subscribers on the first edge, 100 msg/s → 2,000 deliveries/s
    // against a capacity of 300: far above the high watermark.
    let mut hot: Vec<RawClient> = (0..20).map(|_| subscriber(&first, "busy")).collect();
    relay.wait_stats("busy held", |s| s["channels"] == 1);
    let mut busy = ticker(
        &relay.publish_endpoint(),
        "busy",
        100,
        &format!("scale-ticker-{tag}"),
    );
    let status = eventually(
        Duration::from_secs(20),
        "scaled out: a second edge serving",
        || {
            let s = herald.status();
            (s["views"]["second"]["verdict"] == "ready").then_some(s)
        },
    );
    let out = status["scaling"].as_array().unwrap();
    assert!(
        out.iter()
            .any(|e| e["step"] == "scale_out" && e["outcome"] == "done"),
        "{status}"
    );
    let second = format!("127.0.0.1:{port}");
    assert!(
        pushfleet_tests::get_json(&second, "/healthz").is_some(),
        "the launched edge serves"
    );
    // New connections through HAProxy land on the new, empty edge (it joined
    // without a reload; herald's feedback lifts its weight while it is empty).
    let count = |addr: &str| {
        pushfleet_tests::get_json(addr, "/stats").unwrap()["connections"]
            .as_u64()
            .unwrap()
    };
    eventually(Duration::from_secs(15), "the new edge in HAProxy", || {
        herald.status()["slots"]
            .as_object()
            .filter(|slots| slots.values().any(|e| e == "second"))
            .map(|_| ())
    });
    let front = format!("127.0.0.1:{}", haproxy.ws_port);
    let (first_before, second_before) = (count(&first.addr()), count(&second));
    let through: Vec<RawClient> = (0..6)
        .map(|_| RawClient::subscribed(&front, "quiet"))
        .collect();
    let landed = count(&second) - second_before;
    assert_eq!(landed + count(&first.addr()) - first_before, 6);
    assert!(landed >= 5, "{landed} of 6 new connections on the new edge");
    drop(through);
    eventually(Duration::from_secs(5), "those clients gone", || {
        (count(&second) == second_before).then_some(())
    });

    // Load gone: the fleet is cold; the edge with the fewest connections (the new
    // one: 1 client against 2) is drained through etcd. Its client is told to
    // reconnect; a slow ticker keeps the channel's value moving meanwhile.
    busy.kill();
    hot.truncate(2);
    let _slow = ticker(
        &relay.publish_endpoint(),
        "busy",
        5,
        &format!("scale-slow-ticker-{tag}"),
    );
    let mut on_second = RawClient::connect(&format!("127.0.0.1:{port}"), None);
    on_second.send_text(r#"{"method":"subscribe","channel":"busy"}"#);
    assert_eq!(
        on_second.recv_json(Duration::from_secs(5)).unwrap()["type"],
        "subscribed"
    );
    let (before, code) = on_second.messages_until_close(Duration::from_secs(30));
    assert_eq!(code, Some(1012), "told to reconnect elsewhere: {before:?}");
    assert!(
        before.iter().any(|m| m["type"] == "reconnect"),
        "{before:?}"
    );
    let last_seen = before.iter().filter_map(|m| m["seq"].as_u64()).max();

    // It reconnects to the edge that stays and resubscribes: the latest value at
    // once, then every message after it, without a gap.
    let mut moved = RawClient::connect(&first.addr(), None);
    moved.send_text(r#"{"method":"subscribe","channel":"busy"}"#);
    assert_eq!(
        moved.recv_json(Duration::from_secs(5)).unwrap()["type"],
        "subscribed"
    );
    let snapshot = moved.recv_json(Duration::from_secs(5)).unwrap();
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    let at = snapshot["seq"].as_u64().unwrap();
    assert!(
        last_seen.is_none_or(|l| at >= l),
        "{at} after {last_seen:?}"
    );
    for expected in at + 1..at + 4 {
        let next = moved.recv_json(Duration::from_secs(3)).unwrap();
        assert_eq!(next["seq"].as_u64(), Some(expected), "{next}");
        assert!(next.get("snapshot").is_none(), "{next}");
    }
    eventually(Duration::from_secs(15), "the drained edge released", || {
        std::fs::read_to_string(&released)
            .ok()
            .filter(|t| t.trim() == "second")
            .map(|_| ())
    });
    let status = herald.status();
    let steps: Vec<&str> = status["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(steps, ["scale_out", "scale_in", "release"], "{status}");
    assert!(
        status["views"].get("second").is_none_or(|v| v.is_null()),
        "{status}"
    );
    assert_eq!(first.stats()["state"], "ready", "the busy edge stays");
    // StatsD counted each action once (sent at the evaluation after it started).
    for action in ["scale_out", "in", "release"] {
        let name = format!("pushfleet.herald.hs.scale.{action}");
        eventually(Duration::from_secs(3), &name, || {
            (statsd.counted(&name) == 1).then_some(())
        });
    }
    assert_eq!(statsd.counted("pushfleet.herald.hs.scale.failures"), 0);
}
