//! A real HAProxy (Debian's 2.6) running the repository's `haproxy/haproxy.cfg`,
//! configured entirely through that file's environment variables: WebSocket
//! frontend, stats page and runtime API on free loopback ports, N empty edge slots,
//! agent checks pointed at a port of the test's choosing.
//!
//! HAProxy runs in the foreground (`-db`, no master process), so the child's PID is
//! HAProxy itself: it is killed by that PID when dropped and its output (startup
//! alerts, server state changes, traffic logs) goes to a log under
//! `target/test-logs`, printed when a test fails.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::log_dir;
use crate::{free_port, workspace_root};

/// Where Debian (and most distributions) install HAProxy.
const CANDIDATES: [&str; 2] = ["/usr/sbin/haproxy", "/usr/bin/haproxy"];

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    /// Its output.
    pub log: PathBuf,
    /// The WebSocket frontend's port.
    pub ws_port: u16,
    /// The runtime API's TCP port.
    pub runtime_port: u16,
    /// The stats page's port.
    pub stats_port: u16,
    /// The number of `edgeN` slots in backend `edges`.
    pub slots: u32,
}

impl Haproxy {
    /// Starts HAProxy with `slots` empty server-template slots whose agent checks go
    /// to `127.0.0.1:agent_port`, and waits until the runtime API answers.
    pub fn start(slots: u32, agent_port: u16) -> Haproxy {
        Self::start_with_herald(slots, agent_port, None)
    }

    /// The same, with `/herald/` routed to herald's HTTP port (nothing listens on
    /// port 1 when `None`: `/herald/` then answers 503).
    pub fn start_with_herald(slots: u32, agent_port: u16, herald_http: Option<u16>) -> Haproxy {
        let program = program();
        let ws_port = free_port();
        let runtime_port = free_port();
        let stats_port = free_port();
        let config = workspace_root().join("haproxy").join("haproxy.cfg");
        let log = log_dir().join(format!("haproxy-{ws_port}.log"));
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(&program)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("HAPROXY_RUNTIME", format!("ipv4@127.0.0.1:{runtime_port}"))
            .env("PUSHFLEET_WS_BIND", format!("127.0.0.1:{ws_port}"))
            .env("HAPROXY_STATS_BIND", format!("127.0.0.1:{stats_port}"))
            .env("HERALD_AGENT_HOST", "127.0.0.1")
            .env("HERALD_AGENT_PORT", agent_port.to_string())
            .env("PUSHFLEET_EDGE_SLOTS", slots.to_string())
            .env(
                "HERALD_HTTP_ADDR",
                format!("127.0.0.1:{}", herald_http.unwrap_or(1)),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut haproxy = Haproxy {
            child,
            log,
            ws_port,
            runtime_port,
            stats_port,
            slots,
        };
        // HAProxy binds every listener before it serves any, so a runtime API that
        // answers means the frontend and the stats page are listening too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.command("show info").is_none() {
            haproxy.assert_running();
            assert!(
                Instant::now() < deadline,
                "HAProxy's runtime API never answered:\n{}",
                haproxy.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }

    /// The WebSocket URL clients use.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.ws_port)
    }

    /// The runtime API address exactly as given to HAProxy (`HAPROXY_RUNTIME`,
    /// `ipv4@127.0.0.1:PORT`); herald's `RuntimeAddr::parse` accepts it as is.
    pub fn runtime_addr(&self) -> String {
        format!("ipv4@127.0.0.1:{}", self.runtime_port)
    }

    /// The stats page.
    pub fn stats_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.stats_port)
    }

    /// `127.0.0.1:PORT` of the stats page (for [`crate::http`]).
    pub fn stats_addr(&self) -> String {
        format!("127.0.0.1:{}", self.stats_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One runtime API command over a plain blocking socket, independently of the
    /// client under test; `None` if HAProxy does not answer.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.runtime_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        Some(reply)
    }

    /// Panics with the log if HAProxy has exited (a config or bind error).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("HAProxy exited ({status}):\n{}", self.log_text());
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Child::kill is SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- haproxy log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// The HAProxy binary, or a panic that says how to install it.
pub fn program() -> PathBuf {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "HAProxy is not installed (looked for {}): run scripts/setup.sh",
                CANDIDATES.join(", ")
            )
        })
}
