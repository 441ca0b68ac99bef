//! DuckDB over committed snapshots: views for analysts' SQL (`query`) and the
//! JSON files a static dashboard reads (`export`).
//!
//! DuckDB reads the snapshot's Parquet files in place for a local store, or
//! from a local cache keyed by snapshot for S3. Analysts' SQL is read-only:
//! a statement that is not a query is refused before it runs.

pub mod export;

use std::path::{Path, PathBuf};

use duckdb::Connection;
use duckdb::types::{TimeUnit, Value};
use serde_json::json;

use crate::store::{Manifest, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store {0} has no committed snapshot yet: run `partnerforge run` first")]
    NoSnapshot(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("DuckDB: {0}")]
    Sql(String),
    #[error("read-only: only queries run here (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE); refused: {0}")]
    NotAQuery(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Export { path: PathBuf, message: String },
}

fn sql_error(e: duckdb::Error) -> ServeError {
    ServeError::Sql(e.to_string())
}

/// The tables every snapshot holds besides `targets` and `api_calls`, exposed as
/// views over the latest snapshot.
const MODULE_TABLES: [&str; 18] = [
    "company",
    "tech_stack",
    "tech_spend",
    "traffic",
    "traffic_sources",
    "competitors",
    "related_domains",
    "financials",
    "financial_history",
    "executives",
    "stock",
    "analyst_recommendations",
    "hiring",
    "job_postings",
    "executive_quotes",
    "trigger_events",
    "fetches",
    "raw_responses",
];

/// The columns of the change tables, for an empty view over a store that has none.
fn empty_view_columns(view: &str) -> Option<String> {
    let events = crate::run::changes::changes_batch(&[]).ok()?;
    let batch = match view {
        "changes" => events,
        "alerts" => crate::run::changes::alerts_batch(&[]).ok()?,
        _ => return None,
    };
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                arrow::datatypes::DataType::Int64 => "BIGINT",
                arrow::datatypes::DataType::Float64 => "DOUBLE",
                arrow::datatypes::DataType::Boolean => "BOOLEAN",
                arrow::datatypes::DataType::Timestamp(..) => "TIMESTAMP",
                _ => "VARCHAR",
            };
            format!("NULL::{ty} AS \"{}\"", f.name())
        })
        .collect();
    Some(columns.join(", "))
}

/// An in-memory DuckDB with views over a store's committed snapshots.
pub struct Warehouse {
    conn: Connection,
    pub latest: Manifest,
    pub snapshots: usize,
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn path_list(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths.iter().map(|p| quote_literal(&p.to_string_lossy())).collect();
    format!("[{}]", items.join(", "))
}

impl Warehouse {
    /// Opens views over the latest snapshot (`targets`, module tables) and every
    /// snapshot (`targets_history`, `api_calls`).
    pub async fn open(store: &Store, cache_dir: &Path) -> Result<Self, ServeError> {
        let snapshots = store.snapshots().await?;
        let Some(latest) = snapshots.last().cloned() else {
            return Err(ServeError::NoSnapshot(store.url().to_string()));
        };
        let mut history: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let mut latest_files = Vec::new();
        for manifest in &snapshots {
            let files = store.local_files(manifest, cache_dir).await?;
            let paths = |table: &str| -> Vec<PathBuf> {
                files.iter().filter(|(e, _)| e.table == table).map(|(_, p)| p.clone()).collect()
            };
            history.push(("targets".into(), paths("targets")));
            history.push(("api_calls".into(), paths("api_calls")));
            history.push(("changes".into(), paths("changes")));
            history.push(("alerts".into(), paths("alerts")));
            if manifest.snapshot_id == latest.snapshot_id {
                latest_files = files;
            }
        }
        let conn = Connection::open_in_memory().map_err(sql_error)?;
        let mut sql = String::new();
        for view in ["targets", "api_calls", "changes", "alerts"] {
            let all: Vec<PathBuf> = history.iter().filter(|(t, _)| t == view).flat_map(|(_, p)| p.clone()).collect();
            if all.is_empty() {
                // Snapshots from before change tracking (or without alert rules): an empty view
                // with the table's columns, so queries and exports over it still run.
                if let Some(columns) = empty_view_columns(view) {
                    sql.push_str(&format!("CREATE VIEW {view} AS SELECT {columns} WHERE false;\n"));
                }
                continue;
            }
            let name = if view == "targets" { "targets_history" } else { view };
            sql.push_str(&format!(
                "CREATE VIEW {name} AS SELECT * FROM read_parquet({}, union_by_name = true);\n",
                path_list(&all)
            ));
        }
        for (entry, path) in &latest_files {
            if entry.table == "targets" || MODULE_TABLES.contains(&entry.table.as_str()) {
                sql.push_str(&format!(
                    "CREATE VIEW {} AS SELECT * FROM read_parquet({});\n",
                    entry.table,
                    quote_literal(&path.to_string_lossy())
                ));
            }
        }
        conn.execute_batch(&sql).map_err(sql_error)?;
        Ok(Self { conn, latest, snapshots: snapshots.len() })
    }

