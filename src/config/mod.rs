//! Configuration: the serde types for `pipelines/*.toml` and the scoring models,
//! parsed once into types and validated before any provider call is made.
//!
//! Every error names the file, and where the TOML parser knows it, the line,
//! column and key (`deny_unknown_fields` turns a typo into an error instead of a
//! silently ignored setting). Rules are data: weights, bands, tiers, costs and
//! vendor lists live here as values, never as constants in Rust code.

pub mod alerts;
pub mod changes;
pub mod dotenv;
pub mod schedules;
mod scoring;
pub mod signals;

pub use scoring::{Band, Component, ComponentKind, ScoringModel, Tier};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of the configuration layer. Each one names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// Reads and parses one TOML file into `T`, with the file named in every error.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        // toml's message already carries "line N, column M" and a caret excerpt.
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok((value, text))
}

/// A pipeline file (`pipelines/nightly.toml`): what a run reads, fetches and scores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    pub version: u32,
    pub inputs: Inputs,
    /// Path of the scoring model, relative to the pipeline file's folder's parent
    /// (the repository root) like every other path in the file.
    pub scoring_model: PathBuf,
    /// The change rules (`pipelines/changes.toml`); without them a snapshot has no `changes`.
    #[serde(default)]
    pub changes: Option<PathBuf>,
    /// The alert rules (`pipelines/alerts.toml`); they need change rules.
    #[serde(default)]
    pub alerts: Option<PathBuf>,
    /// The signal rules and case studies (`pipelines/signals.toml`); without them the
    /// targets have no signals, priority, angle or case studies.
    #[serde(default)]
    pub signals: Option<PathBuf>,
    #[serde(default)]
    pub fetch: FetchSettings,
    #[serde(default)]
    pub run: RunSettings,
    pub detection: Detection,
    pub providers: Providers,
    #[serde(default)]
    pub simulator: SimulatorSettings,
    #[serde(default)]
    pub hiring: HiringRules,
    /// Trigger events (m12): event type → phrases that mark a news item as one.
    #[serde(default)]
    pub triggers: BTreeMap<String, Vec<String>>,
    /// Days a module's data stays fresh, by module id; a module not listed is
    /// fetched on every run.
    #[serde(default)]
    pub freshness: BTreeMap<String, u32>,
    /// BuiltWith's free pre-check before a paid Domain lookup.
    #[serde(default)]
    pub precheck: PrecheckSettings,
    /// Which shared identifiers make related domains one company (families).
    #[serde(default)]
    pub families: FamilySettings,
}

/// Domains that share a strong identifier (an analytics, tag-manager or ad account id,
/// from BuiltWith's Relationships) are one company's sites: one family, one account.
/// Shared hosting IPs, name servers or CDNs say nothing of ownership and never join.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FamilySettings {
    /// The identifier types (Relationships' `Type`, lower case) that join a family.
    pub identifiers: Vec<String>,
}

impl Default for FamilySettings {
    fn default() -> Self {
        let strong = [
            "ga",
            "ga4",
            "google-analytics",
            "gtm",
            "google-tag-manager",
            "adsense",
            "google-adsense",
            "facebook-pixel",
            "adobe-analytics",
            "hotjar",
            "newrelic",
        ];
        Self { identifiers: strong.map(String::from).to_vec() }
    }
}

/// Before a paid BuiltWith Domain lookup, ask the Free API (`free1`: technology group
/// counts, live and dead; no charge) whether it is worth paying for: a domain BuiltWith
/// does not know is not looked up, and one whose groups that matter are as they were at
/// its last full lookup, younger than `max_age_days`, keeps that lookup's results.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrecheckSettings {
    pub enabled: bool,
    /// Also before the first lookup of a domain (new book rows, discovery candidates).
    pub new_domains: bool,
    /// A full lookup older than this is made again whatever the free API says.
    pub max_age_days: u32,
    /// The technology groups whose live and dead counts must be unchanged (BuiltWith's
    /// group names, e.g. `cms`, `shop`, `widgets`).
    pub groups: Vec<String>,
}

impl Default for PrecheckSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            new_domains: true,
            max_age_days: 28,
            groups: ["cms", "shop", "widgets"].map(String::from).to_vec(),
        }
    }
}

