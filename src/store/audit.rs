//! The audit log: who did what, when — runs started and ended, sites published,
//! alerts delivered, gc deletions, locks broken. Each event is its own create-only
//! object, `audit/<date>/<time>-<pid>-<n>.json`: nothing in it is ever rewritten or
//! removed by the engine (gc leaves `audit/` alone).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::Store;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub at: String,
    /// Who: `schedule:<job>`, `--triggered-by`, or `user:<login>`.
    pub actor: String,
    /// `run.started`, `run.ended`, `export.published`, `alerts.delivered`, `gc.deleted`, `lock.broken`.
    pub action: String,
    /// What it was done to: a run id, a site folder, a snapshot, a lock.
    pub subject: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Who this process acts for (the same rule as the run history's trigger).
pub fn actor() -> String {
    crate::run::history::trigger(None)
}

/// Appends an event. The audit never stops the work it records: a failure to write
/// is logged as an error.
pub async fn record(store: &Store, action: &str, subject: &str, detail: serde_json::Value) {
    let now = Utc::now();
    let event = Event {
        at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        actor: actor(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail,
    };
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let path =
        format!("audit/{}/{}-{}-{n:04}.json", now.format("%Y-%m-%d"), now.format("%H%M%S%3fZ"), std::process::id());
    let written = match serde_json::to_vec(&event) {
        Ok(bytes) => store.put_new(&path, bytes.into()).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        tracing::error!(action, subject, "could not append to the audit log: {e}");
    }
}

/// Every event, oldest first (since a date, when given).
pub async fn events(store: &Store, since: Option<chrono::NaiveDate>) -> Result<Vec<Event>, super::StoreError> {
    let mut paths = store.list("audit").await?;
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let day = path.split('/').nth(1).and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if since.is_some_and(|s| day.is_some_and(|d| d < s)) {
            continue;
        }
        let bytes = store.get(&path).await?;
        match serde_json::from_slice::<Event>(&bytes) {
            Ok(event) => out.push(event),
            Err(e) => tracing::warn!("{path}: not an audit event ({e})"),
        }
    }
    Ok(out)
}
