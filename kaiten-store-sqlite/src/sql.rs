//! SQL generated from `kaiten_sync::schema::TABLES`, and conversions between [`SqlValue`] and
//! SQLite values.

use std::fmt::Write as _;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Timelike, Utc};
use kaiten_sync::schema::{ColumnType, TableDef, TABLES};
use kaiten_sync::{EntityKind, SqlValue, StoreError};
use rusqlite::types::{Value, ValueRef};

use crate::error::corrupt;

/// The statements of one entity table.
#[derive(Debug)]
pub(crate) struct TableSql {
    /// `INSERT ... ON CONFLICT(id) DO UPDATE ...`: `?1` id, then the typed columns, then raw,
    /// synced_at, deleted_at, seen_sweep.
    pub upsert: String,
    /// The typed columns of stored rows (`?1` = JSON array of ids): id, then the columns.
    pub old_values: String,
    /// What `apply_page` needs of the stored rows of a page (`?1` = JSON array of ids):
    /// id, updated, version (or NULL), raw, deleted flag, seen_sweep.
    pub existing: String,
    /// Marks unchanged rows seen by a sweep in `sweep_marks`: `?1` JSON array of ids, `?2` sweep.
    pub mark_seen: String,
    /// Replaces only `raw` (`?1` id, `?2` raw): the same JSON value, spelled differently.
    pub respell: String,
    /// Drops the kind's marks of sweeps older than `?1`.
    pub prune_marks: String,
    /// One row for `get`: the typed columns, raw, synced_at, deleted_at (`?1` id).
    pub get: String,
    /// Live rows a sweep did not see (`?1` sweep).
    pub unseen_all: String,
    /// The same restricted to parents (`?2` = JSON array of parent ids); `None` without a scope column.
    pub unseen_scoped: Option<String>,
    /// `?1` deleted_at, `?2` JSON array of ids.
    pub mark_deleted: String,
    /// `?1` JSON array of ids.
    pub existing_ids: String,
    /// Every id, ascending.
    pub ids_all: String,
    /// Live ids, ascending.
    pub ids_live: String,
    /// All rows, deleted rows.
    pub counts: String,
}

/// The statements of a kind's table (built once).
pub(crate) fn table_sql(kind: EntityKind) -> &'static TableSql {
    static SQL: OnceLock<Vec<TableSql>> = OnceLock::new();
    &SQL.get_or_init(|| TABLES.iter().map(build).collect())[kind as usize]
}

/// A quoted identifier (column names such as `type`, `condition` and `value` read as keywords in
/// some positions).
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

const IDS: &str = "(SELECT value FROM json_each(?1))";

