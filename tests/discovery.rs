//! Target discovery (`pipelines/discovery.toml`): BuiltWith's Lists API read to the end
//! for every partner technology, the sites that are not customers, not in the book and
//! not running Algolia pre-checked for free, the known ones added to the nightly book —
//! within the run's page budget; a second run finds nothing new and pays nothing.

mod support;

use support::{TestStore, repo};

fn summary(store: &TestStore, pipeline: &str, date: &str) -> serde_json::Value {
    let out = store.ok(&["run", "--pipeline", pipeline, "--store", &store.store(), "--date", date, "--format", "json"]);
    serde_json::from_str(&out).expect("the discovery summary is JSON")
}

fn planned_targets(store: &TestStore) -> u64 {
    let plan = store.ok(&["plan", "--date", "2026-11-22"]);
    let first = plan.lines().next().unwrap_or_default();
    // "plan for 2026-11-22: 2623 targets, simulated providers; no call is made"
    first.split(": ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect(first)
}

#[test]
fn discovery_adds_new_known_targets_within_its_budget_and_a_second_run_pays_nothing() {
    let store = TestStore::new();
    let root = repo();
    let discovery = root.join("pipelines/discovery.toml").display().to_string();
    // A store that has had a night (discovery is weekly, beside the nightly runs).
    store.ok(&["run", "--limit", "20", "--date", "2026-11-19"]);
    let before = planned_targets(&store);

    let first = summary(&store, &discovery, "2026-11-20");
    let lists = first["lists"].as_array().unwrap();
    assert!(lists.len() >= 2 && lists.iter().all(|l| l["complete"] == true && l["pages"].as_u64().unwrap() >= 1));
    let discovered = first["discovered"].as_u64().unwrap();
    assert!(discovered > 100, "{first}");
    assert!(first["unknown"].as_u64().unwrap() > 0, "the free pre-check drops domains BuiltWith does not know");
    assert!(first["excluded_algolia"].as_u64().unwrap() > 0, "{first}");
    let pages: u64 = lists.iter().map(|l| l["pages"].as_u64().unwrap()).sum();
    assert!(
        (first["spend_usd"].as_f64().unwrap() - pages as f64 * 0.10).abs() < 1e-9,
        "pages are paid, checks are free"
    );

    // What it found: not customers, not in the book, not on the Algolia list; in the `discovered` view.
    let rows = store.query("SELECT count(*) AS n, count(DISTINCT domain) AS d FROM discovered");
    assert_eq!((rows[0]["n"].as_u64(), rows[0]["d"].as_u64()), (Some(discovered), Some(discovered)));
    let seed = std::fs::read_to_string(root.join("data/seed/targets.csv")).unwrap()
        + &std::fs::read_to_string(root.join("data/seed/customers.csv")).unwrap();
    let known: std::collections::BTreeSet<&str> = seed.lines().filter_map(|l| l.split(',').next()).collect();
    let found = store.query("SELECT domain FROM discovered");
    assert!(found.iter().all(|r| !known.contains(r["domain"].as_str().unwrap())));
    let ledger =
        store.query("SELECT endpoint, count(*) AS n, sum(cost_usd) AS usd FROM api_calls GROUP BY ALL ORDER BY 1");
    assert!(
        ledger.iter().any(|r| r["endpoint"] == "lists") && ledger.iter().any(|r| r["endpoint"] == "free"),
        "{ledger:?}"
    );

    // The nightly book now holds them: the next run enriches them.
    assert_eq!(planned_targets(&store), before + discovered);

    // Again: the lists are still fresh and every candidate was seen: nothing new, nothing paid.
    let second = summary(&store, &discovery, "2026-11-21");
    assert_eq!(second["discovered"], 0, "{second}");
    assert_eq!((second["calls"].as_u64(), second["spend_usd"].as_f64()), (Some(0), Some(0.0)), "{second}");
    assert!(second["lists"].as_array().unwrap().iter().all(|l| l["reused_from"] == "2026-11-20"));

    // A page budget caps what a run pays for; a list it cuts is read again later.
    let capped = TestStore::new();
    let text = std::fs::read_to_string(&discovery).unwrap().replace("max_pages = 60", "max_pages = 3");
    let path = capped.path().join("discovery.toml");
    let nightly = root.join("pipelines/nightly.toml").display().to_string();
    std::fs::write(&path, text.replace("\"pipelines/nightly.toml\"", &format!("{nightly:?}"))).unwrap();
    let path = path.display().to_string();
    let out = capped.pf(&[
        "run",
        "--pipeline",
        &path,
        "--store",
        &capped.store(),
        "--date",
        "2026-11-20",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "a list left unread is a partial run");
    let cut: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paid: u64 = cut["lists"].as_array().unwrap().iter().map(|l| l["pages"].as_u64().unwrap()).sum();
    assert_eq!(paid, 3, "{cut}");
    assert!(cut["lists"].as_array().unwrap().iter().any(|l| l["complete"] == false));
}
