//! Checkpoints: a run's finished calls, written under `runs/<run_id>/` as it
//! goes, so that a run that dies can be resumed without paying twice.
//!
//! Every batch of calls that completes is written as one Parquet file of
//! exchanges (attempts, statuses, bodies, how each call ended). `run --resume`
//! reads them back: a call already in a checkpoint is not made again; its
//! stored exchange is parsed and recorded as if it had just come back. The
//! run's own parameters are kept beside them (`run.json`), so a resume needs
//! nothing but the run id.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use arrow::array::{Array, StringArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::fetch::{Attempt, Call, Ending, Exchange, Outcome, Reply};
use crate::run::ProvidersMode;
use crate::store::table::{TableBuilder, to_parquet};
use crate::store::{Store, StoreError};

/// What a run was asked to do, kept so `--resume` can do it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub run_id: String,
    pub pipeline: PathBuf,
    pub date: String,
    pub limit: Option<usize>,
    pub targets: Option<PathBuf>,
    pub providers: String,
    pub force: Vec<String>,
    pub only: Option<Vec<String>>,
    pub replace: bool,
    pub faults: Vec<String>,
    pub started_at: String,
}

impl RunSpec {
    pub fn providers_mode(&self) -> ProvidersMode {
        match self.providers.as_str() {
            "simulated" => ProvidersMode::Simulated,
            "real" => ProvidersMode::Real,
            _ => ProvidersMode::Auto,
        }
    }
}

fn folder(run_id: &str) -> String {
    format!("runs/{run_id}")
}

/// The key a call is known by across attempts and resumes.
pub fn call_key(call: &Call) -> String {
    format!("{}|{}|{}", call.provider.name(), call.endpoint, call.domain)
}

#[derive(Serialize, Deserialize)]
struct StoredAttempt {
    number: u32,
    status: Option<u16>,
    body: String,
    latency_ms: f64,
    error: Option<String>,
    retry_after: Option<String>,
    called_at_ms: i64,
    waited_ms: f64,
    cost_usd: f64,
}

#[derive(Serialize, Deserialize)]
struct StoredExchange {
    attempts: Vec<StoredAttempt>,
    /// `answered`, `gave_up` or `skipped`.
    ending: String,
    outcome: Option<String>,
    reason: Option<String>,
}

fn outcome_from(name: &str) -> Outcome {
    [
        Outcome::Ok,
        Outcome::NoData,
        Outcome::Failed,
        Outcome::Invalid,
        Outcome::Retried,
        Outcome::SkippedDependency,
        Outcome::SkippedBudget,
        Outcome::SkippedQuota,
        Outcome::SkippedCircuit,
        Outcome::SkippedAuth,
    ]
    .into_iter()
    .find(|o| o.as_str() == name)
    .unwrap_or(Outcome::Failed)
}

fn store_exchange(exchange: &Exchange) -> StoredExchange {
    let attempts = exchange
        .attempts
        .iter()
        .map(|a| StoredAttempt {
            number: a.number,
            status: a.reply.status,
            body: String::from_utf8_lossy(&a.reply.body).to_string(),
            latency_ms: a.reply.latency.as_secs_f64() * 1000.0,
            error: a.reply.error.clone(),
            retry_after: a.reply.retry_after.clone(),
            called_at_ms: a.reply.called_at.timestamp_millis(),
            waited_ms: a.waited.as_secs_f64() * 1000.0,
            cost_usd: a.cost_usd,
        })
        .collect();
    let (ending, outcome, reason) = match &exchange.ending {
        Ending::Answered => ("answered", None, None),
        Ending::GaveUp(reason) => ("gave_up", None, Some(reason.clone())),
        Ending::Skipped(outcome, reason) => ("skipped", Some(outcome.as_str().to_string()), Some(reason.clone())),
    };
    StoredExchange { attempts, ending: ending.into(), outcome, reason }
}

fn load_exchange(stored: StoredExchange) -> Exchange {
    let attempts = stored
        .attempts
        .into_iter()
        .map(|a| Attempt {
            number: a.number,
            reply: Reply {
                status: a.status,
                body: Bytes::from(a.body),
                latency: std::time::Duration::from_secs_f64(a.latency_ms.max(0.0) / 1000.0),
                error: a.error,
                retry_after: a.retry_after,
                called_at: chrono::DateTime::from_timestamp_millis(a.called_at_ms).unwrap_or_default(),
            },
            waited: std::time::Duration::from_secs_f64(a.waited_ms.max(0.0) / 1000.0),
            cost_usd: a.cost_usd,
        })
        .collect();
    let reason = stored.reason.unwrap_or_default();
    let ending = match stored.ending.as_str() {
        "answered" => Ending::Answered,
        "gave_up" => Ending::GaveUp(reason),
        _ => Ending::Skipped(outcome_from(stored.outcome.as_deref().unwrap_or("failed")), reason),
    };
    Exchange { attempts, ending }
}

/// A run's checkpoints: what is already done, and the writer for what comes next.
pub struct Checkpoints {
    store: Store,
    run_id: String,
    next: usize,
    done: HashMap<String, Exchange>,
}

