//! Test fixtures shared by herald's unit tests: load reports and edge views with
//! only the fields a test cares about set.

use pushfleet_protocol::registry::{EdgeState, LoadReport};

use crate::policy::score::{EdgeView, Signals, Verdict};

/// A ready edge's report: 1 CPU, nothing busy, at `127.0.0.1:<port>`.
pub fn report(id: &str, port: u16) -> LoadReport {
    LoadReport {
        id: id.into(),
        address: format!("127.0.0.1:{port}"),
        state: EdgeState::Ready,
        connections: 0,
        max_connections: 10_000,
        subscriptions: 0,
        channels: 0,
        cpu: 0.0,
        cpus: 1,
        rss_bytes: 0,
        msgs_in_per_s: 0.0,
        msgs_out_per_s: 0.0,
        dropped_per_s: 0.0,
        queue_depth: 0,
        p99_us: 0,
        at_ms: 0,
    }
}

/// herald's view of that edge.
pub fn view(id: &str, port: u16, verdict: Verdict, percent: u32, load: f64) -> EdgeView {
    let report = report(id, port);
    EdgeView {
        id: id.into(),
        address: report.address.clone(),
        verdict,
        percent,
        level: f64::from(percent),
        load,
        signals: Signals::default(),
        report,
    }
}
