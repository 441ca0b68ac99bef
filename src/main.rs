//! The `partnerforge` binary: parse arguments, set up logging, dispatch.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};

use partnerforge::config::{LoadedPipeline, ProvidersMode, apply_faults};
use partnerforge::plan;
use partnerforge::run::{self, Exit, RunOptions, Selection};
use partnerforge::serve::{self, Format, Warehouse, export};
use partnerforge::simulate::{Keys, Simulator, SimulatorConfig};
use partnerforge::store::Store;
use partnerforge::store::gc::Retention;

/// mimalloc, not glibc's malloc: Polars' threads left freed memory in glibc's per-thread
/// arenas (a 100,000-target run peaked 20 % higher).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// PartnerForge: nightly account intelligence for displacement targets.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines on stderr (default: human-readable).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Refresh: fetch provider data, score the targets, commit a snapshot.
    Run {
        #[command(flatten)]
        selection: SelectionArgs,
        /// Commit a new generation when the date already has a snapshot.
        #[arg(long)]
        replace: bool,
        /// Break the pipeline's lock if the run holding it is gone (expired, or dead on this host).
        #[arg(long)]
        break_lock: bool,
        /// Continue a run that died (its id, or `last`), reusing every call it finished.
        #[arg(long, value_name = "RUN_ID|last")]
        resume: Option<String>,
        /// Who or what started this run, for its history record (default: the daemon's job, or the OS user).
        #[arg(long, value_name = "WHO")]
        triggered_by: Option<String>,
        /// A fault for the simulated providers, PROVIDER.KEY=VALUE (repeatable), e.g.
        /// similarweb.error_rate=0.1, builtwith.rate_429=0.05, yahoo_finance.malformed_rate=0.02.
        #[arg(long = "fault", value_name = "PROVIDER.KEY=VALUE")]
        faults: Vec<String>,
        /// How the end-of-run summary is printed on stdout.
        #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
        format: SummaryFormat,
        /// Write this run's metrics (the daemon's run and provider metrics) to PATH in the
        /// node-exporter textfile format, however the run ends.
        #[arg(long, value_name = "PATH")]
        metrics_file: Option<PathBuf>,
    },
    /// Dry run: the calls the next run would make per provider and endpoint, and their cost. Makes no call.
    Plan {
        #[command(flatten)]
        selection: SelectionArgs,
    },
    /// Recompute a snapshot's tables and scores from its stored raw bodies (no provider call),
    /// committed as the date's next generation.
    Rebuild {
        /// The snapshot's date.
        #[arg(long)]
        snapshot: NaiveDate,
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
    },
    /// Remove old snapshots (manifest first, then files) and folders runs left without a commit.
    Gc {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// Keep the newest N dates.
        #[arg(long, default_value_t = 30)]
        keep_daily: usize,
        /// Beyond those, keep the last date of each of the newest N months.
        #[arg(long, default_value_t = 24)]
        keep_monthly: usize,
        /// Remove folders without a manifest once older than this many hours.
        #[arg(long, default_value_t = 24)]
        stale_hours: u64,
        /// List what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also prune the exported sites under this folder (a site, or a folder of sites):
        /// every version but the current one and the one before it, once an hour old.
        #[arg(long, value_name = "DIR")]
        sites: Option<PathBuf>,
    },
    /// Serve the simulated providers over HTTP until interrupted.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The date the simulated world is at (YYYY-MM-DD); default today (UTC).
        #[arg(long)]
        as_of: Option<NaiveDate>,
        /// The world's seed; default the pipeline's `simulator.seed`.
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        /// The BuiltWith key the simulator accepts.
        #[arg(long, env = "BUILTWITH_API_KEY", default_value = "simulated-builtwith-key", hide_env_values = true)]
        builtwith_key: String,
        /// The SimilarWeb key the simulator accepts.
        #[arg(long, env = "SIMILARWEB_API_KEY", default_value = "simulated-similarweb-key", hide_env_values = true)]
        similarweb_key: String,
        /// A fault to inject, PROVIDER.KEY=VALUE (repeatable): error_rate, rate_429,
        /// retry_after_secs, latency_ms, malformed_rate, truncated_rate, quota_after, outage=START-END.
        #[arg(long = "fault", value_name = "PROVIDER.KEY=VALUE")]
        faults: Vec<String>,
        /// Append one JSON line per request answered to this file (the simulated bill).
        #[arg(long, value_name = "FILE")]
        request_log: Option<PathBuf>,
    },
    /// Run read-only SQL over the committed snapshots (views: targets, targets_history, api_calls,
    /// runs, changes, alerts and the module tables; see queries/README.md).
    Query {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// table (the default on a terminal), csv (the default otherwise), json, jsonl or parquet;
        /// with --out, the file's extension decides when this is not given.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Write the result to this file (written whole, then moved into place) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Read the SQL from this file (e.g. queries/top_targets.sql).
        #[arg(long, conflicts_with = "sql")]
        file: Option<PathBuf>,
        /// A parameter the query declares in its header (`-- param: NAME TYPE [= DEFAULT]`),
        /// bound as a prepared-statement value (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// The SQL to run.
        sql: Option<String>,
    },
    /// What changed between two committed snapshots (default: the latest and the one before it),
    /// by the pipeline's change rules.
    Changes {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// The pipeline file (its `changes` rules are applied).
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        /// The older snapshot's date.
        #[arg(long, conflicts_with = "since")]
        from: Option<NaiveDate>,
        /// The newer snapshot's date; default the latest.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Changes since this date: from the last snapshot on or before it.
        #[arg(long)]
        since: Option<NaiveDate>,
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only events at least this significant: critical, high, medium or low.
        #[arg(long, value_parser = ["critical", "high", "medium", "low"])]
        min_significance: Option<String>,
        /// table (the default on a terminal), csv (the default otherwise), json or jsonl.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Deliver alerts not delivered yet (a delivery a crash cut short, webhooks that failed);
    /// each goes out at most once per person, change and channel.
    Deliver {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        /// The immediate alerts of this snapshot, even if its delivery finished.
        #[arg(long)]
        snapshot: Option<NaiveDate>,
        /// Also send the messages a stopped process may or may not have sent (they may arrive twice).
        #[arg(long)]
        resend_in_doubt: bool,
    },
    /// Send the daily digests of a date (its snapshot's digest alerts, one message per person and channel).
    Digest {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        /// The digest's date; default today (UTC).
        #[arg(long)]
        date: Option<NaiveDate>,
    },
    /// Run the jobs of schedules.toml until SIGTERM/SIGINT: the nightly refresh, the exports
    /// after it, the digest, gc (see the README's "Scheduled operation").
    Schedule {
        #[arg(long, default_value = "schedules.toml")]
        schedules: PathBuf,
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// Check the file and print the next 5 fire times of every job; run nothing.
        #[arg(long)]
        check: bool,
        /// Serve /health, /ready and /metrics here instead of `[daemon] listen` (port 0: any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// The audit log: runs started and ended, sites published, alerts delivered, gc deletions,
    /// locks broken — who, what, when.
    Audit {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// Only events from this date on (UTC).
        #[arg(long)]
        since: Option<NaiveDate>,
        /// table (the default on a terminal), csv, json or jsonl.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// The run history: every run, its trigger, outcome, calls and spend (`runs show RUN_ID`: one run).
    Runs {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// Only the newest N runs.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// table (the default on a terminal), csv, json or jsonl.
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[command(subcommand)]
        show: Option<RunsCommand>,
    },
    /// Write a DuckDB database file with the query views over the committed snapshots, for
    /// the DuckDB CLI, Python or DBeaver (the Parquet files stay where they are).
    Warehouse {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// The database file to write (replaced whole).
        #[arg(long, default_value = "partnerforge.duckdb")]
        out: PathBuf,
    },
    /// Everything known about one target on one page, each fact with its source and age:
    /// score, signals, priority and angle, tech stack, traffic, financials, people, hiring,
    /// triggers, case studies, recent changes.
    Brief {
        /// The target's domain.
        domain: String,
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// md (Markdown, to read or paste) or json (the dashboard's target detail).
        #[arg(long, default_value = "md", value_parser = ["md", "json"])]
        format: String,
        /// What this audience (a person, a team or an [[audiences]] id) may see, and nothing more.
        #[arg(long)]
        audience: Option<String>,
        /// The pipeline file whose alert rules name the people file.
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        /// The target detail query it reads (the dashboard's).
        #[arg(long, default_value = "queries/export/target_detail.sql")]
        query: PathBuf,
    },
    /// Write the static dashboard sites from the latest snapshot: one for every account and
    /// field, or one per audience of the people file holding only what it may see.
    Export {
        #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
        store: String,
        /// The folder to write into (with --all-audiences, one folder per audience in it).
        #[arg(long)]
        out: PathBuf,
        /// One audience's site: a person, a team or an [[audiences]] id of the people file.
        #[arg(long, conflicts_with = "all_audiences")]
        audience: Option<String>,
        /// A site for every person, team and [[audiences]] group, each in OUT/<id>/.
        #[arg(long)]
        all_audiences: bool,
        /// The pipeline file whose alert rules name the people file.
        #[arg(long, default_value = "pipelines/nightly.toml")]
        pipeline: PathBuf,
        /// The export queries.
        #[arg(long, default_value = "queries/export")]
        queries: PathBuf,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// One run: its trigger, times, outcome, snapshot, and calls, spend and failures by provider and module.
    Show { run_id: String },
}

/// What a refresh covers (shared by `run` and `plan`).
#[derive(clap::Args)]
struct SelectionArgs {
    /// The pipeline file.
    #[arg(long, default_value = "pipelines/nightly.toml")]
    pipeline: PathBuf,
    /// Where snapshots live: a folder, file://…, or s3://bucket/prefix.
    #[arg(long, default_value = "data/store", env = "PARTNERFORGE_STORE")]
    store: String,
    /// The snapshot's date (YYYY-MM-DD); default today (UTC).
    #[arg(long)]
    date: Option<NaiveDate>,
    /// Refresh only the first N targets of the book.
    #[arg(long)]
    limit: Option<usize>,
    /// Use this targets CSV instead of the pipeline's, for this run.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Which providers to call: auto = simulated when no API keys are set.
    #[arg(long, value_enum, default_value_t = ProvidersMode::Auto)]
    providers: ProvidersMode,
    /// Fetch these modules (e.g. m03,m04) whatever their freshness.
    #[arg(long, value_delimiter = ',', value_name = "MODULES")]
    force: Vec<String>,
    /// Fetch only these modules; carry every other one forward.
    #[arg(long, value_delimiter = ',', value_name = "MODULES")]
    only: Option<Vec<String>>,
}

impl SelectionArgs {
    fn into_selection(self) -> Selection {
        Selection {
            pipeline: self.pipeline,
            store: self.store,
            date: self.date.unwrap_or_else(today),
            limit: self.limit,
            targets: self.targets,
            providers: self.providers,
            force: self.force,
            only: self.only,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SummaryFormat {
    Text,
    Json,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,partnerforge=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

/// Where copies of remote snapshots are kept for DuckDB.
fn cache_dir() -> PathBuf {
    std::env::var_os("PARTNERFORGE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("partnerforge")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/partnerforge")))
        .unwrap_or_else(|| std::env::temp_dir().join("partnerforge-cache"))
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn main() -> ExitCode {
    // The working directory's `.env` (or `$PARTNERFORGE_ENV_FILE`) fills in what the
    // environment does not set. Read here, before the runtime starts any thread, as
    // setting variables needs.
    let named = std::env::var_os("PARTNERFORGE_ENV_FILE");
    let file = named.clone().map_or_else(|| PathBuf::from(".env"), PathBuf::from);
    match partnerforge::config::dotenv::read(&file, named.is_some()) {
        Ok(settings) => {
            for (key, value) in settings {
                if std::env::var_os(&key).is_none() {
                    // SAFETY: no other thread exists yet (the runtime is built below).
                    unsafe { std::env::set_var(&key, value) };
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli_main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(Exit::Failed as u8)
        }
    }
}

async fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    {
        use std::io::IsTerminal;
        run::show_progress(!cli.log_json && std::io::stderr().is_terminal());
    }
    match dispatch(cli.command).await {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("error: {}", partnerforge::error_text(&e));
            ExitCode::from(Exit::of_error(&e) as u8)
        }
    }
}

/// Runs a command; `run` exits with its own code (see `run::Exit`), every other command 0 or 1.
async fn dispatch(command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Run { selection, replace, break_lock, resume, faults, format, triggered_by, metrics_file } => {
            let selection = selection.into_selection();
            if run::discovery::is_discovery(&selection.pipeline) {
                let report = run::discovery::run(selection).await?;
                match format {
                    SummaryFormat::Text => println!("{}", run::discovery::summary(&report)),
                    SummaryFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                }
                if report.partial {
                    eprintln!(
                        "discovery {}: partial: a list or a check is left for the next run (exit code 3)",
                        report.run_id
                    );
                    return Ok(Exit::Partial);
                }
                return Ok(Exit::Completed);
            }
            let (store_url, pipeline_name) = (
                selection.store.clone(),
                selection.pipeline.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
            );
            let options = RunOptions { selection, replace, break_lock, faults, resume, triggered_by };
            let result = run::run(options).await;
            if let Some(path) = &metrics_file
                && let Err(e) = write_run_metrics(&store_url, &pipeline_name, path).await
            {
                eprintln!(
                    "warning: could not write the run's metrics to {}: {}",
                    path.display(),
                    partnerforge::error_text(&e)
                );
            }
            let report = result?;
            match format {
                SummaryFormat::Text => println!("{}", run::summary(&report)),
                SummaryFormat::Json => println!("{}", run::summary_json(&report)),
            }
            if report.manifest.status == partnerforge::store::manifest::Status::Partial {
                eprintln!("run {}: partial: some provider calls failed (exit code 3)", report.manifest.run_id);
            }
            return Ok(Exit::of_report(&report));
        }
        Command::Plan { selection } => {
            let selection = selection.into_selection();
            if run::discovery::is_discovery(&selection.pipeline) {
                print!("{}", run::discovery::plan(selection).await?);
                return Ok(Exit::Completed);
            }
            let plan = plan::plan(selection).await?;
            print!("{}", plan::render(&plan));
        }
        Command::Simulate {
            listen,
            as_of,
            seed,
            pipeline,
            builtwith_key,
            similarweb_key,
            faults: fault_args,
            request_log,
        } => {
            let settings = LoadedPipeline::load(&pipeline)?.pipeline.simulator;
            let mut faults = settings.faults;
            apply_faults(&mut faults, &fault_args).map_err(anyhow::Error::msg)?;
            let seed = seed.unwrap_or(settings.seed);
            let as_of = as_of.unwrap_or_else(today);
            let keys = Keys { builtwith: builtwith_key, similarweb: similarweb_key };
            let sim =
                Simulator::start(listen, SimulatorConfig { seed, as_of, keys, faults: faults.clone(), request_log })
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
            println!("simulated providers on {} (world as of {as_of}, seed {seed}); Ctrl-C stops", sim.base_url());
            println!(
                "  Yahoo Finance's session cookie: {}={}{}",
                partnerforge::providers::yahoo::COOKIE_URL_ENV,
                sim.base_url(),
                partnerforge::simulate::YAHOO_COOKIE_PATH
            );
            for (provider, f) in &faults {
                println!("  faults for {provider}: {f:?}");
            }
            tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
            sim.shutdown().await;
        }
        Command::Rebuild { snapshot, pipeline, store } => {
            let selection = Selection {
                pipeline,
                store,
                date: snapshot,
                limit: None,
                targets: None,
                providers: ProvidersMode::Auto,
                force: Vec::new(),
                only: None,
            };
            let report = partnerforge::rebuild::rebuild(selection).await?;
            let m = &report.manifest;
            let tiers: Vec<String> = m.counts.tiers.iter().map(|t| format!("{} {}", t.name, t.targets)).collect();
            println!(
                "snapshot {} rebuilt from the raw bodies of generation {} as generation {} ({} bodies parsed again, no call made)\n  targets scored  {} ({})\n  model           {} v{}",
                m.snapshot_id,
                m.rebuilt_from.unwrap_or(0),
                m.generation,
                report.reparsed,
                m.counts.targets,
                tiers.join(" · "),
                m.scoring_model.name,
                m.scoring_model.version
            );
            if let Some(d) = &report.delivery {
                println!("  alerts          {} raised, {}", m.counts.alerts, d.line());
            }
        }
        Command::Gc { store, keep_daily, keep_monthly, stale_hours, dry_run, sites } => {
            if let Some(sites) = &sites {
                let stale = export::stale_versions(sites, 1, std::time::Duration::from_secs(3600));
                for version in &stale {
                    if dry_run {
                        println!("would remove site version {}", version.display());
                    } else {
                        std::fs::remove_dir_all(version)
                            .with_context(|| format!("cannot remove {}", version.display()))?;
                        println!("removed site version {}", version.display());
                        if let Ok(audit_store) = Store::open(&store) {
                            let subject = version.display().to_string();
                            let detail = serde_json::json!({"site_version": subject});
                            partnerforge::store::audit::record(&audit_store, "gc.deleted", &subject, detail).await;
                        }
                    }
                }
            }
            let store = Store::open(&store)?;
            let retention =
                Retention { keep_daily, keep_monthly, stale_after: std::time::Duration::from_secs(stale_hours * 3600) };
            let plan = store.gc_plan(&retention).await?;
            let verb = if dry_run { "would remove" } else { "removing" };
            for (date, folders) in &plan.snapshots {
                println!(
                    "{verb} snapshot {date} ({} generation{})",
                    folders.len(),
                    if folders.len() == 1 { "" } else { "s" }
                );
            }
            for folder in &plan.abandoned {
                println!("{verb} {folder} (never committed)");
            }
            if dry_run {
                println!("dry run: {} snapshots kept, nothing removed", plan.kept.len());
            } else {
                let removed = store.gc_apply(&plan).await?;
                println!("removed {removed} files; {} snapshots kept", plan.kept.len());
                if removed > 0 {
                    let detail = serde_json::json!({
                        "files": removed,
                        "snapshots": plan.snapshots.iter().map(|(date, folders)| serde_json::json!({"date": date, "generations": folders.len()})).collect::<Vec<_>>(),
                        "never_committed": plan.abandoned,
                    });
                    partnerforge::store::audit::record(&store, "gc.deleted", store.url(), detail).await;
                }
            }
        }
        Command::Query { store, format, out, file, params, sql } => {
            let (sql, origin) = match (file, sql) {
                (Some(path), _) => (
                    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
                    path.display().to_string(),
                ),
                (None, Some(sql)) => (sql, "the SQL argument".to_string()),
                (None, None) => anyhow::bail!("give the SQL as an argument or with --file queries/NAME.sql"),
            };
            let declared = serve::params::declared(&origin, &sql)?;
            let values = serve::params::bind(&origin, &declared, &params)?;
            let format = format.or_else(|| out.as_deref().and_then(Format::of_path)).unwrap_or_else(default_format);
            if format == Format::Parquet && out.is_none() {
                anyhow::bail!("--format parquet writes a file: give it with --out FILE.parquet");
            }
            let store = Store::open(&store)?;
            let warehouse = Warehouse::open(&store, &cache_dir()).await?;
            let result = warehouse.run(&sql, &values)?;
            write_output(&result, format, out.as_deref())?;
        }
        Command::Changes { store, pipeline, from, to, since, domain, min_significance, format } => {
            let pipeline = LoadedPipeline::load(&pipeline)?;
            let rules = pipeline
                .changes
                .as_ref()
                .with_context(|| format!("{} names no change rules (`changes = …`)", pipeline.path.display()))?;
            let store = Store::open(&store)?;
            let snapshots = store.snapshots().await?;
            let find = |date: NaiveDate| {
                let date = date.to_string();
                snapshots
                    .iter()
                    .find(|m| m.date == date)
                    .with_context(|| format!("store {} has no snapshot for {date}", store.url()))
            };
            let newest = match to {
                Some(date) => find(date)?,
                None => snapshots.last().with_context(|| format!("store {} has no snapshot yet", store.url()))?,
            };
            let older = match (from, since) {
                (Some(date), _) => find(date)?,
                (None, Some(since)) => {
                    let since = since.to_string();
                    snapshots
                        .iter()
                        .rev()
                        .find(|m| m.date <= since && m.date < newest.date)
                        .or_else(|| snapshots.first().filter(|m| m.date < newest.date))
                        .with_context(|| format!("no snapshot before {} to compare with", newest.date))?
                }
                (None, None) => snapshots
                    .iter()
                    .rev()
                    .find(|m| m.date < newest.date)
                    .with_context(|| format!("no snapshot before {} to compare with", newest.date))?,
            };
            if older.date >= newest.date {
                anyhow::bail!("--from {} is not before --to {}", older.date, newest.date);
            }
            let options = run::changes::DiffOptions {
                domain: domain.as_deref(),
                min_significance: min_significance.as_deref(),
                slice_rows: pipeline.pipeline.run.change_slice_rows,
                use_feed: true,
            };
            let mut events = run::changes::diff(&store, older, newest, rules, &options).await?;
            let rank = |s: &str| partnerforge::config::changes::significance_rank(s).unwrap_or(usize::MAX);
            events.sort_by(|a, b| rank(&a.significance).cmp(&rank(&b.significance)).then(a.domain.cmp(&b.domain)));
            eprintln!(
                "changes from snapshot {} to {}: {} events (rules {} v{})",
                older.snapshot_id,
                newest.snapshot_id,
                events.len(),
                pipeline.pipeline.changes.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                rules.version
            );
            let format = format.unwrap_or_else(default_format);
            let batch = match format {
                // The table shows what a reader scans for; the other formats every column.
                Format::Table => run::changes::summary_batch(&events)?,
                _ => run::changes::changes_batch(&events)?,
            };
            let result = serve::Output { schema: batch.schema(), batches: vec![batch] };
            write_output(&result, format, None)?;
        }
        Command::Deliver { store, pipeline, snapshot, resend_in_doubt } => {
            let pipeline = LoadedPipeline::load(&pipeline)?;
            let rules = alert_rules(&pipeline)?;
            let store = Store::open(&store)?;
            let only = match snapshot {
                Some(date) => {
                    let date = date.to_string();
                    let found = store.snapshots().await?.into_iter().find(|m| m.date == date);
                    Some(found.with_context(|| format!("store {} has no snapshot for {date}", store.url()))?)
                }
                None => None,
            };
            let run_id = format!("deliver-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
            let report = run::changes::deliver_pending(&store, rules, &run_id, resend_in_doubt, only.as_ref()).await?;
            println!("alerts: {}", report.line());
            for (channel, user, key, reason) in &report.failed {
                eprintln!("failed: {channel} to {user} ({key}): {reason}");
            }
            for (channel, user, key) in &report.in_doubt {
                eprintln!("in doubt: {channel} to {user} ({key})");
            }
            if !report.failed.is_empty() {
                return Ok(Exit::Partial);
            }
        }
        Command::Digest { store, pipeline, date } => {
            let pipeline = LoadedPipeline::load(&pipeline)?;
            let rules = alert_rules(&pipeline)?;
            let store = Store::open(&store)?;
            let date = date.unwrap_or_else(today).to_string();
            let manifest = store
                .snapshots()
                .await?
                .into_iter()
                .find(|m| m.date == date)
                .with_context(|| format!("store {} has no snapshot for {date}: no digest to send", store.url()))?;
            let alerts = run::changes::stored_alerts(&store, &manifest).await?;
            let messages = partnerforge::alerts::digests(&alerts, &date);
            let run_id = format!("digest-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
            let report = partnerforge::alerts::deliver(&store, rules, &messages, &run_id, false).await?;
            println!(
                "digests of {date}: {} messages for {} people; {}",
                messages.len(),
                {
                    let people: std::collections::BTreeSet<&str> = messages.iter().map(|m| m.user.as_str()).collect();
                    people.len()
                },
                report.line()
            );
            for (channel, user, key, reason) in &report.failed {
                eprintln!("failed: {channel} to {user} ({key}): {reason}");
            }
            if !report.failed.is_empty() {
                return Ok(Exit::Partial);
            }
        }
        Command::Schedule { schedules, store, check, listen } => {
            let loaded = partnerforge::config::schedules::Schedules::load(&schedules)?;
            if check {
                print!("{}", partnerforge::schedule::check_report(&loaded, 5));
                return Ok(Exit::Completed);
            }
            let opened = Store::open(&store)?;
            let settings = partnerforge::schedule::Settings {
                store: store.clone(),
                exe: std::env::current_exe().context("finding the partnerforge binary")?,
                workdir: std::env::current_dir().context("the working directory")?,
            };
            let stop = tokio_util::sync::CancellationToken::new();
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
                let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
                let stop = stop.clone();
                let grace = loaded.daemon.stop_grace_secs;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    eprintln!("schedule: stopping (no new job starts; running jobs get {grace} s)");
                    stop.cancel();
                });
            }
            let address = listen.unwrap_or(loaded.daemon.listen);
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for /health, /ready and /metrics"))?;
            let metrics = std::sync::Arc::new(partnerforge::schedule::Metrics::new());
            eprintln!(
                "schedule: {} jobs from {} over store {}; /health, /ready, /metrics on http://{}",
                loaded.jobs.len(),
                schedules.display(),
                opened.url(),
                listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| address.to_string())
            );
            let server =
                tokio::spawn(partnerforge::schedule::serve(listener, metrics.clone(), opened.clone(), stop.clone()));
            partnerforge::schedule::run_daemon(
                std::sync::Arc::new(loaded),
                std::sync::Arc::new(settings),
                opened,
                stop.clone(),
                metrics,
            )
            .await?;
            stop.cancel();
            let _ = server.await;
            eprintln!("schedule: stopped");
        }
        Command::Audit { store, since, format } => {
            let store = Store::open(&store)?;
            let events = partnerforge::store::audit::events(&store, since).await?;
            let batch = partnerforge::store::table::TableBuilder::new()
                .text("at", events.iter().map(|e| Some(&e.at)))
                .text("actor", events.iter().map(|e| Some(&e.actor)))
                .text("action", events.iter().map(|e| Some(&e.action)))
                .text("subject", events.iter().map(|e| Some(&e.subject)))
                .text("detail", events.iter().map(|e| Some(e.detail.to_string())))
                .finish()?;
            let result = serve::Output { schema: batch.schema(), batches: vec![batch] };
            write_output(&result, format.unwrap_or_else(default_format), None)?;
        }
        Command::Runs { store, last, format, show } => {
            let store = Store::open(&store)?;
            let runs = run::history::all(&store).await?;
            let format = format.unwrap_or_else(default_format);
            match show {
                Some(RunsCommand::Show { run_id }) => {
                    let found = runs
                        .iter()
                        .find(|r| r.run_id() == run_id || r.end.as_ref().is_some_and(|e| e.run_id == run_id))
                        .with_context(|| format!("store {} has no run {run_id} in its history", store.url()))?;
                    if matches!(format, Format::Json | Format::Jsonl) {
                        println!("{}", serde_json::to_string_pretty(found)?);
                    } else {
                        print!("{}", run_detail(found));
                    }
                }
                None => {
                    let shown: Vec<&run::history::RunHistory> = runs.iter().rev().take(last).collect();
                    let batch = runs_batch(&shown)?;
                    let result = serve::Output { schema: batch.schema(), batches: vec![batch] };
                    write_output(&result, format, None)?;
                }
            }
        }
        Command::Warehouse { store, out } => {
            let store = Store::open(&store)?;
            let warehouse = Warehouse::write_file(&store, &cache_dir(), &out).await?;
            println!(
                "wrote {} with views over {} snapshots (latest {}); open it with `duckdb {}`",
                out.display(),
                warehouse.snapshots,
                warehouse.latest.snapshot_id,
                out.display()
            );
            if store.local_root().is_none() {
                println!("its views read the copies in {}: keep them there", cache_dir().display());
            }
        }
        Command::Brief { domain, store, format, audience, pipeline, query } => {
            let store = Store::open(&store)?;
            let warehouse = Warehouse::open(&store, &cache_dir()).await?;
            let domain = partnerforge::targets::normalize_domain(&domain)
                .map_err(|e| anyhow::anyhow!("{domain:?} is not a domain: {e}"))?;
            let who = match &audience {
                Some(name) => {
                    let loaded = LoadedPipeline::load(&pipeline)?;
                    let people = alert_rules(&loaded)?.people.clone();
                    let found = serve::audience::find(&people, name).map_err(anyhow::Error::msg)?;
                    warehouse.scope(Some((&found, &people)))?;
                    format!(" for audience {name}")
                }
                None => String::new(),
            };
            let Some(detail) = serve::brief::detail(&warehouse, &query, &domain)? else {
                anyhow::bail!("{domain} is not among the targets of snapshot {}{who}", warehouse.latest.snapshot_id);
            };
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print!("{}", serve::brief::markdown(&detail, chrono::Utc::now()));
            }
        }
        Command::Export { store, out, audience, all_audiences, pipeline, queries } => {
            let store = Store::open(&store)?;
            let warehouse = Warehouse::open(&store, &cache_dir()).await?;
            let people = if audience.is_some() || all_audiences {
                let loaded = LoadedPipeline::load(&pipeline)?;
                Some(alert_rules(&loaded)?.people.clone())
            } else {
                None
            };
            let sites: Vec<(Option<serve::audience::Audience>, PathBuf)> = match (&people, audience, all_audiences) {
                (Some(people), Some(name), _) => {
                    vec![(Some(serve::audience::find(people, &name).map_err(anyhow::Error::msg)?), out.clone())]
                }
                (Some(people), None, true) => {
                    serve::audience::all(people).into_iter().map(|a| (Some(a.clone()), out.join(&a.id))).collect()
                }
                _ => vec![(None, out.clone())],
            };
            for (audience, dir) in &sites {
                let scope = audience.as_ref().zip(people.as_ref());
                let summary = export::export_site(&warehouse, &queries, dir, scope)?;
                for key in &summary.skipped_keys {
                    tracing::warn!("skipped a row whose key {key:?} is not a safe file name");
                }
                let who = match audience {
                    Some(a) => format!(
                        "{} ({} {}, {})",
                        a.id,
                        a.kind,
                        a.role.name(),
                        if a.sees_financials() { "financials" } else { "no financials" }
                    ),
                    None => "every account and field".to_string(),
                };
                let detail = serde_json::json!({
                    "audience": audience.as_ref().map(|a| a.id.clone()), "version": summary.version,
                    "snapshot": warehouse.latest.snapshot_id, "accounts": summary.accounts, "files": summary.files,
                });
                partnerforge::store::audit::record(&store, "export.published", &dir.display().to_string(), detail)
                    .await;
                println!(
                    "exported {who}: {} accounts, {} files ({:.1} MB) from snapshot {} to {} (version {})",
                    summary.accounts,
                    summary.files,
                    summary.bytes as f64 / 1e6,
                    warehouse.latest.snapshot_id,
                    dir.display(),
                    summary.version
                );
            }
        }
    }
    Ok(Exit::Completed)
}

/// The pipeline's alert rules, or an error saying it has none.
fn alert_rules(pipeline: &LoadedPipeline) -> anyhow::Result<&partnerforge::config::alerts::AlertRules> {
    pipeline.alerts.as_ref().with_context(|| format!("{} names no alert rules (`alerts = …`)", pipeline.path.display()))
}

/// This process's run, from the run history: its metrics into a node-exporter textfile
/// (written beside, then renamed, so the collector never reads half a file).
async fn write_run_metrics(store: &str, pipeline: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let store = Store::open(store)?;
    let pid = std::process::id();
    let runs = run::history::all(&store).await?;
    let mine = runs
        .iter()
        .rev()
        .find(|r| r.start.as_ref().is_some_and(|s| s.pid == pid))
        .context("this run left no history record")?;
    let end = mine.end.as_ref().context("this run has no end record")?;
    let metrics = partnerforge::schedule::Metrics::new();
    metrics.record_run(pipeline, end);
    if let (Some(date), Some(generation)) = (&end.snapshot_id, end.generation) {
        let ledger = format!("{}/api_calls.parquet", partnerforge::store::manifest::folder(date, generation));
        metrics.record_ledger(store.get(&ledger).await?)?;
    }
    let text = classic_text(&metrics.encode());
    let partial = path.with_extension("prom.partial");
    std::fs::write(&partial, text).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// OpenMetrics text as the classic Prometheus text format node-exporter's textfile
/// collector reads: a counter's family is named with its `_total` suffix, no `# EOF`.
fn classic_text(open_metrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> =
        open_metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::new();
    for line in open_metrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The run history as a table, newest first.
fn runs_batch(runs: &[&run::history::RunHistory]) -> anyhow::Result<arrow::record_batch::RecordBatch> {
    use partnerforge::store::table::TableBuilder;
    let start = |r: &&run::history::RunHistory| r.start.clone();
    let end = |r: &&run::history::RunHistory| r.end.clone();
    let failed = |r: &&run::history::RunHistory| {
        r.end.as_ref().map(|e| e.providers.values().map(|p| p.failed as i64).sum::<i64>())
    };
    Ok(TableBuilder::new()
        .text("run_id", runs.iter().map(|r| Some(r.run_id().to_string())))
        .text("trigger", runs.iter().map(|r| start(r).map(|s| s.trigger)))
        .text("started_at", runs.iter().map(|r| start(r).map(|s| s.started_at)))
        .float("wall_secs", runs.iter().map(|r| end(r).map(|e| (e.wall_secs * 10.0).round() / 10.0)))
        .text("status", runs.iter().map(|r| Some(r.status().to_string())))
        .text(
            "snapshot",
            runs.iter()
                .map(|r| end(r).and_then(|e| e.snapshot_id.map(|s| format!("{s}/{}", e.generation.unwrap_or(1))))),
        )
        .int("calls", runs.iter().map(|r| end(r).map(|e| e.calls as i64)))
        .int("failed_calls", runs.iter().map(failed))
        .float("spend_usd", runs.iter().map(|r| end(r).map(|e| (e.spend_usd * 100.0).round() / 100.0)))
        .text(
            "error",
            runs.iter().map(|r| {
                end(r)
                    .and_then(|e| e.error)
                    .map(|e| e.lines().next().unwrap_or_default().chars().take(120).collect::<String>())
            }),
        )
        .finish()?)
}

/// One run, as an operator reads it.
fn run_detail(r: &run::history::RunHistory) -> String {
    let mut out = format!("run {}\n", r.run_id());
    if let Some(s) = &r.start {
        out.push_str(&format!(
            "  trigger         {}\n  started         {} (pid {} on {})\n  pipeline        {} for {}{}\n",
            s.trigger,
            s.started_at,
            s.pid,
            s.host,
            s.pipeline,
            s.date,
            if s.resumed { ", resuming an earlier run" } else { "" }
        ));
    }
    match &r.end {
        None => out
            .push_str("  status          unfinished: no end record (it died, or it is still running: see its lock)\n"),
        Some(e) => {
            out.push_str(&format!(
                "  ended           {} after {:.1} s\n  status          {} (exit code {})\n",
                e.ended_at, e.wall_secs, e.status, e.exit_code
            ));
            if let Some(snapshot) = &e.snapshot_id {
                out.push_str(&format!(
                    "  snapshot        {snapshot} generation {}: {} targets, {} module results carried forward\n",
                    e.generation.unwrap_or(1),
                    e.targets,
                    e.carried_forward
                ));
            }
            out.push_str(&format!("  calls           {} made, ${:.2} spent\n", e.calls, e.spend_usd));
            for (provider, p) in &e.providers {
                out.push_str(&format!(
                    "    {provider:<14} {:>6} calls  {:>4} failed  ${:.2}\n",
                    p.calls, p.failed, p.spend_usd
                ));
            }
            if !e.failed_modules.is_empty() {
                out.push_str("  failed calls by module\n");
                for (module, n) in &e.failed_modules {
                    out.push_str(&format!("    {module:<14} {n}\n"));
                }
            }
            if !e.skipped_modules.is_empty() {
                out.push_str(
                    "  skipped calls by module (budget, quota, open circuit, refused key, failed dependency)\n",
                );
                for (module, n) in &e.skipped_modules {
                    out.push_str(&format!("    {module:<14} {n}\n"));
                }
            }
            let tripped: Vec<String> = e
                .circuits
                .iter()
                .filter(|(_, c)| c.opened > 0 || c.state != "closed")
                .map(|(p, c)| format!("{p} {} (opened {}×)", c.state, c.opened))
                .collect();
            if !tripped.is_empty() {
                out.push_str(&format!("  circuits        {}\n", tripped.join(", ")));
            }
            if !e.modules_completed.is_empty() {
                out.push_str(&format!("  modules fetched {}\n", e.modules_completed.join(", ")));
            }
            if let Some(error) = &e.error {
                out.push_str(&format!("  error           {error}\n"));
            }
        }
    }
    out
}

/// The aligned table on a terminal, CSV into a pipe or a file.
fn default_format() -> Format {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() { Format::Table } else { Format::Csv }
}

/// Writes a result to stdout, or whole to a file that is then moved into place.
fn write_output(result: &serve::Output, format: Format, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    match out {
        None => {
            let mut stdout = std::io::stdout().lock();
            result.write(format, &mut stdout)?;
            stdout.flush()?;
        }
        Some(path) => {
            let partial = path.with_extension(format!(
                "{}.partial",
                path.extension().map(|e| e.to_string_lossy().to_string()).unwrap_or_default()
            ));
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?,
            );
            result.write(format, &mut file)?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} rows to {}", result.rows(), path.display());
        }
    }
    Ok(())
}
