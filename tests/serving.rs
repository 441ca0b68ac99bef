//! What analysts get: every table of a snapshot read by pandas and pyarrow, named
//! queries with bound parameters, faithful output formats, spend counted once, and
//! a DuckDB warehouse file that stock DuckDB opens with the same counts.
//!
//! Python's pandas, pyarrow and duckdb come from PyPI (the README's test command
//! installs them, pinned); a missing one fails the test with how to install it.

mod support;

use std::process::Command;

use support::TestStore;

const PYTHON_PACKAGES: &str = "'pandas==3.1.1' 'pyarrow==26.0.1' 'duckdb==1.5.6'";

/// Runs a Python script with arguments; fails with the script's output, or with how
/// to install the packages when they are missing.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 could not start ({e}): install Python 3 and {PYTHON_PACKAGES}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!("{stderr}\ninstall the readers with: python3 -m pip install {PYTHON_PACKAGES}");
    }
    assert!(out.status.success(), "python failed:\n{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Two nights of 60 targets, the second replaced once and rebuilt once: every
/// kind of generation a store holds.
fn store_with_history() -> TestStore {
    let store = TestStore::new();
    store.ok(&["run", "--date", "2026-11-23", "--limit", "60"]);
    store.ok(&["run", "--date", "2026-11-24", "--limit", "60"]);
    store.ok(&["run", "--date", "2026-11-24", "--limit", "60", "--replace"]);
    store.ok(&["rebuild", "--store", &store.store(), "--snapshot", "2026-11-24"]);
    store
}

#[test]
fn pandas_and_pyarrow_read_every_table_of_every_snapshot_with_plain_types() {
    let store = store_with_history();
    let report = python(
        r#"
import glob, sys
import pandas as pd, pyarrow.parquet as pq
files = sorted(glob.glob(sys.argv[1] + "/snapshots/**/*.parquet", recursive=True))
assert files, "no parquet files"
failed = []
tables = set()
for f in files:
    try:
        t = pq.read_table(f)
        df = pd.read_parquet(f)
        assert len(df) == t.num_rows
        for field in t.schema:
            assert "view" not in str(field.type), f"{field.name}: {field.type}"
            if str(field.type).startswith("timestamp"):
                assert field.type.tz == "UTC", f"{field.name}: {field.type} has no UTC zone"
        tables.add(f.rsplit("/", 1)[1])
    except Exception as e:
        failed.append(f"{f}: {type(e).__name__}: {e}")
targets = pq.read_table(sorted(glob.glob(sys.argv[1] + "/snapshots/2026-11-24/*/targets.parquet"))[-1])
print("reasons", targets.schema.field("score_reasons").type)
postings = pq.read_table(glob.glob(sys.argv[1] + "/snapshots/2026-11-23/*/job_postings.parquet")[0])
print("posted_at", postings.schema.field("posted_at").type)
df = pd.read_parquet(sorted(glob.glob(sys.argv[1] + "/snapshots/2026-11-24/*/targets.parquet"))[-1])
print("pandas reasons", type(df["score_reasons"].dropna().iloc[0][0]).__name__)
print("tables", len(tables), "files", len(files))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"#,
        &[&store.store()],
    );
    assert!(report.contains("reasons list<element: string>"), "{report}");
    assert!(report.contains("posted_at date32[day]"), "{report}");
    assert!(report.contains("pandas reasons str"), "{report}");
    // targets, change_state, changes, alerts, the ledger and every module table.
    let tables: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("tables "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(tables >= 22, "{report}");
}

#[test]
fn named_queries_bind_typed_parameters_and_refuse_bad_ones() {
    let store = TestStore::new();
    store.ok(&["run", "--date", "2026-11-23", "--limit", "80"]);
    store.ok(&["run", "--date", "2026-11-24", "--limit", "80"]);
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["query", "--format", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(store.ok(&all).trim()).expect("a JSON array")
    };
    // Every shipped named query runs with its parameters.
    let runs: &[(&str, &[&str])] = &[
        ("queries/top_targets.sql", &["--param", "tier=warm", "--param", "vertical=Commerce", "--param", "limit=5"]),
        ("queries/tier_by_vertical.sql", &[]),
        ("queries/vendor_removed.sql", &["--param", "days=60"]),
        ("queries/spend_by_provider.sql", &["--param", "since=2026-01-01"]),
        ("queries/tier_movement.sql", &["--param", "from=2026-11-23", "--param", "to=2026-11-24"]),
        ("queries/competitors_on_algolia.sql", &["--param", "min_competitors=1"]),
        ("queries/hiring_signals.sql", &["--param", "days=30", "--param", "signal=search"]),
        ("queries/recent_changes.sql", &["--param", "days=7", "--param", "min_significance=low"]),
    ];
    for (file, params) in runs {
        let mut args = vec!["--file", file];
        args.extend_from_slice(params);
        json(&args);
    }
    let shipped = std::fs::read_dir(support::repo().join("queries")).unwrap().filter_map(Result::ok);
    let shipped: Vec<String> =
        shipped.map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.ends_with(".sql")).collect();
    for name in &shipped {
        assert!(runs.iter().any(|(f, _)| f.ends_with(name.as_str())), "{name} is shipped but not run here");
    }

    // The parameters filter: a warm Commerce list holds only warm Commerce targets.
    let warm = json(&["--file", "queries/top_targets.sql", "--param", "tier=warm", "--param", "vertical=commerce"]);
    assert!(!warm.is_empty());
    assert!(warm.iter().all(|r| r["tier"] == "warm" && r["vertical"] == "Commerce"), "{warm:?}");
    let all = json(&["--file", "queries/top_targets.sql", "--param", "limit=1000"]);
    assert!(all.len() > warm.len());
    let hot_only = json(&["--file", "queries/hiring_signals.sql", "--param", "days=365", "--param", "signal=search"]);
    assert!(hot_only.iter().all(|r| r["signals"].as_str().unwrap().split(',').any(|s| s == "search")));

    // A value is bound, never spliced: SQL in a value matches nothing and runs nothing.
    let injected = json(&["--file", "queries/top_targets.sql", "--param", "vertical=x' OR '1'='1"]);
    assert!(injected.is_empty(), "{injected:?}");

    // Unknown, ill-typed and missing parameters are errors that name them.
    let err = store.fails(&["query", "--file", "queries/top_targets.sql", "--param", "verticle=Commerce"]);
    assert!(err.contains("unknown parameter \"verticle\"") && err.contains("vertical text"), "{err}");
    let err = store.fails(&["query", "--file", "queries/top_targets.sql", "--param", "limit=ten"]);
    assert!(err.contains("limit (int): \"ten\" is not an integer"), "{err}");
    let err = store.fails(&["query", "--file", "queries/tier_movement.sql", "--param", "from=2026-11-23"]);
    assert!(err.contains("to (date) has no default"), "{err}");
    let err = store.fails(&[
        "query",
        "--file",
        "queries/tier_movement.sql",
        "--param",
        "from=23/11/2026",
        "--param",
        "to=2026-11-24",
    ]);
    assert!(err.contains("is not a date"), "{err}");
    let err = store.fails(&["query", "SELECT $nobody AS x"]);
    assert!(err.contains("$nobody"), "{err}");
}

#[test]
fn output_keeps_every_column_in_order_and_every_value_exact() {
    let store = TestStore::new();
    store.ok(&["run", "--date", "2026-11-23", "--limit", "20"]);
    let sql = "SELECT 'b' AS domain, 'a' AS domain, 0.1::DOUBLE + 0.2::DOUBLE AS f, 1.25::DECIMAL(10,2) AS d, \
               TIME '12:34:56' AS t, INTERVAL 3 DAY AS i, '\\xAA\\xBB'::BLOB AS b, \
               TIMESTAMPTZ '2026-11-23 02:30:00+00' AS ts, DATE '2026-11-02' AS day, [1, 2] AS l, NULL::INT AS n";
    // JSON: the SELECT's order, every column (a repeated name gets DuckDB's suffix).
    let json = store.ok(&["query", "--format", "json", sql]);
    let order = ["domain", "domain_1", "f", "d", "t", "i", "b", "ts", "day", "l", "n"];
    let at: Vec<usize> = order.iter().map(|k| json.find(&format!("\"{k}\":")).unwrap_or(usize::MAX)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]) && at[order.len() - 1] < usize::MAX, "{json}");
    let row: Vec<serde_json::Value> = serde_json::from_str(json.trim()).unwrap();
    let row = &row[0];
    assert_eq!((row["domain"].as_str(), row["domain_1"].as_str()), (Some("b"), Some("a")));
    assert_eq!(row["f"].as_f64(), Some(0.1 + 0.2));
    assert_eq!(row["d"].to_string(), "1.25");
    assert_eq!(row["t"], "12:34:56");
    assert_eq!(row["i"], "3 days");
    assert_eq!(row["ts"], "2026-11-23T02:30:00Z");
    assert_eq!(row["day"], "2026-11-02");
    assert_eq!(row["l"], serde_json::json!([1, 2]));
    assert!(row["n"].is_null() && row.as_object().unwrap().contains_key("n"));
    // JSON lines: one object per row.
    let lines = store.ok(&["query", "--format", "jsonl", "SELECT * FROM range(3) AS t(x)"]);
    assert_eq!(lines.lines().collect::<Vec<_>>(), [r#"{"x":0}"#, r#"{"x":1}"#, r#"{"x":2}"#]);
    // CSV: floats read back equal, the header keeps both names.
    let csv = store.ok(&["query", "--format", "csv", sql]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("domain,domain,f,d,t,i,b,ts,day,l,n"));
    let values: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(values[2].parse::<f64>().unwrap(), 0.1 + 0.2);
    assert_eq!(&values[3..6], ["1.25", "12:34:56", "3 days"]);
    // An empty result still has its header / is an empty array.
    assert_eq!(store.ok(&["query", "--format", "csv", "SELECT domain FROM targets WHERE false"]), "domain\n");
    assert_eq!(store.ok(&["query", "--format", "json", "SELECT domain FROM targets WHERE false"]).trim(), "[]");
    // Parquet to a file, read back by pyarrow with the same values.
    let out = store.path().join("result.parquet");
    store.ok(&["query", "--out", &out.display().to_string(), sql]);
    let back = python(
        "import sys, pyarrow.parquet as pq\nt = pq.read_table(sys.argv[1])\nprint(t.column_names)\nprint(t.column('f')[0].as_py() == 0.1 + 0.2, t.column('ts').type)",
        &[&out.display().to_string()],
    );
    assert!(back.contains("'domain', 'domain_1', 'f'"), "{back}");
    assert!(back.contains("True timestamp[us, tz=UTC]"), "{back}");
    let err = store.fails(&["query", "--format", "parquet", "SELECT 1"]);
    assert!(err.contains("--out FILE.parquet"), "{err}");
}

#[test]
fn spend_counts_every_paid_call_once_and_the_warehouse_file_counts_the_same_in_stock_duckdb() {
    let store = store_with_history();
    // Every generation that made calls is in api_calls; a rebuild's copy is not.
    let manifests = store.manifests();
    let made: f64 = manifests
        .iter()
        .filter(|(_, m)| m["rebuilt_from"].is_null())
        .map(|(_, m)| m["counts"]["spend_usd"].as_f64().unwrap())
        .sum();
    let calls: u64 = manifests
        .iter()
        .filter(|(_, m)| m["rebuilt_from"].is_null())
        .map(|(_, m)| m["counts"]["calls"].as_u64().unwrap())
        .sum();
    let ledger = &store
        .query("SELECT sum(cost_usd) AS usd, count(*) FILTER (WHERE http_status IS NOT NULL) AS made FROM api_calls")
        [0];
    assert!((ledger["usd"].as_f64().unwrap() - made).abs() < 1e-6, "{ledger:?} vs {made}");
    assert_eq!(ledger["made"].as_u64(), Some(calls));
    let by_month: f64 = serde_json::from_str::<Vec<serde_json::Value>>(
        store.ok(&["query", "--format", "json", "--file", "queries/spend_by_provider.sql"]).trim(),
    )
    .unwrap()
    .iter()
    .map(|r| r["spend_usd"].as_f64().unwrap())
    .sum();
    assert!((by_month - made).abs() < 0.05, "{by_month} vs {made}");
    // runs: one row per committed generation, the current ones flagged.
    let runs = store.query(
        "SELECT count(*) FILTER (WHERE snapshot_id IS NOT NULL) AS n, count(*) FILTER (WHERE current) AS current, \
         count(*) FILTER (WHERE trigger IS NOT NULL AND snapshot_id IS NOT NULL) AS recorded FROM runs",
    );
    // Every run (not the rebuild, which is no run) has its history on its row.
    assert_eq!(runs[0]["recorded"].as_u64(), Some(manifests.len() as u64 - 1), "{runs:?}");
    assert_eq!((runs[0]["n"].as_u64(), runs[0]["current"].as_u64()), (Some(manifests.len() as u64), Some(2)));

    // The warehouse file: stock DuckDB from PyPI opens it, from another folder, and counts the same.
    let file = store.path().join("partnerforge.duckdb");
    store.ok(&["warehouse", "--store", &store.store(), "--out", &file.display().to_string()]);
    let views = [
        "targets",
        "targets_history",
        "api_calls",
        "runs",
        "changes",
        "alerts",
        "tech_stack",
        "job_postings",
        "fetches",
    ];
    let sql: Vec<String> = views.iter().map(|v| format!("SELECT '{v}' AS view, count(*) AS n FROM {v}")).collect();
    let sql = sql.join(" UNION ALL ") + " ORDER BY view";
    let ours: Vec<(String, u64)> =
        store.query(&sql).iter().map(|r| (r["view"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap())).collect();
    let theirs = python(
        "import sys, os, duckdb\nos.chdir('/')\ncon = duckdb.connect(sys.argv[1], read_only=True)\nfor view, n in con.execute(sys.argv[2]).fetchall():\n    print(view, n)",
        &[&file.display().to_string(), &sql],
    );
    let theirs: Vec<(String, u64)> =
        theirs.lines().filter_map(|l| l.split_once(' ')).map(|(v, n)| (v.to_string(), n.parse().unwrap())).collect();
    assert_eq!(ours, theirs);
    assert!(ours.iter().all(|(v, n)| *n > 0 || v == "alerts" || v == "changes"), "{ours:?}");
}
