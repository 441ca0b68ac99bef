//! Yahoo Finance's session, as the live service wants it: a cookie from fc.yahoo.com
//! (the simulator's `/fc`), a crumb for that cookie, both with every quoteSummary and a
//! browser's User-Agent. The simulator refuses anything less; the run makes the session
//! once, renews it once when a crumb goes stale, and stops Yahoo when it is refused again.

mod support;

use partnerforge::simulate::{Keys, Simulator, SimulatorConfig, YAHOO_COOKIE_PATH, YAHOO_CRUMB_PATH};
use support::{TestStore, against, pf_blocking, without_rate_limits};

const BROWSER: &str = partnerforge::providers::yahoo::BROWSER_USER_AGENT;

async fn simulator(faults: &[(&str, &str)]) -> Simulator {
    let mut settings = std::collections::BTreeMap::new();
    let mut yahoo = partnerforge::config::FaultSettings::default();
    for (key, value) in faults {
        yahoo.set(key, value).unwrap();
    }
    settings.insert("yahoo_finance".to_string(), yahoo);
    let keys = Keys { builtwith: "bw-key".into(), similarweb: "sw-key".into() };
    let config =
        SimulatorConfig { seed: 42, as_of: "2026-11-20".parse().unwrap(), keys, faults: settings, request_log: None };
    Simulator::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap()
}

