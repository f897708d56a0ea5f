//! Typed column values to and from Postgres: a page becomes one typed array per column, and a
//! stored row comes back as [`SqlValue`]s equal to the ones written.

use chrono::{DateTime, Utc};
use kaiten_sync::schema::{ColumnDef, ColumnType, Row};
use kaiten_sync::{EntityKind, SqlValue, StoreError};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row as _};

/// One column of a page, ready to bind as a Postgres array.
#[derive(Debug)]
pub(crate) enum ColumnArray {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    Time(Vec<Option<DateTime<Utc>>>),
    /// JSON as text, cast to `jsonb` by the statement.
    Json(Vec<Option<String>>),
}

impl ColumnArray {
    fn new(ty: ColumnType, capacity: usize) -> Self {
        match ty {
            ColumnType::BigInt => ColumnArray::Int(Vec::with_capacity(capacity)),
            ColumnType::Float => ColumnArray::Float(Vec::with_capacity(capacity)),
            ColumnType::Text => ColumnArray::Text(Vec::with_capacity(capacity)),
            ColumnType::Bool => ColumnArray::Bool(Vec::with_capacity(capacity)),
            ColumnType::Timestamp => ColumnArray::Time(Vec::with_capacity(capacity)),
            ColumnType::Json => ColumnArray::Json(Vec::with_capacity(capacity)),
        }
    }

    /// Appends a value, converting between compatible types.
    fn push(&mut self, value: SqlValue) -> Result<(), String> {
        match (self, value) {
            (ColumnArray::Int(v), SqlValue::Null) => v.push(None),
            (ColumnArray::Float(v), SqlValue::Null) => v.push(None),
            (ColumnArray::Text(v), SqlValue::Null) => v.push(None),
            (ColumnArray::Bool(v), SqlValue::Null) => v.push(None),
            (ColumnArray::Time(v), SqlValue::Null) => v.push(None),
            (ColumnArray::Json(v), SqlValue::Null) => v.push(None),

            (ColumnArray::Int(v), SqlValue::Int(i)) => v.push(Some(i)),
            (ColumnArray::Int(v), SqlValue::Bool(b)) => v.push(Some(i64::from(b))),
            (ColumnArray::Int(v), SqlValue::Float(f))
                if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 =>
            {
                v.push(Some(f as i64))
            }
            (ColumnArray::Float(v), SqlValue::Float(f)) => v.push(Some(f)),
            (ColumnArray::Float(v), SqlValue::Int(i)) => v.push(Some(i as f64)),
            (ColumnArray::Bool(v), SqlValue::Bool(b)) => v.push(Some(b)),
            (ColumnArray::Bool(v), SqlValue::Int(i)) => v.push(Some(i != 0)),
            (ColumnArray::Time(v), SqlValue::Time(t)) => v.push(Some(t)),
            (ColumnArray::Text(v), SqlValue::Text(s)) => v.push(Some(text(s))),
            (ColumnArray::Text(v), SqlValue::Int(i)) => v.push(Some(i.to_string())),
            (ColumnArray::Text(v), SqlValue::Float(f)) => v.push(Some(f.to_string())),
            (ColumnArray::Text(v), SqlValue::Bool(b)) => v.push(Some(b.to_string())),
            (ColumnArray::Text(v), SqlValue::Time(t)) => v.push(Some(t.to_rfc3339())),
            (ColumnArray::Text(v), SqlValue::Json(j)) => v.push(Some(text(j.to_string()))),
            (ColumnArray::Json(v), SqlValue::Json(j)) => v.push(Some(json_text(&j))),
            (ColumnArray::Json(v), SqlValue::Text(s)) => v.push(Some(json_text(&Value::String(s)))),
            (ColumnArray::Json(v), SqlValue::Int(i)) => v.push(Some(i.to_string())),
            (ColumnArray::Json(v), SqlValue::Bool(b)) => v.push(Some(b.to_string())),
            (ColumnArray::Json(v), SqlValue::Float(f)) => v.push(Some(json_text(&Value::from(f)))),
            (array, value) => return Err(format!("a {value:?} does not fit a {} column", array.type_name())),
        }
        Ok(())
    }

    fn type_name(&self) -> &'static str {
        match self {
            ColumnArray::Int(_) => "bigint",
            ColumnArray::Float(_) => "double precision",
            ColumnArray::Text(_) => "text",
            ColumnArray::Bool(_) => "boolean",
            ColumnArray::Time(_) => "timestamptz",
            ColumnArray::Json(_) => "jsonb",
        }
    }

    /// Binds the array as the next parameter.
    pub(crate) fn bind<'q>(&'q self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        match self {
            ColumnArray::Int(v) => query.bind(v.as_slice()),
            ColumnArray::Float(v) => query.bind(v.as_slice()),
            ColumnArray::Text(v) | ColumnArray::Json(v) => query.bind(v.as_slice()),
            ColumnArray::Bool(v) => query.bind(v.as_slice()),
            ColumnArray::Time(v) => query.bind(v.as_slice()),
        }
    }
}

