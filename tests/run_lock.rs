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
    let mut first = store.start_slow_run("2026-11-20", Stdio::null);
    let holder = store.lock_holder("nightly").expect("the first run holds the lock");
    let holder_run = holder["run_id"].as_str().unwrap().to_string();

    let (_, refused) = store.exits(4, &["run", "--limit", "5", "--date", "2026-11-21"]);
    assert!(refused.contains("locked by run") && refused.contains(&holder_run), "{refused}");
    assert!(refused.contains("host") && refused.contains("in progress"), "{refused}");
    let refused = store.fails(&["run", "--limit", "5", "--date", "2026-11-21", "--break-lock"]);
    assert!(refused.contains("in progress"), "a live run's lock is never broken: {refused}");

    first.kill().expect("SIGKILL the first run");
    first.wait().unwrap();
    assert!(store.lock_holder("nightly").is_some(), "a killed run cannot release its lock");
    let stale = store.fails(&["run", "--limit", "5", "--date", "2026-11-21"]);
    assert!(stale.contains(&holder_run) && stale.contains("--break-lock"), "{stale}");

    let (_, out) = store.ok_both(&["run", "--limit", "5", "--date", "2026-11-21", "--break-lock"]);
    assert!(out.contains(&format!("broke the lock held by run {holder_run}")), "{out}");
    assert!(store.lock_holder("nightly").is_none(), "the lock is given back at the end");
    let manifests = store.manifests();
    assert_eq!(manifests.len(), 1, "the killed run committed nothing");
    assert_eq!(manifests[0].1["date"], "2026-11-21");
}

#[test]
fn sigterm_finishes_what_is_under_way_checkpoints_it_and_gives_the_lock_back() {
    let store = TestStore::new();
    let child = store.start_slow_run("2026-11-20", Stdio::piped);
    // Signal once a call of the slow second wave is on record, not after a guessed time
    // (the first wave has 60 calls, one per target).
    support::wait_for("a call of the second wave in the journal", Duration::from_secs(60), || {
        store.journal_entries() > 60
    });
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "an interrupted run exits 5: {stderr}");
    assert!(stderr.contains("interrupted by SIGTERM") && stderr.contains("no snapshot"), "{stderr}");
    assert!(stderr.contains("--resume run-"), "it says how to resume: {stderr}");
    assert!(store.lock_holder("nightly").is_none(), "the lock is given back");
    assert!(store.manifests().is_empty());
    // The calls under way finished and are in the journal; the resume reuses them and completes the night.
    let kept = store.journal_entries();
    assert!(kept > 60, "the finished calls are in the journal");
    let (resumed, status) = store.ok_both(&["run", "--resume", "last"]);
    assert!(resumed.contains("snapshot 2026-11-20 committed"), "{resumed}");
    assert!(status.contains(&format!("{kept} calls already made are reused")), "{status}");
}

#[test]
fn a_sigterm_the_moment_the_lock_is_taken_still_gives_it_back() {
    let store = TestStore::new();
    let child = store.start_slow_run("2026-11-20", Stdio::piped);
    // start_slow_run returns as soon as the lease exists: the run has barely begun.
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "interrupted, not killed: {stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(store.lock_holder("nightly").is_none(), "the lock is given back");
    assert!(store.manifests().is_empty());
}
