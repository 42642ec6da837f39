//! The relay's configuration: flags with `PUSHFLEET_RELAY_*` environment fallbacks,
//! validated as a whole before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use pushfleet_fleet::flags::{is_etcd_endpoint, is_tcp_endpoint, parse_duration};
use pushfleet_protocol::publish::DEFAULT_MAX_DATA;

/// Per-edge send queue in the relay, in messages (libzmq's SNDHWM on the edge-facing
/// socket). 20k is 0.2 s of a 100k msg/s stream: enough to ride out a scheduling hiccup
/// on the edge, small enough that a frozen edge costs the relay at most
/// 20k × message size. When it is full, that edge's new messages are dropped, and
/// the edge counts exactly how many from the gap in the relay's sequence numbers.
pub const DEFAULT_EDGE_QUEUE: i32 = 20_000;
/// Publishes queued in the relay's receiving socket before publishers are held back
/// (their PUSH sockets then queue or block; nothing is dropped silently).
pub const DEFAULT_PUBLISH_QUEUE: i32 = 100_000;
/// Lease TTL of the relay's etcd record: a relay that dies leaves the directory
/// within this time; edges and publishers then stop using it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// pushfleet-relay: receives publishes over ZeroMQ and HTTP, numbers each channel's
/// messages, and forwards every message only to the edges whose clients hold its channel.
#[derive(Debug, Clone, Parser)]
#[command(name = "pushfleet-relay", version, about)]
pub struct RelayConfig {
    /// ZeroMQ endpoint publishers push to (a PULL socket; publishers use PUSH).
    #[arg(
        long,
        env = "PUSHFLEET_RELAY_PUBLISH_BIND",
        default_value = "tcp://0.0.0.0:5560"
    )]
    pub publish_bind: String,

    /// ZeroMQ endpoint edges connect their SUB socket to (an XPUB socket).
    #[arg(
        long,
        env = "PUSHFLEET_RELAY_EDGE_BIND",
        default_value = "tcp://0.0.0.0:5561"
    )]
    pub edge_bind: String,

    /// HTTP listener: `POST /publish`, `POST /publish/batch`, `/healthz`, `/stats`.
    #[arg(
        long,
        env = "PUSHFLEET_RELAY_HTTP_LISTEN",
        default_value = "0.0.0.0:8070"
    )]
    pub http_listen: SocketAddr,

    /// Host name or IP address other machines reach this relay at; used in the
    /// addresses it advertises (etcd) and in its shard identity.
    #[arg(
        long,
        env = "PUSHFLEET_RELAY_ADVERTISE_HOST",
        default_value = "127.0.0.1"
    )]
    pub advertise_host: String,

    /// Name in logs, metrics and etcd. Default: `relay-<publish port>`.
    #[arg(long, env = "PUSHFLEET_RELAY_ID")]
    pub relay_id: Option<String>,

    /// Static relay set for sharding (every relay's advertised publish endpoint,
    /// this one included, comma-separated). A publish for a channel another relay
    /// owns is forwarded to it once. Without this and without etcd, the relay
    /// serves every channel itself.
    #[arg(long, env = "PUSHFLEET_RELAY_RELAYS", value_delimiter = ',')]
    pub relays: Vec<String>,

    /// etcd endpoints (comma-separated `http://host:port`). When set, the relay
    /// registers itself under a lease and learns the relay set from etcd.
    #[arg(long, env = "PUSHFLEET_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// etcd key prefix.
    #[arg(long, env = "PUSHFLEET_ETCD_PREFIX", default_value = pushfleet_protocol::registry::DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// TTL of the etcd lease (e.g. `5s`).
    #[arg(long, env = "PUSHFLEET_RELAY_LEASE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// Per-edge send queue, in messages (see the README: relay memory bound).
    #[arg(long, env = "PUSHFLEET_RELAY_EDGE_QUEUE", default_value_t = DEFAULT_EDGE_QUEUE)]
    pub edge_queue: i32,

    /// Receive queue for publishes, in messages.
    #[arg(long, env = "PUSHFLEET_RELAY_PUBLISH_QUEUE", default_value_t = DEFAULT_PUBLISH_QUEUE)]
    pub publish_queue: i32,

    /// After start, read only edge subscriptions for this long before taking
    /// publishes, so that after a restart edges are back before messages flow.
    #[arg(long, env = "PUSHFLEET_RELAY_STARTUP_HOLD", default_value = "1s", value_parser = parse_duration)]
    pub startup_hold: Duration,

    /// Largest accepted data frame, in bytes.
    #[arg(long, env = "PUSHFLEET_RELAY_MAX_PUBLISH_SIZE", default_value_t = DEFAULT_MAX_DATA)]
    pub max_publish_size: usize,

    /// StatsD address (`host:port`); metrics are off without it.
    #[arg(long, env = "PUSHFLEET_STATSD")]
    pub statsd: Option<SocketAddr>,

    /// Prefix of every StatsD metric name.
    #[arg(long, env = "PUSHFLEET_STATSD_PREFIX", default_value = "pushfleet")]
    pub statsd_prefix: String,
}

