//! A run against simulated providers that fail in every way the real ones do:
//! it finishes `partial`, every failure is in the ledger and in the targets'
//! `modules_failed`, retries are recorded with their waits, and nothing is paid twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::{TestStore, without_rate_limits};

#[test]
fn a_faulty_night_is_partial_and_fully_accounted_for() {
    let store = TestStore::new();
    let (out, _) = store.exits(
        3,
        &[
            "run",
            "--limit",
            "60",
            "--date",
            "2026-11-20",
            "--fault",
            "builtwith.error_rate=0.10",
            "--fault",
            "builtwith.malformed_rate=0.05",
            "--fault",
            "similarweb.error_rate=0.10",
            "--fault",
            "similarweb.rate_429=0.05",
            "--fault",
            "similarweb.retry_after_secs=0",
            "--fault",
            "similarweb.truncated_rate=0.03",
            "--fault",
            "yahoo_finance.malformed_rate=0.5",
        ],
    );
    assert!(out.contains("partial"), "{out}");
    let (_, manifest) = store.manifests().remove(0);
    assert_eq!(manifest["status"], "partial");

    // Every failure per provider in the manifest is a ledger row, and the reverse.
    let failures = store.query(
        "SELECT provider, count(*) AS n FROM api_calls
         WHERE outcome NOT IN ('ok', 'no_data', 'retried') GROUP BY ALL ORDER BY 1",
    );
    let ledger: BTreeMap<String, u64> =
        failures.iter().map(|r| (r["provider"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap())).collect();
    let counted: BTreeMap<String, u64> = manifest["counts"]["failures"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(ledger, counted);
    assert!(ledger.contains_key("builtwith") && ledger.contains_key("yahoo_finance"), "{ledger:?}");

    // A failed module for a domain is a failure row for that domain and module.
    let failed_rows =
        store.query("SELECT domain, modules FROM api_calls WHERE outcome NOT IN ('ok', 'no_data', 'retried')");
    let failed_calls: BTreeSet<(String, String)> = failed_rows
        .iter()
        .flat_map(|r| {
            let domain = r["domain"].as_str().unwrap().to_string();
            r["modules"].as_str().unwrap().split(',').map(move |m| (domain.clone(), m.to_string())).collect::<Vec<_>>()
        })
        .collect();
    let targets = store.query("SELECT domain, modules_failed FROM targets WHERE modules_failed IS NOT NULL");
    let failed_modules: BTreeSet<(String, String)> = targets
        .iter()
        .flat_map(|r| {
            let domain = r["domain"].as_str().unwrap().to_string();
            r["modules_failed"]
                .as_str()
                .unwrap()
                .split(',')
                .map(move |m| (domain.clone(), m.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!failed_modules.is_empty());
    assert_eq!(failed_modules, failed_calls);

    // Retries are recorded with their waits; nothing is paid twice.
    // (Requests sent; Yahoo's session requests carry the number of the attempt they came before,
    // and the first request of a further page of a paged answer is no retry.)
    let retried = store.query(
        "SELECT count(*) AS n, min(waited_ms) AS w FROM (
             SELECT *, lag(page) OVER (PARTITION BY run_id, provider, endpoint, domain ORDER BY attempt) AS before
             FROM api_calls WHERE endpoint NOT LIKE 'session_%')
         WHERE attempt > 1 AND outcome NOT LIKE 'skipped%' AND before = page",
    );
    assert!(retried[0]["n"].as_u64().unwrap() > 0);
    assert!(retried[0]["w"].as_f64().unwrap() >= 100.0, "Retry-After: 0 still waits the floor");
    let paid_twice = store.query(
        "SELECT provider, endpoint, domain, page FROM api_calls WHERE cost_usd > 0 GROUP BY ALL HAVING count(*) > 1",
    );
    assert!(paid_twice.is_empty(), "{paid_twice:?}");
    let spend = store.query("SELECT round(sum(cost_usd), 2) AS usd FROM api_calls");
    assert_eq!(spend[0]["usd"].as_f64(), manifest["counts"]["spend_usd"].as_f64());
}

#[test]
fn a_budget_cap_is_never_crossed_and_warns_first() {
    let store = TestStore::new();
    // The account's limits apply, but for its rates: this test is about the budget.
    let pipeline = store.pipeline(|t| {
        without_rate_limits(t)
            .replace("honour_limits = false", "honour_limits = true")
            .replace("budget = { per_run_usd = 400,", "budget = { per_run_usd = 1.0,")
    });
    let out = store.pf(&["run", "--pipeline", &pipeline, "--limit", "25", "--date", "2026-11-20"]);
    assert_eq!(out.status.code(), Some(3), "partial\n{}", store.explain(&["run"], &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("80% of its per-run budget"), "{stderr}");
    let builtwith = store.query(
        "SELECT count(*) FILTER (WHERE cost_usd > 0) AS paid, round(sum(cost_usd), 2) AS usd,
                count(*) FILTER (WHERE outcome = 'skipped_budget') AS skipped
         FROM api_calls WHERE provider = 'builtwith' AND endpoint = 'domain'",
    );
    assert_eq!(builtwith[0]["paid"].as_u64(), Some(10), "$1.00 / $0.10 = 10 calls");
    assert_eq!(builtwith[0]["usd"].as_f64(), Some(1.0));
    assert_eq!(builtwith[0]["skipped"].as_u64(), Some(15));
    let (_, manifest) = store.manifests().remove(0);
    assert_eq!(manifest["status"], "partial");
}
