//! The intelligence modules: which provider calls feed which normalized table,
//! what each depends on, and the waves a run executes them in.
//!
//! Each module is one file with a `MODULE` declaration (id, provider, tables,
//! dependencies) and two functions: the calls it needs for a target, and how
//! the parsed replies become rows. The waves come from a topological sort of
//! the dependencies (`waves`), not from a hand-written order: adding a module
//! is one file plus one line in `REGISTRY`.

mod analysts;
mod company;
mod competitors;
mod financials;
mod hiring;
mod news;
pub mod precheck;
mod related;
mod stock;
pub mod tables;
mod tech_fallback;
mod tech_stack;
mod traffic;
mod traffic_sources;

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Detection, HiringRules, ProviderId};
use crate::fetch::{Call, Outcome, Reply};
use crate::providers::{self, Answer, ProviderError};
pub use tables::{FetchRow, RawRow, Tables};

/// The calendar date (UTC) of a provider's date text: `2026-11-02`, RFC 3339
/// (`2026-11-03T10:00:00Z`, any offset) or RFC 2822 (`Mon, 02 Nov 2026 09:00:00 GMT`,
/// as RSS writes it). Anything else is no date (the raw body keeps the text).
pub fn calendar_date(text: &str) -> Option<chrono::NaiveDate> {
    let text = text.trim();
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(date);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_rfc2822(text))
        .map(|t| t.with_timezone(&chrono::Utc).date_naive())
        .ok()
}

/// What a module's calls are about.
pub struct Subject<'a> {
    pub domain: &'a str,
    pub ticker: Option<&'a str>,
    /// Where the company posts jobs: (platform, board).
    pub job_board: Option<(ProviderId, &'a str)>,
    /// The company's news feed URL.
    pub news_feed: Option<&'a str>,
}

/// Request settings every module may need, resolved once per run.
pub struct Context {
    pub detection: Detection,
    pub hiring: HiringRules,
    /// Existing customers (they run Algolia), for competitors.
    pub customers: std::collections::BTreeSet<String>,
    /// Trigger event type → phrases.
    pub triggers: std::collections::BTreeMap<String, Vec<String>>,
    pub builtwith_version: String,
    pub similarweb_country: String,
    /// SimilarWeb's monthly window, `YYYY-MM`.
    pub months: (String, String),
    pub fetched_at_ms: i64,
    pub snapshot_id: String,
    /// The run's date: what `fetches.fetched_on` records.
    pub run_date: chrono::NaiveDate,
    /// BuiltWith's free pre-check (m00): its settings and each domain's last full lookup.
    pub precheck: precheck::Precheck,
}

pub struct Module {
    pub id: &'static str,
    pub name: &'static str,
    pub provider: ProviderId,
    pub depends_on: &'static [&'static str],
    /// A module this one stands in for: it runs for a domain only when that module
    /// failed there (and is ordered after it).
    pub fallback_for: Option<&'static str>,
    /// A free pre-check that runs before this module (in an earlier wave) and may spare
    /// its paid call; should the check fail, the call is made.
    pub checked_by: Option<&'static str>,
    /// The tables its rows go to (carried forward with it when it is fresh).
    pub tables: &'static [&'static str],
    /// The calls this module needs for a subject; empty when it does not apply
    /// (e.g. financials for a company without a ticker).
    pub calls: fn(&Context, &Subject) -> Vec<Call>,
    /// Turns this module's parsed replies for one domain into rows.
    pub normalize: fn(&Context, &Subject, &[&Parsed], &mut Tables),
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("id", &self.id).field("depends_on", &self.depends_on).finish()
    }
}

