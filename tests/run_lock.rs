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
fn sigterm_finishes_what_is_under_way_journals_it_and_gives_the_lock_back() {
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
    // The resumed run carried on the dead run's id under a lease of its own.
    let leases: Vec<serde_json::Value> = support::listing(&store.path().join("store/locks/nightly"))
        .iter()
        .filter(|f| f.ends_with(".json"))
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(leases[0]["run_id"], leases[1]["run_id"], "{leases:?}");
    assert_ne!(leases[0]["lease"], leases[1]["lease"], "a new lease, not the dead run's: {leases:?}");
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

#[test]
fn sigterm_cuts_short_a_call_waiting_out_a_long_backoff() {
    let store = TestStore::new();
    let bill = store.path().join("bill.jsonl");
    // Every SimilarWeb answer is a 500, and a retry waits an hour: the run has calls asleep in a backoff.
    let pipeline = store.pipeline(|text| {
        text.replace("honour_limits = false", &format!("honour_limits = false\nrequest_log = \"{}\"", bill.display()))
            .replace(
                "retry = { max_attempts = 3, base_delay_ms = 1000, max_delay_ms = 60000, max_total_wait_ms = 120000 }",
                "retry = { max_attempts = 3, base_delay_ms = 3600000, min_delay_ms = 3600000, max_delay_ms = 3600000, max_total_wait_ms = 7200000 }",
            )
    });
    let mut child = store
        .command(&[
            "run",
            "--pipeline",
            &pipeline,
            "--limit",
            "20",
            "--date",
            "2026-11-20",
            "--fault",
            "similarweb.error_rate=1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let failed_once = || std::fs::read_to_string(&bill).unwrap_or_default().contains("\"status\":500");
    support::wait_for("a SimilarWeb call to fail and back off", Duration::from_secs(60), failed_once);
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // Were the backoff not cut short, the run would sleep for an hour.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the run still sleeps in its backoff after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(store.lock_holder("nightly").is_none(), "the lock is given back");
}

#[test]
fn a_run_refused_for_its_date_leaves_nothing_to_resume() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "5", "--date", "2026-11-20"]);
    let (_, refused) = store.exits(4, &["run", "--limit", "5", "--date", "2026-11-20"]);
    assert!(refused.contains("already has a snapshot for 2026-11-20") && refused.contains("--replace"), "{refused}");
    let nothing = store.fails(&["run", "--resume", "last"]);
    assert!(nothing.contains("no unfinished run to resume"), "{nothing}");
    assert!(support::listing(&store.path().join("store/runs")).is_empty());
}
