//! The JSON protocol between a WebSocket client and an edge.
//!
//! Client → edge, one JSON object per text frame:
//! `{"method":"subscribe","channel":"ticker_INR","id":7}` and
//! `{"method":"unsubscribe","channel":"ticker_INR"}`, and `{"method":"info"}` (which
//! edge this is, whether the socket is compressed). `id` (number or string) is
//! optional and echoed in the reply so clients can match replies to requests; `token`
//! is reserved for private channels. Unknown fields are ignored so newer clients can
//! talk to older edges.
//!
//! Edge → client: control replies carry a `"type"` (`subscribed`, `unsubscribed`,
//! `info`, `error`, `reconnect`); errors carry a machine-readable `"error"` code and a human
//! `"message"`. Published messages carry no `"type"`:
//! `{"channel":..,"event":..,"data":..,"seq":N}`, with `"snapshot":true` when the
//! message is the channel's latest value replayed on subscribe.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::channel::validate_channel;

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Subscribe,
    Unsubscribe,
    /// Which edge serves this connection, and how (no channel).
    Info,
}

/// The client's correlation id, echoed back verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(u64),
    Text(String),
}

/// A valid client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The channel (empty for [`Method::Info`]).
    pub channel: String,
    pub id: Option<RequestId>,
    pub token: Option<String>,
}

/// Machine-readable error codes sent in `{"type":"error","error":CODE}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not JSON.
    InvalidJson,
    /// JSON, but not a request object with the fields the method needs.
    InvalidRequest,
    /// `method` names nothing the edge knows.
    UnknownMethod,
    /// The channel name breaks [`validate_channel`].
    InvalidChannel,
    /// The connection already holds the most subscriptions the edge allows.
    TooManySubscriptions,
    /// Unsubscribe from a channel the connection does not hold.
    NotSubscribed,
    /// A binary frame: the protocol is JSON text.
    UnsupportedFrame,
    /// The edge is draining and takes no new subscriptions; reconnect elsewhere.
    Draining,
    /// A private channel without a valid token.
    Unauthorized,
}

impl ErrorCode {
    /// Every code, in the order counters indexed by code use.
    pub const ALL: [ErrorCode; 9] = [
        Self::InvalidJson,
        Self::InvalidRequest,
        Self::UnknownMethod,
        Self::InvalidChannel,
        Self::TooManySubscriptions,
        Self::NotSubscribed,
        Self::UnsupportedFrame,
        Self::Draining,
        Self::Unauthorized,
    ];

    /// [`ErrorCode::ALL`] as metric tags.
    pub const NAMES: [&'static str; 9] = crate::tags_of!(Self::ALL);

    /// Its index in [`ErrorCode::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code as sent on the wire (also a metric tag).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownMethod => "unknown_method",
            Self::InvalidChannel => "invalid_channel",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::NotSubscribed => "not_subscribed",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::Draining => "draining",
            Self::Unauthorized => "unauthorized",
        }
    }
}

/// A request the edge refuses, with what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<RequestId>,
    pub channel: Option<String>,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
            channel: None,
        }
    }

    /// The JSON reply for this error.
    pub fn to_reply(&self) -> String {
        Reply::Error {
            error: self.code,
            message: &self.message,
            channel: self.channel.as_deref(),
            id: self.id.as_ref(),
        }
        .to_json()
    }
}

