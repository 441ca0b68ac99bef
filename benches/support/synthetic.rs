//! Synthetic nights of N targets for the benches: the module tables a run writes (the
//! same schemas, realistic null rates, several technologies per domain) for two
//! consecutive dates, where about 1 % of the domains changed on the second night (a
//! search vendor dropped or switched to Algolia, traffic moved, a technology removed, a
//! new CFO, a new posting or news item). As in a real night, a domain that did not
//! change keeps the rows — and the fetch times — of the first night (carried forward);
//! a changed domain's rows carry the second night's fetch time.

#![allow(dead_code)]

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use partnerforge::modules::tables::{
    AnnualRow, CompanyRow, ExecutiveRow, FinancialsRow, HiringRow, PostingRow, SpendRow, StockRow, TechRow, TrafficRow,
    TrafficSourcesRow, TriggerRow,
};
use partnerforge::modules::{FetchRow, Tables};
use partnerforge::providers::builtwith::CompanyMeta;
use partnerforge::providers::yahoo::Figures;
use partnerforge::targets::Target;

pub const TECHS: [&str; 8] =
    ["Google Analytics", "Google Tag Manager", "jQuery", "Cloudflare", "Nginx", "Optimizely", "Klaviyo", "React"];
pub const VENDORS: [&str; 5] = ["Elasticsearch", "Coveo", "Bloomreach", "Constructor", "Klevu"];
const PARTNERS: [&str; 4] = ["Adobe Experience Manager", "Shopify Plus", "Salesforce Commerce Cloud", "BigCommerce"];
const VERTICALS: [&str; 5] = ["Commerce", "Media", "Travel", "Financial Services", "Retail"];
const COUNTRIES: [&str; 6] = ["US", "GB", "DE", "FR", "ES", "AU"];

/// The first night's date and the second's.
pub const DATES: [&str; 2] = ["2026-08-01", "2026-08-02"];