/// Which job titles are hiring signals: phrases matched case-insensitively on word
/// boundaries. A title can count in several categories.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HiringRules {
    pub search: Vec<String>,
    pub ecommerce: Vec<String>,
    pub personalization: Vec<String>,
    pub leadership: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    pub targets: PathBuf,
    pub customers: PathBuf,
    pub tickers: PathBuf,
    /// `domain, platform, board`: where a company posts its jobs (greenhouse, lever, ashby).
    pub job_boards: Option<PathBuf>,
    /// `domain, feed_url`: a company's news feed (RSS or Atom).
    pub news_feeds: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSettings {
    /// Provider calls in flight at once across the run.
    pub concurrency: usize,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self { concurrency: 16 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// How long a run's lock holds after its last heartbeat before another run
    /// may break it (`--break-lock`). A live run renews it every
    /// `min(ttl / 3, 60 s)`, so this only bounds how long a dead holder on another
    /// host blocks the next run.
    pub lock_ttl_minutes: u64,
    /// Targets scored together when the targets table is assembled: its joins'
    /// memory follows this, not the size of the book.
    pub score_slice_rows: usize,
    /// Targets whose module rows are decoded together when the targets table is
    /// assembled: a larger book has its module tables split by domain range once, and
    /// each part read alone, so their memory follows this, not the size of the book
    /// (a part holds at least `score_slice_rows`).
    pub score_part_rows: usize,
    /// Domains whose changes are tracked together: the tables are split by domain
    /// range once, and each range is tracked and diffed alone.
    pub change_slice_rows: usize,
    /// A book of at least this many rows (100,000) stores a night's targets table by
    /// reference: the rows computed since an earlier night's whole table (its base), and
    /// the base's rows for every other target, carried without being decoded whole or
    /// written again (the Delta table refers to the base too, by a deletion vector). 0:
    /// any book; a number above the book's size: never.
    pub targets_by_reference_rows: usize,
    /// Once the rows a table stored by reference holds pass this share of its rows,
    /// the night writes the whole table (the base of the nights after it).
    pub targets_rewrite_share: f64,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            lock_ttl_minutes: 15,
            score_slice_rows: 10_000,
            score_part_rows: 250_000,
            change_slice_rows: 25_000,
            targets_by_reference_rows: 100_000,
            targets_rewrite_share: 0.1,
        }
    }
}

impl RunSettings {
    pub fn lock_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_ttl_minutes.clamp(1, 60 * 24 * 365).saturating_mul(60))
    }
}

/// How technologies found by the providers are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// Search vendors, recognised by technology name (case-insensitive, whole name
    /// or name followed by a space and more words, e.g. "Coveo Search").
    pub search_vendors: Vec<String>,
    /// The vendor whose presence means "already a customer": such domains are not targets.
    pub algolia: String,
    /// Partner technologies recognised in a tech stack, in order of preference.
    pub partner_techs: Vec<String>,
    /// A technology is current when its `LastDetected` is within this many days of the
    /// path's `LastIndexed`; older ones are history (dead technologies stay in responses).
    pub live_within_days: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    pub builtwith: ProviderSettings,
    pub similarweb: ProviderSettings,
    pub yahoo_finance: ProviderSettings,
    #[serde(default)]
    pub greenhouse: ProviderSettings,
    #[serde(default)]
    pub lever: ProviderSettings,
    #[serde(default)]
    pub ashby: ProviderSettings,
    #[serde(default)]
    pub news: ProviderSettings,
}

impl Providers {
    pub fn get(&self, id: ProviderId) -> &ProviderSettings {
        match id {
            ProviderId::BuiltWith => &self.builtwith,
            ProviderId::SimilarWeb => &self.similarweb,
            ProviderId::YahooFinance => &self.yahoo_finance,
            ProviderId::Greenhouse => &self.greenhouse,
            ProviderId::Lever => &self.lever,
            ProviderId::Ashby => &self.ashby,
            ProviderId::News => &self.news,
        }
    }
}

