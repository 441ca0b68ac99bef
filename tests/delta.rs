//! Every committed table is also a Delta Lake table (`delta/<table>/`): read back with
//! the `deltalake` package from PyPI (no PartnerForge code), it equals what `query`
//! answers — each date once, at its current generation — and never holds the folder of
//! a run that did not commit. (The same check on the S3 test server is in `tests/s3.rs`.)

mod support;

use support::{TestStore, read_with_deltalake};

#[test]
fn committed_tables_read_back_from_delta_equal_to_query() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "30", "--date", "2026-11-20"]);
    store.ok(&["run", "--limit", "30", "--date", "2026-11-21"]);
    store.ok(&["run", "--limit", "30", "--date", "2026-11-21", "--replace"]);
    // The folder of a run that never committed: files, no manifest.
    let root = store.path().join("store");
    let orphan = root.join("snapshots/2026-11-22/0001");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::copy(root.join("snapshots/2026-11-21/0002/targets.parquet"), orphan.join("targets.parquet")).unwrap();
    store.ok(&["run", "--limit", "30", "--date", "2026-11-19"]);

    let report = read_with_deltalake(&store, &store.store(), &[]);
    assert_eq!(report["ok"], true, "{report}");
    let targets = &report["tables"]["targets"];
    // Three committed dates, each once; a date's replaced generation and the orphan left out.
    let history = &store.query("SELECT count(DISTINCT snapshot_id) AS d, count(*) AS n FROM targets_history")[0];
    assert_eq!(history["d"], 3, "{history:?}");
    assert_eq!(targets["rows"], history["n"], "{report}");
    // One version per commit: two dates, the replacement, the back-filled date.
    assert_eq!(targets["version"], 3, "{report}");
    assert_eq!(report["targets_version_0_dates"], serde_json::json!(["2026-11-20"]), "{report}");
    // The replacement's calls were paid: api_calls keeps both generations of 2026-11-21.
    assert!(report["tables"]["api_calls"]["rows"].as_u64().unwrap() > 0, "{report}");

    let log = root.join("delta/targets/_delta_log");
    let versions = std::fs::read_dir(&log).unwrap().count();
    let replaced = std::fs::read_to_string(log.join("00000000000000000002.json")).unwrap();
    assert!(
        replaced.contains("\"remove\"")
            && replaced.contains("snapshot_date=2026-11-21/snapshot_id=2026-11-21/g0001.parquet"),
        "{replaced}"
    );
    assert!(
        !std::fs::read_dir(&log)
            .unwrap()
            .any(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().contains("2026-11-22"))
    );
    // Nothing new committed, nothing new published.
    store.fails(&["run", "--limit", "30", "--date", "2026-11-21"]);
    assert_eq!(std::fs::read_dir(&log).unwrap().count(), versions);

    // Until a table needs deletion vectors it declares none: every reader reads it.
    assert_eq!(report["tables"]["targets"]["deletion_vectors"], false, "{report}");

    // A night whose targets are stored by reference to an earlier night's table is
    // published without writing its rows again: its own file, and the base's file linked
    // beside it with a deletion vector of the base's rows the night does not hold. Delta
    // readers see the same rows as `query`.
    let by_reference = store.pipeline(|t| {
        t.replace("[fetch]", "[run]\ntargets_by_reference_rows = 0\ntargets_rewrite_share = 1.0\n\n[fetch]")
    });
    store.ok(&["run", "--limit", "30", "--date", "2026-11-23", "--pipeline", &by_reference]);
    let manifest = store.manifests().into_iter().map(|(_, m)| m).find(|m| m["date"] == "2026-11-23").unwrap();
    let entry = manifest["files"].as_array().unwrap().iter().find(|f| f["table"] == "targets").unwrap().clone();
    let base = entry["base"].as_str().unwrap_or_default().to_string();
    assert!(base.starts_with("snapshots/2026-11-21/"), "{entry}");
    let report = read_with_deltalake(&store, &store.store(), &[]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["tables"]["targets"]["deletion_vectors"], true, "{report}");
    assert_eq!(report["tables"]["targets"]["polars_equal"], true, "{report}");
    let history = &store.query("SELECT count(*) AS n FROM targets_history")[0];
    assert_eq!(report["tables"]["targets"]["rows"], history["n"], "{report}");

    let folder = root.join("delta/targets/snapshot_date=2026-11-23/snapshot_id=2026-11-23");
    let count = |file: &std::path::Path| {
        store.query(&format!("SELECT count(*) AS n FROM read_parquet('{}')", file.display()))[0]["n"].as_u64().unwrap()
    };
    let own = count(&folder.join("g0001.parquet"));
    let base_rows = count(&folder.join("g0001-base.parquet"));
    assert_eq!(own, entry["rows"].as_u64().unwrap());
    assert_eq!(base_rows, count(&root.join(&base)));
    let targets = manifest["counts"]["targets"].as_u64().unwrap();
    assert!(own < targets, "own {own} of {targets}: nothing was carried by reference");
    let last = std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let actions: Vec<serde_json::Value> =
        std::fs::read_to_string(&last).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let protocol = actions.iter().find_map(|a| a.get("protocol")).expect("the version declares deletion vectors");
    assert_eq!(protocol["readerFeatures"], serde_json::json!(["deletionVectors"]), "{protocol}");
    let link = actions
        .iter()
        .filter_map(|a| a.get("add"))
        .find(|a| a["path"].as_str().unwrap().ends_with("g0001-base.parquet"))
        .expect("the base's link is added");
    // The deletion vector leaves out exactly the base's rows the night's table does not hold.
    assert_eq!(link["deletionVector"]["cardinality"].as_u64().unwrap(), base_rows + own - targets, "{link}");
    assert_eq!(link["partitionValues"]["snapshot_id"], "2026-11-23", "{link}");
    assert_eq!(link["stats"], serde_json::json!(serde_json::json!({"numRecords": base_rows}).to_string()));

    // The night replaced: both of its files go, the base's with its deletion vector (the
    // action names the file and the vector), and the new generation comes in their place.
    store.ok(&["run", "--limit", "30", "--date", "2026-11-23", "--replace", "--pipeline", &by_reference]);
    let report = read_with_deltalake(&store, &store.store(), &[]);
    assert_eq!(report["ok"], true, "{report}");
    let history = &store.query("SELECT count(*) AS n FROM targets_history")[0];
    assert_eq!(report["tables"]["targets"]["rows"], history["n"], "{report}");
    let last = std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let actions: Vec<serde_json::Value> =
        std::fs::read_to_string(&last).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let removed: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("remove")).collect();
    assert_eq!(removed.len(), 2, "{actions:?}");
    let base_removed = removed.iter().find(|r| r["path"] == link["path"]).expect("the base's link removed");
    assert_eq!(base_removed["deletionVector"], link["deletionVector"], "{base_removed}");
}

