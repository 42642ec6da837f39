//! The monitoring pipeline end to end: a relay and two edges send StatsD to the real
//! local pipeline (`monitoring/pipeline.sh`: Etsy StatsD → carbon-cache →
//! graphite-web), and every alert rule of
//! `monitoring/grafana/provisioning/alerting/pushfleet-alerts.yaml` is evaluated through
//! graphite-web's render API with the rule's own window, reducer and threshold.
//!
//! Phases, each driving something real:
//! 1. healthy: a steady ticker to subscribers that read: every rule is quiet, and the
//!    rules that compare stages have numbers to be quiet about;
//! 2. edge B gets subscribers that never read, on a channel of large messages, with a
//!    small `--send-queue`: its slow-client policy drops messages and the drops alert
//!    fires for B, while the stage-variance rules stay quiet (drops are counted, so the
//!    stage equations still balance);
//! 3. edge B stalls (SIGSTOP for a few seconds) while the relay keeps forwarding: the
//!    relay's queue for B overflows, B counts the gap from the relay's sequence
//!    numbers, and the relay-to-edge stage-variance alert fires for B;
//! 4. edge B is killed and edge A is starved of CPU (pinned to one core with busy
//!    loops, its threads under `SCHED_IDLE`, as a noisy neighbour would): messages A
//!    has taken off ZeroMQ wait for CPU before reaching its sockets, and the p99
//!    latency alert fires for A; the missing-edge alert fires for B, not for A.
//!
//! Why CPU starvation for latency, not SIGSTOP: the edge measures latency from the
//! moment it takes a publish off its ZeroMQ socket, so a stopped edge leaves the
//! backlog upstream (relay queue, kernel buffers) and reads it after SIGCONT at normal
//! speed: only the few messages inside the edge at the stop are late. Starvation
//! delays every step inside the edge, as overload does in production.
//!
//! Also: `monitoring/validate.py` accepts the shipped dashboards and rules, runs every
//! dashboard query through the live graphite-web, and rejects a broken copy.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushfleet_tests::fleet::publish_cli_background;
use pushfleet_tests::monitoring::{
    alert_rules_file, load_alert_rules, AlertRule, Pipeline, RuleState,
};
use pushfleet_tests::{eventually, workspace_root, Edge, RawClient, Relay};

/// Every bounded wait of a phase.
const PHASE: Duration = Duration::from_secs(60);
/// Seconds of healthy traffic in Graphite before the quiet check: enough that the
/// stage rules' window totals dwarf one report's worth of counts at its edges.
const HEALTHY_SECONDS: usize = 25;

/// How long edge B is stopped in phase 3: 500 messages of 16 KiB, more than the
/// loopback socket buffers and the relay's 50-message queue for B hold.
const STALL: Duration = Duration::from_secs(5);

const A: &str = "mon-a";
const B: &str = "mon-b";

/// Subscribers that read everything (and answer pings), each on its own thread.
struct Readers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Readers {
    fn start(edge: &Edge, channels: &[&str], count: usize) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let mut client = RawClient::connect(&edge.addr(), None);
                for channel in channels {
                    client.send_text(&format!(
                        r#"{{"method":"subscribe","channel":"{channel}"}}"#
                    ));
                }
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut frames = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(frame) = client.read_frame(Duration::from_millis(100)) {
                            if frame.opcode == 9 {
                                client.send_frame(true, false, 10, &frame.payload, true);
                            }
                            frames += 1;
                        }
                    }
                    frames
                })
            })
            .collect();
        Readers { stop, threads }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starves one process of CPU the way a noisy neighbour does: all its threads pinned
/// to one core where busy loops run, and moved to `SCHED_IDLE` so they only run when
/// the loops yield the core (every few milliseconds, as the scheduler rotates).
/// Undone on drop: the loops are killed by PID and the process may use every core
/// again.
struct CpuStarvation {
    pid: u32,
    hogs: Vec<Child>,
}

impl CpuStarvation {
    const HOGS: usize = 3;

    fn start(pid: u32) -> CpuStarvation {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let core = (cores - 1).to_string();
        run("taskset", &["-a", "-p", "-c", &core, &pid.to_string()]);
        for tid in threads_of(pid) {
            run("chrt", &["--idle", "-p", "0", &tid]);
        }
        let hogs = (0..Self::HOGS)
            .map(|_| {
                Command::new("taskset")
                    .args(["-c", &core, "sh", "-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start a busy loop: {e}"))
            })
            .collect();
        CpuStarvation { pid, hogs }
    }
}

