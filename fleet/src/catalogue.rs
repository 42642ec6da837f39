//! One metric table per binary, and the sinks it drives.
//!
//! A binary describes each of its metrics once, as a [`Metric`] row: its name (the
//! StatsD name, and the key of `monitoring/METRICS.md`), kind, unit, help text, where
//! it is shown, and how to read it from a snapshot of the binary's counters. From that
//! one table come `/stats` ([`stats_json`]), `GET /metrics` ([`prometheus()`]), the
//! once-a-second StatsD report ([`StatsdReport`]) and the sum of losses a load report
//! carries ([`losses`]); [`names`] lists what each sink exports, which a test holds
//! against `monitoring/METRICS.md`.
//!
//! Naming rules, applied here so no binary spells a name twice:
//! - a labelled metric (`ingress.dropped` by `reason`) is one Prometheus family with a
//!   label, and one StatsD name per label value (`ingress.dropped.frames`);
//! - the Prometheus family is the name with `.` turned into `_`, counters end in
//!   `_total`, and a metric in microseconds (`_us`) is exported in `_seconds`;
//! - `/stats` paths are given per row, because `/stats` predates the catalogue and its
//!   field names are an API (`msgs_in`, `drops.ingress.<reason>`).

use std::collections::BTreeSet;

use cadence::{Counted, Gauged, StatsdClient};
use serde_json::{Map, Value};

use crate::prometheus::{self, Exposition};
use crate::statsd::path_part;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Only grows; StatsD gets its increase over each report, Prometheus its total.
    Counter,
    /// A level, reported as it is.
    Gauge,
    /// Samples sent to StatsD as they happen (from the hot path, sampled), never
    /// polled: a timer row documents the name; no renderer reads it.
    Timer,
}

impl Kind {
    /// The word `monitoring/METRICS.md` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Timer => "timer",
        }
    }
}

/// A label: its Prometheus name and every value it takes, in the order of a
/// [`Reading::Each`] (empty for a label read as [`Reading::Keyed`]).
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// A value read from a snapshot: one number, one per value of a fixed label, or one
/// per key of a label whose values come and go (herald's edges).
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    One(u64),
    Each(Vec<u64>),
    Keyed(Vec<(String, u64)>),
}

impl Reading {
    fn total(&self) -> u64 {
        match self {
            Reading::One(v) => *v,
            Reading::Each(vs) => vs.iter().sum(),
            Reading::Keyed(kvs) => kvs.iter().map(|(_, v)| v).sum(),
        }
    }

    /// (label value, number) pairs, for a labelled metric.
    fn labelled(self, label: Label) -> Vec<(String, u64)> {
        match self {
            Reading::Each(values) => label
                .values
                .iter()
                .map(|v| (*v).to_owned())
                .zip(values)
                .collect(),
            Reading::Keyed(kvs) => kvs,
            Reading::One(v) => vec![(String::new(), v)],
        }
    }
}

/// One metric of a binary whose counters are snapshotted as `S`.
pub struct Metric<S> {
    /// The catalogue name: dotted, as sent to StatsD (a labelled metric's prefix).
    pub name: &'static str,
    pub kind: Kind,
    /// What one unit is (`messages`, `bytes`, `µs`…); `µs` metrics are exported to
    /// Prometheus in seconds.
    pub unit: &'static str,
    /// One line: the Prometheus `# HELP` text.
    pub help: &'static str,
    pub label: Option<Label>,
    /// Its `/stats` field (a dotted path; a labelled metric's object), if shown there.
    pub stats: Option<&'static str>,
    /// Exported on `GET /metrics`.
    pub prometheus: bool,
    /// The Prometheus family where it is not the name's (see the module's rules).
    pub prometheus_as: Option<&'static str>,
    /// Sent to StatsD.
    pub statsd: bool,
    /// A message lost at this stage: summed into a load report's `dropped`.
    pub loss: bool,
    /// How to read it.
    pub read: fn(&S) -> Reading,
}

impl<S> Metric<S> {
    const fn new(
        kind: Kind,
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        read: fn(&S) -> Reading,
    ) -> Self {
        Self {
            name,
            kind,
            unit,
            help,
            label: None,
            stats: None,
            prometheus: true,
            prometheus_as: None,
            statsd: true,
            loss: false,
            read,
        }
    }

