//! The change rules (`pipelines/changes.toml`): which differences between two
//! snapshots are events, how much each matters, and what it says. The transform
//! layer compiles the conditions into Polars expressions; nothing here knows what
//! "Elasticsearch" or "CFO" mean.
//!
//! A rule names a *field* of the change catalogue (`transform::changes::FIELDS`:
//! `search_vendor`, `technologies`, `executives`, `monthly_visits`, …), a
//! condition, and how to report it. Rules are tried in file order and the first
//! one that matches a change makes the event, so the stronger band goes first.
//! Every error names the file, the line of the rule and the key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

/// Significance, most important first.
pub const SIGNIFICANCE: [&str; 4] = ["critical", "high", "medium", "low"];

/// Rank of a significance: 0 for critical, 3 for low.
pub fn significance_rank(name: &str) -> Option<usize> {
    SIGNIFICANCE.iter().position(|s| s.eq_ignore_ascii_case(name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// An item (or a value) seen now that was not there before.
    Added,
    /// An item (or a value) no longer seen, confirmed by the field's `confirm` fetches.
    Removed,
    /// A value replaced by another (`from`/`to` narrow it).
    Changed,
    /// A number moved by at least `threshold` (a share: 0.2 is 20 %) of its old value.
    RelativeChange,
    /// A tier number crossed: `up` is toward tier 1 (the best), `down` away from it.
    TierCrossed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    #[default]
    Either,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    field: String,
    condition: Condition,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    from: Vec<String>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    not_to: Vec<String>,
    threshold: Option<f64>,
    #[serde(default)]
    direction: Direction,
    category: String,
    significance: String,
    summary: String,
    #[serde(default)]
    relevance: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRulesFile {
    version: u32,
    #[serde(default = "default_confirm")]
    confirm_removals: u32,
    #[serde(default)]
    confirm: BTreeMap<String, u32>,
    #[serde(default)]
    confirm_changes: BTreeMap<String, u32>,
    #[serde(default = "default_slack")]
    first_detected_slack_days: u32,
    #[serde(default)]
    categories: Vec<String>,
    rules: Vec<Spanned<RuleFile>>,
}

fn default_confirm() -> u32 {
    2
}

fn default_slack() -> u32 {
    7
}

/// One rule, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRule {
    pub id: String,
    pub field: String,
    pub condition: Condition,
    /// Only these items of a list field (e.g. the roles CFO, CTO, CDO); empty: any.
    pub keys: Vec<String>,
    /// The old value must be one of these (case-insensitive); empty: any.
    pub from: Vec<String>,
    /// The new value must be one of these; empty: any.
    pub to: Vec<String>,
    /// The new value must not be one of these.
    pub not_to: Vec<String>,
    pub threshold: Option<f64>,
    pub direction: Direction,
    pub category: String,
    pub significance: String,
    /// `{domain}`, `{item}`, `{old}`, `{new}` and `{change}` (a signed percentage) are filled in.
    pub summary: String,
    pub relevance: String,
    /// Line of the rule in its file.
    pub line: usize,
}

/// The whole rules file, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRules {
    pub version: u32,
    /// Consecutive fetches an item must be absent in before its removal is reported.
    pub confirm_removals: u32,
    /// Per field, instead of `confirm_removals`.
    pub confirm: BTreeMap<String, u32>,
    /// Per field: consecutive fetches a changed value must be seen in before it is a change.
    pub confirm_changes: BTreeMap<String, u32>,
    /// An item the provider dates (a technology's FirstDetected) is an addition only
    /// when first detected at most this many days before the previous fetch.
    pub first_detected_slack_days: u32,
    pub rules: Vec<ChangeRule>,
    /// The categories rules may use (empty: any).
    pub categories: Vec<String>,
    /// sha256 of the file's bytes.
    pub sha256: String,
}

impl ChangeRules {
    /// Fetches of absence that confirm a removal of `field`.
    pub fn confirm_for(&self, field: &str) -> u32 {
        self.confirm.get(field).copied().unwrap_or(self.confirm_removals).max(1)
    }

    /// Loads and checks a rules file; `fields` is the catalogue of fields a rule
    /// may name, with whether each is numeric.
    pub fn load(path: &Path, fields: &[(&str, bool)]) -> Result<Self, ConfigError> {
        let (file, text): (ChangeRulesFile, String) = super::load_toml(path)?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |line: usize, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("line {line}: {key}"),
            message,
        };
        let known = || fields.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ");
        if file.confirm_removals == 0 {
            return Err(invalid(1, "confirm_removals".into(), "must be at least 1".into()));
        }
        for (table, map) in [("confirm", &file.confirm), ("confirm_changes", &file.confirm_changes)] {
            let line = text.find(&format!("[{table}]")).map(line_of).unwrap_or(1);
            for (field, k) in map {
                if !fields.iter().any(|(f, _)| f == field) {
                    return Err(invalid(
                        line,
                        format!("{table}.{field}"),
                        format!("no such field (fields: {})", known()),
                    ));
                }
                if *k == 0 {
                    return Err(invalid(line, format!("{table}.{field}"), "must be at least 1".into()));
                }
            }
        }
        let mut rules: Vec<ChangeRule> = Vec::new();
        for (i, spanned) in file.rules.iter().enumerate() {
            let line = line_of(spanned.span().start);
            let r = spanned.get_ref();
            let key = |k: &str| format!("rules[{i}] ({}).{k}", r.id);
            if r.id.trim().is_empty() {
                return Err(invalid(line, format!("rules[{i}].id"), "a rule needs an id".into()));
            }
            if rules.iter().any(|other| other.id == r.id) {
                return Err(invalid(line, key("id"), "rule ids must be unique".into()));
            }
            let Some((_, numeric)) = fields.iter().find(|(f, _)| *f == r.field) else {
                return Err(invalid(line, key("field"), format!("no field {:?} (fields: {})", r.field, known())));
            };
            if significance_rank(&r.significance).is_none() {
                return Err(invalid(
                    line,
                    key("significance"),
                    format!("{:?} is not one of {}", r.significance, SIGNIFICANCE.join(", ")),
                ));
            }
            if !file.categories.is_empty() && !file.categories.contains(&r.category) {
                return Err(invalid(
                    line,
                    key("category"),
                    format!("{:?} is not one of the categories: {}", r.category, file.categories.join(", ")),
                ));
            }
            match r.condition {
                Condition::RelativeChange => {
                    if !numeric {
                        return Err(invalid(line, key("condition"), format!("{} is not a number", r.field)));
                    }
                    match r.threshold {
                        Some(t) if t.is_finite() && t > 0.0 => {}
                        _ => {
                            return Err(invalid(
                                line,
                                key("threshold"),
                                "relative_change needs a threshold above 0 (0.2 is 20 %)".into(),
                            ));
                        }
                    }
                }
                Condition::TierCrossed if !numeric => {
                    return Err(invalid(line, key("condition"), format!("{} is not a tier number", r.field)));
                }
                _ if r.threshold.is_some() => {
                    return Err(invalid(line, key("threshold"), "only relative_change takes a threshold".into()));
                }
                _ => {}
            }
            if r.summary.trim().is_empty() {
                return Err(invalid(line, key("summary"), "a rule needs a summary".into()));
            }
            if let Some(bad) = placeholders(&r.summary).find(|p| !PLACEHOLDERS.contains(p)) {
                return Err(invalid(
                    line,
                    key("summary"),
                    format!("unknown placeholder {{{bad}}} (known: {})", PLACEHOLDERS.join(", ")),
                ));
            }
            rules.push(ChangeRule {
                id: r.id.clone(),
                field: r.field.clone(),
                condition: r.condition,
                keys: r.keys.clone(),
                from: r.from.clone(),
                to: r.to.clone(),
                not_to: r.not_to.clone(),
                threshold: r.threshold,
                direction: r.direction,
                category: r.category.clone(),
                significance: r.significance.to_ascii_lowercase(),
                summary: r.summary.clone(),
                relevance: r.relevance.clone(),
                line,
            });
        }
        Ok(Self {
            version: file.version,
            confirm_removals: file.confirm_removals,
            confirm: file.confirm,
            confirm_changes: file.confirm_changes,
            first_detected_slack_days: file.first_detected_slack_days,
            rules,
            categories: file.categories,
            sha256: super::sha256_hex(text.as_bytes()),
        })
    }
}

