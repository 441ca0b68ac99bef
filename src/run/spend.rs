//! The spend record: what every call cost and how many requests went out, by
//! provider and by the UTC day the call was made, kept apart from snapshots.
//!
//! Month-to-date spend and today's requests (the caps and daily quotas of the
//! next run) are read from here, not from committed ledgers: a back-fill of an
//! old date counts on the day its calls were made, and a run that died before
//! committing counts what it was billed.
//!
//! The journal writer records each group's use *before* the group's journal
//! lines, so an answer reused by a resume is always on record, and a call asked
//! again after a crash (the provider billed it twice) is counted twice:
//! - on a local store, one file per month, run and process,
//!   `spend/<yyyy-mm>/<run_id>/<segment>.jsonl`, one line per group, `fsync`ed;
//! - on object storage, one create-only object per group and month,
//!   `spend/<yyyy-mm>/<run_id>/<segment>-<group>.json`.
//!
//! Once the run has committed, its parts of each month are summed into one
//! create-only `spend/<yyyy-mm>/<run_id>.json` and removed. A reader that finds
//! a run's sum uses it and ignores parts left by a crash between the two steps.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use chrono::{Datelike as _, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::config::{ProviderAccount, ProviderId};
use crate::fetch::{Exchange, UsedToday};
use crate::store::{Manifest, Store, StoreError};

/// Money and requests of one provider on one day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Use {
    pub usd: f64,
    /// Requests the provider answered (its daily quota counts them).
    pub requests: u64,
    /// Calls it billed.
    #[serde(default)]
    pub billed: u64,
}

impl Use {
    fn add(&mut self, other: Use) {
        self.usd += other.usd;
        self.requests += other.requests;
        self.billed += other.billed;
    }
}

/// Use by UTC day (`YYYY-MM-DD`) and provider name.
pub type Days = BTreeMap<String, BTreeMap<String, Use>>;

pub(crate) fn merge(into: &mut Days, from: &Days) {
    for (day, providers) in from {
        let slot = into.entry(day.clone()).or_default();
        for (provider, used) in providers {
            slot.entry(provider.clone()).or_default().add(*used);
        }
    }
}

/// One part of the record (a group's use, or a run's sum for a month).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    run_id: String,
    account: ProviderAccount,
    days: Days,
}

/// What one call's attempts cost and sent: a request for every attempt the
/// provider answered (as its daily quota counts them), by the day it was made.
pub fn of_exchange(provider: ProviderId, exchange: &Exchange) -> Days {
    let mut days = Days::new();
    for attempt in &exchange.attempts {
        if attempt.reply.status.is_none() && attempt.cost_usd == 0.0 {
            continue;
        }
        let day = attempt.reply.called_at.format("%Y-%m-%d").to_string();
        let used = days.entry(day).or_default().entry(provider.name().to_string()).or_default();
        used.usd += attempt.cost_usd;
        used.requests += u64::from(attempt.reply.status.is_some());
        used.billed += u64::from(attempt.cost_usd > 0.0);
    }
    days
}

fn month_of(day: &str) -> &str {
    day.get(..7).unwrap_or(day)
}

/// The use of `days` split by calendar month.
fn by_month(days: Days) -> BTreeMap<String, Days> {
    let mut months: BTreeMap<String, Days> = BTreeMap::new();
    for (day, providers) in days {
        months.entry(month_of(&day).to_string()).or_default().insert(day, providers);
    }
    months
}

fn encode(part: &Part) -> Result<Vec<u8>, String> {
    serde_json::to_vec(part).map_err(|e| format!("cannot encode the spend record: {e}"))
}

/// Writes one process's share of a run's record.
pub struct Recorder {
    store: Store,
    run_id: String,
    account: ProviderAccount,
    segment: u32,
    /// Local store: the open file of each month.
    files: BTreeMap<String, (PathBuf, std::fs::File)>,
    next_group: u64,
}

impl Recorder {
    pub fn new(store: &Store, run_id: &str, account: ProviderAccount, segment: u32) -> Self {
        Self {
            store: store.clone(),
            run_id: run_id.to_string(),
            account,
            segment,
            files: BTreeMap::new(),
            next_group: 1,
        }
    }

    fn folder(&self, month: &str) -> String {
        format!("spend/{month}/{}", self.run_id)
    }

