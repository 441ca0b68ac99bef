//! The simulated world: every answer is a pure function of (domain or ticker,
//! as-of date, seed), so runs are reproducible and two dates differ the way the
//! real world does. Slow-moving facts (search vendor, secondary partner tech,
//! executives) are constant over per-domain periods of months and change at
//! period boundaries; traffic drifts month by month with occasional jumps.

use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};

use crate::providers::builtwith;

/// Deterministic 64-bit hash of the seed and any parts (FNV-1a, then a
/// splitmix64 finalizer so nearby inputs land far apart).
pub fn hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A uniform number in [0, 1).
pub fn unit(seed: u64, parts: &[&str]) -> f64 {
    (hash(seed, parts) >> 11) as f64 / (1u64 << 53) as f64
}

fn pick<'a, T>(seed: u64, parts: &[&str], items: &'a [T]) -> &'a T {
    &items[(hash(seed, parts) % items.len() as u64) as usize]
}

/// Picks from (item, weight) pairs.
fn weighted<'a>(seed: u64, parts: &[&str], items: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = (hash(seed, parts) % u64::from(total)) as u32;
    for (item, w) in items {
        if roll < *w {
            return item;
        }
        roll -= w;
    }
    items[0].0
}

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(2020, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};
const DAY_MS: i64 = 86_400_000;

/// Days since the world's epoch (2020-01-01): the `day` the world's functions take.
pub fn day_index(date: NaiveDate) -> i64 {
    (date - EPOCH).num_days()
}

fn epoch_ms(day: i64) -> i64 {
    (EPOCH.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis()).unwrap_or(0)) + day * DAY_MS
}

/// A per-domain period structure: which period `day` is in, and the day it started.
fn period(seed: u64, domain: &str, what: &str, min_len: i64, spread: i64, day: i64) -> (i64, i64) {
    let len = min_len + (hash(seed, &[domain, what, "len"]) % spread as u64) as i64;
    let offset = (hash(seed, &[domain, what, "offset"]) % len as u64) as i64;
    let index = (day + offset).div_euclid(len);
    (index, index * len - offset)
}

pub const SEARCH_VENDORS: [(&str, u32); 10] = [
    ("", 24),
    ("Elasticsearch", 20),
    ("Coveo", 8),
    ("Bloomreach", 8),
    ("Constructor", 7),
    ("Lucidworks Fusion", 6),
    ("Searchspring", 8),
    ("Klevu", 7),
    ("Apache Solr", 6),
    ("Algolia", 6),
];

const PARTNER_TECHS: [(&str, &str); 6] = [
    ("Adobe Experience Manager", "cms"),
    ("Shopify Plus", "shop"),
    ("Salesforce Commerce Cloud", "shop"),
    ("Sitecore", "cms"),
    ("Contentful", "cms"),
    ("BigCommerce", "shop"),
];

/// Technologies most sites run, including the look-alikes that are not search vendors.
const COMMON_TECHS: [(&str, &str, u32); 10] = [
    ("Google Analytics", "analytics", 90),
    ("Google Tag Manager", "widgets", 85),
    ("jQuery", "javascript", 70),
    ("Cloudflare", "CDN", 45),
    ("Nginx", "Web Server", 40),
    ("Amazon Elastic Load Balancing", "hosting", 30),
    ("Amazon Elastic Beanstalk", "hosting", 10),
    ("Sitelinks Search Box", "widgets", 35),
    ("Optimizely", "analytics", 20),
    ("Klaviyo", "mx", 25),
];

const VERTICALS: [(&str, u32); 10] = [
    ("Commerce", 34),
    ("Media", 12),
    ("Content", 10),
    ("Travel", 8),
    ("Technology", 12),
    ("Financial Services", 8),
    ("Healthcare", 5),
    ("Education", 4),
    ("Automotive", 4),
    ("", 8),
];

const PLACES: [(&str, &str, &str); 15] = [
    ("ES", "Madrid", ""),
    ("SE", "Stockholm", ""),
    ("GB", "Manchester", ""),
    ("US", "New York", "NY"),
    ("US", "San Francisco", "CA"),
    ("US", "Chicago", "IL"),
    ("US", "Austin", "TX"),
    ("US", "Seattle", "WA"),
    ("GB", "London", ""),
    ("DE", "Berlin", ""),
    ("FR", "Paris", ""),
    ("CA", "Toronto", "ON"),
    ("AU", "Sydney", "NSW"),
    ("NL", "Amsterdam", ""),
    ("JP", "Tokyo", ""),
];

const FIRST_NAMES: [&str; 16] = [
    "James", "Maria", "Robert", "Linda", "Wei", "Priya", "Carlos", "Sofia", "Kevan", "Amy", "Olu", "Hannah", "Diego",
    "Yuki", "Fatima", "Lars",
];
const LAST_NAMES: [&str; 16] = [
    "Smith", "Garcia", "Chen", "Patel", "Johnson", "Müller", "Okafor", "Rossi", "Parekh", "Hood", "Nakamura", "Silva",
    "Kowalski", "Dubois", "Andersen", "Reyes",
];

/// The simulated world at one date.
#[derive(Debug, Clone)]
pub struct World {
    pub seed: u64,
    pub as_of: NaiveDate,
    /// Share of domains whose BuiltWith company name and country disagree with the book
    /// (`--fault builtwith.conflict_rate=0.1`).
    pub conflict_rate: f64,
    /// Share of tickers whose Yahoo profile names a country that disagrees with the book
    /// (`--fault yahoo_finance.conflict_rate=0.2`). Otherwise the profile names none: the
    /// simulated Yahoo knows a ticker, not where its company is.
    pub yahoo_conflict_rate: f64,
}

impl World {
    pub fn new(seed: u64, as_of: NaiveDate) -> Self {
        Self { seed, as_of, conflict_rate: 0.0, yahoo_conflict_rate: 0.0 }
    }

    fn today(&self) -> i64 {
        day_index(self.as_of)
    }

    /// The live search vendor of a domain on a given day ("" for none).
    pub fn search_vendor(&self, domain: &str, day: i64) -> (&'static str, i64) {
        let (index, start) = period(self.seed, domain, "search", 240, 720, day);
        let vendor = weighted(self.seed, &[domain, "search", &index.to_string()], &SEARCH_VENDORS);
        (vendor, start)
    }

    /// Whether a crawl on `day` misses a technology the site still runs: detection
    /// flaps, so a live technology is now and then absent from one day's answer and
    /// back the next (the primary partner technology is always seen).
    pub fn misses(&self, domain: &str, technology: &str, day: i64) -> bool {
        unit(self.seed, &[domain, technology, "missed", &day.to_string()]) < 0.02
    }

    fn primary_partner(&self, domain: &str) -> (&'static str, &'static str) {
        *pick(self.seed, &[domain, "partner"], &PARTNER_TECHS)
    }

