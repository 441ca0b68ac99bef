//! The nightly refresh end to end: two consecutive dates against the embedded
//! simulated providers over real HTTP, into a temporary store; then the
//! snapshots, the scores, `query` and `export` are checked as a user would.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{TestStore, repo};

/// A book of seed targets plus rows a real export has: existing customers,
/// a duplicate, a malformed domain.
fn book(store: &TestStore) -> (String, Vec<String>) {
    let seed = std::fs::read_to_string(repo().join("data/seed/targets.csv")).unwrap();
    let customers = std::fs::read_to_string(repo().join("data/seed/customers.csv")).unwrap();
    let customers: Vec<String> = customers.lines().skip(1).take(3).map(str::to_string).collect();
    // The header and the first 30 targets.
    let mut lines: Vec<String> = seed.lines().take(31).map(str::to_string).collect();
    for c in &customers {
        lines.push(format!("{c},Customer Co,Shopify Plus,Commerce,US"));
    }
    let first_domain = seed.lines().nth(1).unwrap().split(',').next().unwrap().to_string();
    lines.push(format!("HTTPS://WWW.{}/,Duplicate,Sitecore,Media,US", first_domain.to_uppercase()));
    lines.push("not a domain,Broken,Sitecore,Media,US".into());
    let path = store.path().join("targets.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path.display().to_string(), customers)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[test]
fn two_nights_commit_snapshots_that_query_and_export_read() {
    let store = TestStore::new();
    let (targets, customers) = book(&store);

    // Two consecutive dates across a month boundary, so monthly traffic moves too.
    let (first, status) = store.ok_both(&["run", "--targets", &targets, "--date", "2026-11-30"]);
    assert!(status.contains("providers: simulated"), "status lines go to stderr: {status}");
    assert!(first.starts_with("snapshot 2026-11-30 committed"), "stdout carries only the summary: {first}");
    assert!(first.contains("snapshot 2026-11-30 committed"), "{first}");
    let second = store.ok(&["run", "--targets", &targets, "--date", "2026-12-01"]);
    assert!(second.contains("snapshot 2026-12-01 committed"), "{second}");

    // Manifests: one per night, listing files that exist with their sizes and rows.
    let manifests = store.manifests();
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    for (path, m) in &manifests {
        assert_eq!(m["status"], "completed", "{path:?}");
        assert_eq!(m["counts"]["rejected_rows"], 2, "duplicate + malformed");
        assert_eq!(m["counts"]["excluded_customers"], 3);
        assert_eq!(m["scoring_model"]["name"], "icp");
        let folder = path.parent().unwrap();
        for file in m["files"].as_array().unwrap() {
            let local = store.path().join("store").join(file["path"].as_str().unwrap());
            assert!(local.starts_with(folder));
            assert_eq!(std::fs::metadata(&local).unwrap().len(), file["bytes"].as_u64().unwrap(), "{local:?}");
        }
        let targets_file = m["files"].as_array().unwrap().iter().find(|f| f["table"] == "targets").unwrap();
        assert_eq!(targets_file["rows"], m["counts"]["targets"]);
        let book_rows = 30 - m["counts"]["excluded_algolia"].as_u64().unwrap();
        assert_eq!(m["counts"]["targets"].as_u64().unwrap(), book_rows);
    }
    assert_eq!(manifests[0].1["previous_snapshot"], Value::Null);
    assert_eq!(manifests[1].1["previous_snapshot"], "2026-11-30");

    // Scores: the sum of the breakdown, tiers by the model's thresholds.
    let rows = store.query("SELECT domain, icp_score, icp_tier, icp_tier_name, score_breakdown, score_reasons, sw_bounce_rate FROM targets");
    assert_eq!(rows.len() as u64, manifests[1].1["counts"]["targets"].as_u64().unwrap());
    for row in &rows {
        let score = num(&row["icp_score"]);
        let parts: f64 = row["score_breakdown"].as_object().unwrap().values().map(num).sum();
        assert_eq!(score, parts, "{row:?}");
        let (tier, name) = match score as i64 {
            80.. => (1, "hot"),
            60..=79 => (2, "warm"),
            40..=59 => (3, "cool"),
            _ => (4, "cold"),
        };
        assert_eq!((num(&row["icp_tier"]) as i64, row["icp_tier_name"].as_str().unwrap()), (tier, name), "{row:?}");
        let scored = row["score_breakdown"].as_object().unwrap().values().filter(|v| num(v) > 0.0).count();
        assert_eq!(row["score_reasons"].as_array().unwrap().len(), scored, "{row:?}");
        if let Some(rate) = row["sw_bounce_rate"].as_f64() {
            assert!((0.0..=1.0).contains(&rate), "rates are fractions: {row:?}");
        }
    }

    // Existing customers are neither scored nor called.
    let customer_set: BTreeSet<String> = customers.iter().cloned().collect();
    let history = store.query("SELECT DISTINCT domain FROM targets_history");
    let called = store.query("SELECT DISTINCT domain FROM api_calls");
    for row in history.iter().chain(&called) {
        assert!(!customer_set.contains(row["domain"].as_str().unwrap()), "{row:?}");
    }

    // History holds both nights.
    let per_night = store.query("SELECT snapshot_id, count(*) AS n FROM targets_history GROUP BY ALL ORDER BY 1");
    assert_eq!(per_night.len(), 2);

    // The ledger: every call of the first night a row with provider, endpoint, status and latency.
    let calls = store.query(
        "SELECT provider, count(*) AS n, count(*) FILTER (WHERE outcome IN ('ok', 'no_data')) AS answered FROM api_calls
         WHERE snapshot_id = '2026-11-30' GROUP BY ALL ORDER BY 1",
    );
    let providers: Vec<&str> = calls.iter().map(|r| r["provider"].as_str().unwrap()).collect();
    assert_eq!(providers, ["ashby", "builtwith", "greenhouse", "lever", "news", "similarweb", "yahoo_finance"]);
    for row in &calls {
        assert_eq!(row["n"], row["answered"], "{row:?}");
    }

    // The second night fetched only what was due (the daily modules: stock, hiring,
    // news) and carried the rest forward with its original fetched_at.
    let second = store.query(
        "SELECT DISTINCT string_split(modules, ',')[1] AS module FROM api_calls WHERE snapshot_id = '2026-12-01' ORDER BY 1",
    );
    let due: Vec<&str> = second.iter().map(|r| r["module"].as_str().unwrap()).collect();
    assert_eq!(
        due,
        ["m08", "m10", "m11"],
        "m08 shares its call with m07/m09 only when those are due; m12 reads m11's feed"
    );
    assert!(manifests[1].1["counts"]["carried_forward"].as_u64().unwrap() > 0);
    let moved = store.query(
        "SELECT count(*) FILTER (WHERE a.sw_monthly_visits IS NOT DISTINCT FROM b.sw_monthly_visits) AS same_traffic,
                count(*) FILTER (WHERE a.last_enriched < b.last_enriched) AS refreshed
         FROM targets_history a JOIN targets_history b USING (domain)
         WHERE a.snapshot_id = '2026-11-30' AND b.snapshot_id = '2026-12-01'",
    );
    assert_eq!(
        num(&moved[0]["same_traffic"]) as u64,
        manifests[1].1["counts"]["targets"].as_u64().unwrap(),
        "traffic is carried"
    );
    assert!(num(&moved[0]["refreshed"]) > 0.0, "the daily modules were fetched again");

    // Hiring signals: the counts per domain are the postings whose titles matched.
    let hiring = store.query(
        "SELECT count(*) AS boards,
                count(*) FILTER (WHERE search_roles != (SELECT count(*) FROM job_postings p
                                 WHERE p.domain = h.domain AND p.signals LIKE '%search%')) AS inconsistent,
                (SELECT count(*) FROM job_postings WHERE signals IS NOT NULL) AS signal_postings
         FROM hiring h",
    );
    assert!(num(&hiring[0]["boards"]) > 0.0 && num(&hiring[0]["signal_postings"]) > 0.0, "{hiring:?}");
    assert_eq!(num(&hiring[0]["inconsistent"]), 0.0);

    // News: every quote names a person (first and last name).
    let news = store.query("SELECT count(*) FILTER (WHERE name NOT LIKE '% %') AS unnamed FROM executive_quotes");
    assert_eq!(num(&news[0]["unnamed"]), 0.0, "{news:?}");

    // query is read-only.
    let refused = store.fails(&["query", "DROP VIEW targets"]);
    assert!(refused.contains("read-only"), "{refused}");
    let table = store.ok(&["query", "--file", "queries/top_targets.sql"]);
    assert!(table.lines().next().unwrap().starts_with("domain"), "{table}");

    // export writes what the dashboard reads.
    let site = store.path().join("site");
    let out = store.ok(&["export", "--out", site.to_str().unwrap()]);
    assert!(out.contains("snapshot 2026-12-01"), "{out}");
    // The published version: current.json points at it.
    let pointer: Value = serde_json::from_slice(&std::fs::read(site.join("current.json")).unwrap()).unwrap();
    let site = site.join("versions").join(pointer["version"].as_str().unwrap());
    let index: Value = serde_json::from_slice(&std::fs::read(site.join("targets-index.json")).unwrap()).unwrap();
    let mut list: Vec<Value> = Vec::new();
    for shard in index["shards"].as_array().unwrap() {
        let part: Vec<Value> =
            serde_json::from_slice(&std::fs::read(site.join(shard["file"].as_str().unwrap())).unwrap()).unwrap();
        list.extend(part);
    }
    assert_eq!(list.len(), rows.len());
    assert_eq!(index["rows"].as_u64(), Some(rows.len() as u64));
    let stats: Value = serde_json::from_slice(&std::fs::read(site.join("stats.json")).unwrap()).unwrap();
    let by_tier: f64 = stats["by_tier"].as_array().unwrap().iter().map(|t| num(&t["count"])).sum();
    assert_eq!(by_tier as usize, rows.len());
    let heatmap: Vec<Value> = serde_json::from_slice(&std::fs::read(site.join("heatmap.json")).unwrap()).unwrap();
    assert_eq!(heatmap.iter().map(|c| num(&c["count"])).sum::<f64>() as usize, rows.len());
    for row in &rows {
        let domain = row["domain"].as_str().unwrap();
        let detail: Value =
            serde_json::from_slice(&std::fs::read(site.join("targets").join(format!("{domain}.json"))).unwrap())
                .unwrap();
        assert_eq!(detail["target"]["domain"], domain);
        assert_eq!(detail["target"]["icp_score"], row["icp_score"]);
    }

    // The same date again is refused; --replace commits a new generation beside it.
    let again = store.fails(&["run", "--targets", &targets, "--date", "2026-12-01"]);
    assert!(again.contains("already has a snapshot for 2026-12-01") && again.contains("--replace"), "{again}");
    let again = store.ok(&["run", "--targets", &targets, "--date", "2026-12-01", "--replace"]);
    assert!(again.contains("calls           0 made, $0.00 spent"), "a second run of a date pays nothing: {again}");
    let manifests = store.manifests();
    assert_eq!(manifests.len(), 3, "the replaced manifest is kept as history");
    assert_eq!(manifests[2].1["generation"], 2);
    assert_eq!(
        manifests[2].1["counts"]["targets"], manifests[1].1["counts"]["targets"],
        "and still commits every target"
    );
    let per_night = store.query("SELECT count(DISTINCT snapshot_id) AS n FROM targets_history");
    assert_eq!(num(&per_night[0]["n"]), 2.0, "readers see each date once");
}

#[test]
fn bad_configuration_stops_before_any_call_naming_file_and_line() {
    let store = TestStore::new();
    let pipeline = store.path().join("pipelines").join("nightly.toml");
    std::fs::create_dir_all(pipeline.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(repo().join("pipelines/nightly.toml"))
        .unwrap()
        .replace("[fetch]\n", "[fetch]\nconcurency = 4\n");
    std::fs::write(&pipeline, text).unwrap();
    let err = store.fails(&["run", "--pipeline", pipeline.to_str().unwrap(), "--limit", "3"]);
    assert!(err.contains("nightly.toml") && err.contains("concurency") && err.contains("line"), "{err}");
    assert!(store.manifests().is_empty());
}

#[test]
fn a_missing_file_is_named_with_its_cause_once() {
    let store = TestStore::new();
    let missing = store.path().join("no-such-pipeline.toml");
    let err = store.fails(&["run", "--pipeline", missing.to_str().unwrap(), "--limit", "3"]);
    assert!(err.contains("no-such-pipeline.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "the cause once: {err}");
    assert!(store.manifests().is_empty());
}

#[test]
fn query_on_an_empty_store_says_what_to_do() {
    let store = TestStore::new();
    let err = store.fails(&["query", "SELECT 1"]);
    assert!(err.contains("no committed snapshot") && err.contains("partnerforge run"), "{err}");
}

#[test]
fn the_summary_reads_as_json_for_an_operators_script() {
    let store = TestStore::new();
    let (out, status) = store.ok_both(&["run", "--limit", "5", "--date", "2026-11-20", "--format", "json"]);
    let summary: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is only the JSON ({e}): {out}"));
    assert_eq!(summary["snapshot_id"], "2026-11-20");
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["generation"], 1);
    assert_eq!(summary["providers"], "simulated");
    assert!(summary["counts"]["calls"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["location"].as_str().unwrap().ends_with("snapshots/2026-11-20/0001/"), "{summary}");
    assert!(status.contains("providers: simulated"), "status lines stay on stderr: {status}");
}

#[test]
fn scoring_in_slices_and_parts_gives_the_same_targets_as_scoring_at_once() {
    let whole = TestStore::new();
    whole.ok(&["run", "--limit", "40", "--date", "2026-11-20"]);
    let sliced = TestStore::new();
    // Slices of 7 targets: the joins work on one range of domains at a time; the module
    // tables are split into parts of 15 targets' domains, each read alone.
    let pipeline =
        sliced.pipeline(|text| text.replace("[fetch]", "[run]\nscore_slice_rows = 7\nscore_part_rows = 15\n\n[fetch]"));
    let out = sliced.ok(&["run", "--pipeline", &pipeline, "--limit", "40", "--date", "2026-11-20"]);
    assert!(out.contains("snapshot 2026-11-20 committed"), "{out}");
    let folder = |s: &TestStore| s.path().join("store/snapshots/2026-11-20/0001/targets.parquet");
    // Fetch times differ between the two runs: the provenance is compared by source.
    let side = |p: std::path::PathBuf| {
        format!(
            "SELECT * EXCLUDE (last_enriched, provenance, conflicts), regexp_replace(provenance::VARCHAR, 'fetched_at'': [^,}}]*', '', 'g') AS sources \
             FROM read_parquet('{}')",
            p.display()
        )
    };
    let rows = whole.query(&format!(
        "SELECT (SELECT count(*) FROM ({a} EXCEPT ALL {b})) + (SELECT count(*) FROM ({b} EXCEPT ALL {a})) AS n,
                (SELECT count(*) FROM ({b})) AS rows",
        a = side(folder(&whole)),
        b = side(folder(&sliced))
    ));
    assert_eq!(rows[0]["n"], 0, "{rows:?}");
    assert!(rows[0]["rows"].as_u64().unwrap() > 30, "{rows:?}");
    // In domain order across slices, as scored at once.
    let order = sliced.query(&format!(
        "SELECT bool_and(domain > prev) AS sorted FROM (SELECT domain, lag(domain, 1, '') OVER () AS prev FROM read_parquet('{}'))",
        folder(&sliced).display()
    ));
    assert_eq!(order[0]["sorted"], true);
    let counts = |s: &TestStore| s.manifests()[0].1["counts"]["tiers"].clone();
    assert_eq!(counts(&whole), counts(&sliced));
}
