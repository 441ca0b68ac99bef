//! Case studies to take into the call: for each target the few customer stories
//! (`data/seed/case_studies.csv`) that share the most with it — vertical, partner
//! technology, region, country, size — each with the reason it matched.
//!
//! Matching works on the distinct (vertical, partner tech, region, country, size)
//! combinations of a slice of targets, not on its rows: a few thousand keys at most,
//! whatever the size of the book.

use std::path::Path;

use polars::prelude::*;
use serde::Deserialize;

use crate::config::signals::MatchWeights;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CaseStudy {
    pub id: String,
    pub customer: String,
    pub domain: String,
    pub vertical: String,
    pub partner_tech: String,
    pub country: String,
    pub region: String,
    pub size_band: String,
    pub use_case: String,
    pub headline_metric: String,
    pub url: String,
}

/// Reads the case studies; a bad row is an error naming the file and line.
pub fn load(path: &Path) -> anyhow::Result<Vec<CaseStudy>> {
    let mut reader = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the case studies: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in reader.deserialize::<CaseStudy>().enumerate() {
        let row = row.map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), i + 2))?;
        if row.id.trim().is_empty() || row.customer.trim().is_empty() {
            anyhow::bail!("{}: line {}: a case study needs an id and a customer", path.display(), i + 2);
        }
        if out.iter().any(|c: &CaseStudy| c.id == row.id) {
            anyhow::bail!("{}: line {}: id {:?} is used twice", path.display(), i + 2, row.id);
        }
        out.push(row);
    }
    Ok(out)
}

/// What a target is matched on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub vertical: Option<String>,
    pub partner_tech: Option<String>,
    pub region: Option<String>,
    pub country: Option<String>,
    pub size_band: Option<String>,
}

/// A case study matched to a key: its score and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<'a> {
    pub study: &'a CaseStudy,
    pub score: u32,
    pub reason: String,
}

fn same(a: &Option<String>, b: &str) -> bool {
    a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b))
}

/// What a key and a study share that weighs: (weight, what the reason says, the study's value).
fn shared<'s>(
    key: &Key,
    s: &'s CaseStudy,
    weights: &MatchWeights,
) -> impl Iterator<Item = (u32, &'static str, &'s str)> {
    [
        (weights.vertical, same(&key.vertical, &s.vertical), "vertical", s.vertical.as_str()),
        (weights.partner_tech, same(&key.partner_tech, &s.partner_tech), "partner tech", s.partner_tech.as_str()),
        (weights.region, same(&key.region, &s.region), "region", s.region.as_str()),
        (weights.country, same(&key.country, &s.country), "country", s.country.as_str()),
        (weights.size_band, same(&key.size_band, &s.size_band), "size", s.size_band.as_str()),
    ]
    .into_iter()
    .filter(|(weight, hit, _, _)| *hit && *weight > 0)
    .map(|(weight, _, what, value)| (weight, what, value))
}

/// The best `n` case studies for a key (none that share nothing), best first; ties in file order.
/// Every study is scored; only the `n` kept get their reason written.
pub fn best<'a>(key: &Key, studies: &'a [CaseStudy], weights: &MatchWeights, n: usize) -> Vec<Match<'a>> {
    let mut scored: Vec<(usize, u32)> = studies
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let score: u32 = shared(key, s, weights).map(|(weight, _, _)| weight).sum();
            (score > 0).then_some((i, score))
        })
        .collect();
    scored.sort_by(|(i, a), (j, b)| b.cmp(a).then(i.cmp(j)));
    scored
        .into_iter()
        .take(n)
        .map(|(i, score)| {
            let study = &studies[i];
            let why: Vec<String> =
                shared(key, study, weights).map(|(_, what, value)| format!("same {what} ({value})")).collect();
            Match { study, score, reason: why.join(", ") }
        })
        .collect()
}

const KEY_COLUMNS: [&str; 5] = ["vertical", "partner_tech", "region", "country", "size_band"];

