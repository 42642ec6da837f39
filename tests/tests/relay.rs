//! The relay on its own: ZeroMQ and HTTP publishes in, subscription-filtered
//! forwarding to edges out, bad input counted or refused with a clear error.
//! Real processes throughout: relay, edges, pyzmq publishers, websockets clients.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use pushfleet_tests::fleet::{http_body, publish_cli, python_publish};
use pushfleet_tests::process::binary;
use pushfleet_tests::{Edge, PyClient, Relay};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(300);

fn messages(spec: &[(&str, &str, String)]) -> Vec<(String, String, String)> {
    spec.iter()
        .map(|(c, e, d)| ((*c).to_owned(), (*e).to_owned(), d.clone()))
        .collect()
}

#[test]
fn pyzmq_publishes_reach_exactly_the_edges_holding_the_channel() {
    let relay = Relay::start(&[]);
    let a = Edge::start(&[&relay.edge_endpoint()], &[]);
    let b = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut on_a = PyClient::connect(&a.ws_url(), true);
    on_a.subscribe("news");
    let mut on_b = PyClient::connect(&b.ws_url(), false);
    on_b.subscribe("news");
    on_b.subscribe("sports");
    relay.wait_stats("both edges and both channels", |s| {
        s["channels"] == 2 && s["edges"] == 2
    });

    let mut spec = Vec::new();
    for n in 1..=20 {
        spec.push((
            "news",
            "tick",
            json!({ "n": n, "headline": "x" }).to_string(),
        ));
        spec.push(("sports", "score", json!({ "n": n }).to_string()));
    }
    python_publish(&[relay.publish_endpoint()], &messages(&spec));

    for n in 1..=20u64 {
        let m = on_a.recv();
        assert_eq!(
            (
                m["channel"].as_str(),
                m["data"]["n"].as_u64(),
                m["seq"].as_u64()
            ),
            (Some("news"), Some(n), Some(n)),
            "{m}"
        );
    }
    assert!(
        on_a.try_recv(QUIET).is_none(),
        "A got a channel it does not hold"
    );
    let (mut news, mut sports) = (0, 0);
    for _ in 0..40 {
        let m = on_b.recv();
        let counter = if m["channel"] == "news" {
            &mut news
        } else {
            &mut sports
        };
        *counter += 1;
        assert_eq!(
            m["seq"].as_u64(),
            Some(*counter),
            "relay numbers each channel: {m}"
        );
        assert_eq!(m["data"]["n"].as_u64(), Some(*counter));
    }

    // Subscription forwarding, measured in bytes: edge A received the news frames
    // (channel, event, data, relay seq) and not one byte of sports.
    let news_bytes: usize = spec
        .iter()
        .filter(|(c, _, _)| *c == "news")
        .enumerate()
        .map(|(i, (c, e, d))| c.len() + e.len() + d.len() + (i + 1).to_string().len())
        .sum();
    let sa = a.wait_stats("A's ingress", |s| s["msgs_in"] == 20);
    assert_eq!(sa["bytes_in"].as_u64(), Some(news_bytes as u64), "{sa}");
    assert_eq!(sa["filtered"], 0, "{sa}");
    let sb = b.wait_stats("B's ingress", |s| s["msgs_in"] == 40);
    assert_eq!(sb["upstream"]["lost"], 0, "{sb}");
    let sr = relay.stats();
    assert_eq!(sr["received"]["zmq"], 40, "{sr}");
    assert_eq!(sr["forwarded"], 40, "{sr}");
    assert_eq!(sr["no_subscribers"], 0, "{sr}");
}

#[test]
fn publishes_for_channels_nobody_holds_never_leave_the_relay() {
    let relay = Relay::start(&[]);
    let edge = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("held");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    let spec = [
        ("nobody", "e", "1".to_owned()),
        ("held", "e", "2".to_owned()),
    ];
    python_publish(&[relay.publish_endpoint()], &messages(&spec));
    assert_eq!(client.recv()["data"], 2);
    let s = relay.wait_stats("counted", |s| s["no_subscribers"] == 1);
    assert_eq!(s["forwarded"], 1, "{s}");
    assert_eq!(edge.stats()["msgs_in"], 1);

    // Once the last client leaves, the channel is unsubscribed upstream too.
    drop(client);
    relay.wait_stats("unsubscribed", |s| s["channels"] == 0);
}