    /// A counter exported everywhere but `/stats` (add it with [`Metric::stats`]).
    pub const fn counter(
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        read: fn(&S) -> Reading,
    ) -> Self {
        Self::new(Kind::Counter, name, unit, help, read)
    }

    /// A gauge exported everywhere but `/stats`.
    pub const fn gauge(
        name: &'static str,
        unit: &'static str,
        help: &'static str,
        read: fn(&S) -> Reading,
    ) -> Self {
        Self::new(Kind::Gauge, name, unit, help, read)
    }

    /// A StatsD timer sent from the hot path.
    pub const fn timer(name: &'static str, unit: &'static str, help: &'static str) -> Self {
        let mut m = Self::new(Kind::Timer, name, unit, help, |_| Reading::One(0));
        m.prometheus = false;
        m
    }

    /// Shown on `/stats` at `path`.
    pub const fn stats(mut self, path: &'static str) -> Self {
        self.stats = Some(path);
        self
    }

    /// One value per `values` of label `name`.
    pub const fn by(mut self, name: &'static str, values: &'static [&'static str]) -> Self {
        self.label = Some(Label { name, values });
        self
    }

    /// One value per key of label `name`, keys read with the value.
    pub const fn by_key(mut self, name: &'static str) -> Self {
        self.label = Some(Label { name, values: &[] });
        self
    }

    /// Exported on `GET /metrics` as family `name` (an exception to the rules).
    pub const fn prometheus_as(mut self, name: &'static str) -> Self {
        self.prometheus_as = Some(name);
        self
    }

    /// Counts lost messages.
    pub const fn loss(mut self) -> Self {
        self.loss = true;
        self
    }

    /// Not exported on `GET /metrics`.
    pub const fn no_prometheus(mut self) -> Self {
        self.prometheus = false;
        self
    }

    /// Not sent to StatsD.
    pub const fn no_statsd(mut self) -> Self {
        self.statsd = false;
        self
    }

    /// The Prometheus family name, without the binary's prefix.
    pub fn prometheus_name(&self) -> String {
        if let Some(name) = self.prometheus_as {
            return name.to_owned();
        }
        let base = self.name.replace('.', "_");
        match self.kind {
            Kind::Counter => format!("{base}_total"),
            _ if self.unit == MICROS => {
                format!("{}_seconds", base.strip_suffix("_us").unwrap_or(&base))
            }
            _ => base,
        }
    }

    /// What one unit is worth in Prometheus, where times are in seconds and ratios
    /// are fractions.
    fn prometheus_scale(&self) -> f64 {
        match self.unit {
            MICROS => 1e-6,
            PERMILLE => 1e-3,
            _ => 1.0,
        }
    }

    /// Every (StatsD name, value) this metric's reading yields; a key is made one
    /// Graphite node.
    fn statsd_values(&self, reading: Reading) -> Vec<(String, u64)> {
        match self.label {
            Some(label) => reading
                .labelled(label)
                .into_iter()
                .map(|(v, n)| (format!("{}.{}", self.name, path_part(&v)), n))
                .collect(),
            None => vec![(self.name.to_owned(), reading.total())],
        }
    }
}

/// The unit of microsecond metrics (exported to Prometheus in seconds).
pub const MICROS: &str = "µs";
/// The unit of per-mille metrics (exported to Prometheus as a fraction of 1).
pub const PERMILLE: &str = "‰";

/// Writes every `/stats` row of `catalogue` into `into`, at its dotted path.
pub fn stats_json<S>(catalogue: &[Metric<S>], snapshot: &S, into: &mut Map<String, Value>) {
    for m in catalogue {
        let Some(path) = m.stats else { continue };
        let reading = (m.read)(snapshot);
        match m.label {
            Some(label) => {
                for (v, n) in reading.labelled(label) {
                    insert(into, &format!("{path}.{v}"), Value::from(n));
                }
            }
            None => insert(into, path, Value::from(reading.total())),
        }
    }
}

/// Sets `path` (dotted) in `into`, creating the objects on the way.
pub fn insert(into: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            into.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = into
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(child) = child {
                insert(child, rest, value);
            }
        }
    }
}

