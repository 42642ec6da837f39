//! The edge's `info` method and, with `--demo`, the demo page and browser client on
//! its public listener (off by default: 404 like any unknown path).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushfleet_tests::{http, Edge, PyClient, RawClient};

/// A relay address nothing listens on: these edges need no publishes.
const NOWHERE: &str = "tcp://127.0.0.1:1";

#[test]
fn info_names_the_edge_and_says_whether_the_socket_is_compressed() {
    let edge = Edge::start(&[NOWHERE], &["--edge-id", "edge-info"]);
    let mut plain = RawClient::connect(&edge.addr(), None);
    plain.send_text(r#"{"method":"subscribe","channel":"a"}"#);
    plain.recv_json(Duration::from_secs(5)).unwrap();
    plain.send_text(r#"{"method":"info","id":7}"#);
    let info = plain.recv_json(Duration::from_secs(5)).unwrap();
    assert_eq!(info["type"], "info", "{info}");
    assert_eq!(info["id"], 7);
    assert_eq!(info["edge"], "edge-info");
    assert_eq!(info["deflate"], false);
    assert_eq!(info["subscriptions"], 1);
    assert!(
        info["deflate_ratio"].is_null(),
        "nothing compressed yet: {info}"
    );

    let mut compressed = PyClient::connect(&edge.ws_url(), true);
    compressed.send(r#"{"method":"info"}"#);
    let info = compressed.recv();
    assert_eq!(
        (info["type"].as_str(), info["deflate"].as_bool()),
        (Some("info"), Some(true))
    );
    assert!(info.get("id").is_none(), "{info}");

    // A method the edge does not know still gets the precise error.
    compressed.send(r#"{"method":"infos"}"#);
    let error = compressed.recv();
    assert_eq!(error["error"], "unknown_method", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("\"info\""),
        "{error}"
    );
}

#[test]
fn the_demo_page_is_served_only_with_demo() {
    let off = Edge::start(&[NOWHERE], &[]);
    for path in ["/", "/demo/", "/demo/pushfleet.js"] {
        let (status, body) = http("GET", &off.addr(), path).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
    }
    let on = Edge::start(&[NOWHERE], &["--demo"]);
    let (status, page) = http("GET", &on.addr(), "/demo/").unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("<script src=\"pushfleet.js\"></script>"),
        "{page}"
    );
    let (status, client) = http("GET", &on.addr(), "/demo/pushfleet.js").unwrap();
    assert_eq!(status, 200);
    assert!(client.contains("Pushfleet"));
    assert_eq!(http("GET", &on.addr(), "/demo/index.html").unwrap().0, 200);
    assert_eq!(http("GET", &on.addr(), "/").unwrap().0, 302);
    assert_eq!(http("POST", &on.addr(), "/demo/").unwrap().0, 404);
    assert_eq!(http("GET", &on.addr(), "/demo/other.js").unwrap().0, 404);
}
