//! The run lock: one run of a pipeline at a time against a store.
//!
//! A lock is a sequence of create-only lease objects, `locks/<pipeline>/<seq>.json`;
//! the lease with the highest number is the current one. Taking a free lock,
//! or breaking a stale one, is creating the next number with `PutMode::Create`,
//! so of two runs (or two breakers) racing for it exactly one wins, on a local
//! disk and on S3 alike — nothing is ever overwritten or deleted to take a lock.
//!
//! The holder renews its lease while it runs: `<seq>.heartbeat` holds the time
//! of its last renewal. A lease is given back by creating `<seq>.released`, so a
//! run can only ever give back its own lease. A lease is breakable (`--break-lock`)
//! once its last heartbeat is older than the TTL, or at once when its holder ran
//! on this host and that process is gone; never while it is live.

use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Who holds a lease, as written in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    /// This process's lease: a resumed run takes a new one, never the dead run's.
    #[serde(default)]
    pub lease: String,
    pub pipeline: String,
    pub host: String,
    pub pid: u32,
    pub started_at: String,
    /// How long the lease holds after its last heartbeat.
    #[serde(default)]
    pub ttl_secs: u64,
    /// The last heartbeat (filled in when the lease is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} on host {} (process {}), started {}, last heartbeat {}",
            self.run_id,
            self.host,
            self.pid,
            self.started_at,
            self.heartbeat_at.as_deref().unwrap_or(&self.started_at)
        )
    }
}

impl LockHolder {
    /// Neither expired nor known dead.
    pub fn is_live(&self) -> bool {
        !self.expired() && !self.process_gone()
    }

    fn expired(&self) -> bool {
        let last = self.heartbeat_at.as_deref().unwrap_or(&self.started_at);
        // A TTL too large to add never expires (a hand-edited lease must not crash every reader).
        let Some(ttl) = i64::try_from(self.ttl_secs).ok().and_then(chrono::TimeDelta::try_seconds) else {
            return false;
        };
        chrono::DateTime::parse_from_rfc3339(last)
            .ok()
            .and_then(|t| t.checked_add_signed(ttl))
            .is_some_and(|until| until < chrono::Utc::now())
    }

