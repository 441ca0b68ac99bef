//! `partnerforge schedule`: the daemon that runs `schedules.toml`'s jobs.
//!
//! Fire times come from croner in each job's IANA zone (the cron engine
//! tokio-cron-scheduler uses; tokio-cron-scheduler itself turns a zone into the
//! fixed offset of the moment the job is created, which moves a Berlin 02:30 job to
//! 03:30 once summer time starts, so the loop here is our own). Each job execution
//! is a child `partnerforge` process — a run's crash or memory stays its own, and it
//! stops on SIGTERM as an interactive run does (checkpoint, lock given back) — and
//! is recorded in the store: `history/jobs/<job>/<started>-start.json` when it
//! starts and `<started>-end.json` when it ends, both create-only.
//!
//! A job still running at its next fire time is not started twice (the daemon logs
//! it; the store lock guards runs anyway). A job that runs `after` another starts
//! when that one succeeded. At start, a cron job with `catch_up = "once"` whose last
//! success is older than its latest fire time runs once, and a job whose last
//! execution was interrupted (or died with the daemon) is started again — a run
//! with `--resume last`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::schedules::{CatchUp, Job, Schedules, Task, When};
use crate::store::Store;

pub mod metrics;
pub use metrics::Metrics;

/// Why a job started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Trigger {
    /// Its cron time came.
    Schedule,
    /// A run missed while the daemon was down.
    CatchUp,
    /// The job it runs after succeeded.
    After(String),
    /// It was interrupted last time and is started again.
    Resume,
}

/// The start record of a job execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub job: String,
    pub kind: String,
    pub execution: String,
    pub trigger: Trigger,
    pub started_at: String,
    pub args: Vec<String>,
    pub daemon_pid: u32,
}

/// How a job execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Exit 0.
    Succeeded,
    /// Exit 3: committed, with failures (a run) or undelivered alerts.
    Partial,
    /// Exit 4: refused before doing anything (lock held, date taken).
    Refused,
    /// Exit 5, or stopped by the daemon's own shutdown: to resume.
    Interrupted,
    /// Any other exit.
    Failed,
}

impl Outcome {
    fn of_exit(code: Option<i32>) -> Self {
        match code {
            Some(0) => Self::Succeeded,
            Some(3) => Self::Partial,
            Some(4) => Self::Refused,
            Some(5) | None => Self::Interrupted,
            Some(_) => Self::Failed,
        }
    }

    /// Whether the jobs that run after it start: a partial run committed its snapshot.
    pub fn lets_dependents_run(self) -> bool {
        matches!(self, Self::Succeeded | Self::Partial)
    }
}

/// The end record of a job execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ended {
    pub job: String,
    pub execution: String,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub started_at: String,
    pub ended_at: String,
    pub seconds: f64,
    /// A run's `--format json` summary (snapshot, status, calls, spend, failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
    /// The last lines the job wrote to stderr, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job's history as the store holds it.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub last_start: Option<Started>,
    pub last_end: Option<Ended>,
    pub last_success: Option<DateTime<Utc>>,
}

fn history_prefix(job: &str) -> String {
    format!("history/jobs/{job}")
}

/// Reads every job's start and end records.
pub async fn histories(store: &Store, schedules: &Schedules) -> anyhow::Result<BTreeMap<String, History>> {
    let mut out = BTreeMap::new();
    for job in &schedules.jobs {
        let mut paths = store.list(&history_prefix(&job.name)).await?;
        paths.sort();
        let mut history = History::default();
        for path in &paths {
            let bytes = store.get(path).await?;
            if path.ends_with("-start.json") {
                history.last_start = Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {path}"))?);
            } else if path.ends_with("-end.json") {
                let ended: Ended = serde_json::from_slice(&bytes).with_context(|| format!("reading {path}"))?;
                if ended.outcome.lets_dependents_run() {
                    history.last_success = DateTime::parse_from_rfc3339(&ended.started_at).ok().map(|t| t.to_utc());
                }
                history.last_end = Some(ended);
            }
        }
        out.insert(job.name.clone(), history);
    }
    Ok(out)
}

