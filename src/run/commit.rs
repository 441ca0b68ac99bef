//! The commit: a snapshot's tables written into a generation folder of its own,
//! the targets assembled and scored from them, and the manifest written last and
//! create-only. One path for `run` and `rebuild`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context as _;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;

use crate::config::{LoadedPipeline, ProviderAccount};
use crate::fetch::LedgerRow;
use crate::store::Store;
use crate::store::lock::RunLock;
use crate::store::manifest::{self, Counts, FileEntry, Manifest, ModelRef, PipelineRef, Status, TierCount};
use crate::store::table::{TableBuilder, schema_fingerprint, to_parquet};
use crate::targets::{Book, Target};

use super::changes;
use super::stage::StagedTable;
use crate::transform::{self, BookRow, ModuleFiles};

/// The targets as the transform takes them: the book's fields, the ticker, and
/// the modules that failed for each domain.
pub(crate) fn book_rows<'a>(
    work: &[&'a Target],
    book: &'a Book,
    failed: &BTreeMap<String, BTreeSet<&'static str>>,
) -> Vec<BookRow<'a>> {
    work.iter()
        .map(|t| BookRow {
            target: t,
            ticker: book.tickers.get(&t.domain).map(String::as_str),
            modules_failed: failed.get(&t.domain).map(|m| m.iter().copied().collect::<Vec<_>>().join(",")),
            family: None,
        })
        .collect()
}

/// Stores a staged table's file in the snapshot's folder.
async fn put_staged(store: &Store, folder: &str, table: &str, staged: &StagedTable) -> anyhow::Result<FileEntry> {
    let path = format!("{folder}/{table}.parquet");
    let bytes = store.put_file(&path, &staged.path).await?;
    let schema = Some(staged.schema.clone());
    Ok(FileEntry { table: table.to_string(), path, bytes, rows: staged.rows as u64, schema, base: None })
}

/// Logs (at debug level) that a commit step is done, with the resident memory then.
pub(crate) fn step(name: &str) {
    tracing::debug!(rss_mib = super::resident_mib(), "commit: {name}");
}

/// Adds a scored slice's targets to the counts per tier of the model (best tier first).
fn count_tiers(tiers: &mut [TierCount], scored: &polars::prelude::DataFrame) -> anyhow::Result<()> {
    let tier_column = scored.column("icp_tier")?.i32()?;
    for tier in tier_column.iter().flatten() {
        if let Some(count) = tiers.iter_mut().find(|t| t.tier == tier) {
            count.targets += 1;
        }
    }
    Ok(())
}

pub(crate) fn ledger_batch(rows: &[LedgerRow], snapshot_id: &str) -> anyhow::Result<arrow::record_batch::RecordBatch> {
    Ok(TableBuilder::new()
        .text("run_id", rows.iter().map(|r| Some(&r.run_id)))
        .text("snapshot_id", rows.iter().map(|_| Some(snapshot_id)))
        .text("provider", rows.iter().map(|r| Some(r.provider.name())))
        .text("endpoint", rows.iter().map(|r| Some(r.endpoint)))
        .text("domain", rows.iter().map(|r| Some(&r.domain)))
        .text("modules", rows.iter().map(|r| Some(&r.modules)))
        .int("attempt", rows.iter().map(|r| Some(i64::from(r.attempt))))
        .int("page", rows.iter().map(|r| Some(i64::from(r.page))))
        .int("http_status", rows.iter().map(|r| r.http_status.map(i64::from)))
        .text("outcome", rows.iter().map(|r| Some(r.outcome.as_str())))
        .text("error", rows.iter().map(|r| r.error.as_ref()))
        .float("latency_ms", rows.iter().map(|r| Some(r.latency_ms)))
        .float("waited_ms", rows.iter().map(|r| Some(r.waited_ms)))
        .float("cost_usd", rows.iter().map(|r| Some(r.cost_usd)))
        .int("bytes", rows.iter().map(|r| Some(r.bytes as i64)))
        .timestamp_ms("called_at", rows.iter().map(|r| Some(r.called_at.timestamp_millis())))
        .finish()?)
}

