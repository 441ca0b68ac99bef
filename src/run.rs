//! `partnerforge run`: one refresh, end to end — read the book, fetch wave by
//! wave, write the normalized tables and the ledger, assemble and score the
//! targets with Polars, and commit the snapshot (data files first, the
//! manifest last and create-only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use chrono::{Datelike, NaiveDate, Utc};
use futures::StreamExt;

use crate::checkpoint::{self, Checkpoints, RunSpec};
use crate::config::{BudgetSettings, LoadedPipeline, ProviderId};
use crate::fetch::budget::Budget;
use crate::fetch::clock::TokioClock;
use crate::fetch::{Call, Ending, Endpoint, Exchange, Fetcher, LedgerRow, Outcome, UsedToday};
use crate::freshness::{self, Carry};
use crate::modules::{self, Context, FetchRow, Module, Parsed, RawRow, Subject, Tables};
use crate::providers::{self, builtwith, similarweb};
use crate::simulate::{Keys, Simulator, SimulatorConfig};
use crate::store::Store;
use crate::store::manifest::{self, Counts, FileEntry, Manifest, ModelRef, PipelineRef, TierCount};
use crate::store::table::{TableBuilder, schema_fingerprint, to_parquet};
use crate::targets::{Book, Target};
use crate::transform::{self, BookRow, ModuleFiles};

/// Which providers a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProvidersMode {
    /// Simulated when no API keys are set, real otherwise.
    Auto,
    /// The simulated providers, started in-process on a loopback port.
    Simulated,
    /// The real provider APIs (keys from the environment).
    Real,
}

/// What a refresh covers: the same for `run` and `plan`.
#[derive(Debug, Clone)]
pub struct Selection {
    pub pipeline: PathBuf,
    pub store: String,
    pub date: NaiveDate,
    pub limit: Option<usize>,
    pub targets: Option<PathBuf>,
    pub providers: ProvidersMode,
    /// Modules fetched whatever their freshness.
    pub force: Vec<String>,
    /// When given, the only modules fetched; the rest are carried forward.
    pub only: Option<Vec<String>>,
}

pub struct RunOptions {
    pub selection: Selection,
    pub replace: bool,
    /// Break a lock left by a run that is gone (expired, or dead on this host).
    pub break_lock: bool,
    /// Simulator faults, `provider.key=value`, over the pipeline's.
    pub faults: Vec<String>,
    /// Continue a run that died: its id, or `last`. Its own parameters are used.
    pub resume: Option<String>,
}

/// Finished calls written to a checkpoint together: what a resumed run may have to
/// ask again is at most the calls under way plus one unwritten batch.
const CHECKPOINT_EVERY: usize = 200;

/// What a run did, for the summary and the tests.
#[derive(Debug)]
pub struct RunReport {
    pub manifest: Manifest,
    pub location: String,
    pub wall_secs: f64,
    pub simulated: bool,
}

fn run_id(now: chrono::DateTime<Utc>) -> String {
    format!("run-{}-{:04x}", now.format("%Y%m%dT%H%M%SZ"), std::process::id() & 0xffff)
}

/// The keys an embedded simulator accepts (and the adapters send).
fn simulated_keys() -> Keys {
    Keys { builtwith: "simulated-builtwith-key".into(), similarweb: "simulated-similarweb-key".into() }
}

