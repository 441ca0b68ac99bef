//! The diff of two snapshots of N targets: observations → tracked state → change
//! events, as a commit computes them, on synthetic module tables (the same schemas
//! a run writes) for two consecutive dates where about 1 % of the domains changed
//! (a search vendor dropped or switched, traffic moved, a technology added or
//! removed, a new CFO, a new posting or news item).
//!
//!     cargo bench --bench changes -- 1000000      # default 100000
//!
//! Prints, per step, the wall time (median of `--runs`, default 3), rows per second and
//! the process's peak resident memory so far (VmHWM).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use partnerforge::config::changes::ChangeRules;
use partnerforge::modules::tables::{
    ExecutiveRow, FinancialsRow, PostingRow, SpendRow, StockRow, TechRow, TrafficRow, TrafficSourcesRow, TriggerRow,
};
use partnerforge::modules::{FetchRow, Tables};
use partnerforge::providers::yahoo::Figures;
use partnerforge::transform::changes;
use polars::prelude::*;

const TECHS: [&str; 8] =
    ["Google Analytics", "Google Tag Manager", "jQuery", "Cloudflare", "Nginx", "Optimizely", "Klaviyo", "React"];
const VENDORS: [&str; 5] = ["Elasticsearch", "Coveo", "Bloomreach", "Constructor", "Klevu"];

