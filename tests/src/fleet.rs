//! The rest of the fleet as real processes: relays (`pushfleet-relay`), etcd (Debian's
//! `etcd` 3.4), and the `pushfleet-publish` CLI. Each process is killed by PID when
//! dropped; its output goes to a log under `target/test-logs` that a failing test prints.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{binary, log_dir};
use crate::{eventually, free_port, get_json, workspace_root};

/// Waits up to `timeout` for `child` to exit; its status, or `None` if still running.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process with its log.
pub struct Service {
    child: Child,
    name: String,
    pub log: PathBuf,
}

impl Service {
    /// Spawns `program` with `args`, output to `target/test-logs/<name>.log`.
    pub fn spawn(program: &std::path::Path, args: &[String], name: &str) -> Service {
        Self::spawn_with_env(program, args, &[], name)
    }

    /// [`Service::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
        name: &str,
    ) -> Service {
        let log = log_dir().join(format!("{name}.log"));
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(program)
            .args(args)
            .env("PUSHFLEET_LOG", "pushfleet_server=debug,info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Service {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }

    /// Sends a signal by PID (only our own child).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// VmRSS of a process in KiB (0 if unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The three ports a relay listens on.
#[derive(Debug, Clone, Copy)]
pub struct RelayPorts {
    pub publish: u16,
    pub edges: u16,
    pub http: u16,
}

impl RelayPorts {
    pub fn free() -> RelayPorts {
        RelayPorts {
            publish: free_port(),
            edges: free_port(),
            http: free_port(),
        }
    }

    pub fn publish_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.publish)
    }

    pub fn edge_endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.edges)
    }
}

/// A running pushfleet-relay.
pub struct Relay {
    pub service: Service,
    pub ports: RelayPorts,
}

impl Relay {
    /// Starts a relay on free ports with extra flags; waits for `/healthz`.
    pub fn start(extra: &[&str]) -> Relay {
        Self::start_on(RelayPorts::free(), extra)
    }

    /// Starts a relay on the given ports (a restart keeps its address).
    pub fn start_on(ports: RelayPorts, extra: &[&str]) -> Relay {
        let mut args: Vec<String> = vec![
            "--publish-bind".into(),
            ports.publish_endpoint(),
            "--edge-bind".into(),
            ports.edge_endpoint(),
            "--http-listen".into(),
            format!("127.0.0.1:{}", ports.http),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let service = Service::spawn(
            &binary("pushfleet-relay"),
            &args,
            &format!("relay-{}", ports.publish),
        );
        let mut relay = Relay { service, ports };
        let deadline = Instant::now() + Duration::from_secs(15);
        while get_json(&relay.http_addr(), "/healthz").is_none() {
            relay.service.assert_running();
            assert!(Instant::now() < deadline, "relay never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        relay
    }

    pub fn publish_endpoint(&self) -> String {
        self.ports.publish_endpoint()
    }

    pub fn edge_endpoint(&self) -> String {
        self.ports.edge_endpoint()
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.http)
    }

    pub fn stats(&self) -> Value {
        eventually(Duration::from_secs(5), "relay /stats", || {
            get_json(&self.http_addr(), "/stats")
        })
    }

    /// Waits until `/stats` satisfies `check`.
    pub fn wait_stats(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(10), what, || {
            get_json(&self.http_addr(), "/stats").filter(|s| check(s))
        })
    }
}

/// A running herald.
pub struct Herald {
    pub service: Service,
    pub agent_port: u16,
    pub http_port: u16,
}

/// herald's scaler on a test's time scale: evaluations every 300 ms, a capacity of
/// 300 deliveries/s per edge, watermarks 0.5 / 0.2 held for 1 s, 2 s cooldowns,
/// between 1 and 2 edges. Add `--scale MODE` and its own flags.
pub const FAST_SCALING: [&str; 18] = [
    "--interval",
    "300ms",
    "--stale-after",
    "3s",
    "--capacity-msgs-out",
    "300",
    "--scale-high",
    "0.5",
    "--scale-low",
    "0.2",
    "--scale-sustain",
    "1s",
    "--scale-cooldown",
    "2s",
    "--scale-min",
    "1",
    "--scale-max",
    "2",
];

impl Herald {
    /// Starts herald against `etcd` with extra flags; waits for its status page.
    pub fn start(etcd: &str, extra: &[&str]) -> Herald {
        Self::start_on(etcd, free_port(), extra)
    }

    /// The same, with the agent-check port chosen by the caller (HAProxy's config
    /// names it before herald starts).
    pub fn start_on(etcd: &str, agent_port: u16, extra: &[&str]) -> Herald {
        Self::start_with_env(etcd, agent_port, &[], extra)
    }