fn build(t: &TableDef) -> TableSql {
    let table = q(t.name);
    let names: Vec<String> = t.columns.iter().map(|c| q(c.name)).collect();
    let n = t.columns.len();

    let mut upsert =
        format!("INSERT INTO {table} (id, {}, raw, synced_at, deleted_at, seen_sweep) VALUES (", names.join(", "));
    for i in 1..=n + 5 {
        if i > 1 {
            upsert.push_str(", ");
        }
        let _ = write!(upsert, "?{i}");
    }
    upsert.push_str(") ON CONFLICT(id) DO UPDATE SET ");
    for name in &names {
        let _ = write!(upsert, "{name} = excluded.{name}, ");
    }
    // deleted_at: kept when the row stays deleted, set when it becomes deleted, cleared when live.
    // seen_sweep: only a sweep moves it.
    let _ = write!(
        upsert,
        "raw = excluded.raw, synced_at = excluded.synced_at, \
         deleted_at = CASE WHEN excluded.deleted_at IS NULL THEN NULL \
                           ELSE COALESCE({table}.deleted_at, excluded.deleted_at) END, \
         seen_sweep = COALESCE(excluded.seen_sweep, {table}.seen_sweep)"
    );

    let version = if t.columns.iter().any(|c| c.name == "version") { q("version") } else { "NULL".to_owned() };
    let existing = format!(
        "SELECT id, \"updated\", {version}, raw, deleted_at IS NOT NULL, seen_sweep FROM {table} WHERE id IN {IDS}"
    );
    let old_values = format!("SELECT id, {} FROM {table} WHERE id IN {IDS}", names.join(", "));
    // Unchanged rows are marked in `sweep_marks` (migration 5), not rewritten; marks of the kind's
    // older sweeps go first (a no-op range once they are gone).
    let kind_name = t.name.replace('\'', "''");
    let prune_marks = format!("DELETE FROM sweep_marks WHERE kind = '{kind_name}' AND sweep < ?1");
    let mark_seen =
        format!("INSERT INTO sweep_marks (kind, sweep, id) SELECT '{kind_name}', ?2, value FROM json_each(?1)");
    let respell = format!("UPDATE {table} SET raw = ?2 WHERE id = ?1");
    let get = format!("SELECT {}, raw, synced_at, deleted_at FROM {table} WHERE id = ?1", names.join(", "));
    let unseen_base = format!(
        "SELECT id FROM {table} WHERE deleted_at IS NULL AND seen_sweep IS NOT ?2 \
         AND id NOT IN (SELECT id FROM sweep_marks WHERE kind = '{kind_name}' AND sweep = ?2)"
    );
    let unseen_all = format!("{unseen_base} ORDER BY id");
    let unseen_scoped = t.scope_column.map(|c| format!("{unseen_base} AND {} IN {IDS} ORDER BY id", q(c)));
    let mark_deleted = format!("UPDATE {table} SET deleted_at = ?2 WHERE deleted_at IS NULL AND id IN {IDS}");
    let existing_ids = format!("SELECT id FROM {table} WHERE id IN {IDS} ORDER BY id");
    let ids_all = format!("SELECT id FROM {table} ORDER BY id");
    let ids_live = format!("SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY id");
    // Two subqueries, so that the total counts over the smallest index and the deleted rows come
    // from the partial index on `deleted_at`, instead of one scan over every row's JSON.
    let counts =
        format!("SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM {table} WHERE deleted_at IS NOT NULL)");
    TableSql {
        upsert,
        respell,
        old_values,
        existing,
        mark_seen,
        prune_marks,
        get,
        unseen_all,
        unseen_scoped,
        mark_deleted,
        existing_ids,
        ids_all,
        ids_live,
        counts,
    }
}

/// An `UPDATE` of one row that sets only the typed columns in `changed` (indexes into the
/// table's columns), plus raw, synced_at, deleted_at and seen_sweep. SQLite rewrites an index
/// entry only when the statement sets a column of the index, so leaving out unchanged columns
/// spares the indexes on parents and owners when a card is merely edited.
///
/// Parameters: `?1` id, `?2`.. the changed columns in order, then raw, synced_at, deleted_at
/// (NULL for a live row, else the time to use when the row was not deleted yet), seen_sweep (NULL
/// keeps the stored one).
pub(crate) fn update_sql(kind: EntityKind, changed: &[usize]) -> String {
    let t = kind.table();
    let table = q(t.name);
    let mut sql = format!("UPDATE {table} SET ");
    let mut p = 2;
    for &i in changed {
        let _ = write!(sql, "{} = ?{p}, ", q(t.columns[i].name));
        p += 1;
    }
    let (raw, synced_at, deleted_at, sweep) = (p, p + 1, p + 2, p + 3);
    let _ = write!(
        sql,
        "raw = ?{raw}, synced_at = ?{synced_at}, \
         deleted_at = CASE WHEN ?{deleted_at} IS NULL THEN NULL ELSE COALESCE(deleted_at, ?{deleted_at}) END, \
         seen_sweep = COALESCE(?{sweep}, seen_sweep) WHERE id = ?1"
    );
    sql
}

/// A JSON array of ids, bound to `json_each(?)` so that a list of any length is one statement.
pub(crate) fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let mut s = String::from("[");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s.push(']');
    s
}