    /// Whether a company moves its site to a new domain, and when: 0.5 % of domains do,
    /// on a day between 2026-06-01 and 2027-11-22, to `<label>group.<rest>`; from that
    /// day the old domain redirects there.
    pub fn renamed(&self, domain: &str) -> Option<(NaiveDate, String)> {
        if unit(self.seed, &[domain, "renamed"]) >= 0.005 {
            return None;
        }
        let (label, rest) = domain.split_once('.')?;
        let start = day_index(NaiveDate::from_ymd_opt(2026, 6, 1)?);
        let day = start + (hash(self.seed, &[domain, "renamed", "day"]) % 540) as i64;
        Some((EPOCH + chrono::Days::new(u64::try_from(day).ok()?), format!("{label}group.{rest}")))
    }

    /// The domain a site moved here from (`<label>group.<rest>` from `<label>.<rest>`), if any.
    pub fn moved_from(&self, domain: &str) -> Option<String> {
        let (label, rest) = domain.split_once('.')?;
        let old = format!("{}.{rest}", label.strip_suffix("group")?);
        self.renamed(&old).filter(|(_, new)| new == domain).map(|_| old)
    }

    /// BuiltWith domain lookup: (HTTP status, body).
    pub fn builtwith_domain(&self, lookup: &str) -> (u16, Value) {
        let domain = lookup.trim().trim_start_matches("www.").to_ascii_lowercase();
        if domain.is_empty() || !domain.contains('.') {
            return (
                200,
                json!({"Errors": [{"Lookup": null, "Message": "Invalid LOOKUP", "Code": -4}], "NextOffset": null, "Results": null}),
            );
        }
        // A site that redirects is crawled where it lands: the answer is the new
        // domain's, its paths name the new root domain, `Lookup` echoes the asked one.
        if let Some((on, to)) = self.renamed(&domain)
            && self.as_of >= on
        {
            let (status, mut body) = self.builtwith_domain(&to);
            if let Some(result) = body["Results"].get_mut(0) {
                result["Lookup"] = json!(lookup);
            }
            return (status, body);
        }
        let s = self.seed;
        let d = domain.as_str();
        if unit(s, &[d, "known"]) < 0.02 {
            return (
                200,
                json!({"Errors": [{"Lookup": null, "Message": "Domain not in our system", "Code": -10}], "NextOffset": null, "Results": null}),
            );
        }
        let today = self.today();
        let indexed = epoch_ms(today) - (hash(s, &[d, "crawl", &today.to_string()]) % 3) as i64 * DAY_MS;
        let site_start = today - 400 - (hash(s, &[d, "age"]) % 2500) as i64;
        let mut techs = Vec::new();
        let (partner, partner_tag) = self.primary_partner(d);
        let mut tech = |name: &str, tag: &str, first_day: i64, last_ms: i64| {
            if last_ms == indexed && name != partner && self.misses(d, name, today) {
                return;
            }
            let mut t = json!({
                "Name": name, "Tag": tag, "Description": format!("{name} technology"),
                "Link": format!("https://{}.example", name.to_ascii_lowercase().replace(' ', "")),
                "FirstDetected": epoch_ms(first_day.max(site_start)).min(last_ms), "LastDetected": last_ms,
                "IsPremium": if tag == "cms" || tag == "shop" { "yes" } else { "no" },
            });
            // Categories are a list, null, or missing.
            match hash(s, &[d, name, "cats"]) % 4 {
                0 => {}
                1 => t["Categories"] = Value::Null,
                _ => t["Categories"] = json!([format!("{tag} platform")]),
            }
            techs.push(t);
        };
        for (name, tag, share) in COMMON_TECHS {
            if hash(s, &[d, "common", name]) % 100 < u64::from(share) {
                tech(name, tag, site_start, indexed);
            }
        }
        tech(partner, partner_tag, site_start + 30, indexed);
        // A second partner technology comes and goes over months.
        let (p_index, p_start) = period(s, d, "partner2", 200, 600, today);
        let (second, second_tag) = *pick(s, &[d, "partner2"], &PARTNER_TECHS);
        if second != partner && hash(s, &[d, "partner2", &p_index.to_string()]).is_multiple_of(3) {
            tech(second, second_tag, p_start, indexed);
        }
        let (vendor, vendor_start) = self.search_vendor(d, today);
        if !vendor.is_empty() {
            tech(vendor, "widgets", vendor_start, indexed);
        }
        // The vendor of the previous period stays in the response, dead.
        let (previous, previous_start) = self.search_vendor(d, vendor_start - 1);
        if !previous.is_empty() && previous != vendor {
            tech(previous, "widgets", previous_start, epoch_ms(vendor_start - 1));
        }
        let monthly_spend = (10f64.powf(1.5 + 3.0 * unit(s, &[d, "spend"]))
            * (1.0 + 0.1 * (today as f64 / 90.0 + unit(s, &[d, "spend-phase"]) * 6.0).sin()))
        .round() as i64;
        // The same technologies repeat on other paths (mobile, a shop subdomain) with other dates.
        let mobile: Vec<Value> = techs
            .iter()
            .filter(|t| hash(s, &[d, t["Name"].as_str().unwrap_or(""), "mobile"]).is_multiple_of(2))
            .map(|t| {
                let mut t = t.clone();
                let first = t["FirstDetected"].as_i64().unwrap_or(0) + 20 * DAY_MS;
                t["FirstDetected"] = json!(first.min(t["LastDetected"].as_i64().unwrap_or(first)));
                t
            })
            .collect();
        let path = |url: &str, sub: &str, technologies: Vec<Value>| {
            json!({"Domain": d, "Url": url, "SubDomain": sub, "FirstIndexed": epoch_ms(site_start),
                   "LastIndexed": indexed, "Technologies": technologies})
        };
        let (mut country, city, state) = place(s, d);
        let conflicting = unit(s, &[d, "conflict"]) < self.conflict_rate;
        if conflicting {
            country = if country == "DE" { "FR" } else { "DE" };
        }
        let vertical = weighted(s, &[d, "vertical"], &VERTICALS);
        let meta_sparse = unit(s, &[d, "meta-sparse"]) < 0.1;
        let company = if conflicting {
            // Another company's name: the parent BuiltWith files the site under.
            json!(format!("{} Brands International", company_name(d).split(' ').next().unwrap_or("Acme")))
        } else if meta_sparse {
            Value::Null
        } else {
            json!(company_name(d))
        };
        let email_user = self.person(d, "contact", today).0.to_ascii_lowercase().replace(' ', ".");
        let body = json!({
            "Results": [{
                "Result": {
                    "IsDB": "True",
                    "Spend": monthly_spend,
                    "SpendHistory": [{"D": epoch_ms(today - 30), "S": monthly_spend}],
                    "Paths": [path("", "", techs), path("m", "", mobile)],
                },
                "Meta": {
                    "CompanyName": company,
                    "Vertical": if meta_sparse { "" } else { vertical },
                    "Country": country, "City": if meta_sparse || city.is_empty() { Value::Null } else { json!(city) },
                    "State": if state.is_empty() { Value::Null } else { json!(state) }, "Postcode": null,
                    "Telephones": if meta_sparse { Value::Null } else { json!(["+1 555 0100"]) },
                    "Emails": if meta_sparse { json!([]) } else { json!([format!("{email_user}@{d}")]) },
                    "Social": if meta_sparse { Value::Null } else {
                        let label = d.split('.').next().unwrap_or(d);
                        json!([format!("https://twitter.com/{label}"), format!("https://linkedin.com/company/{label}")])
                    },
                    "Names": null,
                    "ARank": if meta_sparse { -1 } else { (hash(s, &[d, "rank"]) % 1_000_000) as i64 },
                    "QRank": -1, "Majestic": 0, "Umbrella": 0,
                },
                "Attributes": {"Employees": (hash(s, &[d, "employees"]) % 20_000) as i64, "ProductCount": 0},
                "Lookup": lookup, "FirstIndexed": epoch_ms(site_start), "LastIndexed": indexed, "SalesRevenue": 0,
            }],
            "Errors": [], "Trust": null,
        });
        (200, body)
    }

