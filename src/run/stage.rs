//! The staging area: a run's tables written as they fill, so memory follows the
//! calls under way, not the size of the book.
//!
//! Rows collect in a small buffer (`Tables` and the ledger); when it passes a
//! row or byte threshold it is encoded and appended to one Parquet file per
//! table in a staging folder, one row group per flush (arrow-rs `ArrowWriter`).
//! At the commit the staged files go to the store as they are — a local copy,
//! or a multipart upload from the file — and the targets table is assembled
//! from the staged module tables. The folder is removed when the stage is dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::store::StoreError;
use crate::store::table::{schema_fingerprint, writer_properties};

/// A table written to the staging folder, ready to be committed.
#[derive(Debug, Clone)]
pub(crate) struct StagedTable {
    pub path: PathBuf,
    pub rows: usize,
    pub schema: String,
}

struct TableWriter {
    path: PathBuf,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    rows: usize,
}

/// One Parquet file per table, appended to a row group at a time.
pub(crate) struct Stage {
    dir: PathBuf,
    writers: BTreeMap<&'static str, TableWriter>,
    /// Tables in the order they were first written (the order of the manifest).
    order: Vec<&'static str>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Encode(format!("staging {}: {e}", path.display()))
}

impl Stage {
    /// A fresh staging folder for a run: `$PARTNERFORGE_STAGE` if set; for a local
    /// store, beside its journal in `runs/<run_id>/` (on the store's own disk, so the
    /// commit moves the files rather than copying them, and gc removes what a killed
    /// run left); else the system's temporary folder.
    pub(crate) fn new(store: &crate::store::Store, run_id: &str) -> Result<Self, StoreError> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let name = format!("stage-{}-{nanos:x}", std::process::id());
        let shared = |base: PathBuf| {
            sweep(&base);
            base.join(format!("partnerforge-{run_id}-{name}"))
        };
        let dir = match (std::env::var_os("PARTNERFORGE_STAGE"), store.local_path(&format!("runs/{run_id}"))) {
            (Some(base), _) => shared(PathBuf::from(base)),
            (None, Some(run_folder)) => run_folder.join(name),
            (None, None) => shared(std::env::temp_dir()),
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Self { dir, writers: BTreeMap::new(), order: Vec::new() })
    }

    /// Appends a batch to its table's file, as a row group of its own.
    pub(crate) fn append(&mut self, table: &'static str, batch: RecordBatch) -> Result<(), StoreError> {
        if !self.writers.contains_key(table) {
            let path = self.dir.join(format!("{table}.parquet"));
            let file = File::create(&path).map_err(|e| io(&path, e))?;
            let schema = batch.schema();
            let writer =
                ArrowWriter::try_new(file, schema.clone(), Some(writer_properties()?)).map_err(|e| io(&path, e))?;
            self.writers.insert(table, TableWriter { path, schema, writer, rows: 0 });
            self.order.push(table);
        }
        let Some(table_writer) = self.writers.get_mut(table) else { return Ok(()) };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // Rows carried from an earlier snapshot were written by the same builder: give them this file's schema.
        let batch = if batch.schema() == table_writer.schema {
            batch
        } else {
            RecordBatch::try_new(table_writer.schema.clone(), batch.columns().to_vec())
                .map_err(|e| io(&table_writer.path, format!("rows of another shape: {e}")))?
        };
        table_writer.rows += batch.num_rows();
        table_writer.writer.write(&batch).map_err(|e| io(&table_writer.path, e))?;
        // Close the row group now: what is written leaves memory.
        table_writer.writer.flush().map_err(|e| io(&table_writer.path, e))?;
        Ok(())
    }

    /// Closes every file; the tables in the order they were first written.
    pub(crate) fn finish(&mut self) -> Result<Vec<(&'static str, StagedTable)>, StoreError> {
        let mut out = Vec::new();
        for table in std::mem::take(&mut self.order) {
            let Some(TableWriter { path, schema, writer, rows }) = self.writers.remove(table) else { continue };
            writer.close().map_err(|e| io(&path, e))?;
            out.push((table, StagedTable { path, rows, schema: schema_fingerprint(&schema) }));
        }
        Ok(out)
    }
}

/// Removes the staging folders a killed run left in a shared folder (the temporary one,
/// `$PARTNERFORGE_STAGE`): `partnerforge-<run_id>-stage-<pid>-<time>` whose process is gone.
/// A resumed run stages afresh (its calls come from the journal), so they are of no use, and
/// a large book's are gigabytes. Where processes cannot be looked up (no `/proc`), none is
/// removed; a folder whose process id was taken by another process waits for that one.
fn sweep(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stage_pid) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed {}, the staging folder of a run that did not finish",
                    entry.path().display()
                ),
                Err(e) => {
                    tracing::warn!("could not remove {}, a killed run's staging folder: {e}", entry.path().display())
                }
            }
        }
    }
}

/// The process id in a shared staging folder's name, `partnerforge-<run_id>-stage-<pid>-<time>`.
fn stage_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("partnerforge-")?;
    let (_, tail) = rest.rsplit_once("-stage-")?;
    let (pid, time) = tail.split_once('-')?;
    if time.is_empty() || !time.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_staging_folders_name_gives_a_process_id() {
        assert_eq!(stage_pid("partnerforge-run-20261207T011838Z-27ac-stage-10156-18eed3edadf6b2ce"), Some(10156));
        assert_eq!(stage_pid("partnerforge-run-x-stage-12-"), None);
        assert_eq!(stage_pid("partnerforge-delta-targets-12-18eed3"), None);
        assert_eq!(stage_pid("other-run-x-stage-12-ab"), None);
    }

    #[test]
    fn a_dead_runs_folder_goes_and_a_live_ones_stays() {
        let base = std::env::temp_dir().join(format!("pf-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // A process that has exited: its id names no process (until the system reuses it).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = base.join(format!("partnerforge-run-a-stage-{dead}-1f"));
        let live = base.join(format!("partnerforge-run-b-stage-{}-2f", std::process::id()));
        let other = base.join("partnerforge-notes");
        for dir in [&gone, &live, &other] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("company.parquet"), b"rows").unwrap();
        }
        sweep(&base);
        assert!(!gone.exists() || Path::new(&format!("/proc/{dead}")).exists());
        assert!(live.exists() && other.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