/// Formats a timestamp as stored: RFC 3339 UTC with milliseconds (`2025-01-01T00:00:05.000Z`),
/// so that text order is time order. Sub-millisecond precision, when there is any, is kept with
/// 6 or 9 fraction digits so that values round-trip exactly.
pub(crate) fn fmt_time(t: &DateTime<Utc>) -> String {
    let nanos = t.nanosecond();
    let year = t.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Outside RFC 3339's four-digit years, or a leap second: let chrono spell it (and parse it
        // back in `parse_time`).
        return t.format("%Y-%m-%dT%H:%M:%S%.9f+00:00").to_string();
    }
    // Hand-written: this runs for every timestamp of every row, and is several times faster
    // than a chrono format string.
    let mut s = String::with_capacity(30);
    push_digits(&mut s, year as u32, 4);
    s.push('-');
    push_digits(&mut s, t.month(), 2);
    s.push('-');
    push_digits(&mut s, t.day(), 2);
    s.push('T');
    push_digits(&mut s, t.hour(), 2);
    s.push(':');
    push_digits(&mut s, t.minute(), 2);
    s.push(':');
    push_digits(&mut s, t.second(), 2);
    s.push('.');
    if nanos.is_multiple_of(1_000_000) {
        push_digits(&mut s, nanos / 1_000_000, 3);
    } else if nanos.is_multiple_of(1_000) {
        push_digits(&mut s, nanos / 1_000, 6);
    } else {
        push_digits(&mut s, nanos, 9);
    }
    s.push('Z');
    s
}

/// Formats a timestamp like [`fmt_time`] but always with nine fraction digits
/// (`2025-01-01T00:00:05.000000000Z`): fixed width, so that text order is exactly time order.
///
/// [`fmt_time`]'s text order is time order only to the millisecond: `05.000Z` sorts after
/// `05.000500Z` ('Z' > '5'). Columns compared against the clock to the instant (the webhook
/// inbox's) store this spelling; [`parse_time`] reads both.
pub(crate) fn fmt_time_fixed(t: &DateTime<Utc>) -> String {
    let mut s = fmt_time(t);
    if let (Some(dot), true) = (s.rfind('.'), s.ends_with('Z')) {
        let digits = s.len() - dot - 2;
        s.insert_str(s.len() - 1, &"000000000"[digits.min(9)..]);
    }
    s
}

fn push_digits(s: &mut String, mut value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    s.extend(digits[..width].iter().map(|&d| char::from(d)));
}

/// Parses a stored timestamp.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%:z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a stored timestamp of `what` (a column), failing with an error that names it.
pub(crate) fn read_time(s: &str, what: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_time(s).ok_or_else(|| corrupt(format!("{what} holds {s:?}, which is not an RFC 3339 timestamp")))
}

/// An optional stored timestamp.
pub(crate) fn read_opt_time(s: Option<String>, what: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| read_time(&s, what)).transpose()
}

/// The SQLite value written for a typed column value.
pub(crate) fn to_sqlite(value: SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Int(v) => Value::Integer(v),
        SqlValue::Float(v) => Value::Real(v),
        SqlValue::Text(v) => Value::Text(v),
        SqlValue::Bool(v) => Value::Integer(i64::from(v)),
        SqlValue::Time(v) => Value::Text(fmt_time(&v)),
        // Straight into a buffer (`to_string` goes through `Display`).
        SqlValue::Json(v) => Value::Text(serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())),
    }
}

/// Reads a stored value back as the [`SqlValue`] of its column type, so that what was written
/// reads back equal. Values of an unexpected storage class (edited by hand) are returned as what
/// they are rather than failing.
pub(crate) fn from_sqlite(ty: ColumnType, value: ValueRef<'_>) -> SqlValue {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match (ty, value) {
        (_, ValueRef::Null) => SqlValue::Null,
        (ColumnType::Bool, ValueRef::Integer(v)) => SqlValue::Bool(v != 0),
        (ColumnType::Float, ValueRef::Integer(v)) => SqlValue::Float(v as f64),
        (ColumnType::BigInt, ValueRef::Real(v)) if v.fract() == 0.0 && v.abs() < 9.0e15 => SqlValue::Int(v as i64),
        (_, ValueRef::Integer(v)) => SqlValue::Int(v),
        (_, ValueRef::Real(v)) => SqlValue::Float(v),
        (ColumnType::Timestamp, ValueRef::Text(s)) => {
            let s = text(s);
            parse_time(&s).map_or(SqlValue::Text(s), SqlValue::Time)
        }
        (ColumnType::Json, ValueRef::Text(s)) => {
            serde_json::from_slice(s).map_or_else(|_| SqlValue::Text(text(s)), SqlValue::Json)
        }
        (_, ValueRef::Text(s) | ValueRef::Blob(s)) => SqlValue::Text(text(s)),
    }
}

