//! `_manifest.json`: the commit record of a snapshot. It lists every file with
//! its size and row count, and says which pipeline, model and run made it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::config::ProviderAccount;

/// How a committed run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every call the run needed was answered.
    Completed,
    /// Some provider calls failed; see `counts.failures`.
    Partial,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Partial => "partial",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema_version: u32,
    /// The snapshot's date, `YYYY-MM-DD`; also the `snapshot_id` column of its tables.
    pub snapshot_id: String,
    pub date: String,
    /// 1 for a date's first snapshot; a replacement gets the next number.
    pub generation: u32,
    pub run_id: String,
    pub created_at: String,
    pub status: Status,
    pub previous_snapshot: Option<String>,
    /// The snapshot fresh module results were carried forward from, if any.
    #[serde(default)]
    pub carried_from: Option<String>,
    /// For a rebuilt snapshot, the generation whose raw bodies it was rebuilt from
    /// (its ledger is a copy of that generation's: no call was made).
    #[serde(default)]
    pub rebuilt_from: Option<u32>,
    pub pipeline: PipelineRef,
    pub scoring_model: ModelRef,
    /// The providers' account the calls went to: `simulated` or `real`.
    pub providers: ProviderAccount,
    /// Its calls are on the spend record (`spend/`); older generations' spend is read from their ledgers.
    #[serde(default)]
    pub spend_recorded: bool,
    pub files: Vec<FileEntry>,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PipelineRef {
    pub name: String,
    pub version: u32,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub name: String,
    pub version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Table name: `targets`, `company`, `api_calls`, …
    pub table: String,
    /// Object path from the store's root.
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    /// Fingerprint of the table's Arrow schema, for tables written by the fetch layer:
    /// lets the next run know whether it can carry rows forward without reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// A targets table stored by reference: the whole targets file (an earlier
    /// snapshot's) that holds its other rows. The table is this file's rows and the
    /// base's rows of the domains the snapshot's `target_inputs` lists and this file
    /// does not, their `snapshot_id` this snapshot's ([`crate::transform::read_targets`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub book: u64,
    pub targets: u64,
    pub excluded_customers: u64,
    pub excluded_algolia: u64,
    pub rejected_rows: u64,
    /// (module, domain) results carried forward from the previous snapshot, still fresh.
    #[serde(default)]
    pub carried_forward: u64,
    /// Targets per tier, best tier first.
    pub tiers: Vec<TierCount>,
    pub calls: u64,
    pub spend_usd: f64,
    /// Failed calls per provider.
    pub failures: BTreeMap<String, u64>,
    /// Change events against the previous snapshot, by significance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, u64>,
    /// Alerts the change events raised (one per person, event and rule).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub alerts: u64,
    /// Targets rows carried forward from the previous snapshot because their inputs
    /// are unchanged (the rest were computed).
    #[serde(default)]
    pub targets_reused: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TierCount {
    pub tier: i32,
    pub name: String,
    pub targets: u64,
}

impl Manifest {
    /// The folder that holds this snapshot's files.
    pub fn folder(&self) -> String {
        folder(&self.date, self.generation)
    }

    pub fn file(&self, table: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.table == table)
    }
}

pub fn folder(date: &str, generation: u32) -> String {
    format!("snapshots/{date}/{generation:04}")
}
