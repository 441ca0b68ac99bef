//! Incremental refresh: a run fetches only the (module, domain) pairs whose
//! data in the previous snapshot is older than the module's freshness, and
//! carries the rest forward — rows unchanged, with their original `fetched_at`
//! and `source`; only `snapshot_id` becomes the new snapshot's.
//!
//! Freshness counts days between run dates (`fetched_on`), not wall-clock time,
//! so back-filled dates behave like nightly runs. A fallback module (one that
//! stands in when another fails) is never carried: it runs only when needed.
//! A table whose stored schema differs from this build's is not carried; its
//! modules are fetched again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, StringArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::modules::{Module, REGISTRY};
use crate::store::table::{conform, date_values, same_table, upgrade_batch};
use crate::store::{Manifest, Store, StoreError};

/// What the previous snapshot still covers.
#[derive(Debug, Default)]
pub struct Carry {
    /// The snapshot carried from.
    pub from: Option<Manifest>,
    /// With `--only`: the only modules this run fetches.
    pub only: Option<BTreeSet<String>>,
    /// Fresh domains per module id: not fetched this run, carried forward.
    pub fresh: BTreeMap<&'static str, BTreeSet<String>>,
    /// Domains with a stored module result that is not carried (stale, fetched again, or
    /// never carried): their module rows may differ from the stored snapshot's. A domain
    /// in neither this nor the run's fetched domains has the stored snapshot's rows.
    pub stale: BTreeSet<String>,
}

impl Carry {
    /// Whether this run leaves a module alone (not in `--only`).
    pub fn excludes(&self, module: &str) -> bool {
        self.only.as_ref().is_some_and(|only| !only.contains(module))
    }

    pub fn is_fresh(&self, module: &str, domain: &str) -> bool {
        self.fresh.get(module).is_some_and(|d| d.contains(domain))
    }

    pub fn pairs(&self) -> usize {
        self.fresh.values().map(BTreeSet::len).sum()
    }
}

fn read_batches(bytes: Bytes) -> Result<Vec<RecordBatch>, StoreError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| StoreError::Encode(format!("reading a stored table: {e}")))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| StoreError::Encode(format!("reading a stored table: {e}")))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch.column_by_name(name)?.as_any().downcast_ref::<StringArray>()
}

/// Works out which (module, domain) pairs the previous snapshot still covers.
///
/// `force`: modules fetched whatever their age. `only`: when given, the run
/// fetches just these modules; every other one is carried if present.
/// `schemas`: this build's schema per table, to refuse carrying a table whose
/// stored form differs.
pub async fn plan(
    store: &Store,
    previous: Option<&Manifest>,
    run_date: NaiveDate,
    freshness: &BTreeMap<String, u32>,
    force: &[String],
    only: Option<&[String]>,
    schemas: &BTreeMap<&'static str, arrow::datatypes::SchemaRef>,
) -> Result<Carry, StoreError> {
    let only_set = only.map(|o| o.iter().cloned().collect::<BTreeSet<String>>());
    let nothing = || Carry { only: only_set.clone(), ..Default::default() };
    let Some(previous) = previous else { return Ok(nothing()) };
    let Some(file) = previous.file("fetches") else { return Ok(nothing()) };
    // Tables stored in another shape cannot be merged: their modules are fetched again.
    let mut unusable: BTreeSet<&str> = BTreeSet::new();
    for (table, schema) in schemas {
        // The manifest records each table's schema: nothing is read to compare.
        let same =
            previous.file(table).and_then(|e| e.schema.as_deref()).is_some_and(|stored| same_table(stored, schema));
        if !same {
            if previous.file(table).is_none() {
                tracing::info!(table, "the stored snapshot has no table {table} (new in this build)");
            } else {
                tracing::warn!(table, "stored table {table} has another schema: its modules are fetched again");
            }
            unusable.insert(table);
        }
    }
    // Carried rows of these go with every module: a change of their shape stops all carrying.
    if unusable.contains("fetches") || unusable.contains("raw_responses") {
        return Ok(nothing());
    }
    let carryable: Vec<&Module> = REGISTRY
        .iter()
        .copied()
        .filter(|m| m.fallback_for.is_none() && !m.tables.is_empty())
        .filter(|m| !force.iter().any(|f| f == m.id))
        .filter(|m| m.tables.iter().all(|t| !unusable.contains(t)))
        .collect();
    let mut carry = Carry { from: Some(previous.clone()), only: only_set.clone(), ..Default::default() };
    for batch in read_batches(store.get(&file.path).await?)? {
        let (Some(modules), Some(domains), Some(dates)) =
            (column(&batch, "module"), column(&batch, "domain"), date_values(&batch, "fetched_on"))
        else {
            return Ok(nothing());
        };
        for (i, fetched_on) in dates.into_iter().enumerate() {
            let Some(module) = carryable.iter().find(|m| m.id == modules.value(i)) else {
                carry.stale.insert(domains.value(i).to_string());
                continue;
            };
            let excluded = only.is_some_and(|o| !o.iter().any(|m| m == module.id));
            let days = i64::from(freshness.get(module.id).copied().unwrap_or(0));
            let fresh = fetched_on.is_some_and(|d| (run_date - d).num_days() < days);
            if excluded || fresh {
                carry.fresh.entry(module.id).or_default().insert(domains.value(i).to_string());
            } else {
                carry.stale.insert(domains.value(i).to_string());
            }
        }
    }
    Ok(carry)
}