fn key_param(provider: ProviderId) -> Option<&'static str> {
    match provider {
        ProviderId::BuiltWith => Some(builtwith::KEY_PARAM),
        ProviderId::SimilarWeb => Some(similarweb::KEY_PARAM),
        ProviderId::YahooFinance
        | ProviderId::Greenhouse
        | ProviderId::Lever
        | ProviderId::Ashby
        | ProviderId::News => None,
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Resolves base URLs and keys: in real mode environment > pipeline file > real host.
/// Against the simulator, rate limits and quotas apply only if the pipeline says so.
fn endpoints(pipeline: &LoadedPipeline, simulator: Option<&Simulator>) -> anyhow::Result<Vec<Endpoint>> {
    let sim_keys = simulated_keys();
    let mut out = Vec::new();
    for id in ProviderId::ALL {
        let mut settings = pipeline.pipeline.providers.get(id).clone();
        if simulator.is_some() && !pipeline.pipeline.simulator.honour_limits {
            settings.rate = Default::default();
        }
        let (base, key) = match simulator {
            Some(sim) => {
                let key = match id {
                    ProviderId::BuiltWith => Some(sim_keys.builtwith.clone()),
                    ProviderId::SimilarWeb => Some(sim_keys.similarweb.clone()),
                    _ => None,
                };
                (sim.base_url(), key)
            }
            None => {
                let base = env_nonempty(id.base_url_env())
                    .or_else(|| settings.base_url.clone())
                    .unwrap_or_else(|| id.default_base_url().to_string());
                let key = match id.key_env() {
                    Some(var) => Some(env_nonempty(var).with_context(|| {
                        format!("real providers need {var} in the environment (or a .env file); none is set")
                    })?),
                    None => None,
                };
                (base, key)
            }
        };
        let url = match base.as_str() {
            "" => None,
            base => {
                Some(url::Url::parse(base).with_context(|| format!("{} base URL {base:?} is not a URL", id.name()))?)
            }
        };
        let key = key.and_then(|k| key_param(id).map(|param| (param, k)));
        let stop_signal: crate::fetch::StopSignal = match id {
            ProviderId::BuiltWith | ProviderId::SimilarWeb => providers::stop_signal_403,
            ProviderId::YahooFinance => providers::yahoo::stop_signal,
            // Public posting APIs take no key and have no quota to exhaust.
            ProviderId::Greenhouse | ProviderId::Lever | ProviderId::Ashby | ProviderId::News => |_, _| None,
        };
        out.push(Endpoint::new(id, url, key, settings, stop_signal));
    }
    Ok(out)
}

/// SimilarWeb's window: the three complete months before the run date.
fn month_window(date: NaiveDate) -> (String, String) {
    let index = date.year() * 12 + date.month0() as i32;
    let month = |i: i32| format!("{:04}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1);
    (month(index - 3), month(index - 1))
}

/// Everything a run and its plan read before any call: configuration first (bad
/// configuration stops here), then the store's snapshots and the book.
pub(crate) struct Prepared {
    pub(crate) pipeline: LoadedPipeline,
    pub(crate) store: Store,
    pub(crate) date: String,
    pub(crate) previous: Vec<Manifest>,
    pub(crate) book: Book,
    /// Indexes into `book.targets` of the targets this run refreshes.
    pub(crate) work: Vec<usize>,
    pub(crate) excluded_customers: usize,
    pub(crate) simulated: bool,
    pub(crate) force: Vec<String>,
    pub(crate) only: Option<Vec<String>>,
}

impl Prepared {
    pub(crate) fn work(&self) -> Vec<&Target> {
        self.work.iter().map(|i| &self.book.targets[*i]).collect()
    }

    pub(crate) fn context(&self, date: NaiveDate, fetched_at_ms: i64) -> Context {
        let p = &self.pipeline.pipeline;
        Context {
            detection: p.detection.clone(),
            hiring: p.hiring.clone(),
            triggers: p.triggers.clone(),
            customers: self.book.customers.clone(),
            builtwith_version: p
                .providers
                .builtwith
                .options
                .get("api_version")
                .cloned()
                .unwrap_or_else(|| "v21".into()),
            similarweb_country: p
                .providers
                .similarweb
                .options
                .get("country")
                .cloned()
                .unwrap_or_else(|| "world".into()),
            months: month_window(date),
            fetched_at_ms,
            snapshot_id: self.date.clone(),
        }
    }

    /// Month-to-date spend and today's calls of the account this run talks to, from
    /// every committed generation's ledger (a replaced snapshot's calls were paid too).
    pub(crate) async fn account_usage(&self) -> anyhow::Result<(BTreeMap<ProviderId, f64>, UsedToday)> {
        let mode = if self.simulated { "simulated" } else { "real" };
        let all = self.store.all_generations().await?;
        let same_account: Vec<Manifest> = all.into_iter().filter(|m| m.providers == mode).collect();
        spent_before(&self.store, &same_account, &self.date).await
    }

    /// What the latest snapshot up to `date` still covers, by the pipeline's freshness.
    pub(crate) async fn carry(&self, date: NaiveDate) -> anyhow::Result<Carry> {
        let p = &self.pipeline.pipeline;
        let previous = self.previous.iter().rev().find(|m| m.date <= self.date);
        let schemas =
            Tables::default().batches(0, "")?.into_iter().map(|(table, batch)| (table, batch.schema())).collect();
        let only = self.only.as_deref();
        Ok(freshness::plan(&self.store, previous, date, &p.freshness, &self.force, only, &schemas).await?)
    }

    /// The budget caps: the pipeline's, except against the simulator unless it honours limits.
    pub(crate) fn budget_settings(&self, id: ProviderId) -> BudgetSettings {
        let p = &self.pipeline.pipeline;
        let mut budget = p.providers.get(id).budget.clone();
        if self.simulated && !p.simulator.honour_limits {
            (budget.per_run_usd, budget.per_month_usd) = (None, None);
        }
        budget
    }

    fn budget(&self, month_to_date: &BTreeMap<ProviderId, f64>) -> Budget {
        Budget::new(ProviderId::ALL.iter().map(|id| (*id, self.budget_settings(*id))).collect(), month_to_date)
    }
}

pub(crate) async fn prepare(selection: &Selection) -> anyhow::Result<Prepared> {
    let pipeline = LoadedPipeline::load(&selection.pipeline)?;
    let p = &pipeline.pipeline;
    let store = Store::open(&selection.store)?;
    let previous = store.snapshots().await?;
    let targets_path = selection.targets.clone().unwrap_or_else(|| pipeline.resolve(&p.inputs.targets));
    let mut book =
        Book::load(&targets_path, &pipeline.resolve(&p.inputs.customers), &pipeline.resolve(&p.inputs.tickers))?;
    if let Some(path) = &p.inputs.job_boards {
        book.load_job_boards(&pipeline.resolve(path))?;
    }
    if let Some(path) = &p.inputs.news_feeds {
        book.load_news_feeds(&pipeline.resolve(path))?;
    }
    for rejected in &book.rejected {
        tracing::warn!(target: "partnerforge::seed", "skipped {rejected}");
    }
    let mut work: Vec<usize> =
        (0..book.targets.len()).filter(|i| !book.customers.contains(&book.targets[*i].domain)).collect();
    let excluded_customers = book.targets.len() - work.len();
    if let Some(limit) = selection.limit {
        work.truncate(limit);
    }
    let simulated = match selection.providers {
        ProvidersMode::Simulated => true,
        ProvidersMode::Real => false,
        ProvidersMode::Auto => {
            ProviderId::ALL.iter().filter_map(|id| id.key_env()).all(|var| env_nonempty(var).is_none())
        }
    };
    // Module names on the command line and in the freshness table must exist.
    let known: Vec<&str> = modules::REGISTRY.iter().map(|m| m.id).collect();
    let named = selection.force.iter().chain(selection.only.iter().flatten());
    if let Some(unknown) = named.clone().find(|m| !known.contains(&m.as_str())) {
        bail!("no module {unknown:?}: the modules are {}", known.join(", "));
    }
    if let Some(unknown) = p.freshness.keys().find(|m| !known.contains(&m.as_str())) {
        bail!(
            "{}: freshness.{unknown}: no such module (the modules are {})",
            selection.pipeline.display(),
            known.join(", ")
        );
    }
    Ok(Prepared {
        force: selection.force.clone(),
        only: selection.only.clone(),
        date: selection.date.to_string(),
        pipeline,
        store,
        previous,
        book,
        work,
        excluded_customers,
        simulated,
    })
}

/// One refresh under the pipeline's lock: the lock is taken before anything is
/// read from the store and given back however the refresh ends.
pub async fn run(mut options: RunOptions) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let now = Utc::now();
    // A resumed run takes its id and its parameters from what it recorded.
    let resumed = match &options.resume {
        Some(which) => {
            let store = Store::open(&options.selection.store)?;
            let run_id = match which.as_str() {
                "last" => checkpoint::last_unfinished(&store)
                    .await?
                    .with_context(|| format!("store {} has no unfinished run to resume", store.url()))?,
                id => id.to_string(),
            };
            let (spec, checkpoints) = Checkpoints::resume(&store, &run_id).await?;
            options.selection.pipeline = spec.pipeline.clone();
            options.selection.date =
                spec.date.parse().with_context(|| format!("run {run_id}: bad date {}", spec.date))?;
            options.selection.limit = spec.limit;
            options.selection.targets = spec.targets.clone();
            options.selection.providers = spec.providers_mode();
            options.selection.force = spec.force.clone();
            options.selection.only = spec.only.clone();
            options.replace = spec.replace;
            options.faults = spec.faults.clone();
            println!("resuming run {run_id}: {} calls already made are reused", checkpoints.resumed_calls());
            Some((run_id, checkpoints))
        }
        None => None,
    };
    let run_id = resumed.as_ref().map(|(id, _)| id.clone()).unwrap_or_else(|| run_id(now));
    let prepared = prepare(&options.selection).await?;
    let pipeline = &prepared.pipeline.pipeline;
    prepared.store.check_conditional_writes().await?;
    let ttl = std::time::Duration::from_secs(pipeline.run.lock_ttl_minutes * 60);
    // Resuming a run that died means breaking the lock it left (never a live one).
    let break_lock = options.break_lock || resumed.is_some();
    let (lock, broken) = prepared.store.acquire_lock(&pipeline.name, &run_id, ttl, break_lock).await?;
    if let Some(holder) = broken {
        println!("broke the lock held by {holder}");
    }
    let store_for_release = prepared.store.clone();
    // Everything under the lock runs in `locked`; the lock is given back whatever it returns.
    let result = locked(&options, prepared, resumed, &run_id, now, started).await;
    let released = store_for_release.release_lock(lock).await;
    let report = result?;
    released?;
    Ok(report)
}

/// The part of a run that holds the lock.
async fn locked(
    options: &RunOptions,
    prepared: Prepared,
    resumed: Option<(String, Checkpoints)>,
    run_id: &str,
    now: chrono::DateTime<Utc>,
    started: Instant,
) -> anyhow::Result<RunReport> {
    let run_id = run_id.to_string();
    let mut checkpoints = match resumed {
        Some((_, checkpoints)) => checkpoints,
        None => {
            let spec = RunSpec {
                run_id: run_id.clone(),
                pipeline: options.selection.pipeline.clone(),
                date: options.selection.date.to_string(),
                limit: options.selection.limit,
                targets: options.selection.targets.clone(),
                providers: if prepared.simulated { "simulated".into() } else { "real".into() },
                force: options.selection.force.clone(),
                only: options.selection.only.clone(),
                replace: options.replace,
                faults: options.faults.clone(),
                started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            Checkpoints::start(&prepared.store, &spec).await?
        }
    };
    // What the store holds is read again under the lock: another run may have just committed.
    let prepared = Prepared { previous: prepared.store.snapshots().await?, ..prepared };
    // SIGINT/SIGTERM: no new call starts, the calls under way finish and are
    // checkpointed, then the run stops before its commit.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signal = Arc::new(std::sync::Mutex::new(None::<&'static str>));
    let listener = {
        let (stop, signal) = (stop.clone(), signal.clone());
        tokio::spawn(async move {
            let name = interrupted().await;
            *signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let result = refresh(options, &prepared, &run_id, now, started, &mut checkpoints, stop).await;
    listener.abort();
    let report = match (result, *signal.lock().unwrap_or_else(|e| e.into_inner())) {
        (Err(_), Some(name)) => bail!(
            "interrupted by {name}: run {run_id} stopped before its commit, so no snapshot for {} was written; \
             the calls it finished are checkpointed: `partnerforge run --resume {run_id}` continues it",
            prepared.date
        ),
        (result, _) => result?,
    };
    // The snapshot is committed: its checkpoints are no longer needed (a failure here loses nothing).
    if let Err(e) = checkpoint::discard(&prepared.store, &run_id).await {
        tracing::warn!("could not remove the checkpoints of {run_id}: {e}");
    }
    Ok(report)
}

/// Waits for SIGINT or SIGTERM and names it.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn refresh(
    options: &RunOptions,
    prepared: &Prepared,
    run_id: &str,
    now: chrono::DateTime<Utc>,
    started: Instant,
    checkpoints: &mut Checkpoints,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<RunReport> {
    let run_id = run_id.to_string();
    let waves = modules::waves(modules::REGISTRY)?;
    let (pipeline, store, date, book) = (&prepared.pipeline, &prepared.store, prepared.date.clone(), &prepared.book);
    let p = &pipeline.pipeline;
    let previous = &prepared.previous;
    if let Some(existing) = previous.iter().find(|m| m.date == date)
        && !options.replace
    {
        bail!(
            "store {} already has a snapshot for {date} (generation {}, run {}); pass --replace to commit a new generation beside it",
            store.url(),
            existing.generation,
            existing.run_id
        );
    }
    let previous_snapshot = previous.iter().rev().find(|m| m.date < date).map(|m| m.snapshot_id.clone());
    let work = prepared.work();
    let excluded_customers = prepared.excluded_customers;
    let simulated = prepared.simulated;

    let simulator = if simulated {
        let listen = "127.0.0.1:0".parse().context("loopback address")?;
        let mut faults = p.simulator.faults.clone();
        crate::config::apply_faults(&mut faults, &options.faults).map_err(anyhow::Error::msg)?;
        let config =
            SimulatorConfig { seed: p.simulator.seed, as_of: options.selection.date, keys: simulated_keys(), faults };
        let sim = Simulator::start(listen, config).await.context("cannot start the simulated providers")?;
        println!("providers: simulated (no provider API keys set), serving a world as of {date} on {}", sim.base_url());
        Some(sim)
    } else {
        println!("providers: real (keys from the environment)");
        None
    };
    // Spend and quota are the account's: only earlier runs against the same providers count.
    let (month_to_date, mut used_today) = prepared.account_usage().await?;
    // A resumed run already spent what its reused calls cost.
    let budget = prepared.budget(&month_to_date);
    for (provider, (usd, sent)) in checkpoints.usage() {
        budget.spent_earlier(provider, usd);
        *used_today.entry(provider).or_default() += sent;
    }
    let fetcher = Fetcher::new(
        endpoints(pipeline, simulator.as_ref())?,
        p.fetch.concurrency,
        budget,
        &used_today,
        Arc::new(TokioClock::default()),
    )?
    .stop_on(stop);
    let context = prepared.context(options.selection.date, now.timestamp_millis());

    let carry = prepared.carry(options.selection.date).await?;
    if let Some(from) = &carry.from {
        tracing::info!(pairs = carry.pairs(), from = %from.snapshot_id, "carrying fresh module results forward");
    }
    let mut planner = Planner::new(&run_id, context, book, &carry);
    // Fresh tech stacks that run Algolia: those domains get no calls at all.
    planner.not_targets.extend(carried_algolia(store, &carry, &date).await?);
    let mut refresh = Refresh { planner, fetcher, tables: Tables::default(), ledger: Vec::new() };
    for (w, wave) in waves.iter().enumerate() {
        let wave_started = Instant::now();
        let plan = refresh.planner.plan_wave(wave, &work);
        refresh.ledger.append(&mut refresh.planner.not_made);
        let ids: Vec<&str> = wave.iter().map(|m| m.id).collect();
        tracing::info!(wave = w + 1, modules = %ids.join(","), calls = plan.calls.len(), "fetching");
        refresh.run_wave(plan, checkpoints).await?;
        tracing::info!(wave = w + 1, seconds = wave_started.elapsed().as_secs_f64(), "wave done");
    }
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    let Refresh { planner: Planner { context, failed, not_targets, .. }, tables, ledger, .. } = refresh;

    // Write the data files, then the manifest.
    let generation = store.next_generation(&date).await?;
    let folder = manifest::folder(&date, generation);
    let mut files: Vec<FileEntry> = Vec::new();
    let mut module_bytes: HashMap<&str, Bytes> = HashMap::new();
    for (table, batch) in tables.batches(context.fetched_at_ms, &date)? {
        // This run's rows, and the previous snapshot's rows that are still fresh.
        let mut batches = freshness::carried_rows(store, &carry, table, &date).await?;
        batches.push(batch);
        let merged = arrow::compute::concat_batches(&batches[batches.len() - 1].schema(), &batches)
            .map_err(|e| anyhow::anyhow!("merging carried rows of {table}: {e}"))?;
        let bytes = to_parquet(&merged)?;
        let mut entry = store.put_table(&folder, table, bytes.clone(), merged.num_rows()).await?;
        entry.schema = Some(schema_fingerprint(&merged.schema()));
        files.push(entry);
        module_bytes.insert(table, bytes);
    }
    let ledger_batch = ledger_batch(&ledger, &date)?;
    files.push(store.put_table(&folder, "api_calls", to_parquet(&ledger_batch)?, ledger_batch.num_rows()).await?);

    let book_rows = book_rows(&work, book, &failed);
    let module_files = module_files(&module_bytes);
    let mut scored = transform::assemble(&book_rows, &module_files, &pipeline.model, &date)
        .context("assembling and scoring the targets table")?;
    files.push(store.put_table(&folder, "targets", transform::to_parquet(&mut scored)?, scored.height()).await?);

    let tiers = tier_counts(&pipeline.model, &scored)?;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    // A failure is a call that ended without an answer (retried attempts are not counted twice).
    for row in ledger.iter().filter(|r| r.outcome.is_failure()) {
        *failures.entry(row.provider.name().to_string()).or_default() += 1;
    }
    let counts = Counts {
        book: book.targets.len() as u64,
        targets: scored.height() as u64,
        excluded_customers: excluded_customers as u64,
        excluded_algolia: not_targets.len() as u64,
        rejected_rows: book.rejected.len() as u64,
        carried_forward: carry.pairs() as u64,
        tiers,
        calls: ledger.iter().filter(|r| r.outcome.was_sent()).count() as u64,
        // + 0.0 turns a rounded -0.0 into 0.0.
        spend_usd: (ledger.iter().map(|r| r.cost_usd).sum::<f64>() * 100.0).round() / 100.0 + 0.0,
        failures,
    };
    let manifest = Manifest {
        schema_version: manifest::SCHEMA_VERSION,
        snapshot_id: date.clone(),
        date: date.clone(),
        generation,
        run_id: run_id.clone(),
        created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        status: if counts.failures.is_empty() { "completed".into() } else { "partial".into() },
        previous_snapshot,
        carried_from: carry.from.as_ref().filter(|_| carry.pairs() > 0).map(|m| m.snapshot_id.clone()),
        rebuilt_from: None,
        pipeline: PipelineRef { name: p.name.clone(), version: p.version, sha256: pipeline.sha256.clone() },
        scoring_model: ModelRef { name: pipeline.model.name.clone(), version: pipeline.model.version },
        providers: if simulated { "simulated".into() } else { "real".into() },
        files,
        counts,
    };
    store.commit(&manifest).await?;
    Ok(RunReport {
        location: format!("{}/{folder}/", store.url().trim_end_matches('/')),
        manifest,
        wall_secs: started.elapsed().as_secs_f64(),
        simulated,
    })
}

/// Decides what each wave calls: the same code for `run` and `plan`.
pub(crate) struct Planner<'a> {
    run_id: String,
    context: Context,
    book: &'a Book,
    /// Modules that failed, or could not run, per domain.
    pub(crate) failed: BTreeMap<String, BTreeSet<&'static str>>,
    /// Domains known not to be targets (running Algolia): later waves skip them.
    pub(crate) not_targets: BTreeSet<String>,
    /// Ledger rows of calls planned but not made (a dependency failed).
    pub(crate) not_made: Vec<LedgerRow>,
    /// What the previous snapshot still covers: those pairs get no call.
    carry: &'a Carry,
}

/// The state of one refresh as it goes: rows so far and the ledger.
struct Refresh<'a> {
    planner: Planner<'a>,
    fetcher: Fetcher,
    tables: Tables,
    ledger: Vec<LedgerRow>,
}

/// A wave's work: the calls to make, one per (provider, endpoint, domain), and
/// which module of which target reads which of them.
pub(crate) struct WavePlan<'t> {
    pub(crate) calls: Vec<Call>,
    reads: Vec<(&'static Module, &'t Target, Vec<usize>)>,
}

pub(crate) fn subject<'t>(book: &'t Book, target: &'t Target) -> Subject<'t> {
    Subject {
        domain: &target.domain,
        ticker: book.tickers.get(&target.domain).map(String::as_str),
        job_board: book.job_boards.get(&target.domain).map(|(platform, board)| (*platform, board.as_str())),
        news_feed: book.news_feeds.get(&target.domain).map(String::as_str),
    }
}

impl<'a> Planner<'a> {
    pub(crate) fn new(run_id: &str, context: Context, book: &'a Book, carry: &'a Carry) -> Self {
        Self {
            run_id: run_id.to_string(),
            context,
            book,
            failed: BTreeMap::new(),
            not_targets: BTreeSet::new(),
            not_made: Vec::new(),
            carry,
        }
    }

    /// Plans a wave. A module that does not apply to a target (no calls) is left
    /// out; one whose dependency failed is not called: its calls are recorded as
    /// `skipped_dependency` and the module as failed.
    pub(crate) fn plan_wave<'t>(&mut self, wave: &[&'static Module], work: &[&'t Target]) -> WavePlan<'t> {
        let mut plan = WavePlan { calls: Vec::new(), reads: Vec::new() };
        let mut index: HashMap<(ProviderId, &'static str, String), usize> = HashMap::new();
        for target in work {
            if self.not_targets.contains(&target.domain) {
                continue; // already a customer (runs Algolia): not worth a call
            }
            for module in wave {
                if self.carry.is_fresh(module.id, &target.domain) || self.carry.excludes(module.id) {
                    continue; // still fresh (carried forward), or left alone by --only
                }
                let module_calls = (module.calls)(&self.context, &subject(self.book, target));
                if module_calls.is_empty() {
                    continue; // does not apply (e.g. financials without a ticker)
                }
                let failed = self.failed.get(&target.domain);
                if let Some(primary) = module.fallback_for
                    && !failed.is_some_and(|f| f.contains(primary))
                {
                    continue; // the module it stands in for did not fail
                }
                let blocked: Vec<&str> =
                    module.depends_on.iter().copied().filter(|d| failed.is_some_and(|f| f.contains(d))).collect();
                if !blocked.is_empty() {
                    let reason = format!("{} failed for this domain", blocked.join(","));
                    for call in module_calls {
                        let row =
                            LedgerRow::not_made(&self.run_id, &call, module.id, Outcome::SkippedDependency, &reason);
                        self.not_made.push(row);
                    }
                    self.failed.entry(target.domain.clone()).or_default().insert(module.id);
                    continue;
                }
                let mut slots = Vec::new();
                for mut call in module_calls {
                    let key = (call.provider, call.endpoint, call.domain.clone());
                    let slot = *index.entry(key).or_insert_with(|| {
                        call.modules.clear();
                        plan.calls.push(call);
                        plan.calls.len() - 1
                    });
                    let modules_of = &mut plan.calls[slot].modules;
                    if !modules_of.split(',').any(|m| m == module.id) {
                        if !modules_of.is_empty() {
                            modules_of.push(',');
                        }
                        modules_of.push_str(module.id);
                    }
                    slots.push(slot);
                }
                plan.reads.push((module, target, slots));
            }
        }
        plan
    }
}

impl Refresh<'_> {
    /// Makes the wave's calls, records each in the ledger (and its body), and
    /// lets every module read its replies; a module with a failed call is empty.
    /// Makes the wave's calls in checkpointed batches; a call a resumed run already
    /// made is not made again.
    async fn run_wave(&mut self, plan: WavePlan<'_>, checkpoints: &mut Checkpoints) -> anyhow::Result<()> {
        // Calls stream on; every CHECKPOINT_EVERY finished ones are checkpointed.
        let todo: Vec<Call> = plan.calls.iter().filter(|c| checkpoints.finished(c).is_none()).cloned().collect();
        let mut made: HashMap<String, Exchange> = HashMap::with_capacity(todo.len());
        let mut batch: Vec<(Call, Exchange)> = Vec::with_capacity(CHECKPOINT_EVERY);
        {
            let mut finished = std::pin::pin!(self.fetcher.stream(todo)?);
            while let Some((_, call, exchange)) = finished.next().await {
                batch.push((call, exchange));
                if batch.len() >= CHECKPOINT_EVERY {
                    checkpoints.write(&batch).await?;
                    made.extend(batch.drain(..).map(|(call, exchange)| (checkpoint::call_key(&call), exchange)));
                }
            }
        }
        checkpoints.write(&batch).await?;
        made.extend(batch.drain(..).map(|(call, exchange)| (checkpoint::call_key(&call), exchange)));
        if self.fetcher.stopped() {
            bail!("stopped: the calls under way finished and are checkpointed");
        }
        let mut exchanges: Vec<(Call, Exchange)> = Vec::with_capacity(plan.calls.len());
        for call in &plan.calls {
            let exchange = match made.remove(&checkpoint::call_key(call)) {
                Some(exchange) => exchange,
                None => checkpoints.finished(call).cloned().context("a call neither made nor checkpointed")?,
            };
            exchanges.push((call.clone(), exchange));
        }
        let mut parsed = Vec::with_capacity(exchanges.len());
        for (call, exchange) in &exchanges {
            parsed.push(self.record(call, exchange)?);
        }
        let planner = &mut self.planner;
        for (module, target, slots) in plan.reads {
            if slots.iter().any(|s| parsed[*s].is_err()) {
                planner.failed.entry(target.domain.clone()).or_default().insert(module.id);
                continue;
            }
            let replies: Vec<&Parsed> = slots.iter().filter_map(|s| parsed[*s].as_ref().ok()).collect();
            (module.normalize)(&planner.context, &subject(planner.book, target), &replies, &mut self.tables);
            let outcome = if replies.iter().all(|r| modules::is_no_data(r)) { "no_data" } else { "ok" };
            let fetched_on = planner.context.snapshot_id.clone();
            self.tables.fetches.push(FetchRow {
                module: module.id,
                domain: target.domain.clone(),
                fetched_on,
                outcome,
            });
        }
        for spend in self.tables.tech_spend.iter().filter(|s| s.runs_algolia) {
            planner.not_targets.insert(spend.domain.clone());
        }
        Ok(())
    }

    /// Parses a call's answer and records every attempt in the ledger (and each
    /// body as received); a call not made gets one row saying why.
    fn record(&mut self, call: &Call, exchange: &Exchange) -> anyhow::Result<Result<Parsed, (Outcome, String)>> {
        let endpoint = self.fetcher.endpoint(call.provider)?;
        let result = match (&exchange.ending, exchange.answer()) {
            (Ending::Answered, Some(reply)) => modules::parse(&self.planner.context, call, reply),
            (Ending::GaveUp(reason), _) => {
                let last = exchange.attempts.last().map(|a| attempt_error(&a.reply)).unwrap_or_default();
                Err((Outcome::Failed, format!("{last}; {reason}")))
            }
            (Ending::Skipped(outcome, reason), _) => Err((*outcome, reason.clone())),
            (Ending::Answered, None) => Err((Outcome::Failed, "no reply".into())),
        };
        let last = exchange.attempts.len();
        for (i, attempt) in exchange.attempts.iter().enumerate() {
            let reply = &attempt.reply;
            let final_attempt = i + 1 == last && !matches!(exchange.ending, Ending::Skipped(..));
            let (outcome, error) = match (&result, final_attempt) {
                (_, false) => (Outcome::Retried, Some(attempt_error(reply))),
                (Ok(p), true) if modules::is_no_data(p) => (Outcome::NoData, None),
                (Ok(_), true) => (Outcome::Ok, None),
                (Err((outcome, message)), true) => (*outcome, Some(message.clone())),
            };
            self.ledger.push(LedgerRow {
                run_id: self.planner.run_id.clone(),
                provider: call.provider,
                endpoint: call.endpoint,
                domain: call.domain.clone(),
                modules: call.modules.clone(),
                attempt: attempt.number,
                http_status: reply.status,
                outcome,
                error: error.map(|e| endpoint.redact(&e)),
                latency_ms: reply.latency.as_secs_f64() * 1000.0,
                waited_ms: attempt.waited.as_secs_f64() * 1000.0,
                cost_usd: attempt.cost_usd,
                bytes: reply.body.len() as u64,
                called_at: reply.called_at,
            });
            if reply.status.is_some() {
                self.tables.raw.push(RawRow {
                    provider: call.provider.name(),
                    endpoint: call.endpoint,
                    domain: call.domain.clone(),
                    modules: call.modules.clone(),
                    http_status: reply.status,
                    fetched_at_ms: reply.called_at.timestamp_millis(),
                    body: endpoint.redact(&String::from_utf8_lossy(&reply.body)),
                });
            }
        }
        if let Ending::Skipped(outcome, reason) = &exchange.ending {
            let mut row = LedgerRow::not_made(&self.planner.run_id, call, &call.modules, *outcome, reason);
            row.attempt = last as u32 + 1;
            self.ledger.push(row);
        }
        Ok(result)
    }
}

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
        })
        .collect()
}

