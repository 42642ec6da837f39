//! The data frame of every publish, `{"n":N,"t":T,"p":"xx…"}`: written by the
//! publishers, read back by the sink; and the decimal parsing the sink uses.

use std::fmt::Write as _;

/// Event name of every publish.
pub(super) const EVENT: &str = "tick";

/// Writes the data of message `n` sent at `t` ns into `buf`, padded to `size` bytes
/// (or left at its natural length when that is already longer).
pub(super) fn write_data(buf: &mut String, n: u64, t: u64, size: usize) {
    buf.clear();
    let _ = write!(buf, "{{\"n\":{n},\"t\":{t},\"p\":\"");
    let pad = size.saturating_sub(buf.len() + 2);
    buf.extend(std::iter::repeat_n('x', pad));
    buf.push_str("\"}");
}

/// Reads `(n, t)` back from data written by [`write_data`].
pub(super) fn parse_data(data: &[u8]) -> Option<(u64, u64)> {
    let rest = data.strip_prefix(b"{\"n\":")?;
    let (n, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(b",\"t\":")?;
    let (t, _) = leading_u64(rest)?;
    Some((n, t))
}

/// The decimal number at the start of `s` and what follows it.
fn leading_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut v = 0u64;
    for &b in &s[..digits] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, &s[digits..]))
}

/// A whole decimal number (the relay's sequence frame, a channel's index).
pub(super) fn parse_u64(s: &[u8]) -> Option<u64> {
    match leading_u64(s)? {
        (v, []) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn data_round_trips_at_the_requested_size() {
        let mut buf = String::new();
        for (n, t, size) in [(0, 0, 100), (123_456, 9_876_543_210, 100), (7, 8, 10)] {
            write_data(&mut buf, n, t, size);
            assert_eq!(parse_data(buf.as_bytes()), Some((n, t)));
            assert!(
                buf.len() == size || (size < 30 && buf.len() > size),
                "{buf}"
            );
            serde_json::from_str::<Value>(&buf).expect("valid JSON");
        }
        assert_eq!(parse_data(b"{\"n\":1}"), None);
        assert_eq!(parse_data(b"{\"n\":,\"t\":2}"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"42"), Some(42));
        assert_eq!(parse_u64(b"42x"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
    }
}
