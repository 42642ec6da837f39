//! Real peers in Python: a libzmq publisher (pyzmq XPUB, which also reports the
//! subscriptions the edge forwards), `websockets` clients, and moto's AWS API server
//! (driven with boto3). Each speaks JSON lines over stdin/stdout (see `tests/py/*.py`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{free_port, workspace_root};

/// How long a helper may take to answer before the test fails.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// A helper process speaking JSON lines on stdin/stdout (Python here, Node for the
/// browser driver).
pub(crate) struct LineProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    name: String,
    /// How long to let it exit by itself after stdin closes, before killing it.
    pub(crate) grace: Duration,
}

impl LineProc {
    fn start(script: &str, args: &[String]) -> LineProc {
        let path = workspace_root().join("tests").join("py").join(script);
        let mut command = Command::new("python3");
        command.arg("-u").arg(&path).args(args);
        Self::spawn(command, script)
    }

    /// Starts `command` with piped stdin/stdout (stderr inherited).
    pub(crate) fn spawn(mut command: Command, name: &str) -> LineProc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("helper said: {line}"),
                }
            }
        });
        LineProc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            name: name.to_owned(),
            grace: Duration::ZERO,
        }
    }

    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{} stdin closed", self.name));
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("{} stdin: {e}", self.name));
        stdin
            .flush()
            .unwrap_or_else(|e| panic!("{} stdin: {e}", self.name));
    }

    /// Next event line, or None after `timeout`.
    pub(crate) fn next(&self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Next event of `kind`, skipping others; panics after `timeout`.
    pub(crate) fn expect_kind(&self, kind: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(v) if v["kind"] == kind => return v,
                Some(_) => continue,
                None => panic!("{}: no {kind:?} event within {timeout:?}", self.name),
            }
        }
    }
}

impl Drop for LineProc {
    /// Closes stdin, lets the helper exit by itself for its `grace` (the browser driver
    /// then closes Chromium and removes its profile), then kills what is left.
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pyzmq XPUB publisher bound on a free loopback port.
pub struct PyPublisher {
    proc: LineProc,
    pub endpoint: String,
}

impl PyPublisher {
    pub fn start() -> PyPublisher {
        Self::bind("tcp://127.0.0.1:*")
    }

    pub fn bind(endpoint: &str) -> PyPublisher {
        let proc = LineProc::start("zmq_publisher.py", &["--bind".into(), endpoint.into()]);
        let ready = proc.expect_kind("ready", PEER_TIMEOUT);
        let endpoint = ready["endpoint"].as_str().unwrap_or_default().to_owned();
        PyPublisher { proc, endpoint }
    }

    /// Sends one multipart message.
    pub fn send(&mut self, frames: &[&str]) {
        self.proc
            .send_line(&json!({ "frames": frames }).to_string());
    }

    /// Publishes `[channel, event, data]`.
    pub fn publish(&mut self, channel: &str, event: &str, data: &str) {
        self.send(&[channel, event, data]);
    }

    /// Waits until the edge's subscription (or unsubscription) for `topic` arrives.
    pub fn wait_for(&self, kind: &str, topic: &str) {
        let deadline = Instant::now() + PEER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.proc.next(left) {
                Some(v) if v["kind"] == kind && v["topic"] == topic => return,
                Some(_) => continue,
                None => panic!("publisher never saw {kind} {topic:?}"),
            }
        }
    }

