//! The end-to-end harness: starts real processes (edges, relays, etcd, the publish
//! CLI, Python peers built on libzmq and `websockets`) on free loopback ports, talks to them the way
//! clients and publishers do, and cleans up (by PID, only what it started).
//!
//! Binaries come from `target/debug` (or `PUSHFLEET_BIN_DIR`); the test command
//! builds them first. Waits use [`eventually`] with a deadline, never fixed sleeps.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod browser;
pub mod fleet;
pub mod haproxy;
pub mod local_fleet;
pub mod monitoring;
pub mod ports;
pub mod process;
pub mod py;
pub mod raw;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use fleet::{Etcd, Herald, Relay, RelayPorts, Service};
pub use process::Edge;
pub use py::{PyAutoScaling, PyClient, PyPublisher};
pub use raw::{Frame, RawClient};

/// The workspace root (tests run with the crate directory as cwd).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A loopback port nobody listens on and no other test of this run was given
/// (see [`ports`]).
pub fn free_port() -> u16 {
    ports::next_free()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.1 request without a body; returns (status, body).
pub fn http(method: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    fleet::http_body(method, addr, path, "")
}

/// `GET` returning parsed JSON.
pub fn get_json(addr: &str, path: &str) -> Option<serde_json::Value> {
    let (_, body) = http("GET", addr, path)?;
    serde_json::from_str(&body).ok()
}