impl Checkpoints {
    /// Starts a run's checkpoints, recording what it was asked to do.
    pub async fn start(store: &Store, spec: &RunSpec) -> Result<Self, StoreError> {
        let json = serde_json::to_vec_pretty(spec).map_err(|e| StoreError::Encode(e.to_string()))?;
        store.put(&format!("{}/run.json", folder(&spec.run_id)), Bytes::from(json)).await?;
        Ok(Self { store: store.clone(), run_id: spec.run_id.clone(), next: 1, done: HashMap::new() })
    }

    /// Reads back a run's spec and every checkpoint it wrote.
    pub async fn resume(store: &Store, run_id: &str) -> Result<(RunSpec, Self), StoreError> {
        let spec_path = format!("{}/run.json", folder(run_id));
        let spec: RunSpec = match store.get(&spec_path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                url: store.url().to_string(),
                path: spec_path.clone(),
                message: e.to_string(),
            })?,
            Err(StoreError::Object { source: object_store::Error::NotFound { .. }, .. }) => {
                return Err(StoreError::Open {
                    url: store.url().to_string(),
                    message: format!("no run {run_id} to resume (no {spec_path})"),
                });
            }
            Err(e) => return Err(e),
        };
        let mut files = store.list(&folder(run_id)).await?;
        files.retain(|f| f.contains("/checkpoint-") && f.ends_with(".parquet"));
        files.sort();
        let mut done = HashMap::new();
        for file in &files {
            let bytes = store.get(file).await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(|e| StoreError::Encode(format!("{file}: {e}")))?;
            for batch in reader {
                let batch = batch.map_err(|e| StoreError::Encode(format!("{file}: {e}")))?;
                let column = |name: &str| {
                    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                };
                let (Some(keys), Some(exchanges)) = (column("call_key"), column("exchange")) else { continue };
                for i in 0..batch.num_rows() {
                    // A call that was not made, or given up on, is asked again by the resumed run.
                    if let Ok(stored) = serde_json::from_str::<StoredExchange>(exchanges.value(i))
                        && stored.ending == "answered"
                    {
                        done.insert(keys.value(i).to_string(), load_exchange(stored));
                    }
                }
            }
        }
        let checkpoints = Self { store: store.clone(), run_id: run_id.to_string(), next: files.len() + 1, done };
        Ok((spec, checkpoints))
    }

    /// The finished exchange of a call, when an earlier attempt of this run made it.
    pub fn finished(&self, call: &Call) -> Option<&Exchange> {
        self.done.get(&call_key(call))
    }

    pub fn resumed_calls(&self) -> usize {
        self.done.len()
    }

    /// What the reused calls cost and how many requests they sent, per provider.
    pub fn usage(&self) -> BTreeMap<crate::config::ProviderId, (f64, u64)> {
        let mut usage: BTreeMap<crate::config::ProviderId, (f64, u64)> = BTreeMap::new();
        for (key, exchange) in &self.done {
            let Some(provider) = key.split('|').next().and_then(crate::config::ProviderId::from_name) else { continue };
            let entry = usage.entry(provider).or_default();
            entry.0 += exchange.attempts.iter().map(|a| a.cost_usd).sum::<f64>();
            entry.1 += exchange.attempts.len() as u64;
        }
        usage
    }

    /// Writes a batch of finished calls.
    pub async fn write(&mut self, finished: &[(Call, Exchange)]) -> Result<(), StoreError> {
        if finished.is_empty() {
            return Ok(());
        }
        let batch = TableBuilder::new()
            .text("call_key", finished.iter().map(|(c, _)| Some(call_key(c))))
            .text("provider", finished.iter().map(|(c, _)| Some(c.provider.name())))
            .text("endpoint", finished.iter().map(|(c, _)| Some(c.endpoint)))
            .text("domain", finished.iter().map(|(c, _)| Some(c.domain.clone())))
            .text("exchange", finished.iter().map(|(_, e)| serde_json::to_string(&store_exchange(e)).ok()))
            .finish()?;
        let path = format!("{}/checkpoint-{:05}.parquet", folder(&self.run_id), self.next);
        self.store.put(&path, to_parquet(&batch)?).await?;
        self.next += 1;
        for (call, exchange) in finished {
            self.done.insert(call_key(call), exchange.clone());
        }
        Ok(())
    }
}

/// The newest run that left checkpoints and never committed.
pub async fn last_unfinished(store: &Store) -> Result<Option<String>, StoreError> {
    let committed: std::collections::BTreeSet<String> =
        store.all_generations().await?.into_iter().map(|m| m.run_id).collect();
    let mut runs: Vec<String> = store
        .list("runs")
        .await?
        .into_iter()
        .filter(|p| p.ends_with("/run.json"))
        .filter_map(|p| p.split('/').nth(1).map(str::to_string))
        .filter(|id| !committed.contains(id))
        .collect();
    runs.sort();
    Ok(runs.pop())
}

/// Removes a run's checkpoints once its snapshot is committed.
pub async fn discard(store: &Store, run_id: &str) -> Result<(), StoreError> {
    for path in store.list(&folder(run_id)).await? {
        store.delete(&path).await?;
    }
    Ok(())
}
