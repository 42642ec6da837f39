//! herald's EC2 Auto Scaling actuator, through the official AWS SDK, against a local
//! AWS API server (moto in server mode, with the lifecycle actions moto lacks added to
//! its model: see `tests/py/aws_autoscaling.py`). Edges are real local processes
//! whose edge ids are the group's instance ids, as on EC2.
//!
//! Load above the high watermark raises the group's desired capacity; the new
//! instance's edge joins. Load below the low watermark drains the cheapest edge through
//! etcd, then terminates its instance, which the termination hook holds until herald
//! completes the lifecycle action. An instance terminated by someone else is drained
//! the same way before herald lets it go.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::fleet::{ticker, FAST_SCALING};
use pushfleet_tests::{eventually, free_port, Edge, Etcd, Herald, PyAutoScaling, RawClient, Relay};

const GROUP: &str = "pushfleet-edges";
const HOOK: &str = "pushfleet-edge-drain";

fn edge(relay: &Relay, etcd: &Etcd, instance: &str) -> Edge {
    Edge::reporting(
        &relay.edge_endpoint(),
        &etcd.endpoint(),
        instance,
        &["--drain-spread", "300ms", "--drain-timeout", "5s"],
    )
}

/// A client subscribed to `busy` on `edge` that expects to be told to reconnect.
fn told_to_move(edge: &Edge) -> RawClient {
    let mut client = RawClient::connect(&edge.addr(), None);
    client.send_text(r#"{"method":"subscribe","channel":"busy"}"#);
    assert_eq!(
        client.recv_json(Duration::from_secs(5)).unwrap()["type"],
        "subscribed"
    );
    client
}

fn steps(herald: &Herald) -> Vec<(String, String, String)> {
    herald.status()["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("step"), s("edge"), s("outcome"))
        })
        .collect()
}

#[test]
fn herald_drives_an_auto_scaling_group_and_drains_what_its_termination_hook_holds() {
    let mut aws = PyAutoScaling::start();
    let first_id = aws.group(GROUP, HOOK, 1, 3).pop().unwrap();
    let etcd = Etcd::start();
    let relay = Relay::start(&[]);
    let first = edge(&relay, &etcd, &first_id);
    let herald = Herald::start_with_env(
        &etcd.endpoint(),
        free_port(),
        &aws.env(),
        &[
            &FAST_SCALING[..],
            &[
                "--scale",
                "aws",
                "--aws-edge-group",
                GROUP,
                "--aws-lifecycle-hook",
                HOOK,
                "--aws-poll",
                "1s",
            ],
        ]
        .concat(),
    );

    // Hot: 20 subscribers × 100 msg/s against a capacity of 300 deliveries/s.
    let mut hot: Vec<RawClient> = (0..20)
        .map(|_| RawClient::subscribed(&first.addr(), "busy"))
        .collect();
    relay.wait_stats("busy held", |s| s["channels"] == 1);
    let tag = relay.ports.http;
    let mut busy = ticker(
        &relay.publish_endpoint(),
        "busy",
        100,
        &format!("aws-ticker-{tag}"),
    );
    let launched = eventually(Duration::from_secs(20), "desired capacity 2", || {
        let (desired, instances) = aws.describe(GROUP);
        (desired == 2 && instances.len() == 2).then_some(instances)
    });
    assert!(launched.values().all(|s| s == "InService"), "{launched:?}");
    let second_id = launched.keys().find(|id| **id != first_id).unwrap().clone();
    // The new instance boots and its edge registers under its instance id.
    let second = edge(&relay, &etcd, &second_id);
    eventually(
        Duration::from_secs(10),
        "the new edge ready in herald",
        || (herald.status()["views"][&second_id]["verdict"] == "ready").then_some(()),
    );

    // Cold: the edge with fewest connections (the new one) is drained, then its
    // instance terminated; the hook holds it until herald completes the action.
    busy.kill();
    hot.truncate(2);
    let mut on_second = told_to_move(&second);
    assert_eq!(
        on_second.expect_close(Duration::from_secs(30)),
        Some(1012),
        "told to reconnect elsewhere"
    );
    let after = eventually(
        Duration::from_secs(20),
        "the drained instance gone and desired capacity 1",
        || {
            let (desired, instances) = aws.describe(GROUP);
            (desired == 1 && !instances.contains_key(&second_id)).then_some(instances)
        },
    );
    assert_eq!(after.get(&first_id).map(String::as_str), Some("InService"));
    let seen = steps(&herald);
    let names: Vec<&str> = seen.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        names,
        ["scale_out", "scale_in", "release", "lifecycle_complete"],
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(_, _, outcome)| outcome == "done" || outcome == "draining"),
        "{seen:?}"
    );
    assert_eq!(seen[3].1, second_id);

    // Someone else terminates the first instance (the group replaces it): herald
    // drains its edge first, and only then lets the termination go on.
    let mut on_first = told_to_move(&first);
    aws.terminate(&first_id);
    assert_eq!(
        aws.describe(GROUP).1.get(&first_id).map(String::as_str),
        Some("Terminating:Wait")
    );
    assert_eq!(
        on_first.expect_close(Duration::from_secs(30)),
        Some(1012),
        "clients of the terminating instance told to reconnect"
    );
    let replaced = eventually(
        Duration::from_secs(20),
        "the terminated instance released after its drain",
        || {
            let (_, instances) = aws.describe(GROUP);
            (!instances.contains_key(&first_id)).then_some(instances)
        },
    );
    assert_eq!(replaced.len(), 1, "the group's replacement: {replaced:?}");
    let seen = steps(&herald);
    let tail: Vec<(&str, &str)> = seen
        .iter()
        .skip(4)
        .map(|(s, e, _)| (s.as_str(), e.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("lifecycle_drain", first_id.as_str()),
            ("lifecycle_complete", first_id.as_str())
        ],
        "{seen:?}"
    );
}

#[test]
fn scale_aws_without_a_region_is_a_configuration_error() {
    let out = std::process::Command::new(pushfleet_tests::process::binary("herald"))
        .args([
            "--etcd",
            "http://127.0.0.1:1",
            "--agent-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--scale",
            "aws",
            "--aws-edge-group",
            GROUP,
        ])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("invalid configuration: --scale aws needs an AWS region"),
        "{stderr}"
    );
}