/// One provider's call settings. The base URL defaults to the real host; the
/// environment (`<PROVIDER>_BASE_URL`) overrides the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub base_url: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// USD per call, by endpoint name.
    #[serde(default)]
    pub costs: BTreeMap<String, f64>,
    /// Provider-specific request options (e.g. SimilarWeb's `country`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub rate: RateSettings,
    /// Endpoints with a rate limit of their own, outside the provider's (BuiltWith's
    /// Free API: 1 request/s), by endpoint name.
    #[serde(default)]
    pub endpoint_rates: BTreeMap<String, RateSettings>,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub breaker: BreakerSettings,
    #[serde(default)]
    pub budget: BudgetSettings,
}

/// Request rate limits. Calls are spaced so that neither the per-second nor the
/// per-minute limit is ever exceeded; `per_day` is a quota that stops the
/// provider cleanly (its remaining calls are `skipped_quota`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub per_second: Option<f64>,
    pub per_minute: Option<f64>,
    pub per_day: Option<u64>,
}

/// Retries with exponential backoff and full jitter, on timeouts, connection
/// errors, 429 and 5xx only.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    /// The longest single wait; a `Retry-After` beyond it gives up instead of stalling.
    pub max_delay_ms: u64,
    /// The most one call may spend waiting between its attempts.
    pub max_total_wait_ms: u64,
    /// The shortest wait, even when the provider says `Retry-After: 0`.
    pub min_delay_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 60_000,
            max_total_wait_ms: 120_000,
            min_delay_ms: 100,
        }
    }
}

/// The circuit breaker: open after `failures_to_open` consecutive failures,
/// half-open after `cooldown_secs`, closed again after `successes_to_close` successes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    pub failures_to_open: u32,
    pub cooldown_secs: u64,
    pub successes_to_close: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failures_to_open: 5, cooldown_secs: 60, successes_to_close: 2 }
    }
}

/// Spending caps in USD. A call that would cross a cap is not made.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    pub per_run_usd: Option<f64>,
    pub per_month_usd: Option<f64>,
    /// Warn once when spending reaches this share of a cap.
    pub warn_at: f64,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self { per_run_usd: None, per_month_usd: None, warn_at: 0.8 }
    }
}

fn default_timeout() -> u64 {
    30
}
fn default_connect_timeout() -> u64 {
    10
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            timeout_secs: default_timeout(),
            connect_timeout_secs: default_connect_timeout(),
            costs: BTreeMap::new(),
            options: BTreeMap::new(),
            rate: RateSettings::default(),
            endpoint_rates: BTreeMap::new(),
            retry: RetrySettings::default(),
            breaker: BreakerSettings::default(),
            budget: BudgetSettings::default(),
        }
    }
}

impl ProviderSettings {
    pub fn cost(&self, endpoint: &str) -> f64 {
        self.costs.get(endpoint).copied().unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorSettings {
    /// The simulated world is a pure function of (domain, date, seed).
    pub seed: u64,
    /// Whether runs against the simulated providers keep the account's limits:
    /// rate limits, daily quotas and budgets (`providers.*.rate`, `providers.*.budget`).
    /// Off by default: the simulator is not the real account, its calls cost
    /// nothing, and a full book at real rates takes hours.
    pub honour_limits: bool,
    /// Faults the simulated providers inject, per provider.
    pub faults: BTreeMap<String, FaultSettings>,
    /// A file the simulated providers append one JSON line to per request they
    /// answer (provider, request without its key, status): their bill, which
    /// survives the run that made the requests.
    pub request_log: Option<PathBuf>,
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self { seed: 42, honour_limits: false, faults: BTreeMap::new(), request_log: None }
    }
}

/// What can go wrong at a simulated provider. Rates are shares of requests
/// (0–1), drawn deterministically per request and attempt.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FaultSettings {
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Share of requests answered 429 with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    pub retry_after_secs: u64,
    /// Added latency per request, in milliseconds.
    pub latency_ms: u64,
    /// Share of 200 answers whose body is not JSON.
    pub malformed_rate: f64,
    /// Share of 200 answers cut short (fewer bytes than `Content-Length` promises).
    pub truncated_rate: f64,
    /// After this many requests, every request gets the provider's quota 403.
    pub quota_after: Option<u64>,
    /// Seconds after the simulator starts when it answers 503 to everything: [start, end).
    pub outage: Option<[u64; 2]>,
    /// BuiltWith: share of domains whose company name and country disagree with the book;
    /// Yahoo Finance: share of tickers whose profile names a country that does.
    pub conflict_rate: f64,
    /// Yahoo Finance: a crumb goes stale after this many quoteSummary answers (then 401
    /// "Invalid Crumb" until a new session is made).
    pub stale_crumb_after: Option<u64>,
    /// Yahoo Finance: every quoteSummary is refused (401 "Invalid Crumb") whatever the session.
    pub refuse_session: bool,
}

