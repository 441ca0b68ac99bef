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

fn manifest_of(store: &TestStore, date: &str, generation: u64) -> serde_json::Value {
    store
        .manifests()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m["date"] == date && m["generation"] == generation)
        .unwrap_or_else(|| panic!("no manifest for {date} generation {generation}"))
}

/// Rows of one targets file that the other lacks (as a multiset), both ways.
fn rows_apart(store: &TestStore, a: &std::path::Path, b: &std::path::Path) -> u64 {
    let count = |x: &std::path::Path, y: &std::path::Path| {
        let rows = store.query(&format!(
            "SELECT count(*) AS n FROM (SELECT * FROM read_parquet('{}') EXCEPT ALL SELECT * FROM read_parquet('{}'))",
            x.display(),
            y.display()
        ));
        rows[0]["n"].as_u64().unwrap()
    };
    count(a, b) + count(b, a)
}

#[test]
fn a_night_carries_unchanged_targets_rows_and_equals_a_full_recompute() {
    let store = TestStore::new();
    // Conflicts in both nights: their weights age with the date, so those rows are computed
    // again each night, never carried. The nights are dated weeks after the fetches are made,
    // so the claims are weeks old and a day changes their weights.
    let day = |d: u64| (chrono::Utc::now().date_naive() + chrono::Days::new(d)).to_string();
    let (d1, d2, d3) = (day(40), day(41), day(42));
    // Slices of 7 rows: the rows to compute of several slices are scored together and
    // merged back into each slice's carried rows; the module tables are read in parts of
    // 30 targets' domains.
    let sliced =
        store.pipeline(|t| t.replace("[fetch]", "[run]\nscore_slice_rows = 7\nscore_part_rows = 30\n\n[fetch]"));
    let night = |date: &str| {
        store.ok_both(&[
            "run",
            "--limit",
            "150",
            "--date",
            date,
            "--fault",
            "builtwith.conflict_rate=0.1",
            "--pipeline",
            &sliced,
        ])
    };
    night(&d1);
    let first = manifest_of(&store, &d1, 1);
    assert_eq!(first["counts"]["targets_reused"], 0, "nothing to carry on a store's first night");
    let (_, log) = night(&d2);
    // Every row whose inputs are unchanged is carried: none is computed again because its
    // stored form differs from the computed one (nested timestamps' zones once did).
    assert!(!log.contains("cannot be carried forward"), "{log}");
    let second = manifest_of(&store, &d2, 1);
    let (targets, reused) =
        (second["counts"]["targets"].as_u64().unwrap(), second["counts"]["targets_reused"].as_u64().unwrap());
    // Hiring and news are read every night for the domains that have them: those rows are
    // computed again, the rest carried.
    assert!(reused > targets / 4 && reused < targets, "{reused} of {targets} rows carried");
    let inputs = store.query(&format!(
        "SELECT count(*) AS n, count(DISTINCT input_hash) AS hashes, count(*) FILTER (dated) AS dated
         FROM read_parquet('{}/store/snapshots/{d2}/0001/target_inputs.parquet')",
        store.path().display()
    ));
    assert_eq!(inputs[0]["n"].as_u64(), Some(targets), "one input hash per target");
    assert!(inputs[0]["dated"].as_u64().unwrap() > 0, "the injected conflicts are dated: {inputs:?}");

    // The full path: every row computed from the stored raw bodies.
    let out = store.ok(&["rebuild", "--store", &store.store(), "--snapshot", &d2]);
    assert!(out.contains("as generation 2"), "{out}");
    assert_eq!(manifest_of(&store, &d2, 2)["counts"]["targets_reused"], 0);
    let folder = store.path().join("store/snapshots").join(&d2);
    let (incremental, full) = (folder.join("0001/targets.parquet"), folder.join("0002/targets.parquet"));
    assert_eq!(rows_apart(&store, &incremental, &full), 0, "the incremental night equals the full recompute");
    // The comparison can fail: the first night's rows differ from the second's.
    let previous = store.path().join("store/snapshots").join(&d1).join("0001/targets.parquet");
    assert!(rows_apart(&store, &previous, &full) > 0);

    // A new scoring model: no row is carried, whatever its inputs.
    let model = store.path().join("icp-v2.toml");
    let text = std::fs::read_to_string(support::repo().join("pipelines/scoring/icp.toml"))
        .unwrap()
        .replace("version = 1", "version = 2")
        .replace("\"Commerce\" = 40", "\"Commerce\" = 20");
    std::fs::write(&model, text).unwrap();
    let pipeline = store.pipeline(|t| {
        let root = support::repo().display().to_string();
        t.replace(&format!("\"{root}/pipelines/scoring/icp.toml\""), &format!("{:?}", model.display().to_string()))
    });
    store.ok(&["run", "--limit", "150", "--date", &d3, "--pipeline", &pipeline]);
    assert_eq!(manifest_of(&store, &d3, 1)["counts"]["targets_reused"], 0);
    let commerce = store.query(&format!(
        "SELECT DISTINCT score_breakdown.vertical AS points FROM targets WHERE snapshot_id = '{d3}' AND vertical = 'Commerce'"
    ));
    assert_eq!(commerce.len(), 1, "{commerce:?}");
    assert_eq!(commerce[0]["points"], 20);
}

