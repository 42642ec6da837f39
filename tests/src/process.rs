//! The edge binary as a test process (a [`Service`]: killed by PID when dropped, its
//! log printed when a test fails), and where binaries and logs live.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::Service;
use crate::{eventually, free_port, get_json, workspace_root};

/// Path of a workspace binary built by the test command.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("PUSHFLEET_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`), or set PUSHFLEET_BIN_DIR",
        path.display()
    );
    path
}

/// A directory for this test's logs under `target/test-logs`.
pub fn log_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A running pushfleet-server.
pub struct Edge {
    pub service: Service,
    pub port: u16,
    pub admin_port: u16,
    pub log: PathBuf,
}

impl Edge {
    /// Starts an edge subscribed to `zmq` endpoints with extra flags, and waits until
    /// `/healthz` answers.
    pub fn start(zmq: &[&str], extra: &[&str]) -> Edge {
        let port = free_port();
        let admin_port = free_port();
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}"),
            "--workers".into(),
            "2".into(),
        ];
        if !zmq.is_empty() {
            args.extend(["--zmq-connect".to_owned(), zmq.join(",")]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut service =
            Service::spawn(&binary("pushfleet-server"), &args, &format!("edge-{port}"));
        let log = service.log.clone();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while get_json(&addr, "/healthz").is_none() {
            service.assert_running();
            assert!(Instant::now() < deadline, "edge never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        Edge {
            service,
            port,
            admin_port,
            log,
        }
    }

    /// An edge subscribed to `relay` that reports its load to `etcd` as `id`
    /// (refreshed every 300 ms, lease 2 s), with extra flags.
    pub fn reporting(relay: &str, etcd: &str, id: &str, extra: &[&str]) -> Edge {
        let mut flags = vec![
            "--etcd",
            etcd,
            "--edge-id",
            id,
            "--load-interval",
            "300ms",
            "--lease-ttl",
            "2s",
        ];
        flags.extend_from_slice(extra);
        Edge::start(&[relay], &flags)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    pub fn stats(&self) -> Value {
        eventually(Duration::from_secs(5), "edge /stats", || {
            get_json(&self.admin_addr(), "/stats")
        })
    }

    /// Waits until `/stats` satisfies `check`.
    pub fn wait_stats(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(10), what, || {
            get_json(&self.admin_addr(), "/stats").filter(|s| check(s))
        })
    }

    /// Sends a signal to the edge (by its PID; only our own child).
    pub fn signal(&self, name: &str) {
        self.service.signal(name);
    }

    /// Waits up to `timeout` for the edge to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.service.wait_exit(timeout)
    }

    pub fn log_text(&self) -> String {
        self.service.log_text()
    }
}