/// Every module this build knows, in no particular order.
pub const REGISTRY: &[&Module] = &[
    &precheck::MODULE,
    &company::MODULE,
    &tech_stack::MODULE,
    &tech_fallback::MODULE,
    &competitors::MODULE,
    &related::MODULE,
    &traffic::MODULE,
    &traffic_sources::MODULE,
    &financials::MODULE,
    &stock::MODULE,
    &analysts::MODULE,
    &hiring::MODULE,
    &news::QUOTES,
    &news::TRIGGERS,
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModuleError {
    #[error("module {module} depends on {missing}, which is not registered")]
    UnknownDependency { module: String, missing: String },
    #[error("the module dependencies form a cycle: {0}")]
    Cycle(String),
}

impl Module {
    /// Everything that must run before this module: its dependencies, the module it
    /// stands in for, and its pre-check.
    pub fn after(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.depends_on.iter().copied().chain(self.fallback_for).chain(self.checked_by)
    }

    /// The modules whose paid calls this one checks first (m00: m01 and m02).
    pub fn checks(&self) -> impl Iterator<Item = &'static Module> + '_ {
        REGISTRY.iter().copied().filter(|m| m.checked_by == Some(self.id))
    }
}

/// Orders modules into waves: every module runs in a later wave than all it depends on.
pub fn waves<'a>(modules: &[&'a Module]) -> Result<Vec<Vec<&'a Module>>, ModuleError> {
    let ids: BTreeSet<&str> = modules.iter().map(|m| m.id).collect();
    for m in modules {
        if let Some(missing) = m.after().find(|d| !ids.contains(*d)) {
            return Err(ModuleError::UnknownDependency { module: m.id.into(), missing: missing.to_string() });
        }
    }
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<&Module>> = Vec::new();
    while placed.len() < modules.len() {
        let mut ready: Vec<&Module> = modules
            .iter()
            .filter(|m| !placed.contains_key(m.id) && m.after().all(|d| placed.contains_key(d)))
            .copied()
            .collect();
        if ready.is_empty() {
            let left: Vec<&Module> = modules.iter().filter(|m| !placed.contains_key(m.id)).copied().collect();
            return Err(ModuleError::Cycle(describe_cycle(&left)));
        }
        ready.sort_by_key(|m| m.id);
        let wave = waves.len();
        for m in &ready {
            placed.insert(m.id, wave);
        }
        waves.push(ready);
    }
    Ok(waves)
}

/// Follows dependencies among the unplaced modules until one repeats: "m01 → m03 → m01".
fn describe_cycle(left: &[&Module]) -> String {
    let by_id: BTreeMap<&str, &Module> = left.iter().map(|m| (m.id, *m)).collect();
    let mut path = vec![left[0].id];
    loop {
        let current = by_id[path[path.len() - 1]];
        let Some(next) = current.after().find(|d| by_id.contains_key(*d)) else {
            return path.join(" → ");
        };
        if let Some(start) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<&str> = path[start..].to_vec();
            cycle.push(next);
            return cycle.join(" → ");
        }
        path.push(next);
    }
}

