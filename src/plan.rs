//! `partnerforge plan`: what the next run would call, per provider and endpoint,
//! and what it would cost — from the same planner that decides what a run
//! fetches, without making any call.
//!
//! Later waves depend on the first: a domain found running Algolia gets no
//! further calls. The plan takes that from the latest snapshot (`calls`), and
//! also gives the count if no domain were excluded (`at most`). Against an
//! unchanged world the run makes exactly `calls`.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::col;

use crate::config::ProviderId;
use crate::modules::{self, REGISTRY};
use crate::run::{Planner, Selection, prepare};
use crate::transform;

#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    pub provider: ProviderId,
    pub endpoint: &'static str,
    pub calls: u64,
    pub at_most: u64,
    /// If every call is billed (sites too small to measure answer unbilled).
    pub cost_usd: f64,
    /// An endpoint that pages and bills by what its pages hold (BuiltWith's
    /// Relationships): `calls` counts its requests, one per page, and the cost is the
    /// credits, as the same domains took them last time; a domain never asked counts
    /// one page and one credit.
    pub paged: Option<PagedEstimate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PagedEstimate {
    /// Domains asked.
    pub domains: u64,
    /// Of them, never answered before: estimated at one page and one credit.
    pub unknown: u64,
}

/// Pages and cost each (provider, endpoint, domain) of a paged endpoint took in the
/// newest of the stored runs that asked it.
type PagesTaken = BTreeMap<(String, String, String), (u64, f64)>;

/// The domains a paged endpoint is asked for: (expected, at most).
type PagedDomains = (Vec<String>, Vec<String>);

/// Snapshots read back for the pages earlier runs took.
const PAGES_LOOKBACK: usize = 31;

async fn pages_taken(
    prepared: &crate::run::Prepared,
    endpoints: &BTreeSet<(ProviderId, &str)>,
    wanted: &BTreeSet<(String, String, String)>,
) -> anyhow::Result<PagesTaken> {
    use polars::prelude::*;
    let mut taken = PagesTaken::new();
    if endpoints.is_empty() {
        return Ok(taken);
    }
    let newest_first = prepared.previous.iter().rev().filter(|m| m.date <= prepared.date).take(PAGES_LOOKBACK);
    for manifest in newest_first {
        if taken.len() == wanted.len() {
            break; // every domain asked is found: older ledgers are not read
        }
        let Some(file) = manifest.file("api_calls") else { continue };
        let bytes = prepared.store.get(&file.path).await?;
        if !ParquetReader::new(std::io::Cursor::new(bytes.clone())).schema()?.contains("page") {
            continue; // a ledger from before paged answers
        }
        let columns = ["provider", "endpoint", "domain", "page", "cost_usd", "http_status"];
        let frame = transform::read_parquet(bytes, &columns)?;
        let names: Vec<String> = endpoints.iter().map(|(_, e)| e.to_string()).collect();
        let frame = frame
            .filter(
                col("endpoint")
                    .is_in(lit(Series::new("e".into(), names)).implode(false), false)
                    .and(col("http_status").is_not_null()),
            )
            .group_by([col("provider"), col("endpoint"), col("domain")])
            .agg([col("page").max().alias("pages"), col("cost_usd").sum().alias("usd")])
            .collect()?;
        let text = |name: &str| -> anyhow::Result<Vec<String>> {
            let values = frame.column(name)?.str()?;
            Ok((0..values.len()).map(|i| values.get(i).unwrap_or_default().to_string()).collect())
        };
        let (providers, names, domains) = (text("provider")?, text("endpoint")?, text("domain")?);
        let pages = frame.column("pages")?.cast(&DataType::Int64)?;
        let usd = frame.column("usd")?.cast(&DataType::Float64)?;
        let (pages, usd) = (pages.i64()?, usd.f64()?);
        for i in 0..frame.height() {
            let key = (providers[i].clone(), names[i].clone(), domains[i].clone());
            if wanted.contains(&key) {
                let value = (pages.get(i).unwrap_or(1).max(1) as u64, usd.get(i).unwrap_or(0.0));
                taken.entry(key).or_insert(value);
            }
        }
    }
    Ok(taken)
}

