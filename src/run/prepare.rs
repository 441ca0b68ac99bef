//! What a run (and its plan) reads before any call: the pipeline (bad
//! configuration stops here), the store's snapshots, the book, which providers
//! to talk to and how, and the account's spend so far.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use chrono::{Datelike, NaiveDate};

use crate::config::{BudgetSettings, LoadedPipeline, ProviderAccount, ProviderId, ProvidersMode};
use crate::fetch::budget::Budget;
use crate::fetch::{Endpoint, UsedToday};
use crate::freshness::{self, Carry};
use crate::modules::{self, Context, Tables};
use crate::providers::{self, builtwith, similarweb, yahoo};
use crate::simulate::{Keys, Simulator};
use crate::store::{Manifest, Store};
use crate::targets::{Book, Target};

use super::{Refused, Selection};

/// The keys an embedded simulator accepts (and the adapters send).
pub(crate) fn simulated_keys() -> Keys {
    Keys { builtwith: "simulated-builtwith-key".into(), similarweb: "simulated-similarweb-key".into() }
}

fn key_param(provider: ProviderId) -> Option<&'static str> {
    match provider {
        ProviderId::BuiltWith => Some(builtwith::KEY_PARAM),
        ProviderId::SimilarWeb => Some(similarweb::KEY_PARAM),
        ProviderId::YahooFinance
        | ProviderId::Greenhouse
        | ProviderId::Lever
        | ProviderId::Ashby
        | ProviderId::News => None,
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Resolves base URLs and keys: in real mode environment > pipeline file > real host.
/// Against the simulator, rate limits and quotas apply only if the pipeline says so.
pub(crate) fn endpoints(pipeline: &LoadedPipeline, simulator: Option<&Simulator>) -> anyhow::Result<Vec<Endpoint>> {
    let sim_keys = simulated_keys();
    let mut out = Vec::new();
    for id in ProviderId::ALL {
        let mut settings = pipeline.pipeline.providers.get(id).clone();
        if simulator.is_some() && !pipeline.pipeline.simulator.honour_limits {
            settings.rate = Default::default();
            settings.endpoint_rates.clear();
        }
        let (base, key) = match simulator {
            Some(sim) => {
                let key = match id {
                    ProviderId::BuiltWith => Some(sim_keys.builtwith.clone()),
                    ProviderId::SimilarWeb => Some(sim_keys.similarweb.clone()),
                    _ => None,
                };
                (sim.base_url(), key)
            }
            None => {
                let base = env_nonempty(id.base_url_env())
                    .or_else(|| settings.base_url.clone())
                    .unwrap_or_else(|| id.default_base_url().to_string());
                let key = match id.key_env() {
                    Some(var) => Some(env_nonempty(var).with_context(|| {
                        format!("real providers need {var} in the environment (or a .env file); none is set")
                    })?),
                    None => None,
                };
                (base, key)
            }
        };
        let url = match base.as_str() {
            "" => None,
            base => {
                Some(url::Url::parse(base).with_context(|| format!("{} base URL {base:?} is not a URL", id.name()))?)
            }
        };
        let key = key.and_then(|k| key_param(id).map(|param| (param, k)));
        let stop_signal: crate::fetch::StopSignal = match id {
            ProviderId::BuiltWith | ProviderId::SimilarWeb => providers::stop_signal_403,
            ProviderId::YahooFinance => providers::yahoo::stop_signal,
            // Public posting APIs take no key and have no quota to exhaust.
            ProviderId::Greenhouse | ProviderId::Lever | ProviderId::Ashby | ProviderId::News => |_, _| None,
        };
        let mut endpoint = Endpoint::new(id, url.clone(), key, settings, stop_signal);
        if let (ProviderId::YahooFinance, Some(base)) = (id, &url) {
            // Against the simulator its stand-in for fc.yahoo.com; else the environment's or Yahoo's.
            let cookie = match simulator {
                Some(sim) => format!("{}{}", sim.base_url(), crate::simulate::YAHOO_COOKIE_PATH),
                None => env_nonempty(yahoo::COOKIE_URL_ENV).unwrap_or_else(|| yahoo::COOKIE_URL.to_string()),
            };
            let cookie = url::Url::parse(&cookie)
                .with_context(|| format!("{} {cookie:?} is not a URL", yahoo::COOKIE_URL_ENV))?;
            endpoint = endpoint.with_session(yahoo::session(base, cookie));
        }
        out.push(endpoint);
    }
    Ok(out)
}

/// SimilarWeb's window: the three complete months before the run date.
fn month_window(date: NaiveDate) -> (String, String) {
    let index = date.year() * 12 + date.month0() as i32;
    let month = |i: i32| format!("{:04}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1);
    (month(index - 3), month(index - 1))
}

/// Everything a run and its plan read before any call: configuration first (bad
/// configuration stops here), then the store's snapshots and the book.
pub(crate) struct Prepared {
    pub(crate) pipeline: LoadedPipeline,
    pub(crate) store: Store,
    pub(crate) date: String,
    pub(crate) previous: Vec<Manifest>,
    pub(crate) book: Book,
    /// Indexes into `book.targets` of the targets this run refreshes.
    pub(crate) work: Vec<usize>,
    pub(crate) excluded_customers: usize,
    pub(crate) account: ProviderAccount,
    pub(crate) force: Vec<String>,
    pub(crate) only: Option<Vec<String>>,
}

impl Prepared {
    pub(crate) fn work(&self) -> Vec<&Target> {
        self.work.iter().map(|i| &self.book.targets[*i]).collect()
    }

    pub(crate) fn context(&self, date: NaiveDate, fetched_at_ms: i64) -> Context {
        let p = &self.pipeline.pipeline;
        Context {
            detection: p.detection.clone(),
            hiring: p.hiring.clone(),
            triggers: p.triggers.clone(),
            customers: self.book.customers.clone(),
            builtwith_version: p
                .providers
                .builtwith
                .options
                .get("api_version")
                .cloned()
                .unwrap_or_else(|| builtwith::DOMAIN_API_VERSION.into()),
            similarweb_country: p
                .providers
                .similarweb
                .options
                .get("country")
                .cloned()
                .unwrap_or_else(|| "world".into()),
            months: month_window(date),
            fetched_at_ms,
            snapshot_id: self.date.clone(),
            run_date: date,
            precheck: crate::modules::precheck::Precheck { settings: p.precheck.clone(), lookups: Default::default() },
        }
    }

    /// Month-to-date spend and today's requests of the account this run talks to, by
    /// the UTC day of each call, from the spend record (every call paid, committed or not).
    pub(crate) async fn account_usage(&self) -> anyhow::Result<(BTreeMap<ProviderId, f64>, UsedToday)> {
        let all = self.store.all_generations().await?;
        crate::run::spend::account_use(&self.store, self.account, chrono::Utc::now().date_naive(), &all).await
    }

    /// What the latest snapshot up to `date` still covers, by the pipeline's freshness.
    pub(crate) async fn carry(&self, date: NaiveDate) -> anyhow::Result<Carry> {
        let p = &self.pipeline.pipeline;
        let previous = self.previous.iter().rev().find(|m| m.date <= self.date);
        let schemas =
            Tables::default().batches(0, "")?.into_iter().map(|(table, batch)| (table, batch.schema())).collect();
        let only = self.only.as_deref();
        Ok(freshness::plan(&self.store, previous, date, &p.freshness, &self.force, only, &schemas).await?)
    }

    /// The budget caps: the pipeline's, except against the simulator unless it honours limits.
    pub(crate) fn budget_settings(&self, id: ProviderId) -> BudgetSettings {
        let p = &self.pipeline.pipeline;
        let mut budget = p.providers.get(id).budget.clone();
        if self.simulated() && !p.simulator.honour_limits {
            (budget.per_run_usd, budget.per_month_usd) = (None, None);
        }
        budget
    }

    pub(crate) fn simulated(&self) -> bool {
        self.account == ProviderAccount::Simulated
    }

    /// Refuses a date that already has a snapshot, unless it is to be replaced.
    pub(crate) fn refuse_existing_date(&self, replace: bool) -> Result<(), Refused> {
        match self.previous.iter().find(|m| m.date == self.date) {
            Some(existing) if !replace => Err(Refused::DateTaken {
                store: self.store.url().to_string(),
                date: self.date.clone(),
                generation: existing.generation,
                run_id: existing.run_id.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn budget(&self, month_to_date: &BTreeMap<ProviderId, f64>) -> Budget {
        Budget::new(ProviderId::ALL.iter().map(|id| (*id, self.budget_settings(*id))).collect(), month_to_date)
    }
}

pub(crate) async fn prepare(selection: &Selection) -> anyhow::Result<Prepared> {
    let pipeline = LoadedPipeline::load(&selection.pipeline)?;
    let p = &pipeline.pipeline;
    let store = Store::open(&selection.store)?;
    let previous = store.snapshots().await?;
    let targets_path = selection.targets.clone().unwrap_or_else(|| pipeline.resolve(&p.inputs.targets));
    let mut book =
        Book::load(&targets_path, &pipeline.resolve(&p.inputs.customers), &pipeline.resolve(&p.inputs.tickers))?;
    if let Some(path) = &p.inputs.job_boards {
        book.load_job_boards(&pipeline.resolve(path))?;
    }
    if let Some(path) = &p.inputs.news_feeds {
        book.load_news_feeds(&pipeline.resolve(path))?;
    }
    for rejected in &book.rejected {
        tracing::warn!(target: "partnerforge::seed", "skipped {rejected}");
    }
    // Targets discovery found (`pipelines/discovery.toml`) join the pipeline's own book.
    if selection.targets.is_none() {
        let known: std::collections::BTreeSet<String> = book.targets.iter().map(|t| t.domain.clone()).collect();
        for (domain, technology) in super::discovery::discovered(&store).await? {
            if !known.contains(&domain) {
                book.targets.push(crate::targets::Target {
                    domain,
                    company_name: None,
                    partner_tech: Some(technology),
                    vertical: None,
                    country: None,
                });
            }
        }
    }
    // A site that moved is looked up under its new domain (the latest snapshot's renames).
    let date = selection.date.to_string();
    if let Some(entry) = previous.iter().rev().find(|m| m.date < date).and_then(|m| m.file("renames")) {
        let renames: BTreeMap<String, String> = crate::transform::renames::read(&store.get(&entry.path).await?)?
            .into_iter()
            .map(|r| (r.domain, r.renamed_to))
            .collect();
        for (old, new) in book.rename(&renames) {
            tracing::info!(target: "partnerforge::seed", "{old} has moved to {new}: looked up as {new}, its history carried over");
        }
    }
    let mut work: Vec<usize> =
        (0..book.targets.len()).filter(|i| !book.customers.contains(&book.targets[*i].domain)).collect();
    let excluded_customers = book.targets.len() - work.len();
    if let Some(limit) = selection.limit {
        work.truncate(limit);
    }
    let no_keys = || ProviderId::ALL.iter().filter_map(|id| id.key_env()).all(|var| env_nonempty(var).is_none());
    let account = match selection.providers {
        ProvidersMode::Simulated => ProviderAccount::Simulated,
        ProvidersMode::Real => ProviderAccount::Real,
        ProvidersMode::Auto if no_keys() => ProviderAccount::Simulated,
        ProvidersMode::Auto => ProviderAccount::Real,
    };
    // Module names on the command line and in the freshness table must exist.
    let known: Vec<&str> = modules::REGISTRY.iter().map(|m| m.id).collect();
    let named = selection.force.iter().chain(selection.only.iter().flatten());
    if let Some(unknown) = named.clone().find(|m| !known.contains(&m.as_str())) {
        bail!("no module {unknown:?}: the modules are {}", known.join(", "));
    }
    if let Some(unknown) = p.freshness.keys().find(|m| !known.contains(&m.as_str())) {
        bail!(
            "{}: freshness.{unknown}: no such module (the modules are {})",
            selection.pipeline.display(),
            known.join(", ")
        );
    }
    Ok(Prepared {
        force: selection.force.clone(),
        only: selection.only.clone(),
        date: selection.date.to_string(),
        pipeline,
        store,
        previous,
        book,
        work,
        excluded_customers,
        account,
    })
}
