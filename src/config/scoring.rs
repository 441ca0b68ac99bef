//! The scoring model file (`pipelines/scoring/icp.toml`): components, their
//! points, and the tiers. The transform layer compiles it into Polars
//! expressions; nothing here knows what "Commerce" or "50M visits" mean.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, load_toml};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringModel {
    pub name: String,
    pub version: u32,
    /// Scores are clamped to 0..=max_score; the components' maxima must add up to it.
    pub max_score: i32,
    pub components: Vec<Component>,
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(from = "ComponentFile")]
pub struct Component {
    /// Key in `score_breakdown`.
    pub name: String,
    /// Column of the targets table the component reads.
    pub column: String,
    pub max: i32,
    pub kind: ComponentKind,
}

#[derive(Debug, Clone)]
pub enum ComponentKind {
    /// Points by value (matched case-insensitively); `other` for any other
    /// non-empty value, `missing` for null or empty.
    Category {
        points: BTreeMap<String, i32>,
        other: i32,
        missing: i32,
        /// Reason line; `{value}` is replaced by the value, `{points}` by the points.
        reason: String,
    },
    /// Numeric bands: the first band whose `min` the value reaches scores; below
    /// every band, or missing, scores 0.
    Bands { bands: Vec<Band> },
}

/// A component as written in the file: `kind` picks the fields it takes, and an
/// unknown field is an error (serde cannot deny unknown fields through `flatten`).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ComponentFile {
    Category {
        name: String,
        column: String,
        max: i32,
        points: BTreeMap<String, i32>,
        other: i32,
        missing: i32,
        reason: String,
    },
    Bands {
        name: String,
        column: String,
        max: i32,
        bands: Vec<Band>,
    },
}

impl From<ComponentFile> for Component {
    fn from(file: ComponentFile) -> Self {
        match file {
            ComponentFile::Category { name, column, max, points, other, missing, reason } => {
                Component { name, column, max, kind: ComponentKind::Category { points, other, missing, reason } }
            }
            ComponentFile::Bands { name, column, max, bands } => {
                Component { name, column, max, kind: ComponentKind::Bands { bands } }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub min: f64,
    pub points: i32,
    /// Reason line for this band; `{points}` is replaced by the points.
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// 1 is the best tier.
    pub tier: i32,
    pub name: String,
    /// Lowest score in this tier.
    pub min_score: i32,
}

impl ScoringModel {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (model, _): (ScoringModel, String) = load_toml(path)?;
        model.validate(path)?;
        Ok(model)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { path: path.to_path_buf(), key, message };
        if self.components.is_empty() {
            return Err(invalid("components".into(), "a model needs at least one component".into()));
        }
        let mut total = 0;
        for (i, c) in self.components.iter().enumerate() {
            let key = |field: &str| format!("components[{i}] ({}).{field}", c.name);
            let points: Vec<i32> = match &c.kind {
                ComponentKind::Category { points, other, missing, .. } => {
                    points.values().copied().chain([*other, *missing]).collect()
                }
                ComponentKind::Bands { bands } => {
                    if bands.windows(2).any(|w| w[0].min <= w[1].min) {
                        return Err(invalid(key("bands"), "bands must be listed from the highest `min` down".into()));
                    }
                    bands.iter().map(|b| b.points).collect()
                }
            };
            if let Some(p) = points.iter().find(|p| **p < 0 || **p > c.max) {
                return Err(invalid(key("points"), format!("{p} points is outside 0..={}", c.max)));
            }
            if self.components[..i].iter().any(|other| other.name == c.name) {
                return Err(invalid(key("name"), "component names must be unique".into()));
            }
            total += c.max;
        }
        if total != self.max_score {
            return Err(invalid(
                "max_score".into(),
                format!("the components' maxima add up to {total}, not {}", self.max_score),
            ));
        }
        if self.tiers.is_empty() {
            return Err(invalid("tiers".into(), "a model needs at least one tier".into()));
        }
        if self.tiers.windows(2).any(|w| w[0].min_score <= w[1].min_score) {
            return Err(invalid("tiers".into(), "tiers must be listed from the highest `min_score` down".into()));
        }
        if self.tiers.last().is_some_and(|t| t.min_score > 0) {
            return Err(invalid("tiers".into(), "the last tier must start at 0 so that every score has a tier".into()));
        }
        Ok(())
    }
}
