//! The signal layer on the simulated providers: every target has its budget, pain
//! and timing signals with reasons, a priority, a displacement angle and three case
//! studies; each value says where it came from; and an independent recomputation
//! from the Parquet files (`tests/signals_reference.py`, pandas, reading the same
//! rules file) agrees row for row.

mod support;

use std::process::Command;

use support::{TestStore, repo};

fn reference(folder: &std::path::Path, rules: &std::path::Path) -> (bool, serde_json::Value) {
    let out = Command::new("python3")
        .arg(repo().join("tests/signals_reference.py"))
        .arg(folder)
        .arg(rules)
        .arg(repo().join("data/seed/case_studies.csv"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), summary)
}

#[test]
fn every_target_has_signals_a_priority_an_angle_and_case_studies_and_a_reference_agrees() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "400", "--date", "2026-11-23"]);
    let complete = store.query(
        "SELECT count(*) AS n, count(*) FILTER (WHERE budget_signal IS NOT NULL AND pain_signal IS NOT NULL
             AND timing_signal IS NOT NULL AND len(budget_reasons) > 0 AND len(pain_reasons) > 0
             AND len(timing_reasons) > 0 AND priority IS NOT NULL AND length(displacement_angle) > 0
             AND len(case_studies) = 3 AND list_bool_and([c.reason <> '' FOR c IN case_studies])) AS complete
         FROM targets",
    );
    let n = complete[0]["n"].as_u64().unwrap();
    assert!(n > 300, "{complete:?}");
    assert_eq!(complete[0]["complete"], n, "every target has it all: {complete:?}");
    // The levels spread: each signal has targets at more than one level, and there are P1s.
    let spread = store.query(
        "SELECT count(DISTINCT budget_signal) AS b, count(DISTINCT pain_signal) AS p, count(DISTINCT timing_signal) AS t,
                count(*) FILTER (WHERE priority = 'P1') AS p1 FROM targets",
    );
    for key in ["b", "p", "t"] {
        assert!(spread[0][key].as_u64().unwrap() >= 2, "{spread:?}");
    }
    assert!(spread[0]["p1"].as_u64().unwrap() > 0, "{spread:?}");
    // A hot account's angle reads as one sentence of facts.
    let hot = store.query("SELECT displacement_angle AS a FROM targets WHERE priority = 'P1' ORDER BY domain LIMIT 1");
    let angle = hot[0]["a"].as_str().unwrap();
    assert!(angle.contains("; ") && angle.chars().next().unwrap().is_uppercase(), "{angle}");
    // Provenance: a seed value says `seed`, a provider value its provider and when it was fetched.
    let origin = store.query(
        "SELECT count(*) FILTER (WHERE revenue IS NOT NULL AND provenance.revenue.source = 'yahoo_finance'
                    AND provenance.revenue.fetched_at IS NOT NULL) AS revenue_ok,
                count(*) FILTER (WHERE revenue IS NOT NULL) AS with_revenue,
                count(*) FILTER (WHERE provenance.revenue.source IS NOT NULL AND revenue IS NULL) AS origin_without_value,
                count(*) FILTER (WHERE provenance.company_name.source = 'seed') AS named_by_seed,
                count(*) FILTER (WHERE sw_monthly_visits IS NOT NULL AND provenance.sw_monthly_visits.source <> 'similarweb') AS bad_traffic
         FROM targets",
    );
    let o = &origin[0];
    assert_eq!(o["revenue_ok"], o["with_revenue"], "{o:?}");
    assert!(o["with_revenue"].as_u64().unwrap() > 0 && o["named_by_seed"].as_u64().unwrap() > 300, "{o:?}");
    assert_eq!(o["origin_without_value"], 0, "{o:?}");
    assert_eq!(o["bad_traffic"], 0, "{o:?}");

    // The reference, from the files alone.
    let folder = store.path().join("store/snapshots/2026-11-23/0001");
    let (agreed, summary) = reference(&folder, &repo().join("pipelines/signals.toml"));
    assert!(agreed, "the engine and the reference disagree: {summary}");
    assert_eq!(summary["rows"], n);
    // And it would notice a difference: the same files against a changed rule.
    let rules = std::fs::read_to_string(repo().join("pipelines/signals.toml")).unwrap();
    let changed = rules.replace(
        "{ min = 0.55, points = 2, reason = \"bounce rate",
        "{ min = 0.65, points = 2, reason = \"bounce rate",
    );
    assert_ne!(changed, rules);
    let changed_path = store.path().join("changed-signals.toml");
    std::fs::write(&changed_path, changed).unwrap();
    let (agreed, summary) = reference(&folder, &changed_path);
    assert!(!agreed && summary["mismatched"].as_u64().unwrap() > 0, "{summary}");
}