/// A reply read by its provider's parser.
#[derive(Debug, Clone)]
pub enum Parsed {
    BuiltWith(Answer<providers::builtwith::DomainProfile>),
    Series { endpoint: &'static str, answer: Answer<Vec<providers::similarweb::Point>> },
    Quote(Answer<providers::yahoo::Financials>),
    Postings(Answer<Vec<providers::jobs::Posting>>),
    Feed(Answer<Vec<providers::news::Item>>),
    SimilarSites(Answer<Vec<providers::similarweb::SimilarSite>>),
    Related(Answer<Vec<providers::builtwith::Related>>),
    Technologies(Answer<providers::similarweb::Technographics>),
    Free(Answer<providers::builtwith::FreeProfile>),
}

/// Reads a reply. `Err` carries the ledger outcome and a message for the ledger.
pub fn parse(context: &Context, call: &Call, reply: &Reply) -> Result<Parsed, (Outcome, String)> {
    if let Some(error) = &reply.error {
        return Err((Outcome::Failed, error.clone()));
    }
    let status = reply.status.unwrap_or(0);
    let parsed = match (call.provider, call.endpoint) {
        (ProviderId::BuiltWith, providers::builtwith::ENDPOINT_RELATIONSHIPS) => {
            providers::builtwith::parse_relationships(&reply.body).map(Parsed::Related)
        }
        (ProviderId::BuiltWith, providers::builtwith::ENDPOINT_FREE) => {
            providers::builtwith::parse_free(&reply.body).map(Parsed::Free)
        }
        (ProviderId::BuiltWith, _) => {
            providers::builtwith::parse_domain(&reply.body, context.detection.live_within_days).map(Parsed::BuiltWith)
        }
        (ProviderId::SimilarWeb, providers::similarweb::ENDPOINT_TRAFFIC_SOURCES) => {
            providers::similarweb::parse_search_share(&reply.body)
                .map(|answer| Parsed::Series { endpoint: call.endpoint, answer })
        }
        (ProviderId::SimilarWeb, providers::similarweb::ENDPOINT_SIMILAR_SITES) => {
            providers::similarweb::parse_similar_sites(&reply.body).map(Parsed::SimilarSites)
        }
        (ProviderId::SimilarWeb, providers::similarweb::ENDPOINT_TECHNOLOGIES) => {
            providers::similarweb::parse_technologies(&reply.body).map(Parsed::Technologies)
        }
        (ProviderId::SimilarWeb, endpoint) => {
            let metric = providers::similarweb::ENGAGEMENT.iter().find(|m| m.endpoint == endpoint);
            match metric {
                Some(metric) => providers::similarweb::parse_metric(&reply.body, *metric)
                    .map(|answer| Parsed::Series { endpoint: call.endpoint, answer }),
                None => Err(ProviderError::Malformed(format!("unknown endpoint {endpoint}"))),
            }
        }
        (ProviderId::YahooFinance, _) => providers::yahoo::parse_quote_summary(&reply.body).map(Parsed::Quote),
        (ProviderId::News, _) => providers::news::parse_feed(status, &reply.body).map(Parsed::Feed),
        (platform @ (ProviderId::Greenhouse | ProviderId::Lever | ProviderId::Ashby), _) => {
            providers::jobs::parse_postings(platform, status, &reply.body).map(Parsed::Postings)
        }
    };
    let success = (200..300).contains(&status);
    match parsed {
        // Providers answer "no data" with error statuses (SimilarWeb 401, Yahoo 404): a fact.
        Ok(parsed) if success || is_no_data(&parsed) => Ok(parsed),
        _ if !success => Err((Outcome::Failed, format!("HTTP {status}: {}", excerpt(&reply.body)))),
        Ok(parsed) => Ok(parsed),
        Err(e @ ProviderError::Api { .. }) => Err((Outcome::Failed, e.to_string())),
        Err(e) => Err((Outcome::Invalid, e.to_string())),
    }
}

pub fn is_no_data(parsed: &Parsed) -> bool {
    matches!(
        parsed,
        Parsed::BuiltWith(Answer::NoData(_))
            | Parsed::Series { answer: Answer::NoData(_), .. }
            | Parsed::Quote(Answer::NoData(_))
            | Parsed::Postings(Answer::NoData(_))
            | Parsed::Feed(Answer::NoData(_))
            | Parsed::SimilarSites(Answer::NoData(_))
            | Parsed::Related(Answer::NoData(_))
            | Parsed::Technologies(Answer::NoData(_))
            | Parsed::Free(Answer::NoData(_))
    )
}

/// The start of a body, on one line, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(160)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(id: &'static str, depends_on: &'static [&'static str]) -> Module {
        Module {
            id,
            name: id,
            provider: ProviderId::BuiltWith,
            depends_on,
            fallback_for: None,
            checked_by: None,
            tables: &[],
            calls: |_, _| Vec::new(),
            normalize: |_, _, _, _| {},
        }
    }

    #[test]
    fn the_registry_orders_into_waves_by_dependency() {
        let waves = waves(REGISTRY).unwrap();
        let ids: Vec<Vec<&str>> = waves.iter().map(|w| w.iter().map(|m| m.id).collect()).collect();
        assert_eq!(
            ids,
            [
                vec!["m00"],
                vec!["m01", "m02"],
                vec!["m02sw", "m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10", "m11", "m12"]
            ]
        );
    }

    #[test]
    fn a_cycle_is_named() {
        let (a, b, c) = (module("a", &["c"]), module("b", &["a"]), module("c", &["b"]));
        let root = module("root", &[]);
        let err = waves(&[&root, &a, &b, &c]).unwrap_err();
        assert_eq!(err, ModuleError::Cycle("a → c → b → a".into()));
    }

    #[test]
    fn an_unknown_dependency_is_named() {
        let a = module("a", &["zz"]);
        assert_eq!(waves(&[&a]).unwrap_err().to_string(), "module a depends on zz, which is not registered");
    }
}
