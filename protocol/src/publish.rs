//! The ZeroMQ publish format: a multipart message `[channel, event, data]`, all UTF-8,
//! with `data` JSON text that edges pass to clients untouched. A fourth frame, `seq`
//! (decimal), is optional: a relay that numbers each channel's messages sets it so
//! every edge shows clients the same numbers; without it each edge numbers messages
//! itself.

use crate::channel::{validate_channel, ChannelError};

/// Default bound on a publish's data frame, shared by relays, edges and publishers.
/// 1 MiB: large enough for any realistic realtime payload, small enough that one bad
/// publisher cannot make the edge hold huge frames for every socket.
pub const DEFAULT_MAX_DATA: usize = 1024 * 1024;
/// Longest event name accepted, in bytes.
pub const MAX_EVENT_LEN: usize = 128;

/// One publish, borrowed from the frames it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    pub channel: &'a str,
    pub event: &'a str,
    pub data: &'a str,
    pub seq: Option<u64>,
}

/// Why a publish was refused. [`PublishError::malformed`] is the reason it is counted under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("expected 3 frames [channel, event, data] (or 4 with seq), got {0}")]
    FrameCount(usize),
    #[error("{0} frame is not UTF-8")]
    NotUtf8(&'static str),
    #[error("bad channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("event name must be 1 to {MAX_EVENT_LEN} bytes")]
    Event,
    #[error("data is not valid JSON: {0}")]
    Data(String),
    #[error("seq frame is not a decimal integer")]
    Seq,
    #[error("data is {0} bytes; the limit is {1}")]
    TooLarge(usize, usize),
}

/// What was wrong with a refused publish: the reason its drop is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Not 3 frames (or 4 with `seq`).
    Frames,
    /// A frame is not UTF-8.
    Utf8,
    /// The channel name is invalid.
    Channel,
    /// The event name is empty or too long.
    Event,
    /// The data is not JSON.
    Data,
    /// The `seq` frame is not a decimal integer.
    Seq,
    /// The data is over the size limit.
    TooLarge,
}

impl Malformed {
    /// Every reason, in the order counters indexed by reason use.
    pub const ALL: [Malformed; 7] = [
        Self::Frames,
        Self::Utf8,
        Self::Channel,
        Self::Event,
        Self::Data,
        Self::Seq,
        Self::TooLarge,
    ];

    /// [`Malformed::ALL`] as metric tags.
    pub const NAMES: [&'static str; 7] = crate::tags_of!(Self::ALL);

    /// Its index in [`Malformed::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The metric tag.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Frames => "frames",
            Self::Utf8 => "utf8",
            Self::Channel => "channel",
            Self::Event => "event",
            Self::Data => "data",
            Self::Seq => "seq",
            Self::TooLarge => "too_large",
        }
    }
}

impl PublishError {
    /// Why, as a reason to count.
    pub fn malformed(&self) -> Malformed {
        match self {
            Self::FrameCount(_) => Malformed::Frames,
            Self::NotUtf8(_) => Malformed::Utf8,
            Self::Channel(_) => Malformed::Channel,
            Self::Event => Malformed::Event,
            Self::Data(_) => Malformed::Data,
            Self::Seq => Malformed::Seq,
            Self::TooLarge(..) => Malformed::TooLarge,
        }
    }

    /// A short, fixed tag for counting drops by reason.
    pub fn reason(&self) -> &'static str {
        self.malformed().as_str()
    }
}

