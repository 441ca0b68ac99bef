//! `partnerforge run`: one refresh, end to end — read the book, fetch wave by
//! wave, keep every answer in the run's journal, write the normalized tables
//! and the ledger, assemble and score the targets with Polars, and commit the
//! snapshot (data files first, the manifest last and create-only).
//!
//! The pieces: `prepare` (configuration, book, refusals — before the lock),
//! `waves` (plan and execute each wave's calls, record them), `journal`
//! (durable answers, resume), `commit` (the one commit path, shared with
//! `rebuild`). This file holds them together under the run's lock, with one
//! cancellation token for SIGINT/SIGTERM.

pub mod changes;
mod commit;
pub mod discovery;
pub mod history;
pub mod journal;
mod prepare;
pub mod spend;
mod stage;
mod waves;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{ProviderAccount, ProvidersMode};
use crate::fetch::Fetcher;
use crate::fetch::clock::TokioClock;
use crate::freshness;
use crate::modules::{self, Tables};
use crate::simulate::{Simulator, SimulatorConfig};
use crate::store::lock::RunLock;
use crate::store::manifest::{Counts, Manifest, Status};
use crate::store::{Store, StoreError};

pub(crate) use commit::{Draft, TableFile, book_rows, commit, ledger_batch};
use journal::{Journal, RunSpec};
pub(crate) use prepare::{Prepared, prepare};
use stage::Stage;
pub(crate) use waves::{Planner, subject};

/// What a refresh covers: the same for `run` and `plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Break a lock left by a run that is gone (no heartbeat within its TTL, or dead on this host).
    pub break_lock: bool,
    /// Simulator faults, `provider.key=value`, over the pipeline's.
    pub faults: Vec<String>,
    /// Continue a run that died: its id, or `last`. Its own parameters are used.
    pub resume: Option<String>,
    /// Who or what started it, for its history record (else the daemon's job, or the OS user).
    pub triggered_by: Option<String>,
}

/// What a run did, for the summary and the tests.
#[derive(Debug)]
pub struct RunReport {
    pub manifest: Manifest,
    pub location: String,
    pub wall_secs: f64,
    /// What the alert delivery after the commit did (`None`: the pipeline raises no alerts).
    pub delivery: Option<crate::alerts::DeliveryReport>,
    /// Each provider's circuit breaker as the run left it.
    pub circuits: std::collections::BTreeMap<String, history::Circuit>,
}

/// A run that did not start because the store said no: its date is taken. (A held
/// lock is `StoreError::Locked`.) Nothing was called and nothing is left behind.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "store {store} already has a snapshot for {date} (generation {generation}, run {run_id}); pass --replace to commit a new generation beside it"
    )]
    DateTaken { store: String, date: String, generation: u32, run_id: String },
}

/// A run stopped by SIGINT or SIGTERM before its commit.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted by {signal}: run {run_id} stopped before its commit, so no snapshot for {date} was written; {}",
    if *resumable {
        format!("the calls it finished are in its journal: `partnerforge run --resume {run_id}` continues it")
    } else {
        "it had not started: nothing was called or written".to_string()
    }
)]
pub struct Interrupted {
    pub signal: &'static str,
    pub run_id: String,
    pub date: String,
    /// Whether it left a journal to resume.
    pub resumable: bool,
}

/// How `partnerforge run` exits, for an operator's cron.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: committed, every call answered.
    Completed = 0,
    /// 1: failed (bad configuration, a store error, a bug): nothing committed.
    Failed = 1,
    /// 3: committed, but some provider calls (or alert deliveries) failed (see the summary).
    Partial = 3,
    /// 4: refused before any call: the pipeline's lock is held, or the date has a snapshot.
    Refused = 4,
    /// 5: interrupted by SIGINT/SIGTERM; `--resume` continues it.
    Interrupted = 5,
}

