//! The wave executor: which calls each wave makes (the same planner for `run`
//! and `plan`), making them through the call path with every answer kept in
//! the journal, and recording them — ledger rows, raw bodies, module rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use arrow::array::Array as _;
use futures::StreamExt;

use crate::config::ProviderId;
use crate::fetch::{Call, Ending, Exchange, Fetcher, LedgerRow, Outcome};
use crate::freshness::{self, Carry};
use crate::modules::{self, Context, FetchRow, Module, Parsed, RawRow, Subject, Tables};
use crate::store::Store;
use crate::targets::{Book, Target};

use super::journal::{Journal, JournalWriter};
use super::stage::Stage;

/// Decides what each wave calls: the same code for `run` and `plan`.
pub(crate) struct Planner<'a> {
    run_id: String,
    pub(crate) context: Context,
    book: &'a Book,
    /// Modules that failed, or could not run, per domain.
    pub(crate) failed: BTreeMap<String, BTreeSet<&'static str>>,
    /// Domains known not to be targets (running Algolia): later waves skip them.
    pub(crate) not_targets: BTreeSet<String>,
    /// What the previous snapshot still covers: those pairs get no call.
    carry: &'a Carry,
    /// The free pre-check's verdict per domain (m00), once its wave is done.
    pub(crate) prechecked: BTreeMap<String, &'static str>,
    /// Domains whose last lookup the pre-check kept, not yet carried into the stage.
    unchanged: BTreeSet<String>,
}

/// The state of one refresh as it goes: a small buffer of rows and ledger rows,
/// flushed to the stage as it fills, and the ledger's running totals.
pub(crate) struct Refresh<'a> {
    pub(crate) planner: Planner<'a>,
    fetcher: Fetcher,
    buffer: Buffer,
    /// The wave's progress on a terminal: domains done of the wave's, calls and spend so far.
    pub(crate) progress: Option<indicatif::ProgressBar>,
}

/// Rows not yet staged, and what the ledger adds up to.
struct Buffer {
    tables: Tables,
    ledger: Vec<LedgerRow>,
    /// Body bytes in the buffer, and targets finished since the last flush.
    bytes: usize,
    targets: usize,
    totals: LedgerTotals,
    stage: Stage,
    /// The domains whose module results this run recorded (fetched, or spared a call).
    touched: BTreeSet<String>,
}

/// What the manifest counts of the ledger, kept as rows go by.
#[derive(Debug, Default)]
pub(crate) struct LedgerTotals {
    /// Calls that went out.
    pub calls: u64,
    pub spend_usd: f64,
    /// Calls that ended without an answer, per provider.
    pub failures: BTreeMap<String, u64>,
}

impl LedgerTotals {
    fn add(&mut self, row: &LedgerRow) {
        self.calls += u64::from(row.outcome.was_sent());
        self.spend_usd += row.cost_usd;
        if row.outcome.is_failure() {
            *self.failures.entry(row.provider.name().to_string()).or_default() += 1;
        }
    }
}

/// The buffer is written to the stage past either bound.
const FLUSH_BYTES: usize = 32 * 1024 * 1024;
const FLUSH_TARGETS: usize = 2_000;

/// A wave's calls, one per (provider, endpoint, domain) (for `plan`).
pub(crate) struct WavePlan {
    pub(crate) calls: Vec<Call>,
}

/// One target's part of a wave: its calls (each made once, whatever number of
/// modules read it), which module reads which, and what was not called and why.
pub(crate) struct TargetPlan<'t> {
    target: &'t Target,
    pub(crate) calls: Vec<Call>,
    reads: Vec<(&'static Module, Vec<usize>)>,
    /// Calls not made because a module they need failed for this domain.
    skipped: Vec<LedgerRow>,
    /// Modules not run for that reason.
    blocked: Vec<&'static str>,
    /// Modules whose paid call the pre-check spared: BuiltWith does not know the
    /// domain, so they hold no data for it.
    spared: Vec<&'static str>,
}

