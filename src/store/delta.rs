//! Every committed table, also as a Delta Lake table: `delta/<table>/`, partitioned by
//! `snapshot_date`, whose current version holds exactly what `query` reads — each
//! date's current generation (for `api_calls`, every generation that made calls) — and
//! never a replaced generation or the folder of a run that did not commit. Spark,
//! Trino, Databricks and Python's `deltalake`/Polars read it without PartnerForge's
//! code, and time-travel by version (one per publish) or filter by `snapshot_date`.
//!
//! Publishing reconciles: the wanted files (from the manifests) against the files the
//! table's latest version holds (kept in that commit's `commitInfo.partnerforge`), and
//! commits the difference as one version of `add`/`remove` actions (Delta protocol
//! reader 1 / writer 2). A data file is the snapshot's own file, copied into the table's
//! folder (a hard link on a local store, a server-side copy on S3). A version is written
//! create-only, so two publishers cannot both write version N; a crash between a
//! snapshot's commit and its publish is caught up by the next publish.

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::store::manifest::Manifest;

pub const ROOT: &str = "delta";
const PARTITION: &str = "snapshot_date";

/// What a table's latest version holds, as PartnerForge recorded it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Published {
    /// Per snapshot file (its path in the store): the data file in the table.
    files: BTreeMap<String, DataFile>,
    /// The table's schema (Delta's JSON), without the partition column.
    schema: Vec<Value>,
    table_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct DataFile {
    /// Relative to the table's root.
    path: String,
    date: String,
    size: u64,
}

/// What one publish did, per table that got a new version.
#[derive(Debug, Clone, PartialEq)]
pub struct TableVersion {
    pub table: String,
    pub version: u64,
    pub added: usize,
    pub removed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Delta table {table}: {message}")]
    Table { table: String, message: String },
}

/// Brings every table's Delta version up to the store's committed snapshots.
pub async fn publish(store: &Store) -> Result<Vec<TableVersion>, DeltaError> {
    let generations = store.all_generations().await?;
    // Each date's newest generation (the manifests come sorted by date and generation).
    let newest: BTreeMap<&str, u32> = generations.iter().map(|m| (m.date.as_str(), m.generation)).collect();
    let current: BTreeSet<(String, u32)> = newest.into_iter().map(|(d, g)| (d.to_string(), g)).collect();
    let mut wanted: BTreeMap<String, Vec<(&Manifest, &super::FileEntry)>> = BTreeMap::new();
    for manifest in &generations {
        let is_current = current.contains(&(manifest.date.clone(), manifest.generation));
        for entry in &manifest.files {
            // As `query` reads them: a replaced generation's calls were paid; a rebuilt
            // generation's ledger is a copy of the one it was rebuilt from.
            let keep = if entry.table == "api_calls" { manifest.rebuilt_from.is_none() } else { is_current };
            if keep {
                wanted.entry(entry.table.clone()).or_default().push((manifest, entry));
            }
        }
    }
    let mut versions = Vec::new();
    for (table, files) in &wanted {
        if let Some(version) = publish_table(store, table, files).await? {
            versions.push(version);
        }
    }
    Ok(versions)
}

fn log_dir(table: &str) -> String {
    format!("{ROOT}/{table}/_delta_log")
}

fn version_path(table: &str, version: u64) -> String {
    format!("{}/{version:020}.json", log_dir(table))
}

/// The latest version of a table's log and what it holds (`None`: no table yet).
async fn latest(store: &Store, table: &str) -> Result<Option<(u64, Published)>, DeltaError> {
    let bad = |message: String| DeltaError::Table { table: table.to_string(), message };
    let mut newest: Option<u64> = None;
    for path in store.list(&log_dir(table)).await? {
        let name = path.rsplit('/').next().unwrap_or_default();
        if let Some(number) = name.strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) {
            newest = newest.max(Some(number));
        }
    }
    let Some(version) = newest else { return Ok(None) };
    let path = version_path(table, version);
    let bytes = store.get(&path).await?;
    for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
        let action: Value = serde_json::from_str(line).map_err(|e| bad(format!("{path} line {}: {e}", n + 1)))?;
        if let Some(state) = action.pointer("/commitInfo/partnerforge") {
            let published: Published =
                serde_json::from_value(state.clone()).map_err(|e| bad(format!("{path} line {}: {e}", n + 1)))?;
            return Ok(Some((version, published)));
        }
    }
    Err(bad(format!(
        "{path}: its latest version was not written by PartnerForge (no commitInfo.partnerforge); \
         publishing would lose what that writer added, so nothing is published"
    )))
}

