//! The call journal: a run's answered calls, made durable as they finish, so a
//! run that dies is resumed without paying for them again.
//!
//! Every answered call (its attempts, statuses, bodies, costs, how it ended) is
//! appended to the journal under `runs/<run_id>/` **before it counts as done**:
//! the call path keeps the call's request slot until its entry is durable, so
//! calls answered but not yet on record never outnumber the pipeline's
//! `concurrency`. A crash can therefore re-pay at most the calls on the wire.
//!
//! Entries are JSON lines, written with group commit: a writer takes everything
//! queued since its last write, writes it at once and makes it durable, then
//! acknowledges each entry. On a local store it appends to one file per process
//! (`journal-<segment>.jsonl`) and `fsync`s it; on object storage each group is
//! a small create-only object (`journal/<segment>-<group>.jsonl`). A resumed run
//! replays every segment (a line torn by the crash is counted and its call asked
//! again), then writes a segment of its own. The run's parameters are kept
//! beside it (`run.json`), so a resume needs nothing but the run id.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::{ProviderAccount, ProviderId};
use crate::fetch::{Attempt, Call, Ending, Exchange, Keep, Reply};
use crate::store::{Store, StoreError};

/// What a run was asked to do, kept so `--resume` can do it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub run_id: String,
    pub pipeline: PathBuf,
    pub date: String,
    pub limit: Option<usize>,
    pub targets: Option<PathBuf>,
    pub providers: ProviderAccount,
    pub force: Vec<String>,
    pub only: Option<Vec<String>>,
    pub replace: bool,
    pub faults: Vec<String>,
    pub started_at: String,
}

fn folder(run_id: &str) -> String {
    format!("runs/{run_id}")
}

/// The identity of a call across attempts and resumes: one per (provider, endpoint, domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallKey {
    pub provider: ProviderId,
    pub endpoint: String,
    pub domain: String,
}

impl CallKey {
    pub fn of(call: &Call) -> Self {
        Self { provider: call.provider, endpoint: call.endpoint.to_string(), domain: call.domain.clone() }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredAttempt {
    number: u32,
    status: Option<u16>,
    body: String,
    latency_ms: f64,
    error: Option<String>,
    retry_after: Option<String>,
    called_at_ms: i64,
    waited_ms: f64,
    cost_usd: f64,
}

/// One journal line: a call and everything that happened to it.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: CallKey,
    attempts: Vec<StoredAttempt>,
}

fn entry_line(call: &Call, exchange: &Exchange) -> Vec<u8> {
    let attempts = exchange
        .attempts
        .iter()
        .map(|a| StoredAttempt {
            number: a.number,
            status: a.reply.status,
            body: String::from_utf8_lossy(&a.reply.body).to_string(),
            latency_ms: a.reply.latency.as_secs_f64() * 1000.0,
            error: a.reply.error.clone(),
            retry_after: a.reply.retry_after.clone(),
            called_at_ms: a.reply.called_at.timestamp_millis(),
            waited_ms: a.waited.as_secs_f64() * 1000.0,
            cost_usd: a.cost_usd,
        })
        .collect();
    let mut line = serde_json::to_vec(&Entry { key: CallKey::of(call), attempts }).unwrap_or_default();
    line.push(b'\n');
    line
}

fn exchange_of(attempts: Vec<StoredAttempt>) -> Exchange {
    let attempts = attempts
        .into_iter()
        .map(|a| Attempt {
            number: a.number,
            reply: Reply {
                status: a.status,
                body: Bytes::from(a.body),
                latency: std::time::Duration::from_secs_f64(a.latency_ms.max(0.0) / 1000.0),
                error: a.error,
                retry_after: a.retry_after,
                called_at: chrono::DateTime::from_timestamp_millis(a.called_at_ms).unwrap_or_default(),
            },
            waited: std::time::Duration::from_secs_f64(a.waited_ms.max(0.0) / 1000.0),
            cost_usd: a.cost_usd,
        })
        .collect();
    Exchange { attempts, ending: Ending::Answered }
}

/// What a replay found that it could not use.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unreadable {
    /// Lines cut short at the end of a segment: the crash came while they were written.
    pub torn: usize,
    /// Other lines that would not parse, with the first reason.
    pub bad: usize,
    pub first_error: Option<String>,
}

