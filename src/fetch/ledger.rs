//! The ledger: one row per provider call, the proof of what was called, what it
//! cost and how it went. Written as Parquet with every snapshot and queryable
//! as `api_calls`.

use std::fmt;

use crate::config::ProviderId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Data came back and was read.
    Ok,
    /// The provider answered that it has nothing on this domain (a fact).
    NoData,
    /// Transport error, timeout, or an error status.
    Failed,
    /// A body came back but could not be read, or held out-of-range values.
    Invalid,
    /// A transient failure (timeout, connection, 429, 5xx) that was tried again.
    Retried,
    /// Not made: a module it depends on failed for this domain.
    SkippedDependency,
    /// Not made: it would have crossed a budget cap.
    SkippedBudget,
    /// Not made: the provider's daily quota is used up.
    SkippedQuota,
    /// Not made: the provider's circuit breaker is open.
    SkippedCircuit,
    /// Not made: the provider refused the key earlier in the run.
    SkippedAuth,
    /// Not made: a free pre-check showed it would tell nothing new (BuiltWith does not
    /// know the domain, or its last lookup still holds).
    SkippedPrecheck,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoData => "no_data",
            Self::Failed => "failed",
            Self::Invalid => "invalid",
            Self::Retried => "retried",
            Self::SkippedDependency => "skipped_dependency",
            Self::SkippedBudget => "skipped_budget",
            Self::SkippedQuota => "skipped_quota",
            Self::SkippedCircuit => "skipped_circuit",
            Self::SkippedAuth => "skipped_auth",
            Self::SkippedPrecheck => "skipped_precheck",
        }
    }

    /// Whether the call went out (skipped calls never touched the network).
    pub fn was_sent(self) -> bool {
        !matches!(
            self,
            Self::SkippedDependency
                | Self::SkippedBudget
                | Self::SkippedQuota
                | Self::SkippedCircuit
                | Self::SkippedAuth
                | Self::SkippedPrecheck
        )
    }

    /// Whether the domain's module is missing because of this call (not a fact about the domain).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::NoData | Self::Retried | Self::SkippedPrecheck)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub run_id: String,
    pub provider: ProviderId,
    pub endpoint: &'static str,
    pub domain: String,
    pub modules: String,
    pub attempt: u32,
    /// The page of a paged answer the request asked for (1 for every other call).
    pub page: u32,
    pub http_status: Option<u16>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub latency_ms: f64,
    /// Backoff or `Retry-After` wait before this attempt.
    pub waited_ms: f64,
    pub cost_usd: f64,
    pub bytes: u64,
    pub called_at: chrono::DateTime<chrono::Utc>,
}

impl LedgerRow {
    /// A call that was planned but not made, and why.
    pub fn not_made(run_id: &str, call: &super::Call, modules: &str, outcome: Outcome, reason: &str) -> Self {
        Self {
            run_id: run_id.to_string(),
            provider: call.provider,
            endpoint: call.endpoint,
            domain: call.domain.clone(),
            modules: modules.to_string(),
            attempt: 0,
            page: 1,
            http_status: None,
            outcome,
            error: Some(reason.to_string()),
            latency_ms: 0.0,
            waited_ms: 0.0,
            cost_usd: 0.0,
            bytes: 0,
            called_at: chrono::Utc::now(),
        }
    }
}
