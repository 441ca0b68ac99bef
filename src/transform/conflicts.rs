//! Where sources disagree: the book's company name against BuiltWith's, and its country
//! against BuiltWith's and Yahoo Finance's.
//! Each pair is weighed by the trust order of `pipelines/signals.toml` (`[trust]`:
//! first-party book 1.0 > BuiltWith 0.9 > … ) times its freshness (halved every
//! `half_life_days`); the heavier value is the one the targets row holds, and both
//! are kept in the row's `conflicts` list (the `conflicts` view of `query`).

use polars::prelude::*;

use crate::config::signals::Trust;

/// Words that name a legal form, not a company.
const LEGAL_FORMS: [&str; 16] = [
    "inc",
    "ltd",
    "co",
    "group",
    "holdings",
    "llc",
    "gmbh",
    "plc",
    "corp",
    "corporation",
    "limited",
    "sa",
    "ag",
    "bv",
    "the",
    "company",
];

/// A company name as compared: lower case, letters and digits only, legal forms dropped
/// ("Blue Harbor Outfitters Inc." = "blueharbor outfitters" = "Blueharboroutfitters").
pub fn comparable_name(name: &str) -> String {
    name.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !LEGAL_FORMS.contains(w))
        .collect()
}

/// ISO 3166 codes of the country names Yahoo Finance's profiles use.
const COUNTRY_NAMES: [(&str, &str); 40] = [
    ("united states", "US"),
    ("united kingdom", "GB"),
    ("germany", "DE"),
    ("france", "FR"),
    ("canada", "CA"),
    ("australia", "AU"),
    ("netherlands", "NL"),
    ("japan", "JP"),
    ("sweden", "SE"),
    ("spain", "ES"),
    ("ireland", "IE"),
    ("italy", "IT"),
    ("switzerland", "CH"),
    ("belgium", "BE"),
    ("denmark", "DK"),
    ("norway", "NO"),
    ("finland", "FI"),
    ("austria", "AT"),
    ("poland", "PL"),
    ("portugal", "PT"),
    ("new zealand", "NZ"),
    ("singapore", "SG"),
    ("india", "IN"),
    ("south korea", "KR"),
    ("hong kong", "HK"),
    ("china", "CN"),
    ("taiwan", "TW"),
    ("brazil", "BR"),
    ("mexico", "MX"),
    ("argentina", "AR"),
    ("chile", "CL"),
    ("colombia", "CO"),
    ("israel", "IL"),
    ("south africa", "ZA"),
    ("luxembourg", "LU"),
    ("bermuda", "BM"),
    ("cayman islands", "KY"),
    ("jersey", "JE"),
    ("united arab emirates", "AE"),
    ("greece", "GR"),
];

/// A country as compared: its ISO code, from a code or a name Yahoo uses (`None`: unknown name).
pub fn country_code(text: &str) -> Option<String> {
    let t = text.trim();
    if t.len() == 2 && t.chars().all(|c| c.is_ascii_alphabetic()) {
        return Some(t.to_ascii_uppercase());
    }
    let lower = t.to_lowercase();
    COUNTRY_NAMES.iter().find(|(name, _)| *name == lower).map(|(_, code)| code.to_string())
}

/// One value of a field, from one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub value: String,
    pub source: String,
    /// Milliseconds since the epoch; `None` for the book (current by definition).
    pub fetched_at_ms: Option<i64>,
}

/// A disagreement, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub field: &'static str,
    pub chosen: Claim,
    pub chosen_weight: f64,
    pub other: Claim,
    pub other_weight: f64,
}

fn weight(trust: &Trust, claim: &Claim, now_ms: i64) -> f64 {
    let base = trust.sources.get(&claim.source).copied().unwrap_or(trust.unknown_source);
    let age_days = claim.fetched_at_ms.map_or(0.0, |at| ((now_ms - at) as f64 / 86_400_000.0).max(0.0));
    base * 0.5f64.powf(age_days / trust.half_life_days)
}