pub fn hash(i: usize, what: u64) -> u64 {
    let mut x = (i as u64) ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Whether domain `i` changed between the two nights (about 1 %).
pub fn changed(i: usize) -> bool {
    hash(i, 7).is_multiple_of(100)
}

pub fn domain(i: usize) -> String {
    format!("domain-{i:08}.com")
}

/// The book: every domain with the seed's fields (some left empty) and a ticker for one in ten.
pub fn book(n: usize) -> (Vec<Target>, HashMap<String, String>) {
    let targets = (0..n)
        .map(|i| Target {
            domain: domain(i),
            company_name: (!hash(i, 21).is_multiple_of(20)).then(|| format!("Company {i}")),
            partner_tech: Some(PARTNERS[(hash(i, 22) % 4) as usize].to_string()),
            vertical: (!hash(i, 23).is_multiple_of(10)).then(|| VERTICALS[(hash(i, 24) % 5) as usize].to_string()),
            country: (!hash(i, 25).is_multiple_of(3)).then(|| COUNTRIES[(hash(i, 26) % 6) as usize].to_string()),
        })
        .collect();
    let tickers = (0..n).filter(|i| i % 10 == 0).map(|i| (domain(i), format!("T{i}"))).collect();
    (targets, tickers)
}

fn epoch_ms(date: &str) -> i64 {
    let day: chrono::NaiveDate = date.parse().expect("a date");
    day.and_hms_opt(2, 30, 0).expect("a time").and_utc().timestamp_millis()
}

/// One domain's rows on `day` (1 or 2) into `t`.
fn rows(t: &mut Tables, i: usize, day: usize) {
    let date = DATES[day - 1];
    let at = epoch_ms(date);
    let domain = domain(i);
    let moved = day == 2 && changed(i);
    let kind = hash(i, 11) % 5;
    t.company.push(CompanyRow {
        domain: domain.clone(),
        meta: CompanyMeta {
            company_name: Some(format!("Company {i} Inc.")),
            vertical: Some(VERTICALS[(hash(i, 24) % 5) as usize].to_string()),
            country: (!hash(i, 27).is_multiple_of(2)).then(|| COUNTRIES[(hash(i, 26) % 6) as usize].to_string()),
            city: (!hash(i, 28).is_multiple_of(2)).then(|| "Springfield".to_string()),
            state: None,
            employees: Some((hash(i, 29) % 50_000) as i64),
            ..CompanyMeta::default()
        },
        redirects_to: None,
    });
    let vendor = if moved && kind == 0 { None } else { Some(VENDORS[(hash(i, 3) % 5) as usize]) };
    let vendor = if moved && kind == 1 { Some("Algolia") } else { vendor };
    for (k, tech) in TECHS.iter().enumerate() {
        if moved && kind == 2 && k == 7 {
            continue;
        }
        t.tech_stack.push(TechRow {
            domain: domain.clone(),
            technology: tech.to_string(),
            tag: Some("widgets".into()),
            categories: None,
            first_detected_ms: Some(at - 400 * 86_400_000),
            last_detected_ms: Some(at),
            live: true,
            is_search_vendor: false,
            is_partner_tech: false,
            source: "builtwith",
        });
    }
    if let Some(v) = vendor {
        t.tech_stack.push(TechRow {
            domain: domain.clone(),
            technology: v.into(),
            tag: Some("widgets".into()),
            categories: None,
            first_detected_ms: Some(if moved { at } else { at - 300 * 86_400_000 }),
            last_detected_ms: Some(at),
            live: true,
            is_search_vendor: true,
            is_partner_tech: false,
            source: "builtwith",
        });
    }
    if hash(i, 31).is_multiple_of(8) {
        // A search vendor the site dropped a while ago.
        t.tech_stack.push(TechRow {
            domain: domain.clone(),
            technology: "Swiftype".into(),
            tag: Some("widgets".into()),
            categories: None,
            first_detected_ms: Some(at - 900 * 86_400_000),
            last_detected_ms: Some(at - 200 * 86_400_000),
            live: false,
            is_search_vendor: true,
            is_partner_tech: false,
            source: "builtwith",
        });
    }
    t.tech_spend.push(SpendRow {
        domain: domain.clone(),
        monthly_spend_usd: Some(1000.0),
        tech_spend: (!hash(i, 32).is_multiple_of(10)).then(|| (hash(i, 33) % 200_000) as f64),
        current_search: vendor.map(str::to_string),
        partner_tech_detected: Some(PARTNERS[(hash(i, 22) % 4) as usize].to_string()),
        runs_algolia: vendor == Some("Algolia"),
        source: "builtwith",
    });
    let visits = 10_000.0 + hash(i, 5) as f64 % 5e7;
    t.traffic.push(TrafficRow {
        domain: domain.clone(),
        month: "2026-07".into(),
        monthly_visits: (!hash(i, 34).is_multiple_of(20)).then_some(if moved && kind == 3 {
            visits * 2.5
        } else {
            visits
        }),
        visits_growth_mom: Some((hash(i, 35) % 60) as f64 / 100.0 - 0.3),
        bounce_rate: Some((hash(i, 36) % 70) as f64 / 100.0 + 0.2),
        pages_per_visit: Some(3.0),
        avg_visit_duration: Some(120.0),
    });
    t.traffic_sources.push(TrafficSourcesRow {
        domain: domain.clone(),
        month: "2026-07".into(),
        search_traffic_pct: (hash(i, 37) % 20) as f64 / 100.0,
    });
    if i.is_multiple_of(10) {
        t.financials.push(FinancialsRow {
            domain: domain.clone(),
            ticker: format!("T{i}"),
            figures: Figures {
                revenue: Some(1e8 + (hash(i, 38) % 10_000) as f64 * 1e6),
                gross_margin: Some(0.42),
                market_cap: Some(1e10),
                ..Figures::default()
            },
            exec_name: Some(format!("Person {i}")),
            exec_title: Some("CEO".into()),
        });
        t.executives.push(ExecutiveRow {
            domain: domain.clone(),
            ticker: format!("T{i}"),
            name: if moved && kind == 4 { "New Person".into() } else { format!("Person {i}") },
            title: "CFO".into(),
            role: Some("CFO"),
            divisional: false,
        });
        for (year, revenue) in [("2024-12-31", 9e8), ("2025-12-31", 1e9)] {
            t.financial_history.push(AnnualRow {
                domain: domain.clone(),
                ticker: format!("T{i}"),
                fiscal_year_end: year.into(),
                revenue,
                gross_margin: Some(0.4),
                operating_margin: Some(0.1),
            });
        }
        t.stock.push(StockRow {
            domain: domain.clone(),
            ticker: format!("T{i}"),
            price: Some(10.0),
            currency: None,
            market_cap: Some(1e10),
        });
    }
    if i.is_multiple_of(4) {
        t.hiring.push(HiringRow {
            domain: domain.clone(),
            platform: "greenhouse",
            board: format!("board{i}"),
            open_roles: 1 + (hash(i, 39) % 40) as i64,
            search_roles: i64::from(moved),
            ecommerce_roles: 0,
            personalization_roles: 0,
            leadership_roles: i64::from(moved),
        });
        t.job_postings.push(PostingRow {
            domain: domain.clone(),
            platform: "greenhouse",
            title: if moved { "Head of Search".into() } else { "Software Engineer".into() },
            location: None,
            posted_at: None,
            url: None,
            signals: if moved { Some("search,leadership".into()) } else { None },
        });
    }
    let day1: chrono::NaiveDate = DATES[0].parse().expect("a date");
    if hash(i, 40).is_multiple_of(20) {
        t.trigger_events.push(TriggerRow {
            domain: domain.clone(),
            event_type: "funding".into(),
            matched: "raises".into(),
            headline: format!("Company {i} raises a round"),
            published: Some(day1 - chrono::Duration::days((hash(i, 41) % 300) as i64)),
            link: None,
        });
    }
    if moved {
        t.trigger_events.push(TriggerRow {
            domain: domain.clone(),
            event_type: "replatforming".into(),
            matched: "replatform".into(),
            headline: format!("Domain {i} replatforms"),
            published: Some(date.parse().expect("a date")),
            link: None,
        });
    }
    for module in ["m01", "m02", "m03", "m04", "m07", "m08", "m10", "m12"] {
        t.fetches.push(FetchRow {
            module,
            domain: domain.clone(),
            fetched_on: date.parse().expect("a date"),
            outcome: "ok",
        });
    }
}

/// The module tables of night `day` (1 or 2) as Parquet bytes, by table: generated and
/// encoded `CHUNK` domains at a time (a row group each), so that 10M domains fit in memory.
pub fn night(n: usize, day: usize) -> HashMap<String, Bytes> {
    const CHUNK: usize = 250_000;
    let props = partnerforge::store::table::writer_properties().expect("writer properties");
    let mut writers: Vec<(&'static str, parquet::arrow::ArrowWriter<Vec<u8>>)> = Vec::new();
    for start in (0..n.max(1)).step_by(CHUNK) {
        // Rows stamped with the first night's fetch time, and (night 2) the changed domains' with the second's.
        let (mut kept, mut fresh) = (Tables::default(), Tables::default());
        for i in start..(start + CHUNK).min(n) {
            if day == 2 && changed(i) { rows(&mut fresh, i, 2) } else { rows(&mut kept, i, 1) }
        }
        let mut parts: Vec<Vec<(&'static str, RecordBatch)>> =
            vec![kept.batches(epoch_ms(DATES[0]), DATES[day - 1]).expect("batches")];
        if day == 2 {
            parts.push(fresh.batches(epoch_ms(DATES[1]), DATES[1]).expect("batches"));
        }
        for (k, (table, first)) in parts[0].iter().enumerate() {
            let mut batches = vec![first.clone()];
            batches.extend(parts.iter().skip(1).map(|p| p[k].1.clone()));
            let batch = arrow::compute::concat_batches(&first.schema(), &batches).expect("one schema");
            if writers.len() <= k {
                let writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props.clone()))
                    .expect("a Parquet writer");
                writers.push((table, writer));
            }
            writers[k].1.write(&batch).expect("a row group");
            writers[k].1.flush().expect("a row group");
        }
    }
    writers
        .into_iter()
        .map(|(table, writer)| (table.to_string(), Bytes::from(writer.into_inner().expect("the file's bytes"))))
        .collect()
}

pub fn save(dir: &std::path::Path, name: &str, files: &HashMap<String, Bytes>) {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("bench dir");
    for (table, bytes) in files {
        std::fs::write(dir.join(format!("{table}.parquet")), bytes).expect("write table");
    }
}

pub fn load(dir: &std::path::Path, name: &str) -> HashMap<String, Bytes> {
    std::fs::read_dir(dir.join(name))
        .expect("bench dir")
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.path().file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            (name, Bytes::from(std::fs::read(e.path()).expect("read table")))
        })
        .collect()
}

/// The process's peak resident memory so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The value of `--name VALUE` among the arguments.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|p| args.get(p + 1)).cloned()
}
