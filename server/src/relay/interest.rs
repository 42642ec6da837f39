//! Which channels any edge holds, and each held channel's sequence counter.
//!
//! libzmq's XPUB socket reports a channel's subscription when the first edge takes
//! it and its unsubscription when the last edge lets it go (or disconnects), so this
//! set is exactly the union of every connected edge's channels. A message for a
//! channel outside it goes nowhere: the relay counts it (`no_subscribers`) and never
//! touches the network. The set also bounds the sequence table: a counter lives only
//! while some edge holds its channel, so a publisher inventing channel names cannot
//! grow the relay's memory.
//!
//! The empty subscription (a raw ZeroMQ tap subscribing to everything) is honoured:
//! while one exists every message is forwarded, numbered only if its channel is
//! also held by name.

use std::collections::HashMap;

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
    catch_all: bool,
}

impl Interest {
    /// Applies one change from the XPUB socket.
    pub fn apply(&mut self, change: Change<'_>) {
        match change {
            Change::Subscribe(b"") => self.catch_all = true,
            Change::Unsubscribe(b"") => self.catch_all = false,
            Change::Subscribe(topic) => {
                self.channels.entry(topic.into()).or_insert(0);
            }
            Change::Unsubscribe(topic) => {
                self.channels.remove(topic);
            }
        }
    }

    /// Routes one message of `channel`, advancing its counter when numbered.
    pub fn route(&mut self, channel: &[u8]) -> Route {
        match self.channels.get_mut(channel) {
            Some(seq) => {
                *seq += 1;
                Route::Numbered(*seq)
            }
            None if self.catch_all => Route::Unnumbered,
            None => Route::Nowhere,
        }
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
        assert_eq!(i.route(b"a"), Route::Numbered(1), "held again: starts over");
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
