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

use crate::config::{ProviderAccount, ProviderId, ProvidersMode};
use crate::fetch::{Attempt, Call, Ending, Exchange, Keep, Reply};
use crate::run::Selection;
use crate::run::spend::{self, Days, Recorder};
use crate::store::{Store, StoreError};

/// What a run was asked to do, kept so `--resume` can do it again: its selection
/// (with the providers as decided, never `auto`), and the run's own options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub run_id: String,
    pub selection: Selection,
    pub replace: bool,
    pub faults: Vec<String>,
    pub started_at: String,
}

/// The account a run's calls go to, as its spec decided it.
fn account_of(spec: &RunSpec) -> ProviderAccount {
    match spec.selection.providers {
        ProvidersMode::Real => ProviderAccount::Real,
        ProvidersMode::Simulated | ProvidersMode::Auto => ProviderAccount::Simulated,
    }
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
    /// The body as text, or (for a body that is not UTF-8) empty with `body_bytes` set.
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_bytes: Option<Vec<u8>>,
    latency_ms: f64,
    error: Option<String>,
    retry_after: Option<String>,
    called_at_ms: i64,
    waited_ms: f64,
    cost_usd: f64,
    /// A request of the provider's session (its endpoint), not of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    /// The page of a paged answer it asked for (lines written before paging: page 1).
    #[serde(default = "first_page")]
    page: u32,
}

fn first_page() -> u32 {
    1
}

/// One journal line: a call and everything that happened to it.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: CallKey,
    attempts: Vec<StoredAttempt>,
}

fn entry_line(call: &Call, exchange: &Exchange) -> Result<Vec<u8>, String> {
    let attempts = exchange
        .attempts
        .iter()
        .map(|a| {
            // Replayed, a body must parse as it did live: bytes that are not text are kept as bytes.
            let (body, body_bytes) = match std::str::from_utf8(&a.reply.body) {
                Ok(text) => (text.to_string(), None),
                Err(_) => (String::new(), Some(a.reply.body.to_vec())),
            };
            (a, body, body_bytes)
        })
        .map(|(a, body, body_bytes)| StoredAttempt {
            number: a.number,
            status: a.reply.status,
            body,
            body_bytes,
            latency_ms: a.reply.latency.as_secs_f64() * 1000.0,
            error: a.reply.error.clone(),
            retry_after: a.reply.retry_after.clone(),
            called_at_ms: a.reply.called_at.timestamp_millis(),
            waited_ms: a.waited.as_secs_f64() * 1000.0,
            cost_usd: a.cost_usd,
            session: a.session.map(str::to_string),
            page: a.page,
        })
        .collect();
    let mut line = serde_json::to_vec(&Entry { key: CallKey::of(call), attempts })
        .map_err(|e| format!("cannot encode the journal entry: {e}"))?;
    line.push(b'\n');
    Ok(line)
}

fn exchange_of(attempts: Vec<StoredAttempt>) -> Exchange {
    let attempts = attempts
        .into_iter()
        .map(|a| Attempt {
            number: a.number,
            reply: Reply {
                status: a.status,
                body: match a.body_bytes {
                    Some(bytes) => Bytes::from(bytes),
                    None => Bytes::from(a.body),
                },
                latency: millis(a.latency_ms),
                error: a.error,
                retry_after: a.retry_after,
                called_at: chrono::DateTime::from_timestamp_millis(a.called_at_ms).unwrap_or_default(),
            },
            waited: millis(a.waited_ms),
            cost_usd: a.cost_usd,
            session: a.session.as_deref().and_then(crate::fetch::session::endpoint_named),
            page: a.page,
        })
        .collect();
    Exchange { attempts, ending: Ending::Answered }
}

/// A stored duration; an absurd one (a hand-edited line) reads as zero rather than crashing the resume.
fn millis(ms: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default()
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
    /// The providers' account the run's spend is recorded against.
    account: ProviderAccount,
    /// When the run first started (RFC 3339).
    started_at: String,
    /// Where each replayed answer is: read back when the call comes up, never all held at once.
    index: HashMap<CallKey, Located>,
    /// The files the index points into: the local segments, or copies of S3's group objects.
    files: Vec<std::fs::File>,
    /// A folder of copies that goes with the journal.
    replay_dir: Option<PathBuf>,
    usage: BTreeMap<ProviderId, (f64, u64)>,
    /// The segment this process writes.
    segment: u32,
    pub unreadable: Unreadable,
}