/// The previous snapshot's rows of `table` that the carry covers, with the new
/// `snapshot_id`. `modules_of` says which modules write the table; for
/// `raw_responses` a body is carried when any module it fed is.
///
/// The stored file is read a batch at a time (from a local copy for S3), and each
/// batch of kept rows goes to `emit` as it is read: a big table never sits in memory.
pub async fn carried_rows(
    store: &Store,
    carry: &Carry,
    table: &str,
    snapshot_id: &str,
    mut emit: impl FnMut(RecordBatch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let Some(entry) = carry.from.as_ref().and_then(|m| m.file(table)) else { return Ok(()) };
    let writers: Vec<&Module> = REGISTRY.iter().copied().filter(|m| m.tables.contains(&table)).collect();
    // This build's columns of the table: a stored file written before a column was added gets it.
    let schema = crate::modules::Tables::default()
        .batches(0, snapshot_id)
        .map_err(|e| StoreError::Encode(e.to_string()))?
        .into_iter()
        .find(|(name, _)| *name == table)
        .map(|(_, batch)| batch.schema());
    let local = store.local_copy(&entry.path).await?;
    let file = std::fs::File::open(local.path())
        .map_err(|e| StoreError::Cache { path: local.path().to_path_buf(), source: e })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| StoreError::Encode(format!("reading {}: {e}", entry.path)))?;
    for batch in reader {
        let batch = batch.map_err(|e| StoreError::Encode(format!("reading {}: {e}", entry.path)))?;
        // Rows an earlier build stored keep their values in this build's types.
        let batch = upgrade_batch(batch)?;
        let batch = match &schema {
            Some(schema) => conform(batch, schema)?,
            None => batch,
        };
        let Some(domains) = column(&batch, "domain") else { continue };
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let domain = domains.value(i);
                Some(match table {
                    "fetches" => column(&batch, "module").is_some_and(|m| carry.is_fresh(m.value(i), domain)),
                    // A body goes with any module carried from it: a rebuild parses that module
                    // from it, not from a newer answer to the same call another module fetched.
                    "raw_responses" => column(&batch, "modules")
                        .is_some_and(|m| m.value(i).split(',').any(|module| carry.is_fresh(module, domain))),
                    _ => writers.iter().any(|m| carry.is_fresh(m.id, domain)),
                })
            })
            .collect();
        let kept = arrow::compute::filter_record_batch(&batch, &keep)
            .map_err(|e| StoreError::Encode(format!("carrying {table}: {e}")))?;
        if kept.num_rows() == 0 {
            continue;
        }
        // The rows are the same; the snapshot they now belong to is the new one.
        let kept = match kept.schema().index_of("snapshot_id") {
            Ok(index) => {
                let mut columns = kept.columns().to_vec();
                columns[index] = Arc::new(StringArray::from(vec![Some(snapshot_id); kept.num_rows()]));
                RecordBatch::try_new(kept.schema(), columns)
                    .map_err(|e| StoreError::Encode(format!("carrying {table}: {e}")))?
            }
            Err(_) => kept,
        };
        emit(kept)?;
    }
    Ok(())
}

