//! The demo page in headless Chromium (Debian's, driven by Playwright), through
//! HAProxy on the local fleet (`deploy/local/fleet.sh`): live ticker values arrive
//! compressed (permessage-deflate negotiated by the browser itself); the edge serving
//! the page is killed and the page reconnects to another edge and resumes; the next
//! edge is drained and the page follows its reconnect hint to the last one; herald's
//! fleet view shows the edges. A screenshot is saved to
//! `target/test-artifacts/demo.png` (and `demo-fleet.png`).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use pushfleet_tests::browser::DemoPage;
use pushfleet_tests::local_fleet::LocalFleet;
use pushfleet_tests::workspace_root;

#[test]
fn the_demo_page_receives_compressed_ticks_and_survives_the_death_of_its_edge() {
    let fleet = LocalFleet::start();
    let mut page = DemoPage::open(&format!("http://{}/demo/", fleet.front()));

    let before = page.wait_state(
        "live ticks over a compressed socket",
        Duration::from_secs(30),
        |s| {
            s["connected"] == true
                && s["edge"].is_string()
                && s["messages"].as_u64().unwrap_or(0) >= 8
                && s["deflate"] == true
                && s["deflate_ratio"].is_number()
        },
    );
    assert!(
        before["extensions"]
            .as_str()
            .unwrap()
            .contains("permessage-deflate"),
        "the browser negotiated compression: {before}"
    );
    // The edge deflated what it sent (the ticks are ~450 bytes, above the edge's
    // compression threshold): its ratio, from the page's `info` request.
    let ratio = before["deflate_ratio"].as_f64();
    assert!(ratio.is_some_and(|r| r > 0.0 && r < 0.8), "{before}");
    let ticker = &before["last"]["ticker_INR"];
    assert!(ticker["price"].is_number(), "{before}");
    let edge = before["edge"].as_str().unwrap().to_owned();
    let artifacts = workspace_root().join("target").join("test-artifacts");
    page.screenshot(&artifacts.join("demo.png"));

    // Kill the page's edge (a part the fleet script started; by its PID).
    let pid = fleet.pid(&edge);
    assert!(Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    let messages = before["messages"].as_u64().unwrap();
    let after = page.wait_state(
        "reconnected to another edge, ticks flowing again",
        Duration::from_secs(40),
        |s| {
            s["connected"] == true
                && s["edge"].as_str().is_some_and(|e| e != edge)
                && s["messages"].as_u64().unwrap_or(0) >= messages + 8
        },
    );
    assert!(after["reconnects"].as_u64().unwrap() >= 1, "{after}");
    assert_eq!(after["deflate"], true, "{after}");
    let seen: Vec<&str> = after["edges_seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(seen.len() >= 2 && seen[0] == edge, "{after}");
    // The ticker value moved on after the reconnect (snapshot or new ticks).
    let seq_before = ticker["seq"].as_u64().unwrap();
    let seq_after = after["last"]["ticker_INR"]["seq"].as_u64().unwrap();
    assert!(
        seq_after > seq_before,
        "{seq_before} -> {seq_after}: {before} {after}"
    );

    // Drain the page's new edge: it tells the page to reconnect (after a jittered
    // delay), and HAProxy, seeing the edge's /healthz at 503 and herald's `drain`,
    // sends it to the third edge.
    let second = after["edge"].as_str().unwrap().to_owned();
    let n: u16 = second.trim_start_matches("edge-").parse().unwrap();
    let (code, _) =
        pushfleet_tests::fleet::http_body("POST", &fleet.edge_admin(n), "/drain", "").unwrap();
    assert_eq!(code, 202);
    let third = page.wait_state("moved off the drained edge", Duration::from_secs(40), |s| {
        s["connected"] == true && s["edge"].as_str().is_some_and(|e| e != edge && e != second)
    });
    assert!(third["reconnects"].as_u64().unwrap() >= 2, "{third}");

    // herald's view through HAProxy: the edges left (the dead one leaves with its
    // lease, the drained one when it exits).
    let fleet_view = page.herald_view();
    assert!(fleet_view["rows"].as_u64().unwrap() >= 1, "{fleet_view}");
    page.screenshot(&artifacts.join("demo-fleet.png"));
    page.ticker_view();
}
