//! A socket's send queue: what the connection task writes, with `writev`, straight
//! from the shared frames.
//!
//! The queue is bounded (`--send-queue` messages) with a named full-policy
//! ([`SlowClientPolicy`]); control frames (acks, errors, pongs, pings, close) are
//! never evicted but count toward a small extra allowance, past which the client is
//! treated as not reading and disconnected. One slow client therefore never costs
//! more than its own bounded queue, and never slows anyone else.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::edge::codec::frame::{close_code, encode_close};
use crate::edge::config::SlowClientPolicy;
use crate::edge::fanout::encoded::EncodedMessage;
use crate::edge::telemetry::metrics::{bump, WorkerMetrics};

/// Control frames allowed beyond the message bound before the client counts as not
/// reading at all (it keeps sending requests but never reads the replies).
pub const CONTROL_ALLOWANCE: usize = 64;

/// A message as one worker holds it: the outer `Rc` is cloned for each socket with no
/// atomic operation; the inner `Arc` (shared across workers) is cloned once per worker,
/// so worker threads never contend on one reference count for every delivery.
#[allow(clippy::redundant_allocation)]
pub type LocalMessage = Rc<Arc<EncodedMessage>>;

/// One queued frame.
pub enum Item {
    /// A published message, shared by every socket on this worker.
    Message(LocalMessage),
    /// A channel's latest value replayed on subscribe.
    Snapshot(LocalMessage),
    /// A frame for this socket only.
    Control(Bytes),
}

