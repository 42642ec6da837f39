//! Negotiation of the permessage-deflate extension (RFC 7692) from the client's
//! `Sec-WebSocket-Extensions` headers (grammar in RFC 6455 §9.1).
//!
//! The server's constraints shape what it can accept:
//!
//! - It compresses each broadcast message once and writes the same bytes to every
//!   compressed socket, so no message may depend on an earlier one: the response
//!   always carries `server_no_context_takeover`, offered or not (RFC 7692 §7.1.1.1).
//! - It always includes `client_no_context_takeover` in the response, which a server
//!   may do even when the client did not offer it (§7.1.1.2), so that every client
//!   message can be inflated from a fresh state and no per-connection inflate window
//!   has to be kept between messages.
//! - It compresses with a 15-bit (32 KiB) window. An offer with
//!   `server_max_window_bits` below 15 cannot be honoured by the shared bytes and is
//!   declined; `server_max_window_bits=15` is accepted and echoed back.
//! - `client_max_window_bits` (with or without a value) needs no action: inflating with
//!   a 15-bit window decodes data produced with any smaller window, so the parameter
//!   is left out of the response, which §7.1.2.2 permits.
//!
//! Offers are tried in the order received, across header values, and the first
//! acceptable permessage-deflate offer wins. Offers of other extensions are skipped. A
//! header value that does not follow the grammar is ignored as a whole, since after a
//! syntax error there is no reliable way to tell where the next offer starts.

use std::borrow::Cow;

/// The name of the extension, compared case-insensitively.
const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The parameters the server always answers with (see the module doc for why).
const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The permessage-deflate parameters we agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// The value to send back in the `Sec-WebSocket-Extensions` response header.
    /// Having it means both directions may carry compressed messages, with no context
    /// takeover either way.
    pub response_header: String,
}

/// Examine every `Sec-WebSocket-Extensions` header value the client sent (in order;
/// each may hold several comma-separated offers) and accept the first acceptable
/// permessage-deflate offer, or `None` if there is none (the connection then runs
/// uncompressed and no extension header is sent).
pub fn negotiate_permessage_deflate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
) -> Option<Agreed> {
    header_values
        .into_iter()
        .filter_map(parse_offers)
        .flatten()
        .find_map(|offer| accept(&offer))
}

/// One extension offer: its name and parameters in the order given.
struct Offer<'a> {
    name: &'a str,
    params: Vec<Param<'a>>,
}

/// One `name` or `name=value` parameter; quoted values are unescaped.
struct Param<'a> {
    name: &'a str,
    value: Option<Cow<'a, str>>,
}

/// The parameters RFC 7692 §7.1 defines, to detect duplicates by index.
const KNOWN_PARAMS: [&str; 4] = [
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
];

/// The response for a permessage-deflate offer we can honour, or `None` to decline it
/// (or to skip an offer of another extension).
fn accept(offer: &Offer<'_>) -> Option<Agreed> {
    if !offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut seen = [false; KNOWN_PARAMS.len()];
    let mut echo_server_window = false;
    for param in &offer.params {
        // RFC 7692 gives the names in lower case; accepting other cases costs nothing.
        let index = KNOWN_PARAMS
            .iter()
            .position(|known| param.name.eq_ignore_ascii_case(known))?;
        if std::mem::replace(&mut seen[index], true) {
            // §7.1: an offer with a duplicated parameter must be declined.
            return None;
        }
        let value = param.value.as_deref();
        match index {
            // The *_no_context_takeover parameters take no value (§7.1.1).
            0 | 1 => {
                if value.is_some() {
                    return None;
                }
            }
            // server_max_window_bits requires a value (§7.1.2.1), and only 15 is
            // compatible with the shared 15-bit compressed bytes.
            2 => {
                if window_bits(value?)? != 15 {
                    return None;
                }
                echo_server_window = true;
            }
            // client_max_window_bits may come without a value (§7.1.2.2).
            _ => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
            }
        }
    }
    let response_header = if echo_server_window {
        format!("{RESPONSE}; server_max_window_bits=15")
    } else {
        RESPONSE.to_owned()
    };
    Some(Agreed { response_header })
}