    /// BuiltWith Free API (`free1`): the Domain API's technologies counted by group,
    /// live (detected within 45 days of the last crawl) and dead, with the latest and
    /// oldest detection (epoch seconds). A domain BuiltWith does not know has no group.
    pub fn builtwith_free(&self, lookup: &str) -> (u16, Value) {
        let (status, body) = self.builtwith_domain(lookup);
        let domain = lookup.trim().trim_start_matches("www.").to_ascii_lowercase();
        let Some(result) = body["Results"].get(0) else {
            let message = body["Errors"][0]["Message"].as_str().unwrap_or("");
            if message.contains("not in our system") {
                return (200, json!({"domain": domain, "first": 0, "last": 0, "groups": []}));
            }
            return (status, body);
        };
        let last_indexed = result["LastIndexed"].as_i64().unwrap_or(0);
        // Each technology once (the paths repeat them), with its latest detection.
        let mut techs: std::collections::BTreeMap<String, (String, i64, i64)> = std::collections::BTreeMap::new();
        for path in result["Result"]["Paths"].as_array().map(Vec::as_slice).unwrap_or_default() {
            for t in path["Technologies"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let (Some(name), Some(tag)) = (t["Name"].as_str(), t["Tag"].as_str()) else { continue };
                let (first, last) = (t["FirstDetected"].as_i64().unwrap_or(0), t["LastDetected"].as_i64().unwrap_or(0));
                let entry = techs.entry(name.to_string()).or_insert((tag.to_string(), first, last));
                entry.1 = entry.1.min(first);
                entry.2 = entry.2.max(last);
            }
        }
        let mut groups: std::collections::BTreeMap<String, (u64, u64, i64, i64)> = std::collections::BTreeMap::new();
        for (tag, first, last) in techs.into_values() {
            let group = groups.entry(tag.to_ascii_lowercase()).or_insert((0, 0, 0, i64::MAX));
            if last >= last_indexed - 45 * DAY_MS {
                group.0 += 1;
            } else {
                group.1 += 1;
            }
            group.2 = group.2.max(last / 1000);
            group.3 = group.3.min(first / 1000);
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, (live, dead, latest, oldest))| {
                json!({"name": name, "live": live, "dead": dead, "latest": latest, "oldest": oldest, "categories": []})
            })
            .collect();
        let first = result["FirstIndexed"].as_i64().unwrap_or(0) / 1000;
        (200, json!({"domain": domain, "first": first, "last": last_indexed / 1000, "groups": groups}))
    }

    /// Monthly visits for a month index (months since 2020-01).
    pub fn visits(&self, domain: &str, month: i64) -> f64 {
        // A company's traffic follows its site to the new domain.
        if let Some(old) = self.moved_from(domain) {
            return self.visits(&old, month);
        }
        let s = self.seed;
        let base = 10f64.powf(3.3 + 4.9 * unit(s, &[domain, "traffic"]));
        let growth = (unit(s, &[domain, "growth"]) - 0.45) * 0.03;
        let phase = unit(s, &[domain, "season"]) * 12.0;
        let season = 0.12 * ((month as f64 + phase) * std::f64::consts::TAU / 12.0).sin();
        // Every half-year a few domains jump or drop.
        let half = month.div_euclid(6);
        let mut jumps = 0.0;
        for h in (half - 4)..=half {
            if unit(s, &[domain, "jump", &h.to_string()]) < 0.08 {
                // From a 55 % drop to a 3.3× jump.
                jumps += (unit(s, &[domain, "jump-size", &h.to_string()]) - 0.4) * 2.0;
            }
        }
        let noise = (unit(s, &[domain, "noise", &month.to_string()]) - 0.5) * 0.06;
        base * (growth * month as f64 + season + jumps + noise).exp()
    }

    /// The last three complete months before the as-of date, as month indexes.
    fn reported_months(&self) -> Vec<i64> {
        let current = i64::from(self.as_of.year() - 2020) * 12 + i64::from(self.as_of.month0());
        (current - 3..current).collect()
    }

    /// SimilarWeb metric endpoint (`group/metric` below `/v1/website/{domain}/`).
    pub fn similarweb(&self, domain: &str, path: &str, country: &str) -> (u16, Value) {
        let s = self.seed;
        let d = domain.trim().to_ascii_lowercase();
        let months = self.reported_months();
        let month_date = |m: i64| format!("{:04}-{:02}-01", 2020 + m.div_euclid(12), m.rem_euclid(12) + 1);
        let too_small = months.iter().all(|m| self.visits(&d, *m) < 5_000.0);
        if too_small {
            return (401, json!({"meta": {"status": "Error", "error_code": 401, "error_message": "Data not found"}}));
        }
        // SimilarWeb refuses some sites for `country=us` that it serves for `world`.
        if country.eq_ignore_ascii_case("us") && unit(s, &[&d, "us-refused"]) < 0.1 {
            return (
                403,
                json!({"meta": {"status": "Error", "error_code": 403, "error_message": "The requested country is not available for this site"}}),
            );
        }
        let first = months.first().copied().unwrap_or(0);
        let last = months.last().copied().unwrap_or(0);
        let mut request = json!({
            "domain": d, "country": country, "granularity": "Monthly",
            "start_date": month_date(first), "end_date": month_date(last),
            "main_domain_only": false, "mtd": false, "show_verified": false,
            "state": if hash(s, &[&d, "state"]).is_multiple_of(2) { Value::Null } else { json!("") }, "format": "json",
        });
        let series = |key: &str, value: &dyn Fn(i64) -> f64| -> Value {
            Value::Array(months.iter().map(|m| json!({"date": month_date(*m), key: value(*m)})).collect())
        };
        let (key, data) = match path {
            "total-traffic-and-engagement/visits" => ("visits", series("visits", &|m| self.visits(&d, m))),
            "total-traffic-and-engagement/bounce-rate" => {
                // A few domains report the rate as a percentage.
                let percent = unit(s, &[&d, "bounce-percent"]) < 0.05;
                let value = |m: i64| {
                    let r =
                        0.25 + 0.5 * unit(s, &[&d, "bounce"]) + 0.04 * (unit(s, &[&d, "bounce", &m.to_string()]) - 0.5);
                    if percent { r * 100.0 } else { r }
                };
                ("bounce_rate", series("bounce_rate", &value))
            }
            "total-traffic-and-engagement/pages-per-visit" => (
                "pages_per_visit",
                series("pages_per_visit", &|m| {
                    1.5 + 7.5 * unit(s, &[&d, "ppv"]) + 0.3 * unit(s, &[&d, "ppv", &m.to_string()])
                }),
            ),
            "total-traffic-and-engagement/average-visit-duration" => (
                "average_visit_duration",
                series("average_visit_duration", &|m| {
                    40.0 + 560.0 * unit(s, &[&d, "dur"]) + 20.0 * unit(s, &[&d, "dur", &m.to_string()])
                }),
            ),
            "similar-sites/similarsites" => {
                let sites: Vec<Value> = (0..8)
                    .map(|i| {
                        let n = i.to_string();
                        let first = pick(s, &[&d, "rival", &n, "a"], &RIVAL_FIRST);
                        let second = pick(s, &[&d, "rival", &n, "b"], &RIVAL_SECOND);
                        let url =
                            if i % 2 == 0 { format!("{first}{second}.com") } else { format!("{first}-{second}.com") };
                        json!({"url": url, "score": ((0.95 - 0.07 * i as f64) * 1000.0).round() / 1000.0})
                    })
                    .collect();
                return (
                    200,
                    json!({"meta": {"request": {"domain": d, "format": "json"}, "status": "Success",
                                              "last_updated": self.as_of.to_string()}, "similar_sites": sites}),
                );
            }
            "technographics/all" => {
                // SimilarWeb sees the same stack BuiltWith does, dated by day.
                let (_, stack) = self.builtwith_domain(&d);
                let day =
                    |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d").to_string());
                let technologies: Vec<Value> = stack["Results"][0]["Result"]["Paths"][0]["Technologies"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| {
                        json!({"technology_name": t["Name"], "category": t["Tag"],
                               "first_detected": t["FirstDetected"].as_i64().and_then(day),
                               "last_detected": t["LastDetected"].as_i64().and_then(day)})
                    })
                    .collect();
                return (
                    200,
                    json!({"meta": {"request": {"domain": d}, "status": "Success",
                                              "last_updated": self.as_of.to_string()}, "technologies": technologies}),
                );
            }
            "traffic-sources/overview-share" => {
                if let Some(r) = request.as_object_mut() {
                    r.remove("granularity");
                }
                let search_share = 0.1 + 0.5 * unit(s, &[&d, "search-share"]);
                let rest =
                    [("Social", 0.2), ("Mail", 0.05), ("Display Ads", 0.05), ("Direct", 0.5), ("Referrals", 0.2)];
                let mut sources = vec![json!({"source_type": "Search", "visits": months.iter().map(|m| {
                    let total = self.visits(&d, *m) * search_share;
                    json!({"date": month_date(*m), "organic": total * 0.8, "paid": total * 0.2})
                }).collect::<Vec<_>>()})];
                for (name, share) in rest {
                    sources.push(json!({"source_type": name, "visits": months.iter().map(|m| {
                        json!({"date": month_date(*m), "organic": self.visits(&d, *m) * (1.0 - search_share) * share, "paid": 0.0})
                    }).collect::<Vec<_>>()}));
                }
                let body = json!({"meta": {"request": request, "status": "Success", "last_updated": self.as_of.to_string()},
                                  "visits": {d.clone(): sources}});
                return (200, body);
            }
            _ => {
                return (
                    404,
                    json!({"meta": {"status": "Error", "error_code": 404, "error_message": "Unknown endpoint"}}),
                );
            }
        };
        (
            200,
            json!({"meta": {"request": request, "status": "Success", "last_updated": self.as_of.to_string()}, key: data}),
        )
    }

    /// A person in a role at a company, stable over a tenure of months.
    fn person(&self, key: &str, role: &str, day: i64) -> (String, i64) {
        let (index, _) = period(self.seed, key, role, 365, 1800, day);
        let i = index.to_string();
        let first = pick(self.seed, &[key, role, &i, "first"], &FIRST_NAMES);
        let last = pick(self.seed, &[key, role, &i, "last"], &LAST_NAMES);
        (format!("{first} {last}"), index)
    }

    /// Yahoo Finance quoteSummary for a ticker.
    /// `modules`: the comma-separated modules asked for; only those come back.
    pub fn quote_summary(&self, ticker: &str, modules: &str) -> (u16, Value) {
        let s = self.seed;
        let t = ticker.trim().to_ascii_uppercase();
        if t.is_empty() {
            return (404, json!({"quoteSummary": {"result": [], "error": null}}));
        }
        if unit(s, &[&t, "delisted"]) < 0.03 {
            return (
                404,
                json!({"quoteSummary": {"result": null, "error": {"code": "Not Found",
                    "description": "No fundamentals data found for any of the summaryTypes=financialData"}}}),
            );
        }
        let today = self.today();
        let revenue = 10f64.powf(8.3 + 3.2 * unit(s, &[&t, "revenue"])) * (1.0 + today as f64 / 3650.0);
        let margin = 0.2 + 0.55 * unit(s, &[&t, "margin"]);
        let market_cap = revenue * (0.5 + 7.5 * unit(s, &[&t, "multiple"]));
        let wrap =
            |x: f64| json!({"raw": x.round(), "fmt": format!("{:.2}B", x / 1e9), "longFmt": format!("{:.0}", x)});
        let honorific = |name: &str, role: &str| {
            let h = ["Mr.", "Ms.", "Dr."][(hash(s, &[&t, role, name]) % 3) as usize];
            // Real names come with double spaces now and then.
            format!("{h} {}", name.replacen(' ', "  ", (hash(s, &[&t, role, "space"]) % 2) as usize))
        };
        let mut officers = Vec::new();
        for (role, title) in [
            ("ceo", "Chairman & CEO"),
            ("cfo", "Executive VP & CFO"),
            ("cto", "CTO & Senior VP of Engineering"),
            ("cdo", "Chief Digital Officer"),
            ("division", "Executive VP & CEO of International"),
        ] {
            let (name, _) = self.person(&t, role, today);
            let mut officer = json!({"maxAge": 1, "name": honorific(&name, role), "title": title,
                                     "fiscalYear": self.as_of.year() - 1, "exercisedValue": {"raw": 0, "fmt": null}});
            if hash(s, &[&t, role, "age"]).is_multiple_of(2) {
                officer["age"] = json!(45 + (hash(s, &[&t, role, "age"]) % 20));
                officer["totalPay"] = wrap(1e6 + (hash(s, &[&t, role, "pay"]) % 9_000_000) as f64);
            }
            officers.push(officer);
        }
        // Most statements come the way Yahoo sends them now (grossProfit zeroed,
        // operatingIncome empty); some still carry both.
        let full_statements = unit(s, &[&t, "full-statements"]) < 0.3;
        let operating = 0.05 + 0.25 * unit(s, &[&t, "operating"]);
        let statements: Vec<Value> = (0..4)
            .map(|y| {
                let year = self.as_of.year() - 1 - y;
                let end = NaiveDate::from_ymd_opt(year, 12, 31).unwrap_or(self.as_of);
                let seconds = end.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp()).unwrap_or(0);
                let year_revenue = revenue * (1.0 - 0.07 * y as f64);
                let (gross, operating) = if full_statements {
                    (wrap(year_revenue * margin), wrap(year_revenue * operating))
                } else {
                    (json!({"raw": 0, "fmt": null}), json!({}))
                };
                json!({"maxAge": 1, "endDate": {"raw": seconds, "fmt": end.to_string()},
                       "totalRevenue": wrap(year_revenue), "grossProfit": gross, "operatingIncome": operating})
            })
            .collect();
        let analysts = |period: &str| {
            let n = |what: &str| hash(s, &[&t, "analysts", period, what]) % 12;
            json!({"period": period, "strongBuy": n("sb"), "buy": n("b"), "hold": n("h"), "sell": n("s") / 3, "strongSell": n("ss") / 4})
        };
        let price = 5.0 + 495.0 * unit(s, &[&t, "price"]) * (1.0 + 0.05 * ((today as f64) / 20.0).sin());
        let mut body = json!({"quoteSummary": {"result": [{
            "financialData": {"maxAge": 86400, "totalRevenue": wrap(revenue),
                              "grossMargins": {"raw": margin, "fmt": format!("{:.2}%", margin * 100.0)},
                              "revenueGrowth": if hash(s, &[&t, "growth"]).is_multiple_of(4) { json!({}) } else { json!({"raw": 0.07, "fmt": "7.00%"}) },
                              "financialCurrency": "USD"},
            "price": {"maxAge": 1, "symbol": t, "marketCap": wrap(market_cap), "currency": "USD",
                      "regularMarketPrice": {"raw": (price * 100.0).round() / 100.0, "fmt": format!("{price:.2}")}},
            "summaryDetail": {"maxAge": 1, "marketCap": wrap(market_cap)},
            "assetProfile": {"maxAge": 86400, "sector": "Consumer Cyclical", "industry": "Internet Retail",
                             "fullTimeEmployees": 1000 + (hash(s, &[&t, "staff"]) % 200_000),
                             "country": if unit(s, &[&t, "conflict"]) < self.yahoo_conflict_rate { json!("Germany") } else { Value::Null },
                             "companyOfficers": officers},
            "incomeStatementHistory": {"maxAge": 86400, "incomeStatementHistory": statements},
            "recommendationTrend": {"maxAge": 86400, "trend": [analysts("0m"), analysts("-1m"), analysts("-2m")]},
        }], "error": null}});
        // Only the modules asked for come back.
        let wanted: Vec<&str> = modules.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
        if let Some(result) = body["quoteSummary"]["result"][0].as_object_mut() {
            result.retain(|name, _| wanted.contains(&name.as_str()));
        }
        (200, body)
    }
}