/// A targets table published before `snapshot_id` was one of its partition columns (its
/// files in `snapshot_date=<d>/`) is laid out again in one version: every file removed
/// and added in its new folder; readers see the same rows.
#[test]
fn a_targets_table_of_the_date_alone_is_laid_out_again_in_one_version() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "20", "--date", "2026-11-20"]);
    let table = store.path().join("store/delta/targets");
    let first = table.join("_delta_log/00000000000000000000.json");
    // The log as a publish of the date alone wrote it.
    let old_path = |path: &str| path.replace("/snapshot_id=2026-11-20/", "/");
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(&first).unwrap().lines() {
        let mut action: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(meta) = action.get_mut("metaData") {
            meta["partitionColumns"] = serde_json::json!(["snapshot_date"]);
        }
        if let Some(add) = action.get_mut("add") {
            let path = add["path"].as_str().unwrap().to_string();
            std::fs::rename(table.join(&path), table.join(old_path(&path))).unwrap();
            add["path"] = old_path(&path).into();
            add["partitionValues"].as_object_mut().unwrap().remove("snapshot_id");
            add.as_object_mut().unwrap().remove("stats");
        }
        if let Some(state) = action.pointer_mut("/commitInfo/partnerforge") {
            let state = state.as_object_mut().unwrap();
            state.remove("partitions");
            state.remove("deletion_vectors");
            state.remove("created_time");
            let files = state.remove("data_files").expect("the state's files");
            state.insert("files".into(), files);
            for file in state["files"].as_object_mut().unwrap().values_mut() {
                file["path"] = old_path(file["path"].as_str().unwrap()).into();
                file.as_object_mut().unwrap().remove("snapshot_id");
                file.as_object_mut().unwrap().remove("rows");
            }
        }
        lines.push(action.to_string());
    }
    std::fs::write(&first, lines.join("\n") + "\n").unwrap();
    assert!(table.join("snapshot_date=2026-11-20/g0001.parquet").exists());

    store.ok(&["run", "--limit", "20", "--date", "2026-11-21"]);
    let second = std::fs::read_to_string(table.join("_delta_log/00000000000000000001.json")).unwrap();
    let actions: Vec<serde_json::Value> = second.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let paths = |kind: &str| -> Vec<String> {
        actions.iter().filter_map(|a| a.get(kind)).map(|a| a["path"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(paths("remove"), ["snapshot_date=2026-11-20/g0001.parquet"], "{second}");
    assert_eq!(
        paths("add"),
        [
            "snapshot_date=2026-11-20/snapshot_id=2026-11-20/g0001.parquet",
            "snapshot_date=2026-11-21/snapshot_id=2026-11-21/g0001.parquet"
        ],
        "{second}"
    );
    let meta = actions.iter().find_map(|a| a.get("metaData")).expect("the new layout's metadata");
    assert_eq!(meta["partitionColumns"], serde_json::json!(["snapshot_date", "snapshot_id"]));
    // The first date's rows moved, not changed; the second date's are new.
    let changed = |kind: &str| -> Vec<bool> {
        actions.iter().filter_map(|a| a.get(kind)).map(|a| a["dataChange"].as_bool().unwrap()).collect()
    };
    assert_eq!(changed("remove"), [false]);
    assert_eq!(changed("add"), [false, true]);
    let info = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert_eq!(info["operation"], "REPLACE PARTITIONING", "{info}");
    let report = read_with_deltalake(&store, &store.store(), &[]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["targets_version_0_dates"], serde_json::json!(["2026-11-20"]), "{report}");
}