/// Parses one text frame into a request, or the error to send back.
pub fn parse_request(text: &str) -> Result<Request, RequestError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| RequestError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(RequestError::new(
            ErrorCode::InvalidRequest,
            "a request must be a JSON object",
        ));
    };
    let id = parse_id(&object)?;
    let with_id = |mut e: RequestError| {
        e.id = id.clone();
        e
    };
    let method = match object.get("method") {
        Some(Value::String(m)) if m == "subscribe" => Method::Subscribe,
        Some(Value::String(m)) if m == "unsubscribe" => Method::Unsubscribe,
        Some(Value::String(m)) if m == "info" => {
            return Ok(Request {
                method: Method::Info,
                channel: String::new(),
                id,
                token: None,
            })
        }
        Some(Value::String(m)) => {
            return Err(with_id(RequestError::new(
                ErrorCode::UnknownMethod,
                format!(
                    "unknown method {m:?}; expected \"subscribe\", \"unsubscribe\" or \"info\""
                ),
            )))
        }
        Some(_) => {
            return Err(with_id(RequestError::new(
                ErrorCode::InvalidRequest,
                "\"method\" must be a string",
            )))
        }
        None => {
            return Err(with_id(RequestError::new(
                ErrorCode::InvalidRequest,
                "missing \"method\"",
            )))
        }
    };
    let channel = match object.get("channel") {
        Some(Value::String(c)) => c.clone(),
        Some(_) => {
            return Err(with_id(RequestError::new(
                ErrorCode::InvalidRequest,
                "\"channel\" must be a string",
            )))
        }
        None => {
            return Err(with_id(RequestError::new(
                ErrorCode::InvalidRequest,
                "missing \"channel\"",
            )))
        }
    };
    if let Err(e) = validate_channel(&channel) {
        let mut error = with_id(RequestError::new(ErrorCode::InvalidChannel, e.to_string()));
        // Echo only names that are safe to echo: a refused name may be huge.
        if channel.len() <= crate::MAX_CHANNEL_LEN {
            error.channel = Some(channel);
        }
        return Err(error);
    }
    let token = match object.get("token") {
        Some(Value::String(t)) => Some(t.clone()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(with_id(RequestError::new(
                ErrorCode::InvalidRequest,
                "\"token\" must be a string",
            )))
        }
    };
    Ok(Request {
        method,
        channel,
        id,
        token,
    })
}

/// Longest string id echoed back; longer ids are refused so replies stay small.
pub const MAX_ID_LEN: usize = 64;

fn parse_id(object: &Map<String, Value>) -> Result<Option<RequestId>, RequestError> {
    match object.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(RequestId::Number)),
        Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Ok(Some(RequestId::Text(s.clone()))),
        Some(_) => Err(RequestError::new(
            ErrorCode::InvalidRequest,
            format!(
                "\"id\" must be a non-negative integer or a string of at most {MAX_ID_LEN} bytes"
            ),
        )),
    }
}

/// Control replies from the edge. Serialised with `"type"` first.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply<'a> {
    Subscribed {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Unsubscribed {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    /// The answer to `info`: this edge's id, whether this socket negotiated
    /// permessage-deflate, how many channels it holds, and the edge-wide compressed /
    /// uncompressed byte ratio of the messages it deflated (null before any).
    Info {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        edge: &'a str,
        deflate: bool,
        subscriptions: usize,
        deflate_ratio: Option<f64>,
    },
    Error {
        error: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    /// Sent before the edge closes a connection it wants moved elsewhere (drain):
    /// wait `retry_after_ms`, then reconnect (through the load balancer).
    Reconnect {
        reason: &'a str,
        retry_after_ms: u64,
    },
}

impl Reply<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to a fixed error rather
        // than panic if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","error":"internal","message":"reply encoding failed"}"#.to_owned()
        })
    }
}

