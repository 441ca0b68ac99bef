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
    /// Held while the stage lives: a folder whose lock can be taken is no run's.
    _lock: File,
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
            sweep(&base, SWEEP_MIN_AGE);
            base.join(format!("partnerforge-{run_id}-{name}"))
        };
        let dir = match (std::env::var_os("PARTNERFORGE_STAGE"), store.local_path(&format!("runs/{run_id}"))) {
            (Some(base), _) => shared(PathBuf::from(base)),
            (None, Some(run_folder)) => run_folder.join(name),
            (None, None) => shared(std::env::temp_dir()),
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        lock.lock().map_err(|e| io(&lock_path, e))?;
        Ok(Self { dir, _lock: lock, writers: BTreeMap::new(), order: Vec::new() })
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

/// The lock file a live stage holds (an exclusive `flock`).
const LOCK_FILE: &str = ".lock";
/// A folder younger than this is left alone (its run may not hold its lock yet).
const SWEEP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the staging folders killed runs left in a shared folder (the temporary one,
/// `$PARTNERFORGE_STAGE`): `partnerforge-<run_id>-stage-<pid>-<time>` whose lock no process
/// holds (a live run holds its folder's lock, in any container of the host; a folder
/// from before the lock goes when its process id names no process). A resumed run
/// stages afresh (its calls come from the journal), so they are of no use, and a large
/// book's are gigabytes. Folders younger than `min_age` are left alone.
fn sweep(base: &Path, min_age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stage_pid) else { continue };
        let path = entry.path();
        let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || old.is_none_or(|age| age < min_age) {
            continue;
        }
        // Held while the folder goes, so that no run takes it meanwhile.
        let lock = File::open(path.join(LOCK_FILE));
        let abandoned = match &lock {
            Ok(file) => file.try_lock().is_ok(),
            Err(_) => {
                Path::new("/proc/self").exists()
                    && pid != std::process::id()
                    && !Path::new(&format!("/proc/{pid}")).exists()
            }
        };
        if abandoned {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!("removed {}, the staging folder of a run that did not finish", path.display()),
                Err(e) => tracing::warn!("could not remove {}, a killed run's staging folder: {e}", path.display()),
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
    fn an_abandoned_folder_goes_and_a_live_ones_stays() {
        let base = std::env::temp_dir().join(format!("pf-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let folder = |name: &str| {
            let dir = base.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("company.parquet"), b"rows").unwrap();
            dir
        };
        // A run's folder whose lock nobody holds, one whose lock is held (by this process,
        // through its own open file, as a live run's stage holds it), and another folder.
        let abandoned = folder("partnerforge-run-a-stage-1-1f");
        std::fs::write(abandoned.join(LOCK_FILE), b"").unwrap();
        let live = folder("partnerforge-run-b-stage-2-2f");
        let held = File::create(live.join(LOCK_FILE)).unwrap();
        held.lock().unwrap();
        let other = folder("partnerforge-notes");
        sweep(&base, std::time::Duration::from_secs(3_600));
        assert!(abandoned.exists(), "a folder younger than the minimum age stays");
        sweep(&base, std::time::Duration::ZERO);
        assert!(!abandoned.exists());
        assert!(live.exists() && other.exists());
        drop(held);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_folder_from_before_the_lock_goes_when_its_process_is_gone() {
        let base = std::env::temp_dir().join(format!("pf-sweep-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = base.join(format!("partnerforge-run-a-stage-{dead}-1f"));
        let mine = base.join(format!("partnerforge-run-b-stage-{}-2f", std::process::id()));
        for dir in [&gone, &mine] {
            std::fs::create_dir_all(dir).unwrap();
        }
        sweep(&base, std::time::Duration::ZERO);
        // Unless the system gave the exited child's id to another process meanwhile.
        assert!(!gone.exists() || Path::new(&format!("/proc/{dead}")).exists());
        assert!(mine.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
