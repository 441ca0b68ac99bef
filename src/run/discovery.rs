//! Target discovery: `partnerforge run --pipeline pipelines/discovery.toml`.
//!
//! BuiltWith's Lists API (`lists12`) names the sites running each partner technology.
//! A discovery run reads those lists to their end (within a page budget), keeps the
//! domains that are not customers, not already in the book, not running Algolia (its
//! own list, and the latest snapshot's tech stacks) and not found before, asks the free
//! pre-check (`free1`) whether BuiltWith knows each, and records the known ones as
//! discovered. The nightly run adds the discovered domains to its book and enriches them.
//!
//! Nothing is paid twice: a list read within `list_freshness_days` is taken from the
//! run that read it, and a candidate checked before is not checked again. Each run's
//! files go to `discovery/<date>/<run_id>/` (`lists`, `candidates`, `api_calls`), and
//! `done.json` is written last: a folder without it is a run that never finished, and
//! is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow::array::{Array, BooleanArray, StringArray};
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{Selection, prepare, spend};
use crate::config::ProviderId;
use crate::fetch::clock::TokioClock;
use crate::fetch::{Call, Exchange, Fetcher, LedgerRow, Outcome};
use crate::providers::{Answer, builtwith};
use crate::store::Store;
use crate::store::table::{TableBuilder, to_parquet};

/// `pipelines/discovery.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    pub name: String,
    pub version: u32,
    /// The pipeline whose book, providers, keys and budgets discovery shares.
    pub nightly: PathBuf,
    pub discovery: DiscoverySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// The technologies whose lists are read (default: the nightly's partner technologies).
    pub technologies: Vec<String>,
    /// Technologies whose sites are never targets (they run Algolia).
    pub exclude: Vec<String>,
    /// A list read this many days ago or less is not read again.
    pub list_freshness_days: u32,
    /// Lists API pages a run may pay for, all lists together.
    pub max_pages: u32,
    /// Free pre-checks a run may make.
    pub max_checks: u32,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            technologies: Vec::new(),
            exclude: vec!["Algolia".into()],
            list_freshness_days: 7,
            max_pages: 60,
            max_checks: 2_000,
        }
    }
}

/// Whether a pipeline file is a discovery pipeline (it has a `[discovery]` table).
pub fn is_discovery(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("discovery"))
}

/// What one list gave.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    pub technology: String,
    pub domains: usize,
    /// Pages paid for this run (0: taken from an earlier run).
    pub pages: u32,
    /// The earlier run's date it was taken from.
    pub reused_from: Option<String>,
    /// Read to its end (a list cut by the page budget, or that failed, is not).
    pub complete: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryReport {
    pub run_id: String,
    pub date: String,
    pub lists: Vec<ListReport>,
    /// Domains on the technologies' lists.
    pub listed: usize,
    pub excluded_customers: usize,
    pub excluded_book: usize,
    pub excluded_algolia: usize,
    /// Candidates checked by an earlier run.
    pub seen_before: usize,
    /// Candidates checked now, and of them unknown to BuiltWith.
    pub checked: usize,
    pub unknown: usize,
    /// Candidates left for the next run (the check budget, or a failed check).
    pub unchecked: usize,
    /// New targets: known to BuiltWith, now in the book of the next nightly run.
    pub discovered: usize,
    pub calls: u64,
    pub spend_usd: f64,
    pub location: String,
    pub partial: bool,
}

/// A domain on a list, or a candidate, as stored.
struct Listed {
    technology: String,
    domain: String,
}

/// The committed runs' folders (`discovery/<date>/<run_id>`), oldest first.
pub async fn committed(store: &Store) -> anyhow::Result<Vec<(String, String)>> {
    let mut runs: Vec<(String, String)> = store
        .list("discovery")
        .await?
        .into_iter()
        .filter_map(|p| p.strip_suffix("/done.json").map(str::to_string))
        .filter_map(|folder| folder.split('/').nth(1).map(|date| (date.to_string(), folder.clone())))
        .collect();
    runs.sort();
    Ok(runs)
}

