//! The targets table of N targets on synthetic nights (benches/support/synthetic.rs: the module
//! tables a run writes, two consecutive dates, about 1 % of the domains changed):
//!
//! - `read`: decoding just the columns the assembly joins, from the same files — the
//!   floor a full recompute is held to;
//! - `full`: the whole table computed — joins, conflicts, ICP score, signals,
//!   provenance, case studies — and written, as `rebuild` does;
//! - `incremental`: the second night as a run with `[run] targets_by_reference_rows` commits it, the
//!   fetch having touched the changed domains: only their rows (and those whose inputs moved
//!   with the date) are joined and hashed, carrying forward every row whose input hash
//!   equals the first night's and computing the rest:
//!   the first night's rows by reference (not read, not written again), then the columns
//!   change tracking reads of the table, from its own rows and the base's;
//! - `incremental-whole`: the same night written whole (the carried rows read and written
//!   again), as a run commits it by default (and a rewrite night);
//! - `publish`: the by-reference night's Delta publish: the base's rows it leaves out,
//!   found from the three files' domains and written as a deletion vector.
//!
//! - `query`: the shipped top-targets named query through DuckDB over the full
//!   recompute's targets table, as `query` reads it: a native copy in the lists' order
//!   (its build, once a night, is timed apart).
//!
//! Both incremental nights must equal the full one row for row (checked every time).
//!
//!     cargo bench --bench scoring -- 1000000 [--runs 3] [--slice ROWS] [--part ROWS] [--json] [--keep DIR]
//!
//! `--keep DIR` leaves the nights (and `book.csv`) in DIR for benches/peers.py.
//!
//! Each step runs in a child process of its own, so its peak resident memory (VmHWM) is
//! its own; the nights' Parquet files are generated once into a scratch folder.

#[path = "support/synthetic.rs"]
mod synthetic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use partnerforge::config::LoadedPipeline;
use partnerforge::serve::{self, params};
use partnerforge::transform::{self, BookRow, ModuleFiles, Reuse, SliceWriter, Slicing};
use synthetic::{DATES, flag, load, median, peak_rss_mib, save};

/// The book of `n` synthetic targets and the shipped pipeline, made before a step's timer
/// starts (a run holds both before it assembles).
struct Setup {
    targets: Vec<partnerforge::targets::Target>,
    tickers: HashMap<String, String>,
    pipeline: LoadedPipeline,
}

impl Setup {
    fn new(n: usize) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let pipeline = LoadedPipeline::load(&root.join("pipelines/nightly.toml")).expect("the shipped pipeline");
        let (targets, tickers) = synthetic::book(n);
        Self { targets, tickers, pipeline }
    }

    fn rows(&self) -> Vec<BookRow<'_>> {
        self.targets
            .iter()
            .map(|t| BookRow {
                target: t,
                ticker: self.tickers.get(&t.domain).map(String::as_str),
                modules_failed: None,
                family: None,
            })
            .collect()
    }
}

/// One night's targets table (and its inputs) into `out`: `(rows, carried)` (the rows
/// carried by reference counted in both).
fn assemble(
    setup: &Setup,
    day: usize,
    files: &HashMap<String, Bytes>,
    reuse: Option<&Reuse>,
    slicing: Slicing,
    out: &Path,
) -> (usize, usize) {
    let pipeline = &setup.pipeline;
    let rows = setup.rows();
    let mut writer = SliceWriter::new(&out.join("targets.parquet")).one_row_per_domain();
    let mut inputs = SliceWriter::new(&out.join("target_inputs.parquet")).one_row_per_domain();
    let (mut carried, mut referenced) = (0, 0);
    transform::assemble_in_slices(
        &rows,
        &ModuleFiles::from_tables(|t| files.get(t).cloned()),
        &pipeline.model,
        pipeline.signals.as_ref(),
        DATES[day - 1],
        slicing,
        reuse,
        |s| {
            carried += s.reused;
            referenced += s.referenced;
            writer.write(&s.targets)?;
            inputs.write(&s.inputs)
        },
    )
    .expect("assembled");
    let written = writer.rows;
    writer.finish().expect("targets written");
    inputs.finish().expect("inputs written");
    (written + referenced, carried)
}