const PLACEHOLDERS: [&str; 5] = ["domain", "item", "old", "new", "change"];

/// The `{name}` placeholders of a template.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template.split('{').skip(1).filter_map(|part| part.split_once('}').map(|(name, _)| name))
}

/// Fills a summary template.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [(&str, bool); 3] = [("search_vendor", false), ("monthly_visits", true), ("technologies", false)];

    fn load(text: &str) -> Result<ChangeRules, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("changes.toml");
        std::fs::write(&path, text).expect("write");
        ChangeRules::load(&path, &FIELDS)
    }

    const GOOD: &str = r#"
version = 1
[[rules]]
id = "vendor_removed"
field = "search_vendor"
condition = "removed"
category = "search_vendor_change"
significance = "critical"
summary = "Search vendor removed: {old} → none"
"#;

    #[test]
    fn a_good_file_loads_with_lines() {
        let rules = load(GOOD).expect("loads");
        assert_eq!(rules.rules.len(), 1);
        assert_eq!(rules.rules[0].line, 3);
        assert_eq!(rules.confirm_for("technologies"), 2);
    }

    #[test]
    fn bad_rules_name_line_and_key() {
        let unknown_field = GOOD.replace("\"search_vendor\"", "\"search_vendr\"");
        let err = load(&unknown_field).expect_err("unknown field").to_string();
        assert!(err.contains("line 3") && err.contains("field") && err.contains("search_vendr"), "{err}");

        let bad_significance = GOOD.replace("\"critical\"", "\"urgent\"");
        let err = load(&bad_significance).expect_err("bad significance").to_string();
        assert!(err.contains("line 3") && err.contains("significance"), "{err}");

        let bad_placeholder = GOOD.replace("{old}", "{previous}");
        let err = load(&bad_placeholder).expect_err("bad placeholder").to_string();
        assert!(err.contains("{previous}"), "{err}");

        let no_threshold =
            GOOD.replace("\"removed\"", "\"relative_change\"").replace("search_vendor", "monthly_visits");
        let err = load(&no_threshold).expect_err("no threshold").to_string();
        assert!(err.contains("threshold"), "{err}");

        let text_change = GOOD.replace("\"removed\"", "\"relative_change\"\nthreshold = 0.2");
        let err = load(&text_change).expect_err("not numeric").to_string();
        assert!(err.contains("not a number"), "{err}");

        let typo = GOOD.replace("summary =", "sumary =");
        let err = load(&typo).expect_err("unknown key").to_string();
        assert!(err.contains("sumary") && err.contains("line"), "{err}");
    }

    #[test]
    fn templates_fill() {
        assert_eq!(render("{old} → {new}", &[("old", "Coveo"), ("new", "none")]), "Coveo → none");
    }
}
