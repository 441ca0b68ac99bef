//! The change tables of a commit — `change_state` (what is tracked per domain,
//! field and item after this snapshot's observations) and `changes` (the events
//! against the previous snapshot) — and the same diff on demand between any two
//! committed snapshots (`partnerforge changes`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use arrow::record_batch::RecordBatch;
use polars::prelude::IntoLazy;

use crate::config::alerts::AlertRules;
use crate::config::changes::{ChangeRules, significance_rank};
use crate::store::manifest::{FileEntry, Manifest};
use crate::store::table::{TableBuilder, schema_fingerprint, to_parquet};
use crate::store::{Store, StoreError};
use crate::transform;
use crate::transform::alerts::{Account, Alert};
use crate::transform::changes::{DomainRange, Event, SnapshotFiles};

/// The `changes` table of a list of events.
pub fn changes_batch(events: &[Event]) -> Result<RecordBatch, StoreError> {
    event_columns(TableBuilder::new(), events.iter()).finish()
}

/// The `alerts` table: one row per (person, event, rule), with the event's columns.
pub fn alerts_batch(alerts: &[Alert]) -> Result<RecordBatch, StoreError> {
    let a = alerts;
    let builder = TableBuilder::new()
        .text("alert_id", a.iter().map(|r| Some(&r.alert_id)))
        .text("person", a.iter().map(|r| Some(&r.user)))
        .text("name", a.iter().map(|r| Some(&r.name)))
        .text("role", a.iter().map(|r| Some(r.role)))
        .text("team", a.iter().map(|r| r.team.as_ref()))
        .text("alert_rule", a.iter().map(|r| Some(&r.rule)))
        .text("channels", a.iter().map(|r| Some(r.channels.join(","))))
        .text("frequency", a.iter().map(|r| Some(r.frequency)))
        .int("digest_hour", a.iter().map(|r| r.digest_hour.map(i64::from)))
        .text("time_zone", a.iter().map(|r| Some(&r.time_zone)));
    event_columns(builder, a.iter().map(|r| &r.event)).finish()
}