/// A step in this process: prints one JSON line.
fn step(name: &str, n: usize, dir: &Path, slicing: Slicing) {
    let night2 = load(dir, "2");
    // A file a step before this one wrote.
    let output = |d: &str, f: &str| Bytes::from(std::fs::read(dir.join(d).join(f)).expect("a night's output"));
    let setup = || Setup::new(n);
    let t = Instant::now();
    let (rows, carried) = match name {
        "read" => {
            let mut rows = 0;
            for (table, columns) in transform::scored_columns() {
                let bytes = night2.get(table).cloned().unwrap_or_default();
                rows += transform::read_parquet(bytes, &columns).and_then(|f| f.collect()).expect("read").height();
            }
            (rows, 0)
        }
        "prepare" | "full" => {
            let (day, files, out) = match name {
                "prepare" => (1, load(dir, "1"), "out1"),
                _ => (2, night2, "full2"),
            };
            let setup = setup();
            let t = Instant::now();
            let (rows, carried) = assemble(&setup, day, &files, None, slicing, &ensure(dir.join(out)));
            return report(name, t.elapsed().as_secs_f64(), rows, carried);
        }
        "incremental" | "incremental-whole" => {
            // As a run commits it: by reference to the first night's table (and the columns
            // change tracking reads of the table, its own rows and the base's); or whole.
            let by_reference = name == "incremental";
            let (targets, inputs) = (output("out1", "targets.parquet"), output("out1", "target_inputs.parquet"));
            // The fetch touched the changed domains (the others' module rows are the first night's).
            let touched = Some((0..n).filter(|i| synthetic::changed(*i)).map(synthetic::domain).collect());
            let reuse = Reuse { targets: targets.clone(), base: None, inputs, same_day: false, by_reference, touched };
            let out = ensure(dir.join(if by_reference { "incremental2" } else { "whole2" }));
            let setup = setup();
            let t = Instant::now();
            let done = assemble(&setup, 2, &night2, Some(&reuse), slicing, &out);
            if by_reference {
                let own = Bytes::from(std::fs::read(out.join("targets.parquet")).expect("own rows"));
                let inputs = Bytes::from(std::fs::read(out.join("target_inputs.parquet")).expect("inputs"));
                let base = transform::Base { targets: &targets, inputs: &inputs };
                let mut domains: Vec<&str> = setup.targets.iter().map(|t| t.domain.as_str()).collect();
                domains.sort_unstable();
                let tracked = transform::write_targets(
                    &own,
                    Some(base),
                    &transform::TRACKED_TARGET_COLUMNS,
                    DATES[1],
                    &domains,
                    slicing.part_rows,
                    &out.join("tracked.parquet"),
                )
                .expect("the tracked columns");
                assert_eq!(tracked, done.0);
            }
            return report(name, t.elapsed().as_secs_f64(), done.0, done.1);
        }
        "query" => return top_targets(&dir.join("full2").join("targets.parquet")),
        "publish" => {
            // What the Delta publish of the by-reference night computes: the base's rows
            // the night leaves out (from the three files' domains), as a deletion vector.
            let (own, inputs, first) = (
                output("incremental2", "targets.parquet"),
                output("incremental2", "target_inputs.parquet"),
                output("out1", "targets.parquet"),
            );
            let deletions = partnerforge::store::delta::base_deletions(own, first, inputs).expect("the deletions");
            let vector = partnerforge::store::deletion_vector::file(&deletions.deleted, [0; 16]);
            std::fs::write(ensure(dir.join("published2")).join(vector.file_name), vector.bytes).expect("written");
            (deletions.base_rows as usize, deletions.deleted.len())
        }
        "compare" => {
            // A million domains at a time, so that comparing 10M-row tables fits in memory.
            let (full, whole, own) = (
                output("full2", "targets.parquet"),
                output("whole2", "targets.parquet"),
                output("incremental2", "targets.parquet"),
            );
            let (first, inputs) = (output("out1", "targets.parquet"), output("incremental2", "target_inputs.parquet"));
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let pipeline = LoadedPipeline::load(&root.join("pipelines/nightly.toml")).expect("the shipped pipeline");
            let names = transform::target_columns(pipeline.signals.as_ref().map(|(rules, _)| rules));
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let domains =
                transform::read_parquet(inputs.clone(), &["domain"]).and_then(|f| f.collect()).expect("domains");
            let domains: Vec<&str> =
                domains.column("domain").expect("domain").str().expect("text").iter().flatten().collect();
            let mut rows = 0usize;
            for range in transform::changes::DomainRange::split(domains.into_iter(), 1_000_000) {
                let table = |bytes: &Bytes, base: Option<transform::Base>| {
                    transform::read_targets(bytes, base, &names, DATES[1], &range).expect("read targets")
                };
                let expected = table(&full, None);
                let base = transform::Base { targets: &first, inputs: &inputs };
                assert!(
                    expected.equals_missing(&table(&whole, None)),
                    "the incremental night (whole) differs from the full recompute"
                );
                assert!(
                    expected.equals_missing(&table(&own, Some(base))),
                    "the incremental night (by reference) differs from the full recompute"
                );
                rows += expected.height();
            }
            assert!(rows > 0);
            (rows, 0)
        }
        other => panic!("no step {other}"),
    };
    report(name, t.elapsed().as_secs_f64(), rows, carried);
}

