//! The whole local fleet as the README starts it: `deploy/local/fleet.sh`, run with
//! the binaries the test command built (`PROFILE=debug`, `SKIP_SETUP=1`) on a block of
//! free ports, its logs and PID files under `target/test-logs/fleet-<port>/`.
//!
//! Dropping it interrupts the script (SIGINT, as Ctrl-C would), which stops every part
//! by PID; [`LocalFleet::interrupt`] does the same and returns how it ended.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::ports::next_block;
use crate::process::log_dir;
use crate::workspace_root;

/// Ports the fleet uses, as offsets from its base (see [`LocalFleet::start`]).
const BLOCK: u16 = 40;

/// A running `deploy/local/fleet.sh`.
pub struct LocalFleet {
    child: Child,
    /// The script's own output.
    pub log: PathBuf,
    /// Its `RUN_DIR`: one log and one PID file per part.
    pub run_dir: PathBuf,
    base: u16,
    pub edges: u16,
    pub relays: u16,
    pub monitoring: bool,
}

impl LocalFleet {
    /// Starts the fleet (2 relays, 3 edges) without the monitoring pipeline, and
    /// waits until it says it is ready.
    pub fn start() -> LocalFleet {
        Self::start_with(false)
    }

    /// The same, with the StatsD → carbon → graphite-web pipeline when `monitoring`.
    pub fn start_with(monitoring: bool) -> LocalFleet {
        let base = next_block(BLOCK);
        let run_dir = log_dir().join(format!("fleet-{base}"));
        let log = log_dir().join(format!("fleet-{base}.log"));
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let port = |offset: u16| (base + offset).to_string();
        let child = Command::new("bash")
            .arg(workspace_root().join("deploy/local/fleet.sh"))
            .env("PROFILE", "debug")
            .env("SKIP_SETUP", "1")
            .env("RUN_DIR", &run_dir)
            .env("RELAYS", "2")
            .env("EDGES", "3")
            .env("WS_PORT", port(0))
            .env("HAPROXY_STATS_PORT", port(1))
            .env("HAPROXY_RUNTIME_PORT", port(2))
            .env("ETCD_PORT", port(3))
            .env("ETCD_PEER_PORT", port(4))
            .env("HERALD_AGENT_PORT", port(5))
            .env("HERALD_HTTP_PORT", port(6))
            .env("RELAY_HTTP_PORT", port(7)) // 7, 8
            .env("RELAY_PORT", port(10)) // 10-11, 20-21
            .env("EDGE_PORT", port(30)) // 30-32
            .env("EDGE_ADMIN_PORT", port(35)) // 35-37
            .env("TICKER_RATE", "4")
            .env("MONITORING", if monitoring { "1" } else { "0" })
            .env("STATSD_PORT", port(12))
            .env("STATSD_ADMIN_PORT", port(13))
            .env("CARBON_PORT", port(14))
            .env("CARBON_PICKLE_PORT", port(15))
            .env("CARBON_QUERY_PORT", port(16))
            .env("GRAPHITE_PORT", port(17))
            .env("PUSHFLEET_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start deploy/local/fleet.sh: {e}"));
        let mut fleet = LocalFleet {
            child,
            log,
            run_dir,
            base,
            edges: 3,
            relays: 2,
            monitoring,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while !fleet.output().contains("fleet: ready") {
            if let Ok(Some(status)) = fleet.child.try_wait() {
                panic!("fleet.sh exited ({status}):\n{}", fleet.output());
            }
            assert!(
                Instant::now() < deadline,
                "fleet.sh not ready within 180 s:\n{}",
                fleet.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        fleet
    }

    /// What the script printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// HAProxy's WebSocket frontend (`host:port`): the demo page and `/ws`.
    pub fn front(&self) -> String {
        format!("127.0.0.1:{}", self.base)
    }

    pub fn haproxy_stats(&self) -> String {
        format!("127.0.0.1:{}", self.base + 1)
    }

    pub fn herald_http(&self) -> String {
        format!("127.0.0.1:{}", self.base + 6)
    }

    /// The HTTP publish API of relay `i` (0-based).
    pub fn relay_http(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.base + 7 + i)
    }

    /// The public address of edge `edge-<n>` (1-based, as the script names them).
    pub fn edge_addr(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.base + 30 + n - 1)
    }

    /// graphite-web (`host:port`), with monitoring on.
    pub fn graphite(&self) -> String {
        format!("127.0.0.1:{}", self.base + 17)
    }

    /// The admin address of edge `edge-<n>` (`POST /drain`).
    pub fn edge_admin(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.base + 35 + n - 1)
    }

    /// Every port the fleet listens on.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = (0..=6).map(|o| self.base + o).collect();
        for r in 0..self.relays {
            ports.extend([
                self.base + 7 + r,
                self.base + 10 + 10 * r,
                self.base + 11 + 10 * r,
            ]);
        }
        for e in 0..self.edges {
            ports.extend([self.base + 30 + e, self.base + 35 + e]);
        }
        if self.monitoring {
            ports.extend((13..=17).map(|o| self.base + o));
        }
        ports
    }

    /// The PID the script recorded for a part (`edge-2`, `herald`, …).
    pub fn pid(&self, name: &str) -> u32 {
        let path = self.run_dir.join("pids").join(format!("{name}.pid"));
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no PID in {}", path.display()))
    }

    /// Every part's PID.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut all = Vec::new();
        if let Ok(dir) = std::fs::read_dir(self.run_dir.join("pids")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().replace(".pid", "");
                all.push((name.clone(), self.pid(&name)));
            }
        }
        all
    }

    /// Ctrl-C: SIGINT to the script; waits up to `timeout` for it to exit.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        crate::fleet::wait_exit(&mut self.child, timeout)
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.interrupt(Duration::from_secs(60)).is_none() {
                // The script did not stop its parts: end them ourselves, by PID.
                for (_, pid) in self.pids() {
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(pid.to_string())
                        .status();
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- fleet.sh output ({}) ---\n{}",
                self.log.display(),
                self.output()
            );
        }
    }
}
