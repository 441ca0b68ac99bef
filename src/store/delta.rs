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
//!
//! The targets table is partitioned by `snapshot_id` too: a night stored by reference is
//! its own file and its base's file linked beside it, with a deletion vector leaving out
//! the base's rows the night does not hold; the base's rows take the night's
//! `snapshot_id` from the partition. From its first deletion vector the table declares
//! the feature (reader 3 / writer 7).

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, deletion_vector};
use crate::store::manifest::Manifest;

pub const ROOT: &str = "delta";
const PARTITION: &str = "snapshot_date";
const SNAPSHOT_ID: &str = "snapshot_id";

/// What a table's latest version holds, as PartnerForge recorded it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Published {
    /// Per snapshot file (its path in the store): the data file in the table. Written
    /// as `data_files` (a build that knows only `files` refuses the state rather than
    /// publish without the `snapshot_id` partition or a by-reference night's base file).
    #[serde(rename = "data_files", alias = "files")]
    files: BTreeMap<String, DataFile>,
    /// The table's schema (Delta's JSON), without the partition column.
    schema: Vec<Value>,
    table_id: String,
    /// The partition columns the files are laid out by (a state recorded before the
    /// targets table had two: the date alone).
    #[serde(default = "date_only")]
    partitions: Vec<String>,
    /// Whether the table declares deletion vectors (reader 3 / writer 7).
    #[serde(default)]
    deletion_vectors: bool,
    /// When the table was created (milliseconds; the `metaData` action's `createdTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_time: Option<i64>,
}

