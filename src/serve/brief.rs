//! `partnerforge brief DOMAIN`: everything known about one target on one page, as an
//! account executive takes it into a call. It reads the same detail the dashboard's
//! target page does (`queries/export/target_detail.sql`), through the audience's
//! views when one is named, so it holds nothing that role may not see; every fact
//! says where it came from and how old it is.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ServeError, Warehouse};

/// The target's detail (the export's `targets/<domain>.json`), or `None` when the
/// domain is not among the targets the warehouse (or its audience) sees.
pub fn detail(warehouse: &Warehouse, sql_file: &Path, domain: &str) -> Result<Option<Value>, ServeError> {
    let sql =
        std::fs::read_to_string(sql_file).map_err(|source| ServeError::Io { path: sql_file.to_path_buf(), source })?;
    // Every view narrowed to the one domain first: the detail query then reads one target's rows.
    warehouse.narrow_to_domain(domain)?;
    let Some(text) = super::export::keyed_file(warehouse, sql_file, &sql, domain)? else { return Ok(None) };
    serde_json::from_slice(&text).map(Some).map_err(|e| ServeError::Sql(format!("reading the brief: {e}")))
}

/// How old a time is, as a person says it.
fn age(fetched_at: &Value, now: DateTime<Utc>) -> Option<String> {
    let at = DateTime::parse_from_rfc3339(fetched_at.as_str()?).ok()?.with_timezone(&Utc);
    let days = (now - at).num_days();
    Some(match days {
        ..=0 => "today".to_string(),
        1 => "1 day ago".to_string(),
        n => format!("{n} days ago"),
    })
}