/// `partnerforge query` of `sql` written to a Parquet file at `out`.
fn query_to_file(store: &TestStore, sql: &str, out: &std::path::Path) {
    store.ok(&["query", "--store", &store.store(), "--format", "parquet", "--out", out.to_str().unwrap(), sql]);
}

#[test]
fn a_night_stored_by_reference_reads_as_the_whole_table_and_keeps_its_base() {
    let store = TestStore::new();
    // Every night that can carry rows stores them by reference (by default a book of
    // 100,000 rows and more), until its own rows pass 90 % of the table.
    let by_reference = |share: &str| {
        store.pipeline(|t| {
            t.replace(
                "[fetch]",
                &format!(
                    "[run]\nscore_slice_rows = 7\nscore_part_rows = 30\ntargets_by_reference_rows = 0\n\
                     targets_rewrite_share = {share}\n\n[fetch]"
                ),
            )
        })
    };
    let pipeline = by_reference("0.9");
    let night =
        |date: &str, pipeline: &str| store.ok_both(&["run", "--limit", "120", "--date", date, "--pipeline", pipeline]);
    night("2026-11-20", &pipeline);
    let (_, log) = night("2026-11-21", &pipeline);
    assert!(log.contains("of them by reference"), "{log}");
    let base = "snapshots/2026-11-20/0001/targets.parquet";
    let targets_entry = |date: &str| {
        let m = manifest_of(&store, date, 1);
        let entry = m["files"].as_array().unwrap().iter().find(|f| f["table"] == "targets").unwrap().clone();
        (entry, m["counts"].clone())
    };
    let (second, counts) = targets_entry("2026-11-21");
    assert_eq!(second["base"], base, "{second}");
    let (own, rows) = (second["rows"].as_u64().unwrap(), counts["targets"].as_u64().unwrap());
    assert!(own > 0 && own < rows, "{own} of {rows} rows stored with the night");
    let tiers: u64 = counts["tiers"].as_array().unwrap().iter().map(|t| t["targets"].as_u64().unwrap()).sum();
    assert_eq!(tiers, rows, "every row counted in a tier, the base's too: {counts}");

    // A third night keeps the same base: the rows it stores are every row changed since.
    night("2026-11-22", &pipeline);
    let (third, counts) = targets_entry("2026-11-22");
    assert_eq!(third["base"], base, "{third}");
    let rows = counts["targets"].as_u64().unwrap();
    // What `query` reads of it — the lists' native copy and the history — is the whole table.
    let dir = tempfile::tempdir().unwrap();
    let (latest, history) = (dir.path().join("latest.parquet"), dir.path().join("history.parquet"));
    query_to_file(&store, "SELECT * EXCLUDE (listed) FROM targets", &latest);
    query_to_file(
        &store,
        "SELECT * EXCLUDE (account_domain) FROM targets_history WHERE snapshot_id = '2026-11-22'",
        &history,
    );
    let history_rows = store.query("SELECT snapshot_id, count(*) AS n FROM targets_history GROUP BY 1 ORDER BY 1");
    assert_eq!(history_rows.len(), 3, "{history_rows:?}");
    assert_eq!(history_rows[2]["n"].as_u64(), Some(rows), "{history_rows:?}");
    // Equal to the same night computed whole from its raw bodies.
    store.ok(&["rebuild", "--store", &store.store(), "--snapshot", "2026-11-22"]);
    let rebuilt = store.path().join("store/snapshots/2026-11-22/0002/targets.parquet");
    assert_eq!(rows_apart(&store, &latest, &rebuilt), 0, "the table stored by reference equals the rebuilt one");
    assert_eq!(rows_apart(&store, &history, &rebuilt), 0, "its history rows equal the rebuilt ones");
    // The comparison can fail: the base's rows are another night's.
    assert!(rows_apart(&store, &store.path().join("store").join(base), &rebuilt) > 0);

    // A night whose own rows pass the share writes the whole table, the next nights' base.
    let (_, log) = night("2026-11-23", &by_reference("0.0"));
    assert!(log.contains("the table is written whole"), "{log}");
    assert!(!log.contains("of them by reference"), "nothing stays by reference: {log}");
    let (fourth, counts) = targets_entry("2026-11-23");
    assert!(fourth.get("base").is_none(), "{fourth}");
    assert_eq!(fourth["rows"], counts["targets"]);
    let tiers: u64 = counts["tiers"].as_array().unwrap().iter().map(|t| t["targets"].as_u64().unwrap()).sum();
    assert_eq!(Some(tiers), counts["targets"].as_u64(), "the rows taken from the base counted too: {counts}");
    // A share that is not one is refused before any call.
    let err = store.fails(&["run", "--limit", "120", "--date", "2026-11-24", "--pipeline", &by_reference("1.5")]);
    assert!(err.contains("run.targets_rewrite_share") && err.contains("from 0 to 1"), "{err}");

    // gc keeps the date a kept night's targets refer to: keeping two dates keeps 2026-11-22
    // (stored by reference to 2026-11-20) and 2026-11-20 with it; keeping one keeps the
    // whole 2026-11-23 alone.
    let dry = store.ok(&["gc", "--store", &store.store(), "--keep-daily", "2", "--keep-monthly", "0", "--dry-run"]);
    assert!(dry.contains("would remove snapshot 2026-11-21"), "{dry}");
    assert!(!dry.contains("would remove snapshot 2026-11-20"), "the base of a kept night stays: {dry}");
    let dry = store.ok(&["gc", "--store", &store.store(), "--keep-daily", "1", "--keep-monthly", "0", "--dry-run"]);
    assert!(dry.contains("would remove snapshot 2026-11-20"), "{dry}");
}