impl Drop for CpuStarvation {
    fn drop(&mut self) {
        for hog in &mut self.hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        let all = format!(
            "0-{}",
            std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
        );
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", &all, &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for tid in threads_of(self.pid) {
            let _ = Command::new("chrt")
                .args(["--other", "-p", "0", &tid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn threads_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

fn rule<'a>(rules: &'a [AlertRule], uid: &str) -> &'a AlertRule {
    rules
        .iter()
        .find(|r| r.uid == uid)
        .unwrap_or_else(|| panic!("no rule {uid} in {}", alert_rules_file().display()))
}

fn evaluate_all(rules: &[AlertRule], pipeline: &Pipeline, phase: &str) -> Vec<RuleState> {
    rules
        .iter()
        .map(|r| {
            let state = r.evaluate(pipeline);
            eprintln!("[{phase}] {state}");
            state
        })
        .collect()
}

/// Waits until `uid` fires for `name`, printing the rule's state when it does.
fn wait_firing(rules: &[AlertRule], pipeline: &Pipeline, uid: &str, name: &str) -> RuleState {
    let rule = rule(rules, uid);
    let state = eventually(PHASE, &format!("{uid} firing for {name}"), || {
        let state = rule.evaluate(pipeline);
        state.firing_for(name).then_some(state)
    });
    eprintln!("[fired] {state}");
    state
}

/// Non-zero points of a counter in the last minute.
fn busy_seconds(pipeline: &Pipeline, edge: &str) -> usize {
    pipeline
        .render(
            &format!("stats.counters.pushfleet.edge.{edge}.deliver.delivered.count"),
            "-60s",
        )
        .iter()
        .map(|s| s.values().iter().filter(|v| **v > 0.0).count())
        .sum()
}

fn validate(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(workspace_root().join("monitoring").join("validate.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run monitoring/validate.py: {e}"))
}

#[test]
fn alert_rules_are_quiet_when_healthy_and_fire_on_drops_a_stall_latency_and_a_lost_edge() {
    let started = Instant::now();
    let rules = load_alert_rules(&alert_rules_file());
    let pipeline = Pipeline::start();
    let statsd = pipeline.statsd_addr();
    eprintln!("pipeline ready after {:?}", started.elapsed());

    // A small per-edge queue at the relay, so that a stalled edge loses messages
    // within seconds (phase 3) rather than after the default 20,000.
    let relay = Relay::start(&[
        "--statsd",
        &statsd,
        "--relay-id",
        "mon-relay",
        "--edge-queue",
        "50",
    ]);
    // Heartbeats cannot close the never-reading clients of phase 2 within the test.
    let common = ["--statsd", &statsd, "--heartbeat-timeout", "600s"];
    let a = Edge::start(
        &[&relay.edge_endpoint()],
        &[&common[..], &["--edge-id", A]].concat(),
    );
    let mut b = Edge::start(
        &[&relay.edge_endpoint()],
        &[&common[..], &["--edge-id", B, "--send-queue", "32"]].concat(),
    );

    // The ticker first, the subscribers after: a publisher's first publishes burst
    // out when its socket connects, and with nobody subscribed yet the relay counts
    // them as no_subscribers instead of handing B's small send queues a burst.
    let publish = relay.publish_endpoint();
    let ticker: &[&str] = &["--relay", &publish, "ticker", "--channels", "m1,m2"];
    let _ticker = publish_cli_background(
        &[ticker, &["--rate", "200", "--duration", "180s"]].concat(),
        "monitoring-ticker",
    );
    relay.wait_stats("the ticker publishing", |s| {
        s["received"]["zmq"].as_u64().unwrap_or(0) > 0
    });
    let _readers_a = Readers::start(&a, &["m1", "m2"], 3);
    let _readers_b = Readers::start(&b, &["m1", "m2"], 3);
    relay.wait_stats("both edges holding both channels", |s| {
        s["channels"] == 2 && s["edges"] == 2
    });

    // 1. Healthy.
    eventually(PHASE, "healthy traffic on both edges in Graphite", || {
        (busy_seconds(&pipeline, A) >= HEALTHY_SECONDS
            && busy_seconds(&pipeline, B) >= HEALTHY_SECONDS)
            .then_some(())
    });
    let healthy = evaluate_all(&rules, &pipeline, "healthy");
    for state in &healthy {
        assert!(!state.firing(), "healthy fleet, yet {state}");
    }
    // Quiet because the equations hold, not because there was nothing to look at.
    for uid in [
        "pushfleet-stage-edge-ingress",
        "pushfleet-stage-edge-sockets",
        "pushfleet-latency-p99",
        "pushfleet-edge-missing",
    ] {
        let state = healthy.iter().find(|s| s.uid == uid).unwrap();
        for edge in [A, B] {
            assert!(
                state.value_for(&format!("edge.{edge}")).is_some(),
                "{uid} has no value for {edge}: {state}"
            );
        }
    }
    for uid in ["pushfleet-stage-relay", "pushfleet-stage-relays-vs-edges"] {
        let state = healthy.iter().find(|s| s.uid == uid).unwrap();
        assert!(
            state.instances.iter().any(|(_, v, _)| v.is_some()),
            "{uid} has no value: {state}"
        );
    }
    // Every dashboard query runs on the live graphite-web.
    let checked = validate(&["--graphite", &pipeline.graphite_url()]);
    assert!(
        checked.status.success(),
        "validate.py --graphite failed:\n{}",
        output_text(&checked)
    );

    // 2. B drops: subscribers that never read, on a channel of 16 KiB messages. Once
    // their sockets' kernel buffers are full, B's slow-client policy (drop-oldest,
    // 32 queued) evicts 100 messages a second from each.
    let _slow: Vec<RawClient> = (0..3)
        .map(|_| RawClient::subscribed(&b.addr(), "bulk"))
        .collect();
    let bulk: &[&str] = &["--relay", &publish, "ticker", "--channels", "bulk"];
    let _bulk = publish_cli_background(
        &[
            bulk,
            &["--rate", "100", "--size", "16384", "--duration", "120s"],
        ]
        .concat(),
        "monitoring-bulk",
    );
    wait_firing(&rules, &pipeline, "pushfleet-drops", &format!("edge.{B}"));
    let dropping = evaluate_all(&rules, &pipeline, "B dropping");
    for uid in [
        "pushfleet-stage-edge-ingress",
        "pushfleet-stage-edge-sockets",
        "pushfleet-stage-relay",
        "pushfleet-stage-relays-vs-edges",
    ] {
        let state = dropping.iter().find(|s| s.uid == uid).unwrap();
        assert!(
            !state.firing(),
            "drops are counted, so the stage equations still balance: {state}"
        );
    }
    let b_stats = b.stats();
    assert!(
        b_stats["drops"]["slow_client"].as_u64().unwrap_or(0) > 0,
        "{b_stats}"
    );

    // 3. B stalls (SIGSTOP, as a frozen VM or a swapping host would): the relay's
    // queue for B (--edge-queue 50) overflows and libzmq drops B's copies, which B
    // counts from the relays' sequence numbers once it runs again. Stage variance
    // between what relays forwarded for B's channels and what B received.
    b.signal("STOP");
    std::thread::sleep(STALL);
    b.signal("CONT");
    wait_firing(
        &rules,
        &pipeline,
        "pushfleet-stage-relay-to-edge",
        &format!("edge.{B}"),
    );

    // 4. B dies, and A is starved of CPU while the missing-edge rule notices B.
    b.service.kill();
    let starved = CpuStarvation::start(a.pid());
    wait_firing(
        &rules,
        &pipeline,
        "pushfleet-latency-p99",
        &format!("edge.{A}"),
    );
    drop(starved);
    // A starved edge reports sparsely too; it must be back before B's verdict.
    let missing_rule = rule(&rules, "pushfleet-edge-missing");
    eventually(PHASE, "A reporting again", || {
        (!missing_rule
            .evaluate(&pipeline)
            .firing_for(&format!("edge.{A}")))
        .then_some(())
    });
    let missing = wait_firing(
        &rules,
        &pipeline,
        "pushfleet-edge-missing",
        &format!("edge.{B}"),
    );
    assert!(
        !missing.firing_for(&format!("edge.{A}")),
        "A still reports: {missing}"
    );
    assert!(
        !missing.firing_for("relay.mon-relay"),
        "the relay still reports: {missing}"
    );
    evaluate_all(&rules, &pipeline, "end");
    eprintln!("monitoring test took {:?}", started.elapsed());
}

#[test]
fn the_validator_accepts_the_shipped_files_and_rejects_broken_ones() {
    let shipped = validate(&[]);
    assert!(
        shipped.status.success(),
        "validate.py rejected the shipped files:\n{}",
        output_text(&shipped)
    );

    // A copy of monitoring/grafana with one dashboard field of the wrong type: the
    // error names the file and the field.
    let (dir, grafana) = scratch_copy("dashboard");
    let dashboard = grafana.join("dashboards/pushfleet-fleet-overview.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    json["panels"][0]["gridPos"]["w"] = serde_json::json!("wide");
    std::fs::write(&dashboard, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let broken = validate(&["--root", dir.to_str().unwrap()]);
    let out = output_text(&broken);
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(
        out.contains("pushfleet-fleet-overview.json: panels[0].gridPos.w: expected an integer"),
        "{out}"
    );

    // And a rule with a reducer Grafana does not have.
    let (dir, grafana) = scratch_copy("rule");
    let rules = grafana.join("provisioning/alerting/pushfleet-alerts.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, text.replacen("reducer: last", "reducer: newest", 1)).unwrap();
    let broken = validate(&["--root", dir.to_str().unwrap()]);
    let out = output_text(&broken);
    assert_eq!(broken.status.code(), Some(1), "{out}");
    assert!(
        out.contains("groups[0].rules[0].data[1].model.reducer: \"newest\" is not one of"),
        "{out}"
    );
    for (dir, _) in [scratch_dir("dashboard"), scratch_dir("rule")] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh copy of `monitoring/grafana` under `target/test-logs`: (root, root/grafana).
fn scratch_copy(name: &str) -> (PathBuf, PathBuf) {
    let (dir, grafana) = scratch_dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(
        &workspace_root().join("monitoring").join("grafana"),
        &grafana,
    );
    (dir, grafana)
}

/// Where [`scratch_copy`] puts `name`'s copy: (root, root/grafana).
fn scratch_dir(name: &str) -> (PathBuf, PathBuf) {
    let dir = pushfleet_tests::process::log_dir()
        .join(format!("monitoring-validate-{name}-{}", std::process::id()));
    let grafana = dir.join("grafana");
    (dir, grafana)
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
