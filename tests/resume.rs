//! A run killed with SIGKILL in the middle of fetching, then resumed: the
//! committed snapshot equals an uninterrupted run's of the same date, and the
//! ledger holds no paid call twice.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{TestStore, listing, wait_for};

#[test]
fn a_killed_run_resumes_to_the_same_snapshot_without_paying_twice() {
    let args = ["run", "--limit", "60", "--date", "2026-11-20"];
    let killed = TestStore::new();
    let runs = killed.path().join("store/runs");
    // Slow SimilarWeb down so that the kill lands in the middle of the second wave.
    let mut child = killed
        .command(&[&args[..], &["--fault", "similarweb.latency_ms=100"]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the run");
    let checkpoints = || listing(&runs).iter().filter(|f| f.contains("checkpoint-")).count();
    wait_for("two checkpoints", Duration::from_secs(60), || checkpoints() >= 2);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    assert!(killed.manifests().is_empty(), "nothing was committed");

    let resumed = killed.ok(&["run", "--resume", "last"]);
    let reused: usize = resumed
        .split("calls already made are reused")
        .next()
        .and_then(|head| head.rsplit(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{resumed}"));
    assert!(reused >= 60, "the first wave and a batch of the second are reused: {resumed}");
    assert!(resumed.contains("broke the lock held by run"), "{resumed}");
    assert!(listing(&runs).is_empty(), "checkpoints go once the snapshot is committed");

    let straight = TestStore::new();
    straight.ok(&args);

    // Same rows, same values: every table, fetch times aside.
    let folder = |store: &TestStore| store.path().join("store/snapshots/2026-11-20/0001");
    for (table, except) in [
        ("targets", "last_enriched"),
        ("company", "fetched_at"),
        ("tech_stack", "fetched_at"),
        ("traffic", "fetched_at"),
        ("financials", "fetched_at"),
        ("hiring", "fetched_at"),
        ("trigger_events", "fetched_at"),
    ] {
        let a = folder(&killed).join(format!("{table}.parquet"));
        let b = folder(&straight).join(format!("{table}.parquet"));
        let side = |x: &std::path::Path| format!("SELECT * EXCLUDE ({except}) FROM read_parquet('{}')", x.display());
        let diff = killed.query(&format!(
            "SELECT (SELECT count(*) FROM ({} EXCEPT ALL {})) + (SELECT count(*) FROM ({} EXCEPT ALL {})) AS n,
                    (SELECT count(*) FROM read_parquet('{}')) AS rows",
            side(&a),
            side(&b),
            side(&b),
            side(&a),
            a.display()
        ));
        assert_eq!(diff[0]["n"], 0, "{table} differs: {diff:?}");
        assert!(diff[0]["rows"].as_u64().unwrap() > 0, "{table} is empty");
    }

    let twice = killed.query(
        "SELECT provider, endpoint, domain, count(*) AS n FROM api_calls WHERE cost_usd > 0 GROUP BY ALL HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "paid twice: {twice:?}");
}
