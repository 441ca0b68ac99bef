//! Real-provider mode: keys and base URLs come from the environment. Pointed at
//! a simulator that checks keys like the real APIs, a wrong key fails that
//! provider's calls (the run finishes `partial`, every failure in the ledger),
//! and the key appears in no output and no stored file.

mod support;

use partnerforge::simulate::{Keys, Simulator, SimulatorConfig};
use support::{TestStore, against, listing, pf_blocking, without_rate_limits};

const WRONG_KEY: &str = "WRONGKEY-7f3a9c";
const SW_KEY: &str = "sw-right-41d2";
const BW_KEY: &str = "bw-right-88e1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_makes_a_partial_run_and_never_leaks() {
    let date = "2026-11-20".parse().unwrap();
    let keys = Keys { builtwith: BW_KEY.into(), similarweb: SW_KEY.into() };
    let config = SimulatorConfig { seed: 42, as_of: date, keys, faults: Default::default(), request_log: None };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let base = sim.base_url();
    let with_env = |bw_key: &str| against(&base, bw_key, SW_KEY);
    // Real mode paces calls at the real rates: not what this test is about.
    let faster = without_rate_limits;
    let store = with_env(WRONG_KEY);
    let pipeline = store.pipeline(faster);
    let (store, out) =
        pf_blocking(store, &["run", "--pipeline", &pipeline, "--limit", "40", "--date", "2026-11-20"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "a partial run exits 3\n{}", store.explain(&["run"], &out));
    assert!(stderr.contains("providers: real"), "{stderr}");
    // 40 free pre-checks failed or not made, then 40 lookups and 40 relationship lookups.
    assert!(stdout.contains("partial") && stdout.contains("builtwith 120"), "{stdout}");

    let manifests = store.manifests();
    assert_eq!(manifests[0].1["status"], "partial");
    // BuiltWith answered 403 "Invalid API key": the calls in flight failed, the provider
    // stopped (no more calls with a refused key), and what depends on it was skipped.
    let outcomes = store.query(
        "SELECT provider, endpoint, outcome, http_status, count(*) AS n, sum(cost_usd) AS cost FROM api_calls GROUP BY ALL ORDER BY 1, 2, 3",
    );
    let summary: Vec<String> = outcomes
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["provider"].as_str().unwrap(),
                r["endpoint"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["http_status"],
                r["n"]
            )
        })
        .collect();
    let count = |provider: &str, outcome: &str| -> i64 {
        outcomes
            .iter()
            .filter(|r| r["provider"] == provider && r["outcome"] == outcome)
            .map(|r| r["n"].as_i64().unwrap())
            .sum()
    };
    // The free pre-check meets the refused key first: the checks in flight fail, the rest
    // and every paid lookup after them are not made.
    let (failed, stopped) = (count("builtwith", "failed"), count("builtwith", "skipped_auth"));
    assert_eq!(failed + stopped, 80, "the checks and the lookups: {summary:?}");
    assert!((1..=16).contains(&failed), "at most the calls in flight went out: {summary:?}");
    let lookups_not_made = outcomes
        .iter()
        .filter(|r| r["endpoint"] == "domain" && r["outcome"] == "skipped_auth")
        .map(|r| r["n"].as_i64().unwrap())
        .sum::<i64>();
    assert_eq!(lookups_not_made, 40, "{summary:?}");
    // Traffic, sources and competitors (6 calls a domain) need the company context…
    assert_eq!(count("similarweb", "skipped_dependency"), 240, "{summary:?}");
    // …but SimilarWeb's technologies stand in for BuiltWith's tech stack.
    assert_eq!(count("similarweb", "ok") + count("similarweb", "no_data"), 40, "{summary:?}");
    let fallback = store
        .query("SELECT count(*) AS n, count(DISTINCT source) AS sources, any_value(source) AS source FROM tech_spend");
    assert_eq!(
        (fallback[0]["sources"].as_i64(), fallback[0]["source"].as_str()),
        (Some(1), Some("similarweb")),
        "{fallback:?}"
    );
    assert!(fallback[0]["n"].as_i64().unwrap() > 30);
    let failed_cost: f64 = outcomes.iter().filter(|r| r["outcome"] != "ok").map(|r| r["cost"].as_f64().unwrap()).sum();
    assert_eq!(failed_cost, 0.0, "failed and skipped calls cost nothing: {outcomes:?}");
    let targets =
        store.query("SELECT count(*) AS n, count(*) FILTER (WHERE enrichment_level = 'none') AS empty FROM targets");
    assert_eq!(targets[0]["n"], 40, "a failed provider leaves modules empty, not targets missing");
    assert!(targets[0]["empty"].as_i64().unwrap() > 0);

    // The key is nowhere: not in the output, the ledger's errors, the raw bodies or any file.
    assert!(!stdout.contains(WRONG_KEY) && !stderr.contains(WRONG_KEY));
    let leaks = store.query(&format!(
        "SELECT (SELECT count(*) FROM api_calls WHERE error LIKE '%{WRONG_KEY}%' OR error LIKE '%{SW_KEY}%')
              + (SELECT count(*) FROM raw_responses WHERE body LIKE '%{WRONG_KEY}%' OR body LIKE '%{SW_KEY}%') AS n"
    ));
    assert_eq!(leaks[0]["n"], 0);
    for file in listing(&store.path().join("store")) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(WRONG_KEY) && !text.contains(SW_KEY), "{file} holds a key");
    }

    // The right keys, the next night: a complete run against the same endpoints.
    let fixed = with_env(BW_KEY);
    let pipeline = fixed.pipeline(faster);
    let run = move || fixed.ok(&["run", "--pipeline", &pipeline, "--limit", "40", "--date", "2026-11-21"]);
    let out = tokio::task::spawn_blocking(run).await.unwrap();
    assert!(out.contains("completed"), "{out}");
    sim.shutdown().await;
}

