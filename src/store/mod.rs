//! The snapshot store on object storage (local filesystem or S3, one code path).
//!
//! Layout: `snapshots/<date>/<generation>/` holds a snapshot's Parquet files
//! and, written last and create-only, its `_manifest.json`. **A snapshot exists
//! only once its manifest does**: readers list manifests, never data files, so
//! a run that dies before its commit leaves nothing a reader can see. A second
//! snapshot for the same date is a new generation beside the first, never an
//! overwrite.

pub mod audit;
pub mod deletion_vector;
pub mod delta;
pub mod gc;
pub mod lock;
pub mod manifest;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use manifest::{FileEntry, Manifest};

/// Creates a new file for appending (refused if it exists) whose name survives a
/// machine crash: the folder is made durable too.
pub fn create_durable(path: &Path) -> std::io::Result<std::fs::File> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let file = std::fs::OpenOptions::new().create_new(true).append(true).open(path)?;
    std::fs::File::open(parent)?.sync_all()?;
    Ok(file)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {url}: {message}")]
    Open { url: String, message: String },
    #[error("store {url}: {path}: {source}")]
    Object { url: String, path: String, source: object_store::Error },
    #[error("store {url}: a snapshot is already committed at {path} (another run won the commit)")]
    AlreadyCommitted { url: String, path: String },
    #[error("store {url}: {path}: the manifest is not readable: {message}")]
    BadManifest { url: String, path: String, message: String },
    #[error("store {url}: snapshot {snapshot}: file {path} is listed in the manifest but missing")]
    MissingFile { url: String, snapshot: String, path: String },
    #[error("store {url} is locked by {holder}: {hint}")]
    Locked { url: String, holder: Box<lock::LockHolder>, hint: String },
    #[error("cannot encode a table: {0}")]
    Encode(String),
    #[error("local cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// A stored object as a file on this machine (see `Store::local_copy`).
pub struct LocalFile {
    path: PathBuf,
    temporary: bool,
}

impl LocalFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A store opened from a URL: `data/store`, `file:///abs/path` or `s3://bucket/prefix`.
#[derive(Clone)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    /// Where the store's objects are on this machine's disk, for a local store.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

pub const MANIFEST_FILE: &str = "_manifest.json";
/// Written first in a snapshot folder, create-only: which writer's folder it is.
pub const CLAIM_FILE: &str = "_claim.json";

/// Objects larger than this are written as multipart uploads, in parts of `MULTIPART_PART`.
const MULTIPART_ABOVE: usize = 16 * 1024 * 1024;
const MULTIPART_PART: usize = 8 * 1024 * 1024;

