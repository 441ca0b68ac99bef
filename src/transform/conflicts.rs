//! Where sources disagree: the book's company name or country against BuiltWith's.
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

/// The conflict of two claims on one field, if they disagree.
pub fn resolve(
    field: &'static str,
    a: Claim,
    b: Claim,
    same: impl Fn(&str, &str) -> bool,
    trust: &Trust,
    now_ms: i64,
) -> Option<Conflict> {
    if same(&a.value, &b.value) {
        return None;
    }
    let (wa, wb) = (weight(trust, &a, now_ms), weight(trust, &b, now_ms));
    // Ties go to the first claim (the one the row already holds).
    Some(if wa >= wb {
        Conflict { field, chosen: a, chosen_weight: wa, other: b, other_weight: wb }
    } else {
        Conflict { field, chosen: b, chosen_weight: wb, other: a, other_weight: wa }
    })
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
        let pairs = [
            ("company_name", seed(seed_name.get(i)), provider(bw_name.get(i)), true),
            ("country", seed(seed_country.get(i)), provider(bw_country.get(i)), false),
        ];
        for (k, (field, a, b, is_name)) in pairs.into_iter().enumerate() {
            let (Some(a), Some(b)) = (a, b) else { continue };
            let same = |x: &str, y: &str| {
                if is_name { comparable_name(x) == comparable_name(y) } else { x.trim().eq_ignore_ascii_case(y.trim()) }
            };
            if let Some(c) = resolve(field, a, b, same, trust, now_ms) {
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
        .agg([as_struct(fields.iter().map(|f| col(*f)).collect()).alias("conflicts")]);
    let [name, country] = held;
    let mut frame = frame;
    frame.replace("company_name", Column::new("company_name".into(), name))?;
    frame.replace("country", Column::new("country".into(), country))?;
    // A row without a conflict has none: a null list.
    frame.lazy().left_join(gathered, col("domain"), col("c_domain")).collect()
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
        let c = resolve("x", claim("builtwith", Some(0)), claim("seed", None), |a, b| a == b, &trust(), now).unwrap();
        assert_eq!(c.chosen.source, "seed");
        // A fresh SimilarWeb value beats a BuiltWith one a year old: 0.7 > 0.9 × 0.5^(365/180).
        let c = resolve("x", claim("builtwith", Some(365)), claim("similarweb", Some(1)), |a, b| a == b, &trust(), now)
            .unwrap();
        assert_eq!((c.chosen.source.as_str(), c.other.source.as_str()), ("similarweb", "builtwith"));
        assert!(resolve("x", claim("seed", None), claim("seed", None), |a, b| a == b, &trust(), now).is_none());
    }
}
