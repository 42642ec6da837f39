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
    child: Option<Child>,
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
    agent_port: u16,
    herald_http: Option<u16>,
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
        let ws_port = free_port();
        let log = log_dir().join(format!("haproxy-{ws_port}.log"));
        let mut haproxy = Haproxy {
            child: None,
            log,
            ws_port,
            runtime_port: free_port(),
            stats_port: free_port(),
            slots,
            agent_port,
            herald_http,
        };
        haproxy.spawn();
        haproxy
    }

    /// Starts the process on this instance's ports (its log appended to) and waits
    /// until the runtime API answers.
    fn spawn(&mut self) {
        let program = program();
        let config = workspace_root().join("haproxy").join("haproxy.cfg");
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(&program)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("HAPROXY_RUNTIME", self.runtime_addr())
            .env("PUSHFLEET_WS_BIND", format!("127.0.0.1:{}", self.ws_port))
            .env("HAPROXY_STATS_BIND", self.stats_addr())
            .env("HERALD_AGENT_HOST", "127.0.0.1")
            .env("HERALD_AGENT_PORT", self.agent_port.to_string())
            .env("PUSHFLEET_EDGE_SLOTS", self.slots.to_string())
            .env(
                "HERALD_HTTP_ADDR",
                format!("127.0.0.1:{}", self.herald_http.unwrap_or(1)),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        self.child = Some(child);
        // HAProxy binds every listener before it serves any, so a runtime API that
        // answers means the frontend and the stats page are listening too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("show info").is_none() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "HAProxy's runtime API never answered:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills HAProxy (SIGKILL) and starts it again on the same ports: it comes back
    /// with the configuration file's state, every slot empty.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
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
        self.child.as_ref().map_or(0, Child::id)
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
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
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
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