    fn part(&self, days: Days) -> Part {
        Part { run_id: self.run_id.clone(), account: self.account, days }
    }

    /// Appends a group's use to the local files and makes it durable.
    pub fn write_local(&mut self, days: Days) -> Result<(), String> {
        for (month, days) in by_month(days) {
            let mut line = encode(&self.part(days))?;
            line.push(b'\n');
            if !self.files.contains_key(&month) {
                let name = format!("{}/{:04}.jsonl", self.folder(&month), self.segment);
                let Some(path) = self.store.local_path(&name) else {
                    return Err(format!("{name}: not a local store"));
                };
                let file = crate::store::create_durable(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                self.files.insert(month.clone(), (path, file));
            }
            if let Some((path, file)) = self.files.get_mut(&month) {
                file.write_all(&line)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Writes a group's use as create-only objects, one per month.
    pub async fn write_objects(&mut self, days: Days) -> Result<(), String> {
        for (month, days) in by_month(days) {
            let path = format!("{}/{:04}-{:08}.json", self.folder(&month), self.segment, self.next_group);
            let body = Bytes::from(encode(&self.part(days))?);
            match self.store.put_new(&path, body).await {
                Ok(true) => {}
                Ok(false) => return Err(format!("spend object {path} already exists: another process writes it")),
                Err(e) => return Err(e.to_string()),
            }
        }
        self.next_group += 1;
        Ok(())
    }
}

/// What one run spent, by month, as the record holds it.
#[derive(Debug, Default)]
struct RunRecord {
    account: Option<ProviderAccount>,
    sum: Option<Days>,
    parts: Days,
}

impl RunRecord {
    fn days(&self) -> &Days {
        self.sum.as_ref().unwrap_or(&self.parts)
    }
}

/// Reads the parts of `text` (JSON lines, or one JSON object) one at a time, never
/// all at once (a run of a million targets writes hundreds of thousands of lines); a
/// line cut short by a crash is skipped (its group's calls were never kept, so they
/// were asked again).
fn each_part(path: &str, text: &[u8], mut f: impl FnMut(Part)) {
    for line in text.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        match serde_json::from_slice::<Part>(line) {
            Ok(part) => f(part),
            Err(e) => tracing::warn!("spend record {path}: a line does not read ({e}); it is not counted"),
        }
    }
}

/// Every run's record of the month `month` (`YYYY-MM`), by run id.
async fn month_records(store: &Store, month: &str) -> Result<BTreeMap<String, RunRecord>, StoreError> {
    let prefix = format!("spend/{month}");
    let mut runs: BTreeMap<String, RunRecord> = BTreeMap::new();
    for path in store.list(&prefix).await? {
        let Some(rest) = path.strip_prefix(&format!("{prefix}/")) else { continue };
        let (run_id, is_sum) = match rest.split_once('/') {
            Some((run_id, _)) => (run_id.to_string(), false),
            None => match rest.strip_suffix(".json") {
                Some(run_id) => (run_id.to_string(), true),
                None => continue,
            },
        };
        let bytes = store.get(&path).await?;
        let record = runs.entry(run_id).or_default();
        each_part(&path, &bytes, |part| {
            record.account = Some(part.account);
            if is_sum {
                merge(record.sum.get_or_insert_with(Days::new), &part.days);
            } else {
                merge(&mut record.parts, &part.days);
            }
        });
    }
    Ok(runs)
}

/// Month-to-date spend (the month of `today`) and today's requests per provider of
/// one providers' account, from the spend record, plus the ledgers of committed
/// generations made before the record was kept.
pub async fn account_use(
    store: &Store,
    account: ProviderAccount,
    today: NaiveDate,
    generations: &[Manifest],
) -> anyhow::Result<(BTreeMap<ProviderId, f64>, UsedToday)> {
    let today_text = today.format("%Y-%m-%d").to_string();
    let month = month_of(&today_text).to_string();
    let mut days = Days::new();
    for record in month_records(store, &month).await?.values() {
        if record.account == Some(account) {
            merge(&mut days, record.days());
        }
    }
    // Generations committed this month by a build that kept no record: their ledgers, by call day.
    for manifest in generations.iter().filter(|m| {
        !m.spend_recorded && m.rebuilt_from.is_none() && m.providers == account && m.created_at.starts_with(&month)
    }) {
        merge(&mut days, &ledger_days(store, manifest).await?);
    }
    let mut spent: BTreeMap<ProviderId, f64> = BTreeMap::new();
    let mut used_today = UsedToday::new();
    for (day, providers) in days.iter().filter(|(day, _)| month_of(day) == month) {
        for (name, used) in providers {
            let Some(id) = ProviderId::from_name(name) else { continue };
            *spent.entry(id).or_default() += used.usd;
            if *day == today_text {
                *used_today.entry(id).or_default() += used.requests;
            }
        }
    }
    Ok((spent, used_today))
}

/// A committed generation's ledger as use by call day.
async fn ledger_days(store: &Store, manifest: &Manifest) -> anyhow::Result<Days> {
    use polars::prelude::{DataType, col, lit};
    let Some(file) = manifest.file("api_calls") else { return Ok(Days::new()) };
    let bytes = store.get(&file.path).await?;
    let calls = crate::transform::read_parquet(bytes, &["provider", "cost_usd", "http_status", "called_at"])?
        .with_column(col("called_at").cast(DataType::Int64).alias("ms"))
        // Whole days (exact: the remainder is taken off first).
        .with_column(
            ((col("ms") - col("ms") % lit(86_400_000i64)) / lit(86_400_000i64)).cast(DataType::Int64).alias("day"),
        )
        .group_by([col("day"), col("provider")])
        .agg([
            col("cost_usd").sum().alias("usd"),
            col("http_status").is_not_null().sum().cast(DataType::UInt64).alias("requests"),
            col("cost_usd").gt(lit(0.0)).sum().cast(DataType::UInt64).alias("billed"),
        ])
        .collect()?;
    let (day, provider) = (calls.column("day")?.i64()?, calls.column("provider")?.str()?);
    let (usd, requests) = (calls.column("usd")?.f64()?, calls.column("requests")?.u64()?);
    let billed = calls.column("billed")?.u64()?;
    let mut days = Days::new();
    for i in 0..calls.height() {
        let Some(day) = day.get(i).and_then(|d| chrono::DateTime::from_timestamp(d * 86_400, 0)) else { continue };
        let Some(provider) = provider.get(i) else { continue };
        let day = day.format("%Y-%m-%d");
        let used = Use {
            usd: usd.get(i).unwrap_or(0.0),
            requests: requests.get(i).unwrap_or(0),
            billed: billed.get(i).unwrap_or(0),
        };
        days.entry(day.to_string()).or_default().entry(provider.to_string()).or_default().add(used);
    }
    Ok(days)
}

/// The months from `from` to `to` (`YYYY-MM-DD` or later), both included.
fn months_between(from: NaiveDate, to: NaiveDate) -> Vec<String> {
    let mut months = Vec::new();
    let mut at = from.with_day0(0).unwrap_or(from);
    while at <= to {
        months.push(at.format("%Y-%m").to_string());
        match at.checked_add_months(chrono::Months::new(1)) {
            Some(next) => at = next,
            None => break,
        }
    }
    months
}

/// Sums a committed run's parts into one object per month, then removes the parts.
/// A failure leaves the parts, which read the same.
pub async fn seal(store: &Store, run_id: &str, started: NaiveDate, now: NaiveDate) -> Result<(), StoreError> {
    for month in months_between(started, now) {
        let folder = format!("spend/{month}/{run_id}");
        let parts = store.list(&folder).await?;
        if parts.is_empty() {
            continue;
        }
        let mut days = Days::new();
        let mut account = None;
        for path in &parts {
            each_part(path, &store.get(path).await?, |part| {
                account = Some(part.account);
                merge(&mut days, &part.days);
            });
        }
        if let Some(account) = account {
            let sum = Part { run_id: run_id.to_string(), account, days };
            let body = serde_json::to_vec(&sum).map_err(|e| StoreError::Encode(e.to_string()))?;
            // Already there: an earlier seal wrote it and died before removing the parts.
            store.put_new(&format!("spend/{month}/{run_id}.json"), Bytes::from(body)).await?;
        }
        for path in parts {
            store.delete(&path).await?;
        }
    }
    Ok(())
}

/// One row of the record: a run's use of one provider on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub run_id: String,
    pub account: ProviderAccount,
    pub day: String,
    pub provider: String,
    pub used: Use,
}

/// The whole record, a row per run, day and provider.
pub async fn rows(store: &Store) -> Result<Vec<Row>, StoreError> {
    // A set: a listing comes in no particular order.
    let months: std::collections::BTreeSet<String> =
        store.list("spend").await?.into_iter().filter_map(|p| p.split('/').nth(1).map(str::to_string)).collect();
    let mut rows = Vec::new();
    for month in months {
        for (run_id, record) in month_records(store, &month).await? {
            let Some(account) = record.account else { continue };
            for (day, providers) in record.days() {
                for (provider, used) in providers {
                    rows.push(Row {
                        run_id: run_id.clone(),
                        account,
                        day: day.clone(),
                        provider: provider.clone(),
                        used: *used,
                    });
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(day: &str, provider: &str, usd: f64, requests: u64) -> Days {
        [(day.to_string(), [(provider.to_string(), Use { usd, requests, billed: requests })].into())].into()
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn month_to_date_counts_by_call_day_and_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut a = Recorder::new(&store, "run-a", ProviderAccount::Real, 1);
        a.write_local(days("2026-11-30", "builtwith", 5.0, 50)).unwrap();
        a.write_local(days("2026-12-01", "builtwith", 1.5, 15)).unwrap();
        a.write_local(days("2026-12-02", "builtwith", 0.5, 5)).unwrap();
        // Another account's use is not this one's.
        let mut b = Recorder::new(&store, "run-b", ProviderAccount::Simulated, 1);
        b.write_objects(days("2026-12-02", "builtwith", 100.0, 1000)).await.unwrap();
        let (spent, today) = account_use(&store, ProviderAccount::Real, date("2026-12-02"), &[]).await.unwrap();
        assert_eq!(spent.get(&ProviderId::BuiltWith).copied(), Some(2.0));
        assert_eq!(today.get(&ProviderId::BuiltWith).copied(), Some(5));
        let (spent, _) = account_use(&store, ProviderAccount::Real, date("2026-11-30"), &[]).await.unwrap();
        assert_eq!(spent.get(&ProviderId::BuiltWith).copied(), Some(5.0));
    }

    #[tokio::test]
    async fn a_sealed_run_reads_the_same_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let mut a = Recorder::new(&store, "run-a", ProviderAccount::Real, 1);
        a.write_local(days("2026-12-02", "similarweb", 2.25, 9)).unwrap();
        let mut resumed = Recorder::new(&store, "run-a", ProviderAccount::Real, 2);
        resumed.write_local(days("2026-12-02", "similarweb", 0.75, 3)).unwrap();
        let torn = dir.path().join("spend/2026-12/run-a/0002.jsonl");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&torn)
            .unwrap()
            .write_all(b"{\"run_id\":\"run-a\",\"acc")
            .unwrap();
        let before = account_use(&store, ProviderAccount::Real, date("2026-12-02"), &[]).await.unwrap();
        assert_eq!(before.0.get(&ProviderId::SimilarWeb).copied(), Some(3.0));
        assert_eq!(before.1.get(&ProviderId::SimilarWeb).copied(), Some(12));
        seal(&store, "run-a", date("2026-12-01"), date("2026-12-02")).await.unwrap();
        assert_eq!(store.list("spend/2026-12").await.unwrap(), vec!["spend/2026-12/run-a.json".to_string()]);
        let after = account_use(&store, ProviderAccount::Real, date("2026-12-02"), &[]).await.unwrap();
        assert_eq!(before, after);
        // Parts left beside a sum (a seal that died before removing them) are not counted twice.
        Recorder::new(&store, "run-a", ProviderAccount::Real, 1)
            .write_local(days("2026-12-02", "similarweb", 3.0, 12))
            .unwrap();
        assert_eq!(account_use(&store, ProviderAccount::Real, date("2026-12-02"), &[]).await.unwrap(), after);
        let rows = rows(&store).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].used, Use { usd: 3.0, requests: 12, billed: 12 });
    }

    #[test]
    fn months_between_spans_a_year_end() {
        assert_eq!(months_between(date("2026-11-30"), date("2027-01-01")), ["2026-11", "2026-12", "2027-01"]);
        assert_eq!(months_between(date("2026-12-02"), date("2026-12-02")), ["2026-12"]);
    }
}