/// The numbers of "targets: X of Y rows joined" in a run's log.
fn rows_joined(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("rows joined and hashed"))?;
    let text = &line[line.find("targets: ")? + "targets: ".len()..];
    let mut words = text.split_whitespace();
    let joined = words.next()?.parse().ok()?;
    let book = words.nth(1)?.parse().ok()?;
    Some((joined, book))
}

#[test]
fn a_night_joins_only_the_rows_the_fetch_touched_and_equals_a_full_recompute() {
    let store = TestStore::new();
    // The daily modules weekly: a night after the first fetches only what is forced, and
    // the rows of every other domain are carried without being joined. Stored by reference
    // (to the first night, whole), in slices of 7 and parts of 30 joined rows.
    let pipeline = store.pipeline(|t| {
        ["m08", "m10", "m11", "m12"]
            .iter()
            .fold(t, |t, m| t.replace(&format!("{m} = 1 "), &format!("{m} = 7 ")))
            .replace(
                "[fetch]",
                "[run]\nscore_slice_rows = 7\nscore_part_rows = 30\ntargets_by_reference_rows = 0\n\
                 targets_rewrite_share = 0.5\n\n[fetch]",
            )
    });
    let night = |date: &str, more: &[&str]| {
        let mut args = vec!["run", "--limit", "120", "--date", date, "--pipeline", &pipeline];
        args.extend(more);
        store.ok_both(&args).1
    };
    let log = night("2026-11-20", &[]);
    assert_eq!(rows_joined(&log), None, "nothing stored to skip on the first night: {log}");
    // The financials fetched again for the public companies: their rows are joined (and,
    // with a new fetch time, computed again); the rest are carried as stored.
    let log = night("2026-11-21", &["--force", "m07"]);
    let (joined, book) = rows_joined(&log).unwrap_or_else(|| panic!("no rows skipped: {log}"));
    assert!(joined > 0 && joined < book / 2, "{joined} of {book} rows joined");
    let counts = manifest_of(&store, "2026-11-21", 1)["counts"].clone();
    let reused = counts["targets_reused"].as_u64().unwrap();
    assert!(reused >= book - joined && reused < counts["targets"].as_u64().unwrap(), "{counts}");
    // Nothing due: only the rows whose inputs move with the date are joined.
    let log = night("2026-11-22", &[]);
    let (joined_third, _) = rows_joined(&log).unwrap_or_else(|| panic!("no rows skipped: {log}"));
    assert!(joined_third < joined, "{joined_third} rows joined on a night that fetched nothing");

    // Again, from a night stored by reference: its own rows are copied, the base's named.
    let log = night("2026-11-23", &["--force", "m07"]);
    assert!(rows_joined(&log).is_some_and(|(j, b)| j > 0 && j < b / 2), "{log}");
    assert!(log.contains("of them by reference"), "{log}");

    // What `query` reads of the nights equals the same nights computed whole from their raw bodies.
    let dir = tempfile::tempdir().unwrap();
    let latest = dir.path().join("latest.parquet");
    query_to_file(&store, "SELECT * EXCLUDE (listed) FROM targets", &latest);
    let mut nights = vec![("2026-11-23".to_string(), latest)];
    for date in ["2026-11-22", "2026-11-21"] {
        let file = dir.path().join(format!("{date}.parquet"));
        query_to_file(
            &store,
            &format!("SELECT * EXCLUDE (account_domain) FROM targets_history WHERE snapshot_id = '{date}'"),
            &file,
        );
        nights.push((date.to_string(), file));
    }
    for (date, file) in &nights {
        store.ok(&["rebuild", "--store", &store.store(), "--snapshot", date]);
        let rebuilt = store.path().join(format!("store/snapshots/{date}/0002/targets.parquet"));
        assert_eq!(rows_apart(&store, file, &rebuilt), 0, "{date}: the night equals its full recompute");
    }
}
