//! The change tables of a commit — `change_state` (what is tracked per domain,
//! field and item after this snapshot's observations) and `changes` (the events
//! against the previous snapshot) — and the same diff on demand between any two
//! committed snapshots (`partnerforge changes`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use arrow::record_batch::RecordBatch;
use polars::prelude::{IntoLazy, LazyFrame};

use crate::config::ScoringModel;
use crate::config::changes::{ChangeRules, significance_rank};
use crate::store::manifest::{FileEntry, Manifest};
use crate::store::table::{TableBuilder, schema_fingerprint, to_parquet};
use crate::store::{Store, StoreError};
use crate::transform;
use crate::transform::changes::{Event, SnapshotFiles};

/// The `changes` table of a list of events.
pub fn changes_batch(events: &[Event]) -> Result<RecordBatch, StoreError> {
    let e = events;
    TableBuilder::new()
        .text("event_id", e.iter().map(|r| Some(&r.event_id)))
        .text("domain", e.iter().map(|r| Some(&r.domain)))
        .text("module", e.iter().map(|r| Some(&r.module)))
        .text("field", e.iter().map(|r| Some(&r.field)))
        .text("item", e.iter().map(|r| r.item.as_ref()))
        .text("change", e.iter().map(|r| Some(&r.change)))
        .text("old_value", e.iter().map(|r| r.old_value.as_ref()))
        .text("new_value", e.iter().map(|r| r.new_value.as_ref()))
        .text("category", e.iter().map(|r| Some(&r.category)))
        .text("significance", e.iter().map(|r| Some(&r.significance)))
        .text("summary", e.iter().map(|r| Some(&r.summary)))
        .text("algolia_relevance", e.iter().map(|r| Some(&r.algolia_relevance)))
        .text("rule", e.iter().map(|r| Some(&r.rule)))
        .text("from_snapshot", e.iter().map(|r| Some(&r.from_snapshot)))
        .text("to_snapshot", e.iter().map(|r| Some(&r.to_snapshot)))
        .text("old_source", e.iter().map(|r| r.old_source.as_ref()))
        .timestamp_ms("old_fetched_at", e.iter().map(|r| r.old_fetched_at))
        .text("new_source", e.iter().map(|r| r.new_source.as_ref()))
        .timestamp_ms("new_fetched_at", e.iter().map(|r| r.new_fetched_at))
        .text("evidence", e.iter().map(|r| Some(evidence(r))))
        .finish()
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Both sides' source and fetch time, as one readable line.
pub fn evidence(e: &Event) -> String {
    let side = |source: &Option<String>, at: Option<i64>| match source {
        Some(s) => format!("{s} fetched {}", when(at)),
        None => "not observed".to_string(),
    };
    format!("{} → {}", side(&e.old_source, e.old_fetched_at), side(&e.new_source, e.new_fetched_at))
}

/// Events as rows of named columns (every column of the `changes` table).
pub fn as_rows(events: &[Event]) -> crate::serve::QueryResult {
    use serde_json::Value;
    let text = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    let columns = [
        "event_id",
        "domain",
        "module",
        "field",
        "item",
        "change",
        "old_value",
        "new_value",
        "category",
        "significance",
        "summary",
        "algolia_relevance",
        "rule",
        "from_snapshot",
        "to_snapshot",
        "old_source",
        "old_fetched_at",
        "new_source",
        "new_fetched_at",
        "evidence",
    ];
    let rows = events
        .iter()
        .map(|e| {
            let s = |v: &str| Value::String(v.to_string());
            let at = |ms: Option<i64>| if ms.is_some() { Value::String(when(ms)) } else { Value::Null };
            vec![
                s(&e.event_id),
                s(&e.domain),
                s(&e.module),
                s(&e.field),
                text(&e.item),
                s(&e.change),
                text(&e.old_value),
                text(&e.new_value),
                s(&e.category),
                s(&e.significance),
                s(&e.summary),
                s(&e.algolia_relevance),
                s(&e.rule),
                s(&e.from_snapshot),
                s(&e.to_snapshot),
                text(&e.old_source),
                at(e.old_fetched_at),
                text(&e.new_source),
                at(e.new_fetched_at),
                s(&evidence(e)),
            ]
        })
        .collect();
    crate::serve::QueryResult { columns: columns.map(String::from).to_vec(), rows }
}

/// The tracked state a committed snapshot holds, if it tracks changes.
pub async fn stored_state(store: &Store, manifest: &Manifest) -> anyhow::Result<Option<LazyFrame>> {
    let Some(entry) = manifest.file("change_state") else { return Ok(None) };
    let bytes = store.get(&entry.path).await?;
    Ok(Some(transform::changes::read_state(&bytes).with_context(|| format!("reading {}", entry.path))?))
}

/// Events by significance, for the manifest's counts.
pub fn count(events: &[Event]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.significance.clone()).or_default() += 1;
    }
    counts
}