fn text_column<'a>(batch: &'a arrow::record_batch::RecordBatch, name: &str) -> anyhow::Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .with_context(|| format!("no text column {name}"))
}

async fn read(store: &Store, path: &str) -> anyhow::Result<Vec<arrow::record_batch::RecordBatch>> {
    let bytes = store.get(path).await?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    reader.collect::<Result<Vec<_>, _>>().with_context(|| format!("reading {path}"))
}

/// Every domain discovery found and BuiltWith knows, with the technology it was listed
/// for, from every committed run: what the nightly run adds to its book.
pub async fn discovered(store: &Store) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for (_, folder) in committed(store).await? {
        for batch in read(store, &format!("{folder}/candidates.parquet")).await? {
            let (domains, techs) = (text_column(&batch, "domain")?, text_column(&batch, "technology")?);
            let known = batch.column_by_name("known").and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned());
            for i in 0..batch.num_rows() {
                if known.as_ref().is_some_and(|k| !k.is_null(i) && k.value(i)) {
                    out.entry(domains.value(i).to_string()).or_insert_with(|| techs.value(i).to_string());
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The page bodies a (paged) list call was answered with, in page order — also when the
/// call stopped at the page cap, whose pages were paid for.
fn pages(exchange: &Exchange) -> Vec<Bytes> {
    let last = exchange.attempts.iter().map(|a| a.page).max().unwrap_or(0);
    (1..=last)
        .filter_map(|page| {
            exchange.attempts.iter().rev().find(|a| a.page == page && a.session.is_none() && a.reply.is_success())
        })
        .map(|a| a.reply.body.clone())
        .collect()
}

/// The discovery file, the nightly pipeline it shares prepared, and the lists it reads.
async fn load(selection: Selection) -> anyhow::Result<(DiscoveryFile, prepare::Prepared, Vec<String>)> {
    let path = selection.pipeline.clone();
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: DiscoveryFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let root = crate::config::repository_root(&path);
    let nightly = if file.nightly.is_absolute() { file.nightly.clone() } else { root.join(&file.nightly) };
    let nightly_selection = Selection { pipeline: nightly, limit: None, force: Vec::new(), only: None, ..selection };
    let prepared = prepare::prepare(&nightly_selection).await?;
    let technologies: Vec<String> = if file.discovery.technologies.is_empty() {
        prepared.pipeline.pipeline.detection.partner_techs.clone()
    } else {
        file.discovery.technologies.clone()
    };
    if technologies.is_empty() {
        bail!(
            "{}: discovery.technologies is empty and the nightly pipeline names no partner technology",
            path.display()
        );
    }
    Ok((file, prepared, technologies))
}

/// The lists finished runs read within the freshness window before `date`, by technology:
/// the date of the run to take each from, and its domains.
async fn fresh_lists(
    store: &Store,
    date: NaiveDate,
    freshness_days: u32,
) -> anyhow::Result<BTreeMap<String, (String, Vec<String>)>> {
    let fresh_from = date - chrono::Duration::days(i64::from(freshness_days));
    let mut lists: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (run_date, folder) in committed(store).await? {
        let day: NaiveDate = run_date.parse().unwrap_or(NaiveDate::MIN);
        if day < fresh_from || day > date {
            continue;
        }
        for batch in read(store, &format!("{folder}/lists.parquet")).await? {
            let (techs, domains) = (text_column(&batch, "technology")?, text_column(&batch, "domain")?);
            let complete =
                batch.column_by_name("complete").and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned());
            for i in 0..batch.num_rows() {
                if complete.as_ref().is_some_and(|c| !c.is_null(i) && c.value(i)) {
                    let entry =
                        lists.entry(techs.value(i).to_string()).or_insert_with(|| (run_date.clone(), Vec::new()));
                    if entry.0 == run_date {
                        entry.1.push(domains.value(i).to_string());
                    }
                }
            }
        }
    }
    Ok(lists)
}

/// `plan` of a discovery pipeline: which lists it would read or reuse, and its budget.
pub async fn plan(selection: Selection) -> anyhow::Result<String> {
    let (file, prepared, technologies) = load(selection).await?;
    let s = &file.discovery;
    let date: NaiveDate = prepared.date.parse()?;
    let fresh = fresh_lists(&prepared.store, date, s.list_freshness_days).await?;
    let page_cost = prepared.pipeline.pipeline.providers.get(ProviderId::BuiltWith).cost(builtwith::ENDPOINT_LISTS);
    let mut out = format!("discovery plan for {}: no call is made\n", prepared.date);
    let excluded = s.exclude.iter().map(|t| (t, " (excluded: its sites are never targets)"));
    let mut to_read = 0;
    for (technology, note) in excluded.chain(technologies.iter().map(|t| (t, ""))) {
        match fresh.get(technology) {
            Some((from, _)) => {
                out.push_str(&format!("  list {technology}: from the run of {from} (still fresh), no call{note}\n"))
            }
            None => {
                to_read += 1;
                out.push_str(&format!("  list {technology}: read to its end{note}\n"));
            }
        }
    }
    let pages = if to_read == 0 { 0 } else { s.max_pages };
    out.push_str(&format!(
        "  at most {pages} Lists API pages (${:.2}) for the {to_read} lists to read, and {} free pre-checks \
         (1 request/s)\n",
        f64::from(pages) * page_cost,
        s.max_checks
    ));
    Ok(out)
}

/// Runs a discovery pipeline: `selection.pipeline` is the discovery file.
pub async fn run(selection: Selection) -> anyhow::Result<DiscoveryReport> {
    let (file, prepared, technologies) = load(selection).await?;
    let settings = file.discovery.clone();
    let store = prepared.store.clone();
    let now = Utc::now();
    let run_id = super::run_id(now);
    let ttl = prepared.pipeline.pipeline.run.lock_ttl();
    let (lock, _) = store.acquire_lock(&file.name, &run_id, ttl, false).await?;
    let lapsed = tokio_util::sync::CancellationToken::new();
    let heartbeat = tokio::spawn(super::renew(store.clone(), lock.clone(), ttl, lapsed));
    let result = discover(&prepared, &settings, &technologies, &run_id, nightly_selection_date(&prepared)).await;
    heartbeat.abort();
    store.release_lock(lock).await?;
    let report = result?;
    if let Err(e) = spend::seal(&store, &run_id, now.date_naive(), Utc::now().date_naive()).await {
        tracing::warn!("could not seal the spend record of {run_id}: {e}");
    }
    Ok(report)
}

fn nightly_selection_date(prepared: &prepare::Prepared) -> NaiveDate {
    prepared.date.parse().unwrap_or_else(|_| Utc::now().date_naive())
}

async fn discover(
    prepared: &prepare::Prepared,
    settings: &DiscoverySettings,
    technologies: &[String],
    run_id: &str,
    date: NaiveDate,
) -> anyhow::Result<DiscoveryReport> {
    let store = &prepared.store;
    let pipeline = &prepared.pipeline;
    let simulator = super::start_providers(prepared, date, &[]).await?;
    let (month_to_date, used_today) = prepared.account_usage().await?;
    let fetcher = Fetcher::new(
        prepare::endpoints(pipeline, simulator.as_ref())?,
        pipeline.pipeline.fetch.concurrency,
        prepared.budget(&month_to_date),
        &used_today,
        Arc::new(TokioClock::default()),
    )?;
    let key = fetcher.endpoint(ProviderId::BuiltWith)?.clone();
    let mut recorder = spend::Recorder::new(store, run_id, prepared.account, 1);
    let mut ledger: Vec<LedgerRow> = Vec::new();
    let record = |exchanges: &[(Call, Exchange)]| {
        let mut days = spend::Days::new();
        for (call, exchange) in exchanges {
            spend::merge(&mut days, &spend::of_exchange(call.provider, exchange));
        }
        days
    };

    // What earlier runs read and checked.
    let committed = committed(store).await?;
    let fresh_from = date - chrono::Duration::days(i64::from(settings.list_freshness_days));
    let earlier_lists = fresh_lists(store, date, settings.list_freshness_days).await?;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (run_date, folder) in &committed {
        let run_day: NaiveDate = run_date.parse().unwrap_or(NaiveDate::MIN);
        for batch in read(store, &format!("{folder}/candidates.parquet")).await? {
            let domains = text_column(&batch, "domain")?;
            let known = batch.column_by_name("known").and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned());
            for i in 0..batch.num_rows() {
                // Known: found before. Unknown: asked again once the lists are read again.
                let was_known = known.as_ref().is_some_and(|k| !k.is_null(i) && k.value(i));
                if was_known || run_day >= fresh_from {
                    seen.insert(domains.value(i).to_string());
                }
            }
        }
    }

    // The lists: taken from an earlier run while fresh, else read page by page within the budget.
    let mut pages_left = settings.max_pages;
    let mut lists: Vec<ListReport> = Vec::new();
    let mut listed: Vec<Listed> = Vec::new();
    let mut excluded_sites: BTreeSet<String> = BTreeSet::new();
    let mut stored_lists: Vec<(String, String, bool)> = Vec::new();
    let all: Vec<(&String, bool)> =
        settings.exclude.iter().map(|t| (t, true)).chain(technologies.iter().map(|t| (t, false))).collect();
    for (technology, exclusion) in all {
        let domains: Vec<String>;
        let mut report = ListReport {
            technology: technology.clone(),
            domains: 0,
            pages: 0,
            reused_from: None,
            complete: true,
            error: None,
        };
        if let Some((from, earlier)) = earlier_lists.get(technology) {
            domains = earlier.clone();
            report.reused_from = Some(from.clone());
        } else if pages_left == 0 {
            report.complete = false;
            report.error = Some("not read: the run's page budget is spent".into());
            domains = Vec::new();
        } else {
            let mut pager = builtwith::LISTS_PAGER;
            pager.max_pages = pages_left;
            let call = Call::get(
                ProviderId::BuiltWith,
                builtwith::ENDPOINT_LISTS,
                technology,
                builtwith::lists_request(technology, None),
            )
            .paged(pager);
            let done = fetcher.execute(vec![call]).await?;
            let days = record(&done);
            recorder.write_objects(days).await.map_err(|e| anyhow::anyhow!("the spend record: {e}"))?;
            let (call, exchange) = done.into_iter().next().context("the list call came back")?;
            let bodies = pages(&exchange);
            report.pages = exchange.attempts.iter().filter(|a| a.cost_usd > 0.0).count() as u32;
            pages_left = pages_left.saturating_sub(report.pages);
            let mut found = Vec::new();
            for body in &bodies {
                match builtwith::parse_list_page(body) {
                    Ok(page) => found.extend(page.domains),
                    Err(e) => report.error = Some(e.to_string()),
                }
            }
            let verdict = match (super::waves::unanswered(&exchange), &report.error) {
                (Some(failure), _) => Err(failure),
                (None, Some(bad)) => Err((Outcome::Invalid, bad.clone())),
                (None, None) if exchange.attempts.last().is_some_and(|a| a.reply.is_success()) => Ok(Outcome::Ok),
                (None, None) => Err((Outcome::Failed, "the list was not answered".into())),
            };
            if let Err((_, why)) = &verdict {
                report.complete = false;
                report.error = Some(why.clone());
            }
            ledger
                .extend(super::waves::ledger_rows(run_id, &call, "discovery", &exchange, &verdict, &|e| key.redact(e)));
            domains = found;
        }
        report.domains = domains.len();
        for domain in &domains {
            stored_lists.push((technology.clone(), domain.clone(), report.complete && report.reused_from.is_none()));
            if exclusion {
                excluded_sites.insert(domain.clone());
            } else {
                listed.push(Listed { technology: technology.clone(), domain: domain.clone() });
            }
        }
        lists.push(report);
    }

    // Candidates: each domain once (its first list), minus what is not a new target.
    let book: BTreeSet<&str> = prepared.book.targets.iter().map(|t| t.domain.as_str()).collect();
    let latest = prepared.previous.last();
    let mut algolia = excluded_sites;
    if let Some(file) = latest.and_then(|m| m.file("tech_spend")) {
        for batch in read(store, &file.path).await? {
            let domains = text_column(&batch, "domain")?;
            if let Some(runs) =
                batch.column_by_name("runs_algolia").and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned())
            {
                for i in 0..batch.num_rows() {
                    if !runs.is_null(i) && runs.value(i) {
                        algolia.insert(domains.value(i).to_string());
                    }
                }
            }
        }
    }
    let mut first_list: BTreeMap<String, String> = BTreeMap::new();
    for l in &listed {
        first_list.entry(l.domain.clone()).or_insert_with(|| l.technology.clone());
    }
    let (mut customers, mut in_book, mut runs_algolia, mut seen_before) = (0, 0, 0, 0);
    let mut candidates: Vec<(String, String)> = Vec::new();
    for (domain, technology) in &first_list {
        if prepared.book.customers.contains(domain) {
            customers += 1;
        } else if book.contains(domain.as_str()) {
            in_book += 1;
        } else if algolia.contains(domain) {
            runs_algolia += 1;
        } else if seen.contains(domain) {
            seen_before += 1;
        } else {
            candidates.push((domain.clone(), technology.clone()));
        }
    }

    // The free pre-check, within its budget: only domains BuiltWith knows are targets.
    let to_check = candidates.len().min(settings.max_checks as usize);
    let calls: Vec<Call> = candidates[..to_check]
        .iter()
        .map(|(domain, _)| {
            Call::get(ProviderId::BuiltWith, builtwith::ENDPOINT_FREE, domain, builtwith::free_request(domain))
        })
        .collect();
    let checked = fetcher.execute(calls).await?;
    let days = record(&checked);
    recorder.write_objects(days).await.map_err(|e| anyhow::anyhow!("the spend record: {e}"))?;
    let technology_of: BTreeMap<&str, &str> = candidates.iter().map(|(d, t)| (d.as_str(), t.as_str())).collect();
    let mut results: Vec<(String, String, bool)> = Vec::new();
    for (call, exchange) in &checked {
        let verdict = match (super::waves::unanswered(exchange), exchange.answer()) {
            (Some(failure), _) => Err(failure),
            (None, Some(reply)) if reply.is_success() => match builtwith::parse_free(&reply.body) {
                Ok(Answer::Data(_)) => Ok(Outcome::Ok),
                Ok(Answer::NoData(_)) => Ok(Outcome::NoData),
                Err(e) => Err((Outcome::Invalid, e.to_string())),
            },
            (None, reply) => Err((Outcome::Failed, format!("HTTP {:?}", reply.and_then(|r| r.status)))),
        };
        // A check that failed is left for the next run.
        let known = verdict.as_ref().ok().map(|outcome| *outcome == Outcome::Ok);
        ledger.extend(super::waves::ledger_rows(run_id, call, "discovery", exchange, &verdict, &|e| key.redact(e)));
        if let Some(known) = known {
            let technology = technology_of.get(call.domain.as_str()).copied().unwrap_or_default();
            results.push((call.domain.clone(), technology.to_string(), known));
        }
    }
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }

    // The run's files, `done.json` last.
    let folder = format!("discovery/{date}/{run_id}");
    let lists_batch = TableBuilder::new()
        .text("technology", stored_lists.iter().map(|(t, _, _)| Some(t)))
        .text("domain", stored_lists.iter().map(|(_, d, _)| Some(d)))
        .boolean("complete", stored_lists.iter().map(|(_, _, c)| Some(*c)))
        .date("listed_on", stored_lists.iter().map(|_| Some(date)))
        .finish()?;
    let candidates_batch = TableBuilder::new()
        .text("domain", results.iter().map(|(d, _, _)| Some(d)))
        .text("technology", results.iter().map(|(_, t, _)| Some(t)))
        .boolean("known", results.iter().map(|(_, _, k)| Some(*k)))
        .date("first_seen", results.iter().map(|_| Some(date)))
        .text("source", results.iter().map(|_| Some("builtwith_lists")))
        .text("run_id", results.iter().map(|_| Some(run_id)))
        .finish()?;
    store.put(&format!("{folder}/lists.parquet"), to_parquet(&lists_batch)?).await?;
    store.put(&format!("{folder}/candidates.parquet"), to_parquet(&candidates_batch)?).await?;
    store
        .put(&format!("{folder}/api_calls.parquet"), to_parquet(&super::ledger_batch(&ledger, &date.to_string())?)?)
        .await?;
    let unknown = results.iter().filter(|(_, _, k)| !k).count();
    let report = DiscoveryReport {
        run_id: run_id.to_string(),
        date: date.to_string(),
        listed: first_list.len(),
        excluded_customers: customers,
        excluded_book: in_book,
        excluded_algolia: runs_algolia,
        seen_before,
        checked: results.len(),
        unknown,
        unchecked: candidates.len() - results.len(),
        discovered: results.len() - unknown,
        calls: ledger.iter().filter(|r| r.outcome.was_sent()).count() as u64,
        spend_usd: (ledger.iter().map(|r| r.cost_usd).sum::<f64>() * 100.0).round() / 100.0 + 0.0,
        location: format!("{}/{folder}/", store.url().trim_end_matches('/')),
        partial: lists.iter().any(|l| !l.complete) || results.len() < candidates.len(),
        lists,
    };
    let done = serde_json::to_vec_pretty(&report)?;
    store.put(&format!("{folder}/done.json"), Bytes::from(done)).await?;
    Ok(report)
}