/// Writes every Prometheus row of `catalogue`.
pub fn prometheus<S>(catalogue: &[Metric<S>], snapshot: &S, e: &mut Exposition) {
    for m in catalogue.iter().filter(|m| m.prometheus) {
        let kind = match m.kind {
            Kind::Counter => prometheus::Kind::Counter,
            Kind::Gauge => prometheus::Kind::Gauge,
            Kind::Timer => continue,
        };
        let scale = m.prometheus_scale();
        e.family(kind, &m.prometheus_name(), m.help);
        let reading = (m.read)(snapshot);
        match m.label {
            Some(label) => {
                for (v, n) in reading.labelled(label) {
                    e.sample(&[(label.name, v.as_str())], n as f64 * scale);
                }
            }
            None => {
                e.sample(&[], reading.total() as f64 * scale);
            }
        }
    }
}

/// Sum of every [`Metric::loss`] row: the messages lost so far.
pub fn losses<S>(catalogue: &[Metric<S>], snapshot: &S) -> u64 {
    catalogue
        .iter()
        .filter(|m| m.loss)
        .map(|m| (m.read)(snapshot).total())
        .sum()
}

/// The once-a-second StatsD report of a catalogue: every counter's increase since the
/// last report (only non-zero increases are sent), and every gauge.
pub struct StatsdReport {
    previous: Vec<(String, u64)>,
}

impl StatsdReport {
    /// Starts from the counters as they are now, so the first report sends only what
    /// happened since.
    pub fn new<S>(catalogue: &[Metric<S>], snapshot: &S) -> Self {
        Self {
            previous: counters(catalogue, snapshot),
        }
    }

    /// Sends one report.
    pub fn send<S>(&mut self, catalogue: &[Metric<S>], snapshot: &S, client: &StatsdClient) {
        let now = counters(catalogue, snapshot);
        for ((name, value), (_, before)) in now.iter().zip(&self.previous) {
            let delta = value.saturating_sub(*before);
            if delta > 0 {
                let _ = client.count(name, delta);
            }
        }
        self.previous = now;
        for m in catalogue
            .iter()
            .filter(|m| m.statsd && m.kind == Kind::Gauge)
        {
            for (name, value) in m.statsd_values((m.read)(snapshot)) {
                let _ = client.gauge(&name, value);
            }
        }
    }
}

/// Every StatsD counter as (name, cumulative value), in catalogue order.
fn counters<S>(catalogue: &[Metric<S>], snapshot: &S) -> Vec<(String, u64)> {
    catalogue
        .iter()
        .filter(|m| m.statsd && m.kind == Kind::Counter)
        .flat_map(|m| m.statsd_values((m.read)(snapshot)))
        .collect()
}

/// Where a catalogue's metrics are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// `/stats` field paths, label values expanded.
    Stats,
    /// Prometheus family names (without the binary's prefix).
    Prometheus,
    /// StatsD names, label values expanded.
    Statsd,
}

