//! Retention: which snapshots to keep, and removing the rest safely.
//!
//! Kept: the newest `keep_daily` dates; beyond them, the newest date of each of
//! the newest `keep_monthly` months; always the latest snapshot. A removed date
//! loses every generation. Removal takes the manifest first, then the files, so
//! a reader never sees a snapshot with files missing. Folders under `snapshots/`
//! that never got a manifest (a run that died before its commit) are removed
//! once older than `stale_after`. A date whose targets file is the base of a kept
//! snapshot's targets (stored by reference) is kept with it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::{MANIFEST_FILE, Manifest, Store, StoreError};

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_daily: usize,
    pub keep_monthly: usize,
    pub stale_after: Duration,
}

#[derive(Debug, Default, PartialEq)]
pub struct GcPlan {
    /// Snapshot folders to remove (manifest first), by date.
    pub snapshots: Vec<(String, Vec<String>)>,
    /// Folders without a manifest, older than the stale age.
    pub abandoned: Vec<String>,
    /// Lease objects of run locks superseded by a newer lease.
    pub leases: Vec<String>,
    pub kept: Vec<String>,
}

/// Which dates to keep out of `dates` (sorted, oldest first).
pub fn dates_to_keep(dates: &[String], retention: &Retention) -> BTreeSet<String> {
    let mut keep: BTreeSet<String> = dates.iter().rev().take(retention.keep_daily).cloned().collect();
    let mut months: BTreeMap<&str, &String> = BTreeMap::new();
    for date in dates {
        // `YYYY-MM`; the newest date of each month wins. (Dates come from stored manifests.)
        months.insert(date.get(..7).unwrap_or(date), date);
    }
    keep.extend(months.values().rev().take(retention.keep_monthly).map(|d| (*d).clone()));
    if let Some(latest) = dates.last() {
        keep.insert(latest.clone());
    }
    keep
}

impl Store {
    /// Works out what `gc` would remove, without removing anything. While a run
    /// holds a lock, gc does not run: it could take files that run is writing or reading.
    pub async fn gc_plan(&self, retention: &Retention) -> Result<GcPlan, StoreError> {
        let holders = self.lock_holders().await?;
        if let Some(holder) = holders.iter().find(|h| h.is_live()) {
            return Err(StoreError::Locked {
                url: self.url.clone(),
                holder: Box::new(holder.clone()),
                hint: "gc waits until no run is in progress".into(),
            });
        }
        let all: Vec<Manifest> = self.all_generations().await?;
        let dates: Vec<String> = all.iter().map(|m| m.date.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let mut keep = dates_to_keep(&dates, retention);
        // A kept snapshot whose targets are stored by reference keeps the date of its base.
        let bases: BTreeSet<String> = all
            .iter()
            .filter(|m| keep.contains(&m.date))
            .filter_map(|m| m.file("targets")?.base.as_deref()?.split('/').nth(1).map(str::to_string))
            .collect();
        keep.extend(bases);
        let mut plan = GcPlan { kept: keep.iter().cloned().collect(), ..Default::default() };
        let committed: BTreeSet<String> = all.iter().map(|m| m.folder()).collect();
        for date in dates.iter().filter(|d| !keep.contains(*d)) {
            let folders = all.iter().filter(|m| &m.date == date).map(|m| m.folder()).collect();
            plan.snapshots.push((date.clone(), folders));
        }
        // Folders that never got a manifest.
        let prefix = ObjectPath::from("snapshots");
        let objects: Vec<_> =
            self.inner.list(Some(&prefix)).try_collect().await.map_err(|e| self.object_error(&prefix, e))?;
        let mut newest: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        for object in &objects {
            let parts: Vec<String> = object.location.parts().map(|p| p.as_ref().to_string()).collect();
            if parts.len() < 4 {
                continue;
            }
            let folder = format!("{}/{}/{}", parts[0], parts[1], parts[2]);
            let entry = newest.entry(folder).or_insert(object.last_modified);
            *entry = (*entry).max(object.last_modified);
        }
        let stale_before = chrono::Utc::now() - chrono::Duration::from_std(retention.stale_after).unwrap_or_default();
        plan.abandoned =
            newest.into_iter().filter(|(f, t)| !committed.contains(f) && *t < stale_before).map(|(f, _)| f).collect();
        // Journals of runs that never committed, unless a lock says the run is alive.
        let held: BTreeSet<String> = holders.into_iter().map(|h| h.run_id).collect();
        let runs = ObjectPath::from("runs");
        let objects: Vec<_> =
            self.inner.list(Some(&runs)).try_collect().await.map_err(|e| self.object_error(&runs, e))?;
        let mut run_newest: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        for object in &objects {
            if let Some(run) = object.location.parts().nth(1) {
                let entry = run_newest.entry(format!("runs/{}", run.as_ref())).or_insert(object.last_modified);
                *entry = (*entry).max(object.last_modified);
            }
        }
        plan.abandoned.extend(
            run_newest
                .into_iter()
                .filter(|(folder, t)| *t < stale_before && !held.iter().any(|id| folder.ends_with(id.as_str())))
                .map(|(folder, _)| folder),
        );
        plan.leases = self.superseded_leases().await?;
        Ok(plan)
    }

    /// Removes what the plan lists: each manifest before its folder's files.
    pub async fn gc_apply(&self, plan: &GcPlan) -> Result<usize, StoreError> {
        let mut removed = 0;
        let folders = plan.snapshots.iter().flat_map(|(_, f)| f.iter()).chain(&plan.abandoned);
        for folder in folders {
            let manifest = ObjectPath::from(format!("{folder}/{MANIFEST_FILE}"));
            match self.inner.delete(&manifest).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.object_error(&manifest, e)),
            }
            let prefix = ObjectPath::from(folder.as_str());
            let files: Vec<_> =
                self.inner.list(Some(&prefix)).try_collect().await.map_err(|e| self.object_error(&prefix, e))?;
            for file in files {
                match self.inner.delete(&file.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(self.object_error(&file.location, e)),
                }
            }
        }
        for lease in &plan.leases {
            self.delete(lease).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates(list: &[&str]) -> Vec<String> {
        list.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn daily_then_monthly_and_always_the_latest() {
        let all = dates(&[
            "2026-08-30",
            "2026-08-31",
            "2026-09-15",
            "2026-09-30",
            "2026-10-01",
            "2026-10-31",
            "2026-11-01",
            "2026-11-02",
        ]);
        let r = Retention { keep_daily: 2, keep_monthly: 2, stale_after: Duration::ZERO };
        let keep: Vec<String> = dates_to_keep(&all, &r).into_iter().collect();
        // The two newest days, and the last day of the two newest months (November's is already kept).
        assert_eq!(keep, dates(&["2026-10-31", "2026-11-01", "2026-11-02"]));
        let r = Retention { keep_daily: 0, keep_monthly: 0, stale_after: Duration::ZERO };
        assert_eq!(dates_to_keep(&all, &r).into_iter().collect::<Vec<_>>(), dates(&["2026-11-02"]), "the latest stays");
    }
}