async fn publish_table(
    store: &Store,
    table: &str,
    files: &[(&Manifest, &super::FileEntry)],
) -> Result<Option<TableVersion>, DeltaError> {
    // A version lost to another publisher is read again and the difference recomputed.
    for _ in 0..5 {
        let previous = latest(store, table).await?;
        let (version, mut state) = match &previous {
            Some((v, state)) => (v + 1, state.clone()),
            None => (0, Published { table_id: table_id(store, table), ..Default::default() }),
        };
        let wanted: BTreeSet<&str> = files.iter().map(|(_, e)| e.path.as_str()).collect();
        let removed: Vec<(String, DataFile)> = state
            .files
            .iter()
            .filter(|(source, _)| !wanted.contains(source.as_str()))
            .map(|(s, f)| (s.clone(), f.clone()))
            .collect();
        let mut added: Vec<(String, DataFile)> = Vec::new();
        let mut schema = state.schema.clone();
        for (manifest, entry) in files {
            if state.files.contains_key(&entry.path) {
                continue;
            }
            let fields = file_schema(store, table, &entry.path, entry.bytes).await?;
            merge_schema(&mut schema, fields);
            let path = format!("{PARTITION}={}/g{:04}.parquet", manifest.date, manifest.generation);
            let size = match entry.base.as_deref() {
                Some(base) => whole_targets(store, manifest, entry, base, &format!("{ROOT}/{table}/{path}")).await?,
                None => {
                    store.copy(&entry.path, &format!("{ROOT}/{table}/{path}")).await?;
                    entry.bytes
                }
            };
            added.push((entry.path.clone(), DataFile { path, date: manifest.date.clone(), size }));
        }
        if added.is_empty() && removed.is_empty() && previous.is_some() {
            return Ok(None);
        }
        let now = Utc::now().timestamp_millis();
        let mut actions: Vec<Value> = Vec::new();
        if previous.is_none() {
            actions.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
        }
        if previous.is_none() || schema != state.schema {
            let mut fields = schema.clone();
            fields.push(json!({"name": PARTITION, "type": "date", "nullable": true, "metadata": {}}));
            let schema_string = json!({"type": "struct", "fields": fields}).to_string();
            actions.push(json!({"metaData": {
                "id": state.table_id,
                "name": table,
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string,
                "partitionColumns": [PARTITION],
                "configuration": {},
                "createdTime": now,
            }}));
        }
        for (_, file) in &removed {
            actions.push(json!({"remove": {
                "path": file.path,
                "deletionTimestamp": now,
                "dataChange": true,
                "extendedFileMetadata": true,
                "partitionValues": {PARTITION: file.date},
                "size": file.size,
            }}));
        }
        for (_, file) in &added {
            actions.push(json!({"add": {
                "path": file.path,
                "partitionValues": {PARTITION: file.date},
                "size": file.size,
                "modificationTime": now,
                "dataChange": true,
            }}));
        }
        for (source, _) in &removed {
            state.files.remove(source);
        }
        state.files.extend(added.iter().cloned());
        state.schema = schema;
        actions.push(json!({"commitInfo": {
            "timestamp": now,
            "operation": "WRITE",
            "operationParameters": {"mode": "Append"},
            "engineInfo": concat!("partnerforge/", env!("CARGO_PKG_VERSION")),
            "isBlindAppend": removed.is_empty(),
            "partnerforge": state,
        }}));
        let mut body = String::new();
        for action in &actions {
            body.push_str(&action.to_string());
            body.push('\n');
        }
        if store.put_new(&version_path(table, version), Bytes::from(body)).await? {
            return Ok(Some(TableVersion {
                table: table.to_string(),
                version,
                added: added.len(),
                removed: removed.len(),
            }));
        }
    }
    Err(DeltaError::Table {
        table: table.to_string(),
        message: "other publishers kept writing the next version; try again".into(),
    })
}

/// A targets table stored by reference, written whole to `dest` (its rows and its base's;
/// `transform::write_whole`): a version lists whole files. (Deletion vectors on the base
/// file would spare the write, but Python's `deltalake` 1.6 refuses a table with them in
/// `to_pyarrow_table` and `to_pandas`.) Returns the file's size.
async fn whole_targets(
    store: &Store,
    manifest: &Manifest,
    entry: &super::FileEntry,
    base: &str,
    dest: &str,
) -> Result<u64, DeltaError> {
    let bad =
        |message: String| DeltaError::Table { table: "targets".into(), message: format!("{}: {message}", entry.path) };
    let Some(inputs) = manifest.file("target_inputs") else {
        return Err(bad(format!("stored by reference to {base}, but the snapshot has no target_inputs")));
    };
    let (own, base_bytes, inputs) =
        (store.get(&entry.path).await?, store.get(base).await?, store.get(&inputs.path).await?);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let local =
        std::env::temp_dir().join(format!("partnerforge-delta-targets-{}-{nanos:x}.parquet", std::process::id()));
    let base_rows = crate::transform::Base { targets: &base_bytes, inputs: &inputs };
    crate::transform::write_whole(&own, base_rows, &manifest.snapshot_id, WHOLE_ROW_GROUP, &local)
        .map_err(|e| bad(format!("writing it whole with {base}: {e}")))?;
    let size = store.put_file(dest, &local).await;
    let _ = std::fs::remove_file(&local);
    Ok(size?)
}

