//! Compiles the signal rules (`pipelines/signals.toml`) into Polars expressions:
//! per signal its level, reasons and evidence dates; the priority; the
//! displacement angle. The rules are data; this file is their interpreter.

use polars::prelude::*;

use crate::config::signals::{Rule, SignalRules, placeholders};
use crate::transform::scoring::{Stages, first_match, present_dates, present_texts};

fn null_text() -> Expr {
    lit(NULL).cast(DataType::String)
}

fn abs(v: Expr) -> Expr {
    when(v.clone().lt(lit(0))).then(lit(0) - v.clone()).otherwise(v)
}

/// Whole number of a float expression, rounded half away from zero.
fn rounded(v: Expr) -> Expr {
    when(v.clone().gt_eq(lit(0.0))).then(v.clone() + lit(0.5)).otherwise(v - lit(0.5)).cast(DataType::Int64)
}

/// `$1.2B`, `$340M`, `$45K`, `$900`.
fn usd(v: Expr) -> Expr {
    let v = v.cast(DataType::Float64);
    let sign = when(v.clone().lt(lit(0.0))).then(lit("-$")).otherwise(lit("$"));
    let a = abs(v);
    let scaled = |unit: f64, suffix: &str| {
        let tenths = rounded(a.clone() / lit(unit / 10.0));
        let frac = tenths.clone() % lit(10i64);
        // Whole units: exact, as tenths less their last digit are a multiple of ten.
        let whole = ((tenths - frac.clone()) / lit(10i64)).cast(DataType::Int64).cast(DataType::String);
        let decimals = when(frac.clone().eq(lit(0i64))).then(lit("")).otherwise(concat_str(
            [lit("."), frac.cast(DataType::String)],
            "",
            false,
        ));
        concat_str([sign.clone(), whole, decimals, lit(suffix.to_string())], "", false)
    };
    when(a.clone().gt_eq(lit(1e9)))
        .then(scaled(1e9, "B"))
        .when(a.clone().gt_eq(lit(1e6)))
        .then(scaled(1e6, "M"))
        .when(a.clone().gt_eq(lit(1e4)))
        .then(concat_str([sign.clone(), rounded(a.clone() / lit(1e3)).cast(DataType::String), lit("K")], "", false))
        .otherwise(concat_str([sign, rounded(a).cast(DataType::String)], "", false))
}

/// A share (0.42) as `42 %`.
fn pct(v: Expr) -> Expr {
    concat_str([rounded(v.cast(DataType::Float64) * lit(100.0)).cast(DataType::String), lit(" %")], "", false)
}

/// A value as text in a named format.
pub(crate) fn formatted(v: Expr, format: Option<&str>) -> Expr {
    match format {
        Some("usd") => usd(v),
        Some("pct") => pct(v),
        Some("num") => rounded(v.cast(DataType::Float64)).cast(DataType::String),
        Some("date") => v.cast(DataType::Date).dt().to_string("%Y-%m-%d"),
        Some("month") => v.cast(DataType::Date).dt().to_string("%Y-%m"),
        _ => v.cast(DataType::String),
    }
}

/// Expands a template: `{value}` the rule's column, `{column}` any other, each with
/// an optional format; `{points}`. A placeholder without a value reads "unknown".
fn template(text: &str, value: &str, points: i32) -> Expr {
    let mut parts = Vec::new();
    let mut rest = text;
    for (name, format) in placeholders(text) {
        let token = match &format {
            Some(f) => format!("{{{name}:{f}}}"),
            None => format!("{{{name}}}"),
        };
        let Some(at) = rest.find(&token) else { continue };
        if at > 0 {
            parts.push(lit(rest[..at].to_string()));
        }
        let piece = match name.as_str() {
            "points" => lit(points.to_string()),
            "value" => formatted(col(value), format.as_deref()),
            other => formatted(col(other), format.as_deref()),
        };
        parts.push(piece.fill_null(lit("unknown")));
        rest = &rest[at + token.len()..];
    }
    if !rest.is_empty() {
        parts.push(lit(rest.to_string()));
    }
    concat_str(parts, "", false)
}

/// One way a rule fires: its condition, points, reason and angle phrase.
struct Firing {
    condition: Expr,
    points: i32,
    reason: Expr,
    angle: Expr,
}

