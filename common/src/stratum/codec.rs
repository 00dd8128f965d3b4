//! Stratum V1 JSON-RPC lines: framing, ids, errors, and the message envelope.
//!
//! Tolerant in what it reads, canonical in what it writes:
//! - a line is capped at [`MAX_LINE`] bytes, checked before any parsing or buffering
//!   ([`LineDecoder`] refuses an over-long line as soon as its buffered part exceeds the cap);
//! - ids may be numbers, strings or null; a missing id reads as null;
//! - errors may be `[code, "message", data]` arrays, `{"code", "message"}` objects, or a bare
//!   string; they are always written as `[code, "message", null]`;
//! - a line with a `method` is a [`Message::Call`] (a request, or a notification when its id is
//!   null); one with `result` or `error` is a [`Message::Response`]. Unknown methods decode as
//!   [`Method::Unknown`](super::Method::Unknown), not as an error.
//!
//! Written lines are compact JSON with keys in a fixed order and end with `\n`. Decoding never
//! panics: serde_json bounds nesting depth, and every field is checked before it is used. A
//! written line handed to a shell is a [`Line`], whose `Debug` hides a `mining.authorize`
//! password.

use std::collections::VecDeque;

use serde_json::{Number, Value, json};

use super::StratumError;
use super::method::Method;

/// A line to write to the peer (ending with `\n`). Its `Debug` shows the message, with the
/// password of a `mining.authorize` hidden; the text itself is the line as sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Line(pub String);

impl std::ops::Deref for Line {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<Line> for String {
    fn from(line: Line) -> String {
        line.0
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Message::from_line(self.0.as_bytes()) {
            Ok(message @ Message::Call { method: Method::Authorize { .. }, .. }) => message.fmt(f),
            _ => self.0.fmt(f),
        }
    }
}

/// The longest line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// A JSON-RPC id: Stratum V1 peers use numbers, strings, and null for notifications.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    Null,
    Number(Number),
    Str(String),
}

impl Id {
    /// The id as an unsigned integer, when it is one (the ids this side allocates).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Id::Null => Value::Null,
            Id::Number(n) => Value::Number(n.clone()),
            Id::Str(s) => Value::String(s.clone()),
        }
    }

    fn from_value(v: Option<&Value>) -> Result<Id, StratumError> {
        match v {
            None | Some(Value::Null) => Ok(Id::Null),
            Some(Value::Number(n)) => Ok(Id::Number(n.clone())),
            Some(Value::String(s)) => Ok(Id::Str(s.clone())),
            Some(_) => Err(StratumError::Shape("id must be a number, a string or null")),
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

/// A JSON-RPC error as Stratum V1 pools send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into() }
    }

    /// Reads `[code, "message", ...]`, `{"code": .., "message": ..}` or a bare string (code 20,
    /// "other"). `null` is no error.
    fn from_value(v: &Value) -> Option<RpcError> {
        let code_of = |v: Option<&Value>| match v {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(20),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(20),
            _ => 20,
        };
        let text_of = |v: Option<&Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        match v {
            Value::Null => None,
            Value::Array(a) => Some(RpcError { code: code_of(a.first()), message: text_of(a.get(1)) }),
            Value::Object(o) => Some(RpcError {
                code: code_of(o.get("code")),
                message: text_of(o.get("message").or_else(|| o.get("msg"))),
            }),
            Value::String(s) => Some(RpcError { code: 20, message: s.clone() }),
            other => Some(RpcError { code: 20, message: other.to_string() }),
        }
    }

    fn to_value(&self) -> Value {
        json!([self.code, self.message, null])
    }
}

/// An answer to a request: a result, or an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Id,
    pub result: Value,
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: Id, result: Value) -> Self {
        Response { id, result, error: None }
    }

    pub fn err(id: Id, error: RpcError) -> Self {
        Response { id, result: Value::Null, error: Some(error) }
    }

    /// True for a `result: true` without an error (authorize, submit, extranonce.subscribe).
    pub fn is_true(&self) -> bool {
        self.error.is_none() && self.result == Value::Bool(true)
    }
}

/// One line of a Stratum V1 session.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (id set) or a notification (id null).
    Call {
        id: Id,
        method: Method,
    },
    Response(Response),
}