#[tokio::test]
async fn the_simulator_answers_only_a_full_session() {
    let sim = simulator(&[]).await;
    let base = sim.base_url();
    let browser = reqwest::Client::builder().user_agent(BROWSER).build().unwrap();
    let library = reqwest::Client::builder().user_agent("python-requests/2.32").build().unwrap();
    let quote = |crumb: &str| format!("{base}/v10/finance/quoteSummary/MSFT?modules=price&crumb={crumb}");
    let description = |body: &str| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["finance"]["error"]["description"].as_str().unwrap_or("").to_string()
    };

    // A library's agent is turned away; no session is a 401 under "finance".
    assert_eq!(library.get(quote("x")).send().await.unwrap().status(), 429);
    let bare = browser.get(quote("x")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(description(&bare.text().await.unwrap()), "Invalid Crumb");

    // The cookie: a 404 that sets A3. Without it, no crumb.
    let cookie_page = browser.get(format!("{base}{YAHOO_COOKIE_PATH}")).send().await.unwrap();
    assert_eq!(cookie_page.status(), 404);
    let set = cookie_page.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("A3="), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(browser.get(format!("{base}{YAHOO_CRUMB_PATH}")).send().await.unwrap().status(), 401);
    let crumb = browser
        .get(format!("{base}{YAHOO_CRUMB_PATH}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    partnerforge::fetch::session::valid_crumb(&crumb).unwrap();

    // Cookie and crumb together pass; either alone, or another session's crumb, does not.
    let with = |url: String, cookie: &str| browser.get(url).header("cookie", cookie.to_string()).send();
    let ok = with(quote(&crumb), &cookie).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("\"quoteSummary\""));
    assert_eq!(browser.get(quote(&crumb)).send().await.unwrap().status(), 401, "a crumb without its cookie");
    assert_eq!(with(quote("AbCdEfGhIjK"), &cookie).await.unwrap().status(), 401, "a cookie with a made-up crumb");
    let other = browser.get(format!("{base}{YAHOO_COOKIE_PATH}")).send().await.unwrap();
    let other_cookie = other.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert_ne!(other_cookie, cookie);
    assert_eq!(with(quote(&crumb), &other_cookie).await.unwrap().status(), 401, "another session's crumb");
    sim.shutdown().await;
}

/// Counts of Yahoo's ledger rows by endpoint and outcome, e.g. `quote_summary ok` → 12.
fn yahoo_ledger(store: &TestStore) -> std::collections::BTreeMap<String, i64> {
    store
        .query(
            "SELECT endpoint || ' ' || outcome || coalesce(' ' || http_status, '') AS k, count(*) AS n,
                    sum(cost_usd) AS cost
             FROM api_calls WHERE provider = 'yahoo_finance' GROUP BY ALL ORDER BY 1",
        )
        .into_iter()
        .map(|r| {
            if r["k"].as_str().unwrap().starts_with("session_") {
                assert_eq!(r["cost"].as_f64(), Some(0.0), "a session request is never billed: {r:?}");
            }
            (r["k"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap())
        })
        .collect()
}

#[test]
fn a_stale_crumb_is_renewed_once_and_the_call_goes_again() {
    let store = TestStore::new();
    // A crumb goes stale after 20 answers: more than the calls under way at once (16), as
    // a live crumb goes stale with time, long after the calls made with it were answered.
    let out =
        store.ok(&["run", "--limit", "400", "--date", "2026-11-20", "--fault", "yahoo_finance.stale_crumb_after=20"]);
    assert!(out.contains("completed"), "{out}");
    let ledger = yahoo_ledger(&store);
    let get = |k: &str| ledger.get(k).copied().unwrap_or(0);
    let answered = get("quote_summary ok 200") + get("quote_summary no_data 404");
    assert!(answered >= 40, "enough tickers for several stale crumbs: {ledger:?}");
    let refused = get("quote_summary retried 401");
    let sessions = get("session_crumb ok 200");
    assert!(refused >= 1 && sessions >= 2, "stale crumbs were refused and renewed: {ledger:?}");
    // Each stale crumb costs one new session, whichever calls were in flight with it.
    assert!(sessions <= 1 + refused, "{ledger:?}");
    assert_eq!(get("session_cookie ok 404"), sessions, "{ledger:?}");
    assert!(ledger.keys().all(|k| !k.contains("failed") && !k.contains("skipped")), "{ledger:?}");
    // No call was refused twice: each went again once, on the new session, and was answered.
    let twice = store.query(
        "SELECT domain FROM api_calls WHERE provider = 'yahoo_finance' AND http_status = 401 GROUP BY ALL HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "{twice:?}");
    let financials = store.query("SELECT count(*) AS n FROM financials");
    assert_eq!(financials[0]["n"].as_i64(), Some(get("quote_summary ok 200")));
}

#[test]
fn a_refused_session_stops_yahoo_and_the_night_is_partial() {
    let store = TestStore::new();
    let (out, err) = store
        .exits(3, &["run", "--limit", "150", "--date", "2026-11-20", "--fault", "yahoo_finance.refuse_session=true"]);
    assert!(out.contains("partial"), "{out}");
    assert!(
        err.contains(
            "yahoo_finance: stopped for this run: the session was refused: HTTP 401 (\"Invalid Crumb\") again after a new cookie and crumb"
        ),
        "{err}"
    );
    let (_, manifest) = store.manifests().remove(0);
    assert_eq!(manifest["status"], "partial");
    let ledger = yahoo_ledger(&store);
    let get = |k: &str| ledger.get(k).copied().unwrap_or(0);
    assert!(get("quote_summary failed 401") >= 1, "{ledger:?}");
    assert!(get("quote_summary skipped_auth") > 0, "the rest were not sent: {ledger:?}");
    assert_eq!(get("quote_summary ok 200"), 0, "{ledger:?}");
    assert!(get("session_crumb ok 200") >= 2, "a new session was tried before giving up: {ledger:?}");
    let financials = store.query("SELECT count(*) AS n FROM financials");
    assert_eq!(financials[0]["n"].as_i64(), Some(0));
}

/// Real-provider mode against `partnerforge simulate`'s endpoints: financials arrive
/// through the session, with YAHOO_COOKIE_URL pointing at the simulator's fc.yahoo.com.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mode_makes_the_session_at_the_cookie_url() {
    let sim = simulator(&[]).await;
    let store = against(&sim.base_url(), "bw-key", "sw-key");
    let pipeline = store.pipeline(without_rate_limits);
    let (store, out) =
        pf_blocking(store, &["run", "--pipeline", &pipeline, "--limit", "80", "--date", "2026-11-20"]).await;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.contains("completed"), "{out}");
    let ledger = yahoo_ledger(&store);
    assert_eq!(ledger.get("session_cookie ok 404"), Some(&1), "one session for the run: {ledger:?}");
    assert_eq!(ledger.get("session_crumb ok 200"), Some(&1), "{ledger:?}");
    let financials = store.query("SELECT count(*) AS n FROM financials");
    assert!(financials[0]["n"].as_i64().unwrap() > 0, "{ledger:?}");
    sim.shutdown().await;
}
