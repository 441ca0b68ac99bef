//! Change intelligence end to end: nights on the simulated providers with the world
//! evolving between them. The test picks, from the simulated world itself, a domain
//! whose search vendor goes away for good, one whose vendor a single crawl misses,
//! and one whose traffic jumps 2.5×, puts them in a book of its own, and checks what
//! the `changes` tables say: every row satisfies its rule and carries evidence.

mod support;

use chrono::NaiveDate;
use partnerforge::config::changes::{ChangeRules, Condition, Direction};
use partnerforge::providers::Answer;
use partnerforge::providers::builtwith::parse_domain;
use partnerforge::run::changes::DiffOptions;
use partnerforge::simulate::World;
use partnerforge::simulate::world::{SEARCH_VENDORS, day_index};
use serde_json::Value;
use support::TestStore;

const SEED: u64 = 42;
const LIVE_WITHIN_DAYS: i64 = 45;
const NIGHTS: [&str; 3] = ["2026-07-31", "2026-08-01", "2026-08-02"];

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

/// The live search vendors BuiltWith's answer shows for a domain on a date, as the parser reads it.
fn live_vendors(domain: &str, on: &str) -> Option<Vec<String>> {
    let (status, body) = World::new(SEED, date(on)).builtwith_domain(domain);
    assert_eq!(status, 200);
    let bytes = serde_json::to_vec(&body).expect("json");
    match parse_domain(&bytes, LIVE_WITHIN_DAYS).expect("parses") {
        Answer::Data(profile) => Some(
            profile
                .technologies
                .iter()
                .filter(|t| t.live && SEARCH_VENDORS.iter().any(|(v, _)| !v.is_empty() && *v == t.name))
                .map(|t| t.name.clone())
                .collect(),
        ),
        Answer::NoData(_) => None,
    }
}

fn month_index(on: &str) -> i64 {
    let d = date(on);
    use chrono::Datelike;
    i64::from(d.year() - 2020) * 12 + i64::from(d.month0())
}

/// (lasting drop, one-night flap, 2.5× traffic jump) domains for `NIGHTS`.
fn pick_domains() -> (String, String, String) {
    let world = World::new(SEED, date(NIGHTS[0]));
    let [d1, d2, d3] = NIGHTS.map(|n| day_index(date(n)));
    let (mut lasting, mut flap, mut jump) = (None, None, None);
    for i in 0..200_000 {
        let domain = format!("changes-{i}.com");
        let vendor = |day: i64| world.search_vendor(&domain, day).0;
        // Cheap pre-filters on the world, then the parser's view decides.
        if lasting.is_none() && !vendor(d1 - LIVE_WITHIN_DAYS).is_empty() && vendor(d2).is_empty() {
            let seen: Vec<Option<Vec<String>>> = NIGHTS.iter().map(|n| live_vendors(&domain, n)).collect();
            if let [Some(a), Some(b), Some(c)] = seen.as_slice()
                && !a.is_empty()
                && b.is_empty()
                && c.is_empty()
                && a.iter().all(|v| v != "Algolia")
            {
                lasting = Some(domain.clone());
                continue;
            }
        }
        let v = vendor(d1);
        if flap.is_none()
            && !v.is_empty()
            && v != "Algolia"
            && vendor(d3) == v
            && world.misses(&domain, v, d2)
            && !world.misses(&domain, v, d1)
            && !world.misses(&domain, v, d3)
        {
            let seen: Vec<Option<Vec<String>>> = NIGHTS.iter().map(|n| live_vendors(&domain, n)).collect();
            if let [Some(a), Some(b), Some(c)] = seen.as_slice()
                && a == &vec![v.to_string()]
                && b.is_empty()
                && c == a
            {
                flap = Some(domain.clone());
                continue;
            }
        }
        // Night 1 reports the month before night 2's.
        let (before, after) = (month_index(NIGHTS[0]) - 1, month_index(NIGHTS[1]) - 1);
        if jump.is_none()
            && world.visits(&domain, before) > 200_000.0
            && world.visits(&domain, after) / world.visits(&domain, before) >= 2.5
            && live_vendors(&domain, NIGHTS[0]).is_some()
        {
            jump = Some(domain.clone());
        }
        if let (Some(a), Some(b), Some(c)) = (&lasting, &flap, &jump) {
            return (a.clone(), b.clone(), c.clone());
        }
    }
    panic!("the world has no lasting drop / flap / jump for {NIGHTS:?}: {lasting:?} {flap:?} {jump:?}");
}