/// Applies `provider.key=value` settings (from the command line) over `faults`.
pub fn apply_faults(faults: &mut BTreeMap<String, FaultSettings>, settings: &[String]) -> Result<(), String> {
    for setting in settings {
        let (target, value) =
            setting.split_once('=').ok_or_else(|| format!("--fault {setting:?}: expected PROVIDER.KEY=VALUE"))?;
        let (provider, key) =
            target.split_once('.').ok_or_else(|| format!("--fault {setting:?}: expected PROVIDER.KEY=VALUE"))?;
        if ProviderId::from_name(provider).is_none() {
            return Err(format!("--fault {setting:?}: {provider:?} is not a provider ({})", ProviderId::names()));
        }
        faults
            .entry(provider.to_string())
            .or_default()
            .set(key, value)
            .map_err(|e| format!("--fault {setting:?}: {e}"))?;
    }
    Ok(())
}

impl FaultSettings {
    /// Parses `key=value` (as given on the command line) into these settings.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let rate = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("{key}: {v:?} is not a share between 0 and 1"))
        };
        let count = |v: &str| v.parse::<u64>().map_err(|_| format!("{key}: {v:?} is not a whole number"));
        match key {
            "error_rate" => self.error_rate = rate(value)?,
            "rate_429" => self.rate_429 = rate(value)?,
            "retry_after_secs" => self.retry_after_secs = count(value)?,
            "latency_ms" => self.latency_ms = count(value)?,
            "malformed_rate" => self.malformed_rate = rate(value)?,
            "truncated_rate" => self.truncated_rate = rate(value)?,
            "conflict_rate" => self.conflict_rate = rate(value)?,
            "quota_after" => self.quota_after = Some(count(value)?),
            "stale_crumb_after" => self.stale_crumb_after = Some(count(value)?),
            "refuse_session" => {
                self.refuse_session =
                    value.parse::<bool>().map_err(|_| format!("{key}: {value:?} is not true or false"))?
            }
            "outage" => {
                let (a, b) =
                    value.split_once('-').ok_or_else(|| format!("outage: {value:?} is not START-END seconds"))?;
                self.outage = Some([count(a)?, count(b)?]);
            }
            other => {
                return Err(format!(
                    "unknown fault {other:?} (error_rate, rate_429, retry_after_secs, latency_ms, malformed_rate, truncated_rate, quota_after, outage, conflict_rate, stale_crumb_after, refuse_session)"
                ));
            }
        }
        Ok(())
    }
}

/// The providers PartnerForge calls in this release.
/// Which providers a run is asked to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvidersMode {
    /// Simulated when no API keys are set, real otherwise.
    Auto,
    /// The simulated providers, started in-process on a loopback port.
    Simulated,
    /// The real provider APIs (keys from the environment).
    Real,
}

/// The account a run's calls went to, once `auto` is decided: spend and quotas
/// are counted per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderAccount {
    Simulated,
    Real,
}