/// Words competitors' domains are made of (the seed book's vocabulary, so some are customers).
const RIVAL_FIRST: [&str; 24] = [
    "blue", "red", "north", "silver", "golden", "urban", "coastal", "summit", "harbor", "river", "maple", "cedar",
    "iron", "copper", "crystal", "bright", "swift", "true", "bold", "noble", "royal", "grand", "modern", "classic",
];
const RIVAL_SECOND: [&str; 16] = [
    "outfitters",
    "apparel",
    "goods",
    "supply",
    "market",
    "boutique",
    "home",
    "gear",
    "times",
    "news",
    "media",
    "travel",
    "software",
    "bank",
    "health",
    "motors",
];

const COMMON_ROLES: [&str; 14] = [
    "Senior Software Engineer",
    "Product Designer",
    "Account Executive",
    "Data Analyst",
    "Customer Success Manager",
    "Site Reliability Engineer",
    "Marketing Manager",
    "Financial Analyst",
    "Warehouse Associate",
    "Store Manager",
    "Content Editor",
    "Research Analyst",
    "Frontend Engineer",
    "People Partner",
];

/// Roles that are hiring signals for search, e-commerce, personalization or digital leadership.
const SIGNAL_ROLES: [&str; 10] = [
    "Senior Search Engineer",
    "Search Relevance Engineer",
    "Product Manager, Search & Discovery",
    "Director of E-Commerce",
    "E-Commerce Merchandising Manager",
    "Personalization Data Scientist",
    "Recommendation Systems Engineer",
    "VP of Digital",
    "Head of Digital Product",
    "Director of Search",
];