impl Item {
    fn channel(&self) -> Option<&str> {
        match self {
            Item::Message(p) | Item::Snapshot(p) => Some(&p.channel),
            Item::Control(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Flush what is queued (ending with a close frame), then end the body.
    Closing,
}

/// What happened to a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and an older message was evicted.
    Evicted,
    /// The client is too slow and was disconnected (`disconnect` policy or a flood of
    /// control frames).
    Disconnected,
    /// The socket is closing; nothing was queued.
    Closed,
}

pub struct Outbox {
    queue: VecDeque<Item>,
    messages: usize,
    capacity: usize,
    policy: SlowClientPolicy,
    state: State,
    waker: Option<Waker>,
    /// Bytes of the front frame already written.
    written: usize,
    fail: bool,
}

impl Outbox {
    pub fn new(capacity: usize, policy: SlowClientPolicy) -> Self {
        Self {
            queue: VecDeque::new(),
            messages: 0,
            capacity,
            policy,
            state: State::Open,
            waker: None,
            written: 0,
            fail: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Messages (not control frames) waiting.
    pub fn queued_messages(&self) -> usize {
        self.messages
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Queues a published message under the slow-client policy.
    pub fn push_message(&mut self, item: Item, metrics: &WorkerMetrics) -> Pushed {
        if self.state != State::Open {
            return Pushed::Closed;
        }
        bump(&metrics.enqueued, 1);
        let mut outcome = Pushed::Queued;
        if self.messages >= self.capacity {
            match self.policy {
                SlowClientPolicy::Disconnect => {
                    bump(&metrics.dropped_slow, 1);
                    bump(&metrics.slow_disconnects, 1);
                    self.abort(close_code::POLICY_VIOLATION, "slow consumer", metrics);
                    return Pushed::Disconnected;
                }
                SlowClientPolicy::Conflate => {
                    let same = item.channel().and_then(|c| {
                        self.queue
                            .iter()
                            .rposition(|queued| queued.channel() == Some(c))
                    });
                    self.evict(same, metrics);
                }
                SlowClientPolicy::DropOldest => self.evict(None, metrics),
            }
            outcome = Pushed::Evicted;
        }
        self.messages += 1;
        self.queue.push_back(item);
        self.wake();
        outcome
    }

    /// Removes the message at `at`, or the oldest message.
    fn evict(&mut self, at: Option<usize>, metrics: &WorkerMetrics) {
        // The front frame may be half written: it cannot be taken back.
        let skip = usize::from(self.written > 0);
        let at = at.filter(|i| *i >= skip).or_else(|| {
            self.queue
                .iter()
                .skip(skip)
                .position(|i| i.channel().is_some())
                .map(|i| i + skip)
        });
        if let Some(i) = at {
            self.queue.remove(i);
            self.messages -= 1;
            bump(&metrics.dropped_slow, 1);
        }
    }

    /// Queues a frame for this socket only (never evicted).
    pub fn push_control(&mut self, frame: Bytes, metrics: &WorkerMetrics) -> Pushed {
        if self.state != State::Open {
            return Pushed::Closed;
        }
        if self.queue.len() - self.messages >= CONTROL_ALLOWANCE {
            bump(&metrics.slow_disconnects, 1);
            self.abort(
                close_code::POLICY_VIOLATION,
                "client is not reading",
                metrics,
            );
            return Pushed::Disconnected;
        }
        self.queue.push_back(Item::Control(frame));
        self.wake();
        Pushed::Queued
    }

    /// Sends what is queued, then a close frame, then ends the body.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state != State::Open {
            return;
        }
        self.queue
            .push_back(Item::Control(encode_close(code, reason)));
        self.state = State::Closing;
        self.wake();
    }

    /// Like [`Outbox::close`], but the connection ends once the close frame is written,
    /// without waiting for the client's answer: for clients that failed (protocol error,
    /// silence, too slow).
    pub fn fail(&mut self, code: u16, reason: &str) {
        self.fail = true;
        self.close(code, reason);
    }

    /// Drops everything queued (counted as slow-client drops) and fails the connection.
    fn abort(&mut self, code: u16, reason: &str, metrics: &WorkerMetrics) {
        // Keep a half-written front frame: the stream must stay well-formed.
        let keep = usize::from(self.written > 0).min(self.queue.len());
        let dropped: Vec<Item> = self.queue.drain(keep..).collect();
        let dropped_messages = dropped.iter().filter(|i| i.channel().is_some()).count();
        bump(&metrics.dropped_slow, dropped_messages as u64);
        self.messages -= dropped_messages;
        self.fail(code, reason);
    }

    /// Discards what is left when the connection is gone; counted as `closed` drops.
    pub fn discard(&mut self, metrics: &WorkerMetrics) {
        bump(&metrics.dropped_closed, self.messages as u64);
        self.queue = VecDeque::new();
        self.messages = 0;
        self.written = 0;
        self.state = State::Closing;
        self.waker = None;
    }
}

/// Most frames handed to one `writev` call.
pub const MAX_WRITE_SLICES: usize = 64;

impl Item {
    /// The bytes this item puts on the wire for a socket.
    fn frame(&self, compressed: bool) -> &Bytes {
        match self {
            Item::Message(p) => p.frames.for_socket(compressed),
            Item::Snapshot(p) => p.snapshot_frames().for_socket(compressed),
            Item::Control(frame) => frame,
        }
    }
}

impl Outbox {
    /// True when nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Closing and fully written: the connection can end.
    pub fn is_finished(&self) -> bool {
        self.state == State::Closing && self.queue.is_empty()
    }

    /// Fills `slices` with the frames to write next (the first one from where the last
    /// partial write stopped) and returns how many it filled. The frames are the shared
    /// bytes themselves: nothing is copied.
    pub fn slices<'a>(&'a self, compressed: bool, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, item) in self.queue.iter().take(slices.len()).enumerate() {
            let frame = item.frame(compressed);
            let from = if i == 0 { self.written } else { 0 };
            slices[i] = IoSlice::new(&frame[from..]);
            n += 1;
        }
        n
    }

    /// Accounts for `n` bytes the socket accepted: completed frames leave the queue
    /// and count as delivered.
    pub fn advance(&mut self, mut n: usize, compressed: bool, metrics: &WorkerMetrics) {
        bump(&metrics.bytes_out, n as u64);
        while n > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let left = front.frame(compressed).len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            match self.queue.pop_front() {
                Some(Item::Message(p)) => {
                    self.messages -= 1;
                    bump(&metrics.delivered, 1);
                    metrics.record_latency(p.received.elapsed().as_micros() as u64);
                }
                Some(Item::Snapshot(_)) => {
                    self.messages -= 1;
                    bump(&metrics.delivered, 1);
                }
                Some(Item::Control(_)) | None => {}
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 64 {
            // A burst grew the queue; give the memory back once it has drained.
            self.queue.shrink_to(16);
        }
    }

    /// Ready when there is something to write or the socket is closing.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.queue.is_empty() || self.state != State::Open {
            return Poll::Ready(());
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the connection should end as soon as the close frame is written, without
    /// waiting for the client's close (a failed connection, RFC 6455 §7.1.7).
    pub fn fails(&self) -> bool {
        self.fail
    }
}

/// Resolves when the outbox has frames to write (or is closing).
pub fn ready(outbox: &RefCell<Outbox>) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| outbox.borrow_mut().poll_ready(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::fanout::encoded::Encoder;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;

    fn msg(channel: &str, seq: u64) -> Item {
        let encoder = Encoder {
            threshold: 1 << 20,
            level: 1,
        };
        let (p, _) = EncodedMessage::new(
            channel.into(),
            "e",
            "1",
            seq,
            Instant::now(),
            encoder,
            false,
        );
        Item::Message(Rc::new(Arc::new(p)))
    }

    fn queued(outbox: &Outbox) -> Vec<(String, u64)> {
        outbox
            .queue
            .iter()
            .filter_map(|i| match i {
                Item::Message(p) | Item::Snapshot(p) => Some((p.channel.to_string(), p.seq)),
                Item::Control(_) => None,
            })
            .collect()
    }

    #[test]
    fn drop_oldest_evicts_the_oldest_message_but_never_control_frames() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(2, SlowClientPolicy::DropOldest);
        o.push_control(Bytes::from_static(b"ack"), &m);
        assert_eq!(o.push_message(msg("a", 1), &m), Pushed::Queued);
        assert_eq!(o.push_message(msg("a", 2), &m), Pushed::Queued);
        assert_eq!(o.push_message(msg("a", 3), &m), Pushed::Evicted);
        assert_eq!(queued(&o), vec![("a".into(), 2), ("a".into(), 3)]);
        assert_eq!(o.queue.len(), 3, "the control frame stays");
        assert_eq!(m.dropped_slow.load(Relaxed), 1);
        assert_eq!(m.enqueued.load(Relaxed), 3);
    }

    #[test]
    fn conflate_replaces_the_same_channels_queued_message() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(2, SlowClientPolicy::Conflate);
        o.push_message(msg("a", 1), &m);
        o.push_message(msg("b", 1), &m);
        assert_eq!(o.push_message(msg("b", 2), &m), Pushed::Evicted);
        assert_eq!(queued(&o), vec![("a".into(), 1), ("b".into(), 2)]);
        // No queued message of channel c: the oldest goes.
        o.push_message(msg("c", 1), &m);
        assert_eq!(queued(&o), vec![("b".into(), 2), ("c".into(), 1)]);
    }