#[test]
fn real_mode_without_keys_stops_before_any_call() {
    let store = TestStore::new();
    let err = store.fails(&["run", "--providers", "real", "--limit", "3"]);
    assert!(err.contains("BUILTWITH_API_KEY"), "{err}");
    assert!(store.manifests().is_empty());
}

/// Recognizable keys, a provider that fails in every way: the keys appear in no
/// line of output, no stored file, and no value of any table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_leak_even_when_everything_fails() {
    // Keys as real accounts issue them: base64-ish, with the characters a query string encodes.
    const BW: &str = "LEAK+CHECK/BW=5c1e";
    const SW: &str = "LEAK/CHECK+SW==93ab";
    let mut faults = std::collections::BTreeMap::new();
    for provider in ["builtwith", "similarweb", "yahoo_finance"] {
        let mut f = partnerforge::config::FaultSettings::default();
        for (k, v) in [("error_rate", "0.2"), ("rate_429", "0.1"), ("malformed_rate", "0.1"), ("truncated_rate", "0.1")]
        {
            f.set(k, v).unwrap();
        }
        faults.insert(provider.to_string(), f);
    }
    let keys = Keys { builtwith: BW.into(), similarweb: SW.into() };
    let config = SimulatorConfig { seed: 7, as_of: "2026-11-20".parse().unwrap(), keys, faults, request_log: None };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let base = sim.base_url();
    let store = against(&base, BW, SW).env("RUST_LOG", "debug");
    let pipeline = store.pipeline(|t| {
        without_rate_limits(t)
            .replace("base_delay_ms = 1000", "base_delay_ms = 20")
            .replace("base_delay_ms = 2000", "base_delay_ms = 20")
    });
    let (store, texts) = tokio::task::spawn_blocking(move || {
        let run = store.pf(&["run", "--pipeline", &pipeline, "--limit", "30", "--date", "2026-11-20", "--log-json"]);
        assert_eq!(run.status.code(), Some(3), "partial\n{}", store.explain(&["run"], &run));
        let mut texts =
            vec![String::from_utf8_lossy(&run.stdout).to_string(), String::from_utf8_lossy(&run.stderr).to_string()];
        for table in ["api_calls", "raw_responses", "targets", "company", "tech_stack", "traffic", "financials"] {
            texts.push(store.ok(&["query", "--format", "json", &format!("SELECT * FROM {table}")]));
        }
        (store, texts)
    })
    .await
    .unwrap();
    assert!(texts[0].contains("partial"), "the faults should leave failures: {}", texts[0]);
    assert!(texts[2].contains("retried"), "the ledger should hold retries");
    let forms: Vec<String> = [BW, SW]
        .iter()
        .flat_map(|key| [key.to_string(), url::form_urlencoded::byte_serialize(key.as_bytes()).collect()])
        .collect();
    let leaked = |text: &str| forms.iter().find(|form| text.contains(form.as_str())).cloned();
    for text in &texts {
        assert_eq!(leaked(text), None, "a key leaked into: {}", &text[..text.len().min(300)]);
    }
    // Every stored file, Parquet decoded value by value (compression would hide a key from a byte scan).
    let files = listing(store.path());
    assert!(files.iter().any(|f| f.ends_with("raw_responses.parquet")), "{files:?}");
    for file in files {
        let text = if file.ends_with(".parquet") {
            parquet_values(&file)
        } else {
            String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_string()
        };
        assert_eq!(leaked(&text), None, "{file} holds a key");
    }
    sim.shutdown().await;
}