/// Postgres text cannot hold NUL: it becomes U+FFFD rather than failing the sync.
fn text(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

/// JSON as text for a `jsonb` cast. `jsonb` rejects `\u0000` in strings: such characters become
/// U+FFFD rather than failing the sync.
pub(crate) fn json_text(value: &Value) -> String {
    // `to_string` writes straight into a `Vec`; `Display` goes through `fmt` and is slower.
    let s = serde_json::to_string(value).unwrap_or_else(|_| value.to_string());
    if s.contains("\\u0000") {
        let clean = strip_nul(value.clone());
        serde_json::to_string(&clean).unwrap_or_else(|_| clean.to_string())
    } else {
        s
    }
}

/// A record's JSON text for the `raw` column: the text as Kaiten sent it, unless it holds a
/// `\u0000` (see [`json_text`]).
pub(crate) fn raw_text(raw: &kaiten_sync::kaiten_client::RawJson) -> String {
    if raw.as_str().contains("\\u0000") {
        json_text(raw.value())
    } else {
        raw.as_str().to_owned()
    }
}

fn strip_nul(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(text(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nul).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (text(k), strip_nul(v))).collect()),
        other => other,
    }
}

/// 64 bits of the SHA-256 of a record's JSON text: equal hashes mean equal JSON (the store
/// compares hashes to skip unchanged records without parsing them, and falls back to comparing
/// the JSON when hashes differ).
pub(crate) fn raw_hash(text: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A page as parameter arrays.
#[derive(Debug)]
pub(crate) struct PageArrays {
    pub(crate) ids: Vec<i64>,
    pub(crate) columns: Vec<ColumnArray>,
    pub(crate) raw: Vec<String>,
    pub(crate) raw_hash: Vec<i64>,
    pub(crate) deleted: Vec<bool>,
}

impl PageArrays {
    /// Moves the rows' values into one array per column.
    pub(crate) fn build(kind: EntityKind, columns: &[ColumnDef], rows: Vec<Row<'_>>) -> Result<Self, StoreError> {
        let n = rows.len();
        let mut arrays = PageArrays {
            ids: Vec::with_capacity(n),
            columns: columns.iter().map(|c| ColumnArray::new(c.ty, n)).collect(),
            raw: Vec::with_capacity(n),
            raw_hash: Vec::with_capacity(n),
            deleted: Vec::with_capacity(n),
        };
        for row in rows {
            if row.id <= 0 {
                return Err(StoreError::InvalidData {
                    kind,
                    message: format!("record id {} is not a positive integer", row.id),
                });
            }
            if row.values.len() != columns.len() {
                return Err(StoreError::InvalidData {
                    kind,
                    message: format!(
                        "record {} has {} column values, the {} table has {} columns",
                        row.id,
                        row.values.len(),
                        kind.table().name,
                        columns.len()
                    ),
                });
            }
            arrays.ids.push(row.id);
            for ((value, array), def) in row.values.into_iter().zip(arrays.columns.iter_mut()).zip(columns) {
                array.push(value).map_err(|message| StoreError::InvalidData {
                    kind,
                    message: format!("record {}, column {}: {message}", row.id, def.name),
                })?;
            }
            let raw = raw_text(row.raw);
            arrays.raw_hash.push(raw_hash(&raw));
            arrays.raw.push(raw);
            arrays.deleted.push(row.deleted);
        }
        Ok(arrays)
    }
}

/// Reads typed column `index` of a row back as a [`SqlValue`].
pub(crate) fn read_value(row: &PgRow, index: usize, ty: ColumnType) -> Result<SqlValue, sqlx::Error> {
    Ok(match ty {
        ColumnType::BigInt => row.try_get::<Option<i64>, _>(index)?.into(),
        ColumnType::Float => row.try_get::<Option<f64>, _>(index)?.into(),
        ColumnType::Text => row.try_get::<Option<String>, _>(index)?.map_or(SqlValue::Null, SqlValue::Text),
        ColumnType::Bool => row.try_get::<Option<bool>, _>(index)?.into(),
        ColumnType::Timestamp => row.try_get::<Option<DateTime<Utc>>, _>(index)?.into(),
        ColumnType::Json => row.try_get::<Option<Value>, _>(index)?.map_or(SqlValue::Null, SqlValue::Json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_become_replacement_characters() {
        assert_eq!(json_text(&json!({"a\u{0}": "x\u{0}y"})), "{\"a\u{FFFD}\":\"x\u{FFFD}y\"}");
        assert_eq!(json_text(&json!({"a": "\\u0000"})), "{\"a\":\"\\\\u0000\"}");
        let mut col = ColumnArray::new(ColumnType::Text, 1);
        col.push(SqlValue::Text("a\0b".into())).unwrap();
        assert!(matches!(col, ColumnArray::Text(v) if v[0].as_deref() == Some("a\u{FFFD}b")));
    }

    #[test]
    fn mismatched_values_are_refused_compatible_ones_converted() {
        let mut col = ColumnArray::new(ColumnType::Timestamp, 1);
        assert!(col.push(SqlValue::Int(1)).is_err());
        let mut col = ColumnArray::new(ColumnType::Float, 1);
        col.push(SqlValue::Int(3)).unwrap();
        assert!(matches!(col, ColumnArray::Float(v) if v[0] == Some(3.0)));
    }
}