#[test]
fn the_brief_reads_like_a_call_sheet_and_holds_nothing_the_audience_may_not_see() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "400", "--date", "2026-11-23"]);
    let url = store.store();
    let hot = store.query("SELECT domain FROM targets WHERE priority = 'P1' ORDER BY priority_points DESC, domain");
    let domain = hot[0]["domain"].as_str().unwrap().to_string();
    let brief = store.ok(&["brief", &domain, "--store", &url]);
    for part in [
        "Priority P1",
        "## Score",
        "## Why now",
        "**Budget:",
        "**Pain:",
        "**Timing:",
        "## Tech stack",
        "## Traffic",
        "## Case studies to mention",
        "3. **",
    ] {
        assert!(brief.contains(part), "{part:?} missing in\n{brief}");
    }
    // Facts carry their source and age; the angle is there as a quote.
    assert!(brief.contains("(builtwith, today)") && brief.contains("(similarweb, today)"), "{brief}");
    let angle = store.query(&format!("SELECT displacement_angle AS a FROM targets WHERE domain = '{domain}'"));
    assert!(brief.contains(&format!("> {}", angle[0]["a"].as_str().unwrap())), "{brief}");
    // JSON: the dashboard's target detail.
    let json: serde_json::Value =
        serde_json::from_str(&store.ok(&["brief", &domain, "--store", &url, "--format", "json"])).unwrap();
    assert_eq!(json["target"]["domain"], domain.as_str());
    assert_eq!(json["target"]["case_studies"].as_array().unwrap().len(), 3);
    // The same detail, value for value, as the dashboard's target file.
    let site = store.path().join("site");
    store.ok(&["export", "--out", site.to_str().unwrap()]);
    let current: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(site.join("current.json")).unwrap()).unwrap();
    let version = current["version"].as_str().unwrap();
    let file = site.join("versions").join(version).join(format!("targets/{domain}.json"));
    let exported: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json, exported, "the brief's detail and the exported target file differ");
    // A domain that is not a target is named.
    let err = store.fails(&["brief", "not-a-target.example", "--store", &url]);
    assert!(err.contains("not-a-target.example") && err.contains("not among the targets"), "{err}");

    // An SDR's brief: no financial figure anywhere, not even in the budget's reasons.
    let mut seen = None;
    for row in store.query("SELECT domain FROM targets WHERE revenue IS NOT NULL ORDER BY domain") {
        let d = row["domain"].as_str().unwrap();
        let out = store.pf(&["brief", d, "--store", &url, "--audience", "leo.martins"]);
        if out.status.success() {
            seen = Some((d.to_string(), String::from_utf8_lossy(&out.stdout).to_string()));
            break;
        }
        assert!(String::from_utf8_lossy(&out.stderr).contains("for audience leo.martins"));
    }
    let (d, sdr) = seen.expect("the SDR sees some public company");
    let full = store.ok(&["brief", &d, "--store", &url]);
    assert!(full.contains("## Financials") && full.contains("revenue $"), "{full}");
    assert!(!sdr.contains("## Financials") && !sdr.contains("revenue $") && !sdr.contains("gross margin"), "{sdr}");
    let json: serde_json::Value = serde_json::from_str(&store.ok(&[
        "brief",
        &d,
        "--store",
        &url,
        "--audience",
        "leo.martins",
        "--format",
        "json",
    ]))
    .unwrap();
    let text = json.to_string();
    for key in ["\"revenue\"", "\"gross_margin\"", "\"market_cap\"", "\"budget_reasons\"", "\"provenance\""] {
        assert!(!text.contains(key), "{key} in the SDR's brief");
    }
}

#[test]
fn an_injected_conflict_is_resolved_by_trust_and_listed_with_both_values() {
    let store = TestStore::new();
    store.ok(&[
        "run",
        "--limit",
        "300",
        "--date",
        "2026-11-23",
        "--fault",
        "builtwith.conflict_rate=0.2",
        "--fault",
        "yahoo_finance.conflict_rate=0.5",
    ]);
    let conflicts = store.query(
        "SELECT c.domain, c.field, c.value, c.source, c.weight, c.other_value, c.other_source, c.other_fetched_at,
                c.other_weight, t.company_name, t.country, t.provenance.company_name.source AS held_source
         FROM conflicts AS c JOIN targets AS t USING (domain) ORDER BY c.domain, c.field",
    );
    let names: Vec<_> = conflicts.iter().filter(|c| c["field"] == "company_name").collect();
    let countries: Vec<_> = conflicts.iter().filter(|c| c["field"] == "country").collect();
    assert!(names.len() >= 10 && countries.len() >= 10, "{conflicts:?}");
    for c in &names {
        // The book (first-party, 1.0) outweighs BuiltWith (0.9): the row holds the book's name.
        assert_eq!((c["source"].as_str(), c["other_source"].as_str()), (Some("seed"), Some("builtwith")), "{c:?}");
        assert_eq!(c["value"], c["company_name"], "{c:?}");
        assert_eq!(c["held_source"], "seed", "{c:?}");
        assert!(c["other_value"].as_str().unwrap().ends_with("Brands International"), "{c:?}");
        assert!(c["weight"].as_f64().unwrap() > c["other_weight"].as_f64().unwrap(), "{c:?}");
        assert!(!c["other_fetched_at"].is_null(), "{c:?}");
    }
    for c in &countries {
        assert_eq!(c["value"], c["country"], "{c:?}");
        assert_ne!(c["value"], c["other_value"], "{c:?}");
    }
    // Yahoo's profile country (a name, compared as its code) is a third claim on the country.
    let yahoo: Vec<_> = countries.iter().filter(|c| c["other_source"] == "yahoo_finance").collect();
    assert!(yahoo.len() >= 5, "{countries:?}");
    for c in &yahoo {
        assert_eq!((c["other_value"].as_str(), c["other_weight"].as_f64()), (Some("DE"), Some(0.8)), "{c:?}");
    }
    // Without the fault the simulated BuiltWith agrees with the book: nothing to list.
    let quiet = TestStore::new();
    quiet.ok(&["run", "--limit", "100", "--date", "2026-11-23"]);
    assert_eq!(quiet.query("SELECT count(*) AS n FROM conflicts")[0]["n"], 0);
}
