//! The spend record: month-to-date spend and daily requests are counted by the day
//! each call was made, apart from snapshots, so a back-fill counts when it ran and
//! a run that died before committing counts what it was billed.

mod support;

use std::process::Stdio;

use support::TestStore;

/// `month to date $X` of one provider's line in `plan`'s budget section.
fn month_to_date_of(plan: &str, provider: &str) -> f64 {
    let line = plan
        .lines()
        .find(|l| l.trim_start().starts_with(provider) && l.contains("month to date"))
        .unwrap_or_else(|| panic!("no budget line for {provider} in\n{plan}"));
    let after = line.split("month to date $").nth(1).unwrap_or_else(|| panic!("{line}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Spend of the paid providers on the record, of the runs `filter` selects.
/// Month-to-date spend of the paid providers, as `plan` reports it.
fn month_to_date(plan: &str) -> f64 {
    month_to_date_of(plan, "builtwith") + month_to_date_of(plan, "similarweb")
}

fn recorded_usd(store: &TestStore, filter: &str) -> f64 {
    let rows = store.query(&format!(
        "SELECT coalesce(sum(usd), 0)::DOUBLE AS usd FROM spend_record WHERE provider IN ('builtwith', 'similarweb') AND {filter}"
    ));
    rows[0]["usd"].as_f64().unwrap()
}

#[test]
fn a_backfill_counts_on_its_call_day_and_an_uncommitted_run_counts_what_it_was_billed() {
    let store = TestStore::new();
    // A back-fill of an old date: its calls were made today.
    store.ok(&["run", "--limit", "20", "--date", "2025-06-10"]);
    let by_day = store.query(
        "SELECT coalesce(s.day, l.day)::VARCHAR AS day, coalesce(s.provider, l.provider) AS provider,
                s.usd AS recorded, l.usd AS ledger, s.requests, l.requests AS ledger_requests, s.billed, l.billed AS ledger_billed
         FROM (SELECT day, provider, sum(usd) AS usd, sum(requests) AS requests, sum(billed) AS billed
               FROM spend_record GROUP BY ALL) s
         FULL JOIN (SELECT called_at::DATE AS day, provider, sum(cost_usd) AS usd,
                           count(http_status) AS requests, count(*) FILTER (WHERE cost_usd > 0) AS billed
                    FROM api_calls GROUP BY ALL) l
         ON s.day = l.day AND s.provider = l.provider
         ORDER BY ALL",
    );
    assert!(!by_day.is_empty());
    for row in &by_day {
        let (recorded, ledger) = (row["recorded"].as_f64(), row["ledger"].as_f64());
        assert!(recorded.is_some() && ledger.is_some(), "record and ledger disagree on the days: {by_day:?}");
        assert!((recorded.unwrap() - ledger.unwrap()).abs() < 1e-6, "{row:?}");
        assert_eq!(row["requests"], row["ledger_requests"], "{row:?}");
        assert_eq!(row["billed"], row["ledger_billed"], "{row:?}");
        assert_ne!(row["day"], "2025-06-10", "spend is counted when the calls were made, not on the snapshot's date");
    }
    let committed = recorded_usd(&store, "true");
    assert!(committed > 0.0);
    // The committed run's parts were summed into one object per month.
    let spend_dir = store.path().join("store/spend");
    let files = support::listing(&spend_dir);
    assert!(files.iter().all(|f| f.ends_with(".json")), "{files:?}");

    // A later night's plan counts the back-fill in this month's spend.
    let plan = store.ok(&["plan", "--limit", "20", "--date", "2025-12-01"]);
    assert!((month_to_date(&plan) - committed).abs() < 0.011, "{plan}");

    // A run killed before it commits: what it was billed is still counted.
    let args = ["run", "--limit", "200", "--date", "2025-06-12", "--fault", "similarweb.latency_ms=50"];
    let mut child = store.command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // (The first wave is the 200 free pre-checks, journaled too; then the paid answers.)
    support::wait_for("paid answers in the run's journal", std::time::Duration::from_secs(120), || {
        store.journal_entries() >= 200 + 60
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(store.manifests().len(), 1, "the killed run committed nothing");
    let uncommitted = recorded_usd(&store, "run_id NOT IN (SELECT run_id FROM runs WHERE snapshot_id IS NOT NULL)");
    assert!(uncommitted > 0.0, "the killed run's calls are on the record");
    let plan = store.ok(&["plan", "--limit", "20", "--date", "2025-12-01"]);
    let counted = month_to_date(&plan);
    assert!((counted - (committed + uncommitted)).abs() < 0.011, "{counted} != {committed} + {uncommitted}\n{plan}");

    // Resumed, the run reuses what it was paid for and the month counts each paid call once.
    store.ok(&["run", "--resume", "last"]);
    let total = recorded_usd(&store, "true");
    let ledgers =
        store.query("SELECT sum(cost_usd)::DOUBLE AS usd FROM api_calls WHERE provider IN ('builtwith', 'similarweb')");
    let ledgers = ledgers[0]["usd"].as_f64().unwrap();
    // The ledger of the resumed run holds the calls it reused once; the record may hold more:
    // answers that were paid and on record but not yet in the journal when the run was killed.
    assert!(total >= ledgers - 1e-6, "{total} < {ledgers}");
    let files = support::listing(&spend_dir);
    assert!(files.iter().all(|f| f.ends_with(".json")), "sealed after the resume commits: {files:?}");
}