/// Appends the envelope a client receives for a published message:
/// `{"channel":C,"event":E,"data":D,"seq":N}` (plus `"snapshot":true` for a replayed
/// latest value). `channel` must be valid (it is written unescaped, which is safe for
/// the alphabet [`validate_channel`] allows); `data` must be valid JSON text, written
/// as is.
pub fn write_envelope(
    out: &mut Vec<u8>,
    channel: &str,
    event: &str,
    data: &str,
    seq: u64,
    snapshot: bool,
) {
    out.reserve(channel.len() + event.len() + data.len() + 64);
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, event);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    if snapshot {
        out.extend_from_slice(b",\"snapshot\":true");
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_indexes_its_own_counter() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code:?}");
            assert_eq!(ErrorCode::NAMES[i], code.as_str());
        }
    }

    #[test]
    fn parses_subscribe_and_unsubscribe() {
        let r = parse_request(r#"{"method":"subscribe","channel":"ticker_INR","id":7}"#).unwrap();
        assert_eq!(r.method, Method::Subscribe);
        assert_eq!(r.channel, "ticker_INR");
        assert_eq!(r.id, Some(RequestId::Number(7)));
        let r =
            parse_request(r#"{"channel":"a","method":"unsubscribe","id":"x","extra":1}"#).unwrap();
        assert_eq!(r.method, Method::Unsubscribe);
        assert_eq!(r.id, Some(RequestId::Text("x".into())));
        let r = parse_request(r#"{"method":"subscribe","channel":"p","token":"t"}"#).unwrap();
        assert_eq!(r.token.as_deref(), Some("t"));
        let r = parse_request(r#"{"method":"info","id":"i"}"#).unwrap();
        assert_eq!((r.method, r.channel.as_str()), (Method::Info, ""));
        assert_eq!(r.id, Some(RequestId::Text("i".into())));
    }

    #[test]
    fn the_info_reply_names_the_edge_and_keeps_a_null_ratio() {
        let id = RequestId::Number(3);
        let reply = Reply::Info {
            id: Some(&id),
            edge: "edge-1",
            deflate: true,
            subscriptions: 2,
            deflate_ratio: None,
        }
        .to_json();
        assert_eq!(
            reply,
            r#"{"type":"info","id":3,"edge":"edge-1","deflate":true,"subscriptions":2,"deflate_ratio":null}"#
        );
    }

    fn code(text: &str) -> ErrorCode {
        parse_request(text).unwrap_err().code
    }

    #[test]
    fn refuses_bad_requests_with_precise_codes() {
        assert_eq!(code("{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(""), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidRequest);
        assert_eq!(code(r#"{"channel":"a"}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            code(r#"{"method":5,"channel":"a"}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(r#"{"method":"publish","channel":"a"}"#),
            ErrorCode::UnknownMethod
        );
        assert_eq!(code(r#"{"method":"subscribe"}"#), ErrorCode::InvalidRequest);
        assert_eq!(
            code(r#"{"method":"subscribe","channel":1}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(r#"{"method":"subscribe","channel":"a b"}"#),
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            code(r#"{"method":"subscribe","channel":""}"#),
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            code(r#"{"method":"subscribe","channel":"a","id":-1}"#),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(r#"{"method":"subscribe","channel":"a","token":3}"#),
            ErrorCode::InvalidRequest
        );
        let deep = "[".repeat(10_000);
        assert_eq!(code(&deep), ErrorCode::InvalidJson);
    }

    #[test]
    fn error_reply_echoes_id_and_channel() {
        let e = parse_request(r#"{"method":"nope","channel":"a","id":3}"#).unwrap_err();
        let v: Value = serde_json::from_str(&e.to_reply()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"], "unknown_method");
        assert_eq!(v["id"], 3);
        let e = parse_request(r#"{"method":"subscribe","channel":"a/b"}"#).unwrap_err();
        let v: Value = serde_json::from_str(&e.to_reply()).unwrap();
        assert_eq!(v["channel"], "a/b");
    }

    #[test]
    fn replies_have_type_first() {
        let id = RequestId::Number(1);
        let s = Reply::Subscribed {
            channel: "c",
            id: Some(&id),
        }
        .to_json();
        assert_eq!(s, r#"{"type":"subscribed","channel":"c","id":1}"#);
        let s = Reply::Reconnect {
            reason: "draining",
            retry_after_ms: 250,
        }
        .to_json();
        assert_eq!(
            s,
            r#"{"type":"reconnect","reason":"draining","retry_after_ms":250}"#
        );
    }

    #[test]
    fn envelope_is_valid_json_and_escapes_event() {
        let mut out = Vec::new();
        write_envelope(&mut out, "c", "ev\"il\n", r#"{"p":[1,2]}"#, 42, false);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["channel"], "c");
        assert_eq!(v["event"], "ev\"il\n");
        assert_eq!(v["data"]["p"][1], 2);
        assert_eq!(v["seq"], 42);
        assert!(v.get("snapshot").is_none());
        out.clear();
        write_envelope(&mut out, "c", "e", "1", 1, true);
        assert_eq!(
            out,
            br#"{"channel":"c","event":"e","data":1,"seq":1,"snapshot":true}"#
        );
    }
}