impl Exit {
    pub fn of_report(report: &RunReport) -> Self {
        let undelivered = report.delivery.as_ref().is_some_and(|d| !d.failed.is_empty());
        match report.manifest.status {
            Status::Completed if !undelivered => Self::Completed,
            _ => Self::Partial,
        }
    }

    pub fn of_error(error: &anyhow::Error) -> Self {
        if error.downcast_ref::<Interrupted>().is_some() {
            Self::Interrupted
        } else if error.downcast_ref::<Refused>().is_some()
            || matches!(error.downcast_ref::<StoreError>(), Some(StoreError::Locked { .. }))
        {
            Self::Refused
        } else {
            Self::Failed
        }
    }
}

fn run_id(now: chrono::DateTime<Utc>) -> String {
    format!("run-{}-{:04x}", now.format("%Y%m%dT%H%M%SZ"), std::process::id() & 0xffff)
}

/// Whether runs draw a progress bar (an interactive terminal, logs not in JSON).
static PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The process's resident memory in MiB (Linux `/proc/self/statm`), for the commit's
/// debug lines: where its memory goes, step by step.
pub(crate) fn resident_mib() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096 / (1024 * 1024)
}

/// Turns the per-wave progress bar on or off (`main`: on when stderr is a terminal and
/// logs are not JSON lines).
pub fn show_progress(on: bool) {
    PROGRESS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A human status line: stderr, so stdout carries only the summary.
fn status(line: &str) {
    eprintln!("{line}");
}

/// SIGINT and SIGTERM, listened for from the moment this is called: a signal
/// cancels the token and is named in `received`.
fn listen_for_signals(token: CancellationToken) -> anyhow::Result<Arc<Mutex<Option<&'static str>>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let received = Arc::new(Mutex::new(None));
    // Both handlers are installed here, before the task runs: a signal from now on is never fatal.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let named = received.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        *named.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
        token.cancel();
        // A second signal means "now": the journal holds what was answered, the lock is left
        // for `--resume` (or `--break-lock`) to break, since this process is gone.
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("a second signal: stopping at once; `partnerforge run --resume last` continues the run");
        std::process::exit(Exit::Interrupted as i32);
    });
    Ok(received)
}

/// One refresh under the pipeline's lock: the lock is taken before anything is
/// read from the store and given back however the refresh ends. Its start and end
/// are recorded in the store's run history, whatever the outcome.
pub async fn run(options: RunOptions) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let recorded: Mutex<Option<(Store, String)>> = Mutex::new(None);
    let result = run_recorded(options, &recorded).await;
    let Some((store, run_id)) = recorded.into_inner().unwrap_or_else(|e| e.into_inner()) else { return result };
    let mut end = history::End {
        run_id: run_id.clone(),
        ended_at: history::now_text(),
        status: String::new(),
        exit_code: 0,
        wall_secs: started.elapsed().as_secs_f64(),
        snapshot_id: None,
        generation: None,
        calls: 0,
        spend_usd: 0.0,
        providers: Default::default(),
        failed_modules: Default::default(),
        modules_completed: Vec::new(),
        skipped_modules: Default::default(),
        circuits: Default::default(),
        targets: 0,
        carried_forward: 0,
        error: None,
    };
    match &result {
        Ok(report) => {
            let exit = Exit::of_report(report);
            let m = &report.manifest;
            end.status = if exit == Exit::Completed { "completed".into() } else { "partial".into() };
            end.exit_code = exit as u8;
            end.snapshot_id = Some(m.snapshot_id.clone());
            end.generation = Some(m.generation);
            end.calls = m.counts.calls;
            end.spend_usd = m.counts.spend_usd;
            end.targets = m.counts.targets;
            end.carried_forward = m.counts.carried_forward;
            end.circuits = report.circuits.clone();
            match history::ledger_use(&store, m).await {
                Ok(used) => {
                    end.providers = used.providers;
                    end.failed_modules = used.failed_modules;
                    end.skipped_modules = used.skipped_modules;
                    end.modules_completed = used.completed;
                }
                Err(e) => tracing::warn!("could not read the ledger for the run's history: {e}"),
            }
        }
        Err(e) => {
            let exit = Exit::of_error(e);
            end.status = match exit {
                Exit::Interrupted => "interrupted",
                Exit::Refused => "refused",
                _ => "failed",
            }
            .into();
            end.exit_code = exit as u8;
            end.error = Some(crate::error_text(e));
        }
    }
    history::write_end(&store, &end).await;
    let detail = serde_json::json!({
        "status": end.status, "exit_code": end.exit_code, "snapshot": end.snapshot_id, "generation": end.generation,
        "calls": end.calls, "spend_usd": end.spend_usd, "error": end.error,
    });
    crate::store::audit::record(&store, "run.ended", &run_id, detail).await;
    result
}