/// Validates a multipart publish. `max_data` bounds the data frame in bytes.
pub fn parse<'a, F: AsRef<[u8]>>(
    frames: &'a [F],
    max_data: usize,
) -> Result<Publish<'a>, PublishError> {
    if !(3..=4).contains(&frames.len()) {
        return Err(PublishError::FrameCount(frames.len()));
    }
    let text = |i: usize, name: &'static str| {
        std::str::from_utf8(frames[i].as_ref()).map_err(|_| PublishError::NotUtf8(name))
    };
    let channel = text(0, "channel")?;
    validate_channel(channel)?;
    let event = text(1, "event")?;
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(PublishError::Event);
    }
    let raw_data = frames[2].as_ref();
    if raw_data.len() > max_data {
        return Err(PublishError::TooLarge(raw_data.len(), max_data));
    }
    let data = text(2, "data")?;
    // Validate the syntax without building a value: the bytes go out unchanged.
    serde_json::from_str::<serde::de::IgnoredAny>(data)
        .map_err(|e| PublishError::Data(e.to_string()))?;
    let seq = match frames.get(3) {
        None => None,
        Some(f) => Some(
            std::str::from_utf8(f.as_ref())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(PublishError::Seq)?,
        ),
    };
    Ok(Publish {
        channel,
        event,
        data,
        seq,
    })
}

/// The frames for a publish, for publishers written in Rust.
pub fn encode(channel: &str, event: &str, data: &str, seq: Option<u64>) -> Vec<Vec<u8>> {
    let mut frames = vec![
        channel.as_bytes().to_vec(),
        event.as_bytes().to_vec(),
        data.as_bytes().to_vec(),
    ];
    if let Some(seq) = seq {
        frames.push(seq.to_string().into_bytes());
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn parses_three_and_four_frames() {
        let f = encode("c", "tick", r#"{"p":1}"#, None);
        let p = parse(&f, MAX).unwrap();
        assert_eq!(
            (p.channel, p.event, p.data, p.seq),
            ("c", "tick", r#"{"p":1}"#, None)
        );
        let f = encode("c", "tick", "2", Some(9));
        assert_eq!(parse(&f, MAX).unwrap().seq, Some(9));
    }

    #[test]
    fn every_reason_is_listed() {
        let errors = [
            PublishError::FrameCount(1),
            PublishError::NotUtf8("data"),
            PublishError::Channel(ChannelError::Empty),
            PublishError::Event,
            PublishError::Data(String::new()),
            PublishError::Seq,
            PublishError::TooLarge(2, 1),
        ];
        let reasons: Vec<Malformed> = errors.iter().map(PublishError::malformed).collect();
        assert_eq!(reasons, Malformed::ALL);
        for (i, m) in Malformed::ALL.iter().enumerate() {
            assert_eq!(m.index(), i, "{m:?} indexes its own counter");
            assert_eq!(Malformed::NAMES[i], m.as_str());
        }
    }

    #[test]
    fn refuses_malformed() {
        let one: Vec<&[u8]> = vec![b"c"];
        assert_eq!(parse(&one, MAX).unwrap_err().reason(), "frames");
        let bad_utf8: Vec<&[u8]> = vec![b"c", b"e", b"\xff"];
        assert_eq!(parse(&bad_utf8, MAX).unwrap_err().reason(), "utf8");
        let bad_channel: Vec<&[u8]> = vec![b"a b", b"e", b"1"];
        assert_eq!(parse(&bad_channel, MAX).unwrap_err().reason(), "channel");
        let no_event: Vec<&[u8]> = vec![b"c", b"", b"1"];
        assert_eq!(parse(&no_event, MAX).unwrap_err().reason(), "event");
        let bad_json: Vec<&[u8]> = vec![b"c", b"e", b"{oops"];
        assert_eq!(parse(&bad_json, MAX).unwrap_err().reason(), "data");
        let trailing: Vec<&[u8]> = vec![b"c", b"e", b"1 2"];
        assert_eq!(parse(&trailing, MAX).unwrap_err().reason(), "data");
        let bad_seq: Vec<&[u8]> = vec![b"c", b"e", b"1", b"x"];
        assert_eq!(parse(&bad_seq, MAX).unwrap_err().reason(), "seq");
        let big: Vec<&[u8]> = vec![b"c", b"e", b"[1,2,3]"];
        assert_eq!(parse(&big, 3).unwrap_err().reason(), "too_large");
    }
}
