//! The JSON objects and timestamps Kaiten serves, shared by the company and the card store.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Map, Value};

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

/// Formats milliseconds since the Unix epoch as Kaiten does: `2024-10-14T10:48:16.594Z`.
pub(crate) fn ts(ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

/// Parses an RFC 3339 timestamp into milliseconds since the Unix epoch.
pub(crate) fn parse_ts_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}
