//! Two runs of one pipeline against one store: the second is refused and told
//! who holds the lock; a run killed with SIGKILL leaves its lock and no
//! snapshot, and `--break-lock` breaks it, saying what it broke.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::TestStore;

#[test]
fn one_run_at_a_time_and_a_dead_runs_lock_can_be_broken() {
    let store = TestStore::new();
    let lock = store.path().join("store/locks/nightly.json");
    let mut first = store.start_slow_run("2026-11-20", Stdio::null);
    let holder: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    let holder_run = holder["run_id"].as_str().unwrap().to_string();

    let refused = store.fails(&["run", "--limit", "5", "--date", "2026-11-21"]);
    assert!(refused.contains("locked by run") && refused.contains(&holder_run), "{refused}");
    assert!(refused.contains("host") && refused.contains("in progress"), "{refused}");
    let refused = store.fails(&["run", "--limit", "5", "--date", "2026-11-21", "--break-lock"]);
    assert!(refused.contains("in progress"), "a live run's lock is never broken: {refused}");

    first.kill().expect("SIGKILL the first run");
    first.wait().unwrap();
    assert!(lock.exists(), "a killed run cannot release its lock");
    let stale = store.fails(&["run", "--limit", "5", "--date", "2026-11-21"]);
    assert!(stale.contains(&holder_run) && stale.contains("--break-lock"), "{stale}");

    let out = store.ok(&["run", "--limit", "5", "--date", "2026-11-21", "--break-lock"]);
    assert!(out.contains(&format!("broke the lock held by run {holder_run}")), "{out}");
    assert!(!lock.exists(), "the lock is given back at the end");
    let manifests = store.manifests();
    assert_eq!(manifests.len(), 1, "the killed run committed nothing");
    assert_eq!(manifests[0].1["date"], "2026-11-21");
}

#[test]
fn sigterm_finishes_what_is_under_way_checkpoints_it_and_gives_the_lock_back() {
    let store = TestStore::new();
    let lock = store.path().join("store/locks/nightly.json");
    let child = store.start_slow_run("2026-11-20", Stdio::piped);
    // Signal once a call has finished and is on record, not after a guessed time.
    let runs = store.path().join("store/runs");
    let checkpoints = || support::listing(&runs).iter().filter(|f| f.contains("checkpoint-")).count();
    support::wait_for("the first checkpoint", Duration::from_secs(60), || checkpoints() >= 1);
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an interrupted run exits non-zero");
    assert!(stderr.contains("interrupted by SIGTERM") && stderr.contains("no snapshot"), "{stderr}");
    assert!(stderr.contains("--resume run-"), "it says how to resume: {stderr}");
    assert!(!lock.exists(), "the lock is given back");
    assert!(store.manifests().is_empty());
    // The calls under way finished and were checkpointed; the resume completes the night.
    let checkpointed =
        support::listing(&store.path().join("store/runs")).iter().filter(|f| f.contains("checkpoint-")).count();
    assert!(checkpointed >= 1, "the finished calls are checkpointed");
    let resumed = store.ok(&["run", "--resume", "last"]);
    assert!(resumed.contains("snapshot 2026-11-20 committed"), "{resumed}");
}
