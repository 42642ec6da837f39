//! Channel names: the one rule every part of the fleet agrees on.
//!
//! Names travel as ZeroMQ subscription prefixes, etcd key parts and JSON strings,
//! so they are kept to a small ASCII alphabet that needs no escaping anywhere.

/// Longest channel name accepted, in bytes. Long enough for namespaced names such as
/// `prices:exchange-12:BTC-INR@depth.100`, short enough to keep subscription state small.
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is {0} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong(usize),
    #[error("channel name contains {0:?}; allowed are ASCII letters, digits and _ - . : @ =")]
    BadChar(char),
}

/// Accepts names of 1 to [`MAX_CHANNEL_LEN`] bytes made of ASCII letters, digits and
/// `_ - . : @ =`.
pub fn validate_channel(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong(name.len()));
    }
    match name.chars().find(|c| !is_channel_char(*c)) {
        Some(c) => Err(ChannelError::BadChar(c)),
        None => Ok(()),
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for name in ["ticker_INR", "a", "prices:ex-1:BTC.INR@depth=5"] {
            assert_eq!(validate_channel(name), Ok(()), "{name}");
        }
        assert_eq!(validate_channel(&"x".repeat(MAX_CHANNEL_LEN)), Ok(()));
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_channel(""), Err(ChannelError::Empty));
        assert_eq!(
            validate_channel(&"x".repeat(MAX_CHANNEL_LEN + 1)),
            Err(ChannelError::TooLong(MAX_CHANNEL_LEN + 1))
        );
        assert_eq!(validate_channel("a b"), Err(ChannelError::BadChar(' ')));
        assert_eq!(validate_channel("a/b"), Err(ChannelError::BadChar('/')));
        assert_eq!(validate_channel("é"), Err(ChannelError::BadChar('é')));
        assert_eq!(validate_channel("a\"b"), Err(ChannelError::BadChar('"')));
    }
}
