//! Compiles a scoring model (`pipelines/scoring/*.toml`) into Polars
//! expressions: points per component, the total, the tier, the breakdown and
//! the human reasons. The model is data; this file is its interpreter.

use polars::prelude::*;

use crate::config::{ComponentKind, ScoringModel};

fn null_text() -> Expr {
    lit(NULL).cast(DataType::String)
}

/// Expands a reason template: `{value}` → the column's value, `{points}` → the points.
fn template(text: &str, value: &Expr, points: &Expr) -> Expr {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let (before, after) = rest.split_at(start);
        if !before.is_empty() {
            parts.push(lit(before.to_string()));
        }
        if let Some(tail) = after.strip_prefix("{value}") {
            parts.push(value.clone().cast(DataType::String));
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{points}") {
            parts.push(points.clone().cast(DataType::String));
            rest = tail;
        } else {
            parts.push(lit("{".to_string()));
            rest = &after[1..];
        }
    }
    if !rest.is_empty() {
        parts.push(lit(rest.to_string()));
    }
    concat_str(parts, "", false)
}

/// `when(c1).then(v1).otherwise(when(c2).then(v2).otherwise(…fallback))`: the first
/// condition that holds wins.
pub(crate) fn first_match(cases: Vec<(Expr, Expr)>, fallback: Expr) -> Expr {
    cases
        .into_iter()
        .rev()
        .fold(fallback, |otherwise, (condition, value)| when(condition).then(value).otherwise(otherwise))
}

/// Columns computed in stages, each stage reading the columns of the ones before: an
/// expression used several times (a component's points, a rule's condition) is a column
/// of an earlier stage, computed once, not an expression evaluated at every use.
pub type Stages = Vec<Vec<Expr>>;

/// `frame` with the stages' columns, in order.
pub fn with_stages(frame: LazyFrame, stages: Stages) -> LazyFrame {
    stages.into_iter().fold(frame, |frame, stage| frame.with_columns(stage))
}