impl Message {
    /// Decodes one line (with or without its `\n`), checking the cap first.
    pub fn from_line(line: &[u8]) -> Result<Message, StratumError> {
        if line.len() > MAX_LINE + 2 {
            return Err(StratumError::LineTooLong { len: line.len(), max: MAX_LINE });
        }
        let value: Value = serde_json::from_slice(line.trim_ascii()).map_err(|e| StratumError::Json(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(StratumError::Shape("a line must be a JSON object"));
        };
        let id = Id::from_value(obj.get("id"))?;
        match obj.get("method") {
            Some(Value::String(name)) => {
                let empty = Value::Array(Vec::new());
                let params = match obj.get("params") {
                    None | Some(Value::Null) => &empty,
                    Some(p) => p,
                };
                Ok(Message::Call { id, method: Method::from_parts(name, params)? })
            }
            Some(_) => Err(StratumError::Shape("method must be a string")),
            None if obj.contains_key("result") || obj.contains_key("error") => {
                let result = obj.get("result").cloned().unwrap_or(Value::Null);
                let error = obj.get("error").and_then(RpcError::from_value);
                Ok(Message::Response(Response { id, result, error }))
            }
            None => Err(StratumError::Shape("neither a call (method) nor a response (result, error)")),
        }
    }

    /// The canonical line, ending with `\n`: compact JSON, keys in the conventional order
    /// (`id`, `method`, `params` or `id`, `result`, `error`).
    pub fn to_line(&self) -> String {
        match self {
            Message::Call { id, method } => format!(
                "{{\"id\":{},\"method\":{},\"params\":{}}}\n",
                id.to_value(),
                Value::from(method.name()),
                method.params()
            ),
            Message::Response(r) => format!(
                "{{\"id\":{},\"result\":{},\"error\":{}}}\n",
                r.id.to_value(),
                r.result,
                r.error.as_ref().map_or(Value::Null, RpcError::to_value)
            ),
        }
    }
}

/// Cuts a byte stream into lines. Bytes are buffered only up to [`MAX_LINE`] (or the cap given
/// to [`LineDecoder::with_cap`]); a line that would exceed it is refused before it is buffered,
/// and the decoder then stays failed (the connection must be closed). Empty lines are skipped
/// and a trailing `\r` is dropped.
#[derive(Debug)]
pub struct LineDecoder {
    cap: usize,
    partial: Vec<u8>,
    lines: VecDeque<Vec<u8>>,
    failed: Option<usize>,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::with_cap(MAX_LINE)
    }
}

