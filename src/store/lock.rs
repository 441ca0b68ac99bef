//! The run lock: one run of a pipeline at a time against a store.
//!
//! The lock is a create-only object (`locks/<pipeline>.json`, `PutMode::Create`),
//! so of two runs starting together exactly one wins, on a local disk and on S3
//! alike. It names its holder (run id, host, process, start) and expires; a lock
//! left by a crashed run can be broken with `--break-lock` once it has expired,
//! or at once when its holder ran on this host and that process is gone.

use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Who holds a lock, as written in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub pipeline: String,
    pub host: String,
    pub pid: u32,
    pub started_at: String,
    pub expires_at: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} on host {} (process {}), started {}, expires {}",
            self.run_id, self.host, self.pid, self.started_at, self.expires_at
        )
    }
}

impl LockHolder {
    /// Neither expired nor known dead.
    pub fn is_live(&self) -> bool {
        !self.expired() && !self.process_gone()
    }

    fn expired(&self) -> bool {
        chrono::DateTime::parse_from_rfc3339(&self.expires_at).is_ok_and(|t| t < chrono::Utc::now())
    }

    /// The holder ran on this host and its process no longer exists.
    fn process_gone(&self) -> bool {
        self.host == hostname() && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// A held lock; give it back with `Store::release_lock`.
#[derive(Debug)]
pub struct RunLock {
    path: String,
    pub holder: LockHolder,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn lock_path(pipeline: &str) -> String {
    let safe: String = pipeline.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("locks/{safe}.json")
}

impl Store {
    /// Takes the pipeline's lock. With `break_lock`, a lock whose holder expired or
    /// died on this host is removed first; the broken holder is returned so the
    /// caller can say what it broke.
    pub async fn acquire_lock(
        &self,
        pipeline: &str,
        run_id: &str,
        ttl: Duration,
        break_lock: bool,
    ) -> Result<(RunLock, Option<LockHolder>), StoreError> {
        let now = chrono::Utc::now();
        let holder = LockHolder {
            run_id: run_id.to_string(),
            pipeline: pipeline.to_string(),
            host: hostname(),
            pid: std::process::id(),
            started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            expires_at: (now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12)))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let path = lock_path(pipeline);
        let object = ObjectPath::from(path.as_str());
        let body = serde_json::to_vec_pretty(&holder).map_err(|e| StoreError::Encode(e.to_string()))?;
        let mut broken = None;
        for _ in 0..2 {
            let options = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.inner.put_opts(&object, PutPayload::from(body.clone()), options).await {
                Ok(_) => return Ok((RunLock { path, holder }, broken)),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(self.object_error(&object, e)),
            }
            let current: LockHolder = match self.get(&path).await {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                    url: self.url.clone(),
                    path: path.clone(),
                    message: format!("the lock is not readable: {e}"),
                })?,
                // Released between our put and our read: try again.
                Err(StoreError::Object { source: object_store::Error::NotFound { .. }, .. }) => continue,
                Err(e) => return Err(e),
            };
            let stale = current.expired() || current.process_gone();
            if !(break_lock && stale) {
                let hint = if stale {
                    "its holder is gone (expired, or no such process on this host): pass --break-lock to break it"
                } else {
                    "another run of this pipeline is in progress"
                };
                return Err(StoreError::Locked { url: self.url.clone(), holder: Box::new(current), hint: hint.into() });
            }
            self.inner.delete(&object).await.map_err(|e| self.object_error(&object, e))?;
            broken = Some(current);
        }
        Err(StoreError::Open { url: self.url.clone(), message: format!("could not take the lock {path}") })
    }

    /// Gives a lock back (only if it is still ours).
    pub async fn release_lock(&self, lock: RunLock) -> Result<(), StoreError> {
        let object = ObjectPath::from(lock.path.as_str());
        if let Ok(bytes) = self.get(&lock.path).await
            && serde_json::from_slice::<LockHolder>(&bytes).is_ok_and(|h| h.run_id == lock.holder.run_id)
        {
            self.inner.delete(&object).await.map_err(|e| self.object_error(&object, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_dead_holder_can_be_broken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let ttl = Duration::from_secs(3600);
        let (lock, broken) = store.acquire_lock("nightly", "run-a", ttl, false).await.unwrap();
        assert!(broken.is_none());
        let err = store.acquire_lock("nightly", "run-b", ttl, true).await.unwrap_err().to_string();
        assert!(err.contains("run-a") && err.contains("in progress"), "a live holder is never broken: {err}");
        assert!(store.acquire_lock("weekly", "run-c", ttl, false).await.is_ok(), "one lock per pipeline");
        store.release_lock(lock).await.unwrap();
        let (lock, _) = store.acquire_lock("nightly", "run-b", ttl, false).await.unwrap();

        // A holder whose process is gone on this host.
        let mut dead = lock.holder.clone();
        dead.run_id = "run-dead".into();
        dead.pid = u32::MAX;
        store.release_lock(lock).await.unwrap();
        store.put("locks/nightly.json", serde_json::to_vec(&dead).unwrap().into()).await.unwrap();
        let err = store.acquire_lock("nightly", "run-e", ttl, false).await.unwrap_err().to_string();
        assert!(err.contains("run-dead") && err.contains("--break-lock"), "{err}");
        let (_, broken) = store.acquire_lock("nightly", "run-e", ttl, true).await.unwrap();
        assert_eq!(broken.map(|b| b.run_id), Some("run-dead".to_string()));
    }
}
