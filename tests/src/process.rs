//! Child processes the tests own: the edge binary and helpers. Each is killed by PID
//! when dropped, and its output goes to a log file that failing tests print.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    child: Child,
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
        let log = log_dir().join(format!("edge-{port}.log"));
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(binary("pushfleet-server"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(if zmq.is_empty() {
                vec![]
            } else {
                vec!["--zmq-connect".to_owned(), zmq.join(",")]
            })
            .arg("--workers")
            .arg("2")
            .args(extra)
            .env("PUSHFLEET_LOG", "pushfleet_server=debug,info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pushfleet-server: {e}"));
        let mut edge = Edge {
            child,
            port,
            admin_port,
            log,
        };
        let addr = edge.addr();
        let deadline = Instant::now() + Duration::from_secs(15);
        while get_json(&addr, "/healthz").is_none() {
            if let Ok(Some(status)) = edge.child.try_wait() {
                panic!("edge exited at start ({status}):\n{}", edge.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "edge never became healthy:\n{}",
                edge.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        edge
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
        self.child.id()
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
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the edge to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- edge log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