/// A window size value: a decimal integer 8 to 15 without leading zeros (§7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty()
        || value.len() > 2
        || value.starts_with('0')
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Parse one header value into its offers, or `None` if it breaks the grammar:
///
/// ```text
/// extension-list = 1#extension          ; empty list elements are tolerated
/// extension      = token *( ";" param )
/// param          = token [ "=" ( token / quoted-string ) ]
/// ```
///
/// with optional whitespace around every token and separator.
fn parse_offers(value: &str) -> Option<Vec<Offer<'_>>> {
    let mut cursor = Cursor { s: value, pos: 0 };
    let mut offers = Vec::new();
    loop {
        cursor.skip_ows();
        if cursor.at_end() {
            return Some(offers);
        }
        if cursor.eat(b',') {
            continue;
        }
        let name = cursor.token()?;
        let mut params = Vec::new();
        loop {
            cursor.skip_ows();
            if !cursor.eat(b';') {
                break;
            }
            cursor.skip_ows();
            let name = cursor.token()?;
            cursor.skip_ows();
            let value = if cursor.eat(b'=') {
                cursor.skip_ows();
                Some(if cursor.peek() == Some(b'"') {
                    Cow::Owned(cursor.quoted_token()?)
                } else {
                    Cow::Borrowed(cursor.token()?)
                })
            } else {
                None
            };
            params.push(Param { name, value });
        }
        offers.push(Offer { name, params });
        cursor.skip_ows();
        if !cursor.at_end() && !cursor.eat(b',') {
            return None;
        }
    }
}

/// A position in a header value. After a failed parse the position is meaningless:
/// a syntax error discards the whole header value.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// One or more tchar (RFC 7230 §3.2.6).
    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // Every tchar is ASCII, so both ends are char boundaries.
        self.s.get(start..self.pos).filter(|t| !t.is_empty())
    }

    /// A quoted-string, unescaped. RFC 6455 §9.1 requires the unescaped value to be a
    /// token, which also keeps commas and semicolons out of values.
    fn quoted_token(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    value.push(char::from(self.peek()?));
                    self.pos += 1;
                }
                b => {
                    value.push(char::from(b));
                    self.pos += 1;
                }
            }
        }
        // Checking the token rule after unescaping also rejects non-ASCII bytes, whose
        // char::from above would otherwise have been meaningless.
        (!value.is_empty() && value.bytes().all(is_tchar)).then_some(value)
    }
}

