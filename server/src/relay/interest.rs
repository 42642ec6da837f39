//! Which channels any edge holds, and each held channel's sequence counter.
//!
//! libzmq's XPUB socket reports a channel's subscription when the first edge takes
//! it and its unsubscription when the last edge lets it go (or disconnects), so this
//! set is exactly the union of every connected edge's channels. A message for a
//! channel outside it goes nowhere: the relay counts it (`no_subscribers`) and never
//! touches the network. The set also bounds the sequence table: a counter is created
//! only when some edge takes its channel, so a publisher inventing channel names
//! cannot grow the relay's memory.
//!
//! When the last edge lets a channel go, its counter is *retired*, not dropped, for
//! [`RETIRED_FOR`] (at most [`RETIRED_MAX`] of them): messages published meanwhile
//! still advance it (and go nowhere), and an edge taking the channel again continues
//! the numbering. So a client whose edge died and who resubscribes on an edge that
//! did not hold the channel sees the numbers it missed as a gap, never as a restart
//! it could mistake for a new stream. Only a relay restart starts numbers over.
//!
//! The empty subscription (a raw ZeroMQ tap subscribing to everything) is honoured:
//! while one exists every message is forwarded, numbered only if its channel is
//! also held by name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a channel nobody holds keeps its counter.
pub const RETIRED_FOR: Duration = Duration::from_secs(600);
/// Most retired counters kept (a client subscribing to many invented names churns
/// through them; the oldest go first).
pub const RETIRED_MAX: usize = 100_000;

/// A subscription change read from the edge-facing XPUB socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    Subscribe(&'a [u8]),
    Unsubscribe(&'a [u8]),
}

impl<'a> Change<'a> {
    /// Parses an XPUB subscription message: `0x01 topic` or `0x00 topic`.
    pub fn parse(message: &'a [u8]) -> Option<Self> {
        match message.split_first()? {
            (1, topic) => Some(Self::Subscribe(topic)),
            (0, topic) => Some(Self::Unsubscribe(topic)),
            _ => None,
        }
    }
}

/// Where a publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Some edge holds the channel: forward with this sequence number.
    Numbered(u64),
    /// Only a catch-all subscriber wants it: forward without a number.
    Unnumbered,
    /// Nobody wants it.
    Nowhere,
}

/// The held channels and their counters.
#[derive(Debug, Default)]
pub struct Interest {
    /// Channel → last sequence number handed out (0: none yet).
    channels: HashMap<Box<[u8]>, u64>,
    /// Channels nobody holds any more → (last number, when let go).
    retired: HashMap<Box<[u8]>, (u64, Instant)>,
    catch_all: bool,
}

impl Interest {
    /// Applies one change from the XPUB socket.
    pub fn apply(&mut self, change: Change<'_>) {
        self.apply_at(change, Instant::now());
    }

    /// [`Interest::apply`] at a given time.
    pub fn apply_at(&mut self, change: Change<'_>, now: Instant) {
        match change {
            Change::Subscribe(b"") => self.catch_all = true,
            Change::Unsubscribe(b"") => self.catch_all = false,
            Change::Subscribe(topic) => {
                if !self.channels.contains_key(topic) {
                    let seq = self
                        .retired
                        .remove(topic)
                        .filter(|(_, since)| now.duration_since(*since) < RETIRED_FOR)
                        .map_or(0, |(seq, _)| seq);
                    self.channels.insert(topic.into(), seq);
                }
            }
            Change::Unsubscribe(topic) => {
                if let Some((name, seq)) = self.channels.remove_entry(topic) {
                    self.retire(name, seq, now);
                }
            }
        }
    }

    fn retire(&mut self, name: Box<[u8]>, seq: u64, now: Instant) {
        if self.retired.len() >= RETIRED_MAX {
            self.retired
                .retain(|_, (_, since)| now.duration_since(*since) < RETIRED_FOR);
        }
        if self.retired.len() >= RETIRED_MAX {
            // Still full of recent ones: drop the oldest tenth in one pass.
            let mut ages: Vec<Instant> = self.retired.values().map(|(_, t)| *t).collect();
            ages.sort_unstable();
            let cut = ages[RETIRED_MAX / 10];
            self.retired.retain(|_, (_, since)| *since > cut);
        }
        self.retired.insert(name, (seq, now));
    }