impl ProviderAccount {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simulated => "simulated",
            Self::Real => "real",
        }
    }

    pub fn mode(self) -> ProvidersMode {
        match self {
            Self::Simulated => ProvidersMode::Simulated,
            Self::Real => ProvidersMode::Real,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderId {
    BuiltWith,
    SimilarWeb,
    YahooFinance,
    /// Job boards: public posting APIs, one host each.
    Greenhouse,
    Lever,
    Ashby,
    /// Company news feeds (RSS or Atom), each at its own URL.
    News,
}

impl ProviderId {
    pub const ALL: [ProviderId; 7] =
        [Self::BuiltWith, Self::SimilarWeb, Self::YahooFinance, Self::Greenhouse, Self::Lever, Self::Ashby, Self::News];

    /// A provider by its name in files and on the command line.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|id| id.name() == name)
    }

    /// Every provider's name, for error messages.
    pub fn names() -> String {
        Self::ALL.map(|id| id.name()).join(", ")
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::BuiltWith => "builtwith",
            Self::SimilarWeb => "similarweb",
            Self::YahooFinance => "yahoo_finance",
            Self::Greenhouse => "greenhouse",
            Self::Lever => "lever",
            Self::Ashby => "ashby",
            Self::News => "news",
        }
    }

    /// The real provider's host, used when neither the pipeline file nor the
    /// environment names another base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::BuiltWith => "https://api.builtwith.com",
            Self::SimilarWeb => "https://api.similarweb.com",
            Self::YahooFinance => "https://query2.finance.yahoo.com",
            Self::Greenhouse => "https://boards-api.greenhouse.io",
            Self::Lever => "https://api.lever.co",
            Self::Ashby => "https://api.ashbyhq.com",
            // Feeds are read at their own URLs unless a base URL (a feed proxy, the
            // simulator) is set: then a feed `https://host/path` is asked as `{base}/feeds/host/path`.
            Self::News => "",
        }
    }

    /// The environment variable that holds this provider's API key, if it takes one.
    pub fn key_env(self) -> Option<&'static str> {
        match self {
            Self::BuiltWith => Some("BUILTWITH_API_KEY"),
            Self::SimilarWeb => Some("SIMILARWEB_API_KEY"),
            Self::YahooFinance | Self::Greenhouse | Self::Lever | Self::Ashby | Self::News => None,
        }
    }

    pub fn base_url_env(self) -> &'static str {
        match self {
            Self::BuiltWith => "BUILTWITH_BASE_URL",
            Self::SimilarWeb => "SIMILARWEB_BASE_URL",
            Self::YahooFinance => "YAHOO_FINANCE_BASE_URL",
            Self::Greenhouse => "GREENHOUSE_BASE_URL",
            Self::Lever => "LEVER_BASE_URL",
            Self::Ashby => "ASHBY_BASE_URL",
            Self::News => "NEWS_BASE_URL",
        }
    }
}

/// A loaded pipeline with its resolved paths, its text hash and its scoring model.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    pub path: PathBuf,
    pub pipeline: Pipeline,
    /// sha256 of the pipeline file's bytes, recorded in every manifest.
    pub sha256: String,
    pub model: ScoringModel,
    /// The change rules, when the pipeline names a file.
    pub changes: Option<changes::ChangeRules>,
    /// The alert rules and people, when the pipeline names a file.
    pub alerts: Option<alerts::AlertRules>,
    /// The signal rules and the case studies they match, when the pipeline names a file.
    pub signals: Option<(signals::SignalRules, Vec<crate::transform::case_studies::CaseStudy>)>,
    /// Folder that relative paths in the pipeline are resolved against.
    pub root: PathBuf,
}