/// RFC 7230 tchar: the characters allowed in a token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    const WITH_BITS: &str = "permessage-deflate; server_no_context_takeover; \
                             client_no_context_takeover; server_max_window_bits=15";

    fn negotiate(values: &[&str]) -> Option<String> {
        negotiate_permessage_deflate(values.iter().copied()).map(|a| a.response_header)
    }

    fn accepted(value: &str) -> bool {
        negotiate(&[value]).is_some()
    }

    #[test]
    fn browser_and_library_offers() {
        // Chrome, and Python websockets.
        assert_eq!(
            negotiate(&["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some(PLAIN)
        );
        // Firefox.
        assert_eq!(negotiate(&["permessage-deflate"]).as_deref(), Some(PLAIN));
        // Safari and others that ask for everything.
        assert_eq!(
            negotiate(&[
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ])
            .as_deref(),
            Some(PLAIN)
        );
    }

    #[test]
    fn first_unacceptable_offer_falls_through_to_the_next() {
        assert_eq!(
            negotiate(&["permessage-deflate; server_max_window_bits=10, permessage-deflate"])
                .as_deref(),
            Some(PLAIN)
        );
        assert_eq!(
            negotiate(&["permessage-deflate; server_max_window_bits=10, \
                 permessage-deflate; server_max_window_bits=15; client_max_window_bits"])
            .as_deref(),
            Some(WITH_BITS)
        );
    }

    #[test]
    fn server_max_window_bits() {
        assert_eq!(
            negotiate(&["permessage-deflate; server_max_window_bits=15"]).as_deref(),
            Some(WITH_BITS)
        );
        assert_eq!(
            negotiate(&["permessage-deflate; server_max_window_bits=\"15\""]).as_deref(),
            Some(WITH_BITS)
        );
        for bad in ["", "=8", "=14", "=16", "=015", "=+15", "=1_5", "=\"\""] {
            assert!(
                !accepted(&format!("permessage-deflate; server_max_window_bits{bad}")),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_max_window_bits() {
        for good in ["", "=8", "=9", "=10", "=15", "=\"10\"", " = 12 "] {
            assert_eq!(
                negotiate(&[&format!("permessage-deflate; client_max_window_bits{good}")])
                    .as_deref(),
                Some(PLAIN),
                "{good}"
            );
        }
        for bad in ["=7", "=16", "=08", "=x", "=\"16\"", "=-9"] {
            assert!(
                !accepted(&format!("permessage-deflate; client_max_window_bits{bad}")),
                "{bad}"
            );
        }
    }

    #[test]
    fn declined_offers() {
        for offer in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; mux=1",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"true\"",
            "permessage-deflate; CLIENT_MAX_WINDOW_BITS; client_max_window_bits",
        ] {
            assert!(!accepted(offer), "{offer}");
        }
    }

    #[test]
    fn other_extensions_are_skipped() {
        assert_eq!(
            negotiate(&["x-webkit-deflate-frame, permessage-deflate"]).as_deref(),
            Some(PLAIN)
        );
        assert_eq!(negotiate(&["x-webkit-deflate-frame"]), None);
        assert_eq!(negotiate(&["deflate-frame; max_window_bits=10"]), None);
        assert_eq!(negotiate(&["permessage-deflatex"]), None);
    }

    #[test]
    fn multiple_header_values() {
        assert_eq!(
            negotiate(&["x-foo", "permessage-deflate"]).as_deref(),
            Some(PLAIN)
        );
        assert_eq!(
            negotiate(&[
                "permessage-deflate; bogus",
                "permessage-deflate; server_max_window_bits=15"
            ])
            .as_deref(),
            Some(WITH_BITS)
        );
        // A malformed value does not spoil the ones after it.
        assert_eq!(
            negotiate(&["permessage-deflate;;", "permessage-deflate"]).as_deref(),
            Some(PLAIN)
        );
        assert_eq!(negotiate(&[]), None);
        assert_eq!(negotiate(&["", "  "]), None);
    }

    #[test]
    fn whitespace_case_and_empty_elements() {
        for offer in [
            "  permessage-deflate  ",
            "Permessage-Deflate",
            "PERMESSAGE-DEFLATE ;\tclient_max_window_bits",
            "permessage-deflate;client_max_window_bits=10;server_no_context_takeover",
            ", ,permessage-deflate,",
            "permessage-deflate ; Client_Max_Window_Bits = \"9\"",
        ] {
            assert_eq!(negotiate(&[offer]).as_deref(), Some(PLAIN), "{offer}");
        }
    }

    #[test]
    fn garbage_is_ignored() {
        for value in [
            "permessage-deflate;",
            "permessage-deflate; =15",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate client_max_window_bits",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; client_max_window_bits=\"1,0\"",
            "permessage-deflate; client_max_window_bits=10 11",
            "x-foo; bar=\"a b\", permessage-deflate",
            "\"permessage-deflate\"",
            "permessage-deflate; client_max_window_bits=\"é\"",
            "pérmessage-deflate",
            ";;;,,,===",
            "\u{0}permessage-deflate",
        ] {
            assert_eq!(negotiate(&[value]), None, "{value}");
        }
    }

    #[test]
    fn quoted_strings_unescape() {
        assert!(accepted(
            r#"permessage-deflate; client_max_window_bits="1\0""#
        ));
        assert!(accepted(r#"x-foo; bar="\b\a\z", permessage-deflate"#));
        assert!(!accepted(r#"x-foo; bar="a\"b", permessage-deflate"#));
    }

    #[test]
    fn window_bits_values() {
        assert_eq!(window_bits("8"), Some(8));
        assert_eq!(window_bits("15"), Some(15));
        for bad in [
            "",
            "7",
            "16",
            "08",
            "015",
            "1 5",
            "ff",
            "255",
            "99999999999999999999",
        ] {
            assert_eq!(window_bits(bad), None, "{bad}");
        }
    }
}
