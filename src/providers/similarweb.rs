//! SimilarWeb REST API v1 (`/v1/website/{domain}/{group}/{metric}?api_key=…`).
//!
//! Monthly series are dated the 1st of the month; values are full-precision
//! floats. Bounce rate is a fraction but is normalized anyway (some sources give
//! 0–100). `traffic-sources/overview-share` returns *absolute* visits per
//! source: the search share is Search (organic + paid) over all sources.
//! An error envelope with 401 "Data not found" means the site is too small to
//! measure — a fact, not a failure.

use serde_json::Value;

use super::{Answer, ProviderError, normalize_rate, parse_json, text};

/// The query parameter that carries the API key.
pub const KEY_PARAM: &str = "api_key";

/// One metric endpoint: its name (for the ledger and costs), its path below
/// `/v1/website/{domain}/`, and the key of its series in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub endpoint: &'static str,
    pub path: &'static str,
    pub series_key: &'static str,
}

pub const VISITS: Metric =
    Metric { endpoint: "visits", path: "total-traffic-and-engagement/visits", series_key: "visits" };
pub const BOUNCE_RATE: Metric =
    Metric { endpoint: "bounce_rate", path: "total-traffic-and-engagement/bounce-rate", series_key: "bounce_rate" };
pub const PAGES_PER_VISIT: Metric = Metric {
    endpoint: "pages_per_visit",
    path: "total-traffic-and-engagement/pages-per-visit",
    series_key: "pages_per_visit",
};
pub const AVERAGE_VISIT_DURATION: Metric = Metric {
    endpoint: "average_visit_duration",
    path: "total-traffic-and-engagement/average-visit-duration",
    series_key: "average_visit_duration",
};
pub const ENGAGEMENT: [Metric; 4] = [VISITS, BOUNCE_RATE, PAGES_PER_VISIT, AVERAGE_VISIT_DURATION];
pub const ENDPOINT_TRAFFIC_SOURCES: &str = "traffic_sources";
pub const TRAFFIC_SOURCES_PATH: &str = "traffic-sources/overview-share";

/// Path and query (without the key) of a monthly request over `[start, end]` (`YYYY-MM`).
pub fn request(
    domain: &str,
    path: &str,
    country: &str,
    start: &str,
    end: &str,
) -> (String, Vec<(&'static str, String)>) {
    (
        format!("/v1/website/{domain}/{path}"),
        vec![
            ("start_date", start.to_string()),
            ("end_date", end.to_string()),
            ("country", country.to_string()),
            ("granularity", "monthly".to_string()),
            ("main_domain_only", "false".to_string()),
        ],
    )
}

pub const ENDPOINT_SIMILAR_SITES: &str = "similar_sites";
pub const SIMILAR_SITES_PATH: &str = "similar-sites/similarsites";
pub const ENDPOINT_TECHNOLOGIES: &str = "technologies";
pub const TECHNOLOGIES_PATH: &str = "technographics/all";

/// A request without a date window (similar sites, technologies).
pub fn plain_request(domain: &str, path: &str) -> (String, Vec<(&'static str, String)>) {
    (format!("/v1/website/{domain}/{path}"), vec![("format", "json".to_string())])
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimilarSite {
    pub domain: String,
    /// Similarity, 0–1.
    pub score: f64,
}

/// `similar-sites/similarsites`: `{"similar_sites": [{"url": "rival.com", "score": 0.87}]}`.
/// (This shape follows SimilarWeb's documentation; PROVIDERS.md does not record it.)
pub fn parse_similar_sites(body: &[u8]) -> Result<Answer<Vec<SimilarSite>>, ProviderError> {
    let json = parse_json(body)?;
    if let Some(answer) = error_envelope(&json) {
        return answer;
    }
    let sites = json
        .get("similar_sites")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("no \"similar_sites\" list".into()))?;
    let mut out = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let Some(url) = text(site.get("url")) else { continue };
        let score = site.get("score").and_then(Value::as_f64).unwrap_or(0.0);
        let score = normalize_rate(&format!("similar_sites[{i}].score"), score)?;
        match crate::targets::normalize_domain(&url) {
            Ok(domain) => out.push(SimilarSite { domain, score }),
            Err(_) => continue, // a site SimilarWeb lists without a usable domain
        }
    }
    Ok(Answer::Data(out))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Technology {
    pub name: String,
    pub category: Option<String>,
    pub first_detected: Option<String>,
    pub last_detected: Option<String>,
}

/// `technographics/all`: `{"technologies": [{"technology_name", "category",
/// "first_detected", "last_detected"}]}` with `YYYY-MM-DD` dates, and the data's
/// date in `meta.last_updated`. (Shape as documented by SimilarWeb; PROVIDERS.md
/// does not record it.)
/// What SimilarWeb detects on a site, and the date of its data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Technographics {
    pub updated: Option<String>,
    pub technologies: Vec<Technology>,
}

pub fn parse_technologies(body: &[u8]) -> Result<Answer<Technographics>, ProviderError> {
    let json = parse_json(body)?;
    if let Some(answer) = error_envelope(&json) {
        return answer;
    }
    let list = json
        .get("technologies")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("no \"technologies\" list".into()))?;
    let technologies = list
        .iter()
        .filter_map(|t| {
            Some(Technology {
                name: text(t.get("technology_name"))?,
                category: text(t.get("category")),
                first_detected: text(t.get("first_detected")),
                last_detected: text(t.get("last_detected")),
            })
        })
        .collect();
    let updated = text(json.get("meta").and_then(|m| m.get("last_updated")));
    Ok(Answer::Data(Technographics { updated, technologies }))
}