#[test]
fn http_publishes_arrive_verbatim_and_bad_ones_get_clear_errors() {
    let relay = Relay::start(&["--max-publish-size", "1000"]);
    let edge = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), true);
    client.subscribe("h");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    let addr = relay.http_addr();
    let post = |path: &str, body: &str| http_body("POST", &addr, path, body).unwrap();

    let (status, body) = post(
        "/publish",
        r#"{"channel":"h","event":"e","data":{"k":[1,2,{"x":null}],"s":"é"}}"#,
    );
    assert_eq!(status, 202, "{body}");
    let m = client.recv();
    assert_eq!(m["data"], json!({"k":[1,2,{"x":null}],"s":"é"}));
    assert_eq!(
        (m["event"].as_str(), m["seq"].as_u64()),
        (Some("e"), Some(1))
    );

    let batch = r#"[{"channel":"h","event":"b","data":1},{"channel":"h","event":"b","data":"two"},{"channel":"h","event":"b","data":[3]}]"#;
    let (status, body) = post("/publish/batch", batch);
    assert_eq!((status, body.as_str()), (202, r#"{"accepted":3}"#));
    for (seq, data) in [(2, json!(1)), (3, json!("two")), (4, json!([3]))] {
        let m = client.recv();
        assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(seq), &data));
    }

    let big = format!(
        r#"{{"channel":"h","event":"e","data":"{}"}}"#,
        "x".repeat(1500)
    );
    let refused: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "/publish",
            "not json".into(),
            400,
            "invalid_json",
            "expected",
        ),
        (
            "/publish",
            r#"{"channel":"h","event":"e"}"#.into(),
            400,
            "invalid_json",
            "data",
        ),
        (
            "/publish",
            r#"{"channel":"h","event":"e","data":1,"x":2}"#.into(),
            400,
            "invalid_json",
            "unknown field",
        ),
        (
            "/publish",
            r#"{"channel":"a b","event":"e","data":1}"#.into(),
            400,
            "invalid_publish",
            "channel",
        ),
        (
            "/publish",
            r#"{"channel":"h","event":"","data":1}"#.into(),
            400,
            "invalid_publish",
            "event",
        ),
        ("/publish", big, 400, "invalid_publish", "limit is 1000"),
        (
            "/publish/batch",
            "[]".into(),
            400,
            "invalid_batch",
            "1 to 1000",
        ),
        (
            "/publish/batch",
            r#"{"channel":"h"}"#.into(),
            400,
            "invalid_json",
            "array",
        ),
        (
            "/publish/batch",
            r#"[{"channel":"h","event":"b","data":5},{"channel":"h!","event":"b","data":6}]"#
                .into(),
            400,
            "invalid_publish",
            "item 1",
        ),
    ];
    for (path, body, status, code, text) in &refused {
        let (got, reply) = post(path, body);
        let reply_json: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("{path} {body}: not JSON ({e}): {reply}"));
        assert_eq!(
            (got, reply_json["error"].as_str()),
            (*status, Some(*code)),
            "{reply}"
        );
        assert!(reply.contains(text), "{path} {body}: {reply}");
    }
    let (status, _) = post("/publish", &"x".repeat(6000));
    assert_eq!(
        status, 413,
        "a body far over the limit is refused before parsing"
    );
    let (status, reply) = http_body("GET", &addr, "/publish", "").unwrap();
    assert_eq!((status, reply.contains("method_not_allowed")), (405, true));
    let (status, reply) = http_body("GET", &addr, "/nope", "").unwrap();
    assert_eq!((status, reply.contains("not_found")), (404, true));

    // Nothing from the refused batch went out: the next message is the sentinel.
    let (status, _) = post("/publish", r#"{"channel":"h","event":"end","data":0}"#);
    assert_eq!(status, 202);
    let m = client.recv();
    assert_eq!(
        (m["event"].as_str(), m["seq"].as_u64()),
        (Some("end"), Some(5))
    );
    let s = relay.stats();
    assert_eq!(s["received"]["http"], 5, "{s}");
    // The 405 and 404 count too; the 413 is refused by the framework before any handler.
    assert_eq!(
        s["http_rejected"].as_u64(),
        Some(refused.len() as u64 + 2),
        "{s}"
    );
}

