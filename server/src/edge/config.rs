//! The edge's configuration: command-line flags with `PUSHFLEET_*` environment
//! fallbacks, validated as a whole before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use pushfleet_fleet::flags::{is_etcd_endpoint, is_tcp_endpoint, parse_duration};
use pushfleet_protocol::publish::DEFAULT_MAX_DATA;

/// 64 KiB: client requests are small JSON commands; anything larger is a mistake or an
/// attack, and the cap also bounds what one inflated client message may allocate.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Per-socket send queue, in messages: a client may fall this far behind (a few seconds
/// of a busy channel) before the slow-client policy applies.
pub const DEFAULT_SEND_QUEUE: usize = 512;
/// Publishes buffered between the ingress thread and the hub. The ingress thread
/// drains libzmq's own receive queue (its RCVHWM, 10,000 messages) into this
/// one at once, so a busy hub makes publishes wait here, where they are counted; when
/// it is full they are dropped as `ingress_full`. 64k covers a burst of about half a
/// second at 100k msg/s.
pub const DEFAULT_INGRESS_QUEUE: usize = 65_536;
/// Messages shorter than this go uncompressed even on compressed sockets: deflate's
/// framing overhead and CPU outweigh the savings on tiny payloads.
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 256;

/// What to do when a client's send queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowClientPolicy {
    /// Drop the oldest queued message (the client sees a sequence gap).
    DropOldest,
    /// Replace an older queued message of the same channel (latest value wins);
    /// drop the oldest if the channel has nothing queued.
    Conflate,
    /// Close the connection with code 1008; the client reconnects and resubscribes.
    Disconnect,
}

impl SlowClientPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DropOldest => "drop-oldest",
            Self::Conflate => "conflate",
            Self::Disconnect => "disconnect",
        }
    }
}

/// pushfleet-server: a WebSocket edge that fans out ZeroMQ publishes to subscribers.
#[derive(Debug, Clone, Parser)]
#[command(name = "pushfleet-server", version, about)]
pub struct Config {
    /// Public WebSocket/HTTP listener (`/ws`, `/healthz`, `/stats`).
    #[arg(long, env = "PUSHFLEET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Serve the demo page and the browser client at `/demo/` on the public listener.
    #[arg(long, env = "PUSHFLEET_DEMO")]
    pub demo: bool,

    /// Admin listener (`POST /drain`, `/stats`, `/healthz`); keep it private.
    #[arg(long, env = "PUSHFLEET_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// ZeroMQ relay (or publisher) endpoints to subscribe to (`tcp://host:port`),
    /// repeated or comma-separated. Needed unless `--etcd` is given.
    #[arg(
        long = "zmq-connect",
        env = "PUSHFLEET_ZMQ_CONNECT",
        value_delimiter = ',',
        required_unless_present = "etcd"
    )]
    pub zmq_connect: Vec<String>,

    /// etcd endpoints (comma-separated `http://host:port`). When set, the edge
    /// connects to every relay registered there, and follows relays as they come
    /// and go.
    #[arg(long, env = "PUSHFLEET_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// etcd key prefix.
    #[arg(long, env = "PUSHFLEET_ETCD_PREFIX", default_value = pushfleet_protocol::registry::DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// `host:port` at which HAProxy reaches this edge's public listener, written in its
    /// etcd load report. Default: the `--listen` address, with 127.0.0.1 for 0.0.0.0.
    #[arg(long, env = "PUSHFLEET_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// How often the load report in etcd is refreshed.
    #[arg(long, env = "PUSHFLEET_LOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub load_interval: Duration,

    /// TTL of the edge's etcd lease: a dead edge leaves etcd (and HAProxy) within it.
    #[arg(long, env = "PUSHFLEET_LEASE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// Name of this edge in logs and metrics (default: `edge-<listen port>`).
    #[arg(long, env = "PUSHFLEET_EDGE_ID")]
    pub edge_id: Option<String>,

    /// Worker threads serving sockets; 0 means one per CPU this process may use.
    #[arg(long, env = "PUSHFLEET_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Most concurrent WebSocket connections; upgrades beyond it get HTTP 503.
    #[arg(long, env = "PUSHFLEET_MAX_CONNECTIONS", default_value_t = 200_000)]
    pub max_connections: usize,

    /// Largest client message in bytes, after reassembly and inflation (close 1009).
    #[arg(long, env = "PUSHFLEET_MAX_MESSAGE_SIZE", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,

    /// Largest publish data frame in bytes; larger publishes are dropped and counted.
    #[arg(long, env = "PUSHFLEET_MAX_PUBLISH_SIZE", default_value_t = DEFAULT_MAX_DATA)]
    pub max_publish_size: usize,

    /// Most channels one connection may hold.
    #[arg(long, env = "PUSHFLEET_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_subscriptions: usize,

    /// Per-socket send queue bound, in messages.
    #[arg(long, env = "PUSHFLEET_SEND_QUEUE", default_value_t = DEFAULT_SEND_QUEUE)]
    pub send_queue: usize,

    /// What happens when a socket's send queue is full.
    #[arg(long, env = "PUSHFLEET_SLOW_CLIENT", value_enum, default_value_t = SlowClientPolicy::DropOldest)]
    pub slow_client: SlowClientPolicy,

    /// Publishes buffered between the ZeroMQ socket and the hub; beyond it new
    /// publishes are dropped and counted (`ingress_full`).
    #[arg(long, env = "PUSHFLEET_INGRESS_QUEUE", default_value_t = DEFAULT_INGRESS_QUEUE)]
    pub ingress_queue: usize,

    /// Envelopes shorter than this (bytes) are sent uncompressed.
    #[arg(long, env = "PUSHFLEET_COMPRESSION_THRESHOLD", default_value_t = DEFAULT_COMPRESSION_THRESHOLD)]
    pub compression_threshold: usize,

    /// Deflate level 1 (fastest) to 9 (smallest). Each message is compressed once for
    /// every socket, so a middle level costs little.
    #[arg(long, env = "PUSHFLEET_DEFLATE_LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub deflate_level: u32,

    /// Turn permessage-deflate off entirely (offers are declined).
    #[arg(long, env = "PUSHFLEET_NO_COMPRESSION")]
    pub no_compression: bool,

    /// How often the edge pings each client (e.g. `25s`, `500ms`).
    #[arg(long, env = "PUSHFLEET_HEARTBEAT_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A client silent (no frame, no pong) for this long is disconnected.
    #[arg(long, env = "PUSHFLEET_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// Longest a drain may take before the edge exits anyway.
    #[arg(long, env = "PUSHFLEET_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Reconnect hints are spread uniformly over this window so clients do not stampede
    /// the rest of the fleet; must be shorter than the drain timeout.
    #[arg(long, env = "PUSHFLEET_DRAIN_SPREAD", default_value = "20s", value_parser = parse_duration)]
    pub drain_spread: Duration,

    /// StatsD address (`host:port`); metrics are off when unset.
    #[arg(long, env = "PUSHFLEET_STATSD")]
    pub statsd: Option<SocketAddr>,

    /// Prefix of every StatsD metric name.
    #[arg(long, env = "PUSHFLEET_STATSD_PREFIX", default_value = "pushfleet")]
    pub statsd_prefix: String,
}

