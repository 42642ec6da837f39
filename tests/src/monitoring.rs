//! The local monitoring pipeline (`monitoring/pipeline.sh`: Etsy StatsD → carbon-cache
//! → graphite-web) as a test process on free ports, graphite-web's render API, and an
//! evaluator for the Grafana alert rules in
//! `monitoring/grafana/provisioning/alerting/pushfleet-alerts.yaml`.
//!
//! The evaluator does what Grafana's alerting does with those rules, minus the
//! scheduling: it sends each Graphite query of a rule to graphite-web over the rule's
//! own relative time range, reduces every returned series with the rule's reduce
//! expression and applies the rule's threshold expression. Thresholds, windows and
//! reducers are read from the provisioning file, never repeated here, so the test
//! proves the rules as shipped. (`for:` pending periods and notifications are
//! Grafana's business and are not simulated: a rule "fires" here when its condition
//! holds at evaluation time.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::http_body;
use crate::process::log_dir;
use crate::{free_port, workspace_root};

/// How long the pipeline may take to print `monitoring: ready` (first start runs
/// graphite-web's database migrations).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `monitoring/pipeline.sh`, stopped by PID (SIGTERM, which the script
/// forwards to its children by PID) when dropped.
pub struct Pipeline {
    child: Child,
    pub statsd_port: u16,
    pub statsd_admin_port: u16,
    pub carbon_port: u16,
    pub graphite_port: u16,
    /// `MONITORING_DIR`: configuration, whisper files, logs, the children's PIDs.
    pub dir: PathBuf,
    log: PathBuf,
}