/// The scoring columns (the model's validation guarantees 0 ≤ score ≤ max_score):
/// `icp_score`, `icp_tier`, `icp_tier_name`, `score_breakdown` (a struct of points
/// per component) and `score_reasons` (a list with one line per component that scored).
/// Working columns are named `__score_…`; the targets table's select leaves them out.
pub fn score_columns(model: &ScoringModel) -> PolarsResult<Stages> {
    let points_of = |i: usize| format!("__score_points_{i}");
    let lower_of = |i: usize| format!("__score_lower_{i}");
    let (mut lowered, mut points, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for (i, c) in model.components.iter().enumerate() {
        let value = col(c.column.as_str());
        let earned = col(points_of(i));
        match &c.kind {
            ComponentKind::Category { points: table, other, missing, reason } => {
                let text = value.clone().cast(DataType::String);
                lowered.push(text.clone().str().to_lowercase().alias(lower_of(i)));
                let absent = text.clone().is_null().or(text.str().len_chars().eq(lit(0)));
                let lower = col(lower_of(i));
                let mut cases = vec![(absent, lit(*missing))];
                cases.extend(table.iter().map(|(name, p)| (lower.clone().eq(lit(name.to_lowercase())), lit(*p))));
                points.push(first_match(cases, lit(*other)).cast(DataType::Int32).alias(points_of(i)));
                reasons.push(
                    when(earned.clone().gt(lit(0))).then(template(reason, &value, &earned)).otherwise(null_text()),
                );
            }
            ComponentKind::Bands { bands } => {
                let numeric = value.cast(DataType::Float64);
                let reached = |min: f64| numeric.clone().gt_eq(lit(min));
                // A missing value compares as null, which no band reaches: 0 points.
                let first = first_match(bands.iter().map(|b| (reached(b.min), lit(b.points))).collect(), lit(0));
                points.push(first.cast(DataType::Int32).alias(points_of(i)));
                let lines = bands
                    .iter()
                    .map(|b| {
                        let line = if b.points > 0 {
                            lit(b.reason.replace("{points}", &b.points.to_string()))
                        } else {
                            null_text()
                        };
                        (reached(b.min), line)
                    })
                    .collect();
                reasons.push(first_match(lines, null_text()));
            }
        }
    }
    let all_points: Vec<Expr> = (0..model.components.len()).map(|i| col(points_of(i))).collect();
    let score = polars::lazy::dsl::sum_horizontal(all_points, true)?.cast(DataType::Int32);
    let breakdown =
        as_struct(model.components.iter().enumerate().map(|(i, c)| col(points_of(i)).alias(c.name.as_str())).collect());
    let lowest = &model.tiers[model.tiers.len() - 1];
    let reached = |min: i32| col("icp_score").gt_eq(lit(min));
    let tier = first_match(model.tiers.iter().map(|t| (reached(t.min_score), lit(t.tier))).collect(), lit(lowest.tier));
    let tier_name = first_match(
        model.tiers.iter().map(|t| (reached(t.min_score), lit(t.name.clone()))).collect(),
        lit(lowest.name.clone()),
    );
    Ok(vec![
        lowered,
        points,
        vec![
            score.alias("icp_score"),
            breakdown.alias("score_breakdown"),
            present_texts(reasons).alias("score_reasons"),
        ],
        vec![tier.cast(DataType::Int32).alias("icp_tier"), tier_name.alias("icp_tier_name")],
    ])
}

/// Separates the texts of a row while its list is built: a control character that no
/// reason, template or headline holds.
const UNIT: &str = "\u{1f}";

/// The non-null values of `items` (text), in order, as a list per row: `[]` when none.
/// The same list as `concat_list(items).list().drop_nulls()`, built as one string per row
/// and split, which costs a fraction of Polars' row-wise list builder.
pub fn present_texts(items: Vec<Expr>) -> Expr {
    if items.is_empty() {
        return lit("").str().split(lit(UNIT)).list().slice(lit(0), lit(0));
    }
    // Typed throughout: on a slice with no rows Polars may otherwise infer a null type.
    let joined = concat_str(items, UNIT, true).cast(DataType::String).fill_null(lit(""));
    let count = when(joined.clone().eq(lit(""))).then(lit(0i64)).otherwise(lit(i64::MAX));
    joined.str().split(lit(UNIT)).list().slice(lit(0), count).cast(DataType::List(Box::new(DataType::String)))
}

/// The non-null dates of `items`, in order, as a list of dates per row (`[]` when none).
pub fn present_dates(items: Vec<Expr>) -> Expr {
    let days = items.into_iter().map(|d| d.cast(DataType::Date).cast(DataType::Int32).cast(DataType::String)).collect();
    present_texts(days).cast(DataType::List(Box::new(DataType::Int32))).cast(DataType::List(Box::new(DataType::Date)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(path: &str) -> ScoringModel {
        ScoringModel::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    /// (vertical, monthly visits, yearly tech spend, partner tech)
    type Row<'a> = (Option<&'a str>, Option<f64>, Option<f64>, Option<&'a str>);

    /// Scores rows with the shipped model.
    fn score(rows: &[Row]) -> DataFrame {
        let df = df!(
            "vertical" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "sw_monthly_visits" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "tech_spend" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "partner_tech" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )
        .unwrap();
        with_stages(df.lazy(), score_columns(&model("pipelines/scoring/icp.toml")).unwrap()).collect().unwrap()
    }

    fn breakdown(df: &DataFrame, component: &str) -> Vec<i32> {
        let s = df.column("score_breakdown").unwrap().struct_().unwrap().field_by_name(component).unwrap();
        let ca = s.i32().unwrap().clone();
        (0..ca.len()).map(|i| ca.get(i).unwrap()).collect()
    }

    fn ints(df: &DataFrame, column: &str) -> Vec<i32> {
        let ca = df.column(column).unwrap().i32().unwrap().clone();
        (0..ca.len()).map(|i| ca.get(i).unwrap()).collect()
    }

    #[test]
    fn every_traffic_band_edge() {
        let visits =
            [50_000_000.0, 49_999_999.9, 10_000_000.0, 9_999_999.0, 1_000_000.0, 999_999.0, 100_000.0, 99_999.0];
        let mut rows: Vec<_> = visits.iter().map(|v| (None, Some(*v), None, None)).collect();
        rows.push((None, None, None, None));
        assert_eq!(breakdown(&score(&rows), "traffic"), [30, 25, 25, 15, 15, 5, 5, 0, 0]);
    }

    #[test]
    fn every_tech_spend_band_edge() {
        let spend = [100_000.0, 99_999.0, 50_000.0, 49_999.0, 10_000.0, 9_999.0, 1_000.0, 999.0];
        let mut rows: Vec<_> = spend.iter().map(|s| (None, None, Some(*s), None)).collect();
        rows.push((None, None, None, None));
        assert_eq!(breakdown(&score(&rows), "tech_spend"), [20, 15, 15, 10, 10, 5, 5, 0, 0]);
    }

    #[test]
    fn every_vertical_and_partner_tech() {
        let verticals = [
            Some("Commerce"),
            Some("commerce"),
            Some("Content"),
            Some("Media"),
            Some("Travel"),
            Some("Technology"),
            Some("Financial Services"),
            Some("Healthcare"),
            Some(""),
            None,
        ];
        let rows: Vec<_> = verticals.iter().map(|v| (*v, None, None, None)).collect();
        assert_eq!(breakdown(&score(&rows), "vertical"), [40, 40, 25, 25, 20, 15, 15, 10, 0, 0]);

        let partners = [
            Some("Adobe Experience Manager"),
            Some("Salesforce Commerce Cloud"),
            Some("Sitecore"),
            Some("Shopify Plus"),
            Some("Contentful"),
            Some("BigCommerce"),
            Some("Magento"),
            None,
        ];
        let rows: Vec<_> = partners.iter().map(|p| (None, None, None, *p)).collect();
        assert_eq!(breakdown(&score(&rows), "partner_tech"), [10, 8, 8, 7, 6, 5, 3, 0]);
    }

    #[test]
    fn score_is_the_sum_and_reasons_name_what_scored() {
        let df = score(&[
            (Some("Commerce"), Some(52_000_000.0), Some(120_000.0), Some("Adobe Experience Manager")),
            (Some("Media"), Some(2_000_000.0), None, None),
            (None, None, None, None),
        ]);
        assert_eq!(ints(&df, "icp_score"), [100, 40, 0]);
        assert_eq!(ints(&df, "icp_tier"), [1, 3, 4]);
        let reasons = df.column("score_reasons").unwrap().list().unwrap().clone();
        let first = reasons.get_as_series(0).unwrap();
        let first = first.str().unwrap();
        let first: Vec<&str> = (0..first.len()).map(|i| first.get(i).unwrap()).collect();
        assert_eq!(
            first,
            [
                "Commerce vertical +40",
                "50M+ monthly visits +30",
                "$100K+ yearly tech spend +20",
                "Adobe Experience Manager partner tech +10"
            ]
        );
        assert_eq!(reasons.get_as_series(1).unwrap().len(), 2, "only components that scored");
        assert_eq!(reasons.get_as_series(2).unwrap().len(), 0);
    }

    #[test]
    fn tier_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            r#"name = "t"
version = 1
max_score = 100
[[components]]
name = "x"
column = "x"
max = 100
kind = "category"
points = { a = 100, b = 80, c = 79, d = 60, e = 59, f = 40, g = 39 }
other = 0
missing = 0
reason = "{value} +{points}"
[[tiers]]
tier = 1
name = "hot"
min_score = 80
[[tiers]]
tier = 2
name = "warm"
min_score = 60
[[tiers]]
tier = 3
name = "cool"
min_score = 40
[[tiers]]
tier = 4
name = "cold"
min_score = 0
"#,
        )
        .unwrap();
        let model = ScoringModel::load(&path).unwrap();
        let df = df!("x" => ["a", "b", "c", "d", "e", "f", "g", "z"]).unwrap();
        let df = with_stages(df.lazy(), score_columns(&model).unwrap()).collect().unwrap();
        assert_eq!(ints(&df, "icp_score"), [100, 80, 79, 60, 59, 40, 39, 0]);
        assert_eq!(ints(&df, "icp_tier"), [1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn a_model_that_does_not_add_up_is_refused_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/scoring/icp.toml"),
        )
        .unwrap()
        .replace("max_score = 100", "max_score = 90");
        std::fs::write(&path, text).unwrap();
        let err = ScoringModel::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("max_score") && err.contains("100"), "{err}");
        std::fs::write(&path, "name = \"x\"\nversion = 1\nmax_score = 1\nwieght = 3\n").unwrap();
        let err = ScoringModel::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("line 4") && err.contains("wieght"), "{err}");
    }
}
