//! The etcd key layout and the records stored under it.
//!
//! Everything lives under one prefix (default [`DEFAULT_PREFIX`]) so that several
//! fleets can share an etcd cluster:
//!
//! - `<prefix>/relays/<id>` = [`RelayRecord`] as JSON, written by each relay under a
//!   lease, so a relay that dies vanishes when its lease expires.

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
