//! The wave executor: which calls each wave makes (the same planner for `run`
//! and `plan`), making them through the call path with every answer kept in
//! the journal, and recording them — ledger rows, raw bodies, module rows.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, bail};
use futures::StreamExt;

use crate::config::ProviderId;
use crate::fetch::{Call, Ending, Exchange, Fetcher, LedgerRow, Outcome};
use crate::freshness::{self, Carry};
use crate::modules::{self, Context, FetchRow, Module, Parsed, RawRow, Subject, Tables};
use crate::store::Store;
use crate::store::table::to_parquet;
use crate::targets::{Book, Target};
use crate::transform;

use super::journal::{CallKey, Journal, JournalWriter};

/// Decides what each wave calls: the same code for `run` and `plan`.
pub(crate) struct Planner<'a> {
    run_id: String,
    pub(crate) context: Context,
    book: &'a Book,
    /// Modules that failed, or could not run, per domain.
    pub(crate) failed: BTreeMap<String, BTreeSet<&'static str>>,
    /// Domains known not to be targets (running Algolia): later waves skip them.
    pub(crate) not_targets: BTreeSet<String>,
    /// Ledger rows of calls planned but not made (a dependency failed).
    pub(crate) not_made: Vec<LedgerRow>,
    /// What the previous snapshot still covers: those pairs get no call.
    carry: &'a Carry,
}

/// The state of one refresh as it goes: rows so far and the ledger.
pub(crate) struct Refresh<'a> {
    pub(crate) planner: Planner<'a>,
    fetcher: Fetcher,
    pub(crate) tables: Tables,
    pub(crate) ledger: Vec<LedgerRow>,
}

/// A wave's work: the calls to make, one per (provider, endpoint, domain), and
/// which module of which target reads which of them.
pub(crate) struct WavePlan<'t> {
    pub(crate) calls: Vec<Call>,
    reads: Vec<(&'static Module, &'t Target, Vec<usize>)>,
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
            not_made: Vec::new(),
            carry,
        }
    }

    /// Plans a wave. A module that does not apply to a target (no calls) is left
    /// out; one whose dependency failed is not called: its calls are recorded as
    /// `skipped_dependency` and the module as failed.
    pub(crate) fn plan_wave<'t>(&mut self, wave: &[&'static Module], work: &[&'t Target]) -> WavePlan<'t> {
        let mut plan = WavePlan { calls: Vec::new(), reads: Vec::new() };
        let mut index: HashMap<(ProviderId, &'static str, String), usize> = HashMap::new();
        for target in work {
            if self.not_targets.contains(&target.domain) {
                continue; // already a customer (runs Algolia): not worth a call
            }
            for module in wave {
                if self.carry.is_fresh(module.id, &target.domain) || self.carry.excludes(module.id) {
                    continue; // still fresh (carried forward), or left alone by --only
                }
                let module_calls = (module.calls)(&self.context, &subject(self.book, target));
                if module_calls.is_empty() {
                    continue; // does not apply (e.g. financials without a ticker)
                }
                let failed = self.failed.get(&target.domain);
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
                        let row =
                            LedgerRow::not_made(&self.run_id, &call, module.id, Outcome::SkippedDependency, &reason);
                        self.not_made.push(row);
                    }
                    self.failed.entry(target.domain.clone()).or_default().insert(module.id);
                    continue;
                }
                let mut slots = Vec::new();
                for mut call in module_calls {
                    let key = (call.provider, call.endpoint, call.domain.clone());
                    let slot = *index.entry(key).or_insert_with(|| {
                        call.modules.clear();
                        plan.calls.push(call);
                        plan.calls.len() - 1
                    });
                    let modules_of = &mut plan.calls[slot].modules;
                    if !modules_of.split(',').any(|m| m == module.id) {
                        if !modules_of.is_empty() {
                            modules_of.push(',');
                        }
                        modules_of.push_str(module.id);
                    }
                    slots.push(slot);
                }
                plan.reads.push((module, target, slots));
            }
        }
        plan
    }
}

/// Makes the wave's calls, records each in the ledger (and its body), and lets
/// every module read its replies; a module with a failed call is empty.
impl<'a> Refresh<'a> {
    pub(crate) fn new(planner: Planner<'a>, fetcher: Fetcher) -> Self {
        Self { planner, fetcher, tables: Tables::default(), ledger: Vec::new() }
    }