/// Every value of a Parquet file, as text, one column after another.
fn parquet_values(path: &str) -> String {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut out = String::new();
    for batch in reader {
        let batch = batch.unwrap();
        for column in batch.columns() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).unwrap();
            for i in 0..column.len() {
                out.push_str(&formatter.value(i).to_string());
                out.push('\n');
            }
        }
    }
    out
}

/// The keys and URLs in a `.env` file are used; a variable the environment sets wins
/// over the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotenv_file_is_read_and_the_environment_wins() {
    let keys = Keys { builtwith: BW_KEY.into(), similarweb: SW_KEY.into() };
    let config = SimulatorConfig {
        seed: 42,
        as_of: "2026-11-20".parse().unwrap(),
        keys,
        faults: Default::default(),
        request_log: None,
    };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let base = sim.base_url();
    let store = TestStore::new().env("SIMILARWEB_API_KEY", WRONG_KEY);
    let mut file = format!(
        "# written by hand\nexport BUILTWITH_API_KEY={BW_KEY}\nSIMILARWEB_API_KEY=\"{SW_KEY}\"\nYAHOO_COOKIE_URL='{base}/fc'\n"
    );
    for provider in partnerforge::config::ProviderId::ALL {
        file.push_str(&format!("{}={base}  # the simulator\n", provider.base_url_env()));
    }
    std::fs::write(store.path().join(".env"), file).unwrap();
    let pipeline = store.pipeline(without_rate_limits);
    let (store, out) =
        pf_blocking(store, &["run", "--pipeline", &pipeline, "--limit", "20", "--date", "2026-11-20"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "SimilarWeb's key from the environment is wrong\n{stderr}");
    assert!(stderr.contains("providers: real"), "the keys in .env make the run real: {stderr}");
    let by = |provider: &str, outcome: &str| -> i64 {
        store.query(&format!(
            "SELECT count(DISTINCT domain) AS n FROM api_calls WHERE provider = '{provider}' AND outcome = '{outcome}'"
        ))[0]["n"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(by("builtwith", "ok"), 20, "BuiltWith's key and URL came from .env");
    assert_eq!(by("similarweb", "ok"), 0, "the environment's (wrong) SimilarWeb key won over .env's");
    assert!(by("similarweb", "skipped_auth") > 0);
    assert!(by("yahoo_finance", "ok") > 0, "Yahoo's session cookie URL came from .env");
    sim.shutdown().await;
}

#[test]
fn a_bad_dotenv_line_is_named_and_nothing_runs() {
    let store = TestStore::new();
    std::fs::write(store.path().join(".env"), "BUILTWITH_API_KEY=abc\nSIMILARWEB_API_KEY xyz\n").unwrap();
    let err = store.fails(&["run", "--limit", "3"]);
    assert!(err.contains(".env, line 2: expected KEY=VALUE"), "{err}");
    assert!(store.manifests().is_empty());
}