/// How a stored JSON text compares with an incoming one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonMatch {
    /// The same text.
    Same,
    /// The same JSON value spelled differently (key order, spacing, escapes): a row written by a
    /// release that stored re-serialised JSON, or Kaiten reordering keys.
    Respelled,
    /// Different values (or a stored text that is not JSON).
    Different,
}

/// Compares a stored JSON text with an incoming one: texts first (what an unchanged record gives:
/// Kaiten sends the same bytes), values only when the texts differ.
pub(crate) fn compare_json(stored: &str, incoming: &str) -> JsonMatch {
    if stored == incoming {
        return JsonMatch::Same;
    }
    match (serde_json::from_str::<serde_json::Value>(stored), serde_json::from_str::<serde_json::Value>(incoming)) {
        (Ok(a), Ok(b)) if a == b => JsonMatch::Respelled,
        _ => JsonMatch::Different,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_millisecond_rfc3339_and_round_trip() {
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 5).unwrap();
        assert_eq!(fmt_time(&t), "2025-01-01T00:00:05.000Z");
        let fine = t + chrono::Duration::nanoseconds(1_234_567);
        assert_eq!(fmt_time(&fine), "2025-01-01T00:00:05.001234567Z");
        for t in [t, fine, t + chrono::Duration::microseconds(7), Utc::now()] {
            assert_eq!(parse_time(&fmt_time(&t)), Some(t));
        }
        // Agrees with chrono's spelling, across a range of instants.
        let mut t = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        for step in 0..5000i64 {
            t += chrono::Duration::milliseconds(step * 7_919_993 + 1);
            assert_eq!(fmt_time(&t), t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        }
        let far = Utc.with_ymd_and_hms(12345, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(parse_time(&fmt_time(&far)), Some(far));
        let ancient = Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap();
        assert_eq!(parse_time(&fmt_time(&ancient)), Some(ancient));
    }

    #[test]
    fn fixed_width_times_sort_as_text_in_time_order() {
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 5).unwrap();
        assert_eq!(fmt_time_fixed(&t), "2025-01-01T00:00:05.000000000Z");
        // fmt_time's own order breaks inside a millisecond: the reason for the fixed width.
        let later = t + chrono::Duration::microseconds(500);
        assert!(fmt_time(&t) > fmt_time(&later));
        let mut instants = vec![
            t,
            later,
            t + chrono::Duration::nanoseconds(1),
            t + chrono::Duration::milliseconds(1),
            t + chrono::Duration::nanoseconds(999_999),
            t - chrono::Duration::nanoseconds(1),
            t + chrono::Duration::seconds(86_400 * 400),
            Utc::now(),
        ];
        instants.sort();
        let texts: Vec<String> = instants.iter().map(fmt_time_fixed).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        for (text, instant) in texts.iter().zip(&instants) {
            assert_eq!(text.len(), 30, "{text}");
            assert_eq!(parse_time(text), Some(*instant));
        }
    }

    #[test]
    fn statements_are_generated_for_every_table() {
        for kind in EntityKind::ALL {
            let sql = table_sql(kind);
            assert!(sql.upsert.starts_with(&format!("INSERT INTO \"{}\"", kind.table().name)));
            assert_eq!(sql.unseen_scoped.is_some(), kind.table().scope_column.is_some());
        }
        assert!(table_sql(EntityKind::Cards).existing.contains("\"version\""));
        assert!(table_sql(EntityKind::Tags).existing.contains("NULL"));
        assert_eq!(id_list([1, 2, 30]), "[1,2,30]");
        assert_eq!(id_list([]), "[]");
    }

    #[test]
    fn json_comparison() {
        assert_eq!(compare_json(r#"{"a":1}"#, r#"{"a":1}"#), JsonMatch::Same);
        assert_eq!(compare_json(r#"{"a":1,"b":[2]}"#, r#"{ "b": [2], "a": 1 }"#), JsonMatch::Respelled);
        assert_eq!(compare_json(r#"{"a":1}"#, r#"{"a":2}"#), JsonMatch::Different);
        assert_eq!(compare_json("not json", r#"{"a":2}"#), JsonMatch::Different);
    }
}
