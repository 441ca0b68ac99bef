//! `partnerforge rebuild --snapshot DATE`: recomputes every derived table of a
//! snapshot — normalized modules, targets, scores — from the raw provider
//! bodies stored with it, without any provider call, and commits the result as
//! the date's next generation. This is how a parser fix or a new scoring model
//! reaches history.
//!
//! For each call a module would make, the last body stored for it (its final
//! answer) is parsed again; a module whose calls have no stored answer, or one
//! that no longer parses, stays empty for that domain. Rebuilt rows carry the
//! original snapshot's time as `fetched_at`; the ledger is the original's, copied.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, bail};
use arrow::array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::fetch::{Call, Reply};
use crate::modules::{self, FetchRow, Parsed, REGISTRY, RawRow, Tables};
use crate::run::{Draft, Selection, TableFile, book_rows, commit, prepare, subject};
use crate::store::lock::RunLock;
use crate::store::manifest::{Counts, Manifest};

pub struct RebuildReport {
    pub manifest: Manifest,
    pub reparsed: usize,
    /// Alerts of the rebuilt snapshot already delivered are not sent again.
    pub delivery: Option<crate::alerts::DeliveryReport>,
}

/// A text column of a stored table's batch.
fn text_column(batch: &RecordBatch, name: &str) -> anyhow::Result<StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        .with_context(|| format!("no text column {name}"))
}

/// The stored bodies of a snapshot, per (provider, endpoint, domain): every one kept
/// (a module carried forward keeps the body it was parsed from beside a newer body of the
/// same call that another module fetched).
type Bodies = HashMap<(String, String, String), Vec<RawRow>>;

fn stored_bodies(bytes: Bytes) -> anyhow::Result<Bodies> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out: Bodies = HashMap::new();
    for batch in reader {
        let batch = batch?;
        let text = |name: &str| text_column(&batch, name);
        let (providers, endpoints, domains, modules, bodies) =
            (text("provider")?, text("endpoint")?, text("domain")?, text("modules")?, text("body")?);
        let statuses =
            batch.column_by_name("http_status").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
        // Bodies stored before paged answers have no page: each is the whole answer.
        let pages = batch.column_by_name("page").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
        let times = batch
            .column_by_name("fetched_at")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>().cloned());
        for i in 0..batch.num_rows() {
            let key = (providers.value(i).to_string(), endpoints.value(i).to_string(), domains.value(i).to_string());
            out.entry(key).or_default().push(RawRow {
                provider: "",
                endpoint: "",
                domain: domains.value(i).to_string(),
                modules: modules.value(i).to_string(),
                http_status: statuses.as_ref().filter(|s| !s.is_null(i)).map(|s| s.value(i) as u16),
                fetched_at_ms: times.as_ref().map(|t| t.value(i)).unwrap_or(0),
                body: bodies.value(i).to_string(),
                page: pages
                    .as_ref()
                    .filter(|p| !p.is_null(i))
                    .map_or(1, |p| p.value(i).clamp(1, i64::from(u32::MAX)) as u32),
            });
        }
    }
    Ok(out)
}

/// The reply `module` was parsed from: the latest body of those that fed it (the final
/// answer of its fetch), else the latest of the call's (bodies stored before they named
/// their modules). A paged answer is its pages' latest bodies, joined as the call path
/// joins them.
fn body_for(bodies: &Bodies, key: &(String, String, String), module: &str) -> Option<Reply> {
    let all = bodies.get(key)?;
    let fed: Vec<&RawRow> = all.iter().filter(|r| r.modules.split(',').any(|m| m == module)).collect();
    let rows: Vec<&RawRow> = if fed.is_empty() { all.iter().collect() } else { fed };
    let latest = rows.iter().copied().max_by_key(|r| (r.fetched_at_ms, r.page))?;
    let reply = |status, body: Bytes| Reply {
        status,
        body,
        latency: std::time::Duration::ZERO,
        error: None,
        retry_after: None,
        called_at: chrono::DateTime::from_timestamp_millis(latest.fetched_at_ms).unwrap_or_default(),
    };
    let success = |r: &RawRow| r.http_status.is_some_and(|s| (200..300).contains(&s));
    if latest.page <= 1 || !success(latest) {
        return Some(reply(latest.http_status, Bytes::from(latest.body.clone())));
    }
    // Every page up to the last, each its latest answer; a page missing is no answer.
    let mut pages = Vec::new();
    for page in 1..=latest.page {
        let row = rows.iter().filter(|r| r.page == page && success(r)).max_by_key(|r| r.fetched_at_ms)?;
        pages.push(row.body.as_bytes());
    }
    Some(reply(latest.http_status, crate::fetch::join_pages(pages)))
}