fn date_only() -> Vec<String> {
    vec![PARTITION.to_string()]
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct DataFile {
    /// Relative to the table's root.
    path: String,
    date: String,
    size: u64,
    /// Its rows (the `add` action's `numRecords`; readers of deletion vectors need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    /// The `snapshot_id` partition's value (the targets table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot_id: Option<String>,
    /// The descriptor of the rows of the file the table leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletion_vector: Option<Value>,
    /// A targets table stored by reference: its base's file, linked beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<Box<DataFile>>,
}

impl DataFile {
    /// The file and, for a table stored by reference, its base's.
    fn files(&self) -> impl Iterator<Item = &DataFile> {
        std::iter::once(self).chain(self.base.as_deref())
    }

    fn partition_values(&self) -> Value {
        let mut values = json!({PARTITION: self.date});
        if let Some(id) = &self.snapshot_id {
            values[SNAPSHOT_ID] = json!(id);
        }
        values
    }

    /// Its `add` action; `data_change` false when the table's rows stay the same (a
    /// file laid out again).
    fn add(&self, now: i64, data_change: bool) -> Value {
        let mut add = json!({
            "path": self.path,
            "partitionValues": self.partition_values(),
            "size": self.size,
            "modificationTime": now,
            "dataChange": data_change,
        });
        if let Some(rows) = self.rows {
            add["stats"] = json!(json!({"numRecords": rows}).to_string());
        }
        if let Some(dv) = &self.deletion_vector {
            add["deletionVector"] = dv.clone();
        }
        json!({"add": add})
    }

    fn remove(&self, now: i64, data_change: bool) -> Value {
        let mut remove = json!({
            "path": self.path,
            "deletionTimestamp": now,
            "dataChange": data_change,
            "extendedFileMetadata": true,
            "partitionValues": self.partition_values(),
            "size": self.size,
        });
        if let Some(dv) = &self.deletion_vector {
            remove["deletionVector"] = dv.clone();
        }
        json!({"remove": remove})
    }
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
    let partitions = partition_columns(table);
    // A version lost to another publisher is read again and the difference recomputed.
    for _ in 0..5 {
        let previous = latest(store, table).await?;
        let (version, mut state) = match &previous {
            Some((v, state)) => (v + 1, state.clone()),
            None => (
                0,
                Published { table_id: table_id(store, table), partitions: partitions.clone(), ..Default::default() },
            ),
        };
        // A table laid out with other partition columns (the targets table before
        // `snapshot_id` was one) gets every file again, in the new folders.
        let relayout = state.partitions != partitions;
        let wanted: BTreeSet<&str> = files.iter().map(|(_, e)| e.path.as_str()).collect();
        let removed: Vec<(String, DataFile)> = state
            .files
            .iter()
            .filter(|(source, _)| relayout || !wanted.contains(source.as_str()))
            .map(|(s, f)| (s.clone(), f.clone()))
            .collect();
        let mut added: Vec<(String, DataFile)> = Vec::new();
        let mut schema = state.schema.clone();
        for (manifest, entry) in files {
            if !relayout && state.files.contains_key(&entry.path) {
                continue;
            }
            let footer = footer(store, table, &entry.path, entry.bytes).await?;
            let snapshot_id = (partitions.len() > 1).then(|| manifest.snapshot_id.clone());
            let folder = match &snapshot_id {
                Some(id) => format!("{PARTITION}={}/{SNAPSHOT_ID}={id}", manifest.date),
                None => format!("{PARTITION}={}", manifest.date),
            };
            let path = format!("{folder}/g{:04}.parquet", manifest.generation);
            store.copy(&entry.path, &format!("{ROOT}/{table}/{path}")).await?;
            let mut file = DataFile {
                path,
                date: manifest.date.clone(),
                size: entry.bytes,
                rows: Some(footer.rows),
                snapshot_id,
                deletion_vector: None,
                base: None,
            };
            if let Some(base) = entry.base.as_deref() {
                let link = format!("{folder}/g{:04}-base.parquet", manifest.generation);
                let (linked, fields) = base_link(store, table, manifest, entry, base, link, &file).await?;
                merge_schema(&mut schema, fields);
                file.base = Some(Box::new(linked));
            }
            // After its base's: the night's own file gives a column's type.
            merge_schema(&mut schema, footer.fields);
            added.push((entry.path.clone(), file));
        }
        if added.is_empty() && removed.is_empty() && previous.is_some() {
            return Ok(None);
        }
        let deletion_vectors =
            state.deletion_vectors || added.iter().any(|(_, f)| f.files().any(|f| f.deletion_vector.is_some()));
        let now = Utc::now().timestamp_millis();
        let mut actions: Vec<Value> = Vec::new();
        if previous.is_none() || deletion_vectors != state.deletion_vectors {
            actions.push(protocol(deletion_vectors));
        }
        let created_time = *state.created_time.get_or_insert(now);
        if previous.is_none() || schema != state.schema || relayout || deletion_vectors != state.deletion_vectors {
            let mut fields = schema.clone();
            // The date is the folders' only (the files have no such column); `snapshot_id`
            // is the files' own column too, and readers take the partition's value.
            fields.push(json!({"name": PARTITION, "type": "date", "nullable": true, "metadata": {}}));
            let schema_string = json!({"type": "struct", "fields": fields}).to_string();
            let configuration =
                if deletion_vectors { json!({"delta.enableDeletionVectors": "true"}) } else { json!({}) };
            actions.push(json!({"metaData": {
                "id": state.table_id,
                "name": table,
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string,
                "partitionColumns": partitions,
                "configuration": configuration,
                "createdTime": created_time,
            }}));
        }
        // Laid out again, a snapshot's file still in the table is the same rows elsewhere.
        for (source, removed) in &removed {
            let data_change = !(relayout && wanted.contains(source.as_str()));
            actions.extend(removed.files().map(|f| f.remove(now, data_change)));
        }
        for (source, added) in &added {
            let data_change = !(relayout && state.files.contains_key(source));
            actions.extend(added.files().map(|f| f.add(now, data_change)));
        }
        for (source, _) in &removed {
            state.files.remove(source);
        }
        state.files.extend(added.iter().cloned());
        state.schema = schema;
        state.partitions = partitions.clone();
        state.deletion_vectors = deletion_vectors;
        let (operation, parameters) = match relayout {
            true => ("REPLACE PARTITIONING", json!({"partitionBy": partitions})),
            false => ("WRITE", json!({"mode": "Append"})),
        };
        actions.push(json!({"commitInfo": {
            "timestamp": now,
            "operation": operation,
            "operationParameters": parameters,
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

/// The table's partition columns. A targets table stored by reference takes most of its
/// rows from an earlier night's file, whose `snapshot_id` column is that night's: in the
/// targets table `snapshot_id` is a partition column too, and readers take its value from
/// the partition.
fn partition_columns(table: &str) -> Vec<String> {
    match table {
        "targets" => vec![PARTITION.to_string(), SNAPSHOT_ID.to_string()],
        _ => vec![PARTITION.to_string()],
    }
}

/// The protocol a version needs: deletion vectors are a reader and writer feature
/// (reader 3, writer 7); a table that never had one stays readable by every reader.
fn protocol(deletion_vectors: bool) -> Value {
    if deletion_vectors {
        json!({"protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"],
            // A table upgraded from writer 2 keeps what writer 2 implied.
            "writerFeatures": ["appendOnly", "invariants", "deletionVectors"],
        }})
    } else {
        json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
    }
}

/// A targets table stored by reference, published without writing its rows again: its
/// base's file linked into the night's folder (a hard link on a local store, a
/// server-side copy on S3: readers match a deletion vector by the file's path, so each
/// night has its own), with a deletion vector of the base's rows the night's table does
/// not hold — those of domains out of its `target_inputs` and those its own file holds
/// (`transform::read_targets`). `own` is the night's own file, already published.
async fn base_link(
    store: &Store,
    table: &str,
    manifest: &Manifest,
    entry: &super::FileEntry,
    base: &str,
    link: String,
    own: &DataFile,
) -> Result<(DataFile, Vec<Value>), DeltaError> {
    let bad =
        |message: String| DeltaError::Table { table: table.into(), message: format!("{}: {message}", entry.path) };
    let Some(inputs) = manifest.file("target_inputs") else {
        return Err(bad(format!("stored by reference to {base}, but the snapshot has no target_inputs")));
    };
    let base = store.checked_base(manifest, base)?;
    let (own_bytes, base_bytes, inputs) =
        (store.get(&entry.path).await?, store.get(base).await?, store.get(&inputs.path).await?);
    let size = base_bytes.len() as u64;
    // The base's columns are the table's too (an older generation's may be fewer).
    let fields = footer_in(table, base, &base_bytes)?.fields;
    let Deletions { deleted, base_rows } =
        base_deletions(own_bytes, base_bytes, inputs).map_err(|e| bad(format!("with its base {base}: {e}")))?;
    store.copy(base, &format!("{ROOT}/{table}/{link}")).await?;
    let deletion_vector = if deleted.is_empty() {
        None
    } else {
        let digest =
            Sha256::digest(format!("{}\n{link}\n{}", store.url(), Utc::now().timestamp_nanos_opt().unwrap_or(0)));
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        // A version-4 (random) UUID's bits.
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let dv = deletion_vector::file(&deleted, id);
        store.put(&format!("{ROOT}/{table}/{}", dv.file_name), Bytes::from(dv.bytes)).await?;
        Some(dv.descriptor)
    };
    let linked = DataFile {
        path: link,
        date: own.date.clone(),
        size,
        rows: Some(base_rows),
        snapshot_id: own.snapshot_id.clone(),
        deletion_vector,
        base: None,
    };
    Ok((linked, fields))
}

/// A stable id for a table of this store.
fn table_id(store: &Store, table: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{table}\n{}", store.url(), Utc::now().timestamp_nanos_opt().unwrap_or(0)));
    let h: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The rows of a by-reference night's base its table does not hold.
pub struct Deletions {
    /// Their indexes in the base's file, ascending.
    pub deleted: Vec<u64>,
    pub base_rows: u64,
}

/// Which of the base's rows a targets table stored by reference leaves out, from the
/// night's own file, its base's and its `target_inputs` (the domains of the table): a
/// base's row is the table's when its domain is listed and not in the night's own file.
/// Checks that the rows add up to the listed ones.
pub fn base_deletions(own: Bytes, base: Bytes, inputs: Bytes) -> Result<Deletions, String> {
    let (own, listed, base) = (
        domains(own).map_err(|e| format!("its own file: {e}"))?,
        domains(inputs).map_err(|e| format!("its target_inputs: {e}"))?,
        domains(base).map_err(|e| format!("the base: {e}"))?,
    );
    // The files are in domain order; sorting what is sorted is one pass.
    fn sorted(arrays: &[StringArray]) -> Vec<&str> {
        let mut all: Vec<&str> = arrays.iter().flat_map(|a| a.iter().flatten()).collect();
        all.sort();
        all
    }
    let (own, listed) = (sorted(&own), sorted(&listed));
    // The listed domains the night's own file does not hold: those the base must give.
    let mut kept = Vec::with_capacity(listed.len());
    let mut mine = own.iter().peekable();
    for &domain in &listed {
        while mine.next_if(|d| **d < domain).is_some() {}
        if mine.peek() != Some(&&domain) {
            kept.push(domain);
        }
    }
    let base: Vec<&str> = base.iter().flat_map(|a| a.iter().flatten()).collect();
    let deleted: Vec<u64> =
        (0..base.len()).filter(|&i| kept.binary_search(&base[i]).is_err()).map(|i| i as u64).collect();
    let from_base = base.len() - deleted.len();
    if own.len() + from_base != listed.len() {
        return Err(format!(
            "its own {} rows and {from_base} of the base's do not make the {} rows its target_inputs lists",
            own.len(),
            listed.len()
        ));
    }
    Ok(Deletions { deleted, base_rows: base.len() as u64 })
}

/// The `domain` column of a Parquet file, in the file's row order, a batch at a time.
fn domains(bytes: Bytes) -> Result<Vec<StringArray>, String> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::{ProjectionMask, arrow_reader::ParquetRecordBatchReaderBuilder};
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["domain"]);
    let reader = builder.with_projection(mask).with_batch_size(65_536).build().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let column = batch.column_by_name("domain").ok_or("no domain column")?;
        let column = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
        if column.null_count() > 0 {
            return Err("a row without a domain".into());
        }
        out.push(column.as_string::<i32>().clone());
    }
    Ok(out)
}

/// What a data file's footer says: its Delta fields and its rows.
struct Footer {
    fields: Vec<Value>,
    rows: u64,
}

/// A Parquet file's footer, read with two range reads.
async fn footer(store: &Store, table: &str, path: &str, size: u64) -> Result<Footer, DeltaError> {
    let tail = if size < 12 { Bytes::new() } else { store.get_range(path, size - 8..size).await? };
    let length = footer_length(table, path, size, &tail)?;
    decode_footer(table, path, &store.get_range(path, size - 8 - length..size - 8).await?)
}

/// The footer of a Parquet file held in memory.
fn footer_in(table: &str, path: &str, bytes: &Bytes) -> Result<Footer, DeltaError> {
    let size = bytes.len() as u64;
    let tail = if size < 12 { Bytes::new() } else { bytes.slice((size - 8) as usize..) };
    let length = footer_length(table, path, size, &tail)?;
    decode_footer(table, path, &bytes.slice((size - 8 - length) as usize..(size - 8) as usize))
}

/// The length of a Parquet file's footer, from its last 8 bytes.
fn footer_length(table: &str, path: &str, size: u64, tail: &Bytes) -> Result<u64, DeltaError> {
    let bad = |message: &str| DeltaError::Table { table: table.to_string(), message: format!("{path}: {message}") };
    if size < 12 {
        return Err(bad("too short for a Parquet file"));
    }
    let tail: [u8; 8] = tail.as_ref().try_into().map_err(|_| bad("short read of the footer"))?;
    let length = parquet::file::metadata::FooterTail::try_from(tail).map_err(|e| bad(&e.to_string()))?;
    let length = length.metadata_length() as u64;
    if length + 8 > size {
        return Err(bad("the footer's length exceeds the file"));
    }
    Ok(length)
}

fn decode_footer(table: &str, path: &str, metadata: &Bytes) -> Result<Footer, DeltaError> {
    let bad = |message: String| DeltaError::Table { table: table.to_string(), message: format!("{path}: {message}") };
    let metadata =
        parquet::file::metadata::ParquetMetaDataReader::decode_metadata(metadata).map_err(|e| bad(e.to_string()))?;
    let file = metadata.file_metadata();
    let schema = parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| bad(e.to_string()))?;
    let fields = schema
        .fields()
        .iter()
        .map(|f| field(f).map_err(|m| bad(format!("column {}: {m}", f.name()))))
        .collect::<Result<_, _>>()?;
    Ok(Footer { fields, rows: file.num_rows() as u64 })
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
