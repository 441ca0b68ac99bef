//! Every committed table is also a Delta Lake table (`delta/<table>/`): read back with
//! the `deltalake` package from PyPI (no PartnerForge code), it equals what `query`
//! answers — each date once, at its current generation — and never holds the folder of
//! a run that did not commit. (The same check on the S3 test server is in `tests/s3.rs`.)

mod support;

use support::{TestStore, read_with_deltalake};

#[test]
fn committed_tables_read_back_from_delta_equal_to_query() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "30", "--date", "2026-11-20"]);
    store.ok(&["run", "--limit", "30", "--date", "2026-11-21"]);
    store.ok(&["run", "--limit", "30", "--date", "2026-11-21", "--replace"]);
    // The folder of a run that never committed: files, no manifest.
    let root = store.path().join("store");
    let orphan = root.join("snapshots/2026-11-22/0001");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::copy(root.join("snapshots/2026-11-21/0002/targets.parquet"), orphan.join("targets.parquet")).unwrap();
    store.ok(&["run", "--limit", "30", "--date", "2026-11-19"]);

    let report = read_with_deltalake(&store, &store.store(), &[]);
    assert_eq!(report["ok"], true, "{report}");
    let targets = &report["tables"]["targets"];
    // Three committed dates, each once; a date's replaced generation and the orphan left out.
    let history = &store.query("SELECT count(DISTINCT snapshot_id) AS d, count(*) AS n FROM targets_history")[0];
    assert_eq!(history["d"], 3, "{history:?}");
    assert_eq!(targets["rows"], history["n"], "{report}");
    // One version per commit: two dates, the replacement, the back-filled date.
    assert_eq!(targets["version"], 3, "{report}");
    assert_eq!(report["targets_version_0_dates"], serde_json::json!(["2026-11-20"]), "{report}");
    // The replacement's calls were paid: api_calls keeps both generations of 2026-11-21.
    assert!(report["tables"]["api_calls"]["rows"].as_u64().unwrap() > 0, "{report}");

    let log = root.join("delta/targets/_delta_log");
    let versions = std::fs::read_dir(&log).unwrap().count();
    let replaced = std::fs::read_to_string(log.join("00000000000000000002.json")).unwrap();
    assert!(
        replaced.contains("\"remove\"") && replaced.contains("snapshot_date=2026-11-21/g0001.parquet"),
        "{replaced}"
    );
    assert!(
        !std::fs::read_dir(&log)
            .unwrap()
            .any(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().contains("2026-11-22"))
    );
    // Nothing new committed, nothing new published.
    store.fails(&["run", "--limit", "30", "--date", "2026-11-21"]);
    assert_eq!(std::fs::read_dir(&log).unwrap().count(), versions);

    // A night whose targets are stored by reference to an earlier night's table is
    // published whole: Delta readers see the same rows as `query`.
    let by_reference = store.pipeline(|t| {
        t.replace("[fetch]", "[run]\ntargets_by_reference_rows = 0\ntargets_rewrite_share = 1.0\n\n[fetch]")
    });
    store.ok(&["run", "--limit", "30", "--date", "2026-11-23", "--pipeline", &by_reference]);
    let manifest = store.manifests().into_iter().map(|(_, m)| m).find(|m| m["date"] == "2026-11-23").unwrap();
    let entry = manifest["files"].as_array().unwrap().iter().find(|f| f["table"] == "targets").unwrap().clone();
    assert!(entry["base"].as_str().is_some_and(|b| b.starts_with("snapshots/2026-11-21/")), "{entry}");
    let report = read_with_deltalake(&store, &store.store(), &[]);
    assert_eq!(report["ok"], true, "{report}");
    let history = &store.query("SELECT count(*) AS n FROM targets_history")[0];
    assert_eq!(report["tables"]["targets"]["rows"], history["n"], "{report}");
    let published = store.query(&format!(
        "SELECT count(*) AS n, count(DISTINCT snapshot_id) AS ids FROM read_parquet('{}/delta/targets/snapshot_date=2026-11-23/*.parquet')",
        root.display()
    ));
    assert_eq!(published[0]["n"], manifest["counts"]["targets"], "{published:?}");
    assert_eq!(published[0]["ids"], 1, "{published:?}");
}