impl Unreadable {
    pub fn total(&self) -> usize {
        self.torn + self.bad
    }
}

/// A run's journal: the calls already on record, and (once started) the writer.
pub struct Journal {
    store: Store,
    run_id: String,
    done: HashMap<CallKey, Exchange>,
    /// The segment this process writes.
    segment: u32,
    pub unreadable: Unreadable,
}

/// Which segment a journal object belongs to, from its name.
fn segment_of(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    if let Some(rest) = name.strip_prefix("journal-") {
        return rest.strip_suffix(".jsonl")?.parse().ok();
    }
    if path.contains("/journal/") {
        return name.split('-').next()?.parse().ok();
    }
    None
}

impl Journal {
    /// Starts the journal of a new run, recording what it was asked to do.
    pub async fn start(store: &Store, spec: &RunSpec) -> Result<Self, StoreError> {
        let json = serde_json::to_vec_pretty(spec).map_err(|e| StoreError::Encode(e.to_string()))?;
        store.put(&format!("{}/run.json", folder(&spec.run_id)), Bytes::from(json)).await?;
        Ok(Self {
            store: store.clone(),
            run_id: spec.run_id.clone(),
            done: HashMap::new(),
            segment: 1,
            unreadable: Unreadable::default(),
        })
    }

    /// Reads back a run's parameters and replays every entry of its journal.
    pub async fn resume(store: &Store, run_id: &str) -> Result<(RunSpec, Self), StoreError> {
        let spec_path = format!("{}/run.json", folder(run_id));
        let spec: RunSpec = match store.get(&spec_path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest {
                url: store.url().to_string(),
                path: spec_path.clone(),
                message: e.to_string(),
            })?,
            Err(StoreError::Object { source: object_store::Error::NotFound { .. }, .. }) => {
                return Err(StoreError::Open {
                    url: store.url().to_string(),
                    message: format!("no run {run_id} to resume (no {spec_path})"),
                });
            }
            Err(e) => return Err(e),
        };
        let mut files: Vec<(u32, String)> =
            store.list(&folder(run_id)).await?.into_iter().filter_map(|p| segment_of(&p).map(|s| (s, p))).collect();
        files.sort();
        let mut done = HashMap::new();
        let mut unreadable = Unreadable::default();
        for (_, file) in &files {
            let bytes = store.get(file).await?;
            let mut lines = bytes.split(|b| *b == b'\n').peekable();
            while let Some(line) = lines.next() {
                let last = lines.peek().is_none();
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Entry>(line) {
                    Ok(entry) => {
                        done.insert(entry.key, exchange_of(entry.attempts));
                    }
                    // A last line without its newline was being written when the run died.
                    Err(_) if last => unreadable.torn += 1,
                    Err(e) => {
                        unreadable.bad += 1;
                        unreadable.first_error.get_or_insert_with(|| format!("{file}: {e}"));
                    }
                }
            }
        }
        let segment = files.iter().map(|(s, _)| *s).max().unwrap_or(0) + 1;
        let journal = Self { store: store.clone(), run_id: run_id.to_string(), done, segment, unreadable };
        Ok((spec, journal))
    }

    /// The answered exchange of a call, when an earlier attempt of this run made it.
    pub fn finished(&self, call: &Call) -> Option<&Exchange> {
        self.done.get(&CallKey::of(call))
    }

    pub fn resumed_calls(&self) -> usize {
        self.done.len()
    }

    /// What the replayed calls cost and how many requests they sent, per provider.
    pub fn usage(&self) -> BTreeMap<ProviderId, (f64, u64)> {
        let mut usage: BTreeMap<ProviderId, (f64, u64)> = BTreeMap::new();
        for (key, exchange) in &self.done {
            let entry = usage.entry(key.provider).or_default();
            entry.0 += exchange.attempts.iter().map(|a| a.cost_usd).sum::<f64>();
            entry.1 += exchange.attempts.len() as u64;
        }
        usage
    }

    /// Starts this process's writer: a new segment, group-committed.
    pub fn writer(&self) -> Result<JournalWriter, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel::<Pending>();
        match self.store.local_path(&format!("{}/journal-{:04}.jsonl", folder(&self.run_id), self.segment)) {
            Some(path) => {
                let file = open_segment(&path).map_err(|e| StoreError::Cache { path: path.clone(), source: e })?;
                std::thread::Builder::new()
                    .name("journal".into())
                    .spawn(move || write_local(file, path, rx))
                    .map_err(|e| StoreError::Encode(format!("cannot start the journal writer: {e}")))?;
            }
            None => {
                let prefix = format!("{}/journal/{:04}", folder(&self.run_id), self.segment);
                tokio::spawn(write_objects(self.store.clone(), prefix, rx));
            }
        }
        Ok(JournalWriter { tx })
    }
}