/// The module tables the targets table is assembled from.
pub(crate) fn module_files(bytes: &HashMap<&str, Bytes>) -> ModuleFiles {
    let take = |name: &str| bytes.get(name).cloned().unwrap_or_default();
    ModuleFiles {
        company: take("company"),
        tech_spend: take("tech_spend"),
        traffic: take("traffic"),
        traffic_sources: take("traffic_sources"),
        financials: take("financials"),
        hiring: take("hiring"),
    }
}

/// Targets per tier of the model, best tier first.
pub(crate) fn tier_counts(
    model: &crate::config::ScoringModel,
    scored: &polars::prelude::DataFrame,
) -> anyhow::Result<Vec<TierCount>> {
    let mut tiers: Vec<TierCount> =
        model.tiers.iter().map(|t| TierCount { tier: t.tier, name: t.name.clone(), targets: 0 }).collect();
    let tier_column = scored.column("icp_tier")?.i32()?;
    for tier in (0..tier_column.len()).filter_map(|i| tier_column.get(i)) {
        if let Some(count) = tiers.iter_mut().find(|t| t.tier == tier) {
            count.targets += 1;
        }
    }
    Ok(tiers)
}

/// Domains whose carried-forward tech stack runs Algolia.
async fn carried_algolia(store: &Store, carry: &Carry, date: &str) -> anyhow::Result<Vec<String>> {
    let mut domains = Vec::new();
    for batch in freshness::carried_rows(store, carry, "tech_spend", date).await? {
        let frame = transform::read_parquet(to_parquet(&batch)?)?
            .filter(polars::prelude::col("runs_algolia"))
            .select([polars::prelude::col("domain")])
            .collect()?;
        let column = frame.column("domain")?.str()?.clone();
        domains.extend((0..column.len()).filter_map(|i| column.get(i)).map(str::to_string));
    }
    Ok(domains)
}

