//! herald's configuration: flags with `HERALD_*` environment fallbacks, validated as
//! a whole before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use pushfleet_fleet::flags::{is_etcd_endpoint, parse_duration};

use crate::io::actuate::Actuator;
use crate::io::aws::AutoScaling;
use crate::policy::scale::ScalePolicy;
use crate::policy::score::{Capacity, Policy, SignalWeights};

/// Whether and how herald scales the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleMode {
    Off,
    DryRun,
    Exec,
    Aws,
}

/// herald: turns pushfleet edges' real load (from etcd) into HAProxy weights.
#[derive(Debug, Clone, Parser)]
#[command(name = "herald", version, about)]
pub struct Config {
    /// etcd endpoints (comma-separated `http://host:port`).
    #[arg(long, env = "PUSHFLEET_ETCD", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,

    /// etcd key prefix.
    #[arg(long, env = "PUSHFLEET_ETCD_PREFIX", default_value = pushfleet_protocol::registry::DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// This instance's name (logs, leader election, status page).
    #[arg(long, env = "HERALD_ID")]
    pub herald_id: Option<String>,

    /// StatsD address (`host:port`); metrics are off without it.
    #[arg(long, env = "PUSHFLEET_STATSD")]
    pub statsd: Option<SocketAddr>,

    /// Prefix of every StatsD metric name.
    #[arg(long, env = "PUSHFLEET_STATSD_PREFIX", default_value = "pushfleet")]
    pub statsd_prefix: String,

    /// HAProxy agent-check listener: HAProxy connects here and `agent-send`s the edge id.
    #[arg(long, env = "HERALD_AGENT_LISTEN", default_value = "0.0.0.0:5555")]
    pub agent_listen: SocketAddr,

    /// Status listener: `GET /status` (JSON) and `GET /` (a live page).
    #[arg(long, env = "HERALD_HTTP_LISTEN", default_value = "127.0.0.1:8090")]
    pub http_listen: SocketAddr,

    /// HAProxy runtime API sockets to push weights, states and fleet membership to
    /// (the leader only): `unix:/run/haproxy/admin.sock` or `127.0.0.1:9999`,
    /// comma-separated. Without it herald only answers agent checks.
    #[arg(long, env = "HERALD_HAPROXY_RUNTIME", value_delimiter = ',')]
    pub haproxy_runtime: Vec<String>,

    /// The HAProxy backend holding the edges.
    #[arg(long, env = "HERALD_HAPROXY_BACKEND", default_value = "edges")]
    pub haproxy_backend: String,

    /// Name prefix of the backend's `server-template` slots (`edge` → edge1, edge2, …).
    #[arg(long, env = "HERALD_HAPROXY_SLOT_PREFIX", default_value = "edge")]
    pub haproxy_slot_prefix: String,

    /// Number of `server-template` slots (the N of `1-N` in haproxy.cfg).
    #[arg(long, env = "HERALD_HAPROXY_SLOTS", default_value_t = 16)]
    pub haproxy_slots: u32,

    /// Autoscaling (leader only): `off`, `dry-run` (decide and log), `exec` (run
    /// `--scale-exec` for each decision), or `aws` (EC2 Auto Scaling group
    /// `--aws-edge-group`, with its termination lifecycle hook).
    #[arg(long, env = "HERALD_SCALE", value_enum, default_value_t = ScaleMode::Off)]
    pub scale: ScaleMode,

    /// Shell command for `--scale exec`; the decision is in its environment
    /// (`PUSHFLEET_SCALE_ACTION`, `PUSHFLEET_EDGE_ID`, `PUSHFLEET_SCALE_REASON`).
    #[arg(long, env = "HERALD_SCALE_EXEC")]
    pub scale_exec: Option<String>,