/// An entry waiting to be written, and who to tell once it is durable.
struct Pending {
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// At most this many entries (or bytes) go in one write.
const GROUP_ENTRIES: usize = 512;
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Takes what is queued: the first entry (waiting for it), then whatever else is there.
fn take_group(first: Pending, rx: &mut mpsc::UnboundedReceiver<Pending>) -> Vec<Pending> {
    let mut group = vec![first];
    let mut bytes = group[0].line.len();
    while group.len() < GROUP_ENTRIES && bytes < GROUP_BYTES {
        match rx.try_recv() {
            Ok(next) => {
                bytes += next.line.len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

fn finish(group: Vec<Pending>, result: Result<(), String>) {
    for pending in group {
        let _ = pending.done.send(result.clone());
    }
}

fn open_segment(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let parent = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent)?;
    let file = std::fs::OpenOptions::new().create_new(true).append(true).open(path)?;
    // The new file's name must survive a machine crash too.
    std::fs::File::open(parent)?.sync_all()?;
    Ok(file)
}

/// The local writer: append the group, `fsync`, acknowledge.
fn write_local(mut file: std::fs::File, path: PathBuf, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.blocking_recv() {
        let group = take_group(first, &mut rx);
        let bytes: Vec<u8> = group.iter().flat_map(|p| p.line.iter().copied()).collect();
        let result = file
            .write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("journal {}: {e}", path.display()));
        finish(group, result);
    }
}

/// The object-storage writer: one create-only object per group.
async fn write_objects(store: Store, prefix: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut next = 1u64;
    while let Some(first) = rx.recv().await {
        let group = take_group(first, &mut rx);
        let bytes: Vec<u8> = group.iter().flat_map(|p| p.line.iter().copied()).collect();
        let path = format!("{prefix}-{next:08}.jsonl");
        next += 1;
        let result = match store.put_new(&path, Bytes::from(bytes)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("journal object {path} already exists: another process writes this segment")),
            Err(e) => Err(e.to_string()),
        };
        finish(group, result);
    }
}

/// Appends answered calls to the journal; `keep` returns once the entry is durable.
pub struct JournalWriter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Keep for JournalWriter {
    fn keep<'a>(&'a self, call: &'a Call, exchange: &'a Exchange) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // Only an answer is reused by a resume; a call that failed or was not made is asked again.
            if exchange.ending != Ending::Answered {
                return Ok(());
            }
            let (done, durable) = oneshot::channel();
            self.tx
                .send(Pending { line: entry_line(call, exchange), done })
                .map_err(|_| "the journal writer stopped".to_string())?;
            durable.await.map_err(|_| "the journal writer stopped".to_string())?
        })
    }
}

/// The newest run that left a journal and never committed.
pub async fn last_unfinished(store: &Store) -> Result<Option<String>, StoreError> {
    let committed: std::collections::BTreeSet<String> =
        store.all_generations().await?.into_iter().map(|m| m.run_id).collect();
    let mut runs: Vec<String> = store
        .list("runs")
        .await?
        .into_iter()
        .filter(|p| p.ends_with("/run.json"))
        .filter_map(|p| p.split('/').nth(1).map(str::to_string))
        .filter(|id| !committed.contains(id))
        .collect();
    runs.sort();
    Ok(runs.pop())
}

