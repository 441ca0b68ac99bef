//! `partnerforge plan` predicts a run's calls from the same planner the run uses,
//! and makes no call itself.

mod support;

use std::collections::BTreeMap;

use support::TestStore;

/// `provider endpoint -> (calls, at most)` from the plan's table.
fn parse_plan(text: &str) -> BTreeMap<String, (u64, u64)> {
    text.lines()
        .skip_while(|l| !l.starts_with("provider"))
        .skip(1)
        .take_while(|l| !l.starts_with("total"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (format!("{} {}", f[0], f[1]), (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .collect()
}

fn calls_made(store: &TestStore, run_id: &str) -> BTreeMap<String, (u64, u64)> {
    store
        .query(&format!(
            "SELECT provider || ' ' || endpoint AS k, count(*) AS n FROM api_calls
             WHERE run_id = '{run_id}' AND outcome NOT LIKE 'skipped%' GROUP BY ALL"
        ))
        .iter()
        .map(|r| {
            let n = r["n"].as_u64().unwrap();
            (r["k"].as_str().unwrap().to_string(), (n, n))
        })
        .collect()
}

fn last_run_id(store: &TestStore) -> String {
    store.manifests().last().unwrap().1["run_id"].as_str().unwrap().to_string()
}

#[test]
fn the_plan_is_what_the_run_then_calls() {
    let store = TestStore::new();
    let args = ["--limit", "120", "--date", "2026-11-20"];

    // No snapshot yet: the plan cannot know who runs Algolia; the run calls at most that.
    let first = store.ok(&[&["plan"][..], &args].concat());
    assert!(first.contains("no call is made") && first.contains("no earlier snapshot"), "{first}");
    assert!(store.manifests().is_empty(), "plan commits nothing");
    let planned = parse_plan(&first);
    store.ok(&[&["run"][..], &args].concat());
    let made = calls_made(&store, &last_run_id(&store));
    for (key, (n, _)) in &made {
        assert!(*n <= planned[key].1, "{key}: made {n}, planned at most {}", planned[key].1);
    }

    // With a snapshot, the plan knows: the same night again is all fresh, no call at all…
    let nonzero = |m: BTreeMap<String, (u64, u64)>| -> BTreeMap<String, u64> {
        m.into_iter().map(|(k, (n, _))| (k, n)).filter(|(_, n)| *n > 0).collect()
    };
    let again = store.ok(&[&["plan"][..], &args].concat());
    assert!(again.contains("run Algolia according to snapshot 2026-11-20"), "{again}");
    assert!(nonzero(parse_plan(&again)).is_empty(), "{again}");
    store.ok(&[&["run"][..], &args, &["--replace"]].concat());
    assert!(calls_made(&store, &last_run_id(&store)).is_empty());

    // …and the next night makes exactly the calls planned for what is due.
    let next = ["--limit", "120", "--date", "2026-11-21"];
    let planned = nonzero(parse_plan(&store.ok(&[&["plan"][..], &next].concat())));
    assert!(!planned.is_empty());
    store.ok(&[&["run"][..], &next].concat());
    assert_eq!(nonzero(calls_made(&store, &last_run_id(&store))), planned);
}

#[test]
fn planning_real_providers_makes_no_call() {
    // Base URLs that nothing listens on: a call would fail, the plan does not care.
    let store = TestStore::new()
        .env("BUILTWITH_API_KEY", "k")
        .env("SIMILARWEB_API_KEY", "k")
        .env("BUILTWITH_BASE_URL", "http://127.0.0.1:9")
        .env("SIMILARWEB_BASE_URL", "http://127.0.0.1:9")
        .env("YAHOO_FINANCE_BASE_URL", "http://127.0.0.1:9");
    let out = store.ok(&["plan", "--limit", "10"]);
    assert!(out.contains("real providers") && out.contains("builtwith"), "{out}");
    let planned = parse_plan(&out);
    assert_eq!(planned["builtwith domain"], (10, 10));
}