    /// The holder ran on this host and its process no longer exists.
    fn process_gone(&self) -> bool {
        self.host == hostname() && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// A held lease; renew it with `Store::heartbeat`, give it back with `Store::release_lock`.
#[derive(Debug, Clone)]
pub struct RunLock {
    folder: String,
    seq: u64,
    pub holder: LockHolder,
}

impl RunLock {
    fn object(&self, suffix: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{:010}.{suffix}", self.folder, self.seq))
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn lock_folder(pipeline: &str) -> String {
    let safe: String = pipeline.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("locks/{safe}")
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A unique lease name for this process.
fn new_lease(run_id: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{run_id}/{}-{nanos:x}", std::process::id())
}

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    at: String,
}

/// The newest lease of a lock folder, and whether it was given back.
struct Current {
    seq: u64,
    released: bool,
}

impl Store {
    async fn current_lease(&self, folder: &str) -> Result<Option<Current>, StoreError> {
        let mut newest: Option<Current> = None;
        let mut released = std::collections::BTreeSet::new();
        for path in self.list(folder).await? {
            let name = path.rsplit('/').next().unwrap_or_default();
            let Some((seq, suffix)) = name.split_once('.') else { continue };
            let Ok(seq) = seq.parse::<u64>() else { continue };
            match suffix {
                "json" if newest.as_ref().is_none_or(|c| c.seq < seq) => {
                    newest = Some(Current { seq, released: false })
                }
                "released" => {
                    released.insert(seq);
                }
                _ => {}
            }
        }
        Ok(newest.map(|c| Current { released: released.contains(&c.seq), ..c }))
    }

    /// The holder of a lease with its last heartbeat, or `None` if it vanished.
    async fn read_holder(&self, folder: &str, seq: u64) -> Result<Option<LockHolder>, StoreError> {
        let path = format!("{folder}/{seq:010}.json");
        let mut holder: LockHolder = match self.get(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                url: self.url.clone(),
                path: path.clone(),
                message: format!("the lock is not readable: {e}"),
            })?,
            Err(StoreError::Object { source: object_store::Error::NotFound { .. }, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // No heartbeat yet is "not found"; any other error is not a reason to think the holder dead.
        let beat_path = format!("{folder}/{seq:010}.heartbeat");
        match self.get(&beat_path).await {
            Ok(bytes) => {
                let beat: Heartbeat = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                    url: self.url.clone(),
                    path: beat_path.clone(),
                    message: format!("the heartbeat is not readable: {e}"),
                })?;
                holder.heartbeat_at = Some(beat.at);
            }
            Err(StoreError::Object { source: object_store::Error::NotFound { .. }, .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(Some(holder))
    }

    /// The current holders of every pipeline's lock (leases not given back), live or not.
    pub async fn lock_holders(&self) -> Result<Vec<LockHolder>, StoreError> {
        let mut folders = std::collections::BTreeSet::new();
        for path in self.list("locks").await? {
            if let Some((folder, _)) = path.rsplit_once('/') {
                folders.insert(folder.to_string());
            }
        }
        let mut holders = Vec::new();
        for folder in folders {
            if let Some(current) = self.current_lease(&folder).await?
                && !current.released
                && let Some(holder) = self.read_holder(&folder, current.seq).await?
            {
                holders.push(holder);
            }
        }
        Ok(holders)
    }

    /// Takes the pipeline's lock with a new lease. With `break_lock`, a lease whose
    /// holder expired or died on this host is superseded; the broken holder is
    /// returned so the caller can say what it broke.
    pub async fn acquire_lock(
        &self,
        pipeline: &str,
        run_id: &str,
        ttl: Duration,
        break_lock: bool,
    ) -> Result<(RunLock, Option<LockHolder>), StoreError> {
        let folder = lock_folder(pipeline);
        let holder = LockHolder {
            run_id: run_id.to_string(),
            lease: new_lease(run_id),
            pipeline: pipeline.to_string(),
            host: hostname(),
            pid: std::process::id(),
            started_at: now_text(),
            ttl_secs: ttl.as_secs(),
            heartbeat_at: None,
        };
        let body = serde_json::to_vec_pretty(&holder).map_err(|e| StoreError::Encode(e.to_string()))?;
        for _ in 0..5 {
            let (seq, broken) = match self.current_lease(&folder).await? {
                None => (1, None),
                Some(Current { seq, released: true }) => (seq + 1, None),
                Some(Current { seq, released: false }) => {
                    let Some(current) = self.read_holder(&folder, seq).await? else { continue };
                    let stale = !current.is_live();
                    if !(break_lock && stale) {
                        let hint = if stale {
                            "its holder is gone (no heartbeat within its TTL, or no such process on this host): pass --break-lock to break it"
                        } else {
                            "another run of this pipeline is in progress"
                        };
                        return Err(StoreError::Locked {
                            url: self.url.clone(),
                            holder: Box::new(current),
                            hint: hint.into(),
                        });
                    }
                    (seq + 1, Some(current))
                }
            };
            // `false`: another run (or breaker) took this number first: look again at who holds it now.
            if self.put_new(&format!("{folder}/{seq:010}.json"), body.clone().into()).await? {
                return Ok((RunLock { folder, seq, holder }, broken));
            }
        }
        Err(StoreError::Open {
            url: self.url.clone(),
            message: format!("could not take the lock {folder}: too much contention"),
        })
    }

    /// Renews a lease. `Ok(false)`: a newer lease exists, the lock was broken and
    /// this run no longer holds it.
    pub async fn heartbeat(&self, lock: &RunLock) -> Result<bool, StoreError> {
        let folder = &lock.folder;
        if self.current_lease(folder).await?.is_some_and(|c| c.seq != lock.seq) {
            return Ok(false);
        }
        let beat = serde_json::to_vec(&Heartbeat { at: now_text() }).map_err(|e| StoreError::Encode(e.to_string()))?;
        let object = lock.object("heartbeat");
        self.inner.put(&object, PutPayload::from(beat)).await.map_err(|e| self.object_error(&object, e))?;
        Ok(true)
    }

    /// Gives this run's lease back. Only ever its own: a lease that was broken
    /// stays superseded by its breaker's, which this does not touch.
    pub async fn release_lock(&self, lock: RunLock) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&Heartbeat { at: now_text() }).map_err(|e| StoreError::Encode(e.to_string()))?;
        // Already given back is given back.
        self.put_new(lock.object("released").as_ref(), body.into()).await.map(|_| ())
    }

    /// Lease objects older than the newest one of their lock, for gc.
    pub async fn superseded_leases(&self) -> Result<Vec<String>, StoreError> {
        let mut by_folder: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
        for path in self.list("locks").await? {
            let Some((folder, name)) = path.rsplit_once('/') else { continue };
            let Some(seq) = name.split_once('.').and_then(|(s, _)| s.parse::<u64>().ok()) else { continue };
            by_folder.entry(folder.to_string()).or_default().push((seq, path.clone()));
        }
        let mut old = Vec::new();
        for (_, objects) in by_folder {
            let newest = objects.iter().map(|(s, _)| *s).max().unwrap_or(0);
            old.extend(objects.into_iter().filter(|(s, _)| *s < newest).map(|(_, p)| p));
        }
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        (dir, store)
    }

    /// Writes a lease for `pipeline` held by a process that no longer exists.
    async fn dead_lease(store: &Store, pipeline: &str, seq: u64) {
        let dead = LockHolder {
            run_id: "run-dead".into(),
            lease: "run-dead/1".into(),
            pipeline: pipeline.into(),
            host: hostname(),
            pid: u32::MAX,
            started_at: now_text(),
            ttl_secs: 3600,
            heartbeat_at: None,
        };
        let path = format!("{}/{seq:010}.json", lock_folder(pipeline));
        store.put(&path, serde_json::to_vec(&dead).unwrap().into()).await.unwrap();
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_dead_holder_can_be_broken() {
        let (_dir, store) = local();
        let ttl = Duration::from_secs(3600);
        let (lock, broken) = store.acquire_lock("nightly", "run-a", ttl, false).await.unwrap();
        assert!(broken.is_none());
        assert!(store.heartbeat(&lock).await.unwrap(), "the holder renews its own lease");
        let err = store.acquire_lock("nightly", "run-b", ttl, true).await.unwrap_err().to_string();
        assert!(err.contains("run-a") && err.contains("in progress"), "a live holder is never broken: {err}");
        assert!(store.acquire_lock("weekly", "run-c", ttl, false).await.is_ok(), "one lock per pipeline");
        store.release_lock(lock).await.unwrap();
        let (lock, _) = store.acquire_lock("nightly", "run-b", ttl, false).await.unwrap();
        store.release_lock(lock).await.unwrap();

        dead_lease(&store, "nightly", 3).await;
        let err = store.acquire_lock("nightly", "run-e", ttl, false).await.unwrap_err().to_string();
        assert!(err.contains("run-dead") && err.contains("--break-lock"), "{err}");
        let (_lock, broken) = store.acquire_lock("nightly", "run-e", ttl, true).await.unwrap();
        assert_eq!(broken.map(|b| b.run_id), Some("run-dead".to_string()));
        assert_eq!(store.lock_holders().await.unwrap().iter().filter(|h| h.run_id == "run-e").count(), 1);
        // Lease 1 (json, heartbeat, released), 2 (json, released) and the broken 3.
        assert_eq!(store.superseded_leases().await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn a_lease_expires_when_its_heartbeat_stops() {
        let (_dir, store) = local();
        let (lock, _) = store.acquire_lock("nightly", "run-a", Duration::from_secs(3600), false).await.unwrap();
        // A heartbeat two hours old with a TTL of one hour: gone, though the process lives.
        let old = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
        let beat = serde_json::to_vec(&Heartbeat { at: old }).unwrap();
        store.put(lock.object("heartbeat").as_ref(), beat.into()).await.unwrap();
        let err = store.acquire_lock("nightly", "run-b", Duration::from_secs(60), false).await.unwrap_err();
        assert!(err.to_string().contains("--break-lock"), "{err}");
        let (_, broken) = store.acquire_lock("nightly", "run-b", Duration::from_secs(60), true).await.unwrap();
        assert_eq!(broken.map(|b| b.run_id), Some("run-a".to_string()));
        assert!(!store.heartbeat(&lock).await.unwrap(), "the broken holder learns it lost the lock");
        // Its release does not touch the breaker's lease.
        store.release_lock(lock).await.unwrap();
        assert_eq!(store.lock_holders().await.unwrap()[0].run_id, "run-b");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_breakers_exactly_one_wins() {
        let (_dir, store) = local();
        breakers_race(&store).await;
    }

    /// Two runs break the same dead lease at once: one holds the lock, the other is told who does.
    async fn breakers_race(store: &Store) {
        for round in 0..10u64 {
            let pipeline = format!("race-{round}");
            dead_lease(store, &pipeline, 1).await;
            let ttl = Duration::from_secs(3600);
            let (a, b) = tokio::join!(
                store.acquire_lock(&pipeline, "run-a", ttl, true),
                store.acquire_lock(&pipeline, "run-b", ttl, true)
            );
            let winners = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
            assert_eq!(winners, 1, "round {round}: {a:?} / {b:?}");
            let loser = a.err().or(b.err()).unwrap().to_string();
            assert!(loser.contains("in progress"), "the loser is told a live run holds it: {loser}");
        }
    }
}