/// A configuration that parsed but cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--zmq-connect {0:?} is not a tcp://host:port endpoint")]
    ZmqEndpoint(String),
    #[error("--etcd endpoint {0:?} must look like http://host:port")]
    EtcdEndpoint(String),
    #[error("--lease-ttl must be at least 2s and more than twice --load-interval")]
    LeaseTtl,
    #[error("--{0} must be at least {1}")]
    TooSmall(&'static str, u64),
    #[error("--heartbeat-timeout ({0:?}) must be longer than --heartbeat-interval ({1:?})")]
    Heartbeat(Duration, Duration),
    #[error("--drain-spread ({0:?}) must be shorter than --drain-timeout ({1:?})")]
    Drain(Duration, Duration),
    #[error("--listen and --admin-listen must differ (admin calls never share the public port)")]
    SamePort,
}

impl Config {
    /// Cross-field checks clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for endpoint in &self.zmq_connect {
            if !is_tcp_endpoint(endpoint) {
                return Err(ConfigError::ZmqEndpoint(endpoint.clone()));
            }
        }
        for endpoint in &self.etcd {
            if !is_etcd_endpoint(endpoint) {
                return Err(ConfigError::EtcdEndpoint(endpoint.clone()));
            }
        }
        let at_least = |name, value: usize, min: u64| {
            if (value as u64) < min {
                Err(ConfigError::TooSmall(name, min))
            } else {
                Ok(())
            }
        };
        at_least("max-connections", self.max_connections, 1)?;
        at_least("max-message-size", self.max_message_size, 125)?;
        at_least("max-publish-size", self.max_publish_size, 1)?;
        at_least("max-subscriptions", self.max_subscriptions, 1)?;
        at_least("send-queue", self.send_queue, 1)?;
        at_least("ingress-queue", self.ingress_queue, 1)?;
        if self.heartbeat_interval < Duration::from_millis(10) {
            return Err(ConfigError::TooSmall("heartbeat-interval (ms)", 10));
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Heartbeat(
                self.heartbeat_timeout,
                self.heartbeat_interval,
            ));
        }
        if self.drain_spread >= self.drain_timeout {
            return Err(ConfigError::Drain(self.drain_spread, self.drain_timeout));
        }
        if self.load_interval < Duration::from_millis(100) {
            return Err(ConfigError::TooSmall("load-interval (ms)", 100));
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl <= self.load_interval * 2 {
            return Err(ConfigError::LeaseTtl);
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::SamePort);
        }
        Ok(())
    }

    /// Where HAProxy reaches this edge: `--advertise-address`, or the listen address.
    pub fn advertise_address(&self, bound: SocketAddr) -> String {
        self.advertise_address.clone().unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                format!("127.0.0.1:{}", bound.port())
            } else {
                bound.to_string()
            }
        })
    }

    /// The edge's name: `--edge-id`, or `edge-<port>`.
    pub fn edge_id(&self, bound_port: u16) -> String {
        self.edge_id
            .clone()
            .unwrap_or_else(|| format!("edge-{bound_port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["pushfleet-server", "--zmq-connect", "tcp://127.0.0.1:5556"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config(&[]).validate(), Ok(()));
    }

    #[test]
    fn cross_field_rules() {
        let c = config(&["--heartbeat-interval", "30s", "--heartbeat-timeout", "10s"]);
        assert!(matches!(c.validate(), Err(ConfigError::Heartbeat(..))));
        let c = config(&["--drain-spread", "40s", "--drain-timeout", "30s"]);
        assert!(matches!(c.validate(), Err(ConfigError::Drain(..))));
        let c = config(&["--listen", "127.0.0.1:9", "--admin-listen", "127.0.0.1:9"]);
        assert_eq!(c.validate(), Err(ConfigError::SamePort));
        let c = config(&["--send-queue", "0"]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooSmall("send-queue", 1))
        ));
        let c = config(&["--zmq-connect", "udp://x:1"]);
        assert!(matches!(c.validate(), Err(ConfigError::ZmqEndpoint(_))));
        assert!(Config::try_parse_from([
            "x",
            "--zmq-connect",
            "tcp://a:1",
            "--deflate-level",
            "0"
        ])
        .is_err());
    }
}