impl History {
    /// The last execution started and never ended (the daemon died), or ended interrupted.
    pub fn unfinished(&self) -> Option<&Started> {
        let start = self.last_start.as_ref()?;
        match &self.last_end {
            Some(end) if end.execution == start.execution => (end.outcome == Outcome::Interrupted).then_some(start),
            _ => Some(start),
        }
    }
}

/// Where the daemon's jobs read and write, and the binary they run.
pub struct Settings {
    pub store: String,
    pub exe: PathBuf,
    /// The folder the job paths of `schedules.toml` are relative to runs as the working directory.
    pub workdir: PathBuf,
}

/// The command line of a job execution (without the binary).
/// `resume`: a run job continues the store's unfinished run (`--resume last`).
pub fn command_line(job: &Job, settings: &Settings, resume: bool) -> Vec<String> {
    let s = |v: &str| v.to_string();
    let path = |p: &std::path::Path| p.display().to_string();
    let mut args = match &job.task {
        Task::Run { pipeline } => {
            let mut a = vec![
                s("run"),
                s("--pipeline"),
                path(pipeline),
                s("--store"),
                settings.store.clone(),
                s("--format"),
                s("json"),
            ];
            if resume {
                a.extend([s("--resume"), s("last")]);
            }
            a
        }
        Task::Export { pipeline, out, audience, queries } => {
            let mut a = vec![
                s("export"),
                s("--pipeline"),
                path(pipeline),
                s("--store"),
                settings.store.clone(),
                s("--out"),
                path(out),
                s("--queries"),
                path(queries),
            ];
            match audience {
                Some(name) => a.extend([s("--audience"), name.clone()]),
                None => a.push(s("--all-audiences")),
            }
            a
        }
        Task::Digest { pipeline } => {
            vec![s("digest"), s("--pipeline"), path(pipeline), s("--store"), settings.store.clone()]
        }
        Task::Deliver { pipeline } => {
            vec![s("deliver"), s("--pipeline"), path(pipeline), s("--store"), settings.store.clone()]
        }
        Task::Gc { sites, keep_daily, keep_monthly } => {
            let mut a = vec![
                s("gc"),
                s("--store"),
                settings.store.clone(),
                s("--keep-daily"),
                keep_daily.to_string(),
                s("--keep-monthly"),
                keep_monthly.to_string(),
            ];
            if let Some(sites) = sites {
                a.extend([s("--sites"), path(sites)]);
            }
            a
        }
    };
    args.extend(job.args.iter().cloned());
    args
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

struct Finished {
    job: String,
    outcome: Outcome,
}

/// The daemon's view of its jobs.
struct State {
    running: BTreeMap<String, (String, tokio::process::Child)>,
    histories: BTreeMap<String, History>,
    metrics: Arc<Metrics>,
}

/// Runs the jobs until `stop` is cancelled; then stops the running ones (SIGTERM, and
/// SIGKILL after the grace period) and returns.
pub async fn run_daemon(
    schedules: Arc<Schedules>,
    settings: Arc<Settings>,
    store: Store,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let histories = histories(&store, &schedules).await?;
    for (job, history) in &histories {
        if let Some(t) = history.last_success {
            metrics.last_success(job, t.timestamp_millis() as f64 / 1e3);
        }
    }
    let state = Arc::new(Mutex::new(State { running: BTreeMap::new(), histories, metrics: metrics.clone() }));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
    let start = |job: &Job, trigger: Trigger| {
        let (schedules, settings, store, state, done_tx) =
            (schedules.clone(), settings.clone(), store.clone(), state.clone(), done_tx.clone());
        let name = job.name.clone();
        async move {
            let Some(job) = schedules.job(&name) else { return };
            if let Err(e) = start_job(job, trigger, &settings, &store, &state, done_tx).await {
                tracing::error!(job = %name, "could not start: {}", crate::error_text(&e));
            }
        }
    };
    // At start: what was interrupted resumes; what was missed runs once.
    let now = Utc::now();
    for job in &schedules.jobs {
        let history = state.lock().await.histories.get(&job.name).cloned().unwrap_or_default();
        if history.unfinished().is_some() {
            tracing::info!(job = %job.name, "its last execution did not finish: starting it again");
            start(job, Trigger::Resume).await;
            continue;
        }
        if job.catch_up == CatchUp::Once
            && let Some(due) = job.previous_time(now)
            && history.last_success.is_none_or(|last| last < due)
        {
            tracing::info!(job = %job.name, due = %due, "missed while the daemon was down: running it once now");
            start(job, Trigger::CatchUp).await;
        }
    }
    let mut next: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for job in &schedules.jobs {
        if let Some(t) = job.next_times(Utc::now(), 1).first() {
            tracing::info!(job = %job.name, at = %t, "next fire time");
            metrics.next_fire(&job.name, t.timestamp() as f64);
            next.insert(job.name.clone(), t.with_timezone(&Utc));
        }
    }
    loop {
        let soonest = next.values().min().copied();
        let wait = soonest.map_or(Duration::from_secs(3600), |t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(done) = done_rx.recv() => {
                if done.outcome.lets_dependents_run() {
                    for dependent in schedules.dependents(&done.job) {
                        start(dependent, Trigger::After(done.job.clone())).await;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {
                let now = Utc::now();
                let due: Vec<String> = next.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
                for name in due {
                    let Some(job) = schedules.job(&name) else { continue };
                    start(job, Trigger::Schedule).await;
                    match job.next_times(now, 1).first() {
                        Some(t) => {
                            tracing::debug!(job = %name, at = %t, "next fire time");
                            metrics.next_fire(&name, t.timestamp() as f64);
                            next.insert(name, t.with_timezone(&Utc));
                        }
                        None => { next.remove(&name); }
                    }
                }
            }
        }
    }
    // Stop: no new job starts; the running ones stop as an interactive run does.
    let grace = Duration::from_secs(schedules.daemon.stop_grace_secs);
    let running: Vec<(String, u32)> = {
        let state = state.lock().await;
        state.running.iter().filter_map(|(name, (_, child))| child.id().map(|pid| (name.clone(), pid))).collect()
    };
    for (name, pid) in &running {
        tracing::info!(job = %name, pid, "stopping: SIGTERM to the running job");
        // SAFETY-free: `kill` through the command line tool keeps this crate free of libc.
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !state.lock().await.running.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            let mut state = state.lock().await;
            for (name, (_, child)) in state.running.iter_mut() {
                tracing::warn!(job = %name, "did not stop within {} s: killed", grace.as_secs());
                let _ = child.start_kill();
            }
            break;
        }
        tokio::select! {
            _ = done_rx.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Give the waiters a moment to write their end records.
    let flush_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !state.lock().await.running.is_empty() && tokio::time::Instant::now() < flush_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn start_job(
    job: &Job,
    trigger: Trigger,
    settings: &Settings,
    store: &Store,
    state: &Arc<Mutex<State>>,
    done: mpsc::UnboundedSender<Finished>,
) -> anyhow::Result<()> {
    let mut guard = state.lock().await;
    if let Some((execution, _)) = guard.running.get(&job.name) {
        tracing::warn!(
            job = %job.name,
            execution = %execution,
            ?trigger,
            "still running: not started again"
        );
        return Ok(());
    }
    let started = Utc::now();
    let execution = format!("{}-{:04x}", started.format("%Y%m%dT%H%M%S%3fZ"), std::process::id() & 0xffff);
    // A run interrupted mid-way left its journal: the new one continues it, paying no call twice.
    let resume = trigger == Trigger::Resume
        && matches!(job.task, Task::Run { .. })
        && crate::run::journal::last_unfinished(store).await?.is_some();
    let args = command_line(job, settings, resume);
    let record = Started {
        job: job.name.clone(),
        kind: job.task.kind().to_string(),
        execution: execution.clone(),
        trigger: trigger.clone(),
        started_at: started.to_rfc3339_opts(SecondsFormat::Millis, true),
        args: args.clone(),
        daemon_pid: std::process::id(),
    };
    let prefix = format!("{}/{execution}", history_prefix(&job.name));
    store.put_new(&format!("{prefix}-start.json"), serde_json::to_vec_pretty(&record)?.into()).await?;
    tracing::info!(job = %job.name, execution = %execution, ?trigger, "starting: partnerforge {}", args.join(" "));
    let child = tokio::process::Command::new(&settings.exe)
        .args(&args)
        .current_dir(&settings.workdir)
        .env("PARTNERFORGE_TRIGGERED_BY", format!("schedule:{}", job.name))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", settings.exe.display()))?;
    guard.running.insert(job.name.clone(), (execution.clone(), child));
    guard.metrics.job_started(&job.name);
    guard.histories.entry(job.name.clone()).or_default().last_start = Some(record.clone());
    drop(guard);
    let (state, store, name) = (state.clone(), store.clone(), job.name.clone());
    let pipeline_name = match &job.task {
        Task::Run { pipeline } => pipeline.file_stem().map(|s| s.to_string_lossy().to_string()),
        _ => None,
    };
    tokio::spawn(async move {
        let ended = wait_for(&state, &name).await;
        let (code, stdout, stderr) = ended.unwrap_or_default();
        let outcome = Outcome::of_exit(code);
        let summary = serde_json::from_str::<serde_json::Value>(stdout.trim()).ok();
        let error = (!outcome.lets_dependents_run() || outcome == Outcome::Partial).then(|| {
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(8)..].join("\n")
        });
        let end = Ended {
            job: name.clone(),
            execution: record.execution.clone(),
            outcome,
            exit_code: code,
            started_at: record.started_at.clone(),
            ended_at: now_text(),
            seconds: (Utc::now() - started).num_milliseconds() as f64 / 1e3,
            summary,
            error: error.filter(|e| !e.is_empty()),
        };
        let path = format!("{}/{}-end.json", history_prefix(&name), record.execution);
        match serde_json::to_vec_pretty(&end) {
            Ok(bytes) => {
                if let Err(e) = store.put_new(&path, bytes.into()).await {
                    tracing::error!(job = %name, "could not record the end of {}: {e}", record.execution);
                }
            }
            Err(e) => tracing::error!(job = %name, "could not encode the end record: {e}"),
        }
        tracing::info!(job = %name, execution = %record.execution, outcome = ?outcome, seconds = end.seconds, "ended");
        let metrics = state.lock().await.metrics.clone();
        metrics.job_ended(
            &name,
            &format!("{outcome:?}").to_lowercase(),
            end.seconds,
            started.timestamp_millis() as f64 / 1e3,
            outcome.lets_dependents_run(),
        );
        if let Some(pipeline) = &pipeline_name {
            record_run_metrics(&metrics, &store, pipeline, end.summary.as_ref(), &stderr).await;
        }
        {
            let mut state = state.lock().await;
            state.running.remove(&name);
            let history = state.histories.entry(name.clone()).or_default();
            if outcome.lets_dependents_run() {
                history.last_success = Some(started);
            }
            history.last_end = Some(end);
        }
        let _ = done.send(Finished { job: name, outcome });
    });
    Ok(())
}

/// A run job's metrics: its end record (status, calls, spend, failures by provider and
/// module) and, when it committed, its ledger's latencies and waits.
async fn record_run_metrics(
    metrics: &Metrics,
    store: &Store,
    pipeline: &str,
    summary: Option<&serde_json::Value>,
    stderr: &str,
) {
    // The run id: from the JSON summary, else from the log ("run <id>" / "resuming run <id>").
    let run_id = summary.and_then(|s| s["run_id"].as_str().map(str::to_string)).or_else(|| {
        stderr
            .split_whitespace()
            .find(|w| w.starts_with("run-") && w.len() > 20)
            .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').to_string())
    });
    let Some(run_id) = run_id else { return };
    let ends = match store.list("history/runs").await {
        Ok(paths) => paths,
        Err(e) => {
            tracing::warn!("metrics: cannot list the run history: {e}");
            return;
        }
    };
    // A resumed run's end is recorded under its continuation's id, which starts with the run's.
    let Some(path) = ends.iter().filter(|p| p.contains(&run_id) && p.ends_with("-end.json")).max() else { return };
    let end: Option<crate::run::history::End> = match store.get(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(_) => None,
    };
    let Some(end) = end else { return };
    metrics.record_run(pipeline, &end);
    if let (Some(date), Some(generation)) = (&end.snapshot_id, end.generation) {
        let ledger = format!("{}/api_calls.parquet", crate::store::manifest::folder(date, generation));
        match store.get(&ledger).await {
            Ok(bytes) => {
                if let Err(e) = metrics.record_ledger(bytes) {
                    tracing::warn!("metrics: cannot read {ledger}: {e}");
                }
            }
            Err(e) => tracing::warn!("metrics: cannot read {ledger}: {e}"),
        }
    }
}

/// Serves `/health` (the daemon is up), `/ready` (the store answers, the schedules are
/// loaded) and `/metrics` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, store: Store, stop: CancellationToken) {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let ready_store = store.clone();
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let store = ready_store.clone();
                async move {
                    match store.list("history").await {
                        Ok(_) => (StatusCode::OK, "ready\n".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("the store does not answer: {e}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        metrics.encode(),
                    )
                }
            }),
        );
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
    if let Err(e) = served {
        tracing::error!("the metrics endpoint stopped: {e}");
    }
}

/// Waits for a running job's process to end; its exit code, stdout and stderr.
async fn wait_for(state: &Arc<Mutex<State>>, name: &str) -> Option<(Option<i32>, String, String)> {
    use tokio::io::AsyncReadExt;
    let (mut stdout, mut stderr) = {
        let mut state = state.lock().await;
        let (_, child) = state.running.get_mut(name)?;
        (child.stdout.take(), child.stderr.take())
    };
    // Forward the job's log lines as they come (an operator reads one log), keep the tail.
    let name_for_log = name.to_string();
    let stderr_task = tokio::spawn(async move {
        let mut kept = String::new();
        if let Some(err) = stderr.as_mut() {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name_for_log}] {line}");
                kept.push_str(&line);
                kept.push('\n');
                if kept.len() > 64 * 1024 {
                    let cut = kept.len() - 32 * 1024;
                    kept = kept[cut..].to_string();
                }
            }
        }
        kept
    });
    let mut out = String::new();
    if let Some(o) = stdout.as_mut() {
        let _ = o.read_to_string(&mut out).await;
    }
    let status = loop {
        let mut state = state.lock().await;
        let (_, child) = state.running.get_mut(name)?;
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        drop(state);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = stderr_task.await.unwrap_or_default();
    Some((status.and_then(|s| s.code()), out, err))
}

/// The `--check` report: every job, what it runs, and its next `n` fire times.
pub fn check_report(schedules: &Schedules, n: usize) -> String {
    let mut out = format!("{}: {} jobs, valid\n", schedules.path.display(), schedules.jobs.len());
    for job in &schedules.jobs {
        let when = match &job.when {
            When::Cron { expression, zone, .. } => format!("cron \"{expression}\" in {zone}"),
            When::After(after) => format!("after {after} succeeds"),
        };
        out.push_str(&format!("\n{} ({}, line {}): {when}\n", job.name, job.task.kind(), job.line));
        for t in job.next_times(Utc::now(), n) {
            out.push_str(&format!(
                "  {}  ({})\n",
                t.format("%Y-%m-%d %H:%M:%S %Z"),
                t.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
    }
    out
}