/// `(source, age)` of a row with `source` and `fetched_at`.
fn origin(row: &Value, now: DateTime<Utc>) -> String {
    let source = row["source"].as_str().unwrap_or("?");
    match age(&row["fetched_at"], now) {
        Some(age) => format!("{source}, {age}"),
        None => source.to_string(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn usd(v: &Value) -> Option<String> {
    let n = num(v)?;
    Some(match n.abs() {
        a if a >= 1e9 => format!("${:.1}B", n / 1e9),
        a if a >= 1e6 => format!("${:.1}M", n / 1e6),
        a if a >= 1e3 => format!("${:.0}K", n / 1e3),
        _ => format!("${n:.0}"),
    })
}

fn share(v: &Value) -> Option<String> {
    num(v).map(|n| format!("{:.0} %", n * 100.0))
}

fn count(v: &Value) -> Option<String> {
    let n = num(v)?;
    Some(match n.abs() {
        a if a >= 1e6 => format!("{:.1}M", n / 1e6),
        a if a >= 1e3 => format!("{:.0}K", n / 1e3),
        _ => format!("{n:.0}"),
    })
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The brief as Markdown.
pub fn markdown(d: &Value, now: DateTime<Utc>) -> String {
    let t = &d["target"];
    let mut out = String::new();
    let name = text(&t["company_name"]).unwrap_or_else(|| t["domain"].as_str().unwrap_or("?").to_string());
    let _ = writeln!(out, "# {name} — {}", t["domain"].as_str().unwrap_or("?"));
    let facts: Vec<String> = [
        text(&t["vertical"]),
        text(&t["country"]).map(|c| match text(&t["region"]) {
            Some(r) => format!("{c} ({r})"),
            None => c,
        }),
        text(&t["partner_tech"]).map(|p| format!("on {p}")),
        text(&t["size_band"]),
        text(&t["ticker"]).map(|s| format!("ticker {s}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let _ = writeln!(out, "{}\n", facts.join(" · "));
    let signal = |name: &str| text(&t[format!("{name}_signal")]).unwrap_or_else(|| "—".into());
    let _ = writeln!(
        out,
        "**Priority {}** · ICP {} ({}) · budget {} · pain {} · timing {}\n",
        text(&t["priority"]).unwrap_or_else(|| "—".into()),
        text(&t["icp_score"]).unwrap_or_else(|| "—".into()),
        text(&t["icp_tier_name"]).unwrap_or_else(|| "—".into()),
        signal("budget"),
        signal("pain"),
        signal("timing"),
    );
    if let Some(angle) = text(&t["displacement_angle"]) {
        let _ = writeln!(out, "> {angle}\n");
    }

    let _ = writeln!(out, "## Score");
    for reason in list(&t["score_reasons"]) {
        let _ = writeln!(out, "- {}", reason.as_str().unwrap_or(""));
    }
    if let Some(level) = text(&t["enrichment_level"]) {
        let _ = writeln!(out, "- enrichment {level}, last enriched {}", text(&t["last_enriched"]).unwrap_or_default());
    }

    let _ = writeln!(out, "\n## Why now");
    for name in ["budget", "pain", "timing"] {
        if t[format!("{name}_signal")].is_null() {
            continue;
        }
        let _ = writeln!(out, "**{}: {}**", capitalized(name), signal(name));
        let reasons = &t[format!("{name}_reasons")];
        if reasons.is_null() {
            let _ = writeln!(out, "- (its reasons are financial figures, which this audience does not see)");
        }
        for reason in list(reasons) {
            let _ = writeln!(out, "- {}", reason.as_str().unwrap_or(""));
        }
        let dates: Vec<String> = list(&t[format!("{name}_evidence_on")]).iter().filter_map(text).collect();
        if !dates.is_empty() {
            let _ = writeln!(out, "- evidence dated {}", dates.join(", "));
        }
    }

    let _ = writeln!(out, "\n## Tech stack");
    let spend = &d["tech_spend"];
    let search = text(&t["current_search"]).unwrap_or_else(|| "none detected".into());
    let search_origin = if spend.is_null() { String::new() } else { format!(" ({})", origin(spend, now)) };
    let _ = writeln!(out, "- search: {search}{search_origin}");
    if let Some(s) = usd(&t["tech_spend"]) {
        let _ = writeln!(out, "- tech spend {s} a year{search_origin}");
    }
    let date = |v: &Value| text(v).map(|s| s.chars().take(10).collect::<String>()).unwrap_or_else(|| "?".into());
    let stack = list(&d["tech_stack"]);
    let live: Vec<String> = stack
        .iter()
        .filter(|r| r["live"].as_bool() == Some(true))
        .map(|r| format!("{} (since {})", r["technology"].as_str().unwrap_or("?"), date(&r["first_detected"])))
        .collect();
    let dead: Vec<String> = stack
        .iter()
        .filter(|r| r["live"].as_bool() == Some(false))
        .map(|r| format!("{} (last seen {})", r["technology"].as_str().unwrap_or("?"), date(&r["last_detected"])))
        .collect();
    if let Some(first) = stack.first() {
        let _ = writeln!(
            out,
            "- live: {} — {}",
            if live.is_empty() { "—".into() } else { live.join(", ") },
            origin(first, now)
        );
        if !dead.is_empty() {
            let _ = writeln!(out, "- removed: {}", dead.join(", "));
        }
    }

    let _ = writeln!(out, "\n## Traffic");
    let traffic = &d["traffic"];
    if traffic.is_null() {
        let _ = writeln!(out, "- no traffic data");
    } else {
        let _ = writeln!(
            out,
            "- {} visits a month, {} month over month, bounce rate {}, {} of visits from search ({})",
            count(&t["sw_monthly_visits"]).unwrap_or_else(|| "?".into()),
            share(&t["sw_visits_growth_mom"]).unwrap_or_else(|| "?".into()),
            share(&t["sw_bounce_rate"]).unwrap_or_else(|| "?".into()),
            share(&t["sw_search_traffic_pct"]).unwrap_or_else(|| "?".into()),
            origin(traffic, now)
        );
    }
    let trend = list(&d["traffic_trend"]);
    if trend.len() > 1 {
        let points: Vec<String> = trend
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    text(&p["snapshot"]).unwrap_or_default(),
                    count(&p["monthly_visits"]).unwrap_or_else(|| "?".into())
                )
            })
            .collect();
        let _ = writeln!(out, "- trend: {}", points.join(" → "));
    }

    let financials = &d["financials"];
    if !financials.is_null() && !t["revenue"].is_null() {
        let _ = writeln!(out, "\n## Financials");
        let _ = writeln!(
            out,
            "- revenue {}, gross margin {}, market cap {} ({})",
            usd(&t["revenue"]).unwrap_or_else(|| "?".into()),
            share(&t["gross_margin"]).unwrap_or_else(|| "?".into()),
            usd(&t["market_cap"]).unwrap_or_else(|| "?".into()),
            origin(financials, now)
        );
        for year in list(&d["financial_history"]) {
            let _ = writeln!(
                out,
                "- fiscal year to {}: revenue {}",
                text(&year["fiscal_year_end"]).unwrap_or_default(),
                usd(&year["revenue"]).unwrap_or_else(|| "?".into())
            );
        }
    }

    let execs = list(&d["executives"]);
    let quotes = list(&d["quotes"]);
    if !execs.is_empty() || !quotes.is_empty() {
        let _ = writeln!(out, "\n## People");
        for e in execs.iter().take(8) {
            let _ = writeln!(
                out,
                "- {}, {} ({})",
                text(&e["name"]).unwrap_or_default(),
                text(&e["title"]).unwrap_or_default(),
                origin(e, now)
            );
        }
        for q in quotes.iter().take(3) {
            let _ = writeln!(
                out,
                "- “{}” — {}, {} ({}, {})",
                text(&q["quote"]).unwrap_or_default(),
                text(&q["name"]).unwrap_or_default(),
                text(&q["title"]).unwrap_or_default(),
                text(&q["published"]).unwrap_or_default(),
                origin(q, now)
            );
        }
    }

    let postings = list(&d["job_postings"]);
    if !postings.is_empty() || !t["open_roles"].is_null() {
        let _ = writeln!(out, "\n## Hiring");
        let _ = writeln!(
            out,
            "- {} open roles, {} in search or relevance{}",
            text(&t["open_roles"]).unwrap_or_else(|| "?".into()),
            text(&t["search_roles"]).unwrap_or_else(|| "?".into()),
            list(&d["hiring"]).first().map(|h| format!(" ({})", origin(h, now))).unwrap_or_default()
        );
        for p in postings.iter().take(5) {
            let _ = writeln!(
                out,
                "- {} (posted {})",
                text(&p["title"]).unwrap_or_default(),
                text(&p["posted_at"]).unwrap_or_else(|| "?".into())
            );
        }
    }

    let triggers = list(&d["trigger_events"]);
    if !triggers.is_empty() {
        let _ = writeln!(out, "\n## Trigger events");
        for e in triggers.iter().take(6) {
            let _ = writeln!(
                out,
                "- {} · {}: {} ({})",
                text(&e["published"]).unwrap_or_else(|| "?".into()),
                text(&e["event_type"]).unwrap_or_default().replace('_', " "),
                text(&e["headline"]).unwrap_or_default(),
                origin(e, now)
            );
        }
    }

    let studies = list(&t["case_studies"]);
    if !studies.is_empty() {
        let _ = writeln!(out, "\n## Case studies to mention");
        for (i, s) in studies.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. **{}** — {}: {} ({}) {}",
                i + 1,
                text(&s["customer"]).unwrap_or_default(),
                text(&s["use_case"]).unwrap_or_default(),
                text(&s["headline_metric"]).unwrap_or_default(),
                text(&s["reason"]).unwrap_or_default(),
                text(&s["url"]).unwrap_or_default()
            );
        }
    }

    let conflicts = list(&t["conflicts"]);
    if !conflicts.is_empty() {
        let _ = writeln!(out, "\n## Where sources disagree");
        for c in conflicts {
            let _ = writeln!(
                out,
                "- {}: {} ({}, weight {}) over {} ({}, weight {})",
                text(&c["field"]).unwrap_or_default().replace('_', " "),
                text(&c["value"]).unwrap_or_default(),
                text(&c["source"]).unwrap_or_default(),
                text(&c["weight"]).unwrap_or_default(),
                text(&c["other_value"]).unwrap_or_default(),
                text(&c["other_source"]).unwrap_or_default(),
                text(&c["other_weight"]).unwrap_or_default()
            );
        }
    }

    let changes = list(&d["changes"]);
    if !changes.is_empty() {
        let _ = writeln!(out, "\n## Recent changes");
        for c in changes.iter().take(8) {
            let _ = writeln!(
                out,
                "- {} [{}] {}",
                text(&c["snapshot"]).unwrap_or_default(),
                text(&c["significance"]).unwrap_or_default(),
                text(&c["summary"]).unwrap_or_default()
            );
        }
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