/// A configuration that parsed but cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayConfigError {
    #[error("--{0} {1:?} is not a tcp://host:port endpoint")]
    Endpoint(&'static str, String),
    #[error("--{0} must be at least {1}")]
    TooSmall(&'static str, u64),
    #[error("--relays must include this relay's own publish endpoint {0:?} (from --advertise-host and --publish-bind)")]
    SelfMissing(String),
    #[error("--relays and --etcd exclude each other: the relay set comes from one place")]
    TwoSources,
    #[error("--etcd endpoint {0:?} must look like http://host:port")]
    EtcdEndpoint(String),
    #[error("--{0} must be at most {1}s")]
    TooLong(&'static str, u64),
    #[error("--lease-ttl must be between 2s and 60s")]
    LeaseTtl,
}

impl RelayConfig {
    /// Cross-field checks clap cannot express.
    pub fn validate(&self) -> Result<(), RelayConfigError> {
        for (flag, endpoint) in [
            ("publish-bind", &self.publish_bind),
            ("edge-bind", &self.edge_bind),
        ] {
            if !is_tcp_endpoint(endpoint) {
                return Err(RelayConfigError::Endpoint(flag, endpoint.clone()));
            }
        }
        for endpoint in &self.relays {
            if !is_tcp_endpoint(endpoint) {
                return Err(RelayConfigError::Endpoint("relays", endpoint.clone()));
            }
        }
        for endpoint in &self.etcd {
            if !is_etcd_endpoint(endpoint) {
                return Err(RelayConfigError::EtcdEndpoint(endpoint.clone()));
            }
        }
        if !self.relays.is_empty() && !self.etcd.is_empty() {
            return Err(RelayConfigError::TwoSources);
        }
        let own = self.advertised_publish(port_of(&self.publish_bind));
        if !self.relays.is_empty() && !self.relays.contains(&own) {
            return Err(RelayConfigError::SelfMissing(own));
        }
        if self.edge_queue < 1 {
            return Err(RelayConfigError::TooSmall("edge-queue", 1));
        }
        if self.publish_queue < 1 {
            return Err(RelayConfigError::TooSmall("publish-queue", 1));
        }
        if self.max_publish_size < 1 {
            return Err(RelayConfigError::TooSmall("max-publish-size", 1));
        }
        if self.startup_hold > Duration::from_secs(30) {
            return Err(RelayConfigError::TooLong("startup-hold", 30));
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl > Duration::from_secs(60) {
            return Err(RelayConfigError::LeaseTtl);
        }
        Ok(())
    }

    /// The publish endpoint as others reach it; `port` is the bound port (tests bind 0).
    pub fn advertised_publish(&self, port: u16) -> String {
        format!("tcp://{}:{port}", self.advertise_host)
    }

    /// The edge endpoint as others reach it.
    pub fn advertised_edges(&self, port: u16) -> String {
        format!("tcp://{}:{port}", self.advertise_host)
    }

    /// The relay's name: `--relay-id`, or `relay-<publish port>`.
    pub fn relay_id(&self, publish_port: u16) -> String {
        self.relay_id
            .clone()
            .unwrap_or_else(|| format!("relay-{publish_port}"))
    }
}

/// The port of a `tcp://host:port` endpoint (0 when absent or unparsable).
pub fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> RelayConfig {
        let mut args = vec!["pushfleet-relay"];
        args.extend_from_slice(extra);
        RelayConfig::try_parse_from(args).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = config(&[]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.advertised_publish(5560), "tcp://127.0.0.1:5560");
        assert_eq!(c.relay_id(5560), "relay-5560");
    }

    #[test]
    fn cross_field_rules() {
        let bad = [
            (vec!["--publish-bind", "udp://x:1"], "publish-bind"),
            (
                vec!["--relays", "tcp://10.0.0.9:5560"],
                "own publish endpoint",
            ),
            (
                vec![
                    "--relays",
                    "tcp://127.0.0.1:5560",
                    "--etcd",
                    "http://127.0.0.1:2379",
                ],
                "exclude each other",
            ),
            (vec!["--etcd", "127.0.0.1:2379"], "http://host:port"),
            (vec!["--edge-queue", "0"], "edge-queue"),
            (vec!["--lease-ttl", "1s"], "lease-ttl"),
        ];
        for (args, expected) in bad {
            let e = config(&args).validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
        let good = config(&["--relays", "tcp://127.0.0.1:5560,tcp://127.0.0.1:5570"]);
        assert_eq!(good.validate(), Ok(()));
    }
}
