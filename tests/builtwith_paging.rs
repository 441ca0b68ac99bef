//! BuiltWith's Relationships API as documented today (`rv4`): answers page by 500
//! relationships (`more_results`, `next_skip`, asked again with `OFFSET`) and are billed
//! one credit per 500 relationships, not per call. A run against the simulator in
//! real-provider mode reads every page, bills what the pages hold, keeps every page's
//! body (a rebuild reads them all back), and `plan` estimates the pages and credits from
//! what the same domains took last time.

mod support;

use partnerforge::simulate::{Keys, Simulator, SimulatorConfig};
use support::{against, pf_blocking, repo, without_rate_limits};

const BW_KEY: &str = "bw-key";
const SW_KEY: &str = "sw-key";
const DATE: &str = "2026-11-20";

/// (domain, relationships in total) from the simulator's first page.
async fn relationships(client: &reqwest::Client, base: &str, domain: &str) -> (bool, u64) {
    let url = format!("{base}/rv4/api.json?KEY={BW_KEY}&LOOKUP={domain}");
    let page: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
    (page["more_results"] == true, page["results"].as_u64().unwrap_or(0))
}

#[tokio::test]
async fn relationships_are_read_to_the_last_page_and_billed_per_500() {
    let keys = Keys { builtwith: BW_KEY.into(), similarweb: SW_KEY.into() };
    let config =
        SimulatorConfig { seed: 42, as_of: DATE.parse().unwrap(), keys, faults: Default::default(), request_log: None };
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let base = sim.base_url();

    // From the shipped book: two domains whose relationships take several pages, two that take one.
    let book = std::fs::read_to_string(repo().join("data/seed/targets.csv")).unwrap();
    let mut lines = book.lines();
    let header = lines.next().unwrap().to_string();
    let client = reqwest::Client::new();
    let (mut paged, mut single) = (Vec::new(), Vec::new());
    for line in lines {
        let domain = line.split(',').next().unwrap();
        let (more, total) = relationships(&client, &base, domain).await;
        match (more, paged.len() < 2, single.len() < 2) {
            (true, true, _) => paged.push((line.to_string(), domain.to_string(), total)),
            (false, _, true) if total > 0 => single.push((line.to_string(), domain.to_string(), total)),
            _ => {}
        }
        if paged.len() == 2 && single.len() == 2 {
            break;
        }
    }
    assert_eq!(paged.len(), 2, "the simulator has domains with more than one page of relationships");
    let chosen: Vec<&(String, String, u64)> = paged.iter().chain(&single).collect();
    let store = against(&base, BW_KEY, SW_KEY);
    let targets = store.path().join("book.csv");
    let rows: Vec<&str> = chosen.iter().map(|(line, _, _)| line.as_str()).collect();
    std::fs::write(&targets, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    let targets = targets.display().to_string();
    let pipeline = store.pipeline(without_rate_limits);

    let (store, out) =
        pf_blocking(store, &["run", "--pipeline", &pipeline, "--targets", &targets, "--date", DATE]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for (_, domain, total) in &chosen {
        let pages = total.div_ceil(500);
        let ledger = store.query(&format!(
            "SELECT page, outcome, http_status, cost_usd FROM api_calls
             WHERE endpoint = 'relationships' AND domain = '{domain}' ORDER BY attempt"
        ));
        let got: Vec<(i64, &str, f64)> = ledger
            .iter()
            .map(|r| (r["page"].as_i64().unwrap(), r["outcome"].as_str().unwrap(), r["cost_usd"].as_f64().unwrap()))
            .collect();
        let expected: Vec<(i64, &str, f64)> = (1..=pages as i64).map(|p| (p, "ok", 0.05)).collect();
        assert_eq!(got, expected, "{domain}: {total} relationships, one request and one credit a page");
        let related = store.query(&format!("SELECT count(*) AS n FROM related_domains WHERE domain = '{domain}'"));
        assert_eq!(related[0]["n"].as_u64().unwrap(), *total, "{domain}: every page's relationships");
        let bodies = store.query(&format!(
            "SELECT count(*) AS n FROM raw_responses WHERE endpoint = 'relationships' AND domain = '{domain}'"
        ));
        assert_eq!(bodies[0]["n"].as_u64().unwrap(), pages, "{domain}: every page's body is kept");
    }
    assert!(paged.iter().all(|(_, _, total)| *total > 500));

    // The plan: the same domains' pages and credits from the ledger.
    let requests: u64 = chosen.iter().map(|(_, _, total)| total.div_ceil(500)).sum();
    let plan_args = ["plan", "--pipeline", &pipeline, "--targets", &targets, "--date", "2026-11-21", "--force", "m06"];
    let (store, out) = pf_blocking(store, &plan_args).await;
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{plan}{}", String::from_utf8_lossy(&out.stderr));
    let row: Vec<String> = plan
        .lines()
        .find(|l| l.starts_with("builtwith") && l.contains(" relationships "))
        .unwrap_or_else(|| panic!("{plan}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(row[2], requests.to_string(), "one request a page, as last time: {plan}");
    let cost: f64 = row[4].parse().unwrap();
    assert!((cost - requests as f64 * 0.05).abs() < 1e-9, "a credit a page, as last time: {plan}");
    assert!(plan.contains("billed per 500 relationships, not per call"), "{plan}");
    assert!(plan.contains("0 never asked"), "{plan}");

    // A rebuild parses the stored pages again: the same relationships.
    let before = store.query("SELECT domain, related, via, identifier FROM related_domains ORDER BY ALL");
    let path = store.store();
    let (store, out) =
        pf_blocking(store, &["rebuild", "--pipeline", &pipeline, "--store", &path, "--snapshot", DATE]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = store.query("SELECT domain, related, via, identifier FROM related_domains ORDER BY ALL");
    assert_eq!(before.len(), after.len());
    assert!(before == after, "the rebuild reads every page back");
    sim.shutdown().await;
}