impl World {
    /// A company's open roles on its job board: (status, body) in the platform's
    /// format. Roles open and close over weeks; a few boards do not exist.
    pub fn job_postings(&self, platform: &str, board: &str) -> (u16, Value) {
        let s = self.seed;
        let b = board.to_ascii_lowercase();
        if unit(s, &[&b, "board-missing"]) < 0.05 {
            return match platform {
                "lever" => (404, json!({"ok": false, "error": "Document not found"})),
                _ => (404, json!({"status": 404, "error": "Job board not found"})),
            };
        }
        let today = self.today();
        // Each of a board's role slots is open for some weeks, then closed for some.
        let slots = 2 + (hash(s, &[&b, "slots"]) % 40) as i64;
        let mut roles = Vec::new();
        for slot in 0..slots {
            let key = slot.to_string();
            let (index, start) = period(s, &b, &format!("slot-{key}"), 20, 90, today);
            if hash(s, &[&b, &key, &index.to_string(), "open"]).is_multiple_of(3) {
                continue;
            }
            // Search and digital roles are rarer than the rest.
            let generation = index.to_string();
            let title = if unit(s, &[&b, &key, &generation, "kind"]) < 0.15 {
                *pick(s, &[&b, &key, &generation, "title"], &SIGNAL_ROLES)
            } else {
                *pick(s, &[&b, &key, &generation, "title"], &COMMON_ROLES)
            };
            let id = hash(s, &[&b, &key, &index.to_string(), "id"]) % 10_000_000;
            let posted =
                EPOCH.and_hms_opt(0, 0, 0).map(|d| d.and_utc() + chrono::Duration::days(start)).unwrap_or_default();
            let (_, city, _) = *pick(s, &[&b, &key, "city"], &PLACES);
            roles.push(match platform {
                "lever" => json!({"id": format!("{id:x}-{b}"), "text": title,
                                  "categories": {"team": "Digital", "location": city, "commitment": "Full-time"},
                                  "createdAt": posted.timestamp_millis(), "hostedUrl": format!("https://jobs.lever.co/{b}/{id:x}")}),
                "ashby" => json!({"id": format!("{id:x}"), "title": title, "location": city, "department": "Digital",
                                  "employmentType": "FullTime", "isListed": true, "isRemote": false,
                                  "publishedAt": posted.to_rfc3339(), "jobUrl": format!("https://jobs.ashbyhq.com/{b}/{id:x}")}),
                _ => json!({"id": id, "title": title, "updated_at": posted.to_rfc3339(), "location": {"name": city},
                            "absolute_url": format!("https://boards.greenhouse.io/{b}/jobs/{id}"), "metadata": null,
                            "internal_job_id": id / 7, "requisition_id": null}),
            });
        }
        let body = match platform {
            "lever" => Value::Array(roles),
            "ashby" => json!({"apiVersion": "1", "jobs": roles}),
            _ => {
                let total = roles.len();
                json!({"jobs": roles, "meta": {"total": total}})
            }
        };
        (200, body)
    }
}