/// A table of the snapshot being committed.
pub(crate) enum TableFile<'a> {
    /// Rows to write.
    Rows(RecordBatch),
    /// A file of another snapshot of the same date, copied as it is (a rebuild's raw bodies and ledger).
    Copy(&'a FileEntry),
    /// A file the run wrote to its stage as it went.
    Staged(&'a StagedTable),
}

/// The tables the targets table is assembled from, and the ones changes are observed in.
const READ_BACK: [&str; 14] = [
    "company",
    "related_domains",
    "financial_history",
    "tech_spend",
    "traffic",
    "traffic_sources",
    "financials",
    "hiring",
    "tech_stack",
    "executives",
    "stock",
    "job_postings",
    "trigger_events",
    "fetches",
];

/// What the manifest says beyond the files, the generation and the scores.
pub(crate) struct Draft {
    pub date: String,
    pub run_id: String,
    pub status: Status,
    pub previous_snapshot: Option<String>,
    pub carried_from: Option<String>,
    pub rebuilt_from: Option<u32>,
    pub providers: ProviderAccount,
    /// Everything but `targets` and `tiers`, which come from the scored table.
    pub counts: Counts,
    /// The snapshot whose unchanged targets rows this commit may carry forward (a run's
    /// previous snapshot); `None` computes every row (`rebuild`).
    pub reuse_from: Option<Manifest>,
    /// The book's domains whose module rows may differ from `reuse_from`'s (sorted; see
    /// [`transform::Reuse::touched`]); `None`: not known, every row is joined.
    pub touched: Option<Vec<String>>,
    /// The book's domains the run found running Algolia (their staged tech spend says so).
    pub not_targets: BTreeSet<String>,
}

/// The stored targets and their inputs of `from`, when it has both (a snapshot an
/// earlier build wrote has no `target_inputs`: every row is computed then), and the path
/// of the whole targets file a table carried by reference from them refers to.
async fn reuse_from(
    store: &Store,
    from: &Manifest,
    date: &str,
    by_reference: bool,
    touched: Option<Vec<String>>,
) -> anyhow::Result<Option<(transform::Reuse, String)>> {
    let (Some(targets), Some(inputs)) = (from.file("targets"), from.file("target_inputs")) else { return Ok(None) };
    let base = match &targets.base {
        Some(path) => Some(store.get(store.checked_base(from, path)?).await?),
        None => None,
    };
    let reuse = transform::Reuse {
        targets: store.get(&targets.path).await?,
        base,
        inputs: store.get(&inputs.path).await?,
        same_day: from.date == date,
        by_reference,
        touched,
    };
    Ok(Some((reuse, targets.base.clone().unwrap_or_else(|| targets.path.clone()))))
}

/// The named columns (`domain` among them) of a committed snapshot's targets table, whole
/// or stored by reference, in domain order (`None`: it has no targets table).
pub(crate) async fn stored_targets(
    store: &Store,
    manifest: &Manifest,
    columns: &[&str],
) -> anyhow::Result<Option<polars::prelude::DataFrame>> {
    let Some(entry) = manifest.file("targets") else { return Ok(None) };
    let own = store.get(&entry.path).await?;
    let all = transform::changes::DomainRange::all();
    let frame = match (&entry.base, manifest.file("target_inputs")) {
        (Some(base), Some(inputs)) => {
            let (base, inputs) =
                (store.get(store.checked_base(manifest, base)?).await?, store.get(&inputs.path).await?);
            let base = transform::Base { targets: &base, inputs: &inputs };
            transform::read_targets(&own, Some(base), columns, &manifest.snapshot_id, &all)
        }
        (Some(base), None) => {
            anyhow::bail!("{}: its targets refer to {base}, but it has no target_inputs table", entry.path)
        }
        (None, _) => transform::read_targets(&own, None, columns, &manifest.snapshot_id, &all),
    };
    Ok(Some(frame.with_context(|| format!("reading the targets table {}", entry.path))?))
}

/// Writes the tables into a generation folder claimed for this commit, assembles
/// and scores the targets from them, and commits the manifest. With `fence`, the
/// run's lock is renewed right before the commit: a run whose lock was broken
/// commits nothing.
pub(crate) async fn commit(
    store: &Store,
    pipeline: &LoadedPipeline,
    draft: Draft,
    tables: Vec<(&'static str, TableFile<'_>)>,
    book_rows: &[BookRow<'_>],
    fence: Option<&RunLock>,
) -> anyhow::Result<Manifest> {
    let date = &draft.date;
    let generation = store.claim_generation(date, &draft.run_id).await?;
    let folder = manifest::folder(date, generation);
    let mut files: Vec<FileEntry> = Vec::new();
    let mut module_bytes: HashMap<&str, Bytes> = HashMap::new();
    for (table, file) in tables {
        let entry = match file {
            TableFile::Rows(batch) => {
                let bytes = to_parquet(&batch)?;
                module_bytes.insert(table, bytes.clone());
                let mut entry = store.put_table(&folder, table, bytes, batch.num_rows()).await?;
                entry.schema = Some(schema_fingerprint(&batch.schema()));
                entry
            }
            TableFile::Copy(original) => {
                let bytes = store.get(&original.path).await?;
                module_bytes.insert(table, bytes.clone());
                let mut entry = store.put_table(&folder, table, bytes, original.rows as usize).await?;
                entry.schema = original.schema.clone();
                entry
            }
            TableFile::Staged(staged) => {
                // Only the tables the targets are assembled from are read back; the rest go up from disk.
                if READ_BACK.contains(&table) {
                    let bytes = std::fs::read(&staged.path)
                        .with_context(|| format!("reading the staged {table} table {}", staged.path.display()))?;
                    module_bytes.insert(table, Bytes::from(bytes));
                }
                put_staged(store, &folder, table, staged).await?
            }
        };
        files.push(entry);
    }
    step("module tables stored");
    // Families, from the relationships: the book's members point to their primary. The
    // table goes to the store a chunk of rows at a time; the scoring keeps the memberships.
    let of_book = {
        let related = module_bytes.get("related_domains").cloned().unwrap_or_default();
        let book: BTreeSet<&str> = book_rows.iter().map(|r| r.target.domain.as_str()).collect();
        let visits = transform::families::visits(&module_bytes.get("traffic").cloned().unwrap_or_default())?;
        // Staged a chunk of rows at a time (a row group each), then stored.
        let mut stage = super::stage::Stage::new(store, &draft.run_id)?;
        stage.append("families", transform::families::batch(&[], date)?)?;
        let of_book = transform::families::group_table(
            &related,
            &pipeline.pipeline.families.identifiers,
            &book,
            &visits,
            &mut |chunk| Ok(stage.append("families", transform::families::batch(chunk, date)?)?),
        )?;
        for (table, staged) in stage.finish()? {
            files.push(put_staged(store, &folder, table, &staged).await?);
        }
        of_book
    };
    // Nothing past the families reads the relationships.
    module_bytes.remove("related_domains");
    // Renames: the previous snapshot's, confirmed or extended by this one's answers.
    let previous = match &draft.previous_snapshot {
        Some(id) => store.snapshots().await?.into_iter().find(|m| &m.snapshot_id == id),
        None => None,
    };
    let renames = {
        let before = match previous.as_ref().and_then(|m| m.file("renames")) {
            Some(entry) => transform::renames::read(&store.get(&entry.path).await?)?,
            None => Vec::new(),
        };
        let company = module_bytes.get("company").cloned().unwrap_or_default();
        let (moves, live) = transform::renames::detected(&company)?;
        let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").with_context(|| format!("date {date:?}"))?;
        let rows = transform::renames::merge(before, &moves, &live, day);
        for r in rows.iter().filter(|r| r.first_seen == day) {
            tracing::info!(
                "{} has moved to {} (BuiltWith answers for it): the account is looked up as {} from the next run",
                r.domain,
                r.renamed_to,
                r.renamed_to
            );
        }
        let batch = transform::renames::batch(&rows, date)?;
        let bytes = to_parquet(&batch)?;
        let mut entry = store.put_table(&folder, "renames", bytes.clone(), batch.num_rows()).await?;
        entry.schema = Some(schema_fingerprint(&batch.schema()));
        files.push(entry);
        bytes
    };
    step("families and renames written");
    // The rows assembled: the book's, with their families. Domains found running Algolia are
    // not targets: the join drops them by their tech spend. Left out here, a night need not
    // join them to find that again (they are never in `target_inputs`); change tracking
    // still follows them.
    let scored_rows: Vec<BookRow> = book_rows
        .iter()
        .filter(|r| !draft.not_targets.contains(&r.target.domain))
        .map(|r| BookRow { family: of_book.get(&r.target.domain).cloned(), ..r.clone() })
        .collect();
    drop(of_book);
    // Scored a slice of domains at a time, each slice a row group of a local file, then stored.
    let model = &pipeline.model;
    let mut tiers: Vec<TierCount> =
        model.tiers.iter().map(|t| TierCount { tier: t.tier, name: t.name.clone(), targets: 0 }).collect();
    let run = &pipeline.pipeline.run;
    let by_reference = book_rows.len() >= run.targets_by_reference_rows;
    let (reuse, base_path) = match &draft.reuse_from {
        Some(from) => reuse_from(store, from, date, by_reference, draft.touched).await?.unzip(),
        None => (None, None),
    };
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let scratch = |table: &str| {
        std::env::temp_dir().join(format!("partnerforge-{table}-{}-{nanos:x}.parquet", std::process::id()))
    };
    let (local, local_inputs) = (scratch("targets"), scratch("target-inputs"));
    let (written, reused, referenced) = {
        let mut writer = transform::SliceWriter::new(&local).one_row_per_domain();
        let mut inputs_writer = transform::SliceWriter::new(&local_inputs).one_row_per_domain();
        let mut counted: anyhow::Result<()> = Ok(());
        let (mut reused, mut referenced) = (0, 0);
        let signals = pipeline.signals.as_ref();
        let assembled = transform::assemble_in_slices(
            &scored_rows,
            &ModuleFiles::from_tables(|t| module_bytes.get(t).cloned()),
            model,
            signals,
            date,
            transform::Slicing::of(&pipeline.pipeline.run),
            reuse.as_ref(),
            |slice| {
                if counted.is_ok() {
                    counted = count_tiers(&mut tiers, &slice.targets);
                }
                reused += slice.reused;
                referenced += slice.referenced;
                writer.write(&slice.targets)?;
                inputs_writer.write(&slice.inputs)
            },
        )
        .context("assembling and scoring the targets table");
        let finished = assembled.and_then(|()| {
            counted?;
            let rows = writer.rows;
            writer.finish()?;
            inputs_writer.finish()?;
            Ok(rows)
        });
        if finished.is_err() {
            let _ = std::fs::remove_file(&local_inputs);
            let _ = std::fs::remove_file(&local);
        }
        (finished?, reused, referenced)
    };
    step("targets scored");
    let rows = written + referenced;
    // A table carried by reference keeps its base (the previous table's base, or the
    // previous table when that was whole) until its own rows pass the share; then, and on
    // every night that carries nothing by reference, the table is written whole.
    let carried_any = reuse.is_some();
    let mut base = match (reuse, base_path) {
        (Some(reuse), Some(path)) if referenced > 0 => Some((path, reuse.base.unwrap_or(reuse.targets))),
        _ => None,
    };
    // The night's inputs (every domain of its table), read once for whatever reads the base.
    let inputs = match &base {
        Some(_) => match std::fs::read(&local_inputs) {
            Ok(bytes) => Some(Bytes::from(bytes)),
            Err(e) => {
                let _ = std::fs::remove_file(&local_inputs);
                let _ = std::fs::remove_file(&local);
                return Err(anyhow::Error::from(e).context(format!("reading back {}", local_inputs.display())));
            }
        },
        None => None,
    };
    if let (Some((path, bytes)), Some(inputs)) =
        (base.as_ref().filter(|_| written as f64 > run.targets_rewrite_share * rows as f64), &inputs)
    {
        let rewritten = (|| -> anyhow::Result<()> {
            let own = Bytes::from(std::fs::read(&local)?);
            let whole = scratch("targets-whole");
            let base = transform::Base { targets: bytes, inputs };
            let n = transform::write_whole(&own, base, date, run.score_slice_rows, &whole)?;
            anyhow::ensure!(n == rows, "writing the targets whole from {path}: {n} rows, {rows} expected");
            std::fs::rename(&whole, &local)?;
            Ok(())
        })();
        if let Err(e) = rewritten {
            let _ = std::fs::remove_file(&local_inputs);
            let _ = std::fs::remove_file(&local);
            return Err(e.context("writing the targets table whole"));
        }
        tracing::info!(
            "targets: {written} of {rows} rows changed since {path} (more than {:.0} %): the table is written whole",
            run.targets_rewrite_share * 100.0
        );
        base = None;
    }
    if carried_any {
        // Rows carried by reference stay so only when the table is not written whole.
        let by_reference = if base.is_some() { referenced } else { 0 };
        tracing::info!(
            computed = rows - reused,
            carried = reused,
            by_reference,
            "targets: {} rows computed, {reused} carried forward unchanged (same inputs){}",
            rows - reused,
            match by_reference {
                0 => String::new(),
                n => format!(", {n} of them by reference"),
            }
        );
    }
    let written = if base.is_some() { written } else { rows };
    let inputs_path = format!("{folder}/target_inputs.parquet");
    let stored = store.put_file(&inputs_path, &local_inputs).await;
    let _ = std::fs::remove_file(&local_inputs);
    if stored.is_err() {
        let _ = std::fs::remove_file(&local);
    }
    let inputs_size = stored?;
    let path = format!("{folder}/targets.parquet");
    // Read before it is stored: a local store moves the file into place.
    let targets = std::fs::read(&local);
    let stored = store.put_file(&path, &local).await;
    let _ = std::fs::remove_file(&local);
    let size = stored?;
    let base_path = base.as_ref().map(|(path, _)| path.clone());
    files.push(FileEntry {
        table: "targets".into(),
        path,
        bytes: size,
        rows: written as u64,
        schema: None,
        base: base_path,
    });
    files.push(FileEntry {
        table: "target_inputs".into(),
        path: inputs_path,
        bytes: inputs_size,
        rows: rows as u64,
        schema: None,
        base: None,
    });
    // The book's domains, sorted: ranges of them below, and change tracking's.
    let mut book_domains: Vec<&str> = book_rows.iter().map(|r| r.target.domain.as_str()).collect();
    book_domains.sort_unstable();
    // A table stored by reference: what change tracking reads of it, from its own rows and
    // its base's, a range of the book at a time (a part of the scoring's size), so that
    // memory follows the range: a 10M book's tracked columns whole held 2-3 GB.
    let targets = match (targets, &base, &inputs) {
        (Ok(own), Some((base_path, base)), Some(inputs)) => {
            let base = transform::Base { targets: base, inputs };
            let tracked = scratch("tracked");
            let written = transform::write_targets(
                &Bytes::from(own),
                Some(base),
                &transform::TRACKED_TARGET_COLUMNS,
                date,
                &book_domains,
                run.score_part_rows,
                &tracked,
            )
            .with_context(|| format!("reading the targets table {folder}/targets.parquet with its base {base_path}"));
            let bytes = written.and_then(|written| {
                anyhow::ensure!(
                    written == rows,
                    "the targets table {folder}/targets.parquet with its base {base_path}: {written} rows, {rows} expected"
                );
                Ok(std::fs::read(&tracked)?)
            });
            let _ = std::fs::remove_file(&tracked);
            Ok(bytes?)
        }
        (targets, _, _) => targets,
    };
    drop(base);
    // The slices counted their own rows' tiers; rows carried by reference (kept so, or
    // written whole since) are counted from the table.
    if referenced > 0 {
        let bytes = targets.as_ref().map_err(|e| anyhow::anyhow!("reading back the targets table: {e}"))?;
        let table = transform::read_parquet(Bytes::from(bytes.clone()), &["icp_tier"])?.collect()?;
        tiers.iter_mut().for_each(|t| t.targets = 0);
        count_tiers(&mut tiers, &table)?;
    }
    let mut change_counts = BTreeMap::new();
    let mut alerts_matched = 0;
    if pipeline.changes.is_some() {
        let targets = targets.context("reading back the targets table")?;
        let mut observed: transform::changes::SnapshotFiles =
            module_bytes.drain().map(|(t, b)| (t.to_string(), b)).collect();
        observed.insert("targets".into(), Bytes::from(targets));
        observed.insert("renames".into(), renames);
        let (entries, counts, matched) =
            changes::commit_changes(store, &folder, date, previous.as_ref(), observed, &book_domains, pipeline).await?;
        step("changes tracked");
        files.extend(entries);
        change_counts = counts;
        alerts_matched = matched;
    }
    let p = &pipeline.pipeline;
    let manifest = Manifest {
        schema_version: manifest::SCHEMA_VERSION,
        snapshot_id: date.clone(),
        date: date.clone(),
        generation,
        run_id: draft.run_id,
        created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        status: draft.status,
        previous_snapshot: draft.previous_snapshot,
        carried_from: draft.carried_from,
        rebuilt_from: draft.rebuilt_from,
        pipeline: PipelineRef { name: p.name.clone(), version: p.version, sha256: pipeline.sha256.clone() },
        scoring_model: ModelRef { name: model.name.clone(), version: model.version },
        providers: draft.providers,
        spend_recorded: true,
        files,
        counts: Counts {
            targets: rows as u64,
            tiers,
            changes: change_counts,
            alerts: alerts_matched,
            targets_reused: reused as u64,
            ..draft.counts
        },
    };
    if let Some(lock) = fence
        && !store.heartbeat(lock).await?
    {
        anyhow::bail!(
            "run {}: its lock was broken by another run while it ran, so it commits nothing (its files stay in {folder} for gc)",
            manifest.run_id
        );
    }
    store.commit(&manifest).await?;
    step("manifest committed");
    // The snapshot is committed; its Delta versions follow. A failure here loses nothing
    // (the next publish catches up), so it is reported, not fatal.
    match crate::store::delta::publish(store).await {
        Ok(versions) => {
            for v in versions {
                tracing::debug!(table = %v.table, version = v.version, added = v.added, removed = v.removed, "delta: published");
            }
        }
        Err(e) => tracing::warn!(
            "delta: the snapshot is committed, its Delta tables are not yet updated (the next publish catches up): {e}"
        ),
    }
    step("delta tables published");
    Ok(manifest)
}
