//! Run history: every `partnerforge run` leaves a start record when it starts and
//! an end record when it ends (`history/runs/<run_id>-start.json`, `-end.json`,
//! create-only), whether it committed, was refused, failed or was interrupted —
//! beyond the manifest, which only a commit writes. A start without an end is a
//! run that died (or is running: its lock says which).

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{Manifest, Store};

/// Who or what started a run: `schedule:<job>` (the daemon), `--triggered-by`, or the OS user.
pub fn trigger(given: Option<&str>) -> String {
    if let Some(t) = given.filter(|t| !t.trim().is_empty()) {
        return t.trim().to_string();
    }
    if let Ok(t) = std::env::var("PARTNERFORGE_TRIGGERED_BY")
        && !t.trim().is_empty()
    {
        return t.trim().to_string();
    }
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("user:{user}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub run_id: String,
    pub trigger: String,
    pub started_at: String,
    pub pipeline: String,
    pub date: String,
    pub resumed: bool,
    pub host: String,
    pub pid: u32,
}

/// A provider's circuit breaker as a run left it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Circuit {
    /// closed, open or half-open.
    pub state: String,
    /// How many times it opened during the run.
    pub opened: u64,
}

/// What a committed snapshot's ledger says a run did.
#[derive(Debug, Default)]
pub struct LedgerUse {
    pub providers: BTreeMap<String, ProviderUse>,
    pub failed_modules: BTreeMap<String, u64>,
    pub skipped_modules: BTreeMap<String, u64>,
    pub completed: Vec<String>,
}

/// Per provider: calls made, failed, and their cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProviderUse {
    pub calls: u64,
    pub failed: u64,
    pub spend_usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    pub run_id: String,
    pub ended_at: String,
    /// completed, partial, refused, interrupted or failed.
    pub status: String,
    pub exit_code: u8,
    pub wall_secs: f64,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub generation: Option<u32>,
    pub calls: u64,
    pub spend_usd: f64,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderUse>,
    /// Failed calls per module they fed.
    #[serde(default)]
    pub failed_modules: BTreeMap<String, u64>,
    /// Modules that ran (had a call answered) and were carried forward (fresh, not fetched).
    #[serde(default)]
    pub modules_completed: Vec<String>,
    /// Calls not made per module they would have fed (budget, quota, open circuit, refused key,
    /// a failed dependency).
    #[serde(default)]
    pub skipped_modules: BTreeMap<String, u64>,
    /// Each provider's circuit breaker at the end of the run.
    #[serde(default)]
    pub circuits: BTreeMap<String, Circuit>,
    #[serde(default)]
    pub targets: u64,
    #[serde(default)]
    pub carried_forward: u64,
    #[serde(default)]
    pub error: Option<String>,
}

fn path(run_id: &str, which: &str) -> String {
    format!("history/runs/{run_id}-{which}.json")
}

/// Writes one record create-only; a record that cannot be written is logged, never fatal.
async fn write(store: &Store, run_id: &str, which: &str, record: &impl Serialize) {
    let written = match serde_json::to_vec_pretty(record) {
        Ok(bytes) => store.put_new(&path(run_id, which), bytes.into()).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        tracing::warn!("could not record the {which} of run {run_id}: {e}");
    }
}

pub async fn write_start(store: &Store, start: &Start) {
    write(store, &start.run_id, "start", start).await;
}

pub async fn write_end(store: &Store, end: &End) {
    write(store, &end.run_id, "end", end).await;
}