/// A pipeline whose book is just `domains` (runs and rebuilds read the same book).
fn write_book(store: &TestStore, domains: &[&str]) -> String {
    let mut csv = String::from("domain,company_name,partner_tech,vertical,country\n");
    for d in domains {
        csv.push_str(&format!("{d},,,Commerce,US\n"));
    }
    let path = store.path().join("book.csv");
    std::fs::write(&path, csv).expect("write book");
    let seed = format!("{}/data/seed/targets.csv", support::repo().display());
    store.pipeline(|text| text.replace(&seed, &path.display().to_string()))
}

fn rules() -> ChangeRules {
    ChangeRules::load(&support::repo().join("pipelines/changes.toml"), &partnerforge::transform::changes::field_kinds())
        .expect("the shipped rules load")
}

fn text(row: &Value, key: &str) -> Option<String> {
    row[key].as_str().map(str::to_string)
}

/// Every row of a changes table satisfies the rule it names and carries evidence.
fn check_rows(rows: &[Value], rules: &ChangeRules) {
    for row in rows {
        let id = text(row, "rule").expect("rule");
        let rule = rules.rules.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no rule {id}: {row}"));
        assert_eq!(text(row, "field").as_deref(), Some(rule.field.as_str()), "{row}");
        assert_eq!(text(row, "category").as_deref(), Some(rule.category.as_str()), "{row}");
        assert_eq!(text(row, "significance").as_deref(), Some(rule.significance.as_str()), "{row}");
        let change = text(row, "change").expect("change");
        let (old, new) = (text(row, "old_value"), text(row, "new_value"));
        let lower = |v: &Option<String>| v.clone().unwrap_or_default().to_lowercase();
        let one_of = |v: &Option<String>, set: &[String]| set.iter().any(|s| s.to_lowercase() == lower(v));
        match rule.condition {
            Condition::Added => assert!(change == "added" && old.is_none() && new.is_some(), "{row}"),
            Condition::Removed => assert!(change == "removed" && old.is_some() && new.is_none(), "{row}"),
            Condition::Changed => assert!(change == "changed" && old.is_some() && new.is_some() && old != new, "{row}"),
            Condition::RelativeChange => {
                let (o, n): (f64, f64) = (old.clone().unwrap().parse().unwrap(), new.clone().unwrap().parse().unwrap());
                let ratio = n / o - 1.0;
                let t = rule.threshold.unwrap();
                let ok = match rule.direction {
                    Direction::Up => ratio >= t,
                    Direction::Down => ratio <= -t,
                    Direction::Either => ratio.abs() >= t,
                };
                assert!(change == "changed" && ok, "{row}");
            }
            Condition::TierCrossed => assert_eq!(change, "changed", "{row}"),
        }
        if !rule.keys.is_empty() {
            assert!(one_of(&text(row, "item"), &rule.keys), "{row}");
        }
        if !rule.from.is_empty() {
            assert!(one_of(&old, &rule.from), "{row}");
        }
        if !rule.to.is_empty() {
            assert!(one_of(&new, &rule.to), "{row}");
        }
        if !rule.not_to.is_empty() {
            assert!(!one_of(&new, &rule.not_to), "{row}");
        }
        // Evidence from both sides: where the values came from and when they were fetched.
        for key in ["old_source", "new_source", "old_fetched_at", "new_fetched_at", "evidence", "event_id"] {
            assert!(row[key].is_string(), "{key} missing: {row}");
        }
        assert!(text(row, "summary").is_some_and(|s| !s.contains('{')), "{row}");
    }
}

fn changes_of(store: &TestStore, night: &str) -> Vec<Value> {
    store
        .query(&format!("SELECT * FROM changes WHERE to_snapshot = '{night}' ORDER BY event_id"))
        .into_iter()
        .map(Value::Object)
        .collect()
}