/// One journal line on this machine's disk.
#[derive(Debug, Clone, Copy)]
struct Located {
    file: usize,
    offset: u64,
    len: usize,
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(dir) = &self.replay_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What a replay builds up, segment by segment.
#[derive(Default)]
struct Replay {
    index: HashMap<CallKey, Located>,
    usage: BTreeMap<ProviderId, (f64, u64)>,
    unreadable: Unreadable,
}

impl Replay {
    /// Reads one line at `offset` of file `file`; `complete` says it ended with its newline.
    fn line(&mut self, file: usize, offset: u64, text: &[u8], complete: bool, name: &str) {
        if text.is_empty() {
            return;
        }
        match serde_json::from_slice::<Entry>(text) {
            Ok(entry) => {
                let usage = self.usage.entry(entry.key.provider).or_default();
                usage.0 += entry.attempts.iter().map(|a| a.cost_usd).sum::<f64>();
                usage.1 += entry.attempts.len() as u64;
                self.index.insert(entry.key, Located { file, offset, len: text.len() });
            }
            // A last line without its newline was being written when the run died.
            Err(_) if !complete => self.unreadable.torn += 1,
            Err(e) => {
                self.unreadable.bad += 1;
                self.unreadable.first_error.get_or_insert_with(|| format!("{name}: {e}"));
            }
        }
    }

    /// Every line of `bytes`, which start at `base` in file `file`.
    fn lines(&mut self, file: usize, base: u64, bytes: &[u8], name: &str) {
        let mut offset = 0usize;
        while offset < bytes.len() {
            let (text, complete) = match bytes[offset..].iter().position(|b| *b == b'\n') {
                Some(end) => (&bytes[offset..offset + end], true),
                None => (&bytes[offset..], false),
            };
            self.line(file, base + offset as u64, text, complete, name);
            offset += text.len() + 1;
        }
    }
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
            account: account_of(spec),
            started_at: spec.started_at.clone(),
            index: HashMap::new(),
            files: Vec::new(),
            replay_dir: None,
            usage: BTreeMap::new(),
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
        let listed = store.list(&folder(run_id)).await?;
        if listed.iter().any(|p| p.contains("/checkpoint-")) && !listed.iter().any(|p| segment_of(p).is_some()) {
            return Err(StoreError::Open {
                url: store.url().to_string(),
                message: format!(
                    "run {run_id} was checkpointed by an earlier version (checkpoint-NNNNN.parquet), which this one does not \
                     replay; start the date again (its calls are asked again)"
                ),
            });
        }
        let mut segments: Vec<(u32, String)> =
            listed.into_iter().filter_map(|p| segment_of(&p).map(|s| (s, p))).collect();
        segments.sort();
        let io = |path: &std::path::Path, e: std::io::Error| StoreError::Cache { path: path.to_path_buf(), source: e };
        let mut replay = Replay::default();
        let mut files = Vec::new();
        let mut replay_dir = None;
        let mut copies: Option<(std::fs::File, u64)> = None;
        for (_, segment) in &segments {
            match store.local_path(segment) {
                // A local segment is read where it is, a buffer at a time.
                Some(path) => {
                    let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
                    let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
                    let (mut offset, mut line) = (0u64, Vec::new());
                    loop {
                        line.clear();
                        let n =
                            std::io::BufRead::read_until(&mut reader, b'\n', &mut line).map_err(|e| io(&path, e))?;
                        if n == 0 {
                            break;
                        }
                        let complete = line.last() == Some(&b'\n');
                        let text = if complete { &line[..n - 1] } else { &line[..] };
                        replay.line(files.len(), offset, text, complete, segment);
                        offset += n as u64;
                    }
                    files.push(file);
                }
                // An S3 group is small: fetched, appended to a local copy, indexed there.
                None => {
                    if copies.is_none() {
                        let dir =
                            std::env::temp_dir().join(format!("partnerforge-replay-{run_id}-{}", std::process::id()));
                        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                        let path = dir.join("journal.jsonl");
                        let file = std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(true)
                            .read(true)
                            .write(true)
                            .open(&path)
                            .map_err(|e| io(&path, e))?;
                        files.push(file.try_clone().map_err(|e| io(&path, e))?);
                        replay_dir = Some(dir);
                        copies = Some((file, 0));
                    }
                    let bytes = store.get(segment).await?;
                    if let Some((copy, written)) = copies.as_mut() {
                        let path = replay_dir.clone().unwrap_or_default();
                        copy.write_all(&bytes).map_err(|e| io(&path, e))?;
                        replay.lines(files.len() - 1, *written, &bytes, segment);
                        *written += bytes.len() as u64;
                    }
                }
            }
        }
        let segment = segments.iter().map(|(s, _)| *s).max().unwrap_or(0) + 1;
        let Replay { index, usage, unreadable } = replay;
        let journal = Self {
            store: store.clone(),
            run_id: run_id.to_string(),
            account: account_of(&spec),
            started_at: spec.started_at.clone(),
            index,
            files,
            replay_dir,
            usage,
            segment,
            unreadable,
        };
        Ok((spec, journal))
    }