fn hash(i: usize, what: u64) -> u64 {
    let mut x = (i as u64) ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Whether domain `i` changed between the two dates (about 1 %).
fn changed(i: usize) -> bool {
    hash(i, 7).is_multiple_of(100)
}

fn snapshot(n: usize, day: usize, date: &str) -> HashMap<String, Bytes> {
    let mut t = Tables::default();
    let at = 1_785_000_000_000 + day as i64 * 86_400_000;
    for i in 0..n {
        let domain = format!("domain-{i:08}.com");
        let moved = day == 2 && changed(i);
        let kind = hash(i, 11) % 5;
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
        t.tech_spend.push(SpendRow {
            domain: domain.clone(),
            monthly_spend_usd: Some(1000.0),
            tech_spend: Some(12_000.0),
            current_search: vendor.map(str::to_string),
            partner_tech_detected: Some("Shopify Plus".into()),
            runs_algolia: vendor == Some("Algolia"),
            source: "builtwith",
        });
        let visits = 10_000.0 + hash(i, 5) as f64 % 5e7;
        t.traffic.push(TrafficRow {
            domain: domain.clone(),
            month: "2026-07".into(),
            monthly_visits: Some(if moved && kind == 3 { visits * 2.5 } else { visits }),
            visits_growth_mom: None,
            bounce_rate: Some(0.4),
            pages_per_visit: Some(3.0),
            avg_visit_duration: Some(120.0),
        });
        t.traffic_sources.push(TrafficSourcesRow {
            domain: domain.clone(),
            month: "2026-07".into(),
            search_traffic_pct: 0.3,
        });
        if i % 10 == 0 {
            t.financials.push(FinancialsRow {
                domain: domain.clone(),
                ticker: format!("T{i}"),
                figures: Figures { revenue: Some(1e9), ..Figures::default() },
                exec_name: None,
                exec_title: None,
            });
            t.executives.push(ExecutiveRow {
                domain: domain.clone(),
                ticker: format!("T{i}"),
                name: if moved && kind == 4 { "New Person".into() } else { format!("Person {i}") },
                title: "CFO".into(),
                role: Some("CFO"),
                divisional: false,
            });
            t.stock.push(StockRow {
                domain: domain.clone(),
                ticker: format!("T{i}"),
                price: Some(10.0),
                currency: None,
                market_cap: Some(1e10),
            });
        }
        if i % 4 == 0 {
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
        if moved {
            t.trigger_events.push(TriggerRow {
                domain: domain.clone(),
                event_type: "replatforming".into(),
                matched: "replatform".into(),
                headline: format!("Domain {i} replatforms"),
                published: None,
                link: None,
            });
        }
        for module in ["m02", "m03", "m04", "m07", "m08", "m10", "m12"] {
            t.fetches.push(FetchRow {
                module,
                domain: domain.clone(),
                fetched_on: date.parse().expect("a date"),
                outcome: "ok",
            });
        }
    }
    let mut files: HashMap<String, Bytes> = HashMap::new();
    for (table, batch) in t.batches(at, date).expect("batches") {
        files.insert(table.to_string(), partnerforge::store::table::to_parquet(&batch).expect("parquet"));
    }
    let domains: Vec<String> = (0..n).map(|i| format!("domain-{i:08}.com")).collect();
    let tiers: Vec<i32> = (0..n)
        .map(|i| 1 + (hash(i, 9) % 4) as i32 - i32::from(day == 2 && changed(i) && !hash(i, 9).is_multiple_of(4)))
        .collect();
    let names: Vec<&str> = tiers.iter().map(|t| ["hot", "warm", "cool", "cold"][(*t - 1) as usize]).collect();
    let mut targets = df!(
        "domain" => domains,
        "company_name" => (0..n).map(|i| format!("Company {i}")).collect::<Vec<_>>(),
        "icp_tier" => tiers,
        "icp_tier_name" => names,
        "last_enriched" => vec![at; n],
    )
    .expect("targets");
    files.insert("targets".into(), partnerforge::transform::to_parquet(&mut targets).expect("targets parquet"));
    files
}

fn save(dir: &std::path::Path, night: &str, files: &HashMap<String, Bytes>) {
    let dir = dir.join(night);
    std::fs::create_dir_all(&dir).expect("bench dir");
    for (table, bytes) in files {
        std::fs::write(dir.join(format!("{table}.parquet")), bytes).expect("write table");
    }
}

fn load(dir: &std::path::Path, night: &str) -> HashMap<String, Bytes> {
    std::fs::read_dir(dir.join(night))
        .expect("bench dir")
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.path().file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            (name, Bytes::from(std::fs::read(e.path()).expect("read table")))
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize =
        args.iter().position(|a| a == "--runs").and_then(|p| args.get(p + 1)).and_then(|r| r.parse().ok()).unwrap_or(3);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = ChangeRules::load(&root.join("pipelines/changes.toml"), &changes::field_kinds()).expect("rules");

    // The snapshots are generated by a child process into files, so that this process's
    // peak memory is the change tracking's alone (plus the two snapshots' Parquet bytes).
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|p| args.get(p + 1)).cloned();
    let (day1, day2) = match flag("--from") {
        Some(dir) => (load(std::path::Path::new(&dir), "1"), load(std::path::Path::new(&dir), "2")),
        None => {
            let dir = std::env::temp_dir().join(format!("partnerforge-bench-changes-{}", std::process::id()));
            let started = Instant::now();
            save(&dir, "1", &snapshot(n, 1, "2026-08-01"));
            save(&dir, "2", &snapshot(n, 2, "2026-08-02"));
            println!("{n} targets: two snapshots generated in {:.1} s", started.elapsed().as_secs_f64());
            let mut child: Vec<String> = args.clone();
            child.extend(["--from".to_string(), dir.display().to_string()]);
            let status = std::process::Command::new(std::env::current_exe().expect("exe")).args(&child).status();
            let _ = std::fs::remove_dir_all(&dir);
            std::process::exit(status.map(|s| s.code().unwrap_or(1)).unwrap_or(1));
        }
    };
    println!("snapshots loaded: peak {:.0} MiB so far", peak_rss_mib());

    // As a commit does: the book in ranges of `slice` domains, each tracked and diffed alone.
    let slice: usize = args
        .iter()
        .position(|a| a == "--slice")
        .and_then(|p| args.get(p + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(25_000);
    let domains: Vec<String> = (0..n).map(|i| format!("domain-{i:08}.com")).collect();
    let ranges = changes::DomainRange::split(domains.iter().map(String::as_str), slice);
    let track_night = |files: &HashMap<String, Bytes>, date: &str, old: Option<&Bytes>| -> (Bytes, usize, usize) {
        let path = std::env::temp_dir().join(format!("bench-state-{}-{date}.parquet", std::process::id()));
        let mut writer = partnerforge::transform::SliceWriter::new(&path);
        let mut events = 0;
        let parts = partnerforge::run::changes::partition_by_range(files, &ranges).expect("partition");
        for (range, part) in ranges.iter().zip(&parts) {
            let base = match old {
                Some(bytes) => changes::read_state(bytes, range).expect("state"),
                None => changes::empty_state().expect("empty"),
            };
            let observed =
                changes::observations(part, date, "icp", &changes::DomainRange::all()).expect("observations");
            let state = changes::next_state(base.clone(), observed, &rules)
                .expect("state")
                .sort(["domain"], SortMultipleOptions::default())
                .collect()
                .expect("collect");
            if old.is_some() {
                events +=
                    changes::events(base, state.clone().lazy(), &rules, "2026-08-01", date).expect("events").len();
            }
            writer.write(&state).expect("write");
        }
        let rows = writer.rows;
        writer.finish().expect("finish");
        let bytes = Bytes::from(std::fs::read(&path).expect("read state"));
        let _ = std::fs::remove_file(&path);
        (bytes, rows, events)
    };
    let (state1, rows1, _) = track_night(&day1, "2026-08-01", None);
    println!("state of night 1: {rows1} rows ({} ranges of {slice} domains)", ranges.len());

    let (mut track, mut diff) = (Vec::new(), Vec::new());
    let (mut rows, mut events) = (0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let (_, r, e) = track_night(&day2, "2026-08-02", Some(&state1));
        track.push(t.elapsed().as_secs_f64());
        rows = r;
        events = e;
        // The diff alone, as `partnerforge changes` runs it on two stored states.
        let (state2, _, _) = track_night(&day2, "2026-08-02", Some(&state1));
        let t = Instant::now();
        let mut found = 0;
        for range in &ranges {
            let (a, b) =
                (changes::read_state(&state1, range).expect("a"), changes::read_state(&state2, range).expect("b"));
            found += changes::events(a, b, &rules, "2026-08-01", "2026-08-02").expect("events").len();
        }
        diff.push(t.elapsed().as_secs_f64());
        assert_eq!(found, events, "the stored diff and the one on demand agree");
    }
    let (track, diff) = (median(track), median(diff));
    println!(
        "observe + track + diff (a commit): {track:.2} s ({:.0} state rows/s, {rows} rows)\n\
         diff of two stored states:        {diff:.2} s ({:.0} state rows/s, {events} events, {:.2} % of targets changed)\n\
         peak resident:   {:.0} MiB",
        rows as f64 / track,
        rows as f64 / diff,
        (0..n).filter(|i| changed(*i)).count() as f64 * 100.0 / n as f64,
        peak_rss_mib()
    );
}
