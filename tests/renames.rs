//! A renamed domain keeps its history: when BuiltWith's answer for a book domain is
//! about another root domain (the site moved and redirects there), the commit records
//! the move in `renames`, the next night looks the account up under its new name, its
//! tracked changes continue there (one `renamed` event, no left/entered pair), and its
//! `targets_history` and the dashboard's trend read as one account.

mod support;

use chrono::{Days, NaiveDate};
use partnerforge::simulate::World;
use support::{TestStore, repo};

/// A domain of the simulated world that moves on a day between June and November 2026,
/// to a domain BuiltWith knows: (old, new, the day it moved).
fn a_domain_that_moves() -> (String, String, NaiveDate) {
    let (from, to) = (NaiveDate::from_ymd_opt(2026, 6, 10).unwrap(), NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    for i in 0..200_000 {
        let domain = format!("harbor-goods-{i}.com");
        let world = World::new(42, to);
        let Some((day, new)) = world.renamed(&domain) else { continue };
        if day < from || day > to || world.renamed(&new).is_some() {
            continue;
        }
        let known = |d: &str, on: NaiveDate| World::new(42, on).builtwith_domain(d).1["Results"].is_array();
        if known(&new, day) && known(&domain, day - Days::new(1)) {
            return (domain, new, day);
        }
    }
    panic!("the simulated world moves 0.5 % of domains: one should be found");
}

#[test]
fn a_moved_site_is_followed_to_its_new_domain_and_keeps_its_history() {
    let (old, new, moved_on) = a_domain_that_moves();
    let store = TestStore::new();
    // BuiltWith looked up every night (no free pre-check, fresh for a day only).
    let pipeline = store.pipeline(|text| {
        text.replace("m01 = 7 ", "m01 = 1 ")
            .replace("m02 = 7 ", "m02 = 1 ")
            .replace("[precheck]\nenabled = true", "[precheck]\nenabled = false")
    });
    let seed = std::fs::read_to_string(repo().join("data/seed/targets.csv")).unwrap();
    let mut text: String = seed.lines().take(21).collect::<Vec<_>>().join("\n") + "\n";
    text.push_str(&format!("{old},Harbor Goods,Shopify Plus,Commerce,US\n"));
    let book = store.path().join("book.csv");
    std::fs::write(&book, text).unwrap();
    let book = book.display().to_string();
    let night = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let (before, on, after) = (moved_on - Days::new(1), moved_on, moved_on + Days::new(1));
    let run = |d: NaiveDate| store.ok(&["run", "--pipeline", &pipeline, "--targets", &book, "--date", &night(d)]);

    run(before);
    let renames = store.query("SELECT count(*) AS n FROM renames");
    assert_eq!(renames[0]["n"], 0);

    // The night it moved: BuiltWith answers for the new domain; the move is recorded.
    run(on);
    let company = store.query(&format!("SELECT redirects_to FROM company WHERE domain = '{old}'"));
    assert_eq!(company[0]["redirects_to"], new.as_str(), "{company:?}");
    let renames = store.query("SELECT domain, renamed_to, source, first_seen::VARCHAR AS first_seen FROM renames");
    assert_eq!(renames.len(), 1, "{renames:?}");
    assert_eq!(renames[0]["domain"], old.as_str());
    assert_eq!(renames[0]["renamed_to"], new.as_str());
    assert_eq!(renames[0]["first_seen"], night(on).as_str());

    // The next night the account is looked up under its new name.
    run(after);
    let targets = store.query(&format!("SELECT domain FROM targets WHERE domain IN ('{old}', '{new}')"));
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0]["domain"], new.as_str());
    let calls = store.query(&format!(
        "SELECT count(*) FILTER (WHERE domain = '{new}') AS new, count(*) FILTER (WHERE domain = '{old}') AS old
         FROM api_calls WHERE snapshot_id = '{}'",
        night(after)
    ));
    assert!(calls[0]["new"].as_i64().unwrap() > 0 && calls[0]["old"] == 0, "{calls:?}");

    // Its tracked changes continue: one `renamed` event, no left/entered pair.
    let events = store.query(&format!(
        "SELECT domain, change, old_value, new_value, summary, account_domain FROM changes
         WHERE to_snapshot = '{}' AND field = 'target'",
        night(after)
    ));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["change"], "renamed");
    assert_eq!(events[0]["domain"], new.as_str());
    assert_eq!(events[0]["old_value"], old.as_str());
    // Technologies tracked under the old name are not new to the new one.
    let entered = store.query(&format!(
        "SELECT count(*) AS n FROM changes WHERE to_snapshot = '{}' AND domain = '{new}' AND field = 'technologies'
         AND change = 'added'",
        night(after)
    ));
    let live = store.query(&format!("SELECT count(*) AS n FROM tech_stack WHERE domain = '{new}' AND live"));
    assert!(entered[0]["n"].as_i64().unwrap() < live[0]["n"].as_i64().unwrap(), "{entered:?} of {live:?}");
    // `changes` on demand between the same two snapshots follows the move as the night did.
    let json = store.ok(&[
        "changes",
        "--store",
        &store.store(),
        "--pipeline",
        &pipeline,
        "--from",
        &night(on),
        "--to",
        &night(after),
        "--format",
        "json",
    ]);
    let on_demand: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json");
    // It read the night's change feed, which names the move its commit applied.
    let (_, manifest) = store.manifests().pop().expect("the night's manifest");
    let files = manifest["files"].as_array().cloned().unwrap_or_default();
    let feed = files.iter().find(|f| f["table"] == "change_feed").expect("a change feed");
    let bytes = std::fs::read(std::path::Path::new(&store.store()).join(feed["path"].as_str().unwrap())).unwrap();
    let info = partnerforge::transform::changes::feed_info(&bytes.into(), 1).expect("the feed's footer");
    assert_eq!(info.renames, Some(serde_json::json!({ &old: &new }).to_string()));
    let mut ids: Vec<String> = on_demand.iter().filter_map(|r| r["event_id"].as_str().map(str::to_string)).collect();
    ids.sort();
    let stored =
        store.query(&format!("SELECT event_id FROM changes WHERE to_snapshot = '{}' ORDER BY 1", night(after)));
    let stored: Vec<String> = stored.iter().filter_map(|r| r["event_id"].as_str().map(str::to_string)).collect();
    assert_eq!(ids, stored, "on demand {on_demand:#?}");

    // One account across the three nights, under its current domain.
    let history = store.query(&format!(
        "SELECT domain, snapshot_id FROM targets_history WHERE account_domain = '{new}' ORDER BY snapshot_id"
    ));
    let names: Vec<&str> = history.iter().map(|r| r["domain"].as_str().unwrap()).collect();
    assert_eq!(names, [old.as_str(), old.as_str(), new.as_str()]);

    // The dashboard's page of the account shows the whole trend, each point with its domain then.
    let sites = store.path().join("site");
    store.ok(&["export", "--out", sites.to_str().unwrap()]);
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sites.join("current.json")).unwrap()).unwrap();
    let folder = sites.join("versions").join(pointer["version"].as_str().unwrap());
    let page: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("targets").join(format!("{new}.json"))).unwrap()).unwrap();
    let trend = page["traffic_trend"].as_array().unwrap_or_else(|| panic!("no traffic_trend in {page}"));
    let domains: Vec<&str> = trend.iter().map(|p| p["domain"].as_str().unwrap()).collect();
    assert_eq!(domains, [old.as_str(), old.as_str(), new.as_str()]);
    assert!(!folder.join("targets").join(format!("{old}.json")).exists());
}