/// Computes and stores a snapshot's `change_state` and `changes` from its tables
/// and the previous snapshot's state. A store's first snapshot, or one after a
/// snapshot that tracked nothing, starts the tracking with no events.
pub(crate) async fn commit_changes(
    store: &Store,
    folder: &str,
    date: &str,
    previous: Option<&str>,
    files: &SnapshotFiles,
    rules: &ChangeRules,
    model: &ScoringModel,
) -> anyhow::Result<(Vec<FileEntry>, BTreeMap<String, u64>)> {
    let previous = match previous {
        Some(id) => store.snapshots().await?.into_iter().find(|m| m.snapshot_id == id),
        None => None,
    };
    let old = match &previous {
        Some(m) => stored_state(store, m).await?,
        None => None,
    };
    let observed = transform::changes::observations(files, date, &model.name).context("reading the observations")?;
    let base = match &old {
        Some(state) => state.clone(),
        None => transform::changes::empty_state()?,
    };
    let mut state = transform::changes::next_state(base, observed, rules)?.collect().context("tracking changes")?;
    let events = match (&old, &previous) {
        (Some(old), Some(m)) => {
            transform::changes::events(old.clone(), state.clone().lazy(), rules, &m.snapshot_id, date)?
        }
        _ => Vec::new(),
    };
    let mut entries = Vec::new();
    let rows = state.height();
    let bytes = transform::to_parquet(&mut state)?;
    entries.push(store.put_table(folder, "change_state", bytes, rows).await?);
    let batch = changes_batch(&events)?;
    let mut entry = store.put_table(folder, "changes", to_parquet(&batch)?, batch.num_rows()).await?;
    entry.schema = Some(schema_fingerprint(&batch.schema()));
    entries.push(entry);
    Ok((entries, count(&events)))
}

/// The events between two committed snapshots, by `rules`, at least
/// `min_significance`, for one domain if given.
pub async fn diff(
    store: &Store,
    from: &Manifest,
    to: &Manifest,
    rules: &ChangeRules,
    domain: Option<&str>,
    min_significance: Option<&str>,
) -> anyhow::Result<Vec<Event>> {
    let missing = |m: &Manifest| {
        anyhow::anyhow!(
            "snapshot {} tracks no changes (it was committed before change tracking, or without change rules): \
             rebuild it with `partnerforge rebuild --snapshot {}`",
            m.snapshot_id,
            m.date
        )
    };
    let old = stored_state(store, from).await?.ok_or_else(|| missing(from))?;
    let new = stored_state(store, to).await?.ok_or_else(|| missing(to))?;
    let (old, new) = match domain {
        Some(d) => {
            let only = |f: LazyFrame| f.filter(polars::prelude::col("domain").eq(polars::prelude::lit(d.to_string())));
            (only(old), only(new))
        }
        None => (old, new),
    };
    let mut events = transform::changes::events(old, new, rules, &from.snapshot_id, &to.snapshot_id)?;
    if let Some(min) = min_significance {
        let bar = significance_rank(min).context("unknown significance")?;
        events.retain(|e| significance_rank(&e.significance).is_some_and(|r| r <= bar));
    }
    Ok(events)
}