/// A target whose calls are under way.
struct Pending<'t> {
    plan: TargetPlan<'t>,
    answers: Vec<Option<Exchange>>,
    left: usize,
}

pub(crate) fn subject<'t>(book: &'t Book, target: &'t Target) -> Subject<'t> {
    Subject {
        domain: &target.domain,
        ticker: book.tickers.get(&target.domain).map(String::as_str),
        job_board: book.job_boards.get(&target.domain).map(|(platform, board)| (*platform, board.as_str())),
        news_feed: book.news_feeds.get(&target.domain).map(String::as_str),
    }
}

impl<'a> Planner<'a> {
    pub(crate) fn new(run_id: &str, context: Context, book: &'a Book, carry: &'a Carry) -> Self {
        Self {
            run_id: run_id.to_string(),
            context,
            book,
            failed: BTreeMap::new(),
            not_targets: BTreeSet::new(),
            carry,
            prechecked: BTreeMap::new(),
            unchanged: BTreeSet::new(),
        }
    }

    /// The domains whose last full lookup the pre-check kept since the last call: their
    /// checked modules' rows are to be carried forward.
    pub(crate) fn take_unchanged(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.unchanged)
    }

    /// What the free pre-check compares with (each domain's last full lookup) and what
    /// it decided while it is fresh (carried from the previous snapshot).
    pub(crate) async fn load_precheck(
        &mut self,
        store: &Store,
        previous: &[crate::store::Manifest],
    ) -> anyhow::Result<()> {
        self.context.precheck.lookups = freshness::last_lookups(store, previous, self.carry).await?;
        for domain in freshness::kept_by_precheck(store, self.carry).await? {
            self.prechecked.insert(domain.clone(), modules::precheck::UNCHANGED);
            self.unchanged.insert(domain);
        }
        Ok(())
    }

    /// Whether a module is left to the previous snapshot for this domain: still fresh,
    /// left alone by `--only`, or (a module a pre-check guards) kept by the pre-check.
    fn carried(&self, module: &Module, domain: &str) -> bool {
        self.carry.is_fresh(module.id, domain)
            || self.carry.excludes(module.id)
            || (module.checked_by.is_some() && self.prechecked.get(domain) == Some(&modules::precheck::UNCHANGED))
    }

    /// Plans one target's part of a wave; `None` when it gets no call at all. A
    /// module that does not apply (no calls) is left out; one whose dependency
    /// failed is not called: its calls are `skipped_dependency`, the module failed.
    /// Reads only what earlier waves decided, so a wave can plan as it goes.
    pub(crate) fn plan_target<'t>(&self, wave: &[&'static Module], target: &'t Target) -> Option<TargetPlan<'t>> {
        if self.not_targets.contains(&target.domain) {
            return None; // already a customer (runs Algolia): not worth a call
        }
        let mut plan = TargetPlan {
            target,
            calls: Vec::new(),
            reads: Vec::new(),
            skipped: Vec::new(),
            blocked: Vec::new(),
            spared: Vec::new(),
        };
        let mut index: HashMap<(ProviderId, &'static str), usize> = HashMap::new();
        let failed = self.failed.get(&target.domain);
        for module in wave {
            if self.carried(module, &target.domain) {
                continue; // still fresh (carried forward), left alone by --only, or kept by the pre-check
            }
            if module.checks().next().is_some() && module.checks().all(|m| self.carried(m, &target.domain)) {
                continue; // a pre-check, and no paid call of those it checks is due
            }
            let module_calls = (module.calls)(&self.context, &subject(self.book, target));
            if module_calls.is_empty() {
                continue; // does not apply (e.g. financials without a ticker)
            }
            if module.checked_by.is_some() && self.prechecked.get(&target.domain) == Some(&modules::precheck::UNKNOWN) {
                // BuiltWith does not know the domain: no paid lookup, the module holds no data.
                for call in module_calls {
                    match plan.skipped.iter_mut().find(|r| r.provider == call.provider && r.endpoint == call.endpoint) {
                        Some(row) => row.modules = format!("{},{}", row.modules, module.id),
                        None => plan.skipped.push(LedgerRow::not_made(
                            &self.run_id,
                            &call,
                            module.id,
                            Outcome::SkippedPrecheck,
                            "BuiltWith does not know the domain (free pre-check)",
                        )),
                    }
                }
                plan.spared.push(module.id);
                continue;
            }
            if let Some(primary) = module.fallback_for
                && !failed.is_some_and(|f| f.contains(primary))
            {
                continue; // the module it stands in for did not fail
            }
            let blocked: Vec<&str> =
                module.depends_on.iter().copied().filter(|d| failed.is_some_and(|f| f.contains(d))).collect();
            if !blocked.is_empty() {
                let reason = format!("{} failed for this domain", blocked.join(","));
                for call in module_calls {
                    plan.skipped.push(LedgerRow::not_made(
                        &self.run_id,
                        &call,
                        module.id,
                        Outcome::SkippedDependency,
                        &reason,
                    ));
                }
                plan.blocked.push(module.id);
                continue;
            }
            let mut slots = Vec::new();
            for mut call in module_calls {
                let slot = *index.entry((call.provider, call.endpoint)).or_insert_with(|| {
                    call.modules.clear();
                    plan.calls.push(call);
                    plan.calls.len() - 1
                });
                plan.calls[slot].modules.add(module.id);
                slots.push(slot);
            }
            plan.reads.push((module, slots));
        }
        (!plan.calls.is_empty() || !plan.skipped.is_empty()).then_some(plan)
    }

    /// Plans a whole wave at once (for `plan`, which makes no call), marking the
    /// modules a failed dependency blocks as a run would.
    pub(crate) fn plan_wave(&mut self, wave: &[&'static Module], work: &[&Target]) -> WavePlan {
        let mut calls = Vec::new();
        for target in work {
            let Some(plan) = self.plan_target(wave, target) else { continue };
            for module in plan.blocked {
                self.failed.entry(target.domain.clone()).or_default().insert(module);
            }
            calls.extend(plan.calls);
        }
        WavePlan { calls }
    }
}

/// What one wave learned, applied to the planner once the wave is done.
#[derive(Default)]
struct WaveResult {
    failed: Vec<(String, &'static str)>,
    not_targets: Vec<String>,
    /// The free pre-check's verdicts.
    prechecked: Vec<(String, &'static str)>,
}

impl<'a> Refresh<'a> {
    pub(crate) fn new(planner: Planner<'a>, fetcher: Fetcher, stage: Stage) -> Self {
        let buffer = Buffer {
            tables: Tables::default(),
            ledger: Vec::new(),
            bytes: 0,
            targets: 0,
            totals: LedgerTotals::default(),
            stage,
            touched: BTreeSet::new(),
        };
        Self { planner, fetcher, buffer, progress: None }
    }

    /// Makes a wave's calls target by target as request slots free up, each answer
    /// kept in the journal before it counts as done (a call the journal already
    /// holds is not made again). A target's modules read its replies as soon as its
    /// last call is in, and rows go to the stage as the buffer fills: memory
    /// follows the calls under way, not the book.
    pub(crate) async fn run_wave(
        &mut self,
        wave: &[&'static Module],
        work: &[&Target],
        journal: &Journal,
        writer: &JournalWriter,
    ) -> anyhow::Result<()> {
        let pending: Mutex<HashMap<usize, Pending>> = Mutex::new(HashMap::new());
        let ready: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        let mut result = WaveResult::default();
        let planner = &self.planner;
        if let Some(bar) = &self.progress {
            bar.set_length(work.len() as u64);
            bar.set_position(0);
            bar.reset_eta();
        }
        let mut sink =
            Sink { planner, fetcher: &self.fetcher, buffer: &mut self.buffer, progress: self.progress.as_ref() };
        // First the targets that need no call — every answer is in the journal (a resume),
        // or every module was skipped — finished one at a time, so they never pile up.
        let mut settled = vec![false; work.len()];
        let resuming = journal.resumed_calls() > 0;
        for (seq, target) in work.iter().enumerate() {
            if !resuming && !planner.failed.contains_key(&target.domain) {
                continue; // a fresh run's target with no failure has calls to make
            }
            let Some(plan) = planner.plan_target(wave, target) else { continue };
            if !plan.calls.iter().all(|c| journal.contains(c)) {
                continue;
            }
            let answers: Vec<Option<Exchange>> = plan.calls.iter().map(|c| journal.finished(c)).collect();
            if answers.iter().all(Option::is_some) {
                settled[seq] = true;
                sink.finish_target(Pending { plan, answers, left: 0 }, &mut result)?;
            }
        }
        // Then the rest, planned as request slots free up; replayed answers wait with their target.
        let calls = work.iter().enumerate().filter(|(seq, _)| !settled[*seq]).flat_map(|(seq, target)| {
            let Some(plan) = planner.plan_target(wave, target) else { return Vec::new() };
            let mut answers: Vec<Option<Exchange>> = vec![None; plan.calls.len()];
            let mut to_make = Vec::new();
            for (j, call) in plan.calls.iter().enumerate() {
                match journal.finished(call) {
                    Some(exchange) => answers[j] = Some(exchange),
                    None => to_make.push(((seq, j), call.clone())),
                }
            }
            let left = to_make.len();
            lock(&pending).insert(seq, Pending { plan, answers, left });
            if left == 0 {
                lock(&ready).push(seq);
            }
            to_make
        });
        {
            let mut finished = std::pin::pin!(self.fetcher.stream(calls, writer)?);
            loop {
                sink.finish_ready(&ready, &pending, &mut result)?;
                let Some(item) = finished.next().await else { break };
                let ((seq, j), _, exchange) = item?;
                if exchange.ending == Ending::Stopped {
                    continue; // never sent: a resume asks it
                }
                let done = {
                    let mut pending = lock(&pending);
                    let entry = pending.get_mut(&seq).context("an answer for a target not under way")?;
                    entry.answers[j] = Some(exchange);
                    entry.left -= 1;
                    if entry.left == 0 { pending.remove(&seq) } else { None }
                };
                if let Some(done) = done {
                    sink.finish_target(done, &mut result)?;
                }
            }
        }
        sink.finish_ready(&ready, &pending, &mut result)?;
        if self.fetcher.stopped() {
            bail!("stopped: the calls under way finished and are in the journal");
        }
        if !lock(&pending).is_empty() {
            bail!("{} targets of the wave were left without all their answers", lock(&pending).len());
        }
        for (domain, module) in result.failed {
            self.planner.failed.entry(domain).or_default().insert(module);
        }
        self.planner.not_targets.extend(result.not_targets);
        for (domain, verdict) in result.prechecked {
            if verdict == modules::precheck::UNCHANGED {
                self.planner.unchanged.insert(domain.clone());
            }
            self.planner.prechecked.insert(domain, verdict);
        }
        Ok(())
    }

    /// Appends carried rows to the stage (rows the pre-check kept, known once its wave is done).
    pub(crate) fn stage(&mut self) -> &mut Stage {
        &mut self.buffer.stage
    }

    /// Each provider's circuit now, and how many times it opened.
    pub(crate) fn circuits(&self) -> std::collections::BTreeMap<crate::config::ProviderId, (&'static str, u64)> {
        self.fetcher.circuits()
    }

    /// Writes what is still buffered to the stage. Returns the planner, the totals, the
    /// stage (to commit) and the domains whose module results this run recorded.
    #[allow(clippy::type_complexity)]
    pub(crate) fn finish(mut self) -> anyhow::Result<(Planner<'a>, LedgerTotals, Stage, BTreeSet<String>)> {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
        Sink { planner: &self.planner, fetcher: &self.fetcher, buffer: &mut self.buffer, progress: None }.flush()?;
        Ok((self.planner, self.buffer.totals, self.buffer.stage, self.buffer.touched))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a finished target's calls are recorded: the buffers, the totals, the stage.
struct Sink<'r> {
    planner: &'r Planner<'r>,
    fetcher: &'r Fetcher,
    buffer: &'r mut Buffer,
    progress: Option<&'r indicatif::ProgressBar>,
}

impl Sink<'_> {
    fn push_ledger(&mut self, row: LedgerRow) {
        self.buffer.totals.add(&row);
        self.buffer.ledger.push(row);
    }

    /// Finishes the targets whose every answer came from the journal.
    fn finish_ready(
        &mut self,
        ready: &Mutex<Vec<usize>>,
        pending: &Mutex<HashMap<usize, Pending>>,
        result: &mut WaveResult,
    ) -> anyhow::Result<()> {
        for seq in std::mem::take(&mut *lock(ready)) {
            let done = lock(pending).remove(&seq);
            if let Some(done) = done {
                self.finish_target(done, result)?;
            }
        }
        Ok(())
    }

    /// Records a target's calls and lets its modules read the replies; a module
    /// with a failed call is empty for the target.
    fn finish_target(&mut self, done: Pending, result: &mut WaveResult) -> anyhow::Result<()> {
        if let Some(bar) = self.progress {
            bar.inc(1);
            let totals = &self.buffer.totals;
            bar.set_message(format!("{} calls · ${:.2}", totals.calls, totals.spend_usd));
        }
        let Pending { plan, answers, .. } = done;
        let domain = &plan.target.domain;
        self.buffer.touched.insert(domain.clone());
        for row in plan.skipped {
            self.push_ledger(row);
        }
        result.failed.extend(plan.blocked.iter().map(|m| (domain.clone(), *m)));
        for module in &plan.spared {
            let fetched_on = self.planner.context.run_date;
            self.buffer.tables.fetches.push(FetchRow {
                module,
                domain: domain.clone(),
                fetched_on,
                outcome: "no_data",
            });
        }
        let mut parsed = Vec::with_capacity(plan.calls.len());
        for (call, exchange) in plan.calls.iter().zip(answers) {
            let exchange = exchange.context("a call neither made nor in the journal")?;
            parsed.push(self.record(call, &exchange)?);
        }
        let spends_before = self.buffer.tables.tech_spend.len();
        let checks_before = self.buffer.tables.builtwith_free.len();
        for (module, slots) in plan.reads {
            if slots.iter().any(|s| parsed[*s].is_err()) {
                result.failed.push((domain.clone(), module.id));
                continue;
            }
            let replies: Vec<&Parsed> = slots.iter().filter_map(|s| parsed[*s].as_ref().ok()).collect();
            (module.normalize)(
                &self.planner.context,
                &subject(self.planner.book, plan.target),
                &replies,
                &mut self.buffer.tables,
            );
            let outcome = if replies.iter().all(|r| modules::is_no_data(r)) { "no_data" } else { "ok" };
            let fetched_on = self.planner.context.run_date;
            self.buffer.tables.fetches.push(FetchRow {
                module: module.id,
                domain: domain.clone(),
                fetched_on,
                outcome,
            });
        }
        if self.buffer.tables.tech_spend[spends_before..].iter().any(|s| s.runs_algolia) {
            result.not_targets.push(domain.clone());
        }
        for check in &self.buffer.tables.builtwith_free[checks_before..] {
            result.prechecked.push((check.domain.clone(), check.verdict));
        }
        self.buffer.targets += 1;
        if self.buffer.targets >= FLUSH_TARGETS || self.buffer.bytes >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends the buffered rows to the stage, a row group per table.
    fn flush(&mut self) -> anyhow::Result<()> {
        let tables = std::mem::take(&mut self.buffer.tables);
        for (table, batch) in tables.batches(self.planner.context.fetched_at_ms, &self.planner.context.snapshot_id)? {
            if batch.num_rows() > 0 {
                self.buffer.stage.append(table, batch)?;
            }
        }
        let ledger = std::mem::take(&mut self.buffer.ledger);
        if !ledger.is_empty() {
            self.buffer.stage.append("api_calls", super::ledger_batch(&ledger, &self.planner.context.snapshot_id)?)?;
        }
        (self.buffer.bytes, self.buffer.targets) = (0, 0);
        Ok(())
    }

    /// Parses a call's answer and records every attempt in the ledger (and each
    /// body as received); a call not made gets one row saying why.
    fn record(&mut self, call: &Call, exchange: &Exchange) -> anyhow::Result<Result<Parsed, (Outcome, String)>> {
        let endpoint = self.fetcher.endpoint(call.provider)?;
        let result = match (exchange.answer(), unanswered(exchange)) {
            (Some(reply), None) => modules::parse(&self.planner.context, call, &reply),
            (_, Some(failure)) => Err(failure),
            (None, None) => Err((Outcome::Failed, "no reply".into())),
        };
        let verdict = match &result {
            Ok(parsed) if modules::is_no_data(parsed) => Ok(Outcome::NoData),
            Ok(_) => Ok(Outcome::Ok),
            Err(failure) => Err(failure.clone()),
        };
        let modules = call.modules.to_string();
        for row in ledger_rows(&self.planner.run_id, call, &modules, exchange, &verdict, &|e| endpoint.redact(e)) {
            self.push_ledger(row);
        }
        for attempt in exchange.attempts.iter().filter(|a| a.reply.status.is_some() && a.session.is_none()) {
            let reply = &attempt.reply;
            self.buffer.bytes += reply.body.len();
            self.buffer.tables.raw.push(RawRow {
                provider: call.provider.name(),
                endpoint: call.endpoint,
                domain: call.domain.clone(),
                modules: modules.clone(),
                http_status: reply.status,
                fetched_at_ms: reply.called_at.timestamp_millis(),
                body: endpoint.redact(&String::from_utf8_lossy(&reply.body)),
                page: attempt.page,
            });
        }
        Ok(result)
    }
}

/// Why a call has no answer to read (`None`: it was answered): the ledger's outcome and message.
pub(crate) fn unanswered(exchange: &Exchange) -> Option<(Outcome, String)> {
    match &exchange.ending {
        Ending::Answered => None,
        Ending::GaveUp(reason) => Some(match exchange.attempts.last() {
            // Answered, but its pages did not end.
            Some(a) if a.reply.is_success() => (Outcome::Failed, reason.clone()),
            last => {
                (Outcome::Failed, format!("{}; {reason}", last.map(|a| attempt_error(&a.reply)).unwrap_or_default()))
            }
        }),
        Ending::Skipped(outcome, reason) => Some((*outcome, reason.clone())),
        Ending::Stopped => Some((Outcome::Failed, "stopped before it was sent".into())),
    }
}

/// A call's ledger: one row per attempt (the last one carries `verdict`: `ok`, `no_data`,
/// or the failure), and one more for a call not (or no longer) made. `redact` scrubs the
/// provider's key from error text.
pub(crate) fn ledger_rows(
    run_id: &str,
    call: &Call,
    modules: &str,
    exchange: &Exchange,
    verdict: &Result<Outcome, (Outcome, String)>,
    redact: &dyn Fn(&str) -> String,
) -> Vec<LedgerRow> {
    let last = exchange.attempts.len();
    // A page of a paged answer that the next page followed: answered, and paid for.
    let followed = |i: usize| {
        let page = exchange.attempts[i].page;
        exchange.attempts[i].reply.is_success() && exchange.attempts[i + 1..].iter().any(|a| a.page > page)
    };
    let mut rows = Vec::with_capacity(last + 1);
    for (i, attempt) in exchange.attempts.iter().enumerate() {
        let reply = &attempt.reply;
        let final_attempt = i + 1 == last && !matches!(exchange.ending, Ending::Skipped(..));
        let (outcome, error) = match (verdict, final_attempt) {
            _ if attempt.session.is_none() && !final_attempt && followed(i) => (Outcome::Ok, None),
            // The session's requests, made for this call: answered or not, nothing to parse.
            // (a failed one the call went on from was tried again; one that ended the
            // call without an answer is the call's failure, below).
            _ if attempt.session.is_some() && !final_attempt => match (&reply.error, i + 1 < last) {
                (None, _) => (Outcome::Ok, None),
                (Some(why), true) => (Outcome::Retried, Some(why.clone())),
                (Some(why), false) => (Outcome::Failed, Some(why.clone())),
            },
            (_, false) => (Outcome::Retried, Some(attempt_error(reply))),
            (Ok(outcome), true) => (*outcome, None),
            (Err((outcome, message)), true) => (*outcome, Some(message.clone())),
        };
        rows.push(LedgerRow {
            run_id: run_id.to_string(),
            provider: call.provider,
            endpoint: attempt.session.unwrap_or(call.endpoint),
            domain: call.domain.clone(),
            modules: modules.to_string(),
            attempt: attempt.number,
            page: attempt.page,
            http_status: reply.status,
            outcome,
            error: error.map(|e| redact(&e)),
            latency_ms: reply.latency.as_secs_f64() * 1000.0,
            waited_ms: attempt.waited.as_secs_f64() * 1000.0,
            cost_usd: attempt.cost_usd,
            bytes: reply.body.len() as u64,
            called_at: reply.called_at,
        });
    }
    if let Ending::Skipped(outcome, reason) = &exchange.ending {
        let mut row = LedgerRow::not_made(run_id, call, modules, *outcome, reason);
        // The attempt that was not made: the one after the last made — or, after a session
        // request that did its part, the attempt it came before (it carries its number).
        row.attempt = exchange
            .attempts
            .last()
            .map_or(1, |a| a.number + u32::from(a.session.is_none() || a.reply.error.is_some()));
        // Of a paged call: the page after the last one answered, or the one that failed.
        row.page = exchange
            .attempts
            .last()
            .map_or(1, |a| a.page + u32::from(call.pager.is_some() && a.session.is_none() && a.reply.is_success()));
        rows.push(row);
    }
    rows
}

/// Domains whose carried-forward tech stack runs Algolia.
pub(crate) async fn carried_algolia(store: &Store, carry: &Carry, date: &str) -> anyhow::Result<Vec<String>> {
    let mut domains = Vec::new();
    freshness::carried_rows(store, carry, "tech_spend", date, |batch| {
        let (Some(domain), Some(algolia)) = (batch.column_by_name("domain"), batch.column_by_name("runs_algolia"))
        else {
            return Ok(());
        };
        let (Some(domain), Some(algolia)) = (
            domain.as_any().downcast_ref::<arrow::array::StringArray>(),
            algolia.as_any().downcast_ref::<arrow::array::BooleanArray>(),
        ) else {
            return Ok(());
        };
        for i in 0..batch.num_rows() {
            if algolia.is_valid(i) && algolia.value(i) && domain.is_valid(i) {
                domains.push(domain.value(i).to_string());
            }
        }
        Ok(())
    })
    .await?;
    Ok(domains)
}

/// What went wrong with one attempt, in a line: the transport error or the status.
fn attempt_error(reply: &crate::fetch::Reply) -> String {
    match (&reply.error, reply.status) {
        (Some(error), _) => error.clone(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => "no reply".into(),
    }
}
