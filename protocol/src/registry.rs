//! The etcd key layout and the records stored under it.
//!
//! Everything lives under one prefix (default [`DEFAULT_PREFIX`]) so that several
//! fleets can share an etcd cluster:
//!
//! - `<prefix>/relays/<id>` = [`RelayRecord`] as JSON, written by each relay under a
//!   lease, so a relay that dies vanishes when its lease expires;
//! - `<prefix>/edges/<id>` = [`LoadReport`] as JSON, rewritten by each edge every
//!   second or two under its lease: what herald balances on;
//! - `<prefix>/drain/<id>` = a reason (text), written by herald to drain an edge
//!   (scale-in); the edge drains when it appears.

use serde::{Deserialize, Serialize};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/pushfleet";

/// Prefix under which relays register: `<prefix>/relays/`.
pub fn relays_prefix(prefix: &str) -> String {
    format!("{}/relays/", prefix.trim_end_matches('/'))
}

/// Key of one relay's record.
pub fn relay_key(prefix: &str, id: &str) -> String {
    format!("{}{id}", relays_prefix(prefix))
}

/// Prefix under which edges report their load: `<prefix>/edges/`.
pub fn edges_prefix(prefix: &str) -> String {
    format!("{}/edges/", prefix.trim_end_matches('/'))
}

/// Key of one edge's load report.
pub fn edge_key(prefix: &str, id: &str) -> String {
    format!("{}{id}", edges_prefix(prefix))
}

/// Prefix of drain orders: `<prefix>/drain/`.
pub fn drain_prefix(prefix: &str) -> String {
    format!("{}/drain/", prefix.trim_end_matches('/'))
}

/// Key of the drain order for one edge.
pub fn drain_key(prefix: &str, id: &str) -> String {
    format!("{}{id}", drain_prefix(prefix))
}

/// Whether an edge takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeState {
    Ready,
    /// Draining: refuses new connections and is moving its clients away.
    Draining,
}

/// An edge's real load, as it reports it. Rates are per second over the last report
/// interval; `cpu` is in cores (1.0 = one core fully busy), `cpus` how many it may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub id: String,
    /// `host:port` of the edge's public listener, as HAProxy reaches it.
    pub address: String,
    pub state: EdgeState,
    pub connections: u64,
    pub max_connections: u64,
    pub subscriptions: u64,
    pub channels: u64,
    pub cpu: f64,
    pub cpus: u32,
    pub rss_bytes: u64,
    pub msgs_in_per_s: f64,
    pub msgs_out_per_s: f64,
    /// Messages dropped per second, every stage and reason together.
    pub dropped_per_s: f64,
    /// Messages waiting in the edge's per-socket send queues.
    pub queue_depth: u64,
    /// p99 publish-to-socket latency over the last interval, µs.
    pub p99_us: u64,
    /// When the report was made, ms since the UNIX epoch (to tell stale reports).
    pub at_ms: u64,
}

/// What a relay tells the fleet about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRecord {
    /// The relay's name (also its StatsD and log name).
    pub id: String,
    /// Endpoint publishers push to, e.g. `tcp://10.0.0.5:5560`. Channels are sharded
    /// over relays by this string (see [`crate::shard`]).
    pub publish: String,
    /// Endpoint edges connect their SUB socket to, e.g. `tcp://10.0.0.5:5561`.
    pub edges: String,
    /// Base URL of the HTTP publish API, e.g. `http://10.0.0.5:8070`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(relays_prefix("/pushfleet"), "/pushfleet/relays/");
        assert_eq!(relays_prefix("/x/"), "/x/relays/");
        assert_eq!(relay_key("/pushfleet", "r1"), "/pushfleet/relays/r1");
    }

    #[test]
    fn edge_keys_and_report_round_trip() {
        assert_eq!(edges_prefix("/pushfleet"), "/pushfleet/edges/");
        assert_eq!(edge_key("/p/", "e1"), "/p/edges/e1");
        assert_eq!(drain_key("/pushfleet", "e1"), "/pushfleet/drain/e1");
        let r = LoadReport {
            id: "e1".into(),
            address: "10.0.0.7:8080".into(),
            state: EdgeState::Draining,
            connections: 10,
            max_connections: 100,
            subscriptions: 12,
            channels: 3,
            cpu: 0.25,
            cpus: 2,
            rss_bytes: 1 << 20,
            msgs_in_per_s: 5.0,
            msgs_out_per_s: 50.0,
            dropped_per_s: 0.0,
            queue_depth: 4,
            p99_us: 900,
            at_ms: 1,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""state":"draining""#), "{json}");
        assert_eq!(serde_json::from_str::<LoadReport>(&json).unwrap(), r);
    }

    #[test]
    fn record_round_trip() {
        let r = RelayRecord {
            id: "r1".into(),
            publish: "tcp://127.0.0.1:5560".into(),
            edges: "tcp://127.0.0.1:5561".into(),
            http: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"id":"r1","publish":"tcp://127.0.0.1:5560","edges":"tcp://127.0.0.1:5561"}"#
        );
        assert_eq!(serde_json::from_str::<RelayRecord>(&json).unwrap(), r);
    }
}