    /// The same, with extra environment variables (the AWS configuration, say).
    pub fn start_with_env(
        etcd: &str,
        agent_port: u16,
        env: &[(String, String)],
        extra: &[&str],
    ) -> Herald {
        let http_port = free_port();
        let mut args: Vec<String> = vec![
            "--etcd".into(),
            etcd.into(),
            "--agent-listen".into(),
            format!("127.0.0.1:{agent_port}"),
            "--http-listen".into(),
            format!("127.0.0.1:{http_port}"),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let service = Service::spawn_with_env(
            &binary("herald"),
            &args,
            env,
            &format!("herald-{agent_port}"),
        );
        let mut herald = Herald {
            service,
            agent_port,
            http_port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while get_json(&herald.http_addr(), "/status").is_none() {
            herald.service.assert_running();
            assert!(Instant::now() < deadline, "herald never served /status");
            std::thread::sleep(Duration::from_millis(20));
        }
        herald
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn status(&self) -> Value {
        eventually(Duration::from_secs(5), "herald /status", || {
            get_json(&self.http_addr(), "/status")
        })
    }

    /// Asks the agent-check port about `name`, as HAProxy does with `agent-send`.
    pub fn agent_check(&self, name: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.agent_port))
            .unwrap_or_else(|e| panic!("agent port: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("agent port: {e}"));
        stream
            .write_all(format!("{name}\n").as_bytes())
            .unwrap_or_else(|e| panic!("agent port: {e}"));
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    }
}

/// A single-member etcd 3.4 cluster in a scratch data directory.
pub struct Etcd {
    pub service: Service,
    pub client_port: u16,
    pub peer_port: u16,
    data_dir: PathBuf,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_on(free_port(), free_port(), None)
    }

    /// Starts (or restarts, reusing `data_dir`) etcd on the given ports.
    pub fn start_on(client_port: u16, peer_port: u16, data_dir: Option<PathBuf>) -> Etcd {
        let data_dir =
            data_dir.unwrap_or_else(|| log_dir().join(format!("etcd-{client_port}.data")));
        let program = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("etcd is not installed: run scripts/setup.sh"));
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args: Vec<String> = vec![
            "--name".into(),
            "test".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("test={peer}"),
        ];
        let service = Service::spawn(&program, &args, &format!("etcd-{client_port}"));
        let mut etcd = Etcd {
            service,
            client_port,
            peer_port,
            data_dir,
        };
        let addr = format!("127.0.0.1:{client_port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while get_json(&addr, "/health").is_none_or(|h| h["health"] != "true") {
            etcd.service.assert_running();
            assert!(Instant::now() < deadline, "etcd never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Writes `key` = `value` through etcd's JSON gateway (`/v3/kv/put`).
    pub fn put(&self, key: &str, value: &str) {
        let body = serde_json::json!({
            "key": base64_encode(key.as_bytes()),
            "value": base64_encode(value.as_bytes()),
        })
        .to_string();
        let addr = format!("127.0.0.1:{}", self.client_port);
        let reply = http_body("POST", &addr, "/v3/kv/put", &body);
        assert!(
            reply.as_ref().is_some_and(|(status, _)| *status == 200),
            "etcd put {key}: {reply:?}"
        );
    }

    /// Every key under `prefix` with its value, read through etcd's own HTTP/JSON
    /// gateway (`/v3/kv/range`), independently of the code under test.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "key": base64_encode(prefix.as_bytes()),
            "range_end": base64_encode(&end),
        })
        .to_string();
        let addr = format!("127.0.0.1:{}", self.client_port);
        let Some((200, reply)) = http_body("POST", &addr, "/v3/kv/range", &body) else {
            return Vec::new();
        };
        let reply: Value = serde_json::from_str(&reply).unwrap_or_default();
        let text = |v: &Value| {
            String::from_utf8_lossy(&base64_decode(v.as_str().unwrap_or_default())).into_owned()
        };
        reply["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (text(&kv["key"]), text(&kv["value"])))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills etcd (SIGKILL) and returns what a restart needs.
    pub fn kill(mut self) -> (u16, u16, PathBuf) {
        self.service.kill();
        let ports = (self.client_port, self.peer_port, self.data_dir.clone());
        // Keep the data: the restart reuses it.
        self.data_dir = PathBuf::new();
        ports
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.service.kill();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Runs `pushfleet-publish` with `args` to completion (bounded by its own timeouts).
pub fn publish_cli(args: &[&str]) -> Output {
    Command::new(binary("pushfleet-publish"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run pushfleet-publish: {e}"))
}

/// Starts `pushfleet-publish` with `args` in the background (e.g. a ticker).
pub fn publish_cli_background(args: &[&str], name: &str) -> Service {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    Service::spawn(&binary("pushfleet-publish"), &args, name)
}

/// A `pushfleet-publish ticker` on `channel` at `rate` msg/s for at most 60 s,
/// publishing to `relay` (its publish endpoint); named `<name>` in the logs.
pub fn ticker(relay: &str, channel: &str, rate: u32, name: &str) -> Service {
    publish_cli_background(
        &[
            "--relay",
            relay,
            "ticker",
            "--channels",
            channel,
            "--rate",
            &rate.to_string(),
            "--duration",
            "60s",
        ],
        name,
    )
}

/// Publishes `(channel, event, data)` messages with the copyable Python example
/// (`clients/python/pushfleet_publish.py`, pyzmq) and waits for it to finish.
pub fn python_publish(relays: &[String], messages: &[(String, String, String)]) {
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import pushfleet_publish as pp
relays = json.loads(sys.argv[2])
with pp.Publisher(relays) as publisher:
    for channel, event, data in json.load(sys.stdin):
        publisher.publish(channel, event, data, timeout_ms=5000)
"#;
    let dir = workspace_root().join("clients").join("python");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(serde_json::to_string(relays).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start python3: {e}"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        let body = serde_json::to_string(messages).unwrap_or_default();
        stdin
            .write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("python stdin: {e}"));
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("python publisher: {e}"));
    assert!(status.success(), "the Python publisher failed: {status}");
}

/// A plain HTTP/1.1 request with a body; returns (status, body).
pub fn http_body(method: &str, addr: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (etcd's JSON gateway encodes keys and values so).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inverse of [`base64_encode`]; invalid characters are skipped.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let values: Vec<u32> = text
        .bytes()
        .filter_map(|c| BASE64.iter().position(|b| *b == c).map(|v| v as u32))
        .collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, v| (acc << 6) | v) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "/pushfleet/edges/e1",
        ] {
            assert_eq!(
                base64_decode(&base64_encode(text.as_bytes())),
                text.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }
}