    /// Collects subscription events seen within `window` (and discards others).
    pub fn subscriptions_within(&self, window: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Some(v) = self
            .proc
            .next(deadline.saturating_duration_since(Instant::now()))
        {
            if v["kind"] == "subscribe" || v["kind"] == "unsubscribe" {
                seen.push((
                    v["kind"].as_str().unwrap_or_default().to_owned(),
                    v["topic"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        seen
    }
}

/// A Python `websockets` client.
pub struct PyClient {
    proc: LineProc,
    /// The `Sec-WebSocket-Extensions` the edge answered, if any.
    pub extensions: Option<String>,
}

impl PyClient {
    pub fn connect(url: &str, compress: bool) -> PyClient {
        let mut args = vec!["--url".to_owned(), url.to_owned()];
        if compress {
            args.push("--compress".into());
        }
        let proc = LineProc::start("ws_client.py", &args);
        let open = proc.expect_kind("open", PEER_TIMEOUT);
        PyClient {
            extensions: open["extensions"].as_str().map(str::to_owned),
            proc,
        }
    }

    pub fn send(&mut self, text: &str) {
        self.proc.send_line(text);
    }

    pub fn subscribe(&mut self, channel: &str) -> Value {
        self.send(&json!({ "method": "subscribe", "channel": channel }).to_string());
        let ack = self.recv();
        assert_eq!(ack["type"], "subscribed", "subscribe {channel}: {ack}");
        ack
    }

    /// Next message (parsed JSON); panics after [`PEER_TIMEOUT`].
    pub fn recv(&self) -> Value {
        self.try_recv(PEER_TIMEOUT)
            .unwrap_or_else(|| panic!("no message within {PEER_TIMEOUT:?}"))
    }

    /// Next message within `timeout`, if any.
    pub fn try_recv(&self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .proc
                .next(deadline.saturating_duration_since(Instant::now()))?;
            match v["kind"].as_str() {
                Some("message") => {
                    let text = v["text"].as_str().unwrap_or_default();
                    return Some(
                        serde_json::from_str(text)
                            .unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
                    );
                }
                Some("closed") => return Some(json!({ "closed": v["code"] })),
                _ => continue,
            }
        }
    }

    /// Waits for the connection to close; returns the close code.
    pub fn closed(&self, timeout: Duration) -> Value {
        self.proc.expect_kind("closed", timeout)["code"].clone()
    }
}

/// moto's AWS API server in server mode on a free loopback port, with the Auto
/// Scaling lifecycle actions moto lacks added to its model (see
/// `tests/py/aws_autoscaling.py`); the test sets groups up and reads them back with
/// boto3 through it.
pub struct PyAutoScaling {
    proc: LineProc,
    pub endpoint: String,
}

impl PyAutoScaling {
    pub fn start() -> PyAutoScaling {
        let port = free_port();
        let proc = LineProc::start("aws_autoscaling.py", &["--port".into(), port.to_string()]);
        let ready = proc.expect_kind("ready", Duration::from_secs(30));
        let endpoint = ready["endpoint"].as_str().unwrap_or_default().to_owned();
        PyAutoScaling { proc, endpoint }
    }

    /// The AWS environment a client of this server needs.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// Creates group `name` with `desired` instances (at most `max`) and a
    /// termination lifecycle hook `hook`; returns its instance ids.
    pub fn group(&mut self, name: &str, hook: &str, desired: u32, max: u32) -> Vec<String> {
        self.proc.send_line(
            &json!({"cmd": "group", "name": name, "hook": hook, "desired": desired, "max": max})
                .to_string(),
        );
        let v = self.proc.expect_kind("group", PEER_TIMEOUT);
        v["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The group's desired capacity and each instance's lifecycle state.
    pub fn describe(&mut self, name: &str) -> (u64, std::collections::BTreeMap<String, String>) {
        self.proc
            .send_line(&json!({"cmd": "describe", "name": name}).to_string());
        let v = self.proc.expect_kind("describe", PEER_TIMEOUT);
        let states = v["instances"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, s)| (k.clone(), s.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        (v["desired"].as_u64().unwrap_or_default(), states)
    }

    /// Terminates `instance` as an operator or AWS itself would (the group keeps its
    /// size and launches a replacement).
    pub fn terminate(&mut self, instance: &str) {
        self.proc
            .send_line(&json!({"cmd": "terminate", "instance": instance}).to_string());
        self.proc.expect_kind("terminated", PEER_TIMEOUT);
    }
}
