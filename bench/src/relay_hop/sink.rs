//! The receiving side of a round: the sink's socket (a PULL bound here, or a SUB
//! on the relay), and the thread reading it: counters, duplicates, latency, and
//! the relay's per-channel sequence numbers.

use super::config::Config;
use super::cpu::own_thread_ticks;
use super::data::{parse_data, parse_u64};
use super::round::Shared;
use crate::stats::Histogram;
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::Ordering::Relaxed;

/// How long the sink blocks in `recv` before looking at the stop flag.
const SINK_POLL_MS: i32 = 50;
/// Largest counter the sink tracks individually (a 32 MiB bitmap).
const MAX_TRACKED: u64 = 1 << 28;

/// Where the sink reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// A PULL socket this tool binds; the publisher connects straight to it.
    Direct,
    /// A SUB socket on the relay's edge endpoint.
    Relay,
}

impl Target {
    pub(super) fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Relay => "relay",
        }
    }
}

/// Counters seen once each, in a growable bitmap.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    unique: u64,
}

impl Seen {
    /// `Some(true)` if `n` is new, `Some(false)` if seen before, `None` if too large.
    fn insert(&mut self, n: u64) -> Option<bool> {
        if n >= MAX_TRACKED {
            return None;
        }
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.unique += u64::from(fresh);
        Some(fresh)
    }
}

/// What the sink saw.
#[derive(Default)]
pub(super) struct SinkReport {
    pub(super) received: u64,
    pub(super) unique: u64,
    pub(super) duplicates: u64,
    pub(super) untracked: u64,
    pub(super) bad_data: u64,
    /// Messages without the relay's 4th frame (relay target only).
    pub(super) missing_seq: u64,
    /// Sequence numbers skipped within a channel (relay target only).
    pub(super) seq_gaps: u64,
    /// Sequence numbers that did not move forward.
    pub(super) seq_backwards: u64,
    /// Messages on a channel name this tool does not publish.
    pub(super) foreign: u64,
    pub(super) latency: Option<Histogram>,
    /// CPU ticks of the sink thread.
    pub(super) cpu_ticks: u64,
}

pub(super) struct Sink {
    pub(super) socket: zmq::Socket,
    pub(super) target: Target,
    pub(super) prefix: Vec<u8>,
    pub(super) channels: usize,
    /// Counters below this are received but not timed.
    pub(super) timed_from: u64,
    pub(super) record_latency: bool,
}

impl Sink {
    pub(super) fn run(self, shared: &Shared) -> Result<SinkReport> {
        let ticks0 = own_thread_ticks();
        self.socket.set_rcvtimeo(SINK_POLL_MS)?;
        let mut frames: [zmq::Message; 5] = std::array::from_fn(|_| zmq::Message::new());
        let mut report = SinkReport {
            latency: self.record_latency.then(Histogram::new),
            ..SinkReport::default()
        };
        let mut seen = Seen::default();
        let mut last_seq = vec![0u64; self.channels];
        while !shared.stop_sink.load(Relaxed) {
            let count = match recv_message(&self.socket, &mut frames) {
                Ok(Some(count)) => count,
                Ok(None) => continue,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e).context("sink recv"),
            };
            let now = shared.now_ns();
            report.received += 1;
            shared.received.store(report.received, Relaxed);
            if count < 3 {
                report.bad_data += 1;
                continue;
            }
            let Some((n, t)) = parse_data(&frames[2]) else {
                report.bad_data += 1;
                continue;
            };
            match seen.insert(n) {
                Some(true) => {
                    if n >= self.timed_from {
                        if let Some(h) = report.latency.as_mut() {
                            h.record(now.saturating_sub(t));
                        }
                    }
                }
                Some(false) => report.duplicates += 1,
                None => report.untracked += 1,
            }
            if self.target == Target::Relay {
                let gaps = report.seq_gaps;
                self.check_seq(&frames, count, &mut last_seq, &mut report);
                if report.seq_gaps != gaps {
                    shared.seq_gaps.store(report.seq_gaps, Relaxed);
                }
            }
        }
        report.unique = seen.unique;
        report.cpu_ticks = own_thread_ticks().saturating_sub(ticks0);
        Ok(report)
    }

    /// Checks the relay's sequence frame against the channel's previous one.
    fn check_seq(
        &self,
        frames: &[zmq::Message; 5],
        count: usize,
        last_seq: &mut [u64],
        report: &mut SinkReport,
    ) {
        let channel = frames[0]
            .strip_prefix(self.prefix.as_slice())
            .and_then(parse_u64)
            .filter(|&i| (i as usize) < self.channels);
        let Some(channel) = channel else {
            report.foreign += 1;
            return;
        };
        if count != 4 {
            report.missing_seq += 1;
            return;
        }
        let Some(seq) = parse_u64(&frames[3]) else {
            report.missing_seq += 1;
            return;
        };
        let last = &mut last_seq[channel as usize];
        // The first number seen on a channel is taken as is: the relay may have
        // numbered it before this sink subscribed.
        if *last != 0 {
            if seq > *last + 1 {
                report.seq_gaps += seq - *last - 1;
            } else if seq <= *last {
                report.seq_backwards += 1;
            }
        }
        *last = seq;
    }
}

/// Reads one multipart message: `None` on timeout, else its frame count
/// (frames past the 4th are read into the last slot and dropped).
fn recv_message(
    socket: &zmq::Socket,
    frames: &mut [zmq::Message; 5],
) -> Result<Option<usize>, zmq::Error> {
    match socket.recv(&mut frames[0], 0) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut count = 1;
    let mut more = frames[0].get_more();
    while more {
        let slot = count.min(4);
        // The rest of a multipart message arrives with its first frame.
        socket.recv(&mut frames[slot], 0)?;
        more = frames[slot].get_more();
        count += 1;
    }
    Ok(Some(count))
}

/// The sink's socket for `target`, subscribed or bound; and the endpoint the
/// publisher must connect to.
pub(super) fn open_sink(
    cfg: &Config,
    ctx: &zmq::Context,
    target: Target,
) -> Result<(zmq::Socket, String)> {
    match target {
        Target::Direct => {
            let s = ctx.socket(zmq::PULL)?;
            s.set_rcvhwm(cfg.sink_queue)?;
            s.set_linger(0)?;
            s.bind(&cfg.direct_bind)
                .with_context(|| format!("binding {}", cfg.direct_bind))?;
            let endpoint = s
                .get_last_endpoint()?
                .map_err(|_| anyhow!("the bound endpoint is not UTF-8"))?;
            Ok((s, endpoint))
        }
        Target::Relay => {
            let s = ctx.socket(zmq::SUB)?;
            s.set_rcvhwm(cfg.sink_queue)?;
            s.set_linger(0)?;
            s.connect(&cfg.relay_edges)
                .with_context(|| format!("connecting to {}", cfg.relay_edges))?;
            for c in &cfg.channels {
                s.set_subscribe(c.as_bytes())?;
            }
            Ok((s, cfg.relay_publish.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_duplicates() {
        let mut s = Seen::default();
        assert_eq!(s.insert(5), Some(true));
        assert_eq!(s.insert(5), Some(false));
        assert_eq!(s.insert(100_000), Some(true));
        assert_eq!(s.insert(MAX_TRACKED), None);
        assert_eq!(s.unique, 2);
    }
}