/// A monthly value; `month` is the `YYYY-MM-DD` date of its first day.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub month: String,
    pub value: f64,
}

/// Reads the error envelope, if the body is one: "Data not found" is `NoData`.
fn error_envelope<T>(json: &Value) -> Option<Result<Answer<T>, ProviderError>> {
    let meta = json.get("meta")?;
    if meta.get("status").and_then(Value::as_str) != Some("Error") {
        return None;
    }
    let code = meta.get("error_code").map(|c| c.to_string()).unwrap_or_else(|| "?".into());
    let message = text(meta.get("error_message")).unwrap_or_else(|| "unknown error".into());
    if code == "401" && message.to_ascii_lowercase().contains("data not found") {
        return Some(Ok(Answer::NoData(message)));
    }
    Some(Err(ProviderError::Api { code, message }))
}

/// Parses a metric series, oldest month first. Rates are normalized to 0–1.
pub fn parse_metric(body: &[u8], metric: Metric) -> Result<Answer<Vec<Point>>, ProviderError> {
    let json = parse_json(body)?;
    if let Some(answer) = error_envelope(&json) {
        return answer;
    }
    let series = json
        .get(metric.series_key)
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed(format!("no {:?} series", metric.series_key)))?;
    let mut points = Vec::with_capacity(series.len());
    for (i, point) in series.iter().enumerate() {
        let field = |key: &str| format!("{}[{i}].{key}", metric.series_key);
        let month = text(point.get("date"))
            .ok_or_else(|| ProviderError::Invalid { field: field("date"), message: "missing date".into() })?;
        let Some(raw) = point.get(metric.series_key).and_then(Value::as_f64) else {
            continue; // a month without an estimate
        };
        let value = match metric.endpoint {
            "bounce_rate" => normalize_rate(&field(metric.series_key), raw)?,
            _ if raw < 0.0 || !raw.is_finite() => {
                return Err(ProviderError::Invalid {
                    field: field(metric.series_key),
                    message: format!("{raw} is negative"),
                });
            }
            _ => raw,
        };
        points.push(Point { month, value });
    }
    points.sort_by(|a, b| a.month.cmp(&b.month));
    Ok(Answer::Data(points))
}