#[test]
fn three_nights_report_what_changed_once_confirmed() {
    let (lasting, flap, jump) = pick_domains();
    let store = TestStore::new();
    let book = write_book(&store, &[&lasting, &flap, &jump]);
    let rules = rules();
    let mut summaries = Vec::new();
    for night in NIGHTS {
        let out = store.ok(&["run", "--pipeline", &book, "--date", night, "--force", "m02,m03,m04"]);
        summaries.push(out);
    }
    assert!(summaries[0].contains("changes         none (no earlier snapshot"), "{}", summaries[0]);

    let vendor_events = |rows: &[Value], domain: &str| -> Vec<Value> {
        rows.iter()
            .filter(|r| {
                text(r, "domain").as_deref() == Some(domain) && text(r, "field").as_deref() == Some("search_vendor")
            })
            .cloned()
            .collect()
    };
    let night2 = changes_of(&store, NIGHTS[1]);
    let night3 = changes_of(&store, NIGHTS[2]);
    check_rows(&night2, &rules);
    check_rows(&night3, &rules);

    // The lasting drop: absent once on night 2 (not yet confirmed), reported critical on night 3.
    assert!(vendor_events(&night2, &lasting).is_empty(), "one absence is not a removal: {night2:?}");
    let dropped = vendor_events(&night3, &lasting);
    assert_eq!(dropped.len(), 1, "{night3:?}");
    assert_eq!(text(&dropped[0], "rule").as_deref(), Some("search_vendor_removed"));
    assert_eq!(text(&dropped[0], "significance").as_deref(), Some("critical"));
    let was = live_vendors(&lasting, NIGHTS[0]).unwrap();
    assert!(was.contains(&text(&dropped[0], "old_value").unwrap()), "{dropped:?} vs {was:?}");
    assert!(text(&dropped[0], "summary").unwrap().starts_with("Search vendor removed: "), "{dropped:?}");

    // The flap: missed by one crawl, seen again: never an event, on either night.
    for rows in [&night2, &night3] {
        assert!(vendor_events(rows, &flap).is_empty(), "a one-night flap is no change: {rows:?}");
        assert!(
            !rows.iter().any(|r| text(r, "domain").as_deref() == Some(flap.as_str())
                && text(r, "change").as_deref() == Some("removed")),
            "{rows:?}"
        );
    }

    // The traffic jump: high, on the night the new month is reported.
    let traffic: Vec<&Value> = night2
        .iter()
        .filter(|r| {
            text(r, "domain").as_deref() == Some(jump.as_str()) && text(r, "field").as_deref() == Some("monthly_visits")
        })
        .collect();
    assert_eq!(traffic.len(), 1, "{night2:?}");
    assert_eq!(text(traffic[0], "significance").as_deref(), Some("high"));
    assert_eq!(text(traffic[0], "rule").as_deref(), Some("traffic_major"));

    // The run's summary counts them; `query` exposes every night's changes.
    let total = store.query("SELECT count(*) AS n FROM changes")[0]["n"].as_u64().unwrap();
    assert_eq!(total as usize, night2.len() + night3.len());
    assert!(summaries[2].contains(&format!("since snapshot {}", NIGHTS[1])), "{}", summaries[2]);

    // `changes` on demand: the same events for consecutive snapshots, and a readable table.
    let json =
        store.ok(&["changes", "--store", &store.store(), "--from", NIGHTS[1], "--to", NIGHTS[2], "--format", "json"]);
    let on_demand: Vec<Value> = serde_json::from_str(&json).expect("json");
    let mut ids: Vec<String> = on_demand.iter().filter_map(|r| text(r, "event_id")).collect();
    ids.sort();
    let stored: Vec<String> = night3.iter().filter_map(|r| text(r, "event_id")).collect();
    assert_eq!(ids, stored);
    let table = store.ok(&[
        "changes",
        "--store",
        &store.store(),
        "--since",
        NIGHTS[0],
        "--min-significance",
        "critical",
        "--format",
        "table",
    ]);
    assert!(table.contains(&lasting) && table.contains("Search vendor removed"), "{table}");
    assert!(table.lines().next().is_some_and(|h| h.starts_with("significance")), "{table}");
    let recent = store.ok(&["query", "--file", "queries/recent_changes.sql"]);
    assert!(recent.contains(&lasting) && recent.contains("critical"), "the saved query lists the drop: {recent}");

    // A rebuild recomputes the night's changes from its raw bodies: the same events.
    store.ok(&["rebuild", "--pipeline", &book, "--store", &store.store(), "--snapshot", NIGHTS[2]]);
    let rebuilt = changes_of(&store, NIGHTS[2]);
    let rebuilt_ids: Vec<String> = rebuilt.iter().filter_map(|r| text(r, "event_id")).collect();
    assert_eq!(rebuilt_ids, stored, "rebuilt {rebuilt:#?}\nstored {night3:#?}");
}