impl World {
    /// BuiltWith Relationships API (`rv4`): some sites share an analytics id with
    /// regional or sister sites; a few (1.5 %) share a tag-manager container with
    /// hundreds of microsites, more than one page holds. Pages of at most 500
    /// relationships: `results` (the total), `max_per_page`, `more_results` and
    /// `next_skip`, the `OFFSET` of the next page.
    pub fn builtwith_relationships(&self, lookup: &str, offset: Option<&str>) -> (u16, Value) {
        let s = self.seed;
        let d = lookup.trim().trim_start_matches("www.").to_ascii_lowercase();
        if unit(s, &[&d, "known"]) < 0.02 {
            return (
                200,
                json!({"Errors": [{"Lookup": null, "Message": "Domain not in our system", "Code": -10}], "Relationships": null}),
            );
        }
        let skip = match offset.map(str::parse::<usize>) {
            None => 0,
            Some(Ok(skip)) => skip,
            Some(Err(_)) => {
                return (
                    400,
                    json!({"Errors": [{"Lookup": d, "Message": "OFFSET must be a number", "Code": -4}], "Relationships": null}),
                );
            }
        };
        let label = d.split('.').next().unwrap_or(&d).to_string();
        // A brand's sites share its analytics account: the id follows the name, not the domain.
        let ga = format!("UA-{}", hash(s, &[&label, "ga"]) % 9_999_999);
        let gtm = format!("GTM-{:06X}", hash(s, &[&d, "gtm"]) % 0xFF_FFFF);
        let mut all: Vec<(&str, &str, String)> = ["co.uk", "de", "fr", "com.au"]
            .iter()
            .take((hash(s, &[&d, "related"]) % 4) as usize)
            .map(|tld| ("ga", ga.as_str(), format!("{label}.{tld}")))
            .filter(|(_, _, site)| *site != d)
            .collect();
        if unit(s, &[&d, "network"]) < 0.015 {
            let microsites = 501 + (hash(s, &[&d, "microsites"]) % 1_300) as usize;
            all.extend((1..=microsites).map(|i| ("gtm", gtm.as_str(), format!("{label}-promo-{i}.com"))));
        }
        let per_page = builtwith::RELATIONSHIPS_PER_CREDIT;
        let page = all.iter().skip(skip).take(per_page);
        // One identifier entry per (type, value) on the page, its matches in order.
        let mut identifiers: Vec<(&str, &str, Vec<Value>)> = Vec::new();
        for (kind, value, domain) in page {
            let m = json!({"Domain": domain, "First": 1_600_000_000_000_i64, "Last": 1_760_000_000_000_i64});
            match identifiers.iter_mut().find(|(k, v, _)| k == kind && v == value) {
                Some((_, _, matches)) => matches.push(m),
                None => identifiers.push((kind, value, vec![m])),
            }
        }
        let identifiers: Vec<Value> = identifiers
            .into_iter()
            .map(|(kind, value, matches)| json!({"Type": kind, "Value": value, "Matches": matches}))
            .collect();
        let next = skip + per_page;
        (
            200,
            json!({
                "Relationships": [{"Domain": d, "Identifiers": identifiers}],
                "Errors": [],
                "results": all.len(),
                "max_per_page": per_page,
                "more_results": next < all.len(),
                "next_skip": if next < all.len() { next } else { 0 },
            }),
        )
    }

    /// BuiltWith Lists API: domains using a technology, 100 a page, `NextOffset` until "END".
    pub fn builtwith_list(&self, technology: &str, offset: Option<&str>) -> (u16, Value) {
        let s = self.seed;
        let tech = technology.to_ascii_lowercase();
        let total = 120 + (hash(s, &[&tech, "list-size"]) % 200) as usize;
        let page: usize = offset.and_then(|o| o.strip_prefix("page-")).and_then(|n| n.parse().ok()).unwrap_or(0);
        let results: Vec<Value> = (page * 100..((page + 1) * 100).min(total))
            .map(|i| {
                let n = i.to_string();
                let first = pick(s, &[&tech, &n, "a"], &RIVAL_FIRST);
                let second = pick(s, &[&tech, &n, "b"], &RIVAL_SECOND);
                json!({"D": format!("{first}-{second}-{i}.com"), "S": hash(s, &[&tech, &n, "spend"]) % 20_000})
            })
            .collect();
        let next = if (page + 1) * 100 >= total { "END".to_string() } else { format!("page-{}", page + 1) };
        (200, json!({"NextOffset": next, "Results": results}))
    }
}

/// News headlines; `{c}` is the company, `{p}` a person, `{t}` a partner technology.
const HEADLINES: [&str; 12] = [
    "{c} appoints {p} as Chief Digital Officer",
    "{c} names {p} Chief Technology Officer",
    "{c} migrates its online store to {t}",
    "{c} completes replatforming of its digital storefront",
    "{c} to acquire regional rival in $120M deal",
    "{c} raises $45M in Series C funding",
    "{c} launches a digital transformation program",
    "{c} reports third-quarter results",
    "{c} opens flagship store downtown",
    "{c} expands same-day delivery",
    "{c} publishes annual sustainability report",
    "{c} partners with local makers for holiday collection",
];