fn event_columns<'a>(builder: TableBuilder, events: impl Iterator<Item = &'a Event> + Clone) -> TableBuilder {
    let e = events;
    builder
        .text("event_id", e.clone().map(|r| Some(&r.event_id)))
        .text("domain", e.clone().map(|r| Some(&r.domain)))
        .text("module", e.clone().map(|r| Some(&r.module)))
        .text("field", e.clone().map(|r| Some(&r.field)))
        .text("item", e.clone().map(|r| r.item.as_ref()))
        .text("change", e.clone().map(|r| Some(&r.change)))
        .text("old_value", e.clone().map(|r| r.old_value.as_ref()))
        .text("new_value", e.clone().map(|r| r.new_value.as_ref()))
        .text("category", e.clone().map(|r| Some(&r.category)))
        .text("significance", e.clone().map(|r| Some(&r.significance)))
        .text("summary", e.clone().map(|r| Some(&r.summary)))
        .text("algolia_relevance", e.clone().map(|r| Some(&r.algolia_relevance)))
        .text("rule", e.clone().map(|r| Some(&r.rule)))
        .text("from_snapshot", e.clone().map(|r| Some(&r.from_snapshot)))
        .text("to_snapshot", e.clone().map(|r| Some(&r.to_snapshot)))
        .text("old_source", e.clone().map(|r| r.old_source.as_ref()))
        .timestamp_ms("old_fetched_at", e.clone().map(|r| r.old_fetched_at))
        .text("new_source", e.clone().map(|r| r.new_source.as_ref()))
        .timestamp_ms("new_fetched_at", e.clone().map(|r| r.new_fetched_at))
        .timestamp_ms("first_detected", e.clone().map(|r| r.first_detected))
        .text("evidence", e.map(|r| Some(evidence(r))))
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

/// The events as a reader scans them: significance, domain, category, summary, evidence.
pub fn summary_batch(events: &[Event]) -> Result<RecordBatch, StoreError> {
    let e = events;
    TableBuilder::new()
        .text("significance", e.iter().map(|r| Some(&r.significance)))
        .text("domain", e.iter().map(|r| Some(&r.domain)))
        .text("category", e.iter().map(|r| Some(&r.category)))
        .text("summary", e.iter().map(|r| Some(&r.summary)))
        .text("evidence", e.iter().map(|r| Some(evidence(r))))
        .finish()
}

/// The stored `change_state` of a committed snapshot, if it tracks changes.
pub async fn stored_state(store: &Store, manifest: &Manifest) -> anyhow::Result<Option<bytes::Bytes>> {
    let Some(entry) = manifest.file("change_state") else { return Ok(None) };
    Ok(Some(store.get(&entry.path).await?))
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
    previous: Option<&Manifest>,
    files: SnapshotFiles,
    book: &[&str],
    pipeline: &crate::config::LoadedPipeline,
) -> anyhow::Result<(Vec<FileEntry>, BTreeMap<String, u64>, u64)> {
    let Some(rules) = &pipeline.changes else { return Ok((Vec::new(), BTreeMap::new(), 0)) };
    let (model, alert_rules) = (&pipeline.model, pipeline.alerts.as_ref());
    let old = match previous.as_ref().and_then(|m| m.file("change_state")) {
        Some(entry) => Some(
            transform::changes::StateFile::new(store.get(&entry.path).await?)
                .with_context(|| format!("reading {}", entry.path))?,
        ),
        None => None,
    };
    // A renamed domain's tracked items continue under its new name (when the book has
    // moved on to it): no "left"/"entered" pair, one "renamed" event.
    let renamed = match (&old, files.get("renames")) {
        (Some(state), Some(renames)) => moved_state(&state.bytes, renames, book)?,
        _ => None,
    };
    // One range of domains at a time (the book's, in slices of the scoring's size), each a
    // row group of a local file: memory follows the slice, and the next night's reads of
    // a range skip the other row groups by their statistics.
    let slice_rows = pipeline.pipeline.run.change_slice_rows;
    let ranges = transform::changes::DomainRange::split(book.iter().copied(), slice_rows);
    // Each table is split by range once (the rows are in the order their calls finished).
    let parts = transform::parts::partition_by_range(&files, &transform::changes::OBSERVED, &[], &ranges)?;
    // Past the split only the targets are read again (for the alerts' accounts).
    let targets = files.get("targets").cloned();
    drop(files);
    super::commit::step(&format!("tables split into {} ranges of domains", ranges.len()));
    let local = |table: &str| {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        std::env::temp_dir().join(format!("partnerforge-{table}-{}-{nanos:x}.parquet", std::process::id()))
    };
    let (state_file, feed_file) = (local("state"), local("feed"));
    let mut writer = transform::SliceWriter::new(&state_file)
        .with_metadata(transform::changes::STATE_DIGEST, transform::changes::DIGEST_VERSION);
    // The change feed: the rows of both states of the domains whose items differ, so that
    // the diff of this snapshot and the previous one reads them alone (about 1 % of a night).
    let base_path = previous.and_then(|m| m.file("change_state")).map(|e| e.path.clone());
    let mut feed = base_path.as_deref().map(|path| {
        let writer = transform::SliceWriter::new(&feed_file).with_metadata(transform::changes::FEED_BASE, path);
        match &renamed {
            Some(moved) => writer.with_metadata(
                transform::changes::FEED_RENAMES,
                &serde_json::to_string(&moved.renames).unwrap_or_default(),
            ),
            None => writer,
        }
    });
    let mut events = Vec::new();
    let tracked: anyhow::Result<()> = (|| {
        for (r, range) in ranges.iter().enumerate() {
            let part = parts.load(r)?;
            let observed = transform::changes::observations(&part, date, &model.name, &DomainRange::all())
                .context("reading the observations")?;
            // Decoded once: the new state and the events both read it, several times over.
            // Its stored digests spare hashing its items again (a renamed domain's are
            // computed: its rows are moved under the new name).
            let mut base = match &old {
                Some(state) if renamed.is_none() => state.read(range)?,
                Some(state) => transform::changes::read_state(&state.bytes, range)?,
                None => transform::changes::empty_state()?,
            };
            if let Some(moved) = &renamed {
                base = moved.in_range(base, range)?;
            }
            let base = base.collect().context("reading the previous state")?;
            let columns = transform::changes::STATE_COLUMNS.map(polars::prelude::col);
            let state = transform::changes::next_state(base.clone().lazy().select(columns), observed, rules)?
                .sort(["domain"], polars::prelude::SortMultipleOptions::default())
                .collect()
                .context("tracking changes")?;
            let state = transform::changes::with_digests(state)?;
            if let (Some(feed), Some(m)) = (feed.as_mut(), &previous) {
                let (before, after) = transform::changes::differing(base, state.clone())?;
                events.extend(transform::changes::events(
                    before.clone().lazy(),
                    after.clone().lazy(),
                    rules,
                    &m.snapshot_id,
                    date,
                )?);
                feed.write(&transform::changes::feed_part(&before, &after)?)?;
            }
            writer.write(&transform::changes::state_for_storage(&state)?)?;
        }
        if let (Some(moved), Some(m)) = (&renamed, &previous) {
            events.extend(moved.events(&m.snapshot_id, date));
        }
        Ok(())
    })();
    let mut entries = Vec::new();
    let mut stored = tracked;
    for (table, writer, local) in [("change_state", Some(writer), &state_file), ("change_feed", feed, &feed_file)] {
        let Some(writer) = writer else { continue };
        stored = match stored {
            Ok(()) => stored_local(store, &format!("{folder}/{table}.parquet"), table, writer, local)
                .await
                .map(|entry| entries.push(entry)),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(local);
    }
    stored?;
    let batch = changes_batch(&events)?;
    let mut entry = store.put_table(folder, "changes", to_parquet(&batch)?, batch.num_rows()).await?;
    entry.schema = Some(schema_fingerprint(&batch.schema()));
    entries.push(entry);
    let mut matched = 0;
    if let Some(alert_rules) = alert_rules {
        let mut accounts = BTreeMap::new();
        let wanted: std::collections::BTreeSet<&str> = events.iter().map(|e| e.domain.as_str()).collect();
        // The new targets first; a domain that left them keeps its last known place.
        if let Some(bytes) = &targets {
            read_accounts(
                &transform::read_parquet(bytes.clone(), &ACCOUNT_COLUMNS)?.collect()?,
                &wanted,
                &mut accounts,
            )?;
        }
        if let Some(previous) = previous.as_ref()
            && let Some(df) = super::commit::stored_targets(store, previous, &ACCOUNT_COLUMNS).await?
        {
            read_accounts(&df, &wanted, &mut accounts)?;
        }
        let alerts = transform::alerts::match_alerts(alert_rules, &events, &accounts);
        matched = alerts.len() as u64;
        let batch = alerts_batch(&alerts)?;
        let mut entry = store.put_table(folder, "alerts", to_parquet(&batch)?, batch.num_rows()).await?;
        entry.schema = Some(schema_fingerprint(&batch.schema()));
        entries.push(entry);
    }
    Ok((entries, count(&events), matched))
}

/// Closes a table written to a local file and stores it at `path`.
async fn stored_local(
    store: &Store,
    path: &str,
    table: &str,
    writer: transform::SliceWriter,
    local: &std::path::Path,
) -> anyhow::Result<FileEntry> {
    let rows = writer.rows as u64;
    writer.finish()?;
    let bytes = store.put_file(path, local).await?;
    Ok(FileEntry { table: table.into(), path: path.to_string(), bytes, rows, schema: None, base: None })
}

/// The previous state's rows of renamed domains, under their new names.
struct Moved {
    /// Old domain → new domain, for the renames whose old domain had tracked items.
    renames: BTreeMap<String, String>,
    /// Their tracked items, relabelled with the new domain.
    rows: polars::prelude::DataFrame,
}

/// The renames that apply tonight — the new domain is in the book, the old one is not —
/// and the old domains' tracked items, read once (renames are few).
fn moved_state(state: &bytes::Bytes, renames: &bytes::Bytes, book: &[&str]) -> anyhow::Result<Option<Moved>> {
    use polars::prelude::*;
    let in_book = |d: &str| book.binary_search(&d).is_ok();
    let applying: BTreeMap<String, String> = transform::renames::read(renames)?
        .into_iter()
        .filter(|r| in_book(&r.renamed_to) && !in_book(&r.domain))
        .map(|r| (r.domain, r.renamed_to))
        .collect();
    if applying.is_empty() {
        return Ok(None);
    }
    let map = df!(
        "domain" => applying.keys().cloned().collect::<Vec<_>>(),
        "renamed_to" => applying.values().cloned().collect::<Vec<_>>(),
    )?;
    let rows = transform::changes::read_state(state, &DomainRange::all())?
        .join(map.lazy(), [col("domain")], [col("domain")], JoinArgs::new(JoinType::Inner))
        .with_column(col("renamed_to").alias("domain"))
        .drop(Selector::ByName { names: Arc::from([PlSmallStr::from("renamed_to")]), strict: true })
        .collect();
    let rows = anyhow::Context::context(rows, "reading the renamed domains' tracked items")?;
    let had_state: std::collections::BTreeSet<String> =
        rows.column("domain")?.str()?.iter().flatten().map(str::to_string).collect();
    let renames: BTreeMap<String, String> = applying.into_iter().filter(|(_, new)| had_state.contains(new)).collect();
    Ok((!renames.is_empty()).then_some(Moved { renames, rows }))
}

impl Moved {
    /// A range's previous state without the old domains' rows and with theirs under the
    /// new names (an item the new domain already tracks keeps its own row).
    fn in_range(
        &self,
        base: polars::prelude::LazyFrame,
        range: &DomainRange,
    ) -> polars::prelude::PolarsResult<polars::prelude::LazyFrame> {
        use polars::prelude::*;
        let old = Series::new("old".into(), self.renames.keys().cloned().collect::<Vec<_>>());
        let base = base.filter(col("domain").is_in(lit(old).implode(false), false).not());
        let keys = [col("domain"), col("field"), col("key")];
        let moved = range.filter(self.rows.clone().lazy()).join(
            base.clone(),
            keys.clone(),
            keys,
            JoinArgs::new(JoinType::Anti),
        );
        concat([base, moved], UnionArgs::default())
    }

    /// One `renamed` event per move.
    fn events(&self, from_snapshot: &str, to_snapshot: &str) -> Vec<Event> {
        renamed_events(&self.renames, from_snapshot, to_snapshot)
    }
}

/// One `renamed` event per move (old domain → new).
fn renamed_events(renames: &BTreeMap<String, String>, from_snapshot: &str, to_snapshot: &str) -> Vec<Event> {
    renames
        .iter()
        .map(|(old, new)| Event {
            event_id: transform::changes::event_id(new, "target", "", old, new, to_snapshot),
            domain: new.clone(),
            module: "m01".into(),
            field: "target".into(),
            item: None,
            change: "renamed".into(),
            old_value: Some(old.clone()),
            new_value: Some(new.clone()),
            category: "target_change".into(),
            significance: "medium".into(),
            summary: format!("Renamed: {old} → {new} (the site moved; its history carries over)"),
            algolia_relevance: "The same account under its new domain.".into(),
            rule: "target_renamed".into(),
            from_snapshot: from_snapshot.to_string(),
            to_snapshot: to_snapshot.to_string(),
            old_source: Some("builtwith".into()),
            old_fetched_at: None,
            new_source: Some("builtwith".into()),
            new_fetched_at: None,
            first_detected: None,
        })
        .collect()
}

/// What the alerts know of an account, from the targets table.
const ACCOUNT_COLUMNS: [&str; 4] = ["domain", "country", "vertical", "icp_score"];

/// Country, vertical and score of the `wanted` domains of a targets table, for
/// those not in `accounts` yet.
fn read_accounts(
    df: &polars::prelude::DataFrame,
    wanted: &std::collections::BTreeSet<&str>,
    accounts: &mut BTreeMap<String, Account>,
) -> anyhow::Result<()> {
    let text = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
        Ok(df.column(name)?.str()?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let (domains, countries, verticals) = (text("domain")?, text("country")?, text("vertical")?);
    let scores: Vec<Option<i64>> =
        df.column("icp_score")?.cast(&polars::prelude::DataType::Int64)?.i64()?.iter().collect();
    for i in 0..df.height() {
        let Some(domain) = domains[i].as_ref().filter(|d| wanted.contains(d.as_str())) else { continue };
        accounts.entry(domain.clone()).or_insert_with(|| Account {
            country: countries[i].clone(),
            vertical: verticals[i].clone(),
            icp_score: scores[i],
        });
    }
    Ok(())
}

/// The alerts a committed snapshot raised (none when it has no `alerts` table).
pub async fn stored_alerts(store: &Store, manifest: &Manifest) -> anyhow::Result<Vec<Alert>> {
    let Some(entry) = manifest.file("alerts") else { return Ok(Vec::new()) };
    let bytes = store.get(&entry.path).await?;
    let wanted: Vec<&str> =
        ALERT_ONLY.iter().chain(EVENT_COLUMNS.iter().filter(|c| **c != "evidence")).copied().collect();
    let df = transform::read_parquet(bytes, &wanted)?.collect().with_context(|| format!("reading {}", entry.path))?;
    let text = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
        Ok(df.column(name)?.str()?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let int = |name: &str| -> anyhow::Result<Vec<Option<i64>>> {
        Ok(df.column(name)?.cast(&polars::prelude::DataType::Int64)?.i64()?.iter().collect())
    };
    let mut columns: BTreeMap<&str, Vec<Option<String>>> = BTreeMap::new();
    let times = ["digest_hour", "old_fetched_at", "new_fetched_at", "first_detected"];
    for name in wanted.iter().filter(|c| !times.contains(c)) {
        columns.insert(name, text(name)?);
    }
    let (hours, old_at, new_at) = (int("digest_hour")?, int("old_fetched_at")?, int("new_fetched_at")?);
    let detected = int("first_detected")?;
    let get = |name: &str, i: usize| columns.get(name).and_then(|c| c[i].clone());
    let owned = |name: &str, i: usize| get(name, i).unwrap_or_default();
    let role = |name: String| -> &'static str {
        ["admin", "manager", "ae", "se", "sdr", "viewer"].into_iter().find(|r| *r == name).unwrap_or("viewer")
    };
    let channel =
        |name: &str| -> Option<&'static str> { ["feed", "webhook", "email"].into_iter().find(|c| *c == name) };
    let frequency = |name: String| if name == "daily_digest" { "daily_digest" } else { "immediate" };
    Ok((0..df.height())
        .map(|i| Alert {
            alert_id: owned("alert_id", i),
            user: owned("person", i),
            name: owned("name", i),
            role: role(owned("role", i)),
            team: get("team", i),
            rule: owned("alert_rule", i),
            channels: owned("channels", i).split(',').filter_map(channel).collect(),
            frequency: frequency(owned("frequency", i)),
            digest_hour: hours[i].map(|h| h as u32),
            time_zone: owned("time_zone", i),
            event: Event {
                event_id: owned("event_id", i),
                domain: owned("domain", i),
                module: owned("module", i),
                field: owned("field", i),
                item: get("item", i),
                change: owned("change", i),
                old_value: get("old_value", i),
                new_value: get("new_value", i),
                category: owned("category", i),
                significance: owned("significance", i),
                summary: owned("summary", i),
                algolia_relevance: owned("algolia_relevance", i),
                rule: owned("rule", i),
                from_snapshot: owned("from_snapshot", i),
                to_snapshot: owned("to_snapshot", i),
                old_source: get("old_source", i),
                old_fetched_at: old_at[i],
                new_source: get("new_source", i),
                new_fetched_at: new_at[i],
                first_detected: detected[i],
            },
        })
        .collect())
}

/// The columns of the `changes` table (the alerts table has them too).
const EVENT_COLUMNS: [&str; 21] = [
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
    "first_detected",
    "evidence",
];

/// The alert's own columns of the `alerts` table, before the event's.
const ALERT_ONLY: [&str; 10] =
    ["alert_id", "person", "name", "role", "team", "alert_rule", "channels", "frequency", "digest_hour", "time_zone"];

/// The marker a finished delivery pass leaves for a snapshot generation.
fn pass_marker(manifest: &Manifest) -> String {
    format!("deliveries/_passes/{}-{:04}.json", manifest.date, manifest.generation)
}

/// How far back a pass looks for snapshots whose alerts were never fully delivered.
const PENDING_DAYS: i64 = 14;

/// Delivers the immediate alerts of every snapshot whose delivery never finished
/// (the one just committed, or one whose delivery a crash cut short, within
/// `PENDING_DAYS` of the newest), and retries earlier failures; with `only`, the
/// alerts of that snapshot whatever its marker says.
pub async fn deliver_pending(
    store: &Store,
    rules: &AlertRules,
    run_id: &str,
    resend_in_doubt: bool,
    only: Option<&Manifest>,
) -> anyhow::Result<crate::alerts::DeliveryReport> {
    let snapshots = match only {
        Some(m) => vec![m.clone()],
        None => {
            let all = store.snapshots().await?;
            let newest = all.last().and_then(|m| m.date.parse::<chrono::NaiveDate>().ok());
            let mut pending = Vec::new();
            for m in all.into_iter().filter(|m| m.file("alerts").is_some()) {
                let recent = match (newest, m.date.parse::<chrono::NaiveDate>()) {
                    (Some(n), Ok(d)) => (n - d).num_days() <= PENDING_DAYS,
                    _ => true,
                };
                if recent && !store.exists(&pass_marker(&m)).await? {
                    pending.push(m);
                }
            }
            pending
        }
    };
    let mut messages = Vec::new();
    for m in &snapshots {
        messages.extend(crate::alerts::immediate(&stored_alerts(store, m).await?));
    }
    let report = crate::alerts::deliver(store, rules, &messages, run_id, resend_in_doubt).await?;
    for m in &snapshots {
        let body = serde_json::json!({"run_id": run_id, "at": chrono::Utc::now().to_rfc3339()});
        store.put_new(&pass_marker(m), bytes::Bytes::from(body.to_string())).await?;
    }
    Ok(report)
}

/// What a [`diff`] reports, and how it reads the states.
#[derive(Debug, Clone, Copy)]
pub struct DiffOptions<'a> {
    /// One domain's events only.
    pub domain: Option<&'a str>,
    /// Events at least this significant only.
    pub min_significance: Option<&'a str>,
    /// Where both states are read, the domains of a range read at a time (the ranges
    /// the states were written in: a row group each).
    pub slice_rows: usize,
    /// Read the newer snapshot's `change_feed` where it was taken against the older
    /// state (the default); `false` compares both states (by their stored digests first,
    /// then the rows of the domains that differ: the two give the same events, a test
    /// compares them).
    pub use_feed: bool,
}

/// The events between two committed snapshots, by `rules`.
///
/// When `to` was committed on top of `from` (the nightly case), its `change_feed` holds
/// the rows of both states that can make an event, and only they are read; any other
/// pair compares both states, a range of `slice_rows` domains at a time: their domains
/// and stored digests first, then the rows of the domains that differ
/// ([`transform::changes::between`]).
pub async fn diff(
    store: &Store,
    from: &Manifest,
    to: &Manifest,
    rules: &ChangeRules,
    options: &DiffOptions<'_>,
) -> anyhow::Result<Vec<Event>> {
    let DiffOptions { domain, min_significance, slice_rows, use_feed } = *options;
    use transform::changes::DomainRange;
    let missing = |m: &Manifest| {
        anyhow::anyhow!(
            "snapshot {} tracks no changes (it was committed before change tracking, or without change rules): \
             rebuild it with `partnerforge rebuild --snapshot {}`",
            m.snapshot_id,
            m.date
        )
    };
    let old_entry = from.file("change_state").ok_or_else(|| missing(from))?;
    to.file("change_state").ok_or_else(|| missing(to))?;
    let only = domain.map(|d| DomainRange { lo: Some(d.to_string()), hi: Some(format!("{d}\u{0}")) });
    let feed = match to.file("change_feed") {
        Some(entry) if use_feed => {
            let bytes = store.get(&entry.path).await?;
            let info = transform::changes::feed_info(&bytes, transform::changes::FEED_CHUNK_ROWS)
                .with_context(|| format!("reading {}", entry.path))?;
            (info.base.as_deref() == Some(old_entry.path.as_str())).then_some((entry, bytes, info))
        }
        _ => None,
    };
    let mut events = Vec::new();
    let renamed = match feed {
        Some((entry, feed, info)) => {
            // The feed's previous rows are the ones the commit compared: renamed domains'
            // already moved, and the renames it applied are in its metadata.
            let chunks = match &only {
                Some(range) => vec![range.clone()],
                None => info.chunks,
            };
            for chunk in &chunks {
                let (before, after) = transform::changes::read_feed(&feed, chunk)?;
                events.extend(transform::changes::events(before, after, rules, &from.snapshot_id, &to.snapshot_id)?);
            }
            match info.renames {
                Some(text) => serde_json::from_str::<BTreeMap<String, String>>(&text)
                    .with_context(|| format!("{}: the renames in its metadata", entry.path))?,
                None => BTreeMap::new(),
            }
        }
        None => {
            let (old, new) = both_states(store, from, to).await?;
            let renamed = moved_between(store, to, &old.bytes, &new.bytes).await?;
            let ranges = match (&only, to.file("targets")) {
                (Some(range), _) => vec![range.clone()],
                // Slices of the newer snapshot's targets (the ranges cover every domain either state holds).
                (None, Some(_)) => {
                    let df = super::commit::stored_targets(store, to, &["domain"]).await?.unwrap_or_default();
                    let domains: Vec<&str> = df.column("domain")?.str()?.iter().flatten().collect();
                    DomainRange::split(domains.into_iter(), slice_rows)
                }
                (None, None) => vec![DomainRange::all()],
            };
            for range in &ranges {
                let (a, b) = match &renamed {
                    // Renamed domains' rows are moved under their new names first.
                    Some(moved) => (
                        moved.in_range(transform::changes::read_state(&old.bytes, range)?, range)?,
                        transform::changes::read_state(&new.bytes, range)?,
                    ),
                    // Compared by their stored digests first: only the rows of the domains
                    // that differ are read.
                    None => match transform::changes::between(&old, &new, range)? {
                        Some((a, b)) => (a.lazy(), b.lazy()),
                        None => continue,
                    },
                };
                events.extend(transform::changes::events(a, b, rules, &from.snapshot_id, &to.snapshot_id)?);
            }
            renamed.map(|moved| moved.renames).unwrap_or_default()
        }
    };
    let wanted = |e: &Event| domain.is_none_or(|d| e.domain == d);
    events.extend(renamed_events(&renamed, &from.snapshot_id, &to.snapshot_id).into_iter().filter(wanted));
    if let Some(min) = min_significance {
        let bar = significance_rank(min).context("unknown significance")?;
        events.retain(|e| significance_rank(&e.significance).is_some_and(|r| r <= bar));
    }
    Ok(events)
}

/// The stored states of two snapshots (both track changes: `diff` checked).
async fn both_states(
    store: &Store,
    from: &Manifest,
    to: &Manifest,
) -> anyhow::Result<(transform::changes::StateFile, transform::changes::StateFile)> {
    let state = async |m: &Manifest| match stored_state(store, m).await? {
        Some(bytes) => transform::changes::StateFile::new(bytes)
            .with_context(|| format!("reading snapshot {}'s change_state", m.snapshot_id)),
        None => anyhow::bail!("snapshot {} tracks no changes", m.snapshot_id),
    };
    Ok((state(from).await?, state(to).await?))
}

/// The newer snapshot's renames, as its commit applied them: the old domain's items
/// continue under the new one (one `renamed` event, no removals and additions).
async fn moved_between(
    store: &Store,
    to: &Manifest,
    old: &bytes::Bytes,
    new: &bytes::Bytes,
) -> anyhow::Result<Option<Moved>> {
    let Some(entry) = to.file("renames") else { return Ok(None) };
    let renames = store.get(&entry.path).await?;
    let named: Vec<String> =
        transform::renames::read(&renames)?.into_iter().flat_map(|r| [r.domain, r.renamed_to]).collect();
    if named.is_empty() {
        return Ok(None);
    }
    use polars::prelude::*;
    // "In the book" as the commit saw it: tracked in the newer state.
    let names = Series::new("names".into(), named);
    let mut tracked: Vec<String> = transform::changes::read_state(new, &transform::changes::DomainRange::all())?
        .select([col("domain")])
        .filter(col("domain").is_in(lit(names).implode(false), false))
        .unique(None, UniqueKeepStrategy::Any)
        .collect()?
        .column("domain")?
        .str()?
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    tracked.sort();
    let tracked: Vec<&str> = tracked.iter().map(String::as_str).collect();
    moved_state(old, &renames, &tracked)
}
