//! The signal rules (`pipelines/signals.toml`): budget, pain and timing beside the
//! score, the priority that combines them with the tier, and the displacement
//! angle. The transform layer compiles them into Polars expressions; nothing here
//! knows what a bounce rate is.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, load_toml};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRules {
    pub name: String,
    pub version: u32,
    /// Timing evidence counts when it is at most this many days old.
    pub window_days: u32,
    /// Named lists of values rules test against (`one_of = "weak_search_vendors"`).
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<String>>,
    pub signals: Vec<Signal>,
    pub priority: Priority,
    pub angle: Angle,
    /// The target's size band (by revenue or traffic), first reached.
    pub size_bands: Vec<SizeBand>,
    /// Countries of each region (a target's `region`).
    pub regions: BTreeMap<String, Vec<String>>,
    pub case_studies: CaseStudySettings,
    pub trust: Trust,
}

/// How much each source is believed when sources disagree, and how fast belief fades.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Trust per source (`seed` is the book sales curates).
    pub sources: BTreeMap<String, f64>,
    /// Trust of a source not listed.
    pub unknown_source: f64,
    /// A value's weight halves every this many days since it was fetched.
    pub half_life_days: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeBand {
    pub name: String,
    /// Reached when revenue is at least this…
    pub min_revenue: f64,
    /// …or monthly visits are at least this.
    pub min_visits: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseStudySettings {
    /// The case studies (CSV), relative to the repository root.
    pub file: std::path::PathBuf,
    /// How many each target gets, best first.
    pub per_target: usize,
    /// Points for each attribute a case study shares with the target.
    pub weights: MatchWeights,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchWeights {
    pub vertical: u32,
    pub partner_tech: u32,
    pub region: u32,
    pub country: u32,
    pub size_band: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// `budget` → columns `budget_signal`, `budget_reasons`, `budget_evidence_on`.
    pub name: String,
    /// The signal is `unknown` when every one of these columns is null.
    pub known_when: Vec<String>,
    /// The reason given when the signal is known and no rule fired.
    pub none_reason: String,
    /// Levels from the strongest down; the first whose `min_points` the rules reach.
    pub levels: Vec<Level>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub name: String,
    pub min_points: i32,
}

/// One fact a signal counts: a test on a column, the points it adds, and the reason
/// line it gives (placeholders: `{value}` the column, `{other_column}`, either with a
/// format, `{value:usd}`; `{points}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub column: String,
    /// Numeric bands, highest `min` first: the first reached scores.
    #[serde(default)]
    pub bands: Vec<Band>,
    /// Fires when the column is one of the values of this list (case-insensitive).
    #[serde(default)]
    pub one_of: Option<String>,
    /// Fires when the column is present (not null).
    #[serde(default)]
    pub present: bool,
    /// Fires when the column is null but `guard` is not (the source was read and had nothing).
    #[serde(default)]
    pub missing: bool,
    #[serde(default)]
    pub guard: Option<String>,
    /// Every one of these columns must be null too (`dead vendor, nothing live`).
    #[serde(default)]
    pub unless: Vec<String>,
    #[serde(default)]
    pub points: i32,
    #[serde(default)]
    pub reason: String,
    /// A date column: the evidence's date, listed in `<signal>_evidence_on`.
    #[serde(default)]
    pub evidence_date: Option<String>,
    /// The phrase for the displacement angle (default: the reason).
    #[serde(default)]
    pub angle: Option<String>,
    /// The fact is a financial figure: never in the displacement angle, and its
    /// signal's reasons are not shown to roles without financials.
    #[serde(default)]
    pub financial: bool,
}

impl Rule {
    /// Every template of the rule: its bands' and its own reasons and angle phrases.
    fn texts(&self) -> impl Iterator<Item = &String> {
        self.bands
            .iter()
            .flat_map(|b| [Some(&b.reason), b.angle.as_ref()])
            .chain([Some(&self.reason), self.angle.as_ref()])
            .flatten()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub min: f64,
    pub points: i32,
    pub reason: String,
    #[serde(default)]
    pub angle: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Priority {
    /// Points per ICP tier name.
    pub tier_points: BTreeMap<String, i32>,
    /// Points per signal level (any signal).
    pub level_points: BTreeMap<String, i32>,
    /// From the highest down: the first whose `min_points` the total reaches.
    pub levels: Vec<Level>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Angle {
    /// The signals whose strongest fact the sentence takes, in this order.
    pub order: Vec<String>,
    /// How many facts the sentence joins at most.
    pub max_facts: usize,
    /// What it says when no fact fired.
    #[serde(default)]
    pub fallback: String,
}

/// The formats a placeholder may name.
pub const FORMATS: [&str; 6] = ["usd", "pct", "num", "date", "month", "text"];

impl SignalRules {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (rules, _): (SignalRules, String) = load_toml(path)?;
        rules.validate(path)?;
        Ok(rules)
    }

    /// Checks what the file refers to within itself (the columns it reads are checked
    /// against the targets table when it is assembled: [`SignalRules::columns`]).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { path: path.to_path_buf(), key, message };
        if self.signals.is_empty() {
            return Err(invalid("signals".into(), "at least one signal is needed".into()));
        }
        let levels_ok = |levels: &[Level]| {
            levels.windows(2).all(|w| w[0].min_points > w[1].min_points)
                && levels.last().is_some_and(|l| l.min_points <= 0)
        };
        for (s, signal) in self.signals.iter().enumerate() {
            let key = |field: &str| format!("signals[{s}] ({}).{field}", signal.name);
            if !signal.name.chars().all(|c| c.is_ascii_lowercase() || c == '_') || signal.name.is_empty() {
                return Err(invalid(
                    key("name"),
                    "a signal's name is lower-case letters and _ (it names columns)".into(),
                ));
            }
            if self.signals[..s].iter().any(|o| o.name == signal.name) {
                return Err(invalid(key("name"), "signal names must be unique".into()));
            }
            if !levels_ok(&signal.levels) {
                return Err(invalid(
                    key("levels"),
                    "levels go from the highest `min_points` down, and the last starts at 0 or below".into(),
                ));
            }
            if signal.levels.iter().any(|l| l.name == "unknown") {
                return Err(invalid(
                    key("levels"),
                    "`unknown` is the level of a signal with no data; it is not listed".into(),
                ));
            }
            if signal.known_when.is_empty() {
                return Err(invalid(
                    key("known_when"),
                    "name the columns whose presence makes the signal known".into(),
                ));
            }
            for (r, rule) in signal.rules.iter().enumerate() {
                let key = |field: &str| format!("signals[{s}] ({}).rules[{r}] ({}).{field}", signal.name, rule.column);
                let tests = usize::from(!rule.bands.is_empty())
                    + usize::from(rule.one_of.is_some())
                    + usize::from(rule.present)
                    + usize::from(rule.missing);
                if tests != 1 {
                    return Err(invalid(
                        key("bands"),
                        "a rule has exactly one test: bands, one_of, present or missing".into(),
                    ));
                }
                if rule.bands.windows(2).any(|w| w[0].min <= w[1].min) {
                    return Err(invalid(key("bands"), "bands must be listed from the highest `min` down".into()));
                }
                if let Some(list) = &rule.one_of
                    && !self.lists.contains_key(list)
                {
                    return Err(invalid(key("one_of"), format!("no list {list:?} in [lists]")));
                }
                if rule.missing && rule.guard.is_none() {
                    return Err(invalid(
                        key("guard"),
                        "a `missing` test needs a guard column (was the source read?)".into(),
                    ));
                }
                if rule.bands.is_empty() && rule.reason.is_empty() {
                    return Err(invalid(key("reason"), "a rule needs a reason line".into()));
                }
                for text in rule.texts() {
                    for (_, format) in placeholders(text) {
                        if let Some(format) = format
                            && !FORMATS.contains(&format.as_str())
                        {
                            return Err(invalid(
                                key("reason"),
                                format!("unknown format {format:?} in {text:?} (formats: {})", FORMATS.join(", ")),
                            ));
                        }
                    }
                }
            }
        }
        if !levels_ok(&self.priority.levels) {
            return Err(invalid(
                "priority.levels".into(),
                "levels go from the highest `min_points` down, and the last starts at 0 or below".into(),
            ));
        }
        for signal in &self.signals {
            for level in signal.levels.iter().map(|l| l.name.as_str()).chain(["unknown"]) {
                if !self.priority.level_points.contains_key(level) {
                    return Err(invalid(
                        "priority.level_points".into(),
                        format!("no points for level {level:?} (of signal {})", signal.name),
                    ));
                }
            }
        }
        if self.size_bands.windows(2).any(|w| w[0].min_revenue < w[1].min_revenue || w[0].min_visits < w[1].min_visits)
        {
            return Err(invalid("size_bands".into(), "size bands go from the largest down".into()));
        }
        if self.trust.half_life_days <= 0.0 {
            return Err(invalid("trust.half_life_days".into(), "must be a positive number of days".into()));
        }
        if let Some((source, t)) = self.trust.sources.iter().find(|(_, t)| !(0.0..=1.0).contains(*t)) {
            return Err(invalid(format!("trust.sources.{source}"), format!("{t} is not a trust between 0 and 1")));
        }
        if self.case_studies.per_target == 0 {
            return Err(invalid("case_studies.per_target".into(), "at least one case study per target".into()));
        }
        if let Some(unknown) = self.angle.order.iter().find(|n| !self.signals.iter().any(|s| &s.name == *n)) {
            return Err(invalid("angle.order".into(), format!("no signal {unknown:?}")));
        }
        if self.angle.max_facts == 0 {
            return Err(invalid("angle.max_facts".into(), "the angle needs at least one fact".into()));
        }
        Ok(())
    }

    /// Every column the rules read, with the key that names it.
    pub fn columns(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (s, signal) in self.signals.iter().enumerate() {
            for c in &signal.known_when {
                out.push((format!("signals[{s}] ({}).known_when", signal.name), c.clone()));
            }
            for (r, rule) in signal.rules.iter().enumerate() {
                let key = format!("signals[{s}] ({}).rules[{r}]", signal.name);
                out.push((format!("{key}.column"), rule.column.clone()));
                out.extend(rule.guard.iter().map(|c| (format!("{key}.guard"), c.clone())));
                out.extend(rule.unless.iter().map(|c| (format!("{key}.unless"), c.clone())));
                out.extend(rule.evidence_date.iter().map(|c| (format!("{key}.evidence_date"), c.clone())));
                for text in rule.texts() {
                    for (name, _) in placeholders(text) {
                        if name != "value" && name != "points" {
                            out.push((format!("{key}.reason"), name));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The `{name}` / `{name:format}` placeholders of a template, in order.
pub fn placeholders(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else { break };
        let inner = &rest[start + 1..start + end];
        let (name, format) = match inner.split_once(':') {
            Some((n, f)) => (n.to_string(), Some(f.to_string())),
            None => (inner.to_string(), None),
        };
        out.push((name, format));
        rest = &rest[start + end + 1..];
    }
    out
}