/// Removes a run's journal once its snapshot is committed.
pub async fn discard(store: &Store, run_id: &str) -> Result<(), StoreError> {
    for path in store.list(&folder(run_id)).await? {
        store.delete(&path).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(run_id: &str) -> RunSpec {
        RunSpec {
            run_id: run_id.into(),
            pipeline: "pipelines/nightly.toml".into(),
            date: "2026-11-20".into(),
            limit: None,
            targets: None,
            providers: ProviderAccount::Simulated,
            force: vec![],
            only: None,
            replace: false,
            faults: vec![],
            started_at: "2026-11-20T00:00:00Z".into(),
        }
    }

    fn call(domain: &str) -> Call {
        Call::get(ProviderId::BuiltWith, "domain", domain, ("/v21/api.json".into(), vec![]))
    }

    fn answered(body: &str) -> Exchange {
        let reply = Reply {
            status: Some(200),
            body: Bytes::from(body.to_string()),
            latency: std::time::Duration::from_millis(12),
            error: None,
            retry_after: None,
            called_at: chrono::DateTime::from_timestamp_millis(1_763_600_000_000).unwrap(),
        };
        let attempt = Attempt { number: 1, reply, waited: std::time::Duration::ZERO, cost_usd: 0.1 };
        Exchange { attempts: vec![attempt], ending: Ending::Answered }
    }

    async fn journal_on(store: &Store) {
        let journal = Journal::start(store, &spec("run-j")).await.unwrap();
        let writer = journal.writer().unwrap();
        let calls: Vec<Call> = (0..50).map(|i| call(&format!("site-{i}.com"))).collect();
        let answer = answered("{\"ok\":1}");
        let kept = futures::future::join_all(calls.iter().map(|c| writer.keep(c, &answer))).await;
        assert!(kept.iter().all(Result::is_ok), "{kept:?}");
        // A call that was not answered is not kept: the resume asks it again.
        let failed = Exchange { attempts: vec![], ending: Ending::GaveUp("500s".into()) };
        writer.keep(&call("failed.com"), &failed).await.unwrap();

        let (spec, resumed) = Journal::resume(store, "run-j").await.unwrap();
        assert_eq!(spec.date, "2026-11-20");
        assert_eq!(resumed.resumed_calls(), 50);
        let exchange = resumed.finished(&call("site-7.com")).expect("replayed");
        assert_eq!(exchange.attempts[0].reply.body, Bytes::from_static(b"{\"ok\":1}"));
        assert_eq!(exchange.attempts[0].cost_usd, 0.1);
        assert!(resumed.finished(&call("failed.com")).is_none());
        assert_eq!(resumed.usage()[&ProviderId::BuiltWith].1, 50);

        // The resumed process writes a segment of its own beside the first.
        let writer = resumed.writer().unwrap();
        writer.keep(&call("later.com"), &answered("{}")).await.unwrap();
        let (_, again) = Journal::resume(store, "run-j").await.unwrap();
        assert_eq!(again.resumed_calls(), 51);
        assert_eq!(again.unreadable, Unreadable::default());
    }

    #[tokio::test]
    async fn every_kept_call_is_replayed_on_a_local_store() {
        let dir = tempfile::tempdir().unwrap();
        journal_on(&Store::open(dir.path().to_str().unwrap()).unwrap()).await;
    }

    #[tokio::test]
    async fn a_line_torn_by_a_crash_is_counted_and_its_call_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let journal = Journal::start(&store, &spec("run-t")).await.unwrap();
        let writer = journal.writer().unwrap();
        writer.keep(&call("a.com"), &answered("{}")).await.unwrap();
        writer.keep(&call("b.com"), &answered("{}")).await.unwrap();
        let path = dir.path().join("runs/run-t/journal-0001.jsonl");
        let text = std::fs::read(&path).unwrap();
        // The crash came halfway through the second line; a third segment has a garbled line.
        std::fs::write(&path, &text[..text.len() - 20]).unwrap();
        std::fs::write(dir.path().join("runs/run-t/journal-0002.jsonl"), b"not json\n").unwrap();
        let (_, resumed) = Journal::resume(&store, "run-t").await.unwrap();
        assert_eq!(resumed.resumed_calls(), 1);
        assert!(resumed.finished(&call("b.com")).is_none());
        assert_eq!((resumed.unreadable.torn, resumed.unreadable.bad), (1, 1), "{:?}", resumed.unreadable);
        assert!(resumed.unreadable.first_error.as_deref().is_some_and(|e| e.contains("journal-0002")));
    }
}