/// Every name `sink` exports, as (name, kind); a keyed label's values are written
/// `<label>` (`weight.<edge>`).
pub fn names<S>(catalogue: &[Metric<S>], sink: Sink) -> BTreeSet<(String, Kind)> {
    let expand = |base: &str, m: &Metric<S>| -> Vec<String> {
        match m.label {
            Some(label) if label.values.is_empty() => vec![format!("{base}.<{}>", label.name)],
            Some(label) => label.values.iter().map(|v| format!("{base}.{v}")).collect(),
            None => vec![base.to_owned()],
        }
    };
    catalogue
        .iter()
        .flat_map(|m| {
            let names = match sink {
                Sink::Stats => m.stats.map(|p| expand(p, m)).unwrap_or_default(),
                Sink::Prometheus if m.prometheus => vec![m.prometheus_name()],
                Sink::Prometheus => Vec::new(),
                Sink::Statsd if m.statsd => expand(m.name, m),
                Sink::Statsd => Vec::new(),
            };
            names.into_iter().map(move |n| (n, m.kind))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Snap {
        received: u64,
        dropped: [u64; 2],
        latency_us: u64,
    }

    const REASONS: &[&str] = &["full", "bad"];

    static TABLE: [Metric<Snap>; 4] = [
        Metric::counter("in.received", "messages", "Taken in.", |s: &Snap| {
            Reading::One(s.received)
        })
        .stats("msgs_in"),
        Metric::counter(
            "in.dropped",
            "messages",
            "Dropped, by reason.",
            |s: &Snap| Reading::Each(s.dropped.to_vec()),
        )
        .by("reason", REASONS)
        .stats("drops.in")
        .loss(),
        Metric::gauge("latency.p99_us", MICROS, "p99.", |s: &Snap| {
            Reading::One(s.latency_us)
        })
        .stats("latency_us.p99"),
        Metric::timer("deliver.latency_us", MICROS, "Sampled latency."),
    ];

    fn snap() -> Snap {
        Snap {
            received: 10,
            dropped: [2, 3],
            latency_us: 1500,
        }
    }

    #[test]
    fn stats_nests_paths_and_labels() {
        let mut out = Map::new();
        stats_json(&TABLE, &snap(), &mut out);
        assert_eq!(
            Value::Object(out),
            serde_json::json!({
                "msgs_in": 10,
                "drops": {"in": {"full": 2, "bad": 3}},
                "latency_us": {"p99": 1500},
            })
        );
    }

    #[test]
    fn prometheus_names_labels_and_seconds() {
        let mut e = Exposition::new("p_x", &[("id", "a")]);
        prometheus(&TABLE, &snap(), &mut e);
        let text = e.finish();
        assert!(text.contains(
            "# TYPE p_x_in_received_total counter\np_x_in_received_total{id=\"a\"} 10\n"
        ));
        assert!(text.contains("p_x_in_dropped_total{id=\"a\",reason=\"bad\"} 3\n"));
        assert!(text.contains(
            "# TYPE p_x_latency_p99_seconds gauge\np_x_latency_p99_seconds{id=\"a\"} 0.0015\n"
        ));
        assert!(!text.contains("deliver"), "timers are not polled: {text}");
    }

    #[test]
    fn losses_sum_loss_rows() {
        assert_eq!(losses(&TABLE, &snap()), 5);
    }

    #[test]
    fn names_per_sink() {
        let statsd: Vec<String> = names(&TABLE, Sink::Statsd)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            statsd,
            [
                "deliver.latency_us",
                "in.dropped.bad",
                "in.dropped.full",
                "in.received",
                "latency.p99_us"
            ]
        );
        let stats = names(&TABLE, Sink::Stats);
        assert!(stats.contains(&("drops.in.full".to_owned(), Kind::Counter)));
        let prom: Vec<String> = names(&TABLE, Sink::Prometheus)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            prom,
            [
                "in_dropped_total",
                "in_received_total",
                "latency_p99_seconds"
            ]
        );
    }

    #[test]
    fn keyed_labels_and_renamed_families() {
        static KEYED: [Metric<Vec<(String, u64)>>; 1] = [Metric::gauge(
            "load_permille",
            PERMILLE,
            "Load by edge.",
            |s: &Vec<(String, u64)>| Reading::Keyed(s.clone()),
        )
        .by_key("edge")
        .prometheus_as("load")];
        let snap = vec![("e.1".to_owned(), 250), ("e2".to_owned(), 1000)];
        let mut e = Exposition::new("h", &[]);
        prometheus(&KEYED, &snap, &mut e);
        let text = e.finish();
        assert!(
            text.contains("h_load{edge=\"e.1\"} 0.25\nh_load{edge=\"e2\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            KEYED[0].statsd_values(Reading::Keyed(snap)),
            [
                ("load_permille.e_1".to_owned(), 250),
                ("load_permille.e2".to_owned(), 1000)
            ]
        );
        let names: Vec<String> = names(&KEYED, Sink::Statsd)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["load_permille.<edge>"]);
    }

    #[test]
    fn statsd_counters_expand_labels_in_order() {
        assert_eq!(
            counters(&TABLE, &snap()),
            [
                ("in.received".to_owned(), 10),
                ("in.dropped.full".to_owned(), 2),
                ("in.dropped.bad".to_owned(), 3)
            ]
        );
    }
}