    /// The edges' EC2 Auto Scaling group, for `--scale aws`. Edges there must run
    /// with their instance id as `--edge-id`.
    #[arg(long, env = "HERALD_AWS_EDGE_GROUP")]
    pub aws_edge_group: Option<String>,
    /// The group's lifecycle hook on `autoscaling:EC2_INSTANCE_TERMINATING`.
    #[arg(
        long,
        env = "HERALD_AWS_LIFECYCLE_HOOK",
        default_value = "pushfleet-edge-drain"
    )]
    pub aws_lifecycle_hook: String,
    /// How often herald looks for instances held by the hook (`Terminating:Wait`).
    #[arg(long, env = "HERALD_AWS_POLL", default_value = "5s", value_parser = parse_duration)]
    pub aws_poll: Duration,
    /// Longest herald waits for a terminating instance's edge to drain and leave
    /// before letting the termination go on anyway.
    #[arg(long, env = "HERALD_AWS_DRAIN_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub aws_drain_timeout: Duration,

    /// Scale out when the fleet's mean load stays above this (1.0 = at capacity).
    #[arg(long, env = "HERALD_SCALE_HIGH", default_value_t = ScalePolicy::default().high)]
    pub scale_high: f64,
    /// Scale in when it stays below this.
    #[arg(long, env = "HERALD_SCALE_LOW", default_value_t = ScalePolicy::default().low)]
    pub scale_low: f64,
    /// Scale out when any edge's memory signal stays above this.
    #[arg(long, env = "HERALD_SCALE_MEMORY_HIGH", default_value_t = ScalePolicy::default().memory_high)]
    pub scale_memory_high: f64,
    /// How long a watermark must hold before acting.
    #[arg(long, env = "HERALD_SCALE_SUSTAIN", default_value = "60s", value_parser = parse_duration)]
    pub scale_sustain: Duration,
    /// Pause after each action.
    #[arg(long, env = "HERALD_SCALE_COOLDOWN", default_value = "180s", value_parser = parse_duration)]
    pub scale_cooldown: Duration,
    /// Fewest edges serving.
    #[arg(long, env = "HERALD_SCALE_MIN", default_value_t = ScalePolicy::default().min_edges)]
    pub scale_min: usize,
    /// Most edges serving.
    #[arg(long, env = "HERALD_SCALE_MAX", default_value_t = ScalePolicy::default().max_edges)]
    pub scale_max: usize,

    /// How often scores and weights are recomputed.
    #[arg(long, env = "HERALD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// An edge whose report has not changed for this long is stale: it keeps the floor
    /// weight. When no edge at all has reported for this long, herald assumes etcd is
    /// unreachable and holds every weight as it was (fail-static).
    #[arg(long, env = "HERALD_STALE_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub stale_after: Duration,

    /// Weight given to each signal in an edge's load score (relative; 0 ignores it).
    #[arg(long, env = "HERALD_WEIGHT_CPU", default_value_t = SignalWeights::default().cpu)]
    pub weight_cpu: f64,
    #[arg(long, env = "HERALD_WEIGHT_MSGS_OUT", default_value_t = SignalWeights::default().msgs_out)]
    pub weight_msgs_out: f64,
    #[arg(long, env = "HERALD_WEIGHT_CONNECTIONS", default_value_t = SignalWeights::default().connections)]
    pub weight_connections: f64,
    #[arg(long, env = "HERALD_WEIGHT_QUEUE", default_value_t = SignalWeights::default().queue)]
    pub weight_queue: f64,
    #[arg(long, env = "HERALD_WEIGHT_P99", default_value_t = SignalWeights::default().p99)]
    pub weight_p99: f64,
    #[arg(long, env = "HERALD_WEIGHT_MEMORY", default_value_t = SignalWeights::default().memory)]
    pub weight_memory: f64,

    /// Deliveries per second one edge is sized for (the msgs-out signal's 100%).
    #[arg(long, env = "HERALD_CAPACITY_MSGS_OUT", default_value_t = Capacity::default().msgs_out_per_s)]
    pub capacity_msgs_out: f64,
    /// Send-queue depth counted as 100%.
    #[arg(long, env = "HERALD_CAPACITY_QUEUE", default_value_t = Capacity::default().queue_depth)]
    pub capacity_queue: f64,
    /// p99 publish-to-socket latency counted as 100%.
    #[arg(long, env = "HERALD_CAPACITY_P99", default_value = "50ms", value_parser = parse_duration)]
    pub capacity_p99: Duration,
    /// Edge RSS counted as 100%, in MiB.
    #[arg(long, env = "HERALD_CAPACITY_MEMORY_MIB", default_value_t = Capacity::default().rss_mib)]
    pub capacity_memory_mib: f64,

    /// Lowest weight a healthy edge gets, in percent of its configured weight: even an
    /// over-capacity fleet never drives an edge to 0.
    #[arg(long, env = "HERALD_FLOOR", default_value_t = Policy::default().floor)]
    pub floor: u32,
    /// Highest weight, in percent (HAProxy caps the effective weight at 256).
    #[arg(long, env = "HERALD_CEILING", default_value_t = Policy::default().ceiling)]
    pub ceiling: u32,
    /// Smoothing of load scores between evaluations (0: none, towards 1: slower).
    #[arg(long, env = "HERALD_SMOOTHING", default_value_t = Policy::default().smoothing)]
    pub smoothing: f64,
    /// How fast weights follow a load difference, per evaluation (0 < gain ≤ 1).
    #[arg(long, env = "HERALD_GAIN", default_value_t = Policy::default().gain)]
    pub gain: f64,
    /// A weight moves only when the new one differs by at least this many percent
    /// points: stops weights from flapping on noise.
    #[arg(long, env = "HERALD_HYSTERESIS", default_value_t = Policy::default().hysteresis)]
    pub hysteresis: u32,
}

