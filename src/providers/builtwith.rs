//! BuiltWith Domain API (`/v22/api.json?KEY=…&LOOKUP=domain`; the v20–v21 shapes read the same).
//!
//! A response has many paths (root, `dd`, `m`, subdomains) repeating the same
//! technologies with different dates; they are combined and de-duplicated by
//! name. Dead technologies stay in the response with an old `LastDetected`: a
//! technology is *live* only when it was last seen within `live_within_days` of
//! its path's `LastIndexed`. Times are epoch milliseconds; `Spend` is USD per
//! month. Empty strings in `Meta` are missing values.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Answer, ProviderError, parse_json, text};
use crate::fetch::{PageRead, Pager};

pub const ENDPOINT_DOMAIN: &str = "domain";
/// The Domain API version BuiltWith documents today, unless the pipeline names another
/// (`[providers.builtwith] options = { api_version = "v21" }`).
pub const DOMAIN_API_VERSION: &str = "v22";

/// Path and query (without the key) of a domain lookup.
pub fn domain_request(api_version: &str, domain: &str) -> (String, Vec<(&'static str, String)>) {
    (format!("/{api_version}/api.json"), vec![("LOOKUP", domain.to_string())])
}

/// The query parameter that carries the API key.
pub const KEY_PARAM: &str = "KEY";

/// The Free API (`free1`): technology group counts for a domain, live and dead; no
/// charge, 1 request/s.
pub const ENDPOINT_FREE: &str = "free";

/// Path and query (without the key) of a Free API lookup.
pub fn free_request(domain: &str) -> (String, Vec<(&'static str, String)>) {
    ("/free1/api.json".to_string(), vec![("LOOKUP", domain.to_string())])
}

/// One technology group of a Free API answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeGroup {
    pub name: String,
    /// Technologies of the group live on the site, and no longer there.
    pub live: u64,
    pub dead: u64,
}

/// What the Free API knows of a domain: its technology groups (any it indexes).
#[derive(Debug, Clone, PartialEq)]
pub struct FreeProfile {
    pub groups: Vec<FreeGroup>,
    /// When BuiltWith last indexed the domain (epoch seconds).
    pub last_indexed: Option<i64>,
}

impl FreeProfile {
    /// The live and dead counts of `groups` (absent groups count zero), as one text:
    /// `cms 1/0; shop 0/0; widgets 2/1`. Equal texts: nothing changed in those groups.
    pub fn signature(&self, groups: &[String]) -> String {
        let mut names: Vec<&String> = groups.iter().collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let (live, dead) = self
                    .groups
                    .iter()
                    .filter(|g| g.name.eq_ignore_ascii_case(name))
                    .fold((0, 0), |(l, d), g| (l + g.live, d + g.dead));
                format!("{name} {live}/{dead}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Free API: `{"domain", "first", "last", "groups": [{"name", "live", "dead", "latest",
/// "oldest", "categories": [...]}]}`. A domain BuiltWith does not know (an error saying
/// so, or no group and no indexing date) is no data: a paid lookup would find nothing.
pub fn parse_free(body: &[u8]) -> Result<Answer<FreeProfile>, ProviderError> {
    let json = parse_json(body)?;
    if let Some(first) = json.get("Errors").and_then(Value::as_array).and_then(|e| e.first()) {
        let message = text(first.get("Message")).unwrap_or_else(|| "unknown error".into());
        if message.to_ascii_lowercase().contains("not in our system") {
            return Ok(Answer::NoData(message));
        }
        return Err(ProviderError::Api { code: first.get("Code").map(|c| c.to_string()).unwrap_or_default(), message });
    }
    let count = |group: &Value, key: &str| group.get(key).and_then(Value::as_u64).unwrap_or(0);
    let groups: Vec<FreeGroup> = json
        .get("groups")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("no groups array".into()))?
        .iter()
        .filter_map(|g| {
            let name = text(g.get("name"))?;
            Some(FreeGroup { name, live: count(g, "live"), dead: count(g, "dead") })
        })
        .collect();
    let last_indexed = json.get("last").and_then(Value::as_i64).filter(|t| *t > 0);
    if groups.is_empty() && last_indexed.is_none() {
        return Ok(Answer::NoData("BuiltWith indexes no technology for the domain".into()));
    }
    Ok(Answer::Data(FreeProfile { groups, last_indexed }))
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompanyMeta {
    pub company_name: Option<String>,
    pub vertical: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub employees: Option<i64>,
    /// Contact points as BuiltWith lists them. E-mails and phones can be personal
    /// data: they are kept only in `company` and in the raw bodies, where erasure reaches.
    pub emails: Vec<String>,
    pub telephones: Vec<String>,
    pub socials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Technology {
    pub name: String,
    pub tag: Option<String>,
    pub categories: Vec<String>,
    /// Earliest `FirstDetected` over all paths, epoch ms.
    pub first_detected_ms: Option<i64>,
    /// Latest `LastDetected` over all paths, epoch ms.
    pub last_detected_ms: Option<i64>,
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DomainProfile {
    /// `Paths[].Domain` of the first path: the root domain the answer is about.
    pub root_domain: Option<String>,
    pub meta: CompanyMeta,
    /// Estimated technology spend, USD per month.
    pub spend_monthly_usd: Option<f64>,
    /// One entry per technology name, sorted by name.
    pub technologies: Vec<Technology>,
}

/// Parses a domain lookup. `live_within_days` decides which technologies are current.
pub fn parse_domain(body: &[u8], live_within_days: i64) -> Result<Answer<DomainProfile>, ProviderError> {
    let json = parse_json(body)?;
    let results = json.get("Results");
    let errors = json.get("Errors").and_then(Value::as_array).filter(|e| !e.is_empty());
    if let Some(first) = errors.and_then(|e| e.first()) {
        let message = text(first.get("Message")).unwrap_or_else(|| "unknown error".into());
        if message.to_ascii_lowercase().contains("not in our system")
            || message.to_ascii_lowercase().contains("no data")
        {
            return Ok(Answer::NoData(message));
        }
        if results.is_none_or(Value::is_null) {
            let code = first.get("Code").map(|c| c.to_string()).unwrap_or_else(|| "?".into());
            return Err(ProviderError::Api { code, message });
        }
    }
    let Some(result) = results.and_then(Value::as_array).and_then(|r| r.first()) else {
        if results.is_some_and(|r| r.as_array().is_some_and(Vec::is_empty)) {
            return Ok(Answer::NoData("no results".into()));
        }
        return Err(ProviderError::Malformed("no Results array".into()));
    };
    let inner = result.get("Result").ok_or_else(|| ProviderError::Malformed("Results[0] has no Result".into()))?;

    let meta = result.get("Meta").filter(|m| m.is_object());
    let meta_text = |key: &str| text(meta.and_then(|m| m.get(key)));
    // A list of strings, `null` or missing; empty strings are dropped.
    let meta_list = |key: &str| -> Vec<String> {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|v| text(Some(v))).collect())
            .unwrap_or_default()
    };
    let employees =
        result.get("Attributes").and_then(|a| a.get("Employees")).and_then(Value::as_i64).filter(|n| *n > 0);
    let meta = CompanyMeta {
        company_name: meta_text("CompanyName"),
        vertical: meta_text("Vertical"),
        country: meta_text("Country"),
        city: meta_text("City"),
        state: meta_text("State"),
        employees,
        emails: meta_list("Emails"),
        telephones: meta_list("Telephones"),
        socials: meta_list("Social"),
    };

    let spend_monthly_usd = match inner.get("Spend") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let spend = v.as_f64().ok_or_else(|| ProviderError::Invalid {
                field: "Result.Spend".into(),
                message: format!("{v} is not a number"),
            })?;
            if spend < 0.0 {
                return Err(ProviderError::Invalid {
                    field: "Result.Spend".into(),
                    message: format!("{spend} is negative"),
                });
            }
            Some(spend)
        }
    };

    let live_window_ms = live_within_days.saturating_mul(86_400_000);
    let mut by_name: BTreeMap<String, Technology> = BTreeMap::new();
    let paths = inner.get("Paths").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut root_domain = None;
    for (p, path) in paths.iter().enumerate() {
        if root_domain.is_none() {
            root_domain = text(path.get("Domain")).map(|d| d.to_ascii_lowercase());
        }
        let last_indexed = path.get("LastIndexed").and_then(Value::as_i64);
        let techs = path.get("Technologies").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (t, tech) in techs.iter().enumerate() {
            let Some(name) = text(tech.get("Name")) else { continue };
            let millis = |key: &str| -> Result<Option<i64>, ProviderError> {
                match tech.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v.as_i64().filter(|ms| *ms >= 0).map(Some).ok_or_else(|| ProviderError::Invalid {
                        field: format!("Paths[{p}].Technologies[{t}].{key}"),
                        message: format!("{v} is not epoch milliseconds"),
                    }),
                }
            };
            let first = millis("FirstDetected")?;
            let last = millis("LastDetected")?;
            // Nothing is detected after the crawl that reports it (a day of clock skew allowed).
            if let (Some(detected), Some(indexed)) = (first.max(last), last_indexed)
                && detected > indexed + 86_400_000
            {
                let key = if first > last { "FirstDetected" } else { "LastDetected" };
                return Err(ProviderError::Invalid {
                    field: format!("Paths[{p}].Technologies[{t}].{key}"),
                    message: format!("{detected} is after the path's LastIndexed {indexed}: a date in the future"),
                });
            }
            if let (Some(first), Some(last)) = (first, last)
                && first > last
            {
                return Err(ProviderError::Invalid {
                    field: format!("Paths[{p}].Technologies[{t}].FirstDetected"),
                    message: format!("first detected {first} after last detected {last}"),
                });
            }
            let live = match (last, last_indexed) {
                (Some(last), Some(indexed)) => indexed - last <= live_window_ms,
                // Without dates there is nothing to call it dead by.
                _ => true,
            };
            let categories = tech
                .get("Categories")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(|v| text(Some(v))).collect())
                .unwrap_or_default();
            let entry = by_name.entry(name.to_ascii_lowercase()).or_insert_with(|| Technology {
                name: name.clone(),
                tag: text(tech.get("Tag")),
                categories,
                first_detected_ms: first,
                last_detected_ms: last,
                live,
            });
            entry.live |= live;
            entry.first_detected_ms = min_opt(entry.first_detected_ms, first);
            entry.last_detected_ms = entry.last_detected_ms.max(last);
        }
    }
    Ok(Answer::Data(DomainProfile {
        root_domain,
        meta,
        spend_monthly_usd,
        technologies: by_name.into_values().collect(),
    }))
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub const ENDPOINT_RELATIONSHIPS: &str = "relationships";
pub const ENDPOINT_LISTS: &str = "lists";

/// The Relationships API BuiltWith documents today (older documentation shows `rv2`).
pub const RELATIONSHIPS_API_VERSION: &str = "rv4";

/// Relationships BuiltWith bills one API credit for (a page holds at most this many).
pub const RELATIONSHIPS_PER_CREDIT: usize = 500;

/// Path and query (without the key) of a Relationships API lookup; its further pages
/// are asked by [`RELATIONSHIPS_PAGER`].
pub fn relationships_request(domain: &str) -> (String, Vec<(&'static str, String)>) {
    (format!("/{RELATIONSHIPS_API_VERSION}/api.json"), vec![("LOOKUP", domain.to_string())])
}

/// Relationships `rv4` pages: while `more_results` is true, ask again with
/// `OFFSET=<next_skip>`; each page is billed a credit per 500 relationships on it.
pub const RELATIONSHIPS_PAGER: Pager = Pager { param: "OFFSET", read: read_relationships_page, max_pages: 200 };

/// A Relationships page's next offset (`None` on the last page) and credits, from one
/// parse of its body.
pub fn read_relationships_page(body: &[u8]) -> PageRead {
    match parse_json(body) {
        Ok(page) => PageRead { next: next_skip(&page), credits: relationships_credits(&page) },
        Err(e) => PageRead { next: Err(e.to_string()), credits: 0 },
    }
}

/// A key of an `rv4` answer's paging meta (`more_results`, `next_skip`), also as
/// `MoreResults` / `NextSkip`.
fn meta<'a>(page: &'a Value, snake: &str, camel: &str) -> Option<&'a Value> {
    page.get(snake).or_else(|| page.get(camel)).filter(|v| !v.is_null())
}