#[test]
fn malformed_zmq_publishes_are_counted_by_reason_and_the_relay_carries_on() {
    let relay = Relay::start(&["--max-publish-size", "100"]);
    let edge = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("c");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    // Raw pyzmq, to send what a well-behaved publisher never would.
    let script = format!(
        r#"
import zmq
s = zmq.Context().socket(zmq.PUSH)
s.setsockopt(zmq.LINGER, 5000)
s.connect("{}")
for frames in [
    [b"only-one"],
    [b"c", b"e"],
    [b"c", b"e", b"1", b"7"],
    [b"c", b"e", b"1", b"2", b"3"],
    [b"c", b"e", b"\xff"],
    [b"bad chan", b"e", b"1"],
    [b"c", b"", b"1"],
    [b"c", b"e", b"{{oops"],
    [b"c", b"e", b'"' + b"x" * 200 + b'"'],
    [b"c", b"e", b'{{"ok":true}}'],
]:
    s.send_multipart(frames)
s.close()
"#,
        relay.publish_endpoint()
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.recv()["data"], json!({"ok": true}));
    let s = relay.wait_stats("every publish accounted", |s| s["received"]["zmq"] == 10);
    let dropped = &s["dropped"];
    assert_eq!(
        [
            &dropped["frames"],
            &dropped["utf8"],
            &dropped["channel"],
            &dropped["event"],
            &dropped["data"],
            &dropped["too_large"],
        ],
        [
            &json!(4),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1)
        ],
        "{s}"
    );
    assert_eq!(s["forwarded"], 1, "{s}");
}

#[test]
fn the_publish_cli_reports_bad_input_and_unreachable_relays() {
    let relay = Relay::start(&[]);
    let edge = Edge::start(&[&relay.edge_endpoint()], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("cli");
    relay.wait_stats("subscription", |s| s["channels"] == 1);
    let endpoint = relay.publish_endpoint();

    let ok = publish_cli(&["--relay", &endpoint, "one", "cli", "e", r#"{"v":1}"#]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(client.recv()["data"]["v"], 1);

    let bad = publish_cli(&["--relay", &endpoint, "one", "cli", "e", "{nope"]);
    assert_eq!(bad.status.code(), Some(64));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("data is not valid JSON"), "{err}");

    let dir = pushfleet_tests::process::log_dir().join(format!("cli-{}.jsonl", relay.ports.http));
    std::fs::write(
        &dir,
        "{\"channel\":\"cli\",\"event\":\"f\",\"data\":1}\nnot json\n\n{\"channel\":\"cli\",\"event\":\"f\",\"data\":2}\n",
    )
    .unwrap();
    let file = publish_cli(&["--relay", &endpoint, "file", dir.to_str().unwrap()]);
    assert_eq!(file.status.code(), Some(65), "{file:?}");
    let err = String::from_utf8_lossy(&file.stderr);
    assert!(
        err.contains(":2:") && err.contains("published 2, refused 1"),
        "{err}"
    );
    assert_eq!(client.recv()["data"], 1);
    assert_eq!(client.recv()["data"], 2);

    let nowhere = publish_cli(&[
        "--relay",
        "tcp://127.0.0.1:1",
        "--connect-timeout",
        "500ms",
        "one",
        "cli",
        "e",
        "1",
    ]);
    assert_eq!(nowhere.status.code(), Some(69));
    let err = String::from_utf8_lossy(&nowhere.stderr);
    assert!(err.contains("not reachable"), "{err}");
}

#[test]
fn invalid_relay_configuration_exits_64_with_one_line() {
    let cases: &[&[&str]] = &[
        &["--publish-bind", "udp://x:1"],
        &["--relays", "tcp://10.9.9.9:5560"],
        &["--etcd", "localhost:2379"],
        &["--edge-queue", "0"],
        &["--lease-ttl", "forever"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let out = Command::new(binary("pushfleet-relay"))
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("pushfleet-relay: invalid configuration"),
            "{err}"
        );
    }
}