/// A configuration that parsed but cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--etcd endpoint {0:?} must look like http://host:port")]
    EtcdEndpoint(String),
    #[error("--floor ({0}) must be between 1 and --ceiling ({1}), and --ceiling at most 256")]
    Range(u32, u32),
    #[error("--smoothing must be in [0, 1)")]
    Smoothing,
    #[error("--gain must be in (0, 1]")]
    Gain,
    #[error("signal weights must be non-negative, and at least one above 0")]
    Weights,
    #[error("capacities must be above 0")]
    Capacity,
    #[error("--interval must be at least 100ms and --stale-after longer than it")]
    Timing,
    #[error("--haproxy-runtime {0:?}: {1}")]
    Runtime(String, String),
    #[error("--scale exec needs --scale-exec COMMAND")]
    ScaleExec,
    #[error("--scale aws needs --aws-edge-group NAME (and a non-empty --aws-lifecycle-hook, --aws-poll of at least 1s)")]
    ScaleAws,
    #[error("scaling needs 0 < --scale-low < --scale-high and 1 <= --scale-min <= --scale-max")]
    ScaleRange,
}

impl Config {
    /// Cross-field checks clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self.etcd.iter().find(|e| !is_etcd_endpoint(e)) {
            return Err(ConfigError::EtcdEndpoint(bad.clone()));
        }
        if self.floor < 1 || self.floor > self.ceiling || self.ceiling > 256 {
            return Err(ConfigError::Range(self.floor, self.ceiling));
        }
        if !(0.0..1.0).contains(&self.smoothing) {
            return Err(ConfigError::Smoothing);
        }
        if !(self.gain > 0.0 && self.gain <= 1.0) {
            return Err(ConfigError::Gain);
        }
        let w = self.policy().weights;
        let all = [w.cpu, w.msgs_out, w.connections, w.queue, w.p99, w.memory];
        if all.iter().any(|x| !x.is_finite() || *x < 0.0) || all.iter().sum::<f64>() <= 0.0 {
            return Err(ConfigError::Weights);
        }
        let c = self.policy().capacity;
        let caps = [c.msgs_out_per_s, c.queue_depth, c.p99_us, c.rss_mib];
        if caps.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            return Err(ConfigError::Capacity);
        }
        if self.interval < Duration::from_millis(100) || self.stale_after <= self.interval {
            return Err(ConfigError::Timing);
        }
        if self.scale == ScaleMode::Exec && self.scale_exec.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::ScaleExec);
        }
        if self.scale == ScaleMode::Aws
            && (self.aws_edge_group.as_deref().is_none_or(str::is_empty)
                || self.aws_lifecycle_hook.is_empty()
                || self.aws_poll < Duration::from_secs(1))
        {
            return Err(ConfigError::ScaleAws);
        }
        if !(self.scale_low > 0.0 && self.scale_low < self.scale_high)
            || self.scale_min < 1
            || self.scale_min > self.scale_max
        {
            return Err(ConfigError::ScaleRange);
        }
        for addr in &self.haproxy_runtime {
            if let Err(e) = crate::io::haproxy::RuntimeAddr::parse(addr) {
                return Err(ConfigError::Runtime(addr.clone(), e.to_string()));
            }
        }
        Ok(())
    }

    /// The scoring policy these flags describe.
    pub fn policy(&self) -> Policy {
        Policy {
            weights: SignalWeights {
                cpu: self.weight_cpu,
                msgs_out: self.weight_msgs_out,
                connections: self.weight_connections,
                queue: self.weight_queue,
                p99: self.weight_p99,
                memory: self.weight_memory,
            },
            capacity: Capacity {
                msgs_out_per_s: self.capacity_msgs_out,
                queue_depth: self.capacity_queue,
                p99_us: self.capacity_p99.as_secs_f64() * 1e6,
                rss_mib: self.capacity_memory_mib,
            },
            floor: self.floor,
            ceiling: self.ceiling,
            smoothing: self.smoothing,
            gain: self.gain,
            hysteresis: self.hysteresis,
            stale_after: self.stale_after,
        }
    }

    /// The scaler's thresholds.
    pub fn scale_policy(&self) -> ScalePolicy {
        ScalePolicy {
            high: self.scale_high,
            low: self.scale_low,
            memory_high: self.scale_memory_high,
            sustain: self.scale_sustain,
            min_edges: self.scale_min,
            max_edges: self.scale_max,
            cooldown: self.scale_cooldown,
            ..ScalePolicy::default()
        }
    }

    /// The actuator, when scaling is on; `--scale aws` loads the AWS configuration
    /// from the environment, and fails when it names no region.
    pub async fn actuator(&self) -> Result<Option<Actuator>, String> {
        Ok(match self.scale {
            ScaleMode::Off => None,
            ScaleMode::DryRun => Some(Actuator::DryRun),
            ScaleMode::Exec => Some(Actuator::Exec(self.scale_exec.clone().unwrap_or_default())),
            ScaleMode::Aws => Some(Actuator::Aws(
                AutoScaling::from_env(
                    self.aws_edge_group.as_deref().unwrap_or_default(),
                    &self.aws_lifecycle_hook,
                )
                .await?,
            )),
        })
    }

    /// This instance's name: `--herald-id`, or `herald-<agent port>`.
    pub fn herald_id(&self) -> String {
        self.herald_id
            .clone()
            .unwrap_or_else(|| format!("herald-{}", self.agent_listen.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Config {
        let mut args = vec!["herald", "--etcd", "http://127.0.0.1:2379"];
        args.extend_from_slice(extra);
        Config::try_parse_from(args).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config(&[]).validate(), Ok(()));
        let aws = config(&["--scale", "aws", "--aws-edge-group", "edges"]);
        assert_eq!(aws.validate(), Ok(()));
        assert_eq!(aws.aws_lifecycle_hook, "pushfleet-edge-drain");
    }

    #[test]
    fn cross_field_rules() {
        let bad = [
            (vec!["--floor", "0"], "--floor"),
            (vec!["--floor", "50", "--ceiling", "40"], "--floor"),
            (vec!["--ceiling", "300"], "at most 256"),
            (vec!["--smoothing", "1"], "smoothing"),
            (vec!["--gain", "0"], "gain"),
            (vec!["--weight-cpu=-1"], "non-negative"),
            (
                vec![
                    "--weight-cpu",
                    "0",
                    "--weight-msgs-out",
                    "0",
                    "--weight-connections",
                    "0",
                    "--weight-queue",
                    "0",
                    "--weight-p99",
                    "0",
                    "--weight-memory",
                    "0",
                ],
                "at least one",
            ),
            (vec!["--capacity-msgs-out", "0"], "capacities"),
            (
                vec!["--stale-after", "1s", "--interval", "1s"],
                "stale-after",
            ),
            (vec!["--scale", "exec"], "--scale-exec"),
            (vec!["--scale", "aws"], "--aws-edge-group"),
            (
                vec![
                    "--scale",
                    "aws",
                    "--aws-edge-group",
                    "edges",
                    "--aws-poll",
                    "100ms",
                ],
                "--aws-poll",
            ),
        ];
        for (args, expected) in bad {
            let e = config(&args).validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{args:?}: {e}");
        }
    }
}