/// What went wrong with one attempt, in a line: the transport error or the status.
fn attempt_error(reply: &crate::fetch::Reply) -> String {
    match (&reply.error, reply.status) {
        (Some(error), _) => error.clone(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => "no reply".into(),
    }
}

/// Month-to-date spend and today's call count per provider, from the ledgers of
/// the given snapshots.
async fn spent_before(
    store: &Store,
    snapshots: &[Manifest],
    date: &str,
) -> anyhow::Result<(BTreeMap<ProviderId, f64>, UsedToday)> {
    let month = date.get(..7).unwrap_or(date);
    let mut spent: BTreeMap<ProviderId, f64> = BTreeMap::new();
    let mut today: UsedToday = BTreeMap::new();
    // A rebuilt generation carries a copy of its original's ledger: counted once.
    for manifest in snapshots.iter().filter(|m| m.date.starts_with(month) && m.rebuilt_from.is_none()) {
        let Some(file) = manifest.file("api_calls") else { continue };
        let bytes = store.get(&file.path).await?;
        let calls = transform::read_parquet(bytes)?
            .group_by([polars::prelude::col("provider")])
            .agg([
                polars::prelude::col("cost_usd").sum().alias("spent"),
                polars::prelude::col("http_status")
                    .is_not_null()
                    .sum()
                    .cast(polars::prelude::DataType::Float64)
                    .alias("made"),
            ])
            .collect()?;
        let providers = calls.column("provider")?.str()?.clone();
        let costs = calls.column("spent")?.f64()?.clone();
        let made = calls.column("made")?.f64()?.clone();
        for i in 0..calls.height() {
            let Some(id) = providers.get(i).and_then(|name| ProviderId::ALL.into_iter().find(|p| p.name() == name))
            else {
                continue;
            };
            *spent.entry(id).or_default() += costs.get(i).unwrap_or(0.0);
            if manifest.date == date {
                *today.entry(id).or_default() += made.get(i).unwrap_or(0.0) as u64;
            }
        }
    }
    Ok((spent, today))
}

fn ledger_batch(rows: &[LedgerRow], snapshot_id: &str) -> anyhow::Result<arrow::record_batch::RecordBatch> {
    Ok(TableBuilder::new()
        .text("run_id", rows.iter().map(|r| Some(&r.run_id)))
        .text("snapshot_id", rows.iter().map(|_| Some(snapshot_id)))
        .text("provider", rows.iter().map(|r| Some(r.provider.name())))
        .text("endpoint", rows.iter().map(|r| Some(r.endpoint)))
        .text("domain", rows.iter().map(|r| Some(&r.domain)))
        .text("modules", rows.iter().map(|r| Some(&r.modules)))
        .int("attempt", rows.iter().map(|r| Some(i64::from(r.attempt))))
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

/// The end-of-run summary, as printed on stdout.
pub fn summary(report: &RunReport) -> String {
    let m = &report.manifest;
    let c = &m.counts;
    let tiers: Vec<String> = c.tiers.iter().map(|t| format!("{} {}", t.name, t.targets)).collect();
    let failures = if c.failures.is_empty() {
        "none".to_string()
    } else {
        c.failures.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
    };
    format!(
        "snapshot {} committed (generation {}, {}, run {})\n\
         \x20 targets scored  {} (book {}, existing customers excluded {}, running Algolia excluded {}, rows rejected {})\n\
         \x20 tiers           {}\n\
         \x20 carried forward {} module results, still fresh{}\n\
         \x20 calls           {} made, ${:.2} spent{}\n\
         \x20 failures        {}\n\
         \x20 wall time       {:.1} s\n\
         \x20 location        {}",
        m.snapshot_id,
        m.generation,
        m.status,
        m.run_id,
        c.targets,
        c.book,
        c.excluded_customers,
        c.excluded_algolia,
        c.rejected_rows,
        tiers.join(" · "),
        c.carried_forward,
        m.carried_from.as_deref().map(|s| format!(", from snapshot {s}")).unwrap_or_default(),
        c.calls,
        c.spend_usd,
        if report.simulated { " (simulated providers: nothing was billed)" } else { "" },
        failures,
        report.wall_secs,
        report.location,
    )
}