fn more_results(page: &Value) -> bool {
    match meta(page, "more_results", "MoreResults") {
        Some(Value::Bool(more)) => *more,
        Some(Value::String(more)) => more.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The `OFFSET` of the page after this one, `None` on the last page.
fn next_skip(page: &Value) -> Result<Option<String>, String> {
    if !more_results(page) {
        return Ok(None);
    }
    match meta(page, "next_skip", "NextSkip") {
        Some(Value::Number(skip)) => Ok(Some(skip.to_string())),
        Some(Value::String(skip)) if !skip.trim().is_empty() => Ok(Some(skip.trim().to_string())),
        _ => Err("more_results is true but next_skip is missing".into()),
    }
}

/// The relationships on one page: every matched domain of every identifier.
fn relationships_on(page: &Value) -> usize {
    fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
        value.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
    }
    items(page, "Relationships")
        .iter()
        .flat_map(|r| items(r, "Identifiers"))
        .map(|identifier| items(identifier, "Matches").len())
        .sum()
}

/// The credits a page is billed: one per 500 relationships on it (none for a page
/// without any: an unknown domain, or one that shares no identifier).
pub fn relationships_credits(page: &Value) -> u32 {
    relationships_on(page).div_ceil(RELATIONSHIPS_PER_CREDIT) as u32
}

/// A domain that shares an identifier (analytics, ad or tag manager id) with the one looked up.
#[derive(Debug, Clone, PartialEq)]
pub struct Related {
    pub domain: String,
    /// The identifier type they share (`ga`, `gtm`, `adsense`, …).
    pub via: String,
    pub identifier: String,
    /// When BuiltWith first and last saw the identifier shared (epoch ms).
    pub first: Option<i64>,
    pub last: Option<i64>,
}

/// Relationships API: `{"Relationships": [{"Domain", "Identifiers": [{"Type", "Value",
/// "Matches": [{"Domain", "First", "Last"}]}]}], "Errors": [], "results", "max_per_page",
/// "more_results", "next_skip"}` — one page, or a paged answer's pages as a JSON array
/// (what the call path makes of them). Related domains come back normalized and
/// de-duplicated across pages, the first identifier that links them kept. An answer
/// whose last page says more results follow was not read to its end: malformed.
pub fn parse_relationships(body: &[u8]) -> Result<Answer<Vec<Related>>, ProviderError> {
    let json = parse_json(body)?;
    let pages = match json {
        Value::Array(pages) => pages,
        page => vec![page],
    };
    let Some(last) = pages.last() else { return Err(ProviderError::Malformed("no pages".into())) };
    if more_results(last) {
        return Err(ProviderError::Malformed(format!(
            "page {} of the relationships says more follow, and none was read",
            pages.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut related = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        match relationships_page(page, &mut seen, &mut related)? {
            Answer::NoData(message) if i == 0 => return Ok(Answer::NoData(message)),
            Answer::NoData(message) => {
                return Err(ProviderError::Malformed(format!("page {} of the relationships: {message}", i + 1)));
            }
            Answer::Data(()) => {}
        }
    }
    Ok(Answer::Data(related))
}

fn relationships_page(
    json: &Value,
    seen: &mut std::collections::BTreeSet<String>,
    related: &mut Vec<Related>,
) -> Result<Answer<()>, ProviderError> {
    if let Some(first) = json.get("Errors").and_then(Value::as_array).and_then(|e| e.first()) {
        let message = text(first.get("Message")).unwrap_or_else(|| "unknown error".into());
        if message.to_ascii_lowercase().contains("not in our system")
            || message.to_ascii_lowercase().contains("no data")
        {
            return Ok(Answer::NoData(message));
        }
        return Err(ProviderError::Api { code: first.get("Code").map(|c| c.to_string()).unwrap_or_default(), message });
    }
    let relationships = json
        .get("Relationships")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("no Relationships array".into()))?;
    for relationship in relationships {
        let own = text(relationship.get("Domain")).unwrap_or_default().to_ascii_lowercase();
        let identifiers =
            relationship.get("Identifiers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for identifier in identifiers {
            let via = text(identifier.get("Type")).unwrap_or_else(|| "unknown".into());
            let value = text(identifier.get("Value")).unwrap_or_default();
            let matches = identifier.get("Matches").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for m in matches {
                let Some(domain) = text(m.get("Domain")).and_then(|d| crate::targets::normalize_domain(&d).ok()) else {
                    continue;
                };
                if domain != own && seen.insert(domain.clone()) {
                    let (first, last) = (m.get("First").and_then(Value::as_i64), m.get("Last").and_then(Value::as_i64));
                    related.push(Related { domain, via: via.clone(), identifier: value.clone(), first, last });
                }
            }
        }
    }
    Ok(Answer::Data(()))
}

/// Path and query (without the key) of one page of the Lists API for a technology.
pub fn lists_request(technology: &str, offset: Option<&str>) -> (String, Vec<(&'static str, String)>) {
    let mut query = vec![("TECH", technology.replace(' ', "-"))];
    if let Some(offset) = offset {
        query.push(("OFFSET", offset.to_string()));
    }
    ("/lists12/api.json".to_string(), query)
}

/// Lists pages: `OFFSET=<NextOffset>` until `NextOffset` is `END`; each page is a call's
/// worth of credits. `max_pages` is the discovery run's cap (set per call).
pub const LISTS_PAGER: Pager = Pager { param: "OFFSET", read: read_list_page, max_pages: 50 };

fn read_list_page(body: &[u8]) -> PageRead {
    PageRead { next: parse_list_page(body).map(|page| page.next_offset).map_err(|e| e.to_string()), credits: 1 }
}

/// One page of the Lists API: the domains on it and the offset of the next page
/// (`None` once `NextOffset` is `"END"`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub domains: Vec<String>,
    pub next_offset: Option<String>,
}

/// Lists API: `{"NextOffset": "…" | "END", "Results": [{"D": "domain.com", "S": spend, …}]}`.
pub fn parse_list_page(body: &[u8]) -> Result<ListPage, ProviderError> {
    let json = parse_json(body)?;
    if let Some(first) = json.get("Errors").and_then(Value::as_array).and_then(|e| e.first()) {
        let message = text(first.get("Message")).unwrap_or_else(|| "unknown error".into());
        return Err(ProviderError::Api { code: first.get("Code").map(|c| c.to_string()).unwrap_or_default(), message });
    }
    let results = json
        .get("Results")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("no Results array".into()))?;
    let domains = results
        .iter()
        .filter_map(|r| text(r.get("D")).and_then(|d| crate::targets::normalize_domain(&d).ok()))
        .collect();
    let next_offset = text(json.get("NextOffset")).filter(|o| o != "END");
    Ok(ListPage { domains, next_offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_763_000_000_000;

    fn profile(body: &str) -> DomainProfile {
        match parse_domain(body.as_bytes(), 45).unwrap() {
            Answer::Data(p) => p,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn combines_paths_dedupes_by_name_and_separates_dead_technologies() {
        let body = format!(
            r#"{{"Results":[{{"Result":{{"IsDB":"True","Spend":1272,"Paths":[
              {{"Domain":"shop.com","Url":"","SubDomain":"","FirstIndexed":{first},"LastIndexed":{now},"Technologies":[
                 {{"Name":"Adobe Experience Manager","Tag":"cms","Categories":["Enterprise"],"FirstDetected":{first},"LastDetected":{now},"IsPremium":"yes"}},
                 {{"Name":"Elasticsearch","Tag":"widgets","Categories":null,"FirstDetected":{old},"LastDetected":{dead}}}]}},
              {{"Domain":"shop.com","Url":"m","SubDomain":"","LastIndexed":{now},"Technologies":[
                 {{"Name":"adobe experience manager","Tag":"cms","FirstDetected":{older},"LastDetected":{recent}}},
                 {{"Name":"Coveo","Tag":"widgets","FirstDetected":{recent},"LastDetected":{now}}}]}}]}},
              "Meta":{{"CompanyName":"Shop Inc","Vertical":"","Country":"US","City":null,"Telephones":null,"Emails":[],"Names":null,"ARank":-1}},
              "Attributes":{{"Employees":0}},"Lookup":"www.shop.com","SalesRevenue":0}}],"Errors":[],"Trust":null}}"#,
            first = NOW - 900 * DAY,
            older = NOW - 1000 * DAY,
            old = NOW - 1200 * DAY,
            dead = NOW - 700 * DAY,
            recent = NOW - 10 * DAY,
            now = NOW,
        );
        let p = profile(&body);
        assert_eq!(p.root_domain.as_deref(), Some("shop.com"));
        assert_eq!(p.spend_monthly_usd, Some(1272.0));
        assert_eq!(p.meta.company_name.as_deref(), Some("Shop Inc"));
        assert_eq!(p.meta.vertical, None, "an empty string is missing");
        assert_eq!(p.meta.city, None);
        assert_eq!(p.meta.employees, None, "0 employees is unknown");
        assert!(p.meta.telephones.is_empty() && p.meta.emails.is_empty(), "null and [] are empty lists");
        let names: Vec<(&str, bool)> = p.technologies.iter().map(|t| (t.name.as_str(), t.live)).collect();
        assert_eq!(names, [("Adobe Experience Manager", true), ("Coveo", true), ("Elasticsearch", false)]);
        let aem = &p.technologies[0];
        assert_eq!(aem.first_detected_ms, Some(NOW - 1000 * DAY), "earliest over paths");
        assert_eq!(aem.last_detected_ms, Some(NOW), "latest over paths");
        assert_eq!(p.technologies[2].categories, Vec::<String>::new(), "null categories");
    }

    #[test]
    fn not_in_our_system_is_a_fact_not_a_failure() {
        let body = r#"{"Errors":[{"Lookup":null,"Message":"Domain not in our system","Code":-10}],"NextOffset":null,"Results":null}"#;
        assert!(matches!(parse_domain(body.as_bytes(), 45), Ok(Answer::NoData(_))));
    }

    #[test]
    fn other_error_envelopes_are_errors() {
        let body = r#"{"Errors":[{"Lookup":null,"Message":"Invalid LOOKUP","Code":-4}],"Results":null}"#;
        assert_eq!(
            parse_domain(body.as_bytes(), 45),
            Err(ProviderError::Api { code: "-4".into(), message: "Invalid LOOKUP".into() })
        );
    }

    #[test]
    fn html_and_truncated_bodies_are_malformed() {
        for body in ["<html><body>502 Bad Gateway</body></html>", r#"{"Results":[{"Result":{"Paths":["#, ""] {
            assert!(matches!(parse_domain(body.as_bytes(), 45), Err(ProviderError::Malformed(_))), "{body}");
        }
    }

    #[test]
    fn missing_sections_give_empty_values() {
        let p = profile(r#"{"Results":[{"Result":{"Paths":null},"Meta":null}],"Errors":[]}"#);
        assert_eq!(p.meta, CompanyMeta::default());
        assert!(p.technologies.is_empty());
        assert_eq!(p.spend_monthly_usd, None);
    }

    #[test]
    fn relationships_are_related_domains_once_each() {
        let body = br#"{"Relationships":[{"Domain":"shop.com","Identifiers":[
            {"Type":"ga","Value":"UA-1","Matches":[{"Domain":"shop.co.uk","First":1,"Last":2},{"Domain":"SHOP.com"}]},
            {"Type":"gtm","Value":"GTM-9","Matches":[{"Domain":"www.shop.co.uk"},{"Domain":"shop.de"},{"Domain":""}]}]}],
            "Errors":[]}"#;
        let Answer::Data(related) = parse_relationships(body).unwrap() else { panic!() };
        let got: Vec<(&str, &str)> = related.iter().map(|r| (r.domain.as_str(), r.via.as_str())).collect();
        assert_eq!(got, [("shop.co.uk", "ga"), ("shop.de", "gtm")]);
        let none = br#"{"Errors":[{"Message":"Domain not in our system","Code":-10}],"Relationships":null}"#;
        assert!(matches!(parse_relationships(none), Ok(Answer::NoData(_))));
    }

    #[test]
    fn the_free_api_tells_known_from_unknown_and_signs_the_groups_that_matter() {
        let body = br#"{"domain":"shop.com","first":1294059600,"last":1501282800,"groups":[
            {"name":"cms","live":1,"dead":0,"latest":1,"oldest":1,"categories":[]},
            {"name":"widgets","live":2,"dead":1,"categories":[{"name":"site-search","live":1,"dead":1}]},
            {"name":"analytics","live":5,"dead":3}]}"#;
        let Answer::Data(profile) = parse_free(body).unwrap() else { panic!() };
        let groups: Vec<String> = ["widgets", "shop", "cms"].map(String::from).to_vec();
        assert_eq!(profile.signature(&groups), "cms 1/0; shop 0/0; widgets 2/1");
        assert_eq!(profile.last_indexed, Some(1501282800));
        let unknown = br#"{"domain":"nowhere.example","first":0,"last":0,"groups":[]}"#;
        assert!(matches!(parse_free(unknown), Ok(Answer::NoData(_))));
        let error = br#"{"Errors":[{"Message":"Domain not in our system","Code":-10}]}"#;
        assert!(matches!(parse_free(error), Ok(Answer::NoData(_))));
        assert!(matches!(parse_free(br#"{"domain":"x.com"}"#), Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn relationships_page_by_next_skip_and_bill_per_500() {
        let page = |n: usize, more: bool, skip: &str| {
            let matches: Vec<String> = (0..n).map(|i| format!(r#"{{"Domain":"m{i}-{skip}.com"}}"#)).collect();
            format!(
                r#"{{"Relationships":[{{"Domain":"big.com","Identifiers":[{{"Type":"gtm","Value":"GTM-1","Matches":[{}]}}]}}],
                "Errors":[],"results":1200,"max_per_page":500,"more_results":{more},"next_skip":{skip}}}"#,
                matches.join(",")
            )
        };
        let (first, second, last) = (page(500, true, "500"), page(500, true, "1000"), page(200, false, "0"));
        let next = |body: &str| read_relationships_page(body.as_bytes()).next;
        let credits = |body: &str| read_relationships_page(body.as_bytes()).credits;
        assert_eq!(next(&first), Ok(Some("500".into())));
        assert_eq!(next(&last), Ok(None));
        assert_eq!(next(r#"{"more_results":"true","next_skip":"1500"}"#), Ok(Some("1500".into())));
        assert!(next(r#"{"more_results":true}"#).is_err(), "more, but not where");
        assert_eq!(
            [&first, &last].map(|p| credits(p)),
            [1, 1],
            "a credit per 500 relationships, a started 500 counting whole"
        );
        assert_eq!(credits(&page(0, false, "0")), 0, "no relationships, no credit");
        assert_eq!(credits(&page(501, false, "0")), 2);
        let joined = crate::fetch::join_pages([first.as_bytes(), second.as_bytes(), last.as_bytes()]);
        let Answer::Data(related) = parse_relationships(&joined).unwrap() else { panic!() };
        assert_eq!(related.len(), 1200);
        // Pages that stop while the last says more follow were not read to the end.
        let cut = crate::fetch::join_pages([first.as_bytes(), second.as_bytes()]);
        assert!(matches!(parse_relationships(&cut), Err(ProviderError::Malformed(_))));
        assert_eq!(relationships_request("big.com").0, "/rv4/api.json");
    }

    #[test]
    fn list_pages_end_at_end() {
        let page =
            parse_list_page(br#"{"NextOffset":"oQEwLjA","Results":[{"D":"a.com","S":10},{"D":"www.B.com"}]}"#).unwrap();
        assert_eq!(
            page,
            ListPage { domains: vec!["a.com".into(), "b.com".into()], next_offset: Some("oQEwLjA".into()) }
        );
        let last = parse_list_page(br#"{"NextOffset":"END","Results":[]}"#).unwrap();
        assert_eq!(last.next_offset, None);
        assert!(lists_request("Shopify Plus", Some("x")).1.contains(&("TECH", "Shopify-Plus".to_string())));
    }

    #[test]
    fn a_detection_in_the_future_is_invalid() {
        let body = format!(
            r#"{{"Results":[{{"Result":{{"Paths":[{{"LastIndexed":{NOW},"Technologies":[
               {{"Name":"Coveo","FirstDetected":{future},"LastDetected":{future}}}]}}]}}}}]}}"#,
            future = NOW + 30 * DAY
        );
        let err = parse_domain(body.as_bytes(), 45).unwrap_err();
        assert!(err.to_string().contains("Paths[0].Technologies[0]") && err.to_string().contains("future"), "{err}");
        let body = format!(
            r#"{{"Results":[{{"Result":{{"Paths":[{{"LastIndexed":{NOW},"Technologies":[
               {{"Name":"Coveo","FirstDetected":{NOW},"LastDetected":{past}}}]}}]}}}}]}}"#,
            past = NOW - 30 * DAY
        );
        let err = parse_domain(body.as_bytes(), 45).unwrap_err();
        assert!(err.to_string().contains("FirstDetected"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let err = parse_domain(br#"{"Results":[{"Result":{"Spend":-5}}]}"#, 45).unwrap_err();
        assert!(err.to_string().contains("Result.Spend"), "{err}");
        let err = parse_domain(
            br#"{"Results":[{"Result":{"Paths":[{"Technologies":[{"Name":"X","FirstDetected":"yesterday"}]}]}}]}"#,
            45,
        )
        .unwrap_err();
        assert!(err.to_string().contains("Paths[0].Technologies[0].FirstDetected"), "{err}");
    }
}