    #[test]
    fn disconnect_drops_everything_and_queues_a_1008_close() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(1, SlowClientPolicy::Disconnect);
        o.push_message(msg("a", 1), &m);
        assert_eq!(o.push_message(msg("a", 2), &m), Pushed::Disconnected);
        assert!(!o.is_open());
        assert_eq!(o.queue.len(), 1);
        assert!(
            matches!(&o.queue[0], Item::Control(f) if f[0] == 0x88 && f[2..4] == 1008u16.to_be_bytes())
        );
        assert_eq!(m.dropped_slow.load(Relaxed), 2);
        assert_eq!(m.slow_disconnects.load(Relaxed), 1);
        assert_eq!(o.push_message(msg("a", 3), &m), Pushed::Closed);
    }

    #[test]
    fn a_client_that_never_reads_its_replies_is_cut_off() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(4, SlowClientPolicy::DropOldest);
        for _ in 0..CONTROL_ALLOWANCE {
            assert_eq!(o.push_control(Bytes::from_static(b"x"), &m), Pushed::Queued);
        }
        assert_eq!(
            o.push_control(Bytes::from_static(b"x"), &m),
            Pushed::Disconnected
        );
        assert!(!o.is_open());
    }

    #[test]
    fn a_half_written_frame_is_never_evicted_or_dropped() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(2, SlowClientPolicy::DropOldest);
        o.push_message(msg("a", 1), &m);
        o.push_message(msg("a", 2), &m);
        o.advance(3, false, &m); // the socket took 3 bytes of frame 1
        o.push_message(msg("a", 3), &m);
        assert_eq!(
            queued(&o),
            vec![("a".into(), 1), ("a".into(), 3)],
            "frame 2 went, not 1"
        );
        let mut slices = [IoSlice::new(&[]); 4];
        let n = o.slices(false, &mut slices);
        assert_eq!(n, 2);
        assert_eq!(
            slices[0].len(),
            msg_len() - 3,
            "the first slice resumes mid-frame"
        );
        let mut d = Outbox::new(1, SlowClientPolicy::Disconnect);
        d.push_message(msg("a", 1), &m);
        d.advance(1, false, &m);
        assert_eq!(d.push_message(msg("a", 2), &m), Pushed::Disconnected);
        assert_eq!(
            queued(&d),
            vec![("a".into(), 1)],
            "the half-written frame is finished first"
        );
        assert_eq!(d.queue.len(), 2, "then the close frame");
    }

    #[test]
    fn advance_counts_deliveries_and_bytes() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(8, SlowClientPolicy::DropOldest);
        o.push_message(msg("a", 1), &m);
        o.push_message(msg("a", 2), &m);
        o.advance(msg_len() + 1, false, &m);
        assert_eq!(m.delivered.load(Relaxed), 1);
        assert_eq!(o.queued_messages(), 1);
        o.advance(msg_len() - 1, false, &m);
        assert_eq!(m.delivered.load(Relaxed), 2);
        assert_eq!(m.bytes_out.load(Relaxed), 2 * msg_len() as u64);
        assert!(o.is_empty());
    }

    fn msg_len() -> usize {
        match msg("a", 1) {
            Item::Message(p) => p.frames.plain.len(),
            _ => 0,
        }
    }

    #[test]
    fn discard_counts_what_was_left() {
        let m = WorkerMetrics::default();
        let mut o = Outbox::new(8, SlowClientPolicy::DropOldest);
        o.push_message(msg("a", 1), &m);
        o.push_message(msg("a", 2), &m);
        o.discard(&m);
        assert_eq!(m.dropped_closed.load(Relaxed), 2);
        assert_eq!(o.queued_messages(), 0);
    }
}