/// The claims of several sources on one field: the heaviest wins (ties: the first, the
/// one the row already holds), and each claim that disagrees with it is a conflict.
pub fn resolve_all(
    field: &'static str,
    claims: Vec<Claim>,
    same: impl Fn(&str, &str) -> bool,
    trust: &Trust,
    now_ms: i64,
) -> Vec<Conflict> {
    let weighed: Vec<(Claim, f64)> = claims
        .into_iter()
        .map(|c| {
            let w = weight(trust, &c, now_ms);
            (c, w)
        })
        .collect();
    let mut best = 0;
    for (i, (_, w)) in weighed.iter().enumerate() {
        if *w > weighed[best].1 {
            best = i;
        }
    }
    let Some((chosen, chosen_weight)) = weighed.get(best).cloned() else { return Vec::new() };
    weighed
        .into_iter()
        .enumerate()
        .filter(|(i, (c, _))| *i != best && !same(&chosen.value, &c.value))
        .map(|(_, (other, other_weight))| Conflict {
            field,
            chosen: chosen.clone(),
            chosen_weight,
            other,
            other_weight,
        })
        .collect()
}

/// Adds `conflicts` (a list of {field, value, source, weight, other_value,
/// other_source, other_fetched_at, other_weight}) to a slice of the wide frame,
/// from its seed and BuiltWith columns.
pub fn add_conflicts(frame: DataFrame, trust: &Trust, now_ms: i64) -> PolarsResult<DataFrame> {
    let text =
        |name: &str| -> PolarsResult<StringChunked> { Ok(frame.column(name)?.cast(&DataType::String)?.str()?.clone()) };
    let domains = text("domain")?;
    let (seed_name, bw_name) = (text("seed_company_name")?, text("bw_company_name")?);
    let (seed_country, bw_country) = (text("seed_country")?, text("bw_country")?);
    let source = text("company_source")?;
    let at = frame.column("company_fetched_at")?.cast(&DataType::Int64)?;
    let at = at.i64()?;
    let (yahoo_country, yahoo_source) = (text("yahoo_country")?, text("financials_source")?);
    let yahoo_at = frame.column("financials_fetched_at")?.cast(&DataType::Int64)?;
    let yahoo_at = yahoo_at.i64()?;
    let mut rows: Vec<(String, Conflict)> = Vec::new();
    // The row holds the book's value; where the provider's weighs more, it holds that.
    let mut held: [Vec<Option<String>>; 2] = [text("company_name")?, text("country")?]
        .map(|ca| (0..ca.len()).map(|i| ca.get(i).map(str::to_string)).collect());
    for i in 0..frame.height() {
        let Some(domain) = domains.get(i) else { continue };
        let provider = |value: Option<&str>| {
            value.map(|v| Claim {
                value: v.to_string(),
                source: source.get(i).unwrap_or("builtwith").to_string(),
                fetched_at_ms: at.get(i),
            })
        };
        let seed = |value: Option<&str>| {
            value.map(|v| Claim { value: v.to_string(), source: "seed".into(), fetched_at_ms: None })
        };
        // Yahoo names the country; compared (and held) as its code. A name it does not know is no claim.
        let yahoo = yahoo_country.get(i).and_then(country_code).map(|code| Claim {
            value: code,
            source: yahoo_source.get(i).unwrap_or("yahoo_finance").to_string(),
            fetched_at_ms: yahoo_at.get(i),
        });
        let fields: [(&'static str, Vec<Option<Claim>>, bool); 2] = [
            ("company_name", vec![seed(seed_name.get(i)), provider(bw_name.get(i))], true),
            ("country", vec![seed(seed_country.get(i)), provider(bw_country.get(i)), yahoo], false),
        ];
        for (k, (field, claims, is_name)) in fields.into_iter().enumerate() {
            let claims: Vec<Claim> = claims.into_iter().flatten().filter(|c| !c.value.trim().is_empty()).collect();
            if claims.len() < 2 {
                continue;
            }
            let same = |x: &str, y: &str| {
                if is_name { comparable_name(x) == comparable_name(y) } else { x.trim().eq_ignore_ascii_case(y.trim()) }
            };
            for c in resolve_all(field, claims, same, trust, now_ms) {
                if let Some(slot) = held[k].get_mut(i) {
                    *slot = Some(c.chosen.value.clone());
                }
                rows.push((domain.to_string(), c));
            }
        }
    }
    let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
    let conflicts = df!(
        "c_domain" => rows.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        "field" => rows.iter().map(|(_, c)| c.field).collect::<Vec<_>>(),
        "value" => rows.iter().map(|(_, c)| c.chosen.value.as_str()).collect::<Vec<_>>(),
        "source" => rows.iter().map(|(_, c)| c.chosen.source.as_str()).collect::<Vec<_>>(),
        "fetched_at" => rows.iter().map(|(_, c)| c.chosen.fetched_at_ms).collect::<Vec<_>>(),
        "weight" => rows.iter().map(|(_, c)| (c.chosen_weight * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        "other_value" => rows.iter().map(|(_, c)| c.other.value.as_str()).collect::<Vec<_>>(),
        "other_source" => rows.iter().map(|(_, c)| c.other.source.as_str()).collect::<Vec<_>>(),
        "other_fetched_at" => rows.iter().map(|(_, c)| c.other.fetched_at_ms).collect::<Vec<_>>(),
        "other_weight" => rows.iter().map(|(_, c)| (c.other_weight * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
    )?;
    let fields = [
        "field",
        "value",
        "source",
        "fetched_at",
        "weight",
        "other_value",
        "other_source",
        "other_fetched_at",
        "other_weight",
    ];
    let gathered = conflicts
        .lazy()
        .with_columns([col("fetched_at").cast(utc.clone()), col("other_fetched_at").cast(utc)])
        .group_by_stable([col("c_domain")])
        .agg([as_struct(fields.iter().map(|f| col(*f)).collect()).alias("conflicts")])
        .collect()?;
    let [name, country] = held;
    let mut frame = frame;
    frame.replace("company_name", Column::new("company_name".into(), name))?;
    frame.replace("country", Column::new("country".into(), country))?;
    // A row without a conflict has none: a null list.
    super::gather::left_join_unique(frame, &gathered, &["domain"], &["c_domain"], false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust() -> Trust {
        Trust {
            sources: [("seed".to_string(), 1.0), ("builtwith".to_string(), 0.9), ("similarweb".to_string(), 0.7)]
                .into(),
            unknown_source: 0.5,
            half_life_days: 180.0,
        }
    }

    #[test]
    fn names_compare_without_legal_forms_spaces_or_case() {
        assert_eq!(comparable_name("Blue Harbor Outfitters Inc."), comparable_name("Blueharboroutfitters"));
        assert_ne!(comparable_name("Oak Goods"), comparable_name("Oak Brands"));
    }

    #[test]
    fn the_trust_order_weighted_by_freshness_decides() {
        let now = 1_000 * 86_400_000;
        let claim = |source: &str, days_old: Option<i64>| Claim {
            value: source.to_string(),
            source: source.to_string(),
            fetched_at_ms: days_old.map(|d| now - d * 86_400_000),
        };
        let c = resolve_all("x", vec![claim("builtwith", Some(0)), claim("seed", None)], |a, b| a == b, &trust(), now)
            .pop()
            .unwrap();
        assert_eq!(c.chosen.source, "seed");
        // A fresh SimilarWeb value beats a BuiltWith one a year old: 0.7 > 0.9 × 0.5^(365/180).
        let c = resolve_all(
            "x",
            vec![claim("builtwith", Some(365)), claim("similarweb", Some(1))],
            |a, b| a == b,
            &trust(),
            now,
        )
        .pop()
        .unwrap();
        assert_eq!((c.chosen.source.as_str(), c.other.source.as_str()), ("similarweb", "builtwith"));
        assert!(
            resolve_all("x", vec![claim("seed", None), claim("seed", None)], |a, b| a == b, &trust(), now).is_empty()
        );
        // Three sources: the heaviest is held, each one that disagrees with it is listed.
        let all = resolve_all(
            "x",
            vec![claim("builtwith", Some(0)), claim("seed", None), claim("similarweb", Some(0))],
            |a, b| a == b,
            &trust(),
            now,
        );
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|c| c.chosen.source == "seed"));
    }

    #[test]
    fn countries_compare_by_code() {
        assert_eq!(country_code("United States").as_deref(), Some("US"));
        assert_eq!(country_code("gb").as_deref(), Some("GB"));
        assert_eq!(country_code("Atlantis"), None);
    }
}