const QUOTE_LINES: [&str; 4] = [
    "Search is where our customers start, and it has to get better",
    "We are rebuilding product discovery from the ground up",
    "Our shoppers expect the relevance they get everywhere else",
    "Digital is now more than half of our revenue",
];

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl World {
    /// A company's news feed at `host` + `path`: RSS for `.xml`/`rss` paths, Atom
    /// otherwise. Items appear over weeks; some feeds are missing or empty.
    /// Returns (status, content type, body).
    pub fn news_feed(&self, host: &str, path: &str) -> (u16, &'static str, String) {
        let s = self.seed;
        let domain = host.trim_start_matches("news.").trim_start_matches("www.").to_ascii_lowercase();
        let d = domain.as_str();
        if unit(s, &[d, "feed-missing"]) < 0.05 {
            return (404, "text/html", "<html><body>404 Not Found</body></html>".into());
        }
        let company = company_name(d);
        let today = self.today();
        let slots = if unit(s, &[d, "feed-empty"]) < 0.1 { 0 } else { 2 + (hash(s, &[d, "feed-slots"]) % 8) as i64 };
        let mut items = Vec::new();
        for slot in 0..slots {
            let key = format!("news-{slot}");
            let (index, start) = period(s, d, &key, 15, 60, today);
            let i = index.to_string();
            let headline = pick(s, &[d, &key, &i, "headline"], &HEADLINES);
            let (person, _) = self.person(d, &format!("{key}-{i}"), today);
            let (partner, _) = self.primary_partner(d);
            let title = headline.replace("{c}", &company).replace("{p}", &person).replace("{t}", partner);
            let summary = if unit(s, &[d, &key, &i, "quote"]) < 0.35 {
                let line = pick(s, &[d, &key, &i, "line"], &QUOTE_LINES);
                let role =
                    pick(s, &[d, &key, &i, "role"], &["Chief Digital Officer", "CTO", "CEO", "VP of E-Commerce"]);
                format!("“{line},” said {person}, {role} at {company}. {title}.")
            } else {
                format!("{title}. More on our newsroom.")
            };
            let published =
                EPOCH.and_hms_opt(9, 0, 0).map(|t| t.and_utc() + chrono::Duration::days(start)).unwrap_or_default();
            items.push((title, summary, published, format!("https://{host}/news/{index}-{slot}")));
        }
        items.sort_by_key(|item| std::cmp::Reverse(item.2));
        let atom = !(path.ends_with(".xml") || path.contains("rss"));
        let body = if atom {
            let entries: String = items
                .iter()
                .map(|(title, summary, published, link)| {
                    format!(
                        "<entry><title type=\"text\">{}</title><link rel=\"alternate\" href=\"{link}\"/><id>{link}</id><updated>{}</updated><summary>{}</summary></entry>",
                        xml_escape(title),
                        published.to_rfc3339(),
                        xml_escape(summary)
                    )
                })
                .collect();
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>{} news</title>{entries}</feed>",
                xml_escape(&company)
            )
        } else {
            let entries: String = items
                .iter()
                .map(|(title, summary, published, link)| {
                    format!(
                        "<item><title>{}</title><link>{link}</link><pubDate>{}</pubDate><description><![CDATA[<p>{summary}</p>]]></description></item>",
                        xml_escape(title),
                        published.to_rfc2822()
                    )
                })
                .collect();
            format!(
                "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>{} newsroom</title><link>https://{host}/</link>{entries}</channel></rss>",
                xml_escape(&company)
            )
        };
        (200, if atom { "application/atom+xml" } else { "application/rss+xml" }, body)
    }
}

/// Where a company sits: by its country-code domain where it has one. BuiltWith knows
/// no more than that of a generic domain (`.com`): country, city and state are empty.
fn place(seed: u64, domain: &str) -> (&'static str, &'static str, &'static str) {
    let country = match domain.rsplit('.').next() {
        Some("uk") => Some("GB"),
        Some(tld) if tld.len() == 2 => Some(tld),
        _ => None,
    };
    let local: Vec<&(&str, &str, &str)> = match country {
        Some(code) => PLACES.iter().filter(|(c, _, _)| c.eq_ignore_ascii_case(code)).collect(),
        None => Vec::new(),
    };
    if local.is_empty() {
        return ("", "", "");
    }
    *local[(hash(seed, &[domain, "place"]) % local.len() as u64) as usize]
}