    /// Routes one message of `channel`, advancing its counter when numbered (or
    /// retired: the number is spent even though nobody receives it).
    pub fn route(&mut self, channel: &[u8]) -> Route {
        match self.channels.get_mut(channel) {
            Some(seq) => {
                *seq += 1;
                Route::Numbered(*seq)
            }
            None => {
                if let Some((seq, _)) = self.retired.get_mut(channel) {
                    *seq += 1;
                }
                if self.catch_all {
                    Route::Unnumbered
                } else {
                    Route::Nowhere
                }
            }
        }
    }

    /// Retired counters kept.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Channels held by name.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && !self.catch_all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xpub_messages() {
        assert_eq!(Change::parse(b"\x01abc"), Some(Change::Subscribe(b"abc")));
        assert_eq!(Change::parse(b"\x00abc"), Some(Change::Unsubscribe(b"abc")));
        assert_eq!(Change::parse(b"\x01"), Some(Change::Subscribe(b"")));
        assert_eq!(Change::parse(b""), None);
        assert_eq!(Change::parse(b"\x02abc"), None);
    }

    #[test]
    fn numbers_held_channels_only() {
        let mut i = Interest::default();
        assert_eq!(i.route(b"a"), Route::Nowhere);
        i.apply(Change::Subscribe(b"a"));
        assert_eq!(i.route(b"a"), Route::Numbered(1));
        assert_eq!(i.route(b"a"), Route::Numbered(2));
        assert_eq!(i.route(b"ab"), Route::Nowhere, "exact names, not prefixes");
        i.apply(Change::Subscribe(b"a"));
        assert_eq!(i.route(b"a"), Route::Numbered(3), "a repeat does not reset");
        i.apply(Change::Unsubscribe(b"a"));
        assert_eq!(i.route(b"a"), Route::Nowhere);
        assert!(i.is_empty());
        i.apply(Change::Subscribe(b"a"));
        assert_eq!(
            i.route(b"a"),
            Route::Numbered(5),
            "held again: numbering goes on, the message nobody held counted as missed"
        );
    }

    #[test]
    fn retired_counters_expire_and_stay_bounded() {
        let mut i = Interest::default();
        let t0 = Instant::now();
        i.apply_at(Change::Subscribe(b"a"), t0);
        assert_eq!(i.route(b"a"), Route::Numbered(1));
        i.apply_at(Change::Unsubscribe(b"a"), t0);
        let later = t0 + RETIRED_FOR + Duration::from_secs(1);
        i.apply_at(Change::Subscribe(b"a"), later);
        assert_eq!(
            i.route(b"a"),
            Route::Numbered(1),
            "forgotten after RETIRED_FOR"
        );

        let mut i = Interest::default();
        for n in 0..RETIRED_MAX + 10 {
            let name = format!("c{n}");
            let at = t0 + Duration::from_millis(n as u64);
            i.apply_at(Change::Subscribe(name.as_bytes()), at);
            i.apply_at(Change::Unsubscribe(name.as_bytes()), at);
        }
        assert!(i.retired() <= RETIRED_MAX, "{}", i.retired());
        assert!(i.retired() >= RETIRED_MAX * 8 / 10, "{}", i.retired());
        assert!(i.is_empty());
    }

    #[test]
    fn catch_all_forwards_unnumbered() {
        let mut i = Interest::default();
        i.apply(Change::Subscribe(b""));
        i.apply(Change::Subscribe(b"a"));
        assert_eq!(i.route(b"zzz"), Route::Unnumbered);
        assert_eq!(i.route(b"a"), Route::Numbered(1));
        i.apply(Change::Unsubscribe(b""));
        assert_eq!(i.route(b"zzz"), Route::Nowhere);
        assert_eq!(i.len(), 1);
    }
}
