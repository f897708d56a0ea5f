//! [`RawJson`]: a record's JSON exactly as Kaiten sent it, kept as text.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value exactly as received: the text, cut from the response body without being parsed into
/// a tree, and a [`Value`] parsed from it the first time one is asked for.
///
/// A page of 100 cards is about 250 KB of JSON. Building a `Value` tree for every card only to write
/// it back to text for the database cost more CPU than the rest of a sync's parsing. A store writes
/// [`RawJson::as_str`], which is the received text itself; code that reads fields goes through
/// `Deref` (`raw.get("members")`, `raw["title"]`) and parses the text once, on first use.
///
/// Two `RawJson` are equal when their JSON values are equal, whatever their spacing or key order.
/// Built from a [`Value`] (webhook payloads, tests), the text is that value serialised.
///
/// ```
/// use kaiten_client::RawJson;
/// let raw = RawJson::from_text(r#"{"id": 7, "title": "T"}"#).unwrap();
/// assert_eq!(raw.as_str(), r#"{"id": 7, "title": "T"}"#);
/// assert_eq!(raw["title"], "T");
/// assert_eq!(raw, serde_json::json!({"title": "T", "id": 7}));
/// assert!(RawJson::from_text("{\"id\": ").is_err());
/// ```
#[derive(Clone)]
pub struct RawJson {
    text: Box<RawValue>,
    value: OnceLock<Value>,
}

impl RawJson {
    /// Keeps JSON text already known to be valid (one value cut from a parsed body).
    pub fn from_raw(text: Box<RawValue>) -> Self {
        Self { text, value: OnceLock::new() }
    }

    /// Checks that `text` is one JSON value and keeps it.
    pub fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        Ok(Self::from_raw(RawValue::from_string(text.to_owned())?))
    }

    /// The JSON text as received.
    pub fn as_str(&self) -> &str {
        self.text.get()
    }

    /// The parsed value (parsed on first use, then kept).
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| parse_kept(self.text.get()))
    }

    /// The parsed value, owned.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(value) => value,
            None => parse_kept(self.text.get()),
        }
    }
}

/// Parses text that was valid JSON when it was kept. Records cut from a page had lone surrogate
/// escapes replaced ([`repair_surrogates`]); what can still fail is a value nested deeper than
/// serde_json's recursion limit (128), or text given to [`RawJson::from_raw`] unrepaired: such a
/// value reads as null, and says so in the log.
fn parse_kept(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "a record's JSON text does not parse into a value; read as null");
        Value::Null
    })
}

/// Replaces every `\uD800`–`\uDFFF` escape that is not half of a high-low pair with `\uFFFD`.
///
/// serde_json's [`RawValue`] keeps such escapes (it checks escapes only for shape), but parsing the
/// text into a `String` or a `Value` refuses them, and so does Postgres's `jsonb`. A sender that cut
/// an emoji in half (JavaScript strings are UTF-16) produces them. The text is returned as it was
/// unless it holds one (the common case costs one search for `\u`).
pub(crate) fn repair_surrogates(text: Box<RawValue>) -> Box<RawValue> {
    let s = text.get();
    if !s.contains("\\u") {
        return text;
    }
    let bytes = s.as_bytes();
    let hex4 = |at: usize| -> Option<u16> {
        let digits = bytes.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let unicode_escape = |at: usize| -> Option<u16> {
        (bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'u')).then(|| hex4(at + 2)).flatten()
    };
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = unicode_escape(i) else {
            i += 2; // any other escape: `\\`, `\"`, `\n`, ...
            continue;
        };
        let high = (0xD800..0xDC00).contains(&unit);
        let paired = high && unicode_escape(i + 6).is_some_and(|low| (0xDC00..0xE000).contains(&low));
        if paired {
            i += 12;
        } else if (0xD800..0xE000).contains(&unit) {
            let out = out.get_or_insert_with(|| String::with_capacity(s.len()));
            out.push_str(&s[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    match out {
        None => text,
        Some(mut out) => {
            out.push_str(&s[copied..]);
            // Replacing an escape by another keeps the text JSON.
            RawValue::from_string(out).unwrap_or(text)
        }
    }
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        // Serialising a `Value` cannot fail: its map keys are strings.
        let text = serde_json::value::to_raw_value(&value)
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"));
        let lock = OnceLock::new();
        let _ = lock.set(value);
        Self { text, value: lock }
    }
}

impl Default for RawJson {
    /// JSON `null`.
    fn default() -> Self {
        Self::from(Value::Null)
    }
}

impl Deref for RawJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.value() == other.value()
    }
}

impl PartialEq<Value> for RawJson {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl PartialEq<RawJson> for Value {
    fn eq(&self, other: &RawJson) -> bool {
        self == other.value()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through the parsed value, so that every serializer (not only serde_json's) sees JSON data.
        self.value().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_text_and_parses_it_once_on_demand() {
        let raw = RawJson::from_text("{\"b\":1,  \"a\":[true,null]}").unwrap();
        assert_eq!(raw.as_str(), "{\"b\":1,  \"a\":[true,null]}");
        assert!(raw.value.get().is_none(), "nothing is parsed before it is read");
        assert_eq!(raw.get("a"), Some(&json!([true, null])));
        assert!(raw.value.get().is_some());
        assert_eq!(raw.clone().into_value(), json!({"a": [true, null], "b": 1}));
    }

    #[test]
    fn equality_is_of_values_not_of_texts() {
        let a = RawJson::from_text("{\"a\":1,\"b\":2}").unwrap();
        let b = RawJson::from_text("{ \"b\": 2, \"a\": 1 }").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, RawJson::from_text("{\"a\":1}").unwrap());
        assert_eq!(RawJson::from(json!({"x": "y"})).as_str(), "{\"x\":\"y\"}");
        assert_eq!(RawJson::default(), Value::Null);
    }

    #[test]
    fn lone_surrogate_escapes_become_the_replacement_character() {
        let repair = |text: &str| repair_surrogates(RawValue::from_string(text.to_owned()).unwrap()).get().to_owned();
        // Kept as they are: no escape, a pair, an escaped backslash before `u`, other escapes.
        for kept in [
            r#"{"t":"plain"}"#,
            r#"{"t":"\ud83d\ude00 ok \u0430"}"#,
            r#"{"t":"\\ud83d is text"}"#,
            r#"{"t":"a\"b\\\n"}"#,
        ] {
            assert_eq!(repair(kept), kept);
        }
        assert_eq!(repair(r#"{"t":"cut \ud83d"}"#), r#"{"t":"cut \ufffd"}"#);
        assert_eq!(repair(r#"{"t":"\ude00 then \ud83d\ud83d\ude00"}"#), r#"{"t":"\ufffd then \ufffd\ud83d\ude00"}"#);
        assert_eq!(repair(r#"{"\udc00":1}"#), r#"{"\ufffd":1}"#);
        let repaired = repair(r#"{"t":"x\ud800"}"#);
        assert_eq!(serde_json::from_str::<Value>(&repaired).unwrap()["t"], "x\u{fffd}");
    }

    #[test]
    fn serialises_as_the_json_it_holds() {
        let raw = RawJson::from_text("{\"n\": 1.5}").unwrap();
        assert_eq!(serde_json::to_value(&raw).unwrap(), json!({"n": 1.5}));
        assert_eq!(format!("{raw:?}"), "{\"n\": 1.5}");
    }
}