#[test]
fn tracking_a_slice_of_domains_at_a_time_finds_the_same_changes() {
    // The first 40 targets of the book over two nights, tracked in one range and in ranges of 3.
    let text = std::fs::read_to_string(support::repo().join("data/seed/targets.csv")).expect("book");
    let ids = |slice: Option<usize>| {
        let store = TestStore::new();
        let path = store.path().join("book.csv");
        std::fs::write(&path, text.lines().take(41).collect::<Vec<_>>().join("\n") + "\n").expect("write");
        let seed = format!("{}/data/seed/targets.csv", support::repo().display());
        let pipeline = store.pipeline(|t| {
            let t = t.replace(&seed, &path.display().to_string());
            match slice {
                Some(n) => t.replace("[fetch]", &format!("[run]\nscore_slice_rows = {n}\n\n[fetch]")),
                None => t,
            }
        });
        for night in &NIGHTS[1..] {
            store.ok(&["run", "--pipeline", &pipeline, "--date", night, "--force", "m02,m03,m04,m10,m12"]);
        }
        let rows = store.query("SELECT event_id FROM changes ORDER BY event_id");
        let (_, last) = store.manifests().pop().expect("a manifest");
        let files = last["files"].as_array().cloned().unwrap_or_default();
        let state_rows = files.iter().find(|f| f["table"] == "change_state").map(|f| f["rows"].clone());
        (rows.iter().map(|r| r["event_id"].as_str().unwrap().to_string()).collect::<Vec<_>>(), state_rows)
    };
    let whole = ids(None);
    let sliced = ids(Some(3));
    assert!(!whole.0.is_empty(), "the nights changed something");
    assert_eq!(whole, sliced, "the same events and the same tracked state");
}

#[test]
fn a_carried_value_neither_creates_nor_confirms_a_change() {
    let (lasting, _, _) = pick_domains();
    let store = TestStore::new();
    let book = write_book(&store, &[&lasting]);
    store.ok(&["run", "--pipeline", &book, "--date", NIGHTS[0], "--force", "m02"]);
    store.ok(&["run", "--pipeline", &book, "--date", NIGHTS[1], "--force", "m02"]);
    // Night 3 fetches only hiring: the tech stack is carried, so the absence is not confirmed.
    store.ok(&["run", "--pipeline", &book, "--date", NIGHTS[2], "--only", "m10"]);
    let night3 = changes_of(&store, NIGHTS[2]);
    assert!(
        !night3.iter().any(|r| text(r, "field").as_deref() == Some("search_vendor")),
        "a carried tech stack confirmed a removal: {night3:?}"
    );
    // The next fetch of the tech stack is the second absence: now it is reported.
    store.ok(&["run", "--pipeline", &book, "--date", "2026-08-03", "--force", "m02"]);
    let night4 = changes_of(&store, "2026-08-03");
    let removed: Vec<&Value> =
        night4.iter().filter(|r| text(r, "rule").as_deref() == Some("search_vendor_removed")).collect();
    assert_eq!(removed.len(), 1, "{night4:?}");
}

#[test]
fn a_bad_rules_file_stops_before_any_call() {
    let store = TestStore::new();
    let rules_path = store.path().join("changes.toml");
    let text = std::fs::read_to_string(support::repo().join("pipelines/changes.toml")).expect("read");
    std::fs::write(&rules_path, text.replacen("field = \"search_vendor\"", "field = \"search_vendr\"", 1))
        .expect("write");
    let pipeline = store.pipeline(|t| {
        t.replace("changes = \"", "changes = \"IGNORED").replace(
            &format!("changes = \"IGNORED{}/pipelines/changes.toml\"", support::repo().display()),
            &format!("changes = \"{}\"", rules_path.display()),
        )
    });
    let err = store.fails(&["run", "--pipeline", &pipeline, "--limit", "5", "--date", "2026-08-01"]);
    assert!(err.contains("changes.toml") && err.contains("line ") && err.contains(".field"), "{err}");
    assert!(err.contains("search_vendr"), "{err}");
    assert!(!store.path().join("store").join("snapshots").exists(), "nothing was committed");
}