    /// Makes the wave's calls, each answer kept in the journal before it counts as
    /// done; a call the journal already holds (a resumed run) is not made again.
    pub(crate) async fn run_wave(
        &mut self,
        plan: WavePlan<'_>,
        journal: &Journal,
        writer: &JournalWriter,
    ) -> anyhow::Result<()> {
        let todo: Vec<Call> = plan.calls.iter().filter(|c| journal.finished(c).is_none()).cloned().collect();
        let mut made: HashMap<CallKey, Exchange> = HashMap::with_capacity(todo.len());
        {
            let mut finished = std::pin::pin!(self.fetcher.stream(todo, writer)?);
            while let Some(item) = finished.next().await {
                let (_, call, exchange) = item?;
                if exchange.ending != Ending::Stopped {
                    made.insert(CallKey::of(&call), exchange);
                }
            }
        }
        if self.fetcher.stopped() {
            bail!("stopped: the calls under way finished and are in the journal");
        }
        let mut exchanges: Vec<(Call, Exchange)> = Vec::with_capacity(plan.calls.len());
        for call in &plan.calls {
            let exchange = match made.remove(&CallKey::of(call)) {
                Some(exchange) => exchange,
                None => journal.finished(call).cloned().context("a call neither made nor in the journal")?,
            };
            exchanges.push((call.clone(), exchange));
        }
        let mut parsed = Vec::with_capacity(exchanges.len());
        for (call, exchange) in &exchanges {
            parsed.push(self.record(call, exchange)?);
        }
        let planner = &mut self.planner;
        for (module, target, slots) in plan.reads {
            if slots.iter().any(|s| parsed[*s].is_err()) {
                planner.failed.entry(target.domain.clone()).or_default().insert(module.id);
                continue;
            }
            let replies: Vec<&Parsed> = slots.iter().filter_map(|s| parsed[*s].as_ref().ok()).collect();
            (module.normalize)(&planner.context, &subject(planner.book, target), &replies, &mut self.tables);
            let outcome = if replies.iter().all(|r| modules::is_no_data(r)) { "no_data" } else { "ok" };
            let fetched_on = planner.context.snapshot_id.clone();
            self.tables.fetches.push(FetchRow {
                module: module.id,
                domain: target.domain.clone(),
                fetched_on,
                outcome,
            });
        }
        for spend in self.tables.tech_spend.iter().filter(|s| s.runs_algolia) {
            planner.not_targets.insert(spend.domain.clone());
        }
        Ok(())
    }

    /// Parses a call's answer and records every attempt in the ledger (and each
    /// body as received); a call not made gets one row saying why.
    fn record(&mut self, call: &Call, exchange: &Exchange) -> anyhow::Result<Result<Parsed, (Outcome, String)>> {
        let endpoint = self.fetcher.endpoint(call.provider)?;
        let result = match (&exchange.ending, exchange.answer()) {
            (Ending::Answered, Some(reply)) => modules::parse(&self.planner.context, call, reply),
            (Ending::GaveUp(reason), _) => {
                let last = exchange.attempts.last().map(|a| attempt_error(&a.reply)).unwrap_or_default();
                Err((Outcome::Failed, format!("{last}; {reason}")))
            }
            (Ending::Skipped(outcome, reason), _) => Err((*outcome, reason.clone())),
            (Ending::Stopped, _) => Err((Outcome::Failed, "stopped before it was sent".into())),
            (Ending::Answered, None) => Err((Outcome::Failed, "no reply".into())),
        };
        let last = exchange.attempts.len();
        for (i, attempt) in exchange.attempts.iter().enumerate() {
            let reply = &attempt.reply;
            let final_attempt = i + 1 == last && !matches!(exchange.ending, Ending::Skipped(..));
            let (outcome, error) = match (&result, final_attempt) {
                (_, false) => (Outcome::Retried, Some(attempt_error(reply))),
                (Ok(p), true) if modules::is_no_data(p) => (Outcome::NoData, None),
                (Ok(_), true) => (Outcome::Ok, None),
                (Err((outcome, message)), true) => (*outcome, Some(message.clone())),
            };
            self.ledger.push(LedgerRow {
                run_id: self.planner.run_id.clone(),
                provider: call.provider,
                endpoint: call.endpoint,
                domain: call.domain.clone(),
                modules: call.modules.clone(),
                attempt: attempt.number,
                http_status: reply.status,
                outcome,
                error: error.map(|e| endpoint.redact(&e)),
                latency_ms: reply.latency.as_secs_f64() * 1000.0,
                waited_ms: attempt.waited.as_secs_f64() * 1000.0,
                cost_usd: attempt.cost_usd,
                bytes: reply.body.len() as u64,
                called_at: reply.called_at,
            });
            if reply.status.is_some() {
                self.tables.raw.push(RawRow {
                    provider: call.provider.name(),
                    endpoint: call.endpoint,
                    domain: call.domain.clone(),
                    modules: call.modules.clone(),
                    http_status: reply.status,
                    fetched_at_ms: reply.called_at.timestamp_millis(),
                    body: endpoint.redact(&String::from_utf8_lossy(&reply.body)),
                });
            }
        }
        if let Ending::Skipped(outcome, reason) = &exchange.ending {
            let mut row = LedgerRow::not_made(&self.planner.run_id, call, &call.modules, *outcome, reason);
            row.attempt = last as u32 + 1;
            self.ledger.push(row);
        }
        Ok(result)
    }
}

/// Domains whose carried-forward tech stack runs Algolia.
pub(crate) async fn carried_algolia(store: &Store, carry: &Carry, date: &str) -> anyhow::Result<Vec<String>> {
    let mut domains = Vec::new();
    for batch in freshness::carried_rows(store, carry, "tech_spend", date).await? {
        let frame = transform::read_parquet(to_parquet(&batch)?)?
            .filter(polars::prelude::col("runs_algolia"))
            .select([polars::prelude::col("domain")])
            .collect()?;
        let column = frame.column("domain")?.str()?.clone();
        domains.extend((0..column.len()).filter_map(|i| column.get(i)).map(str::to_string));
    }
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