/// "blue-harbor-outfitters.com" → "Blue Harbor Outfitters".
pub fn company_name(domain: &str) -> String {
    let label = domain.split('.').next().unwrap_or(domain);
    label
        .split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_world_is_a_pure_function_of_its_inputs() {
        let a = World::new(7, date("2026-11-01"));
        let b = World::new(7, date("2026-11-01"));
        assert_eq!(a.builtwith_domain("shop.com"), b.builtwith_domain("shop.com"));
        assert_eq!(a.quote_summary("SHOP", "price"), b.quote_summary("SHOP", "price"));
        assert_ne!(a.builtwith_domain("shop.com"), World::new(8, date("2026-11-01")).builtwith_domain("shop.com"));
    }

    #[test]
    fn search_vendors_change_for_a_small_share_of_domains_per_month() {
        let world = World::new(42, date("2026-11-01"));
        let day = day_index(date("2026-11-01"));
        let domains: Vec<String> = (0..2000).map(|i| format!("site-{i}.com")).collect();
        let changed =
            domains.iter().filter(|d| world.search_vendor(d, day).0 != world.search_vendor(d, day + 30).0).count();
        assert!((20..400).contains(&changed), "{changed} of 2000 changed vendor in 30 days");
        let algolia = domains.iter().filter(|d| world.search_vendor(d, day).0 == "Algolia").count();
        assert!(algolia > 0);
    }

    #[test]
    fn a_few_domains_have_relationships_on_several_pages_read_by_offset() {
        use crate::providers::Answer;
        let world = World::new(42, date("2026-11-20"));
        let paged: Vec<String> = (0..2000)
            .map(|i| format!("site-{i}.com"))
            .filter(|d| world.builtwith_relationships(d, None).1["more_results"] == true)
            .collect();
        assert!((10..60).contains(&paged.len()), "{} of 2000 domains page", paged.len());
        let domain = &paged[0];
        let mut pages = Vec::new();
        let mut offset: Option<String> = None;
        loop {
            let (status, body) = world.builtwith_relationships(domain, offset.as_deref());
            assert_eq!(status, 200);
            let text = body.to_string();
            offset = builtwith::read_relationships_page(text.as_bytes()).next.unwrap();
            pages.push(text);
            if offset.is_none() {
                break;
            }
        }
        let total = world.builtwith_relationships(domain, None).1["results"].as_u64().unwrap() as usize;
        assert_eq!(pages.len(), total.div_ceil(500));
        let credits: u32 = pages.iter().map(|p| builtwith::read_relationships_page(p.as_bytes()).credits).sum();
        assert_eq!(credits as usize, pages.len(), "one credit per page of at most 500");
        let joined = crate::fetch::join_pages(pages.iter().map(|p| p.as_bytes()));
        let Ok(Answer::Data(related)) = builtwith::parse_relationships(&joined) else { panic!() };
        assert_eq!(related.len(), total, "every relationship of every page, once");
        // Only the first page read: not the whole answer.
        assert!(builtwith::parse_relationships(pages[0].as_bytes()).is_err());
        assert_eq!(world.builtwith_relationships(domain, Some("x")).0, 400);
    }

    #[test]
    fn the_free_api_counts_the_domain_apis_technologies_by_group() {
        use crate::providers::Answer;
        let world = World::new(42, date("2026-11-20"));
        let (mut known, mut unknown) = (0, 0);
        for i in 0..300 {
            let domain = format!("site-{i}.com");
            let (status, body) = world.builtwith_free(&domain);
            assert_eq!(status, 200);
            match builtwith::parse_free(body.to_string().as_bytes()).unwrap() {
                Answer::Data(profile) => {
                    known += 1;
                    let (_, full) = world.builtwith_domain(&domain);
                    let Answer::Data(lookup) = builtwith::parse_domain(full.to_string().as_bytes(), 45).unwrap() else {
                        panic!("{domain}: the free API knows it, the Domain API must too")
                    };
                    let live: u64 = profile.groups.iter().map(|g| g.live).sum();
                    let live_in_lookup = lookup.technologies.iter().filter(|t| t.live).count() as u64;
                    assert_eq!(live, live_in_lookup, "{domain}");
                }
                Answer::NoData(_) => unknown += 1,
            }
        }
        assert!(unknown > 0 && known > 250, "{known} known, {unknown} unknown");
    }

    #[test]
    fn every_answer_of_the_world_reads_cleanly() {
        use crate::config::ProviderId;
        use crate::providers::{Answer, jobs, news, similarweb, yahoo};
        for date in ["2026-01-31", "2026-11-20"] {
            let world = World::new(42, date.parse().unwrap());
            for i in 0..400 {
                let domain = format!("site-{i}.com");
                let (_, body) = world.builtwith_domain(&domain);
                let parsed = builtwith::parse_domain(body.to_string().as_bytes(), 45);
                assert!(parsed.is_ok(), "{domain} on {date}: {parsed:?}");
                for metric in similarweb::ENGAGEMENT {
                    let (_, body) = world.similarweb(&domain, metric.path, "world");
                    let parsed = similarweb::parse_metric(body.to_string().as_bytes(), metric);
                    assert!(matches!(parsed, Ok(Answer::Data(_)) | Ok(Answer::NoData(_))), "{domain}: {parsed:?}");
                }
                let (_, body) = world.similarweb(&domain, similarweb::TRAFFIC_SOURCES_PATH, "world");
                assert!(similarweb::parse_search_share(body.to_string().as_bytes()).is_ok(), "{domain}");
                let (_, body) = world.similarweb(&domain, similarweb::SIMILAR_SITES_PATH, "world");
                assert!(
                    matches!(similarweb::parse_similar_sites(body.to_string().as_bytes()), Ok(Answer::Data(s)) if s.len() == 8)
                        || body["meta"]["error_code"] == 401,
                    "{domain}"
                );
                let (_, body) = world.similarweb(&domain, similarweb::TECHNOLOGIES_PATH, "world");
                assert!(similarweb::parse_technologies(body.to_string().as_bytes()).is_ok(), "{domain}");
                // A first page that says more follow is not an answer yet (see the paging test).
                let (_, body) = world.builtwith_relationships(&domain, None);
                let whole = body["more_results"] != true;
                assert_eq!(builtwith::parse_relationships(body.to_string().as_bytes()).is_ok(), whole, "{domain}");
                let (_, body) = world.quote_summary(&format!("T{i}"), yahoo::MODULES);
                assert!(yahoo::parse_quote_summary(body.to_string().as_bytes()).is_ok(), "T{i}");
                for (host, path) in [(format!("news.{domain}"), "/feed.atom"), (domain.clone(), "/newsroom/rss.xml")] {
                    let (status, _, body) = world.news_feed(&host, path);
                    let parsed = news::parse_feed(status, body.as_bytes());
                    assert!(parsed.is_ok(), "{host}{path}: {parsed:?}");
                }
                for platform in [ProviderId::Greenhouse, ProviderId::Lever, ProviderId::Ashby] {
                    let (status, body) = world.job_postings(platform.name(), &domain);
                    let parsed = jobs::parse_postings(platform, status, body.to_string().as_bytes());
                    assert!(parsed.is_ok(), "{domain} on {}: {parsed:?}", platform.name());
                }
            }
        }
    }

    #[test]
    fn a_technology_list_pages_to_the_end() {
        use crate::providers::builtwith::parse_list_page;
        let world = World::new(42, date("2026-11-20"));
        let (mut offset, mut domains) = (None, Vec::new());
        for _ in 0..10 {
            let (_, body) = world.builtwith_list("Shopify Plus", offset.as_deref());
            let page = parse_list_page(body.to_string().as_bytes()).unwrap();
            domains.extend(page.domains);
            offset = page.next_offset;
            if offset.is_none() {
                break;
            }
        }
        assert!(offset.is_none(), "the list ends");
        assert!(domains.len() >= 120, "{}", domains.len());
        let unique: std::collections::BTreeSet<_> = domains.iter().collect();
        assert_eq!(unique.len(), domains.len());
    }

    #[test]
    fn a_few_sites_move_to_a_new_domain_and_take_their_traffic_along() {
        let world = World::new(42, date("2027-12-01"));
        let moved: Vec<(String, NaiveDate, String)> = (0..4000)
            .map(|i| format!("shop-{i}.com"))
            .filter_map(|d| world.renamed(&d).map(|(on, to)| (d, on, to)))
            .collect();
        assert!((8..=40).contains(&moved.len()), "{} of 4000 moved", moved.len());
        let (old, on, new) = &moved[0];
        assert_eq!(world.moved_from(new).as_deref(), Some(old.as_str()));
        assert_eq!(world.moved_from(old), None);
        assert_eq!(world.visits(new, 80), world.visits(old, 80));
        let root = |w: &World| w.builtwith_domain(old).1["Results"][0]["Result"]["Paths"][0]["Domain"].clone();
        let before = World::new(42, *on - chrono::Days::new(1));
        if before.builtwith_domain(old).1["Results"].is_array() {
            assert_eq!(root(&before), old.as_str());
        }
        let after = World::new(42, *on);
        if after.builtwith_domain(new).1["Results"].is_array() {
            assert_eq!(root(&after), new.as_str());
            assert_eq!(after.builtwith_domain(old).1["Results"][0]["Lookup"], old.as_str());
        }
    }

    #[test]
    fn company_names_come_from_the_domain() {
        assert_eq!(company_name("blue-harbor-outfitters.com"), "Blue Harbor Outfitters");
    }
}
