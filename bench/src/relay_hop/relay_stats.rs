//! The relay's `/stats` over a plain HTTP/1.1 GET: reading, parsing, and
//! waiting for the relay to hold (or release) this tool's subscriptions.

use super::config::Config;
use super::round::SETUP_TIMEOUT;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

/// The `/stats` fields this tool uses.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RelayStats {
    pub(super) received_zmq: u64,
    pub(super) forwarded: u64,
    pub(super) no_subscribers: u64,
    pub(super) dropped: u64,
    pub(super) channels: u64,
    pub(super) edges: u64,
}

impl RelayStats {
    fn from_json(v: &Value) -> Result<Self> {
        let field = |ptr: &str| {
            v.pointer(ptr)
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("/stats has no number at {ptr}"))
        };
        let dropped = v
            .get("dropped")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("/stats has no dropped object"))?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        Ok(Self {
            received_zmq: field("/received/zmq")?,
            forwarded: field("/forwarded")?,
            no_subscribers: field("/no_subscribers")?,
            dropped,
            channels: field("/channels")?,
            edges: field("/edges")?,
        })
    }

    /// Counter increases from `before` to `self` (gauges are `self`'s).
    pub(super) fn since(&self, before: &RelayStats) -> RelayStats {
        RelayStats {
            received_zmq: self.received_zmq.saturating_sub(before.received_zmq),
            forwarded: self.forwarded.saturating_sub(before.forwarded),
            no_subscribers: self.no_subscribers.saturating_sub(before.no_subscribers),
            dropped: self.dropped.saturating_sub(before.dropped),
            channels: self.channels,
            edges: self.edges,
        }
    }

    pub(super) fn to_json(self) -> Value {
        json!({
            "received_zmq": self.received_zmq,
            "forwarded": self.forwarded,
            "no_subscribers": self.no_subscribers,
            "dropped": self.dropped,
        })
    }
}

pub(super) fn get_stats(addr: &str) -> Result<RelayStats> {
    let body = http_get(addr, "/stats").with_context(|| format!("GET http://{addr}/stats"))?;
    let v: Value = serde_json::from_slice(&body).context("parsing /stats")?;
    RelayStats::from_json(&v)
}

/// One `GET` with `Connection: close`; the body of a 200 response.
fn http_get(addr: &str, path: &str) -> Result<Vec<u8>> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_http_response(&response)
}

/// The body of a complete HTTP/1.1 200 response (plain or chunked).
fn parse_http_response(response: &[u8]) -> Result<Vec<u8>> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = &response[split + 4..];
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("HTTP status line {status:?}");
    }
    if !head.contains("transfer-encoding: chunked") {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
    }
}

/// Polls `/stats` until `ok` holds; the last reading.
fn wait_stats(cfg: &Config, what: &str, ok: impl Fn(&RelayStats) -> bool) -> Result<RelayStats> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let s = get_stats(&cfg.relay_http)?;
        if ok(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not reached within {SETUP_TIMEOUT:?} (relay shows {} channels, {} edges)",
                s.channels,
                s.edges
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Relay channels before this tool subscribes, and a check that it is reachable.
pub(super) fn relay_baseline(cfg: &Config) -> Result<RelayStats> {
    let s = get_stats(&cfg.relay_http)?;
    if s.channels > 0 {
        eprintln!(
            "relay-hop: warning: the relay already holds {} channels (other edges?)",
            s.channels
        );
    }
    Ok(s)
}

/// Waits until the relay holds this tool's channels on top of `baseline`.
pub(super) fn wait_subscribed(cfg: &Config, baseline: &RelayStats) -> Result<()> {
    let want = baseline.channels + cfg.channels.len() as u64;
    wait_stats(cfg, "the relay holding every subscribed channel", |s| {
        s.channels >= want
    })?;
    Ok(())
}

/// After the sink closed: waits until the relay let its channels go, so the next
/// round starts from the same state.
pub(super) fn wait_unsubscribed(cfg: &Config, baseline: &RelayStats) {
    if let Err(e) = wait_stats(cfg, "the relay releasing the channels", |s| {
        s.channels <= baseline.channels
    }) {
        eprintln!("relay-hop: warning: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_http_response(plain).expect("plain"), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).expect("chunked"), b"{\"a\":1}");
        assert!(parse_http_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn stats_fields() {
        let v = json!({
            "received": {"zmq": 10, "http": 1},
            "forwarded": 7, "no_subscribers": 2,
            "dropped": {"data": 1, "frames": 0},
            "channels": 3, "edges": 1
        });
        let s = RelayStats::from_json(&v).expect("stats");
        assert_eq!((s.received_zmq, s.forwarded, s.dropped), (10, 7, 1));
        let d = s.since(&RelayStats {
            received_zmq: 4,
            ..RelayStats::default()
        });
        assert_eq!(d.received_zmq, 6);
        assert!(RelayStats::from_json(&json!({})).is_err());
    }
}