impl Store {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, &[])
    }

    /// Opens a store; for S3, `s3_options` (e.g. `("aws_endpoint", "http://…")`)
    /// are applied over the standard `AWS_*` environment.
    pub fn open_with(url: &str, s3_options: &[(&str, &str)]) -> Result<Self, StoreError> {
        let open_error = |message: String| StoreError::Open { url: url.to_string(), message };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(open_error("an s3:// URL needs a bucket: s3://bucket/prefix".into()));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                builder = builder.with_endpoint(endpoint);
            }
            for (key, value) in s3_options {
                let key: object_store::aws::AmazonS3ConfigKey =
                    key.parse().map_err(|e: object_store::Error| open_error(e.to_string()))?;
                builder = builder.with_config(key, *value);
            }
            let s3 = builder.build().map_err(|e| open_error(e.to_string()))?;
            let inner: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.trim_matches('/')))
            };
            return Ok(Self { url: url.to_string(), inner, local_root: None });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(open_error("unsupported store URL: use a path, file://… or s3://bucket/prefix".into()));
        }
        let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        std::fs::create_dir_all(&path).map_err(|e| open_error(format!("cannot create the folder: {e}")))?;
        let root = std::fs::canonicalize(&path).map_err(|e| open_error(e.to_string()))?;
        let local =
            object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(|e| open_error(e.to_string()))?;
        Ok(Self { url: url.to_string(), inner: Arc::new(local), local_root: Some(root) })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where an object lives on this machine's disk, for a local store.
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(path))
    }

    /// Writes an object only if it does not exist yet: `Ok(false)` when it does.
    pub async fn put_new(&self, path: &str, bytes: Bytes) -> Result<bool, StoreError> {
        let object = ObjectPath::from(path);
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.inner.put_opts(&object, PutPayload::from(bytes), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.object_error(&object, e)),
        }
    }

    /// Checks that the store honours create-only writes, which the commit and the
    /// run lock rely on: a second create of the same object must be refused. A
    /// store that cannot do it is refused before anything is written.
    pub async fn check_conditional_writes(&self) -> Result<(), StoreError> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let probe = ObjectPath::from(format!("_probe/create-only-{}-{nanos}", std::process::id()));
        let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
        let refuse = |why: String| StoreError::Open {
            url: self.url.clone(),
            message: format!("the store does not honour create-only writes ({why}); refusing to commit"),
        };
        self.inner
            .put_opts(&probe, PutPayload::from_static(b"probe"), create())
            .await
            .map_err(|e| refuse(e.to_string()))?;
        let second = self.inner.put_opts(&probe, PutPayload::from_static(b"probe"), create()).await;
        let _ = self.inner.delete(&probe).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Ok(_) => Err(refuse("a second create of the same object succeeded".into())),
            Err(e) => Err(refuse(e.to_string())),
        }
    }

    fn object_error(&self, path: &ObjectPath, source: object_store::Error) -> StoreError {
        StoreError::Object { url: self.url.clone(), path: path.to_string(), source }
    }

    /// Writes an object; a large one goes up in parts (a multipart upload), which
    /// S3 needs past 5 GiB and which keeps a retry to one part.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = ObjectPath::from(path);
        if bytes.len() <= MULTIPART_ABOVE {
            self.inner.put(&path, PutPayload::from(bytes)).await.map_err(|e| self.object_error(&path, e))?;
            return Ok(());
        }
        let upload = self.inner.put_multipart(&path).await.map_err(|e| self.object_error(&path, e))?;
        let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
        parts.write(&bytes);
        parts.finish().await.map_err(|e| self.object_error(&path, e))?;
        Ok(())
    }

    /// Writes an object from a file on this machine without holding it in memory:
    /// a copy for a local store, a multipart upload read part by part for S3.
    pub async fn put_file(&self, path: &str, local: &Path) -> Result<u64, StoreError> {
        let object = ObjectPath::from(path);
        let cache = |source| StoreError::Cache { path: local.to_path_buf(), source };
        let size = std::fs::metadata(local).map_err(cache)?.len();
        if let Some(root) = &self.local_root {
            let target = root.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(cache)?;
            }
            // On the same disk a staged file is moved; elsewhere it is copied, then moved into place.
            if std::fs::rename(local, &target).is_err() {
                let partial = target.with_extension("partial");
                std::fs::copy(local, &partial).map_err(cache)?;
                std::fs::rename(&partial, &target).map_err(cache)?;
            }
            return Ok(size);
        }
        if size as usize <= MULTIPART_ABOVE {
            let bytes = std::fs::read(local).map_err(cache)?;
            self.put(path, Bytes::from(bytes)).await?;
            return Ok(size);
        }
        let mut file = std::fs::File::open(local).map_err(cache)?;
        let upload = self.inner.put_multipart(&object).await.map_err(|e| self.object_error(&object, e))?;
        let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
        let mut buffer = vec![0u8; MULTIPART_PART];
        let sent: Result<(), StoreError> = async {
            loop {
                let n = std::io::Read::read(&mut file, &mut buffer).map_err(cache)?;
                if n == 0 {
                    return Ok(());
                }
                // At most a few parts in flight: memory stays at a few part sizes.
                parts.wait_for_capacity(4).await.map_err(|e| self.object_error(&object, e))?;
                parts.write(&buffer[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                parts.finish().await.map_err(|e| self.object_error(&object, e))?;
            }
            Err(e) => {
                // An upload left open is invisible, but billed for: abort it.
                let _ = parts.abort().await;
                return Err(e);
            }
        }
        Ok(size)
    }

    /// An object as a file on this machine: the file itself for a local store, else a
    /// temporary copy written as it downloads (removed when the handle is dropped).
    pub async fn local_copy(&self, path: &str) -> Result<LocalFile, StoreError> {
        if let Some(root) = &self.local_root {
            return Ok(LocalFile { path: root.join(path), temporary: false });
        }
        let object = ObjectPath::from(path);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let local = std::env::temp_dir().join(format!("partnerforge-copy-{}-{nanos:x}.parquet", std::process::id()));
        let copy = LocalFile { path: local.clone(), temporary: true };
        let cache = |source| StoreError::Cache { path: local.clone(), source };
        let mut file = std::fs::File::create(&local).map_err(cache)?;
        let mut stream = self.inner.get(&object).await.map_err(|e| self.object_error(&object, e))?.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.object_error(&object, e))? {
            std::io::Write::write_all(&mut file, &chunk).map_err(cache)?;
        }
        Ok(copy)
    }

    /// Every object below a prefix, as paths.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = ObjectPath::from(prefix);
        let objects: Vec<_> =
            self.inner.list(Some(&prefix)).try_collect().await.map_err(|e| self.object_error(&prefix, e))?;
        Ok(objects.into_iter().map(|o| o.location.to_string()).collect())
    }

    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        let path = ObjectPath::from(path);
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error(&path, e)),
        }
    }

    /// Writes one table of a snapshot folder and describes it for the manifest.
    pub async fn put_table(
        &self,
        folder: &str,
        table: &str,
        bytes: Bytes,
        rows: usize,
    ) -> Result<FileEntry, StoreError> {
        let path = format!("{folder}/{table}.parquet");
        let size = bytes.len() as u64;
        self.put(&path, bytes).await?;
        Ok(FileEntry { table: table.to_string(), path, bytes: size, rows: rows as u64, schema: None, base: None })
    }

    /// Copies an object within the store (a hard link on a local store, a server-side
    /// copy on S3): the copy costs no transfer and no space locally.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let (source, target) = (ObjectPath::from(from), ObjectPath::from(to));
        self.inner.copy(&source, &target).await.map_err(|e| self.object_error(&source, e))
    }

    /// The bytes `range` of an object.
    pub async fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
        let path = ObjectPath::from(path);
        self.inner.get_range(&path, range).await.map_err(|e| self.object_error(&path, e))
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool, StoreError> {
        let path = ObjectPath::from(path);
        match self.inner.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.object_error(&path, e)),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Bytes, StoreError> {
        let path = ObjectPath::from(path);
        let result = self.inner.get(&path).await.map_err(|e| self.object_error(&path, e))?;
        result.bytes().await.map_err(|e| self.object_error(&path, e))
    }

    /// Writes a snapshot's manifest, create-only: the commit point.
    pub async fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let path = format!("{}/{MANIFEST_FILE}", manifest.folder());
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::Encode(e.to_string()))?;
        match self.put_new(&path, Bytes::from(json)).await? {
            true => Ok(()),
            false => Err(StoreError::AlreadyCommitted { url: self.url.clone(), path }),
        }
    }

    /// Every committed snapshot (each date's newest generation), oldest date first.
    pub async fn snapshots(&self) -> Result<Vec<Manifest>, StoreError> {
        let manifests = self.all_generations().await?;
        // Keep each date's newest generation: older ones are history of replacements.
        let mut current: Vec<Manifest> = Vec::new();
        for manifest in manifests {
            if current.last().is_some_and(|last| last.date == manifest.date) {
                current.pop();
            }
            current.push(manifest);
        }
        Ok(current)
    }

    /// Every committed manifest, replaced generations included, by date and generation.
    /// (Accounting needs them: a replaced snapshot's calls were made and paid.)
    pub async fn all_generations(&self) -> Result<Vec<Manifest>, StoreError> {
        let prefix = ObjectPath::from("snapshots");
        let objects: Vec<_> =
            self.inner.list(Some(&prefix)).try_collect().await.map_err(|e| self.object_error(&prefix, e))?;
        let mut manifests: Vec<Manifest> = Vec::new();
        for object in objects {
            if object.location.filename() != Some(MANIFEST_FILE) {
                continue;
            }
            let bytes = self.get(object.location.as_ref()).await?;
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                url: self.url.clone(),
                path: object.location.to_string(),
                message: e.to_string(),
            })?;
            manifests.push(manifest);
        }
        manifests.sort_by(|a, b| (&a.date, a.generation).cmp(&(&b.date, b.generation)));
        Ok(manifests)
    }

    /// The folder of a local store; `None` for S3.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    pub async fn latest(&self) -> Result<Option<Manifest>, StoreError> {
        Ok(self.snapshots().await?.pop())
    }

    /// The snapshot's files as paths on this machine: the files themselves for a
    /// local store, else copies in `cache_dir/<snapshot>/<generation>/` (reused
    /// when already complete). Every listed file is checked to exist. With `tables`,
    /// only those tables' files (an S3 store copies nothing else).
    /// A local path for an immutable object outside the snapshots (a discovery run's
    /// files): in place for a local store, else copied once into `cache_dir`.
    pub async fn local_object(&self, path: &str, cache_dir: &Path) -> Result<PathBuf, StoreError> {
        if let Some(root) = &self.local_root {
            return Ok(root.join(path));
        }
        let local = cache_dir.join(path);
        if !local.is_file() {
            let bytes = self.get(path).await?;
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| StoreError::Cache { path: parent.to_path_buf(), source })?;
            }
            // Whole or not at all: a download cut short is not taken for the object next time.
            let partial = local.with_extension("partial");
            std::fs::write(&partial, &bytes).map_err(|source| StoreError::Cache { path: partial.clone(), source })?;
            std::fs::rename(&partial, &local).map_err(|source| StoreError::Cache { path: local.clone(), source })?;
        }
        Ok(local)
    }

    /// The base a manifest's targets table names (see [`FileEntry::base`]), checked to be
    /// a snapshot's targets file before anything reads it.
    pub fn checked_base<'a>(&self, manifest: &Manifest, base: &'a str) -> Result<&'a str, StoreError> {
        let parts: Vec<&str> = base.split('/').collect();
        let valid = parts.len() == 4
            && parts[0] == "snapshots"
            && parts[3] == "targets.parquet"
            && !parts.iter().any(|p| p.is_empty() || *p == ".." || p.contains(['*', '?', '[', '\\']));
        if !valid {
            return Err(StoreError::BadManifest {
                url: self.url.clone(),
                path: format!("{}/{MANIFEST_FILE}", manifest.folder()),
                message: format!("the targets' base {base:?} is not a snapshot's targets file"),
            });
        }
        Ok(base)
    }

    /// This machine's copy of the whole targets file a table stored by reference names as
    /// its base (another snapshot's; see [`FileEntry::base`]), checked to be one.
    pub async fn local_base(&self, manifest: &Manifest, base: &str, cache_dir: &Path) -> Result<PathBuf, StoreError> {
        let base = self.checked_base(manifest, base)?;
        if let Some(root) = &self.local_root
            && !root.join(base).is_file()
        {
            return Err(StoreError::MissingFile {
                url: self.url.clone(),
                snapshot: manifest.snapshot_id.clone(),
                path: base.to_string(),
            });
        }
        self.local_object(base, cache_dir).await
    }

    pub async fn local_files(
        &self,
        manifest: &Manifest,
        cache_dir: &Path,
        tables: Option<&[&str]>,
    ) -> Result<Vec<(FileEntry, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for entry in manifest.files.iter().filter(|e| tables.is_none_or(|t| t.contains(&e.table.as_str()))) {
            // A listed file must sit in the snapshot's own folder: never `..`, never absolute.
            let inside = entry.path.starts_with(&format!("{}/", manifest.folder()))
                && !entry.path.split('/').any(|part| part == ".." || part.is_empty())
                && !entry.path.contains(['*', '?', '[', '\\']);
            if !inside {
                return Err(StoreError::BadManifest {
                    url: self.url.clone(),
                    path: format!("{}/{MANIFEST_FILE}", manifest.folder()),
                    message: format!("file {:?} is not inside the snapshot's folder", entry.path),
                });
            }
            let object = ObjectPath::from(entry.path.as_str());
            let missing = || StoreError::MissingFile {
                url: self.url.clone(),
                snapshot: manifest.snapshot_id.clone(),
                path: entry.path.clone(),
            };
            let local = match &self.local_root {
                Some(root) => {
                    let path = root.join(&entry.path);
                    if !path.is_file() {
                        return Err(missing());
                    }
                    path
                }
                None => {
                    let path = cache_dir.join(&entry.path);
                    let cached = std::fs::metadata(&path).is_ok_and(|m| m.len() == entry.bytes);
                    if !cached {
                        let bytes = match self.inner.get(&object).await {
                            Ok(result) => result.bytes().await.map_err(|e| self.object_error(&object, e))?,
                            Err(object_store::Error::NotFound { .. }) => return Err(missing()),
                            Err(e) => return Err(self.object_error(&object, e)),
                        };
                        let cache = |source| StoreError::Cache { path: path.clone(), source };
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).map_err(cache)?;
                        }
                        let partial = path.with_extension("partial");
                        std::fs::write(&partial, &bytes).map_err(cache)?;
                        std::fs::rename(&partial, &path).map_err(cache)?;
                    }
                    path
                }
            };
            out.push((entry.clone(), local));
        }
        Ok(out)
    }

    /// Claims the next free generation of a date for one writer: a create-only
    /// `_claim.json` in its folder. Of two writers on one store (two pipelines),
    /// each gets its own folder, so neither overwrites the other's files nor loses
    /// its commit; a folder claimed but never committed is left for gc.
    pub async fn claim_generation(&self, date: &str, run_id: &str) -> Result<u32, StoreError> {
        let mut generation = self.next_generation(date).await?;
        let claim = serde_json::json!({ "run_id": run_id, "claimed_at": chrono::Utc::now().to_rfc3339() });
        for _ in 0..1000 {
            let path = format!("{}/{CLAIM_FILE}", manifest::folder(date, generation));
            if self.put_new(&path, Bytes::from(claim.to_string())).await? {
                return Ok(generation);
            }
            generation += 1; // another writer has it: take the next one
        }
        Err(StoreError::Open { url: self.url.clone(), message: format!("no free generation for {date}") })
    }

    /// The next generation number no writer has used for a date (1 for a new date).
    pub async fn next_generation(&self, date: &str) -> Result<u32, StoreError> {
        let prefix = ObjectPath::from(format!("snapshots/{date}"));
        let objects: Vec<_> =
            self.inner.list(Some(&prefix)).try_collect().await.map_err(|e| self.object_error(&prefix, e))?;
        let highest = objects
            .iter()
            .filter_map(|o| o.location.parts().nth(2).and_then(|p| p.as_ref().parse::<u32>().ok()))
            .max()
            .unwrap_or(0);
        Ok(highest + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_of_one_date_get_a_generation_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        for round in 0..5 {
            let (a, b) =
                tokio::join!(store.claim_generation("2026-11-20", "a"), store.claim_generation("2026-11-20", "b"));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_ne!(a, b, "round {round}");
            assert_eq!(a.max(b), 2 * round + 2);
        }
    }

    #[tokio::test]
    async fn a_large_object_goes_up_in_parts_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let big: Vec<u8> = (0..(MULTIPART_ABOVE + 3 * MULTIPART_PART + 123)).map(|i| (i % 251) as u8).collect();
        store.put("snapshots/x/big.parquet", Bytes::from(big.clone())).await.unwrap();
        assert_eq!(store.get("snapshots/x/big.parquet").await.unwrap(), Bytes::from(big));
    }
}
