//! `partnerforge gc`: old snapshots go (manifest first, then files), the
//! latest always stays, folders a run left without a commit are cleaned up, and
//! what remains still answers queries.

mod support;

use support::{TestStore, listing};

#[test]
fn gc_keeps_recent_days_and_month_ends_and_removes_the_rest() {
    let store = TestStore::new();
    let dates = ["2026-09-29", "2026-09-30", "2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"];
    for date in dates {
        store.ok(&["run", "--limit", "3", "--date", date]);
    }
    // A run that died before its commit left files but no manifest.
    let abandoned = store.path().join("store/snapshots/2026-11-03/0001");
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join("company.parquet"), b"half written").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "3 days ago", abandoned.join("company.parquet").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(touched.success());

    // …and a run that died left its journal.
    let dead_run = store.path().join("store/runs/run-20261001T000000Z-dead");
    std::fs::create_dir_all(&dead_run).unwrap();
    std::fs::write(dead_run.join("run.json"), b"{}").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "3 days ago", dead_run.join("run.json").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(touched.success());

    let args = ["gc", "--store", &store.store(), "--keep-daily", "2", "--keep-monthly", "2"];
    // While a run holds a lock, gc does not run.
    // A live run's lease: the next number after the leases the runs above took and gave back.
    let leases = store.path().join("store/locks/nightly");
    let newest = listing(&leases)
        .iter()
        .filter_map(|f| f.rsplit('/').next()?.strip_suffix(".json")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let lock = leases.join(format!("{:010}.json", newest + 1));
    std::fs::create_dir_all(&leases).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let now = chrono::Utc::now().to_rfc3339();
    std::fs::write(
        &lock,
        serde_json::json!({"run_id": "run-live", "lease": "run-live/1", "pipeline": "nightly", "host": host.trim(),
                           "pid": std::process::id(), "started_at": now, "ttl_secs": 3600})
        .to_string(),
    )
    .unwrap();
    let refused = store.fails(&args);
    assert!(refused.contains("run-live") && refused.contains("gc waits"), "{refused}");
    // The run gives its lease back: gc goes ahead.
    std::fs::write(lock.with_extension("released"), "{}").unwrap();
    let dry = store.ok(&[&args[..], &["--dry-run"]].concat());
    for gone in ["2026-09-29", "2026-09-30", "2026-10-30"] {
        assert!(dry.contains(&format!("would remove snapshot {gone}")), "{dry}");
    }
    assert!(dry.contains("snapshots/2026-11-03/0001 (never committed)"), "{dry}");
    assert!(dry.contains("runs/run-20261001T000000Z-dead (never committed)"), "{dry}");
    assert_eq!(store.manifests().len(), 6, "a dry run removes nothing");

    let out = store.ok(&args);
    assert!(out.contains("3 snapshots kept"), "{out}");
    // The deletion is in the audit log, with what went (the dry run is not).
    let audit: Vec<serde_json::Value> =
        serde_json::from_str(&store.ok(&["audit", "--store", &store.store(), "--format", "json"])).unwrap();
    let gc: Vec<&serde_json::Value> = audit.iter().filter(|e| e["action"] == "gc.deleted").collect();
    assert_eq!(gc.len(), 1, "{audit:?}");
    let detail: serde_json::Value = serde_json::from_str(gc[0]["detail"].as_str().unwrap()).unwrap();
    let dates: Vec<&str> = detail["snapshots"].as_array().unwrap().iter().filter_map(|s| s["date"].as_str()).collect();
    assert_eq!(dates, ["2026-09-29", "2026-09-30", "2026-10-30"], "{detail}");
    assert!(audit.iter().filter(|e| e["action"] == "run.started").count() >= 6, "{audit:?}");
    let kept: Vec<String> = store.manifests().iter().map(|(_, m)| m["date"].as_str().unwrap().to_string()).collect();
    assert_eq!(kept, ["2026-10-31", "2026-11-01", "2026-11-02"]);
    let files = listing(&store.path().join("store/snapshots"));
    assert!(files.iter().all(|f| kept.iter().any(|d| f.contains(d))), "{files:#?}");

    assert!(!dead_run.join("run.json").exists(), "the dead run's journal is gone");
    let history = store.query("SELECT count(DISTINCT snapshot_id) AS n FROM targets_history");
    assert_eq!(history[0]["n"], 3);
}