impl LoadedPipeline {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (pipeline, text): (Pipeline, String) = load_toml(path)?;
        let root = repository_root(path);
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if pipeline.fetch.concurrency == 0 {
            return Err(invalid("fetch.concurrency", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&pipeline.run.targets_rewrite_share) {
            return Err(invalid("run.targets_rewrite_share", "must be a share from 0 to 1".into()));
        }
        if pipeline.detection.search_vendors.is_empty() {
            return Err(invalid("detection.search_vendors", "must list at least one vendor".into()));
        }
        if pipeline.detection.live_within_days < 0 {
            return Err(invalid("detection.live_within_days", "must not be negative".into()));
        }
        for id in ProviderId::ALL {
            let settings = pipeline.providers.get(id);
            for (endpoint, cost) in &settings.costs {
                if !cost.is_finite() || *cost < 0.0 {
                    return Err(invalid(
                        &format!("providers.{}.costs.{endpoint}", id.name()),
                        format!("a cost must be a non-negative number of USD, not {cost}"),
                    ));
                }
            }
            let key = |field: &str| format!("providers.{}.{field}", id.name());
            let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
            let rate_ok = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v >= 1e-3);
            if !rate_ok(settings.rate.per_second) || !rate_ok(settings.rate.per_minute) {
                return Err(invalid(&key("rate"), "rates must be numbers of requests of at least 0.001".into()));
            }
            if settings.retry.max_attempts == 0 {
                return Err(invalid(&key("retry.max_attempts"), "must be at least 1 (the first attempt)".into()));
            }
            if settings.breaker.failures_to_open == 0 || settings.breaker.successes_to_close == 0 {
                return Err(invalid(
                    &key("breaker"),
                    "failures_to_open and successes_to_close must be at least 1".into(),
                ));
            }
            let b = &settings.budget;
            if !positive(b.per_run_usd) && b.per_run_usd != Some(0.0)
                || !positive(b.per_month_usd) && b.per_month_usd != Some(0.0)
            {
                return Err(invalid(&key("budget"), "caps must be non-negative numbers of USD".into()));
            }
            if !(0.0..=1.0).contains(&b.warn_at) {
                return Err(invalid(&key("budget.warn_at"), format!("{} is not a share between 0 and 1", b.warn_at)));
            }
            if let Some(url) = settings.base_url.as_ref().filter(|u| !u.is_empty()) {
                url::Url::parse(url).map_err(|e| {
                    invalid(&format!("providers.{}.base_url", id.name()), format!("{url:?} is not a URL: {e}"))
                })?;
            }
        }
        for (provider, faults) in &pipeline.simulator.faults {
            if ProviderId::from_name(provider).is_none() {
                return Err(invalid(
                    &format!("simulator.faults.{provider}"),
                    format!("not a provider ({})", ProviderId::names()),
                ));
            }
            for (name, rate) in [
                ("error_rate", faults.error_rate),
                ("rate_429", faults.rate_429),
                ("malformed_rate", faults.malformed_rate),
                ("truncated_rate", faults.truncated_rate),
                ("conflict_rate", faults.conflict_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(invalid(
                        &format!("simulator.faults.{provider}.{name}"),
                        format!("{rate} is not a share between 0 and 1"),
                    ));
                }
            }
        }
        let model_path = root.join(&pipeline.scoring_model);
        let model = ScoringModel::load(&model_path)?;
        let changes = match &pipeline.changes {
            Some(file) => {
                let file = if file.is_absolute() { file.clone() } else { root.join(file) };
                Some(changes::ChangeRules::load(&file, &crate::transform::changes::field_kinds())?)
            }
            None => None,
        };
        let alerts = match (&pipeline.alerts, &changes) {
            (Some(file), Some(changes)) => {
                let file = if file.is_absolute() { file.clone() } else { root.join(file) };
                Some(alerts::AlertRules::load(&file, &changes.categories)?)
            }
            (Some(_), None) => {
                return Err(invalid(
                    "alerts",
                    "alerts are raised on changes: the pipeline needs `changes = …` too".into(),
                ));
            }
            (None, _) => None,
        };
        let signals = match &pipeline.signals {
            Some(file) => {
                let file = if file.is_absolute() { file.clone() } else { root.join(file) };
                let rules = signals::SignalRules::load(&file)?;
                let studies_path = repository_root(&file).join(&rules.case_studies.file);
                let studies =
                    crate::transform::case_studies::load(&studies_path).map_err(|e| ConfigError::Invalid {
                        path: file.clone(),
                        key: "case_studies.file".into(),
                        message: crate::error_text(&e),
                    })?;
                Some((rules, studies))
            }
            None => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            sha256: sha256_hex(text.as_bytes()),
            pipeline,
            model,
            changes,
            alerts,
            signals,
            root,
        })
    }

    pub fn resolve(&self, relative: &Path) -> PathBuf {
        if relative.is_absolute() { relative.to_path_buf() } else { self.root.join(relative) }
    }
}

/// Pipelines live in `<root>/pipelines/`; paths inside them are relative to `<root>`.
pub(crate) fn repository_root(pipeline_path: &Path) -> PathBuf {
    let folder = pipeline_path.parent().unwrap_or(Path::new("."));
    let folder = if folder.as_os_str().is_empty() { Path::new(".") } else { folder };
    if folder.file_name().is_some_and(|n| n == "pipelines") {
        folder.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
    } else {
        folder.to_path_buf()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Providers are written by name (`builtwith`, `yahoo_finance`, …) wherever they are stored.
impl Serialize for ProviderId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ProviderId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ProviderId::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("no provider {name:?} (known: {})", ProviderId::names())))
    }
}
