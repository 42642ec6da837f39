//! Which relay owns a channel: rendezvous (highest-random-weight) hashing over the
//! relays' publish endpoints.
//!
//! Every relay scores every channel with [`score`]; the channel belongs to the relay
//! with the highest score (ties, which need a 64-bit collision, go to the smaller
//! endpoint). The rule needs no coordination, gives every relay an equal share, and
//! when a relay joins or leaves only the channels it gains or loses move, about
//! 1/n of them. Publishers in any language can compute it: the hash is 64-bit FNV-1a
//! over `endpoint`, one 0xFF byte (never part of UTF-8, so the split is unambiguous)
//! and `channel`, finished with the splitmix64 mixer so that similar inputs spread.
//! `clients/python/pushfleet_publish.py` carries the same function, and the test
//! vectors below pin both.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The rendezvous score of `channel` on the relay whose publish endpoint is `endpoint`.
pub fn score(endpoint: &str, channel: &str) -> u64 {
    let mut h = FNV_OFFSET;
    let bytes = endpoint.bytes().chain([0xff]).chain(channel.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // splitmix64 finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Index of the relay in `endpoints` that owns `channel`, or `None` when the list is
/// empty. The order of `endpoints` does not matter.
pub fn owner<S: AsRef<str>>(endpoints: &[S], channel: &str) -> Option<usize> {
    endpoints
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            let (a, b) = (a.as_ref(), b.as_ref());
            // Reverse the endpoint order so that on equal scores the smaller one wins.
            (score(a, channel), std::cmp::Reverse(a))
                .cmp(&(score(b, channel), std::cmp::Reverse(b)))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: a change here breaks every publisher in another language.
    #[test]
    fn test_vectors() {
        assert_eq!(
            score("tcp://127.0.0.1:5560", "ticker_INR"),
            0x2218_c901_e759_eabf
        );
        assert_eq!(
            score("tcp://127.0.0.1:5570", "ticker_INR"),
            0x8db0_612d_d748_ec53
        );
        assert_eq!(score("", ""), 0x4f2d_b50f_1240_40cd);
    }

    #[test]
    fn owner_ignores_order_and_handles_empty() {
        let a = [
            "tcp://10.0.0.1:5560",
            "tcp://10.0.0.2:5560",
            "tcp://10.0.0.3:5560",
        ];
        let mut b = a;
        b.reverse();
        for n in 0..200 {
            let channel = format!("chan-{n}");
            let oa = a[owner(&a, &channel).unwrap()];
            let ob = b[owner(&b, &channel).unwrap()];
            assert_eq!(oa, ob);
        }
        assert_eq!(owner::<&str>(&[], "x"), None);
    }

    #[test]
    fn shares_are_even_and_removal_moves_only_the_lost_share() {
        let three = [
            "tcp://10.0.0.1:5560",
            "tcp://10.0.0.2:5560",
            "tcp://10.0.0.3:5560",
        ];
        let two = &three[..2];
        let mut counts = [0usize; 3];
        let mut moved = 0;
        let total = 30_000;
        for n in 0..total {
            let channel = format!("c{n}");
            let before = owner(&three, &channel).unwrap();
            counts[before] += 1;
            let after = owner(two, &channel).unwrap();
            if before != 2 {
                assert_eq!(before, after, "a channel of a surviving relay moved");
            } else {
                moved += 1;
            }
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven shares {counts:?}");
        }
        assert_eq!(moved, counts[2]);
    }
}