/// When each (module, domain) of a snapshot was fetched: `fetched_on` (the run
/// date) and `fetched_at` (ms), from its `fetches` table. Carried results keep
/// the dates of the run that fetched them.
type FetchTimes = HashMap<(String, String), (chrono::NaiveDate, i64)>;

fn fetch_times(bytes: Bytes) -> anyhow::Result<FetchTimes> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = HashMap::new();
    for batch in reader {
        let batch = batch?;
        let text = |name: &str| text_column(&batch, name);
        let (modules, domains) = (text("module")?, text("domain")?);
        let dates = crate::store::table::date_values(&batch, "fetched_on").context("fetched_on")?;
        let times = batch
            .column_by_name("fetched_at")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>().cloned())
            .context("fetched_at")?;
        for (i, date) in dates.into_iter().enumerate() {
            let Some(date) = date else { continue };
            out.insert((modules.value(i).to_string(), domains.value(i).to_string()), (date, times.value(i)));
        }
    }
    Ok(out)
}

/// Gives every row of a rebuilt table the `fetched_at` of the fetch it was parsed
/// from (the original snapshot's, carried results included), so a rebuilt snapshot
/// says when its data was fetched exactly as the original did.
fn restamp(table: &str, batch: RecordBatch, times: &FetchTimes) -> anyhow::Result<RecordBatch> {
    let (Ok(at), Some(domains)) = (
        batch.schema().index_of("fetched_at"),
        batch.column_by_name("domain").and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned()),
    ) else {
        return Ok(batch);
    };
    let writers: Vec<&str> = REGISTRY.iter().filter(|m| m.tables.contains(&table)).map(|m| m.id).collect();
    let modules = batch.column_by_name("module").and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
    let Some(old) = batch.column(at).as_any().downcast_ref::<TimestampMillisecondArray>().cloned() else {
        return Ok(batch);
    };
    let stamped: TimestampMillisecondArray = (0..batch.num_rows())
        .map(|i| {
            let domain = domains.value(i).to_string();
            let found = match &modules {
                Some(m) => times.get(&(m.value(i).to_string(), domain)),
                None => writers.iter().find_map(|w| times.get(&(w.to_string(), domain.clone()))),
            };
            Some(found.map(|(_, ms)| *ms).unwrap_or_else(|| old.value(i)))
        })
        .collect::<TimestampMillisecondArray>()
        .with_timezone_opt(old.timezone());
    let mut columns = batch.columns().to_vec();
    columns[at] = std::sync::Arc::new(stamped);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

pub async fn rebuild(selection: Selection) -> anyhow::Result<RebuildReport> {
    let prepared = prepare(&selection).await?;
    let (store, pipeline) = (&prepared.store, &prepared.pipeline);
    let date = prepared.date.clone();
    let Some(original) = prepared.previous.iter().find(|m| m.date == date).cloned() else {
        bail!("store {} has no snapshot for {date} to rebuild", store.url());
    };
    let raw_file = original.file("raw_responses").context("the snapshot keeps no raw bodies")?;
    let bodies = stored_bodies(store.get(&raw_file.path).await?)?;
    let times = match original.file("fetches") {
        Some(entry) => fetch_times(store.get(&entry.path).await?)?,
        None => FetchTimes::new(),
    };
    let ttl = pipeline.pipeline.run.lock_ttl();
    let run_id = format!("rebuild-{}", Utc::now().format("%Y%m%dT%H%M%SZ"));
    let (lock, _) = store.acquire_lock(&pipeline.pipeline.name, &run_id, ttl, false).await?;
    // The lease is renewed as a run's is; the fence at the commit refuses a lease that lapsed.
    let lapsed = tokio_util::sync::CancellationToken::new();
    let heartbeat = tokio::spawn(crate::run::renew(store.clone(), lock.clone(), ttl, lapsed));
    let result = rebuild_locked(&prepared, &original, &bodies, &times, &run_id, &lock).await;
    heartbeat.abort();
    store.release_lock(lock).await?;
    let mut report = result?;
    if let Some(rules) = &pipeline.alerts {
        report.delivery = Some(crate::run::deliver_after_commit(store, rules, &run_id).await);
    }
    Ok(report)
}

