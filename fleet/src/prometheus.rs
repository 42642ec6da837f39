//! A small writer for the Prometheus text exposition format, version 0.0.4, behind
//! every `GET /metrics` (edge admin listener, relay HTTP API, herald status port).
//!
//! Each family gets its `# HELP` and `# TYPE` lines once, then its samples. Names
//! are `<prefix>_<name>` (`pushfleet_edge_ingress_received_total`); counters end in
//! `_total`. Every sample carries the writer's common labels (the process's id)
//! first, then its own; label values are escaped (`\\`, `\"`, `\n`). Values are
//! written as integers when they are whole, so counters below 2^53 are exact.
//! Catalogue of the families: `monitoring/METRICS.md`.

use std::fmt::Write as _;

/// The `Content-Type` of a 0.0.4 text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Builds one exposition: [`Exposition::family`] then its [`Exposition::sample`]s,
/// or the one-sample shortcuts [`Exposition::counter`] and [`Exposition::gauge`].
pub struct Exposition {
    prefix: String,
    common: String,
    family: String,
    out: String,
}

impl Exposition {
    /// Families named `<prefix>_<name>`; every sample labelled with `common`.
    pub fn new(prefix: &str, common: &[(&str, &str)]) -> Self {
        Self {
            prefix: prefix.to_owned(),
            common: label_pairs(common),
            family: String::new(),
            out: String::new(),
        }
    }

    /// Starts a family: writes its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, kind: Kind, name: &str, help: &str) -> &mut Self {
        self.family = format!("{}_{name}", self.prefix);
        debug_assert!(valid_name(&self.family), "bad metric name {}", self.family);
        debug_assert!(
            kind == Kind::Gauge || self.family.ends_with("_total"),
            "counter {} must end in _total",
            self.family
        );
        let _ = writeln!(self.out, "# HELP {} {}", self.family, escape_help(help));
        let _ = writeln!(self.out, "# TYPE {} {}", self.family, kind.as_str());
        self
    }

    /// One sample of the current family, with its own labels after the common ones.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let own = label_pairs(labels);
        let all = match (self.common.is_empty(), own.is_empty()) {
            (true, _) => own,
            (false, true) => self.common.clone(),
            (false, false) => format!("{},{own}", self.common),
        };
        self.out.push_str(&self.family);
        if !all.is_empty() {
            let _ = write!(self.out, "{{{all}}}");
        }
        let _ = writeln!(self.out, " {}", format_value(value));
        self
    }

    /// A counter family with one sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.family(Kind::Counter, name, help)
            .sample(&[], value as f64)
    }

    /// A gauge family with one sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(Kind::Gauge, name, help).sample(&[], value)
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// `a="x",b="y"`, values escaped.
fn label_pairs(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(name, value)| {
            debug_assert!(valid_name(name), "bad label name {name}");
            format!("{name}=\"{}\"", escape_label_value(value))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `# HELP` text: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Whole numbers without a fraction, the rest as Rust prints them; `NaN`, `+Inf`, `-Inf`.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 9.0e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("line\nnext"), "line\\nnext");
        assert_eq!(escape_label_value("plain-edge_1"), "plain-edge_1");
    }

    #[test]
    fn families_have_help_and_type_once_then_samples() {
        let mut e = Exposition::new("pushfleet_edge", &[("edge", "e\"1")]);
        e.counter("ingress_received_total", "Messages in.", 42)
            .family(Kind::Counter, "ingress_dropped_total", "Drops\nby reason.")
            .sample(&[("reason", "utf8")], 1.0)
            .sample(&[("reason", "data")], 0.0)
            .gauge("latency_p99_seconds", "p99", 0.0015);
        let text = e.finish();
        let expected = "\
# HELP pushfleet_edge_ingress_received_total Messages in.
# TYPE pushfleet_edge_ingress_received_total counter
pushfleet_edge_ingress_received_total{edge=\"e\\\"1\"} 42
# HELP pushfleet_edge_ingress_dropped_total Drops\\nby reason.
# TYPE pushfleet_edge_ingress_dropped_total counter
pushfleet_edge_ingress_dropped_total{edge=\"e\\\"1\",reason=\"utf8\"} 1
pushfleet_edge_ingress_dropped_total{edge=\"e\\\"1\",reason=\"data\"} 0
# HELP pushfleet_edge_latency_p99_seconds p99
# TYPE pushfleet_edge_latency_p99_seconds gauge
pushfleet_edge_latency_p99_seconds{edge=\"e\\\"1\"} 0.0015
";
        assert_eq!(text, expected);
    }

    #[test]
    fn samples_without_labels_have_no_braces() {
        let mut e = Exposition::new("p", &[]);
        e.gauge("up", "Up.", 1.0);
        assert!(e.finish().ends_with("\np_up 1\n"));
    }

    #[test]
    fn special_values_are_spelled_as_prometheus_reads_them() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(0.25), "0.25");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("pushfleet_edge_x_total"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("a.b"));
        assert!(!valid_name(""));
    }
}