/// Each domain's last full BuiltWith lookup before this run — m01 answered with data,
/// as the carried-from snapshot's `fetches` dates it — and the signature the free
/// pre-check gave that night (from the `builtwith_free` table of the snapshot of that
/// date; none when it was not checked then).
pub async fn last_lookups(
    store: &Store,
    previous: &[Manifest],
    carry: &Carry,
) -> Result<std::collections::HashMap<String, crate::modules::precheck::LastLookup>, StoreError> {
    use crate::modules::precheck::LastLookup;
    let mut lookups = std::collections::HashMap::new();
    let Some(file) = carry.from.as_ref().and_then(|m| m.file("fetches")) else { return Ok(lookups) };
    let checked: Vec<&str> = crate::modules::precheck::MODULE.checks().map(|m| m.id).take(1).collect();
    for batch in read_batches(store.get(&file.path).await?)? {
        let (Some(modules), Some(domains), Some(outcomes), Some(dates)) = (
            column(&batch, "module"),
            column(&batch, "domain"),
            column(&batch, "outcome"),
            date_values(&batch, "fetched_on"),
        ) else {
            return Ok(lookups);
        };
        for (i, on) in dates.into_iter().enumerate() {
            if let Some(on) = on
                && checked.contains(&modules.value(i))
                && outcomes.value(i) == "ok"
            {
                lookups.insert(domains.value(i).to_string(), LastLookup { on, signature: None });
            }
        }
    }
    // The check of each lookup night, from that night's snapshot.
    let nights: BTreeSet<chrono::NaiveDate> = lookups.values().map(|l| l.on).collect();
    for night in nights {
        let date = night.format("%Y-%m-%d").to_string();
        let Some(file) = previous.iter().rev().find(|m| m.date == date).and_then(|m| m.file("builtwith_free")) else {
            continue;
        };
        for batch in read_batches(store.get(&file.path).await?)? {
            let (Some(domains), Some(signatures)) = (column(&batch, "domain"), column(&batch, "signature")) else {
                continue;
            };
            for i in 0..batch.num_rows() {
                if let Some(lookup) = lookups.get_mut(domains.value(i))
                    && lookup.on == night
                    && !signatures.is_null(i)
                {
                    lookup.signature = Some(signatures.value(i).to_string());
                }
            }
        }
    }
    Ok(lookups)
}

/// Domains whose free pre-check (m00, carried while fresh) kept their last full lookup:
/// the modules it checks stay carried until the check is due again. Domains whose
/// checked modules the carry already covers are left out.
pub async fn kept_by_precheck(store: &Store, carry: &Carry) -> Result<BTreeSet<String>, StoreError> {
    let precheck = &crate::modules::precheck::MODULE;
    let mut kept = BTreeSet::new();
    let Some(file) = carry.from.as_ref().and_then(|m| m.file("builtwith_free")) else { return Ok(kept) };
    if carry.fresh.get(precheck.id).is_none_or(BTreeSet::is_empty) {
        return Ok(kept);
    }
    for batch in read_batches(store.get(&file.path).await?)? {
        let (Some(domains), Some(verdicts)) = (column(&batch, "domain"), column(&batch, "verdict")) else {
            return Ok(kept);
        };
        for i in 0..batch.num_rows() {
            let domain = domains.value(i);
            if verdicts.value(i) == crate::modules::precheck::UNCHANGED
                && carry.is_fresh(precheck.id, domain)
                && precheck.checks().all(|m| !carry.is_fresh(m.id, domain))
            {
                kept.insert(domain.to_string());
            }
        }
    }
    Ok(kept)
}
