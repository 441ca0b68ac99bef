//! Crash and resume from outside: a provider that outlives the run it serves
//! (a simulator in the test's own process, keeping a bill of every answer it
//! sent), the run killed with SIGKILL after a given number of answers are in
//! its journal, and the checks every resume must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use partnerforge::simulate::{Keys, Simulator, SimulatorConfig};

use super::{TestStore, against, without_rate_limits};

/// The pipeline's `concurrency`: the most calls answered but not yet in a journal at a kill.
pub const CONCURRENCY: usize = 16;
pub const DATE: &str = "2026-11-20";
const BW_KEY: &str = "crash-bw-key";
const SW_KEY: &str = "crash-sw-key";

/// A simulated provider in this process, so a killed run cannot take it along:
/// requests on the wire at the kill are answered, and billed, as a real service does.
pub struct Provider {
    runtime: tokio::runtime::Runtime,
    simulator: Option<Simulator>,
    pub bill: PathBuf,
}

impl Provider {
    /// Every provider answers after `latency_ms`, so that calls overlap.
    pub fn start(bill: PathBuf, latency_ms: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut faults = BTreeMap::new();
        for provider in ["builtwith", "similarweb", "yahoo_finance", "greenhouse", "lever", "ashby", "news"] {
            let mut f = partnerforge::config::FaultSettings::default();
            f.set("latency_ms", &latency_ms.to_string()).unwrap();
            faults.insert(provider.to_string(), f);
        }
        let config = SimulatorConfig {
            seed: 42,
            as_of: DATE.parse().unwrap(),
            keys: Keys { builtwith: BW_KEY.into(), similarweb: SW_KEY.into() },
            faults,
            request_log: Some(bill.clone()),
        };
        let simulator = runtime.block_on(Simulator::start("127.0.0.1:0".parse().unwrap(), config)).unwrap();
        Self { runtime, simulator: Some(simulator), bill }
    }

    /// A store whose runs call this provider as the real services, unpaced.
    pub fn store(&self) -> (TestStore, String) {
        let base = self.simulator.as_ref().map(|s| s.base_url()).unwrap_or_default();
        let store = against(&base, BW_KEY, SW_KEY);
        let pipeline = store.pipeline(without_rate_limits);
        (store, pipeline)
    }

    /// Paid answers (BuiltWith and SimilarWeb, HTTP 200 billed at least a credit) the bill holds.
    pub fn paid(&self) -> usize {
        let text = std::fs::read_to_string(&self.bill).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a bill line is JSON"))
            .filter(|e| {
                ["builtwith", "similarweb"].contains(&e["provider"].as_str().unwrap_or(""))
                    && e["status"] == 200
                    && e["credits"].as_u64().unwrap_or(1) > 0
            })
            .count()
    }

    /// Paid answers (BuiltWith and SimilarWeb, HTTP 200) the bill holds more than once.
    pub fn paid_twice(&self) -> usize {
        let text = std::fs::read_to_string(&self.bill).unwrap_or_default();
        let mut paid: BTreeMap<String, usize> = BTreeMap::new();
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).expect("a bill line is JSON");
            let provider = entry["provider"].as_str().unwrap_or("");
            if ["builtwith", "similarweb"].contains(&provider)
                && entry["status"] == 200
                && entry["credits"].as_u64().unwrap_or(1) > 0
            {
                *paid.entry(entry["request"].as_str().unwrap_or("").to_string()).or_default() += 1;
            }
        }
        paid.values().map(|n| n - 1).sum()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(simulator) = self.simulator.take() {
            self.runtime.block_on(simulator.shutdown());
        }
    }
}

pub fn run_args<'a>(pipeline: &'a str, store: &'a str) -> Vec<&'a str> {
    vec!["run", "--pipeline", pipeline, "--store", store, "--limit", "40", "--date", DATE]
}

/// Starts `args`, waits until `reached()` (or a commit, when the run was faster), and kills it.
/// Returns whether the kill landed before the commit.
pub fn kill_when(
    store: &TestStore,
    args: &[&str],
    what: &str,
    reached: impl Fn() -> bool,
    committed: impl Fn() -> bool,
) -> bool {
    let mut child = store.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the run");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !reached() && !committed() {
        assert!(Instant::now() < deadline, "the run never reached {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    !committed()
}

/// Rows of `table` in one snapshot folder and not the other, either way (fetch times aside).
fn differences(table: &str, except: &str, a: &Path, b: &Path) -> String {
    let side = |x: &Path| format!("SELECT * EXCLUDE ({except}) FROM read_parquet('{}/{table}.parquet')", x.display());
    format!(
        "SELECT '{table}' AS t, (SELECT count(*) FROM ({} EXCEPT ALL {})) + (SELECT count(*) FROM ({} EXCEPT ALL {})) AS n, \
         (SELECT count(*) FROM read_parquet('{}/{table}.parquet')) AS rows",
        side(a),
        side(b),
        side(b),
        side(a),
        a.display()
    )
}

/// Every table of the snapshots in folders `a` and `b` holds the same rows.
pub fn assert_same_snapshot(reader: &TestStore, a: &Path, b: &Path, context: &str) {
    let tables = [
        // Fetch times differ between runs: the row's own, its fields' provenance and conflicts.
        ("targets", "last_enriched, provenance, conflicts"),
        ("company", "fetched_at"),
        ("tech_stack", "fetched_at"),
        ("traffic", "fetched_at"),
        ("traffic_sources", "fetched_at"),
        ("financials", "fetched_at"),
        ("executives", "fetched_at"),
        ("hiring", "fetched_at"),
        ("trigger_events", "fetched_at"),
        ("fetches", "fetched_at"),
    ];
    let sql: Vec<String> = tables.iter().map(|(t, e)| differences(t, e, a, b)).collect();
    for row in reader.query(&sql.join(" UNION ALL ")) {
        assert_eq!(row["n"], 0, "{context}: table {} differs from the uninterrupted run's", row["t"]);
        assert!(row["rows"].as_u64().unwrap() > 0, "{context}: table {} is empty", row["t"]);
    }
}

/// The folder of a local store's only snapshot.
pub fn snapshot_folder(store: &TestStore) -> PathBuf {
    let manifests = store.manifests();
    assert_eq!(manifests.len(), 1, "one snapshot: {manifests:?}");
    manifests[0].0.parent().unwrap().to_path_buf()
}