fn firings(rules: &SignalRules, rule: &Rule) -> Vec<Firing> {
    let value = col(rule.column.as_str());
    let unless = rule.unless.iter().fold(lit(true), |acc, c| acc.and(col(c.as_str()).is_null()));
    let phrase = |reason: &str, angle: Option<&String>, points: i32| {
        (template(reason, &rule.column, points), template(angle.map_or(reason, |a| a.as_str()), &rule.column, points))
    };
    if !rule.bands.is_empty() {
        let numeric = value.cast(DataType::Float64);
        // Band i fires when it is reached and no band above it is.
        return rule
            .bands
            .iter()
            .enumerate()
            .map(|(i, band)| {
                let above = rule.bands[..i].iter().fold(lit(true), |acc, b| acc.and(numeric.clone().lt(lit(b.min))));
                let (reason, angle) = phrase(&band.reason, band.angle.as_ref(), band.points);
                Firing {
                    condition: numeric.clone().gt_eq(lit(band.min)).and(above).and(unless.clone()),
                    points: band.points,
                    reason,
                    angle,
                }
            })
            .collect();
    }
    let condition = if let Some(list) = &rule.one_of {
        let values: Vec<String> = rules.lists.get(list).into_iter().flatten().map(|v| v.to_lowercase()).collect();
        let series = Series::new("list".into(), values);
        value.cast(DataType::String).str().to_lowercase().is_in(lit(series).implode(false), false).fill_null(lit(false))
    } else if rule.present {
        value.is_not_null()
    } else {
        let guard = rule.guard.as_deref().map_or(lit(true), |g| col(g).is_not_null());
        value.is_null().and(guard)
    };
    let (reason, angle) = phrase(&rule.reason, rule.angle.as_ref(), rule.points);
    vec![Firing { condition: condition.and(unless), points: rule.points, reason, angle }]
}

