//! Publishes from a real libzmq publisher reach real WebSocket clients, compressed
//! and plain, with sequence numbers, snapshots and exact subscriptions.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::{Edge, PyClient, PyPublisher, RawClient};
use serde_json::Value;

fn big_data(i: usize) -> String {
    let rows: Vec<String> = (0..40)
        .map(|r| {
            format!(
                r#"{{"sym":"BTC-INR","bid":{},"ask":{},"vol":{}}}"#,
                5_000_000 + r * 7 + i,
                5_000_100 + r,
                r * 13
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

#[test]
fn compressed_and_plain_clients_receive_the_same_pyzmq_publishes() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let mut compressed = PyClient::connect(&edge.ws_url(), true);
    let mut plain = PyClient::connect(&edge.ws_url(), false);
    let ext = compressed.extensions.clone().unwrap_or_default();
    assert!(
        ext.contains("permessage-deflate") && ext.contains("server_no_context_takeover"),
        "{ext}"
    );
    assert_eq!(plain.extensions, None);
    compressed.subscribe("ticker_INR");
    plain.subscribe("ticker_INR");
    publisher.wait_for("subscribe", "ticker_INR");

    let payloads = [r#"{"price":101.5}"#.to_owned(), big_data(1), big_data(2)];
    for p in &payloads {
        publisher.publish("ticker_INR", "tick", p);
    }
    for client in [&compressed, &plain] {
        for (i, p) in payloads.iter().enumerate() {
            let m = client.recv();
            assert_eq!(m["channel"], "ticker_INR");
            assert_eq!(m["event"], "tick");
            assert_eq!(m["seq"], i as u64 + 1);
            assert_eq!(m["data"], serde_json::from_str::<Value>(p).unwrap());
            assert!(m.get("snapshot").is_none());
        }
    }
    let stats = edge.wait_stats("6 deliveries", |s| s["msgs_out"] == 6);
    assert_eq!(stats["published"], 3);
    assert_eq!(stats["compressed_connections"], 1);
    assert_eq!(
        stats["compression"]["messages"], 2,
        "the two large messages, once each: {stats}"
    );
    assert!(
        stats["compression"]["ratio"].as_f64().unwrap() < 0.5,
        "{stats}"
    );
}

#[test]
fn compressed_sockets_get_rsv1_frames_that_inflate_to_the_envelope() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let mut raw = RawClient::connect(
        &edge.addr(),
        Some("permessage-deflate; client_max_window_bits"),
    );
    let agreed = raw
        .header("sec-websocket-extensions")
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        agreed,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    raw.send_text(r#"{"method":"subscribe","channel":"c1","id":1}"#);
    let ack = raw.recv_json(Duration::from_secs(5)).unwrap();
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["id"], 1);
    publisher.wait_for("subscribe", "c1");
    publisher.publish("c1", "tick", &big_data(3));
    publisher.publish("c1", "tick", "7");
    let big = raw.read_frame(Duration::from_secs(5)).unwrap();
    assert!(big.rsv1, "large message must be compressed");
    let text = pushfleet_tests::raw::inflate(&big.payload);
    assert!(
        text.len() > big.payload.len() * 2,
        "compression should pay on repetitive JSON"
    );
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["seq"], 1);
    let small = raw.read_frame(Duration::from_secs(5)).unwrap();
    assert!(!small.rsv1, "messages under the threshold go uncompressed");
    assert_eq!(
        small.payload,
        br#"{"channel":"c1","event":"tick","data":7,"seq":2}"#
    );
}

#[test]
fn unsubscribe_stops_delivery_and_the_upstream_subscription() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let mut leaver = PyClient::connect(&edge.ws_url(), true);
    let mut stayer = PyClient::connect(&edge.ws_url(), false);
    leaver.subscribe("news");
    stayer.subscribe("news");
    publisher.wait_for("subscribe", "news");
    publisher.publish("news", "n", "1");
    assert_eq!(leaver.recv()["data"], 1);
    assert_eq!(stayer.recv()["data"], 1);

    leaver.send(r#"{"method":"unsubscribe","channel":"news","id":"u"}"#);
    let ack = leaver.recv();
    assert_eq!(ack["type"], "unsubscribed");
    assert_eq!(ack["id"], "u");
    publisher.publish("news", "n", "2");
    assert_eq!(stayer.recv()["data"], 2);
    // The stayer got message 2, so the leaver would have had it by now too.
    assert_eq!(leaver.try_recv(Duration::from_millis(300)), None);

    stayer.send(r#"{"method":"unsubscribe","channel":"news"}"#);
    assert_eq!(stayer.recv()["type"], "unsubscribed");
    publisher.wait_for("unsubscribe", "news");
    let stats = edge.wait_stats("no channels", |s| s["channels"] == 0);
    assert_eq!(stats["subscriptions"], 0);
}

#[test]
fn subscriptions_are_exact_although_zeromq_matches_prefixes() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("ticker");
    publisher.wait_for("subscribe", "ticker");
    publisher.publish("ticker_INR", "t", "1"); // matches the ZeroMQ prefix filter
    publisher.publish("ticker", "t", "2");
    assert_eq!(client.recv()["data"], 2);
    assert_eq!(client.try_recv(Duration::from_millis(200)), None);
    edge.wait_stats("one filtered publish", |s| s["filtered"] == 1);
}

#[test]
fn a_new_subscriber_gets_the_latest_value_as_a_snapshot() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let mut first = PyClient::connect(&edge.ws_url(), false);
    first.subscribe("prices");
    publisher.wait_for("subscribe", "prices");
    publisher.publish("prices", "p", r#"{"v":1}"#);
    publisher.publish("prices", "p", r#"{"v":2}"#);
    assert_eq!(first.recv()["seq"], 1);
    assert_eq!(first.recv()["seq"], 2);

    for (latest, compress) in [(2u64, false), (3, true)] {
        let mut late = PyClient::connect(&edge.ws_url(), compress);
        late.subscribe("prices");
        let snapshot = late.recv();
        assert_eq!(snapshot["snapshot"], true, "{snapshot}");
        assert_eq!(snapshot["seq"], latest);
        assert_eq!(snapshot["data"]["v"], latest);
        publisher.publish("prices", "p", &format!(r#"{{"v":{}}}"#, latest + 1));
        let live = late.recv();
        assert!(live.get("snapshot").is_none());
        assert_eq!(live["data"]["v"], latest + 1);
        assert_eq!(first.recv()["seq"], latest + 1);
    }
}

#[test]
fn publishes_may_carry_their_own_sequence_numbers() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("s");
    publisher.wait_for("subscribe", "s");
    publisher.send(&["s", "e", "1", "41"]);
    publisher.publish("s", "e", "2");
    assert_eq!(client.recv()["seq"], 41);
    assert_eq!(
        client.recv()["seq"],
        42,
        "edge continues from the relay's number"
    );
}

#[test]
fn malformed_publishes_are_counted_and_dropped() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &["--max-publish-size", "1000"]);
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("m");
    publisher.wait_for("subscribe", "m");
    publisher.send(&["m", "e"]); // two frames
    publisher.publish("m", "e", "{not json");
    publisher.publish("m", "", "1"); // empty event
    publisher.send(&["m", "e", "1", "x"]); // bad seq
    publisher.publish("m", "e", &format!("\"{}\"", "x".repeat(2000)));
    publisher.publish("m", "e", r#"{"ok":true}"#);
    let m = client.recv();
    assert_eq!(m["data"]["ok"], true);
    assert_eq!(m["seq"], 1, "dropped publishes consume no sequence numbers");
    let stats = edge.wait_stats("drops counted", |s| s["msgs_in"] == 6);
    let drops = &stats["drops"]["ingress"];
    assert_eq!(drops["frames"], 1);
    assert_eq!(drops["data"], 1);
    assert_eq!(drops["event"], 1);
    assert_eq!(drops["seq"], 1);
    assert_eq!(drops["too_large"], 1);
    assert_eq!(stats["published"], 1);
}

#[test]
fn the_edge_waits_for_publishers_and_survives_their_restart() {
    let port = pushfleet_tests::free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    // The edge starts first: nothing listens there yet.
    let edge = Edge::start(&[&endpoint], &[]);
    let mut client = PyClient::connect(&edge.ws_url(), true);
    client.subscribe("r");
    let mut publisher = PyPublisher::bind(&endpoint);
    publisher.wait_for("subscribe", "r");
    publisher.publish("r", "e", "1");
    assert_eq!(client.recv()["data"], 1);

    drop(publisher);
    let mut restarted = PyPublisher::bind(&endpoint);
    restarted.wait_for("subscribe", "r");
    restarted.publish("r", "e", "2");
    let m = client.recv();
    assert_eq!(m["data"], 2);
    assert_eq!(m["seq"], 2);
}

#[test]
fn connection_churn_leaves_no_state_behind() {
    let mut publisher = PyPublisher::start();
    let edge = Edge::start(&[&publisher.endpoint], &[]);
    let addr = edge.addr();
    // 8 threads x 25 short-lived connections over 2 workers, each holding 1-3 of 5
    // channels, some leaving cleanly and some just dropping the socket.
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let mut c = RawClient::connect(
                        &addr,
                        if (t + i) % 2 == 0 {
                            Some("permessage-deflate")
                        } else {
                            None
                        },
                    );
                    for k in 0..=((t + i) % 3) {
                        c.send_text(&format!(
                            r#"{{"method":"subscribe","channel":"churn{}"}}"#,
                            (t + i + k) % 5
                        ));
                        // Snapshots and live messages may come between the acks.
                        let ack = (0..100)
                            .map(|_| c.recv_json(Duration::from_secs(5)).unwrap())
                            .find(|m| m.get("type").is_some())
                            .unwrap();
                        assert_eq!(ack["type"], "subscribed", "{ack}");
                    }
                    if i % 3 == 0 {
                        c.send_frame(true, false, 8, &1000u16.to_be_bytes(), true);
                        let _ = c.expect_close(Duration::from_secs(5));
                    }
                }
            })
        })
        .collect();
    // Publish while connections come and go.
    for n in 0..50 {
        publisher.publish(&format!("churn{}", n % 5), "e", &n.to_string());
    }
    for w in workers {
        w.join().unwrap();
    }
    let stats = edge.wait_stats("all state released", |s| {
        s["connections"] == 0 && s["subscriptions"] == 0 && s["channels"] == 0
    });
    assert_eq!(stats["connections_accepted"], 200);
    // And the upstream subscriptions were all withdrawn.
    let mut client = PyClient::connect(&edge.ws_url(), false);
    client.subscribe("churn0");
    // The publisher's event log still holds the churn's (un)subscriptions, so rather
    // than wait for a particular one, publish until the new subscription delivers.
    let got = (0..50).find_map(|_| {
        publisher.publish("churn0", "e", "\"after\"");
        client.try_recv(Duration::from_millis(100))
    });
    assert_eq!(got.map(|m| m["data"].clone()), Some("after".into()));
}