#[derive(Debug, Clone)]
pub struct BudgetLine {
    pub provider: ProviderId,
    pub cost_usd: f64,
    pub per_run_usd: Option<f64>,
    pub month_to_date_usd: f64,
    pub per_month_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub date: String,
    pub targets: usize,
    pub simulated: bool,
    /// Domains the latest snapshot found running Algolia, and that snapshot.
    pub known_algolia: usize,
    pub from_snapshot: Option<String>,
    pub rows: Vec<PlanRow>,
    pub budgets: Vec<BudgetLine>,
    pub precheck: Option<PrecheckEstimate>,
}

/// What BuiltWith's free pre-check is expected to spare.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecheckEstimate {
    /// Domains whose last lookup an earlier check keeps: no call at all.
    pub kept: u64,
    /// The checks in force in the latest snapshot, and how many spared the paid lookup
    /// (BuiltWith did not know the domain, or its groups were unchanged).
    pub checks_before: u64,
    pub spared_before: u64,
}

impl Plan {
    pub fn calls(&self) -> u64 {
        self.rows.iter().map(|r| r.calls).sum()
    }
}

pub async fn plan(selection: Selection) -> anyhow::Result<Plan> {
    let waves = modules::waves(REGISTRY)?;
    let prepared = prepare(&selection).await?;
    let work = prepared.work();

    // What the latest snapshot knows about who already runs Algolia.
    let latest = prepared.previous.iter().rev().find(|m| m.date <= prepared.date);
    let mut known: BTreeSet<String> = BTreeSet::new();
    if let Some(file) = latest.and_then(|m| m.file("tech_spend")) {
        let frame = transform::read_parquet(prepared.store.get(&file.path).await?, &["domain", "runs_algolia"])?
            .filter(col("runs_algolia"))
            .select([col("domain")])
            .collect()?;
        let domains = frame.column("domain")?.str()?.clone();
        let in_work: BTreeSet<&str> = work.iter().map(|t| t.domain.as_str()).collect();
        known.extend(
            (0..domains.len()).filter_map(|i| domains.get(i)).filter(|d| in_work.contains(d)).map(str::to_string),
        );
    }

    let carry = prepared.carry(selection.date).await?;
    let mut expected = Planner::new("plan", prepared.context(selection.date, 0), &prepared.book, &carry);
    let mut unbounded = Planner::new("plan", prepared.context(selection.date, 0), &prepared.book, &carry);
    expected.load_precheck(&prepared.store, &prepared.previous).await?;
    unbounded.load_precheck(&prepared.store, &prepared.previous).await?;
    let in_work: BTreeSet<&str> = work.iter().map(|t| t.domain.as_str()).collect();
    let kept = expected.prechecked.keys().filter(|d| in_work.contains(d.as_str())).count() as u64;
    let mut counts: BTreeMap<(ProviderId, &'static str), (u64, u64)> = BTreeMap::new();
    // Calls of endpoints that page, by domain: (expected, at most).
    let mut paged: BTreeMap<(ProviderId, &'static str), PagedDomains> = BTreeMap::new();
    for wave in &waves {
        for call in expected.plan_wave(wave, &work).calls {
            match call.pager {
                Some(_) => paged.entry((call.provider, call.endpoint)).or_default().0.push(call.domain),
                None => counts.entry((call.provider, call.endpoint)).or_default().0 += 1,
            }
        }
        for call in unbounded.plan_wave(wave, &work).calls {
            match call.pager {
                Some(_) => paged.entry((call.provider, call.endpoint)).or_default().1.push(call.domain),
                None => counts.entry((call.provider, call.endpoint)).or_default().1 += 1,
            }
        }
        // The run learns who runs Algolia in the wave that reads the tech stack.
        if wave.iter().any(|m| m.id == "m02") {
            expected.not_targets.extend(known.iter().cloned());
        }
    }
    // Yahoo's session is made once for the run, and again only when a call is refused for
    // it (each call renews at most MAX_RENEWALS times); its requests are never billed.
    let (expected_calls, at_most_calls) = counts
        .iter()
        .filter(|((p, _), _)| *p == ProviderId::YahooFinance)
        .fold((0, 0), |(a, b), (_, (c, d))| (a + c, b + d));
    if at_most_calls > 0 {
        let at_most = 1 + u64::from(crate::fetch::MAX_RENEWALS) * at_most_calls;
        for endpoint in [crate::fetch::session::COOKIE_ENDPOINT, crate::fetch::session::CRUMB_ENDPOINT] {
            counts.insert((ProviderId::YahooFinance, endpoint), (u64::from(expected_calls > 0), at_most));
        }
    }
    let providers = &prepared.pipeline.pipeline.providers;
    let mut rows: Vec<PlanRow> = counts
        .into_iter()
        .map(|((provider, endpoint), (calls, at_most))| PlanRow {
            provider,
            endpoint,
            calls,
            at_most,
            cost_usd: calls as f64 * providers.get(provider).cost(endpoint),
            paged: None,
        })
        .collect();
    let wanted: BTreeSet<(String, String, String)> = paged
        .iter()
        .flat_map(|((p, e), (expected, at_most))| {
            expected.iter().chain(at_most).map(|d| (p.name().to_string(), e.to_string(), d.clone()))
        })
        .collect();
    let taken = pages_taken(&prepared, &paged.keys().copied().collect(), &wanted).await?;
    for ((provider, endpoint), (expected, at_most)) in paged {
        let per_credit = providers.get(provider).cost(endpoint);
        let of = |domain: &String| taken.get(&(provider.name().to_string(), endpoint.to_string(), domain.clone()));
        let pages = |domains: &[String]| domains.iter().map(|d| of(d).map_or(1, |(pages, _)| *pages)).sum::<u64>();
        rows.push(PlanRow {
            provider,
            endpoint,
            calls: pages(&expected),
            at_most: pages(&at_most),
            cost_usd: expected.iter().map(|d| of(d).map_or(per_credit, |(_, usd)| *usd)).sum(),
            paged: Some(PagedEstimate {
                domains: expected.len() as u64,
                unknown: expected.iter().filter(|d| of(d).is_none()).count() as u64,
            }),
        });
    }
    rows.sort_by(|a, b| (a.provider, a.endpoint).cmp(&(b.provider, b.endpoint)));
    let (month_to_date, _) = prepared.account_usage().await?;
    let budgets = ProviderId::ALL
        .iter()
        .map(|id| {
            let settings = prepared.budget_settings(*id);
            BudgetLine {
                provider: *id,
                cost_usd: rows.iter().filter(|r| r.provider == *id).map(|r| r.cost_usd).sum(),
                per_run_usd: settings.per_run_usd,
                month_to_date_usd: month_to_date.get(id).copied().unwrap_or(0.0),
                per_month_usd: settings.per_month_usd,
            }
        })
        .collect();
    let precheck = match prepared.pipeline.pipeline.precheck.enabled {
        false => None,
        true => {
            let (checks_before, spared_before) = match latest.and_then(|m| m.file("builtwith_free")) {
                None => (0, 0),
                Some(file) => {
                    let frame =
                        transform::read_parquet(prepared.store.get(&file.path).await?, &["verdict"])?.collect()?;
                    let verdicts = frame.column("verdict")?.str()?;
                    let spared = (0..verdicts.len())
                        .filter(|i| {
                            matches!(
                                verdicts.get(*i),
                                Some(modules::precheck::UNKNOWN) | Some(modules::precheck::UNCHANGED)
                            )
                        })
                        .count();
                    (verdicts.len() as u64, spared as u64)
                }
            };
            Some(PrecheckEstimate { kept, checks_before, spared_before })
        }
    };
    Ok(Plan {
        precheck,
        date: prepared.date.clone(),
        targets: work.len(),
        simulated: prepared.simulated(),
        known_algolia: known.len(),
        from_snapshot: latest.map(|m| m.snapshot_id.clone()),
        rows,
        budgets,
    })
}

/// The plan as `partnerforge plan` prints it.
pub fn render(plan: &Plan) -> String {
    let mut out = format!(
        "plan for {}: {} targets, {} providers; no call is made\n",
        plan.date,
        plan.targets,
        if plan.simulated { "simulated" } else { "real" }
    );
    match &plan.from_snapshot {
        Some(id) => out.push_str(&format!(
            "{} of them run Algolia according to snapshot {id}: they get no calls after the tech stack\n",
            plan.known_algolia
        )),
        None => out.push_str("no earlier snapshot: `at most` assumes no target turns out to run Algolia\n"),
    }
    out.push_str(&format!(
        "\n{:<14} {:<24} {:>8} {:>8} {:>10}\n",
        "provider", "endpoint", "calls", "at most", "cost USD"
    ));
    for r in &plan.rows {
        out.push_str(&format!(
            "{:<14} {:<24} {:>8} {:>8} {:>10.2}\n",
            r.provider.name(),
            r.endpoint,
            r.calls,
            r.at_most,
            r.cost_usd
        ));
    }
    let at_most: u64 = plan.rows.iter().map(|r| r.at_most).sum();
    let cost: f64 = plan.rows.iter().map(|r| r.cost_usd).sum();
    out.push_str(&format!("{:<14} {:<24} {:>8} {:>8} {:>10.2}\n", "total", "", plan.calls(), at_most, cost));
    if let Some(p) = &plan.precheck {
        let checks = plan
            .rows
            .iter()
            .find(|r| r.provider == ProviderId::BuiltWith && r.endpoint == crate::providers::builtwith::ENDPOINT_FREE)
            .map_or(0, |r| r.calls);
        out.push_str(&format!(
            "\nbuiltwith free pre-check: {checks} domains checked before their paid lookup (no charge, 1 request/s); \
             {} keep their last lookup from an earlier check (no call)",
            p.kept
        ));
        if p.checks_before > 0 {
            out.push_str(&format!(
                "; in the latest snapshot {} of {} checks ({:.0} %) spared the paid lookup",
                p.spared_before,
                p.checks_before,
                100.0 * p.spared_before as f64 / p.checks_before as f64
            ));
        }
        out.push('\n');
    }
    for r in &plan.rows {
        let Some(paged) = &r.paged else { continue };
        out.push_str(&format!(
            "\n{} {}: billed per {} relationships, not per call; {} domains, {} requests (one a page) \
             and ${:.2} as the same domains took them last time; {} never asked, counted at one page and one credit\n",
            r.provider.name(),
            r.endpoint,
            crate::providers::builtwith::RELATIONSHIPS_PER_CREDIT,
            paged.domains,
            r.calls,
            r.cost_usd,
            paged.unknown
        ));
    }
    out.push_str("\nbudgets (cost if every call is billed; sites too small to measure answer unbilled)\n");
    for b in plan.budgets.iter().filter(|b| b.cost_usd > 0.0 || b.per_run_usd.is_some() || b.per_month_usd.is_some()) {
        let cap = |c: Option<f64>| c.map(|c| format!("${c:.2}")).unwrap_or_else(|| "no cap".into());
        let over_run = b.per_run_usd.is_some_and(|c| b.cost_usd > c);
        let over_month = b.per_month_usd.is_some_and(|c| b.month_to_date_usd + b.cost_usd > c);
        out.push_str(&format!(
            "  {:<14} ${:.2} of {} per run; month to date ${:.2} + ${:.2} of {} per month{}\n",
            b.provider.name(),
            b.cost_usd,
            cap(b.per_run_usd),
            b.month_to_date_usd,
            b.cost_usd,
            cap(b.per_month_usd),
            if over_run || over_month { "  — over a cap: calls past it will be skipped" } else { "" }
        ));
    }
    out
}
