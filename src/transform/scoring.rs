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
fn first_match(cases: Vec<(Expr, Expr)>, fallback: Expr) -> Expr {
    cases.into_iter().rev().fold(fallback, |otherwise, (condition, value)| when(condition).then(value).otherwise(otherwise))
}

/// (points, reason) expressions of every component, in model order.
fn components(model: &ScoringModel) -> Vec<(String, Expr, Expr)> {
    model
        .components
        .iter()
        .map(|c| {
            let value = col(c.column.as_str());
            let (points, reason) = match &c.kind {
                ComponentKind::Category { points, other, missing, reason } => {
                    let text = value.clone().cast(DataType::String);
                    let absent = text.clone().is_null().or(text.clone().str().len_chars().eq(lit(0)));
                    let lower = text.str().to_lowercase();
                    let mut cases = vec![(absent, lit(*missing))];
                    cases.extend(points.iter().map(|(name, p)| (lower.clone().eq(lit(name.to_lowercase())), lit(*p))));
                    let points_expr = first_match(cases, lit(*other)).cast(DataType::Int32);
                    let reason_expr = when(points_expr.clone().gt(lit(0)))
                        .then(template(reason, &value, &points_expr))
                        .otherwise(null_text());
                    (points_expr, reason_expr)
                }
                ComponentKind::Bands { bands } => {
                    let numeric = value.clone().cast(DataType::Float64);
                    let reached = |min: f64| numeric.clone().gt_eq(lit(min));
                    // A missing value compares as null, which no band reaches: 0 points.
                    let points_expr =
                        first_match(bands.iter().map(|b| (reached(b.min), lit(b.points))).collect(), lit(0))
                            .cast(DataType::Int32);
                    let reasons = bands
                        .iter()
                        .map(|b| {
                            let line = if b.points > 0 { lit(b.reason.replace("{points}", &b.points.to_string())) } else { null_text() };
                            (reached(b.min), line)
                        })
                        .collect();
                    (points_expr, first_match(reasons, null_text()))
                }
            };
            (c.name.clone(), points, reason)
        })
        .collect()
}

/// The scoring columns (the model's validation guarantees 0 ≤ score ≤ max_score):
/// `icp_score`, `icp_tier`, `icp_tier_name`, `score_breakdown` (a struct of points
/// per component) and `score_reasons` (a list with one line per component that scored).
pub fn score_columns(model: &ScoringModel) -> PolarsResult<Vec<Expr>> {
    let parts = components(model);
    let score =
        polars::lazy::dsl::sum_horizontal(parts.iter().map(|(_, p, _)| p.clone()).collect::<Vec<_>>(), true)?
            .cast(DataType::Int32);
    let lowest = &model.tiers[model.tiers.len() - 1];
    let reached = |min: i32| score.clone().gt_eq(lit(min));
    let tier = first_match(model.tiers.iter().map(|t| (reached(t.min_score), lit(t.tier))).collect(), lit(lowest.tier));
    let tier_name = first_match(
        model.tiers.iter().map(|t| (reached(t.min_score), lit(t.name.clone()))).collect(),
        lit(lowest.name.clone()),
    );
    let breakdown = as_struct(parts.iter().map(|(name, p, _)| p.clone().alias(name.as_str())).collect());
    let reasons = concat_list(parts.iter().map(|(_, _, r)| r.clone()).collect::<Vec<_>>())?.list().drop_nulls();
    Ok(vec![
        score.alias("icp_score"),
        tier.cast(DataType::Int32).alias("icp_tier"),
        tier_name.alias("icp_tier_name"),
        breakdown.alias("score_breakdown"),
        reasons.alias("score_reasons"),
    ])
}