/// The rows of a row group of a targets table written whole (the scoring's slice).
const WHOLE_ROW_GROUP: usize = 10_000;

/// A stable id for a table of this store.
fn table_id(store: &Store, table: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{table}\n{}", store.url(), Utc::now().timestamp_nanos_opt().unwrap_or(0)));
    let h: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The Delta fields of a Parquet file, read from its footer (two range reads).
async fn file_schema(store: &Store, table: &str, path: &str, size: u64) -> Result<Vec<Value>, DeltaError> {
    let bad = |message: String| DeltaError::Table { table: table.to_string(), message: format!("{path}: {message}") };
    if size < 12 {
        return Err(bad("too short for a Parquet file".into()));
    }
    let tail = store.get_range(path, size - 8..size).await?;
    let tail: [u8; 8] = tail.as_ref().try_into().map_err(|_| bad("short read of the footer".into()))?;
    let length =
        parquet::file::metadata::FooterTail::try_from(tail).map_err(|e| bad(e.to_string()))?.metadata_length() as u64;
    if length + 8 > size {
        return Err(bad("the footer's length exceeds the file".into()));
    }
    let metadata = store.get_range(path, size - 8 - length..size - 8).await?;
    let metadata =
        parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&metadata).map_err(|e| bad(e.to_string()))?;
    let file = metadata.file_metadata();
    let schema = parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| bad(e.to_string()))?;
    schema.fields().iter().map(|f| field(f).map_err(|m| bad(format!("column {}: {m}", f.name())))).collect()
}

/// Adds the fields a new file has to the table's schema (a column an older file lacks
/// reads as null there); a field's type is the newest file's.
fn merge_schema(schema: &mut Vec<Value>, fields: Vec<Value>) {
    for field in fields {
        match schema.iter_mut().find(|f| f["name"] == field["name"]) {
            Some(existing) => *existing = field,
            None => schema.push(field),
        }
    }
}

fn field(f: &Field) -> Result<Value, String> {
    Ok(json!({"name": f.name(), "type": delta_type(f.data_type())?, "nullable": true, "metadata": {}}))
}

fn struct_type(fields: &Fields) -> Result<Value, String> {
    let fields: Vec<Value> = fields.iter().map(|f| field(f)).collect::<Result<_, _>>()?;
    Ok(json!({"type": "struct", "fields": fields}))
}

/// Delta's name for an Arrow type. Delta has no unsigned integers: each widens to the
/// next signed type that holds it (readers cast the file's values).
fn delta_type(t: &DataType) -> Result<Value, String> {
    Ok(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Boolean => json!("boolean"),
        DataType::Int8 => json!("byte"),
        DataType::Int16 | DataType::UInt8 => json!("short"),
        DataType::Int32 | DataType::UInt16 => json!("integer"),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => json!("long"),
        DataType::Float16 | DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Date32 | DataType::Date64 => json!("date"),
        // Every time in the store is a UTC instant (see `transform::parquet_writer`).
        DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Second, _) => json!("timestamp"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("binary"),
        DataType::Decimal128(p, s) => json!(format!("decimal({p},{s})")),
        DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
            json!({"type": "array", "elementType": delta_type(item.data_type())?, "containsNull": true})
        }
        DataType::Struct(fields) => struct_type(fields)?,
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => json!({
                "type": "map",
                "keyType": delta_type(kv[0].data_type())?,
                "valueType": delta_type(kv[1].data_type())?,
                "valueContainsNull": true,
            }),
            other => return Err(format!("a map of {other} has no Delta type")),
        },
        DataType::Dictionary(_, value) => delta_type(value)?,
        // A column no row has a value in (Polars' Null type): any type reads it; string is the widest.
        DataType::Null => json!("string"),
        other => return Err(format!("{other} has no Delta Lake type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_delta_names() {
        let list = DataType::List(Field::new("element", DataType::Utf8, true).into());
        assert_eq!(delta_type(&list).unwrap(), json!({"type": "array", "elementType": "string", "containsNull": true}));
        assert_eq!(delta_type(&DataType::UInt32).unwrap(), json!("long"));
        assert_eq!(
            delta_type(&DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))).unwrap(),
            json!("timestamp")
        );
        assert_eq!(delta_type(&DataType::Decimal128(18, 2)).unwrap(), json!("decimal(18,2)"));
        assert!(delta_type(&DataType::Time32(arrow::datatypes::TimeUnit::Second)).is_err());
    }

    #[test]
    fn a_new_column_widens_the_schema_and_keeps_the_old_ones() {
        let mut schema = vec![json!({"name": "a", "type": "string"}), json!({"name": "b", "type": "long"})];
        merge_schema(&mut schema, vec![json!({"name": "b", "type": "long"}), json!({"name": "c", "type": "date"})]);
        let names: Vec<&str> = schema.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
