//! Incremental refresh: a night fetches what is due and carries the rest;
//! `--force` fetches modules whatever their age, `--only` restricts a run, and
//! an unknown module name is refused before any call.

mod support;

use support::TestStore;

fn modules_called(store: &TestStore, date: &str) -> Vec<String> {
    store
        .query(&format!(
            "SELECT DISTINCT unnest(string_split(modules, ',')) AS m FROM api_calls
             WHERE snapshot_id = '{date}' AND outcome NOT LIKE 'skipped%' ORDER BY 1"
        ))
        .iter()
        .map(|r| r["m"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn force_and_only_choose_what_a_night_fetches() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "20", "--date", "2026-11-20"]);
    let first = modules_called(&store, "2026-11-20");
    assert!(first.len() >= 10, "the first night fetches everything: {first:?}");

    store.ok(&["run", "--limit", "20", "--date", "2026-11-21", "--force", "m03,m04"]);
    let forced = modules_called(&store, "2026-11-21");
    assert!(forced.contains(&"m03".to_string()) && forced.contains(&"m04".to_string()), "{forced:?}");
    assert!(!forced.contains(&"m02".to_string()), "the tech stack is still fresh: {forced:?}");

    store.ok(&["run", "--limit", "20", "--date", "2026-11-22", "--only", "m10"]);
    assert_eq!(modules_called(&store, "2026-11-22"), ["m10"]);
    let targets = store.query("SELECT count(*) AS n, count(sw_monthly_visits) AS with_traffic FROM targets");
    assert!(targets[0]["with_traffic"].as_u64().unwrap() > 0, "carried modules still fill the targets: {targets:?}");

    let err = store.fails(&["run", "--limit", "20", "--date", "2026-11-23", "--force", "m99"]);
    assert!(err.contains("no module \"m99\""), "{err}");

    // --only holds on a store with nothing to carry, too.
    let empty = TestStore::new();
    empty.ok(&["run", "--limit", "10", "--date", "2026-11-20", "--only", "m01"]);
    assert_eq!(modules_called(&empty, "2026-11-20"), ["m01"]);
}