async fn run_recorded(mut options: RunOptions, recorded: &Mutex<Option<(Store, String)>>) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let now = Utc::now();
    let stop = CancellationToken::new();
    let received = listen_for_signals(stop.clone())?;
    // A resumed run takes its id and its parameters from what it recorded.
    let resumed = match &options.resume {
        Some(which) => {
            let store = Store::open(&options.selection.store)?;
            let run_id = match which.as_str() {
                "last" => journal::last_unfinished(&store)
                    .await?
                    .with_context(|| format!("store {} has no unfinished run to resume", store.url()))?,
                id => id.to_string(),
            };
            let (spec, journal) = Journal::resume(&store, &run_id).await?;
            // Everything but the store, which is the one named on this command line.
            options.selection = Selection { store: options.selection.store.clone(), ..spec.selection.clone() };
            options.replace = spec.replace;
            options.faults = spec.faults.clone();
            status(&format!("resuming run {run_id}: {} calls already made are reused", journal.resumed_calls()));
            let unreadable = &journal.unreadable;
            if unreadable.total() > 0 {
                status(&format!(
                    "journal of {run_id}: {} entries unreadable ({} cut short by the crash, {} malformed{}): their calls are asked again",
                    unreadable.total(),
                    unreadable.torn,
                    unreadable.bad,
                    unreadable.first_error.as_deref().map(|e| format!("; first: {e}")).unwrap_or_default()
                ));
            }
            Some((run_id, journal))
        }
        None => None,
    };
    let run_id = resumed.as_ref().map(|(id, _)| id.clone()).unwrap_or_else(|| run_id(now));
    // Every log line of the run carries its id.
    let span = tracing::info_span!("run", run_id = %run_id);
    tracing::Instrument::instrument(
        async move {
            if let Ok(store) = Store::open(&options.selection.store) {
                let start = history::Start {
                    run_id: run_id.clone(),
                    trigger: history::trigger(options.triggered_by.as_deref()),
                    started_at: history::now_text(),
                    pipeline: options.selection.pipeline.display().to_string(),
                    date: options.selection.date.to_string(),
                    resumed: resumed.is_some(),
                    host: std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
                    pid: std::process::id(),
                };
                // A resumed run's start was recorded by the run it continues; this is its second start.
                let start = history::Start {
                    run_id: if resumed.is_some() {
                        format!("{run_id}-resumed-{}", now.format("%Y%m%dT%H%M%SZ"))
                    } else {
                        run_id.clone()
                    },
                    ..start
                };
                history::write_start(&store, &start).await;
                let detail = serde_json::json!({"pipeline": start.pipeline, "date": start.date, "resumed": start.resumed, "pid": start.pid});
                crate::store::audit::record(&store, "run.started", &start.run_id, detail).await;
                *recorded.lock().unwrap_or_else(|e| e.into_inner()) = Some((store, start.run_id.clone()));
            }
            let prepared = prepare(&options.selection).await?;
            // Refused before the lock and before anything is written: nothing for `--resume` to find.
            prepared.refuse_existing_date(options.replace)?;
            let pipeline = &prepared.pipeline.pipeline;
            prepared.store.check_conditional_writes().await?;
            let ttl = pipeline.run.lock_ttl();
            // Resuming a run that died means breaking the lock it left (never a live one).
            let break_lock = options.break_lock || resumed.is_some();
            let interrupted = |signal: Option<&'static str>, resumable: bool| Interrupted {
                signal: signal.unwrap_or("a signal"),
                run_id: run_id.clone(),
                date: options.selection.date.to_string(),
                resumable,
            };
            // Stopped before the lock: nothing was taken or written.
            if stop.is_cancelled() {
                return Err(interrupted(*received.lock().unwrap_or_else(|e| e.into_inner()), resumed.is_some()).into());
            }
            let (lock, broken) = prepared.store.acquire_lock(&pipeline.name, &run_id, ttl, break_lock).await?;
            if let Some(holder) = broken {
                status(&format!("broke the lock held by {holder}"));
                let detail = serde_json::json!({"lock": pipeline.name, "held_by": holder.to_string(), "broken_by": run_id});
                crate::store::audit::record(&prepared.store, "lock.broken", &format!("locks/{}", pipeline.name), detail).await;
            }
            let store = prepared.store.clone();
            let alert_rules = prepared.pipeline.alerts.clone();
            let heartbeat = tokio::spawn(renew(store.clone(), lock.clone(), ttl, stop.clone()));
            // Everything under the lock runs in `locked`; the lock is given back whatever it returns.
            let result = locked(&options, prepared, resumed, &run_id, now, started, &lock, stop).await;
            heartbeat.abort();
            let released = store.release_lock(lock).await;
            let signal = *received.lock().unwrap_or_else(|e| e.into_inner());
            let report = match (result, signal) {
                (Err(_), Some(signal)) => {
                    let resumable = journal::has_run(&store, &run_id).await;
                    return Err(interrupted(Some(signal), resumable).into());
                }
                (result, _) => result?,
            };
            released?;
            // Alerts go out once the snapshot is committed and the pipeline's lock is given back
            // (delivery has a lease of its own: a crash here leaves the next run nothing to break).
            let delivery = match &alert_rules {
                Some(rules) => Some(deliver_after_commit(&store, rules, &run_id).await),
                None => None,
            };
            Ok(RunReport { delivery, ..report })
        },
        span,
    )
    .await
}