    /// Whether an earlier attempt of this run has the call's answer on record.
    pub fn contains(&self, call: &Call) -> bool {
        self.index.contains_key(&CallKey::of(call))
    }

    /// The answered exchange of a call, when an earlier attempt of this run made it,
    /// read back from the journal. (A line that read well at replay and no longer
    /// does is asked again, and said so.)
    pub fn finished(&self, call: &Call) -> Option<Exchange> {
        use std::os::unix::fs::FileExt;
        let at = self.index.get(&CallKey::of(call))?;
        let mut line = vec![0u8; at.len];
        let read = self.files.get(at.file).map(|f| f.read_exact_at(&mut line, at.offset));
        match read.map(|r| {
            r.map_err(|e| e.to_string())
                .and_then(|()| serde_json::from_slice::<Entry>(&line).map_err(|e| e.to_string()))
        }) {
            Some(Ok(entry)) => Some(exchange_of(entry.attempts)),
            Some(Err(e)) => {
                tracing::warn!(domain = %call.domain, "journal entry no longer readable ({e}): the call is asked again");
                None
            }
            None => None,
        }
    }

    /// The UTC day the run first started.
    pub fn started_on(&self) -> Option<chrono::NaiveDate> {
        chrono::DateTime::parse_from_rfc3339(&self.started_at).ok().map(|t| t.with_timezone(&chrono::Utc).date_naive())
    }

    pub fn resumed_calls(&self) -> usize {
        self.index.len()
    }

    /// What the replayed calls cost and how many requests they sent, per provider.
    pub fn usage(&self) -> BTreeMap<ProviderId, (f64, u64)> {
        self.usage.clone()
    }

    /// Starts this process's writer: a new segment, group-committed.
    pub fn writer(&self) -> Result<JournalWriter, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel::<Pending>();
        let recorder = Recorder::new(&self.store, &self.run_id, self.account, self.segment);
        match self.store.local_path(&format!("{}/journal-{:04}.jsonl", folder(&self.run_id), self.segment)) {
            Some(path) => {
                let file = crate::store::create_durable(&path)
                    .map_err(|e| StoreError::Cache { path: path.clone(), source: e })?;
                std::thread::Builder::new()
                    .name("journal".into())
                    .spawn(move || write_local(file, path, recorder, rx))
                    .map_err(|e| StoreError::Encode(format!("cannot start the journal writer: {e}")))?;
            }
            None => {
                let prefix = format!("{}/journal/{:04}", folder(&self.run_id), self.segment);
                tokio::spawn(write_objects(self.store.clone(), prefix, recorder, rx));
            }
        }
        Ok(JournalWriter { tx })
    }
}

/// An entry waiting to be written, and who to tell once it is durable: the journal
/// line of an answer a resume reuses, and what the call cost and sent.
struct Pending {
    line: Option<Vec<u8>>,
    spend: Days,
    done: oneshot::Sender<Result<(), String>>,
}

/// At most this many entries (or bytes) go in one write.
const GROUP_ENTRIES: usize = 512;
const GROUP_BYTES: usize = 8 * 1024 * 1024;

