//! A run killed with SIGKILL at many points of its calls, each resumed with
//! `--resume last`: every resume commits the snapshot an uninterrupted run
//! commits, and the provider is never paid twice for more answers than the
//! calls that can be on the wire at once (the pipeline's `concurrency`).
//!
//! What the provider was paid for is read from its own bill, kept by a simulator
//! that outlives the killed run: a dead run's ledger cannot show what it lost.

mod support;

use support::crash::{CONCURRENCY, DATE, Provider, assert_same_snapshot, kill_when, run_args, snapshot_folder};

/// Paid answers (BuiltWith and SimilarWeb) on the store's spend record.
fn recorded_paid(store: &support::TestStore) -> usize {
    let rows = store.query(
        "SELECT coalesce(sum(billed), 0)::BIGINT AS n FROM spend_record WHERE provider IN ('builtwith', 'similarweb')",
    );
    rows[0]["n"].as_u64().unwrap() as usize
}

#[test]
fn killed_at_many_points_every_resume_commits_the_same_snapshot_and_repays_at_most_the_calls_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(dir.path().join("straight.jsonl"), 15);
    let (straight, pipeline) = provider.store();
    let url = straight.store();
    let summary = straight.ok(&run_args(&pipeline, &url));
    assert_eq!(provider.paid_twice(), 0, "an uninterrupted run pays once");
    assert_eq!(recorded_paid(&straight), provider.paid(), "the spend record holds every paid answer");
    let calls = straight.manifests()[0].1["counts"]["calls"].as_u64().unwrap() as usize;
    assert!(calls > 300, "{summary}");
    let reference = snapshot_folder(&straight);
    drop(provider);

    // Kill points spread over the run: once k answers are in its journal.
    let mut crashed = 0;
    for i in 1..=20 {
        let point = calls * i / 22;
        let provider = Provider::start(dir.path().join(format!("bill-{i}.jsonl")), 15);
        let (killed, pipeline) = provider.store();
        let url = killed.store();
        let args = run_args(&pipeline, &url);
        let context = format!("killed after {point} of {calls} calls");
        let reached = || killed.journal_entries() >= point;
        if kill_when(&killed, &args, &context, reached, || !killed.manifests().is_empty()) {
            crashed += 1;
            let (out, status) = killed.ok_both(&["run", "--store", &killed.store(), "--resume", "last"]);
            assert!(out.contains(&format!("snapshot {DATE} committed")), "{context}: {out}");
            assert!(status.contains("calls already made are reused"), "{context}: {status}");
        }
        // (A kill that landed after the commit left nothing to resume: the checks hold all the same.)
        assert_same_snapshot(&killed, &snapshot_folder(&killed), &reference, &context);
        let twice = provider.paid_twice();
        eprintln!("{context}: {twice} answers paid twice");
        assert!(twice <= CONCURRENCY, "{context}: {twice} answers paid twice, more than the {CONCURRENCY} on the wire");
        // The spend record misses at most the answers billed while the kill came (on the wire).
        let (recorded, paid) = (recorded_paid(&killed), provider.paid());
        assert!(recorded <= paid && paid - recorded <= CONCURRENCY, "{context}: {recorded} on record, {paid} billed");
        let ledger = killed.query(
            "SELECT count(*) AS n FROM (SELECT provider, endpoint, domain, page FROM api_calls WHERE cost_usd > 0 GROUP BY ALL HAVING count(*) > 1)",
        );
        assert_eq!(ledger[0]["n"], 0, "{context}: the ledger holds a paid call twice");
    }
    assert!(crashed >= 15, "only {crashed} of 20 kills landed before the commit");
}