/// Adds `case_studies` (a list of {id, customer, url, use_case, headline_metric,
/// vertical, partner_tech, region, size_band, score, reason}, best first) to a
/// frame that has the key columns.
pub fn add_matches(
    frame: DataFrame,
    studies: &[CaseStudy],
    weights: &MatchWeights,
    n: usize,
) -> PolarsResult<DataFrame> {
    let keys = frame.select(KEY_COLUMNS)?.unique_stable(None, UniqueKeepStrategy::First, None)?;
    let text = |name: &str| -> PolarsResult<Vec<Option<String>>> {
        let ca = keys.column(name)?.cast(&DataType::String)?;
        let ca = ca.str()?.clone();
        Ok((0..ca.len()).map(|i| ca.get(i).map(str::to_string)).collect())
    };
    let columns: Vec<Vec<Option<String>>> = KEY_COLUMNS.iter().map(|c| text(c)).collect::<PolarsResult<_>>()?;
    // One row per (key, match), then gathered into a list per key.
    let mut key_cols: Vec<Vec<Option<String>>> = vec![Vec::new(); KEY_COLUMNS.len()];
    let mut fields: Vec<Vec<String>> = vec![Vec::new(); 9];
    let mut ranks: Vec<u32> = Vec::new();
    // Signed: Delta Lake, Spark and Trino have no unsigned integers.
    let mut scores: Vec<i64> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let rows: Vec<Vec<Option<String>>> =
        (0..keys.height()).map(|r| columns.iter().map(|c| c[r].clone()).collect()).collect();
    for values in &rows {
        let key = Key {
            vertical: values[0].clone(),
            partner_tech: values[1].clone(),
            region: values[2].clone(),
            country: values[3].clone(),
            size_band: values[4].clone(),
        };
        for (rank, m) in best(&key, studies, weights, n).into_iter().enumerate() {
            for (column, value) in key_cols.iter_mut().zip(values) {
                column.push(value.clone());
            }
            let s = m.study;
            for (f, v) in fields.iter_mut().zip([
                &s.id,
                &s.customer,
                &s.url,
                &s.use_case,
                &s.headline_metric,
                &s.vertical,
                &s.partner_tech,
                &s.region,
                &s.size_band,
            ]) {
                f.push(v.clone());
            }
            ranks.push(rank as u32 + 1);
            scores.push(i64::from(m.score));
            reasons.push(m.reason);
        }
    }
    let names =
        ["id", "customer", "url", "use_case", "headline_metric", "vertical", "partner_tech", "region", "size_band"];
    let mut cols: Vec<Column> = KEY_COLUMNS
        .iter()
        .zip(key_cols)
        .map(|(name, values)| Column::new(format!("k_{name}").into(), values))
        .collect();
    for (name, values) in names.iter().zip(&fields) {
        cols.push(Column::new(format!("cs_{name}").into(), values));
    }
    cols.push(Column::new("cs_score".into(), scores));
    cols.push(Column::new("cs_rank".into(), ranks));
    cols.push(Column::new("cs_reason".into(), reasons));
    let matches = DataFrame::new_infer_height(cols)?;
    let key_names: Vec<Expr> = KEY_COLUMNS.iter().map(|c| col(format!("k_{c}"))).collect();
    let mut struct_fields: Vec<Expr> = names.iter().map(|n| col(format!("cs_{n}")).alias(*n)).collect();
    struct_fields.push(col("cs_score").alias("score"));
    struct_fields.push(col("cs_reason").alias("reason"));
    let gathered = matches
        .lazy()
        .sort(["cs_rank"], SortMultipleOptions::default())
        .group_by_stable(key_names)
        .agg([as_struct(struct_fields).alias("case_studies")])
        .collect()?;
    let right_keys: Vec<String> = KEY_COLUMNS.iter().map(|c| format!("k_{c}")).collect();
    let right_keys: Vec<&str> = right_keys.iter().map(String::as_str).collect();
    super::gather::left_join_unique(frame, &gathered, &KEY_COLUMNS, &right_keys, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(id: &str, vertical: &str, partner_tech: &str, country: &str) -> CaseStudy {
        CaseStudy {
            id: id.into(),
            customer: format!("Customer {id}"),
            domain: format!("{id}.com"),
            vertical: vertical.into(),
            partner_tech: partner_tech.into(),
            country: country.into(),
            region: "EMEA".into(),
            size_band: "large".into(),
            use_case: String::new(),
            headline_metric: String::new(),
            url: String::new(),
        }
    }

    #[test]
    fn the_best_studies_come_by_score_then_file_order_each_with_what_it_shares() {
        let studies = vec![
            study("a", "Commerce", "Shopify Plus", "US"),
            study("b", "Media", "Adobe AEM", "DE"),
            study("c", "commerce", "Adobe AEM", "DE"),
            study("d", "Commerce", "Adobe AEM", "FR"),
        ];
        let weights = MatchWeights { vertical: 3, partner_tech: 2, region: 0, country: 1, size_band: 1 };
        let key = Key {
            vertical: Some("Commerce".into()),
            partner_tech: Some("Adobe AEM".into()),
            region: Some("EMEA".into()),
            country: Some("DE".into()),
            size_band: None,
        };
        let got: Vec<(&str, u32, String)> =
            best(&key, &studies, &weights, 3).into_iter().map(|m| (m.study.id.as_str(), m.score, m.reason)).collect();
        assert_eq!(
            got,
            vec![
                ("c", 6, "same vertical (commerce), same partner tech (Adobe AEM), same country (DE)".to_string()),
                ("d", 5, "same vertical (Commerce), same partner tech (Adobe AEM)".to_string()),
                ("a", 3, "same vertical (Commerce)".to_string()),
            ],
            "a shared region weighs 0 and is not a reason; b (3) ties a and comes after it"
        );
        let nothing =
            Key { vertical: Some("Travel".into()), partner_tech: None, region: None, country: None, size_band: None };
        assert!(best(&nothing, &studies, &weights, 3).is_empty(), "a study that shares nothing is not a match");
    }
}