#[test]
fn the_change_feed_gives_the_diff_of_both_states() {
    // The first 40 targets of the book over three nights: the diff of a snapshot and the
    // one it was committed on reads its change feed; every other pair reads both states.
    let store = TestStore::new();
    let text = std::fs::read_to_string(support::repo().join("data/seed/targets.csv")).expect("book");
    let path = store.path().join("book.csv");
    std::fs::write(&path, text.lines().take(41).collect::<Vec<_>>().join("\n") + "\n").expect("write");
    let seed = format!("{}/data/seed/targets.csv", support::repo().display());
    let pipeline = store.pipeline(|t| t.replace(&seed, &path.display().to_string()));
    for night in NIGHTS {
        store.ok(&["run", "--pipeline", &pipeline, "--date", night, "--force", "m02,m03,m04,m10,m12"]);
    }
    // A night that fetches only what is due: the domains whose modules were all carried
    // have the same items, and are not in the feed.
    store.ok(&["run", "--pipeline", &pipeline, "--date", "2026-08-03"]);
    let manifests = store.manifests();
    let table = |m: &Value, name: &str| {
        m["files"].as_array().and_then(|files| files.iter().find(|f| f["table"] == name).cloned())
    };
    assert!(table(&manifests[0].1, "change_feed").is_none(), "the first snapshot has nothing to compare with");
    let rows = |m: &Value, name: &str| table(m, name).and_then(|t| t["rows"].as_u64()).expect(name);
    for pair in manifests.windows(2) {
        let (before, after) = (&pair[0].1, &pair[1].1);
        assert!(rows(after, "change_feed") <= rows(before, "change_state") + rows(after, "change_state"));
    }
    let last = &manifests[3].1;
    assert!(rows(last, "change_feed") < rows(last, "change_state"), "{last}");

    let rules = rules();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let path_of_store = store.store();
    runtime.block_on(async {
        let store = partnerforge::store::Store::open(&path_of_store).expect("store");
        let snapshots = store.snapshots().await.expect("snapshots");
        assert_eq!(snapshots.len(), 4);
        // Whole events (evidence, fetch times and all), in one order.
        let ids = |mut events: Vec<partnerforge::transform::changes::Event>| {
            events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            events
        };
        let mut last = Vec::new();
        for (from, to) in [(0, 2), (1, 3), (0, 1), (1, 2), (2, 3)] {
            let (a, b) = (&snapshots[from], &snapshots[to]);
            let diff = async |domain: Option<&str>, use_feed: bool| {
                let options = DiffOptions { domain, min_significance: None, slice_rows: 7, use_feed };
                partnerforge::run::changes::diff(&store, a, b, &rules, &options).await.expect("diff")
            };
            let all = diff(None, true).await;
            assert_eq!(ids(all.clone()), ids(diff(None, false).await), "snapshots {from} → {to}");
            // Without the feed the states are compared by their stored digests first; both
            // read whole and every item hashed, they give the same events.
            use partnerforge::transform::changes::{DomainRange, StateFile, events, read_state};
            let state = async |m: &partnerforge::store::Manifest| {
                store.get(&m.file("change_state").expect("a state").path).await.expect("the state")
            };
            let (old, new) = (state(a).await, state(b).await);
            for bytes in [&old, &new] {
                assert!(StateFile::new(bytes.clone()).expect("footer").digested, "stored with its digests");
            }
            let whole = DomainRange::all();
            let (old, new) = (read_state(&old, &whole).expect("old"), read_state(&new, &whole).expect("new"));
            let hashed = events(old, new, &rules, &a.snapshot_id, &b.snapshot_id).expect("events");
            assert_eq!(ids(hashed), ids(all.clone()), "snapshots {from} → {to}, both states whole");
            // One domain's events, both ways: the domain with the most.
            let count = |d: &str| all.iter().filter(|e| e.domain == d).count();
            if let Some(domain) = all.iter().map(|e| e.domain.as_str()).max_by_key(|d| count(d)) {
                let (fed, read) = (ids(diff(Some(domain), true).await), ids(diff(Some(domain), false).await));
                assert_eq!(fed.len(), count(domain), "{domain}: {fed:?}");
                assert_eq!(fed, read, "{domain}");
            }
            last = ids(all);
        }
        assert!(!last.is_empty(), "the last night changed something");
        // The feed is what the last diff read: without the older state it gives the same events.
        let older = snapshots[2].file("change_state").expect("a state");
        std::fs::remove_file(std::path::Path::new(&path_of_store).join(&older.path)).expect("remove the state");
        let options = DiffOptions { domain: None, min_significance: None, slice_rows: 7, use_feed: true };
        let fed = partnerforge::run::changes::diff(&store, &snapshots[2], &snapshots[3], &rules, &options)
            .await
            .expect("the diff from the feed alone");
        assert_eq!(ids(fed), last);
    });
}
