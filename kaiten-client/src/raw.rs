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
        self.value.get_or_init(|| {
            // The text was valid JSON when it was kept; only a value nested deeper than serde_json's
            // recursion limit could fail here, and such a value reads as null.
            serde_json::from_str(self.text.get()).unwrap_or(Value::Null)
        })
    }

    /// The parsed value, owned.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(value) => value,
            None => serde_json::from_str(self.text.get()).unwrap_or(Value::Null),
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
    fn serialises_as_the_json_it_holds() {
        let raw = RawJson::from_text("{\"n\": 1.5}").unwrap();
        assert_eq!(serde_json::to_value(&raw).unwrap(), json!({"n": 1.5}));
        assert_eq!(format!("{raw:?}"), "{\"n\": 1.5}");
    }
}