/// The signal columns: for each signal `<name>_signal` (a level or `unknown`),
/// `<name>_points`, `<name>_reasons` (list) and `<name>_evidence_on` (list of dates);
/// then `priority` and `displacement_angle`. They read the frame's columns (the
/// score's `icp_tier_name` included), so they go after the score. Each rule's condition
/// is a working column (`__signal_…`) of the first stage, read by the later ones.
pub fn signal_columns(rules: &SignalRules) -> PolarsResult<Stages> {
    let (mut conditions, mut sums, mut levels, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut priority_terms = Vec::new();
    // Per signal, its firings' angle phrases, for the displacement angle.
    let mut facts: std::collections::BTreeMap<&str, Vec<(i32, Expr)>> = Default::default();
    for signal in &rules.signals {
        let name = &signal.name;
        let mut points = Vec::new();
        let mut reasons = Vec::new();
        let mut dates = Vec::new();
        for rule in &signal.rules {
            for f in firings(rules, rule) {
                let fired = format!("__signal_fired_{}", conditions.len());
                conditions.push(f.condition.alias(fired.as_str()));
                let fired = col(fired);
                points.push(when(fired.clone()).then(lit(f.points)).otherwise(lit(0)));
                reasons.push(when(fired.clone()).then(f.reason).otherwise(null_text()));
                if let Some(date) = &rule.evidence_date {
                    dates.push(
                        when(fired.clone())
                            .then(col(date.as_str()).cast(DataType::Date))
                            .otherwise(lit(NULL).cast(DataType::Date)),
                    );
                }
                if !rule.financial {
                    facts
                        .entry(signal.name.as_str())
                        .or_default()
                        .push((f.points, when(fired).then(f.angle).otherwise(null_text())));
                }
            }
        }
        let total = polars::lazy::dsl::sum_horizontal(points, true)?.cast(DataType::Int32);
        sums.push(total.alias(format!("{name}_points")));
        let fired_reasons = format!("__signal_reasons_{name}");
        sums.push(present_texts(reasons).alias(fired_reasons.as_str()));
        sums.push(present_dates(dates).alias(format!("{name}_evidence_on")));
        let total = col(format!("{name}_points"));
        let known = signal.known_when.iter().fold(lit(false), |acc, c| acc.or(col(c.as_str()).is_not_null()));
        let reached = signal.levels.iter().map(|l| (total.clone().gt_eq(lit(l.min_points)), lit(l.name.clone())));
        let level =
            when(known.clone().not()).then(lit("unknown")).otherwise(first_match(reached.collect(), lit("unknown")));
        levels.push(level.alias(format!("{name}_signal")));
        let level = col(format!("{name}_signal"));
        let level_points = rules.priority.level_points.iter().map(|(l, p)| (level.clone().eq(lit(l.clone())), lit(*p)));
        priority_terms.push(first_match(level_points.collect(), lit(0)));
        // Never an empty list: what was looked at and not found is a reason too.
        let fired = col(fired_reasons);
        let unknown = format!("not known yet: no {} found", signal.known_when.join(", "));
        let reasons = when(known.not())
            .then(present_texts(vec![lit(unknown)]))
            .when(fired.clone().list().len().eq(lit(0)))
            .then(present_texts(vec![lit(signal.none_reason.clone())]))
            .otherwise(fired);
        levels.push(reasons.alias(format!("{name}_reasons")));
    }
    let tier = col("icp_tier_name");
    let tier_points = rules.priority.tier_points.iter().map(|(t, p)| (tier.clone().eq(lit(t.clone())), lit(*p)));
    priority_terms.push(first_match(tier_points.collect(), lit(0)));
    let total = polars::lazy::dsl::sum_horizontal(priority_terms, true)?.cast(DataType::Int32);
    last.push(total.alias("priority_points"));
    // Each signal's strongest fact (most points, then file order), in the angle's order.
    let mut strongest = Vec::new();
    for name in &rules.angle.order {
        let Some(fired) = facts.get(name.as_str()) else { continue };
        let mut by_points: Vec<i32> = fired.iter().map(|(p, _)| *p).collect();
        by_points.sort_unstable_by(|a, b| b.cmp(a));
        by_points.dedup();
        let ordered: Vec<Expr> =
            by_points.iter().flat_map(|p| fired.iter().filter(move |(q, _)| q == p).map(|(_, e)| e.clone())).collect();
        // The first that fired.
        strongest.push(coalesce(&ordered));
    }
    let sentence = present_texts(strongest).list().head(lit(rules.angle.max_facts as i64)).list().join(lit("; "), true);
    sums.push(sentence.alias("__signal_angle"));
    let sentence = col("__signal_angle");
    let sentence =
        when(sentence.clone().str().len_chars().gt(lit(0))).then(sentence).otherwise(lit(rules.angle.fallback.clone()));
    let capitalized = concat_str(
        [sentence.clone().str().head(lit(1)).str().to_uppercase(), sentence.str().slice(lit(1), lit(NULL))],
        "",
        false,
    );
    levels.push(capitalized.alias("displacement_angle"));
    let total = col("priority_points");
    let reached = rules.priority.levels.iter().map(|l| (total.clone().gt_eq(lit(l.min_points)), lit(l.name.clone())));
    let lowest = rules.priority.levels.last().map(|l| l.name.clone()).unwrap_or_default();
    let priority = vec![first_match(reached.collect(), lit(lowest)).alias("priority")];
    Ok(vec![conditions, sums, levels, last, priority])
}

/// The columns the signals add to the targets table, in order.
pub fn output_columns(rules: &SignalRules) -> Vec<String> {
    let mut out = Vec::new();
    for s in &rules.signals {
        for suffix in ["signal", "points", "reasons", "evidence_on"] {
            out.push(format!("{}_{suffix}", s.name));
        }
    }
    out.extend(["priority", "priority_points", "displacement_angle"].map(String::from));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(df: &DataFrame, column: &str) -> Vec<Option<String>> {
        let ca = df.column(column).unwrap().str().unwrap().clone();
        (0..ca.len()).map(|i| ca.get(i).map(str::to_string)).collect()
    }

    #[test]
    fn formats_read_as_a_person_writes_them() {
        let df = df!("v" => [Some(1_234_000_000.0), Some(340_000_000.0), Some(45_200.0), Some(900.0), Some(2_000_000_000.0), None])
            .unwrap();
        let out = df.clone().lazy().select([usd(col("v")).alias("u")]).collect().unwrap();
        assert_eq!(
            text(&out, "u"),
            [Some("$1.2B"), Some("$340M"), Some("$45K"), Some("$900"), Some("$2B"), None].map(|s| s.map(String::from))
        );
        let shares = df!("v" => [0.4249, 0.005, -0.11]).unwrap();
        let out = shares.lazy().select([pct(col("v")).alias("p")]).collect().unwrap();
        assert_eq!(text(&out, "p"), [Some("42 %"), Some("1 %"), Some("-11 %")].map(|s| s.map(String::from)));
    }

    #[test]
    fn a_template_fills_every_placeholder_and_says_unknown_for_a_missing_one() {
        let df = df!("a" => [Some("Solr"), Some("Solr")], "b" => [Some("AEM"), None]).unwrap();
        let out = df.lazy().select([template("runs {value} on {b}", "a", 2).alias("t")]).collect().unwrap();
        assert_eq!(text(&out, "t"), [Some("runs Solr on AEM".into()), Some("runs Solr on unknown".into())]);
    }
}