/// Takes what is queued: the first entry (waiting for it), then whatever else is there.
fn take_group(first: Pending, rx: &mut mpsc::UnboundedReceiver<Pending>) -> Vec<Pending> {
    let mut group = vec![first];
    let mut bytes = group[0].line.as_ref().map_or(0, Vec::len);
    while group.len() < GROUP_ENTRIES && bytes < GROUP_BYTES {
        match rx.try_recv() {
            Ok(next) => {
                bytes += next.line.as_ref().map_or(0, Vec::len);
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

/// A group's journal lines, and its use (recorded first: an answer on record is paid for).
fn contents(group: &[Pending]) -> (Vec<u8>, Days) {
    let mut days = Days::new();
    for pending in group {
        spend::merge(&mut days, &pending.spend);
    }
    (group.iter().flat_map(|p| p.line.iter().flatten().copied()).collect(), days)
}

fn finish(group: Vec<Pending>, result: Result<(), String>) {
    for pending in group {
        let _ = pending.done.send(result.clone());
    }
}

/// The local writer: record the group's use, append its lines, `fsync`, acknowledge.
/// After a failed write it writes nothing more (a later line after a partial one
/// would be unreadable): every entry from then on is refused, and the run stops.
fn write_local(
    mut file: std::fs::File,
    path: PathBuf,
    mut recorder: Recorder,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut broken: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        let group = take_group(first, &mut rx);
        if let Some(error) = &broken {
            finish(group, Err(error.clone()));
            continue;
        }
        let (bytes, days) = contents(&group);
        let result = (if days.is_empty() { Ok(()) } else { recorder.write_local(days) }).and_then(|()| {
            if bytes.is_empty() {
                return Ok(());
            }
            file.write_all(&bytes)
                .and_then(|()| file.sync_data())
                .map_err(|e| format!("journal {}: {e}", path.display()))
        });
        if let Err(error) = &result {
            broken = Some(error.clone());
        }
        finish(group, result);
    }
}

/// The object-storage writer: the group's use, then its lines, each a create-only object.
async fn write_objects(store: Store, prefix: String, mut recorder: Recorder, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut next = 1u64;
    while let Some(first) = rx.recv().await {
        let group = take_group(first, &mut rx);
        let (bytes, days) = contents(&group);
        let mut result = if days.is_empty() { Ok(()) } else { recorder.write_objects(days).await };
        if result.is_ok() && !bytes.is_empty() {
            let path = format!("{prefix}-{next:08}.jsonl");
            next += 1;
            result = match store.put_new(&path, Bytes::from(bytes)).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("journal object {path} already exists: another process writes this segment")),
                Err(e) => Err(e.to_string()),
            };
        }
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
            // Only a paid answer (2xx) is reused by a resume. A call that failed, was not made,
            // or was refused (a 403 for a quota since reset, a 404) cost nothing and is asked
            // again; the requests it sent still count toward the provider's daily quota.
            let line = match exchange.answer() {
                Some(reply) if reply.is_success() => Some(entry_line(call, exchange)?),
                _ => None,
            };
            let spend = spend::of_exchange(call.provider, exchange);
            if line.is_none() && spend.is_empty() {
                return Ok(());
            }
            let (done, durable) = oneshot::channel();
            self.tx.send(Pending { line, spend, done }).map_err(|_| "the journal writer stopped".to_string())?;
            durable.await.map_err(|_| "the journal writer stopped".to_string())?
        })
    }
}

/// Whether a run left its parameters, so `--resume` can continue it.
pub async fn has_run(store: &Store, run_id: &str) -> bool {
    store.list(&folder(run_id)).await.is_ok_and(|paths| paths.iter().any(|p| p.ends_with("/run.json")))
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
    use crate::config::ProvidersMode;

    fn spec(run_id: &str) -> RunSpec {
        let selection = Selection {
            pipeline: "pipelines/nightly.toml".into(),
            store: "data/store".into(),
            date: "2026-11-20".parse().unwrap(),
            limit: None,
            targets: None,
            providers: ProvidersMode::Simulated,
            force: vec![],
            only: None,
        };
        RunSpec {
            run_id: run_id.into(),
            selection,
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
        let attempt =
            Attempt { number: 1, reply, waited: std::time::Duration::ZERO, cost_usd: 0.1, session: None, page: 1 };
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
        // Nor is an answer that cost nothing (a 403 for a quota that may have been reset since).
        let mut refused = answered("{\"Errors\":[]}");
        refused.attempts[0].reply.status = Some(403);
        writer.keep(&call("refused.com"), &refused).await.unwrap();
        // A body that is not text comes back byte for byte.
        let mut latin1 = answered("");
        latin1.attempts[0].reply.body = Bytes::from_static(b"<title>Caf\xe9</title>");
        writer.keep(&call("latin1.com"), &latin1).await.unwrap();

        let (spec, resumed) = Journal::resume(store, "run-j").await.unwrap();
        assert_eq!(spec.selection.date.to_string(), "2026-11-20");
        assert_eq!(resumed.resumed_calls(), 51);
        assert!(resumed.finished(&call("refused.com")).is_none());
        let body = &resumed.finished(&call("latin1.com")).expect("kept").attempts[0].reply.body;
        assert_eq!(body, &Bytes::from_static(b"<title>Caf\xe9</title>"));
        let exchange = resumed.finished(&call("site-7.com")).expect("replayed");
        assert_eq!(exchange.attempts[0].reply.body, Bytes::from_static(b"{\"ok\":1}"));
        assert_eq!(exchange.attempts[0].cost_usd, 0.1);
        assert!(resumed.finished(&call("failed.com")).is_none());
        assert_eq!(resumed.usage()[&ProviderId::BuiltWith].1, 51);

        // The resumed process writes a segment of its own beside the first.
        let writer = resumed.writer().unwrap();
        writer.keep(&call("later.com"), &answered("{}")).await.unwrap();
        let (_, again) = Journal::resume(store, "run-j").await.unwrap();
        assert_eq!(again.resumed_calls(), 52);
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