impl LineDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_cap(cap: usize) -> Self {
        LineDecoder { cap, partial: Vec::new(), lines: VecDeque::new(), failed: None }
    }

    /// Takes bytes as they arrived. Fails when a line grows past the cap.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), StratumError> {
        if let Some(len) = self.failed {
            return Err(StratumError::LineTooLong { len, max: self.cap });
        }
        while !bytes.is_empty() {
            let (segment, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            let len = self.partial.len() + segment.len();
            // A `\r` (before the newline, or before one still to come) does not count against
            // the cap, so that where the stream was cut does not matter.
            let ends_in_cr = segment.last().or(self.partial.last()) == Some(&b'\r');
            let counted = if ends_in_cr { len - 1 } else { len };
            if counted > self.cap {
                self.failed = Some(len);
                self.partial = Vec::new();
                return Err(StratumError::LineTooLong { len, max: self.cap });
            }
            self.partial.extend_from_slice(segment);
            if complete {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !line.trim_ascii().is_empty() {
                    self.lines.push_back(line);
                }
                bytes = &bytes[segment.len() + 1..];
            } else {
                bytes = &[];
            }
        }
        Ok(())
    }

    /// The next complete line, without its newline.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        self.lines.pop_front()
    }

    /// Bytes buffered of a line not yet complete.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_of_every_kind() {
        for (line, id) in [
            (r#"{"id": 7, "result": true, "error": null}"#, Id::from(7)),
            (r#"{"id": "abc", "result": true, "error": null}"#, Id::Str("abc".into())),
            (r#"{"id": null, "result": true, "error": null}"#, Id::Null),
            (r#"{"result": true}"#, Id::Null),
        ] {
            let Message::Response(r) = Message::from_line(line.as_bytes()).unwrap() else { panic!("{line}") };
            assert_eq!(r.id, id);
            assert!(r.is_true());
        }
        assert!(Message::from_line(br#"{"id": [1], "result": true}"#).is_err());
    }

    #[test]
    fn errors_as_arrays_objects_and_strings() {
        for line in [
            r#"{"id": 4, "result": null, "error": [23, "Low difficulty share", null]}"#,
            r#"{"id": 4, "result": false, "error": {"code": 23, "message": "Low difficulty share"}}"#,
            r#"{"id": 4, "result": null, "error": ["23", "Low difficulty share"]}"#,
        ] {
            let Message::Response(r) = Message::from_line(line.as_bytes()).unwrap() else { panic!() };
            assert_eq!(r.error, Some(RpcError::new(23, "Low difficulty share")), "{line}");
            assert!(!r.is_true());
        }
        let Message::Response(r) = Message::from_line(br#"{"id":1,"result":null,"error":"nope"}"#).unwrap() else {
            panic!()
        };
        assert_eq!(r.error, Some(RpcError::new(20, "nope")));
        let canonical = Message::Response(Response::err(Id::from(4), RpcError::new(22, "Duplicate share")));
        assert_eq!(canonical.to_line(), "{\"id\":4,\"result\":null,\"error\":[22,\"Duplicate share\",null]}\n");
    }

    #[test]
    fn shapes_that_are_refused() {
        for line in ["", "[]", "42", "{}", r#"{"method": 5}"#, "{\"id\":1,", "\u{1}"] {
            assert!(Message::from_line(line.as_bytes()).is_err(), "{line:?}");
        }
        let deep = "[".repeat(10_000);
        assert!(Message::from_line(deep.as_bytes()).is_err());
        let long = vec![b' '; MAX_LINE + 3];
        assert!(matches!(Message::from_line(&long), Err(StratumError::LineTooLong { .. })));
    }

    #[test]
    fn decoder_splits_lines_and_refuses_long_ones_before_buffering() {
        let mut d = LineDecoder::with_cap(10);
        d.push(b"abc\r\n\nde").unwrap();
        d.push(b"f\nghi").unwrap();
        assert_eq!(d.next_line().unwrap(), b"abc");
        assert_eq!(d.next_line().unwrap(), b"def");
        assert_eq!(d.next_line(), None);
        assert_eq!(d.pending(), 3);
        d.push(b"0123456").unwrap();
        assert_eq!(d.pending(), 10);
        let err = d.push(b"7").unwrap_err();
        assert_eq!(err, StratumError::LineTooLong { len: 11, max: 10 });
        assert_eq!(d.pending(), 0);
        assert!(d.push(b"\nok\n").is_err(), "a failed decoder stays failed");

        let mut d = LineDecoder::with_cap(10);
        assert!(d.push(&[b'x'; 1 << 20]).is_err(), "a huge chunk is refused without buffering it");
        assert_eq!(d.pending(), 0);
        let mut d = LineDecoder::with_cap(3);
        d.push(b"abc\r\n").unwrap();
        assert_eq!(d.next_line().unwrap(), b"abc");
    }

    proptest! {
        #[test]
        fn decoder_chunking_does_not_matter(stream in proptest::collection::vec(any::<u8>(), 0..400), cut in 1usize..50) {
            let mut whole = LineDecoder::with_cap(40);
            let whole_result = whole.push(&stream);
            let mut chunked = LineDecoder::with_cap(40);
            let mut chunked_result = Ok(());
            for chunk in stream.chunks(cut) {
                chunked_result = chunked.push(chunk);
                if chunked_result.is_err() { break; }
            }
            prop_assert_eq!(whole_result.is_ok(), chunked_result.is_ok());
            let drain = |d: &mut LineDecoder| std::iter::from_fn(|| d.next_line()).collect::<Vec<_>>();
            if whole_result.is_ok() {
                prop_assert_eq!(drain(&mut whole), drain(&mut chunked));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::from_line(&bytes);
            let mut d = LineDecoder::with_cap(64);
            let _ = d.push(&bytes);
            while let Some(line) = d.next_line() {
                let _ = Message::from_line(&line);
            }
        }
    }
}