/// A step's JSON line.
fn report(name: &str, seconds: f64, rows: usize, carried: usize) {
    println!(
        "{}",
        serde_json::json!({"step": name, "seconds": seconds, "rows": rows, "carried": carried, "peak_mib": peak_rss_mib()})
    );
}

/// The shipped top-targets query (`queries/top_targets.sql`) through DuckDB over the full
/// recompute's targets table, as `partnerforge query` runs it: with its default
/// parameters and narrowed (`tier=hot vertical=Commerce`); the median of 5 runs each.
fn top_targets(targets: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sql = std::fs::read_to_string(root.join("queries/top_targets.sql")).expect("the shipped query");
    let declared = params::declared("top_targets.sql", &sql).expect("its parameters");
    // The native copy `query` reads (built once a night), then the query over it.
    let copy = targets.with_file_name("targets.duckdb");
    let _ = std::fs::remove_file(&copy);
    let t = Instant::now();
    serve::native::build(&serve::native::parquet_relation(targets), &copy).expect("the native copy");
    let build_seconds = t.elapsed().as_secs_f64();
    let conn = duckdb::Connection::open_in_memory().expect("DuckDB");
    conn.execute_batch(&serve::native::attach(&copy)).expect("the targets view");
    let mut out = serde_json::Map::new();
    for (label, given) in [("default", vec![]), ("narrowed", vec!["tier=hot".to_string(), "vertical=Commerce".into()])]
    {
        let values = params::bind("top_targets.sql", &declared, &given).expect("bound");
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..5 {
            let t = Instant::now();
            rows = serve::execute(&conn, &sql, &values).expect("the query").rows();
            times.push(t.elapsed().as_secs_f64());
        }
        assert!(rows > 0, "the top-targets query found no targets");
        out.insert(label.into(), serde_json::json!({"seconds": median(times), "rows": rows}));
    }
    let seconds = out["default"]["seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({"step": "query", "seconds": seconds, "rows": out["default"]["rows"], "carried": 0,
            "queries": out, "copy_seconds": build_seconds, "peak_mib": peak_rss_mib()})
    );
}

/// The book as a CSV of the seed's columns, for the peers (benches/peers.py).
fn write_book(dir: &Path, n: usize) {
    let (targets, _) = synthetic::book(n);
    let mut w = csv::Writer::from_path(dir.join("book.csv")).expect("book.csv");
    w.write_record(["domain", "company_name", "partner_tech", "vertical", "country"]).expect("header");
    for t in &targets {
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        w.write_record([
            t.domain.clone(),
            field(&t.company_name),
            field(&t.partner_tech),
            field(&t.vertical),
            field(&t.country),
        ])
        .expect("row");
    }
    w.flush().expect("book.csv written");
}

fn ensure(dir: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&dir).expect("output folder");
    dir
}

