//! Serving, measured: opening the views, the dashboard export of the book (every
//! account; then every audience), and each shipped named query through DuckDB.
//!
//! ```sh
//! cargo bench --bench serving                  # commits two nights of the whole book first
//! cargo bench --bench serving -- --store DIR   # over an existing store
//! cargo bench --bench serving -- --runs 9
//! ```
//!
//! Each line is the median of the runs, with the fastest and slowest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use partnerforge::serve::{Warehouse, audience, export, params};

fn median(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn report(what: &str, times: Vec<Duration>, extra: &str) {
    let (mid, low, high) = median(times);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{what:<44} {:>9.1} ms  (min {:.1}, max {:.1}){extra}", ms(mid), ms(low), ms(high));
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Two nights of the whole book on the simulated providers, with the release binary.
fn committed_book(dir: &Path) -> String {
    let store = dir.join("store").display().to_string();
    for date in ["2026-11-23", "2026-11-24"] {
        let status = Command::new(env!("CARGO_BIN_EXE_partnerforge"))
            .current_dir(repo())
            .args(["run", "--store", &store, "--date", date])
            .env_remove("BUILTWITH_API_KEY")
            .env_remove("SIMILARWEB_API_KEY")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run partnerforge");
        assert!(status.success(), "the book's run of {date} failed");
    }
    store
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = value("--runs").and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let scratch = tempfile::tempdir().expect("temp dir");
    let store_path = value("--store").unwrap_or_else(|| committed_book(scratch.path()));
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let store = partnerforge::store::Store::open(&store_path).expect("open the store");
    let cache = scratch.path().join("cache");

    let mut opens = Vec::new();
    let mut warehouse = None;
    for _ in 0..runs {
        let started = Instant::now();
        warehouse = Some(runtime.block_on(Warehouse::open(&store, &cache)).expect("open the views"));
        opens.push(started.elapsed());
    }
    let warehouse = warehouse.expect("a warehouse");
    let targets = warehouse.scope(None).expect("every account");
    println!(
        "store {store_path}: {} snapshots, latest {} ({targets} targets), {runs} runs each",
        warehouse.snapshots, warehouse.latest.snapshot_id
    );
    report("open the views (query, export)", opens, "");

    let queries = repo().join("queries/export");
    let mut exports = Vec::new();
    let mut last = None;
    for i in 0..runs {
        let out = scratch.path().join(format!("site-{i}"));
        let started = Instant::now();
        last = Some(export::export_site(&warehouse, &queries, &out, None).expect("export"));
        exports.push(started.elapsed());
    }
    let summary = last.expect("an export");
    report(
        "export: the book, every account and field",
        exports,
        &format!("  {} files, {:.1} MB", summary.files, summary.bytes as f64 / 1e6),
    );

    let pipeline =
        partnerforge::config::LoadedPipeline::load(&repo().join("pipelines/nightly.toml")).expect("pipeline");
    let people = &pipeline.alerts.as_ref().expect("alert rules").people;
    let audiences = audience::all(people);
    let mut all = Vec::new();
    for i in 0..runs {
        let started = Instant::now();
        for a in &audiences {
            let out = scratch.path().join(format!("sites-{i}")).join(&a.id);
            export::export_site(&warehouse, &queries, &out, Some((a, people))).expect("audience export");
        }
        all.push(started.elapsed());
    }
    report(&format!("export: all {} audiences", audiences.len()), all, "");

    let named: &[(&str, &[&str])] = &[
        ("top_targets.sql", &[]),
        ("top_targets.sql", &["tier=hot", "vertical=Commerce"]),
        ("tier_by_vertical.sql", &[]),
        ("vendor_removed.sql", &[]),
        ("spend_by_provider.sql", &[]),
        ("tier_movement.sql", &["from=2026-11-23", "to=2026-11-24"]),
        ("competitors_on_algolia.sql", &[]),
        ("hiring_signals.sql", &[]),
        ("recent_changes.sql", &[]),
    ];
    warehouse.scope(None).expect("every account");
    for (file, given) in named {
        let path = repo().join("queries").join(file);
        let sql = std::fs::read_to_string(&path).expect("read the query");
        let declared = params::declared(file, &sql).expect("header");
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        let values = params::bind(file, &declared, &given).expect("parameters");
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..runs {
            let started = Instant::now();
            rows = warehouse.run(&sql, &values).expect("query").rows();
            times.push(started.elapsed());
        }
        let label = if given.is_empty() { file.to_string() } else { format!("{file} {}", given.join(" ")) };
        report(&format!("query {label}"), times, &format!("  {rows} rows"));
    }
    println!("peak resident memory {:.0} MiB", peak_rss_mib());
}
