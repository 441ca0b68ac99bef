//! `partnerforge rebuild`: a snapshot recomputed from its stored raw bodies —
//! the same rows with the same model, new scores with a new model — without a
//! single provider call, committed as the date's next generation.

mod support;

use support::{TestStore, repo};

#[test]
fn a_new_model_reaches_history_without_a_call() {
    let store = TestStore::new();
    store.ok(&["run", "--limit", "40", "--date", "2026-11-20"]);

    // The same model: the same targets.
    let out = store.ok(&["rebuild", "--store", &store.store(), "--snapshot", "2026-11-20"]);
    assert!(out.contains("as generation 2") && out.contains("no call made"), "{out}");
    let folder = store.path().join("store/snapshots/2026-11-20");
    let same = store.query(&format!(
        "SELECT count(*) AS n FROM (SELECT * EXCLUDE (last_enriched) FROM read_parquet('{0}/0001/targets.parquet')
                                   EXCEPT ALL SELECT * EXCLUDE (last_enriched) FROM read_parquet('{0}/0002/targets.parquet'))",
        folder.display()
    ));
    assert_eq!(same[0]["n"], 0, "a rebuild with the same model changes nothing");

    // A new model version: Commerce is worth 20 now.
    let model = store.path().join("icp-v2.toml");
    let text = std::fs::read_to_string(repo().join("pipelines/scoring/icp.toml"))
        .unwrap()
        .replace("version = 1", "version = 2")
        .replace("\"Commerce\" = 40", "\"Commerce\" = 20");
    std::fs::write(&model, text).unwrap();
    let pipeline = store.pipeline(|t| {
        let root = repo().display().to_string();
        t.replace(&format!("\"{root}/pipelines/scoring/icp.toml\""), &format!("{:?}", model.display().to_string()))
    });
    let out = store.ok(&["rebuild", "--store", &store.store(), "--snapshot", "2026-11-20", "--pipeline", &pipeline]);
    assert!(out.contains("as generation 3") && out.contains("icp v2"), "{out}");

    let rows = store
        .query("SELECT vertical, score_breakdown.vertical AS points FROM targets WHERE vertical = 'Commerce' LIMIT 1");
    assert_eq!(rows[0]["points"], 20, "{rows:?}");
    let manifests = store.manifests();
    let latest = &manifests.last().unwrap().1;
    assert_eq!((latest["scoring_model"]["version"].as_u64(), latest["rebuilt_from"].as_u64()), (Some(2), Some(2)));
    // No call: the ledger is the original run's, nothing was added.
    let calls = store.query("SELECT count(DISTINCT run_id) AS runs FROM api_calls");
    assert_eq!(calls[0]["runs"], 1);
}
