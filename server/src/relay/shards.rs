//! The relay set this relay shards channels over, shared between whoever learns it
//! (the static `--relays` flag, or the etcd follower) and the core thread, which
//! polls [`ShardSet::generation`] once per loop and reconnects to the peers when it
//! moves.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Mutex;

use pushfleet_protocol::shard;

/// Publish endpoints of every relay, this one included.
#[derive(Debug, Default)]
pub struct ShardSet {
    generation: AtomicU64,
    relays: Mutex<Vec<String>>,
}

impl ShardSet {
    /// Replaces the set (sorted and deduplicated) if it changed.
    pub fn set(&self, mut relays: Vec<String>) {
        relays.sort();
        relays.dedup();
        let Ok(mut current) = self.relays.lock() else {
            return;
        };
        if *current != relays {
            *current = relays;
            self.generation.fetch_add(1, Release);
        }
    }

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Acquire)
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.relays.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// The core thread's copy of the set, with this relay's own endpoint.
#[derive(Debug, Clone)]
pub struct Owners {
    relays: Vec<String>,
    own: String,
}

/// Who serves a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// This relay (also when the set is empty or does not include it).
    Me,
    /// Another relay, by publish endpoint.
    Peer(&'a str),
}

impl Owners {
    pub fn new(relays: Vec<String>, own: String) -> Self {
        Self { relays, own }
    }

    /// The owner of `channel`. A set that does not list this relay (etcd has not
    /// seen its registration yet) still lets it serve its share: it is counted in.
    pub fn of(&self, channel: &str) -> Owner<'_> {
        if self.relays.is_empty() {
            return Owner::Me;
        }
        let with_me;
        let relays: &[String] = if self.relays.contains(&self.own) {
            &self.relays
        } else {
            with_me = [self.relays.as_slice(), std::slice::from_ref(&self.own)].concat();
            &with_me
        };
        match shard::owner(relays, channel).map(|i| relays[i].as_str()) {
            Some(owner) if owner != self.own => {
                // Re-borrow from self so the returned str outlives `with_me`.
                match self.relays.iter().find(|r| *r == owner) {
                    Some(peer) => Owner::Peer(peer),
                    None => Owner::Me,
                }
            }
            _ => Owner::Me,
        }
    }

    /// Every relay but this one.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.relays
            .iter()
            .filter(|r| **r != self.own)
            .map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.relays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_set_serves_everything() {
        let o = Owners::new(vec![], "tcp://a:1".into());
        assert_eq!(o.of("x"), Owner::Me);
    }

    #[test]
    fn splits_channels_as_the_shard_function_does() {
        let relays = vec!["tcp://a:1".to_owned(), "tcp://b:1".to_owned()];
        let a = Owners::new(relays.clone(), relays[0].clone());
        let b = Owners::new(relays.clone(), relays[1].clone());
        let (mut mine_a, mut mine_b) = (0, 0);
        for n in 0..1000 {
            let channel = format!("c{n}");
            let expected = relays[shard::owner(&relays, &channel).unwrap()].as_str();
            match (a.of(&channel), b.of(&channel)) {
                (Owner::Me, Owner::Peer(p)) => {
                    assert_eq!(p, "tcp://a:1");
                    assert_eq!(expected, "tcp://a:1");
                    mine_a += 1;
                }
                (Owner::Peer(p), Owner::Me) => {
                    assert_eq!(p, "tcp://b:1");
                    assert_eq!(expected, "tcp://b:1");
                    mine_b += 1;
                }
                other => panic!("both or neither own {channel}: {other:?}"),
            }
        }
        assert!(mine_a > 400 && mine_b > 400);
        assert_eq!(a.peers().collect::<Vec<_>>(), ["tcp://b:1"]);
    }

    #[test]
    fn counts_itself_in_when_missing() {
        let o = Owners::new(vec!["tcp://b:1".into()], "tcp://a:1".into());
        let full = ["tcp://a:1", "tcp://b:1"];
        for n in 0..100 {
            let channel = format!("c{n}");
            let expected = full[shard::owner(&full, &channel).unwrap()];
            let got = match o.of(&channel) {
                Owner::Me => "tcp://a:1",
                Owner::Peer(p) => p,
            };
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn shard_set_bumps_generation_on_change_only() {
        let s = ShardSet::default();
        s.set(vec!["b".into(), "a".into()]);
        let g = s.generation();
        s.set(vec!["a".into(), "b".into(), "a".into()]);
        assert_eq!(s.generation(), g);
        assert_eq!(s.snapshot(), ["a", "b"]);
        s.set(vec!["a".into()]);
        assert!(s.generation() > g);
    }
}