impl Pipeline {
    /// Starts the pipeline on free loopback ports with its state in a fresh
    /// directory under `target/test-logs`, and waits until it reports ready.
    pub fn start() -> Pipeline {
        let statsd_port = free_port();
        let statsd_admin_port = free_port();
        let carbon_port = free_port();
        let carbon_pickle_port = free_port();
        let carbon_query_port = free_port();
        let graphite_port = free_port();
        let dir = log_dir().join(format!("monitoring-{graphite_port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let log = log_dir().join(format!("monitoring-{graphite_port}.log"));
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let script = workspace_root().join("monitoring").join("pipeline.sh");
        let child = Command::new("bash")
            .arg(&script)
            .env("STATSD_PORT", statsd_port.to_string())
            .env("STATSD_ADMIN_PORT", statsd_admin_port.to_string())
            .env("CARBON_PORT", carbon_port.to_string())
            .env("CARBON_PICKLE_PORT", carbon_pickle_port.to_string())
            .env("CARBON_QUERY_PORT", carbon_query_port.to_string())
            .env("GRAPHITE_PORT", graphite_port.to_string())
            .env("MONITORING_DIR", &dir)
            .env("STATSD_FLUSH_MS", "1000")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let mut pipeline = Pipeline {
            child,
            statsd_port,
            statsd_admin_port,
            carbon_port,
            graphite_port,
            dir,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if pipeline
                .log_text()
                .lines()
                .any(|l| l == "monitoring: ready")
            {
                return pipeline;
            }
            if let Ok(Some(status)) = pipeline.child.try_wait() {
                panic!(
                    "monitoring/pipeline.sh exited ({status}) before it was ready:\n{}",
                    pipeline.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "monitoring/pipeline.sh not ready after {READY_TIMEOUT:?}:\n{}",
                pipeline.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where the fleet sends its metrics (`--statsd`).
    pub fn statsd_addr(&self) -> String {
        format!("127.0.0.1:{}", self.statsd_port)
    }

    /// graphite-web's base URL.
    pub fn graphite_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.graphite_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/render?target=…&from=…&format=json` (`from` in Graphite's syntax: `-5min`,
    /// `-300s`); panics with graphite-web's answer if the query fails.
    pub fn render(&self, target: &str, from: &str) -> Vec<Series> {
        self.render_range(target, from, "now")
            .unwrap_or_else(|e| panic!("render {target}: {e}"))
    }

    /// `/render` over `from`..`until`; `Err` carries graphite-web's status and body
    /// (a bad target is a 400 or 500 with the parser's message).
    pub fn render_range(
        &self,
        target: &str,
        from: &str,
        until: &str,
    ) -> Result<Vec<Series>, String> {
        let path = format!(
            "/render?target={}&from={}&until={}&format=json",
            url_encode(target),
            url_encode(from),
            url_encode(until)
        );
        let addr = format!("127.0.0.1:{}", self.graphite_port);
        let (status, body) = http_body("GET", &addr, &path, "")
            .ok_or_else(|| format!("no answer from graphite-web at {addr}"))?;
        if status != 200 {
            let head: String = body.chars().take(2000).collect();
            return Err(format!("graphite-web answered {status}: {head}"));
        }
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
        Ok(json
            .as_array()
            .map(|all| all.iter().map(Series::from_json).collect())
            .unwrap_or_default())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // SIGTERM by PID: the script stops its children by PID and exits 0.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Whatever the script could not stop (it was killed, say) is in run/pids:
        // our own children, each ended by its PID.
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("run").join("pids")) {
            for pid in pids.lines().filter(|p| p.parse::<u32>().is_ok()) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- monitoring pipeline log ({}) ---\n{}\n(state and per-daemon logs in {})",
                self.log.display(),
                self.log_text(),
                self.dir.display()
            );
        } else {
            // Whisper files are most of it; the logs go with them on success.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One series of a `/render` answer.
#[derive(Debug, Clone)]
pub struct Series {
    pub target: String,
    /// (value, unix time); `None` where nothing was written for that second.
    pub points: Vec<(Option<f64>, i64)>,
}

impl Series {
    fn from_json(v: &Value) -> Series {
        let points = v["datapoints"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| (p[0].as_f64(), p[1].as_i64().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        Series {
            target: v["target"].as_str().unwrap_or_default().to_owned(),
            points,
        }
    }

    /// The non-null values, oldest first.
    pub fn values(&self) -> Vec<f64> {
        self.points.iter().filter_map(|(v, _)| *v).collect()
    }

    /// Sum of the non-null values.
    pub fn sum(&self) -> f64 {
        self.values().iter().sum()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The alert rule file shipped in the repository.
pub fn alert_rules_file() -> PathBuf {
    workspace_root().join("monitoring/grafana/provisioning/alerting/pushfleet-alerts.yaml")
}

/// Reads a YAML file into JSON with PyYAML (the test crate has no YAML parser; the
/// validator uses the same library).
pub fn yaml_to_json(path: &Path) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    assert!(
        out.status.success(),
        "cannot read {} as YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("YAML of {} as JSON: {e}", path.display()))
}

/// One step of a rule's `data`, as Grafana's alerting evaluates it.
#[derive(Debug, Clone)]
enum Step {
    /// A Graphite query over `[now - from_s, now - to_s]`.
    Graphite {
        target: String,
        from_s: u64,
        to_s: u64,
    },
    /// Server-side expression `reduce`: one number per series.
    Reduce {
        input: String,
        reducer: String,
        /// `None` (strict), `dropNN`, or `replaceNN` with its value.
        mode: Option<String>,
        replace_with: f64,
    },
    /// Server-side expression `threshold`: firing per number.
    Threshold {
        input: String,
        kind: String,
        params: Vec<f64>,
    },
}

/// A rule of the provisioning file, with the parts the evaluator needs.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub uid: String,
    pub title: String,
    pub no_data_state: String,
    condition: String,
    steps: Vec<(String, Step)>,
}

/// What one evaluation of a rule found.
#[derive(Debug, Clone)]
pub struct RuleState {
    pub uid: String,
    pub title: String,
    /// One per series the query returned: (series name, reduced value, firing).
    pub instances: Vec<(String, Option<f64>, bool)>,
    /// The query returned no series at all (Grafana's NoData).
    pub no_data: bool,
}

impl RuleState {
    pub fn firing(&self) -> bool {
        self.instances.iter().any(|(_, _, f)| *f)
    }

    /// Firing for the series whose name contains `name` (an edge id, say).
    pub fn firing_for(&self, name: &str) -> bool {
        self.instances
            .iter()
            .any(|(n, _, f)| *f && n.contains(name))
    }

    /// The reduced value of the series whose name contains `name`.
    pub fn value_for(&self, name: &str) -> Option<f64> {
        self.instances
            .iter()
            .find(|(n, _, _)| n.contains(name))
            .and_then(|(_, v, _)| *v)
    }
}

impl std::fmt::Display for RuleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.uid,
            if self.firing() { "FIRING" } else { "quiet" }
        )?;
        if self.no_data {
            write!(f, " no data")?;
        }
        for (name, value, firing) in &self.instances {
            let value = value.map_or("NaN".to_owned(), |v| format!("{v:.4}"));
            write!(
                f,
                " [{name}={value}{}]",
                if *firing { " firing" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// Loads every rule of the provisioning file (`groups[].rules[]`).
pub fn load_alert_rules(path: &Path) -> Vec<AlertRule> {
    let doc = yaml_to_json(path);
    let mut rules = Vec::new();
    for group in doc["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            rules.push(parse_rule(rule));
        }
    }
    assert!(!rules.is_empty(), "no rules in {}", path.display());
    rules
}

fn parse_rule(rule: &Value) -> AlertRule {
    let uid = rule["uid"].as_str().unwrap_or_default().to_owned();
    let mut steps = Vec::new();
    for q in rule["data"].as_array().into_iter().flatten() {
        let ref_id = q["refId"].as_str().unwrap_or_default().to_owned();
        let model = &q["model"];
        let step = if q["datasourceUid"] == "__expr__" {
            let input = model["expression"].as_str().unwrap_or_default().to_owned();
            match model["type"].as_str() {
                Some("reduce") => Step::Reduce {
                    input,
                    reducer: model["reducer"].as_str().unwrap_or("last").to_owned(),
                    mode: model["settings"]["mode"].as_str().map(str::to_owned),
                    replace_with: model["settings"]["replaceWithValue"]
                        .as_f64()
                        .unwrap_or(0.0),
                },
                Some("threshold") => {
                    let evaluator = &model["conditions"][0]["evaluator"];
                    Step::Threshold {
                        input,
                        kind: evaluator["type"].as_str().unwrap_or_default().to_owned(),
                        params: evaluator["params"]
                            .as_array()
                            .map(|ps| ps.iter().filter_map(Value::as_f64).collect())
                            .unwrap_or_default(),
                    }
                }
                other => panic!(
                    "rule {uid}: expression type {other:?} is not evaluated by this test \
                     (it knows reduce and threshold)"
                ),
            }
        } else {
            Step::Graphite {
                target: model["target"]
                    .as_str()
                    .unwrap_or_else(|| panic!("rule {uid} query {ref_id} has no target"))
                    .to_owned(),
                from_s: q["relativeTimeRange"]["from"].as_u64().unwrap_or(600),
                to_s: q["relativeTimeRange"]["to"].as_u64().unwrap_or(0),
            }
        };
        steps.push((ref_id, step));
    }
    AlertRule {
        uid,
        title: rule["title"].as_str().unwrap_or_default().to_owned(),
        no_data_state: rule["noDataState"].as_str().unwrap_or("NoData").to_owned(),
        condition: rule["condition"].as_str().unwrap_or_default().to_owned(),
        steps,
    }
}

/// A step's output: series from Graphite, one number per series from a reduce, or
/// (name, compared value, firing) per series from a threshold.
enum Output {
    Series(Vec<Series>),
    Numbers(Vec<(String, Option<f64>)>),
    Flags(Vec<(String, Option<f64>, bool)>),
}

impl AlertRule {
    /// The Graphite targets of this rule.
    pub fn targets(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|(_, s)| match s {
                Step::Graphite { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect()
    }

    /// Evaluates the rule now against graphite-web.
    pub fn evaluate(&self, pipeline: &Pipeline) -> RuleState {
        let mut outputs: Vec<(String, Output)> = Vec::new();
        let mut no_data = false;
        let find = |outputs: &[(String, Output)], r: &str| -> usize {
            outputs
                .iter()
                .position(|(id, _)| id == r)
                .unwrap_or_else(|| panic!("rule {}: no step {r} before it is used", self.uid))
        };
        for (ref_id, step) in &self.steps {
            let out = match step {
                Step::Graphite {
                    target,
                    from_s,
                    to_s,
                } => {
                    let until = if *to_s == 0 {
                        "now".to_owned()
                    } else {
                        format!("-{to_s}s")
                    };
                    let series = pipeline
                        .render_range(target, &format!("-{from_s}s"), &until)
                        .unwrap_or_else(|e| panic!("rule {} query {ref_id}: {e}", self.uid));
                    if series.is_empty() {
                        no_data = true;
                    }
                    Output::Series(series)
                }
                Step::Reduce {
                    input,
                    reducer,
                    mode,
                    replace_with,
                } => {
                    let i = find(&outputs, input.trim_start_matches('$'));
                    let Output::Series(series) = &outputs[i].1 else {
                        panic!("rule {}: reduce {ref_id} needs a query as input", self.uid)
                    };
                    Output::Numbers(
                        series
                            .iter()
                            .map(|s| {
                                let v = reduce(s, reducer, mode.as_deref(), *replace_with);
                                (s.target.clone(), v)
                            })
                            .collect(),
                    )
                }
                Step::Threshold {
                    input,
                    kind,
                    params,
                } => {
                    let i = find(&outputs, input.trim_start_matches('$'));
                    let Output::Numbers(numbers) = &outputs[i].1 else {
                        panic!(
                            "rule {}: threshold {ref_id} needs a reduce as input",
                            self.uid
                        )
                    };
                    Output::Flags(
                        numbers
                            .iter()
                            .map(|(name, v)| {
                                // NaN (nothing to reduce) never fires, as in Grafana.
                                let firing = v.is_some_and(|v| threshold(kind, params, v));
                                (name.clone(), *v, firing)
                            })
                            .collect(),
                    )
                }
            };
            outputs.push((ref_id.clone(), out));
        }
        let condition = find(&outputs, &self.condition);
        let Output::Flags(instances) = &outputs[condition].1 else {
            panic!("rule {}: its condition is not a threshold", self.uid)
        };
        RuleState {
            uid: self.uid.clone(),
            title: self.title.clone(),
            instances: instances.clone(),
            no_data,
        }
    }
}

/// Grafana's reduce: `dropNN` skips null and non-finite values, `replaceNN` replaces
/// them, strict mode (no mode) makes any of them poison the result. An empty input
/// sums and counts to 0 and has no other reduction.
fn reduce(series: &Series, reducer: &str, mode: Option<&str>, replace_with: f64) -> Option<f64> {
    let mut values = Vec::with_capacity(series.points.len());
    for (v, _) in &series.points {
        match (v.filter(|v| v.is_finite()), mode) {
            (Some(v), _) => values.push(v),
            (None, Some("dropNN")) => {}
            (None, Some("replaceNN")) => values.push(replace_with),
            (None, _) => return None,
        }
    }
    match reducer {
        "sum" => Some(values.iter().sum()),
        "count" => Some(values.len() as f64),
        _ if values.is_empty() => None,
        "mean" => Some(values.iter().sum::<f64>() / values.len() as f64),
        "min" => values.iter().copied().reduce(f64::min),
        "max" => values.iter().copied().reduce(f64::max),
        "last" => values.last().copied(),
        "median" => {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            Some(if n % 2 == 1 {
                sorted[n / 2]
            } else {
                (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
            })
        }
        other => panic!("reducer {other} is not one Grafana has"),
    }
}

/// Grafana's threshold evaluators.
fn threshold(kind: &str, params: &[f64], v: f64) -> bool {
    let p = |i: usize| {
        *params
            .get(i)
            .unwrap_or_else(|| panic!("threshold {kind} needs {} params", i + 1))
    };
    match kind {
        "gt" => v > p(0),
        "lt" => v < p(0),
        "gte" => v >= p(0),
        "lte" => v <= p(0),
        "eq" => v == p(0),
        "ne" => v != p(0),
        "within_range" => v > p(0) && v < p(1),
        "outside_range" => v < p(0) || v > p(1),
        "within_range_included" => v >= p(0) && v <= p(1),
        "outside_range_included" => v <= p(0) || v >= p(1),
        other => panic!("threshold type {other} is not one Grafana has"),
    }
}