/// Renews the lease while the work goes on. A lease broken by another run stops
/// it, and so does a lease that could not be renewed for most of its TTL: by then
/// another run may rightly think it dead.
pub(crate) async fn renew(store: Store, lock: RunLock, ttl: Duration, stop: CancellationToken) {
    let every = (ttl / 3).min(Duration::from_secs(60));
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match store.heartbeat(&lock).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::error!("the lock was broken by another run: stopping, nothing will be committed");
                stop.cancel();
                return;
            }
            Err(e) if renewed.elapsed() + every >= ttl => {
                tracing::error!("could not renew the lock within its TTL ({e}): stopping, nothing will be committed");
                stop.cancel();
                return;
            }
            Err(e) => tracing::warn!("could not renew the lock: {e}"),
        }
    }
}

/// The part of a run that holds the lock.
#[allow(clippy::too_many_arguments)]
async fn locked(
    options: &RunOptions,
    prepared: Prepared,
    resumed: Option<(String, Journal)>,
    run_id: &str,
    now: chrono::DateTime<Utc>,
    started: Instant,
    lock: &RunLock,
    stop: CancellationToken,
) -> anyhow::Result<RunReport> {
    // What the store holds is read again under the lock: another run may have just committed.
    let prepared = Prepared { previous: prepared.store.snapshots().await?, ..prepared };
    prepared.refuse_existing_date(options.replace)?;
    if stop.is_cancelled() {
        anyhow::bail!("stopped before the run's journal was started");
    }
    let journal = match resumed {
        Some((_, journal)) => journal,
        None => {
            let selection = Selection { providers: prepared.account.mode(), ..options.selection.clone() };
            let spec = RunSpec {
                run_id: run_id.to_string(),
                selection,
                replace: options.replace,
                faults: options.faults.clone(),
                started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            Journal::start(&prepared.store, &spec).await?
        }
    };
    let report = refresh(options, &prepared, run_id, now, started, &journal, lock, stop).await?;
    // Its spend becomes one sum per month (a failure leaves the parts, which count the same).
    let began = journal.started_on().unwrap_or_else(|| now.date_naive());
    if let Err(e) = spend::seal(&prepared.store, run_id, began, Utc::now().date_naive()).await {
        tracing::warn!("could not seal the spend record of {run_id}: {e}");
    }
    commit::step("spend record sealed");
    // The snapshot is committed: its journal is no longer needed (a failure here loses nothing).
    if let Err(e) = journal::discard(&prepared.store, run_id).await {
        tracing::warn!("could not remove the journal of {run_id}: {e}");
    }
    commit::step("journal removed");
    Ok(report)
}

/// Delivers the alerts once the snapshot is committed. A failure here is reported,
/// not the run's: the snapshot stands, and the next delivery takes up what is left.
pub(crate) async fn deliver_after_commit(
    store: &Store,
    rules: &crate::config::alerts::AlertRules,
    run_id: &str,
) -> crate::alerts::DeliveryReport {
    match changes::deliver_pending(store, rules, run_id, false, None).await {
        Ok(report) => report,
        Err(e) => {
            let text = crate::error_text(&e);
            tracing::error!("delivering alerts: {text}");
            crate::alerts::DeliveryReport::failed_pass(text)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn refresh(
    options: &RunOptions,
    prepared: &Prepared,
    run_id: &str,
    now: chrono::DateTime<Utc>,
    started: Instant,
    journal: &Journal,
    lock: &RunLock,
    stop: CancellationToken,
) -> anyhow::Result<RunReport> {
    let waves = modules::waves(modules::REGISTRY)?;
    let (pipeline, store, date, book) = (&prepared.pipeline, &prepared.store, prepared.date.clone(), &prepared.book);
    let p = &pipeline.pipeline;
    let previous_snapshot = prepared.previous.iter().rev().find(|m| m.date < date).map(|m| m.snapshot_id.clone());
    let work = prepared.work();

    let simulator = start_providers(prepared, options.selection.date, &options.faults).await?;
    // Spend and quota are the account's: only earlier runs against the same providers count
    // (a resumed run's own earlier calls included: they are on the spend record).
    let (month_to_date, used_today) = prepared.account_usage().await?;
    // A resumed run already spent what its reused calls cost, toward its per-run cap.
    let budget = prepared.budget(&month_to_date);
    for (provider, (usd, _)) in journal.usage() {
        budget.spent_earlier(provider, usd);
    }
    let fetcher = Fetcher::new(
        prepare::endpoints(pipeline, simulator.as_ref())?,
        p.fetch.concurrency,
        budget,
        &used_today,
        Arc::new(TokioClock::default()),
    )?
    .stop_on(stop);
    let context = prepared.context(options.selection.date, context_ms(now));

    let carry = prepared.carry(options.selection.date).await?;
    if let Some(from) = &carry.from {
        tracing::info!(pairs = carry.pairs(), from = %from.snapshot_id, "carrying fresh module results forward");
    }
    let mut planner = Planner::new(run_id, context, book, &carry);
    planner.load_precheck(store, &prepared.previous).await?;
    // Fresh tech stacks that run Algolia: those domains get no calls at all.
    planner.not_targets.extend(waves::carried_algolia(store, &carry, &date).await?);
    // The stage takes every table in the manifest's order, the rows still fresh first.
    let mut stage = Stage::new(store, run_id)?;
    for (table, empty) in Tables::default().batches(context_ms(now), &date)? {
        stage.append(table, empty)?;
        freshness::carried_rows(store, &carry, table, &date, |batch| stage.append(table, batch)).await?;
    }
    stage.append("api_calls", ledger_batch(&[], &date)?)?;
    let writer = journal.writer()?;
    let mut refresh = waves::Refresh::new(planner, fetcher, stage);
    let mut kept_pairs = carry_kept(store, &carry, &mut refresh, &date).await?;
    for (w, wave) in waves.iter().enumerate() {
        let wave_started = Instant::now();
        let ids: Vec<&str> = wave.iter().map(|m| m.id).collect();
        tracing::info!(wave = w + 1, modules = %ids.join(","), "fetching");
        if PROGRESS.load(std::sync::atomic::Ordering::Relaxed) {
            let bar = indicatif::ProgressBar::new(work.len() as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "wave {prefix} [{bar:30}] {pos}/{len} domains · {msg} · {elapsed} elapsed, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{} ({})", w + 1, waves.len(), ids.join(",")));
            if let Some(done) = refresh.progress.replace(bar) {
                done.finish_and_clear();
            }
        }
        refresh.run_wave(wave, &work, journal, &writer).await?;
        kept_pairs += carry_kept(store, &carry, &mut refresh, &date).await?;
        tracing::info!(wave = w + 1, seconds = wave_started.elapsed().as_secs_f64(), "wave done");
    }
    let circuits = refresh
        .circuits()
        .into_iter()
        .map(|(id, (state, opened))| (id.name().to_string(), history::Circuit { state: state.to_string(), opened }))
        .collect();
    drop(writer);
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    let (Planner { failed, not_targets, .. }, totals, mut stage, mut touched) = refresh.finish()?;
    // The domains whose module rows may differ from the carried-from snapshot's.
    touched.extend(carry.stale.iter().cloned());
    let staged = stage.finish()?;
    let files: Vec<(&'static str, TableFile)> = staged.iter().map(|(t, s)| (*t, TableFile::Staged(s))).collect();

    let counts = Counts {
        book: book.targets.len() as u64,
        excluded_customers: prepared.excluded_customers as u64,
        excluded_algolia: not_targets.len() as u64,
        rejected_rows: book.rejected.len() as u64,
        carried_forward: (carry.pairs() + kept_pairs) as u64,
        calls: totals.calls,
        // + 0.0 turns a rounded -0.0 into 0.0.
        spend_usd: (totals.spend_usd * 100.0).round() / 100.0 + 0.0,
        failures: totals.failures,
        ..Counts::default()
    };
    let draft = Draft {
        date: date.clone(),
        run_id: run_id.to_string(),
        status: if counts.failures.is_empty() { Status::Completed } else { Status::Partial },
        previous_snapshot,
        carried_from: carry.from.as_ref().filter(|_| carry.pairs() > 0).map(|m| m.snapshot_id.clone()),
        rebuilt_from: None,
        providers: prepared.account,
        counts,
        reuse_from: carry.from.clone(),
        touched: Some(touched.into_iter().collect()),
        not_targets,
    };
    let book_rows = book_rows(&work, book, &failed);
    let manifest = commit(store, pipeline, draft, files, &book_rows, Some(lock)).await?;
    Ok(RunReport {
        location: format!("{}/{}/", store.url().trim_end_matches('/'), manifest.folder()),
        manifest,
        wall_secs: started.elapsed().as_secs_f64(),
        delivery: None,
        circuits,
    })
}

/// The `fetched_at` of everything a run fetches: when it started.
/// The embedded simulator for a simulated run (with the pipeline's faults and `faults`),
/// or none against the real providers; says which on stderr.
pub(crate) async fn start_providers(
    prepared: &Prepared,
    date: NaiveDate,
    faults: &[String],
) -> anyhow::Result<Option<Simulator>> {
    if !prepared.simulated() {
        status("providers: real (keys from the environment)");
        return Ok(None);
    }
    let (pipeline, p) = (&prepared.pipeline, &prepared.pipeline.pipeline);
    let mut all = p.simulator.faults.clone();
    crate::config::apply_faults(&mut all, faults).map_err(anyhow::Error::msg)?;
    let config = SimulatorConfig {
        seed: p.simulator.seed,
        as_of: date,
        keys: prepare::simulated_keys(),
        faults: all,
        request_log: p.simulator.request_log.as_ref().map(|path| pipeline.resolve(path)),
    };
    let listen = "127.0.0.1:0".parse().context("loopback address")?;
    let sim = Simulator::start(listen, config).await.context("cannot start the simulated providers")?;
    status(&format!(
        "providers: simulated (no provider API keys set), serving a world as of {date} on {}",
        sim.base_url()
    ));
    Ok(Some(sim))
}

/// Carries into the stage the rows of the modules the free pre-check spared since the
/// last call (their last full lookup kept), and learns which of them run Algolia.
/// Returns the (module, domain) pairs carried.
async fn carry_kept(
    store: &Store,
    carry: &freshness::Carry,
    refresh: &mut waves::Refresh<'_>,
    date: &str,
) -> anyhow::Result<usize> {
    let kept = refresh.planner.take_unchanged();
    if kept.is_empty() || carry.from.is_none() {
        return Ok(0);
    }
    let fresh = crate::modules::precheck::MODULE
        .checks()
        .map(|m| (m.id, kept.iter().filter(|d| !carry.is_fresh(m.id, d)).cloned().collect()))
        .collect();
    let late = freshness::Carry { from: carry.from.clone(), only: None, fresh, stale: Default::default() };
    for (table, _) in Tables::default().batches(0, date)? {
        freshness::carried_rows(store, &late, table, date, |batch| refresh.stage().append(table, batch)).await?;
    }
    refresh.planner.not_targets.extend(waves::carried_algolia(store, &late, date).await?);
    Ok(late.pairs())
}

fn context_ms(now: chrono::DateTime<Utc>) -> i64 {
    now.timestamp_millis()
}

/// The end-of-run summary as an operator's script reads it (`--format json`).
#[derive(Debug, Serialize)]
pub struct SummaryJson<'a> {
    pub snapshot_id: &'a str,
    pub generation: u32,
    pub status: Status,
    pub exit_code: u8,
    pub run_id: &'a str,
    pub providers: ProviderAccount,
    pub counts: &'a Counts,
    pub wall_secs: f64,
    pub location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<&'a crate::alerts::DeliveryReport>,
}

pub fn summary_json(report: &RunReport) -> String {
    let m = &report.manifest;
    let json = SummaryJson {
        snapshot_id: &m.snapshot_id,
        generation: m.generation,
        status: m.status,
        exit_code: Exit::of_report(report) as u8,
        run_id: &m.run_id,
        providers: m.providers,
        counts: &m.counts,
        wall_secs: report.wall_secs,
        location: &report.location,
        delivery: report.delivery.as_ref(),
    };
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

/// The change events against the previous snapshot, by significance.
fn changes_line(m: &Manifest) -> String {
    if !m.files.iter().any(|f| f.table == "changes") {
        return "not tracked (the pipeline names no change rules)".into();
    }
    let total: u64 = m.counts.changes.values().sum();
    let by: Vec<String> = crate::config::changes::SIGNIFICANCE
        .iter()
        .filter_map(|s| m.counts.changes.get(*s).map(|n| format!("{s} {n}")))
        .collect();
    match (&m.previous_snapshot, total) {
        (None, _) => "none (no earlier snapshot to compare with)".into(),
        (Some(p), 0) => format!("none since snapshot {p}"),
        (Some(p), _) => format!("{total} since snapshot {p} ({})", by.join(", ")),
    }
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
         \x20 changes         {}\n\
         \x20 alerts          {}\n\
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
        if m.providers == ProviderAccount::Simulated { " (simulated providers: nothing was billed)" } else { "" },
        failures,
        changes_line(m),
        match &report.delivery {
            Some(d) => format!("{} raised, {}", m.counts.alerts, d.line()),
            None => "not raised (the pipeline names no alert rules)".into(),
        },
        report.wall_secs,
        report.location,
    )
}