async fn rebuild_locked(
    prepared: &crate::run::Prepared,
    original: &Manifest,
    bodies: &Bodies,
    times: &FetchTimes,
    run_id: &str,
    lock: &RunLock,
) -> anyhow::Result<RebuildReport> {
    let (store, book, pipeline) = (&prepared.store, &prepared.book, &prepared.pipeline);
    let date = &original.date;
    let fetched_at_ms =
        chrono::DateTime::parse_from_rfc3339(&original.created_at).map(|t| t.timestamp_millis()).unwrap_or(0);
    let mut context = prepared.context(date.parse()?, fetched_at_ms);
    // The free pre-check's verdicts as the run that fetched them made them: against the
    // lookups the snapshot before it knew.
    let before = crate::freshness::Carry {
        from: prepared.previous.iter().rev().find(|m| m.date < *date).cloned(),
        ..Default::default()
    };
    context.precheck.lookups = crate::freshness::last_lookups(store, &prepared.previous, &before).await?;
    let in_snapshot: BTreeSet<&str> = bodies.keys().map(|(_, _, d)| d.as_str()).collect();
    let work: Vec<_> = prepared.work().into_iter().filter(|t| in_snapshot.contains(t.domain.as_str())).collect();

    let mut tables = Tables::default();
    let mut failed: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut reparsed = 0;
    for target in &work {
        let subject = subject(book, target);
        for module in REGISTRY {
            let calls: Vec<Call> = (module.calls)(&context, &subject);
            if calls.is_empty() {
                continue;
            }
            let mut replies = Vec::new();
            for call in &calls {
                let key = (call.provider.name().to_string(), call.endpoint.to_string(), call.domain.clone());
                let Some(reply) = body_for(bodies, &key, module.id) else { break };
                reparsed += 1;
                match modules::parse(&context, call, &reply) {
                    Ok(parsed) => replies.push(parsed),
                    Err(_) => break,
                }
            }
            if replies.len() < calls.len() {
                // Never fetched in that snapshot (a dependency failed, a fallback not needed), or no longer readable.
                if calls.iter().any(|c| {
                    bodies.contains_key(&(c.provider.name().to_string(), c.endpoint.to_string(), c.domain.clone()))
                }) {
                    failed.entry(target.domain.clone()).or_default().insert(module.id);
                }
                continue;
            }
            let refs: Vec<&Parsed> = replies.iter().collect();
            (module.normalize)(&context, &subject, &refs, &mut tables);
            let outcome = if refs.iter().all(|r| modules::is_no_data(r)) { "no_data" } else { "ok" };
            let fetched_on = times.get(&(module.id.to_string(), target.domain.clone())).map(|(on, _)| *on);
            tables.fetches.push(FetchRow {
                module: module.id,
                domain: target.domain.clone(),
                fetched_on: fetched_on.unwrap_or(context.run_date),
                outcome,
            });
        }
    }

    let mut files = Vec::new();
    for (table, batch) in tables.batches(fetched_at_ms, date)? {
        if table != "raw_responses" {
            files.push((table, TableFile::Rows(restamp(table, batch, times)?)));
        }
    }
    // The original's bodies and ledger are copied unchanged: no call was made.
    for table in ["raw_responses", "api_calls"] {
        if let Some(entry) = original.file(table) {
            files.push((table, TableFile::Copy(entry)));
        }
    }
    let draft = Draft {
        date: date.clone(),
        run_id: run_id.to_string(),
        status: original.status,
        previous_snapshot: original.previous_snapshot.clone(),
        carried_from: original.carried_from.clone(),
        rebuilt_from: Some(original.generation),
        providers: original.providers,
        counts: Counts { calls: 0, spend_usd: 0.0, targets_reused: 0, ..original.counts.clone() },
        // A rebuild computes every row from the raw bodies: the full path.
        reuse_from: None,
        touched: None,
        not_targets: Default::default(),
    };
    let manifest = commit(store, pipeline, draft, files, &book_rows(&work, book, &failed), Some(lock)).await?;
    Ok(RebuildReport { manifest, reparsed, delivery: None })
}