fn child(args: &[String], step: &str, dir: &Path) -> serde_json::Value {
    let mut child: Vec<String> = args.to_vec();
    child.extend(["--step".into(), step.into(), "--from".into(), dir.display().to_string()]);
    let out = std::process::Command::new(std::env::current_exe().expect("exe")).args(&child).output().expect("step");
    assert!(out.status.success(), "step {step} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("{}")).expect("a step's JSON line")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = flag(&args, "--runs").and_then(|r| r.parse().ok()).unwrap_or(3);
    let defaults = Slicing::of(&partnerforge::config::RunSettings::default());
    let slicing = Slicing {
        rows: flag(&args, "--slice").and_then(|r| r.parse().ok()).unwrap_or(defaults.rows),
        part_rows: flag(&args, "--part").and_then(|r| r.parse().ok()).unwrap_or(defaults.part_rows),
    };
    if let (Some(name), Some(dir)) = (flag(&args, "--step"), flag(&args, "--from")) {
        return step(&name, n, Path::new(&dir), slicing);
    }
    let keep = flag(&args, "--keep").map(PathBuf::from);
    let dir = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("partnerforge-bench-scoring-{}", std::process::id())));
    let started = Instant::now();
    save(&dir, "1", &synthetic::night(n, 1));
    save(&dir, "2", &synthetic::night(n, 2));
    write_book(&dir, n);
    let changed = (0..n).filter(|i| synthetic::changed(*i)).count();
    let generated = started.elapsed().as_secs_f64();
    child(&args, "prepare", &dir);
    let mut results = serde_json::Map::new();
    for name in ["read", "full", "incremental", "incremental-whole"] {
        let measured: Vec<serde_json::Value> = (0..runs).map(|_| child(&args, name, &dir)).collect();
        let seconds = median(measured.iter().map(|m| m["seconds"].as_f64().unwrap_or(f64::NAN)).collect());
        let peak = measured.iter().map(|m| m["peak_mib"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
        let last = measured.last().cloned().unwrap_or_default();
        results.insert(
            name.into(),
            serde_json::json!({"seconds": seconds, "rows": last["rows"], "carried": last["carried"], "peak_mib": peak}),
        );
    }
    child(&args, "compare", &dir);
    results.insert("publish".into(), child(&args, "publish", &dir));
    let query = child(&args, "query", &dir);
    results.insert("query".into(), query.clone());
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let get = |step: &str, key: &str| results[step][key].as_f64().unwrap_or(f64::NAN);
    if args.iter().any(|a| a == "--json") {
        let summary = serde_json::json!({"targets": n, "changed": changed, "runs": runs, "slice": slicing.rows, "part": slicing.part_rows, "steps": results});
        println!("{summary}");
        return;
    }
    println!(
        "{n} targets, {changed} changed on the second night ({:.2} %); nights generated in {generated:.1} s",
        changed as f64 * 100.0 / n as f64
    );
    for (step, what) in [
        ("read", "read the needed columns     "),
        ("full", "full recompute (+ write)    "),
        ("incremental", "incremental night, by ref.  "),
        ("incremental-whole", "incremental night (+ write) "),
    ] {
        println!(
            "{what} {:>7.3} s  {:>10.0} rows/s  peak {:>6.0} MiB{}",
            get(step, "seconds"),
            get(step, "rows") / get(step, "seconds"),
            get(step, "peak_mib"),
            if step.starts_with("incremental") {
                format!("  ({} rows carried)", results[step]["carried"])
            } else {
                String::new()
            }
        );
    }
    println!(
        "the by-reference night's Delta publish (its deletion vector) {:>7.3} s  peak {:>6.0} MiB  ({} rows deleted)",
        get("publish", "seconds"),
        get("publish", "peak_mib"),
        results["publish"]["carried"]
    );
    println!("native copy for query (once a night) {:>7.3} s", get("query", "copy_seconds"));
    for (label, what) in [("default", "top_targets.sql"), ("narrowed", "top_targets.sql tier=hot vertical=Commerce")] {
        let q = &query["queries"][label];
        println!("query {what:<43} {:>7.1} ms  ({} rows)", q["seconds"].as_f64().unwrap_or(f64::NAN) * 1e3, q["rows"]);
    }
    println!(
        "full ÷ read: {:.2}   incremental ÷ full: {:.3}   the incremental night equals the full recompute",
        get("full", "seconds") / get("read", "seconds"),
        get("incremental", "seconds") / get("full", "seconds")
    );
}