/// Parses `traffic-sources/overview-share` into the monthly share of search
/// (organic + paid search visits over all sources' visits), oldest first.
pub fn parse_search_share(body: &[u8]) -> Result<Answer<Vec<Point>>, ProviderError> {
    let json = parse_json(body)?;
    if let Some(answer) = error_envelope(&json) {
        return answer;
    }
    let by_domain = json
        .get("visits")
        .and_then(Value::as_object)
        .ok_or_else(|| ProviderError::Malformed("no \"visits\" object".into()))?;
    // Keyed by the domain asked for; there is one key.
    let Some(sources) = by_domain.values().next().and_then(Value::as_array) else {
        return Ok(Answer::Data(Vec::new()));
    };
    let mut months: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for (s, source) in sources.iter().enumerate() {
        let is_search = text(source.get("source_type")).is_some_and(|t| t.eq_ignore_ascii_case("search"));
        let points = source.get("visits").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (i, point) in points.iter().enumerate() {
            let Some(month) = text(point.get("date")) else { continue };
            let mut visits = 0.0;
            for key in ["organic", "paid"] {
                let v = point.get(key).and_then(Value::as_f64).unwrap_or(0.0);
                if v < 0.0 || !v.is_finite() {
                    return Err(ProviderError::Invalid {
                        field: format!("visits[{s}].visits[{i}].{key}"),
                        message: format!("{v} is negative"),
                    });
                }
                visits += v;
            }
            let entry = months.entry(month).or_default();
            entry.1 += visits;
            if is_search {
                entry.0 += visits;
            }
        }
    }
    Ok(Answer::Data(
        months
            .into_iter()
            .filter(|(_, (_, total))| *total > 0.0)
            .map(|(month, (search, total))| Point { month, value: search / total })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(answer: Answer<Vec<Point>>) -> Vec<Point> {
        match answer {
            Answer::Data(points) => points,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn visits_series_is_read_oldest_first() {
        let body = br#"{"meta":{"request":{"domain":"shop.com","country":"world","granularity":"Monthly","state":null},
            "status":"Success","last_updated":"2022-08-31"},
            "visits":[{"date":"2022-07-01","visits":17000000.5},{"date":"2022-06-01","visits":16731909.160165433},
                      {"date":"2022-05-01","visits":null}]}"#;
        let points = data(parse_metric(body, VISITS).unwrap());
        assert_eq!(points.len(), 2, "a null month is skipped");
        assert_eq!(points[0], Point { month: "2022-06-01".into(), value: 16731909.160165433 });
        assert_eq!(points[1].month, "2022-07-01");
    }

    #[test]
    fn bounce_rate_given_as_percent_becomes_a_fraction() {
        let body = br#"{"meta":{"status":"Success"},"bounce_rate":[{"date":"2022-06-01","bounce_rate":47.5}]}"#;
        assert_eq!(data(parse_metric(body, BOUNCE_RATE).unwrap())[0].value, 0.475);
        let body = br#"{"meta":{"status":"Success"},"bounce_rate":[{"date":"2022-06-01","bounce_rate":0.475}]}"#;
        assert_eq!(data(parse_metric(body, BOUNCE_RATE).unwrap())[0].value, 0.475);
        let body = br#"{"meta":{"status":"Success"},"bounce_rate":[{"date":"2022-06-01","bounce_rate":250}]}"#;
        let err = parse_metric(body, BOUNCE_RATE).unwrap_err();
        assert!(err.to_string().contains("bounce_rate[0].bounce_rate"), "{err}");
    }

    #[test]
    fn negative_visits_are_invalid() {
        let body = br#"{"meta":{"status":"Success"},"visits":[{"date":"2022-06-01","visits":-3}]}"#;
        assert!(matches!(parse_metric(body, VISITS), Err(ProviderError::Invalid { .. })));
    }

    #[test]
    fn data_not_found_is_a_fact_and_other_errors_are_errors() {
        let body = br#"{"meta":{"status":"Error","error_code":401,"error_message":"Data not found"}}"#;
        assert!(matches!(parse_metric(body, VISITS), Ok(Answer::NoData(_))));
        let body = br#"{"meta":{"status":"Error","error_code":403,"error_message":"Invalid API key"}}"#;
        assert_eq!(
            parse_metric(body, VISITS),
            Err(ProviderError::Api { code: "403".into(), message: "Invalid API key".into() })
        );
    }

    #[test]
    fn a_success_without_its_series_is_malformed() {
        let body = br#"{"meta":{"status":"Success"}}"#;
        assert!(matches!(parse_metric(body, PAGES_PER_VISIT), Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn similar_sites_and_technologies() {
        let body = br#"{"meta":{"status":"Success"},"similar_sites":[{"url":"www.Rival.com","score":0.91},{"url":"","score":0.5},
            {"url":"other.co.uk","score":45}]}"#;
        let Answer::Data(sites) = parse_similar_sites(body).unwrap() else { panic!() };
        assert_eq!(
            sites,
            [
                SimilarSite { domain: "rival.com".into(), score: 0.91 },
                SimilarSite { domain: "other.co.uk".into(), score: 0.45 }
            ]
        );
        let body = br#"{"meta":{"status":"Success","last_updated":"2026-10-31"},"technologies":[
            {"technology_name":"Elasticsearch","category":"Search","first_detected":"2024-01-01","last_detected":"2026-10-01"},
            {"category":"no name"}]}"#;
        let Answer::Data(found) = parse_technologies(body).unwrap() else { panic!() };
        assert_eq!(found.updated.as_deref(), Some("2026-10-31"));
        assert_eq!(found.technologies.len(), 1);
        let missing = br#"{"meta":{"status":"Error","error_code":401,"error_message":"Data not found"}}"#;
        assert!(matches!(parse_technologies(missing), Ok(Answer::NoData(_))));
    }

    #[test]
    fn search_share_is_search_visits_over_all_sources() {
        let body = br#"{"meta":{"request":{"domain":"shop.com"},"status":"Success"},"visits":{"shop.com":[
            {"source_type":"Search","visits":[{"date":"2022-06-01","organic":300,"paid":100}]},
            {"source_type":"Social","visits":[{"date":"2022-06-01","organic":100,"paid":0}]},
            {"source_type":"Mail","visits":[{"date":"2022-06-01","organic":50,"paid":null}]},
            {"source_type":"Display Ads","visits":[{"date":"2022-06-01","organic":0,"paid":50}]},
            {"source_type":"Direct","visits":[{"date":"2022-06-01","organic":300}]},
            {"source_type":"Referrals","visits":[{"date":"2022-06-01","organic":100,"paid":0}]}]}}"#;
        let points = data(parse_search_share(body).unwrap());
        assert_eq!(points, [Point { month: "2022-06-01".into(), value: 0.4 }]);
    }
}