pub fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What the committed snapshot's ledger says: use per provider, failed and skipped calls per module.
pub async fn ledger_use(store: &Store, manifest: &Manifest) -> anyhow::Result<LedgerUse> {
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    let mut providers: BTreeMap<String, ProviderUse> = BTreeMap::new();
    let mut failed_modules: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped_modules: BTreeMap<String, u64> = BTreeMap::new();
    let mut completed: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    // A rebuild's ledger is its original's: no call was made.
    if manifest.rebuilt_from.is_none()
        && let Some(file) = manifest.file("api_calls")
    {
        let bytes = store.get(&file.path).await?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            let text =
                |name: &str| batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let (Some(provider), Some(outcome), Some(modules)) = (text("provider"), text("outcome"), text("modules"))
            else {
                continue;
            };
            let cost =
                batch.column_by_name("cost_usd").and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned());
            let status =
                batch.column_by_name("http_status").and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
            let (endpoint, domain) = (text("endpoint"), text("domain"));
            let same_call = |i: usize| {
                i > 0
                    && provider.value(i) == provider.value(i - 1)
                    && endpoint.as_ref().is_some_and(|e| e.value(i) == e.value(i - 1))
                    && domain.as_ref().is_some_and(|d| d.value(i) == d.value(i - 1))
            };
            for i in 0..batch.num_rows() {
                let entry = providers.entry(provider.value(i).to_string()).or_default();
                if status.as_ref().is_some_and(|s| !s.is_null(i)) {
                    entry.calls += 1;
                }
                entry.spend_usd += cost.as_ref().map_or(0.0, |c| if c.is_null(i) { 0.0 } else { c.value(i) });
                // A call's attempts are consecutive rows: one whose attempts failed and that was then
                // skipped (its circuit opened, its budget ran out) failed, it was not merely skipped.
                let o = outcome.value(i);
                let skipped_after_errors =
                    o.starts_with("skipped") && same_call(i) && outcome.value(i - 1) == "retried";
                let failed = matches!(o, "failed" | "invalid") || skipped_after_errors;
                // A call the free pre-check spared is a module done (it holds no data), not skipped.
                let spared = o == crate::fetch::Outcome::SkippedPrecheck.as_str();
                let skipped = o.starts_with("skipped") && !spared && !skipped_after_errors;
                for module in modules.value(i).split(',').filter(|m| !m.is_empty()) {
                    if failed {
                        *failed_modules.entry(module.to_string()).or_default() += 1;
                    } else if skipped {
                        *skipped_modules.entry(module.to_string()).or_default() += 1;
                    } else if matches!(o, "ok" | "no_data") || spared {
                        completed.insert(module.to_string());
                    }
                }
                if failed {
                    entry.failed += 1;
                }
            }
        }
    }
    for p in providers.values_mut() {
        p.spend_usd = (p.spend_usd * 1e6).round() / 1e6;
    }
    Ok(LedgerUse { providers, failed_modules, skipped_modules, completed: completed.into_iter().collect() })
}

/// A run as its records tell it.
#[derive(Debug, Clone, Serialize)]
pub struct RunHistory {
    pub start: Option<Start>,
    pub end: Option<End>,
}

impl RunHistory {
    pub fn run_id(&self) -> &str {
        self.start.as_ref().map(|s| s.run_id.as_str()).or(self.end.as_ref().map(|e| e.run_id.as_str())).unwrap_or("")
    }

    /// completed, partial, refused, interrupted, failed — or `unfinished` (no end record).
    pub fn status(&self) -> &str {
        self.end.as_ref().map_or("unfinished", |e| e.status.as_str())
    }
}

/// Every run's records, oldest first.
pub async fn all(store: &Store) -> anyhow::Result<Vec<RunHistory>> {
    let mut paths = store.list("history/runs").await?;
    paths.sort();
    let mut runs: BTreeMap<String, RunHistory> = BTreeMap::new();
    for p in paths {
        let Some(name) = p.rsplit('/').next() else { continue };
        let bytes = store.get(&p).await?;
        if let Some(id) = name.strip_suffix("-start.json") {
            let start: Start = serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
            runs.entry(id.to_string()).or_insert(RunHistory { start: None, end: None }).start = Some(start);
        } else if let Some(id) = name.strip_suffix("-end.json") {
            let end: End = serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
            runs.entry(id.to_string()).or_insert(RunHistory { start: None, end: None }).end = Some(end);
        }
    }
    let mut out: Vec<RunHistory> = runs.into_values().collect();
    out.sort_by(|a, b| {
        let at = |r: &RunHistory| r.start.as_ref().map(|s| s.started_at.clone()).unwrap_or_default();
        at(a).cmp(&at(b)).then(a.run_id().cmp(b.run_id()))
    });
    Ok(out)
}