    /// Refuses anything but a query, using DuckDB's own parser: only SELECT-like
    /// statements serialize.
    fn check_read_only(&self, sql: &str) -> Result<(), ServeError> {
        let verdict: String = self
            .conn
            .query_row("SELECT json_serialize_sql(?::VARCHAR)::VARCHAR", [sql], |row| row.get(0))
            .map_err(sql_error)?;
        judge(sql, &verdict)
    }

    /// Runs one read-only statement; returns column names and rows as JSON values.
    pub fn query(&self, sql: &str) -> Result<QueryResult, ServeError> {
        self.check_read_only(sql)?;
        let mut stmt = self.conn.prepare(sql).map_err(sql_error)?;
        let mut rows = stmt.query([]).map_err(sql_error)?;
        let columns: Vec<String> = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_error)? {
            let mut values = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let value: Value = row.get(i).map_err(sql_error)?;
                values.push(to_json(value));
            }
            out.push(values);
        }
        Ok(QueryResult { columns, rows: out })
    }
}

/// Reads DuckDB's verdict on a statement. Fails closed: only a verdict that says
/// in so many words that there was no error lets the statement run.
fn judge(sql: &str, verdict: &str) -> Result<(), ServeError> {
    let first_word = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    let Ok(verdict) = serde_json::from_str::<serde_json::Value>(verdict) else {
        return Err(ServeError::NotAQuery(format!("{first_word} statement (DuckDB's verdict on it was not readable)")));
    };
    match verdict["error"].as_bool() {
        Some(false) => Ok(()),
        Some(true) if verdict["error_type"].as_str() == Some("parser") => {
            Err(ServeError::Sql(verdict["error_message"].as_str().unwrap_or("cannot parse the statement").to_string()))
        }
        Some(true) => Err(ServeError::NotAQuery(format!("{first_word} statement"))),
        None => Err(ServeError::NotAQuery(format!(
            "{first_word} statement (DuckDB's verdict on it said neither yes nor no)"
        ))),
    }
}

pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// DuckDB values as JSON: numbers stay numbers, timestamps become ISO 8601 UTC text.
pub fn to_json(value: Value) -> serde_json::Value {
    use Value as V;
    match value {
        V::Null => serde_json::Value::Null,
        V::Boolean(b) => json!(b),
        V::TinyInt(i) => json!(i),
        V::SmallInt(i) => json!(i),
        V::Int(i) => json!(i),
        V::BigInt(i) => json!(i),
        V::HugeInt(i) => i64::try_from(i).map(|i| json!(i)).unwrap_or_else(|_| json!(i.to_string())),
        V::UHugeInt(i) => u64::try_from(i).map(|i| json!(i)).unwrap_or_else(|_| json!(i.to_string())),
        V::UTinyInt(i) => json!(i),
        V::USmallInt(i) => json!(i),
        V::UInt(i) => json!(i),
        V::UBigInt(i) => json!(i),
        V::Float(f) => json!(f),
        V::Double(f) => json!(f),
        V::Decimal(d) => d.to_string().parse::<f64>().map(|f| json!(f)).unwrap_or_else(|_| json!(d.to_string())),
        V::Timestamp(unit, t) => {
            let micros = match unit {
                TimeUnit::Second => t.saturating_mul(1_000_000),
                TimeUnit::Millisecond => t.saturating_mul(1_000),
                TimeUnit::Microsecond => t,
                TimeUnit::Nanosecond => t / 1_000,
            };
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|d| json!(d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()))
                .unwrap_or(serde_json::Value::Null)
        }
        V::Date32(days) => chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
            .map(|d| json!(d.format("%Y-%m-%d").to_string()))
            .unwrap_or(serde_json::Value::Null),
        V::Text(s) | V::Enum(s) => json!(s),
        V::List(items) | V::Array(items) => serde_json::Value::Array(items.into_iter().map(to_json).collect()),
        V::Struct(fields) => {
            serde_json::Value::Object(fields.iter().map(|(k, v)| (k.clone(), to_json(v.clone()))).collect())
        }
        V::Union(inner) => to_json(*inner),
        other => json!(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_verdict_that_says_no_error_lets_a_statement_run() {
        assert!(judge("SELECT 1", r#"{"error":false,"statements":[]}"#).is_ok());
        for unreadable in ["", "not json", "{}", r#"{"error":"maybe"}"#, "[]"] {
            let refused = judge("SELECT 1", unreadable);
            assert!(matches!(refused, Err(ServeError::NotAQuery(_))), "{unreadable:?} must refuse: {refused:?}");
        }
        let refused = judge("DELETE FROM x", r#"{"error":true,"error_type":"not implemented","error_message":"x"}"#);
        assert!(matches!(refused, Err(ServeError::NotAQuery(m)) if m.starts_with("DELETE")));
        let parse = judge("SELEC 1", r#"{"error":true,"error_type":"parser","error_message":"syntax error"}"#);
        assert!(matches!(parse, Err(ServeError::Sql(m)) if m == "syntax error"));
    }
}