/// The report as `run` prints it.
pub fn summary(report: &DiscoveryReport) -> String {
    let mut out = format!(
        "discovery {} committed ({}, run {})\n",
        report.date,
        if report.partial { "partial" } else { "completed" },
        report.run_id
    );
    for l in &report.lists {
        let how = match (&l.reused_from, l.pages) {
            (Some(from), _) => format!("from the run of {from} (still fresh), no call"),
            (None, pages) => format!("{pages} pages paid"),
        };
        let state = match &l.error {
            Some(why) => format!(" — incomplete: {why}"),
            None => String::new(),
        };
        out.push_str(&format!("  list {:<28} {:>6} domains, {how}{state}\n", l.technology, l.domains));
    }
    out.push_str(&format!(
        "  listed          {} domains: customers {}, in the book {}, running Algolia {}, found before {}\n",
        report.listed, report.excluded_customers, report.excluded_book, report.excluded_algolia, report.seen_before
    ));
    out.push_str(&format!(
        "  pre-checked     {} (free): unknown to BuiltWith {}; left for the next run {}\n",
        report.checked, report.unknown, report.unchecked
    ));
    out.push_str(&format!(
        "  discovered      {} new targets (the next nightly run enriches them)\n",
        report.discovered
    ));
    out.push_str(&format!("  calls           {} made, ${:.2} spent\n", report.calls, report.spend_usd));
    out.push_str(&format!("  location        {}", report.location));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovery_pipeline_is_told_by_its_discovery_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("discovery.toml");
        std::fs::write(&path, "name = \"discovery\"\nversion = 1\nnightly = \"pipelines/nightly.toml\"\n[discovery]\n")
            .unwrap();
        assert!(is_discovery(&path));
        std::fs::write(&path, "name = \"nightly\"\n").unwrap();
        assert!(!is_discovery(&path));
        assert!(!is_discovery(&dir.path().join("missing.toml")));
    }
}
