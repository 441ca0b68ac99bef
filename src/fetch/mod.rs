//! The provider-agnostic call path. Every call goes through the same stages, in
//! this order: rate limiter → budget reservation → circuit breaker → HTTP →
//! retry decision; the caller then parses and writes the ledger.
//!
//! Nothing here knows a provider's wire format: a `Call` is a path and query
//! below a base URL, a `Reply` is a status and bytes; the one piece of provider
//! knowledge it takes is a `StopSignal` telling "quota used up" and "bad key"
//! apart, which stops that provider cleanly. API keys are added at the last
//! moment and never leave: errors are stripped of URLs and scrubbed of key text.

pub mod breaker;
pub mod budget;
pub mod clock;
pub mod ledger;
pub mod limiter;
pub mod retry;
pub mod session;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{ProviderId, ProviderSettings};
use breaker::CircuitBreaker;
use budget::Budget;
use clock::Clock;
pub use ledger::{LedgerRow, Outcome};
use limiter::RateLimiter;

/// One request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub provider: ProviderId,
    /// Endpoint name, as in the pipeline's cost table and the ledger.
    pub endpoint: &'static str,
    pub domain: String,
    /// The module(s) the call feeds.
    pub modules: Feeds,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    /// A second query to send once, at once, if the first answers 403 (SimilarWeb
    /// sometimes refuses `country=us` for a site it serves for `country=world`).
    pub fallback_on_403: Option<Vec<(&'static str, String)>>,
    /// How to follow the answer's further pages, for an endpoint that pages.
    pub pager: Option<Pager>,
}

/// How one endpoint pages its answers, and bills them; the provider module reads
/// its own bodies. A paged call is one call: every page goes through the limiter,
/// the budget, a request slot and the retry policy like a request of its own, and
/// the answer is every page's body (see [`Exchange::answer`]).
#[derive(Clone, Copy)]
pub struct Pager {
    /// The query parameter that asks for a page after the first (BuiltWith's `OFFSET`).
    pub param: &'static str,
    /// Reads a page's body once, for what paging needs of it.
    pub read: fn(&[u8]) -> PageRead,
    /// Most pages one call follows: an answer that never ends stops there.
    pub max_pages: u32,
}

/// What a page's body says for paging.
pub struct PageRead {
    /// The value of the pager's parameter for the next page, `None` on the last.
    pub next: Result<Option<String>, String>,
    /// The credits the page is billed (each costing the endpoint's cost): BuiltWith bills
    /// Relationships per 500 relationships, not per request.
    pub credits: u32,
}

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager").field("param", &self.param).field("max_pages", &self.max_pages).finish()
    }
}

impl PartialEq for Pager {
    fn eq(&self, other: &Self) -> bool {
        self.param == other.param && self.max_pages == other.max_pages && std::ptr::fn_addr_eq(self.read, other.read)
    }
}

impl Call {
    /// A GET of `path` and `query` (a provider's request shape) for one domain.
    pub fn get(
        provider: ProviderId,
        endpoint: &'static str,
        domain: &str,
        (path, query): (String, Vec<(&'static str, String)>),
    ) -> Self {
        Self {
            provider,
            endpoint,
            domain: domain.to_string(),
            modules: Feeds::default(),
            path,
            query,
            fallback_on_403: None,
            pager: None,
        }
    }

    /// The call follows its answer's pages with `pager`.
    pub fn paged(mut self, pager: Pager) -> Self {
        self.pager = Some(pager);
        self
    }
}

/// The modules one call feeds, each once, in the order they asked for it;
/// written `m01,m02` in the ledger and with raw bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feeds(Vec<&'static str>);

impl Feeds {
    pub fn of(module: &'static str) -> Self {
        Self(vec![module])
    }

    /// Adds a module, unless the call already feeds it.
    pub fn add(&mut self, module: &'static str) {
        if !self.0.contains(&module) {
            self.0.push(module);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().copied()
    }
}

impl std::fmt::Display for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// What came back from one attempt: a status and body, or a transport error.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: Option<u16>,
    pub body: Bytes,
    pub latency: Duration,
    /// Transport failure (connect, timeout, reset, truncated body), already redacted.
    pub error: Option<String>,
    pub retry_after: Option<String>,
    pub called_at: chrono::DateTime<chrono::Utc>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Why a provider stops taking calls for the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The account's quota or credits are used up.
    Quota,
    /// The key is wrong: every further call would fail the same way.
    Auth,
}

/// Reads a final answer for a provider-wide stop (e.g. BuiltWith's 403 says which).
pub type StopSignal = fn(u16, &[u8]) -> Option<Stop>;

/// How to reach one provider.
#[derive(Clone)]
pub struct Endpoint {
    pub provider: ProviderId,
    /// `None`: calls carry absolute URLs (news feeds at their own hosts).
    pub base_url: Option<url::Url>,
    /// (query parameter, key) for providers that take a key in the query string.
    key: Option<(&'static str, String)>,
    pub settings: ProviderSettings,
    pub stop_signal: StopSignal,
    /// The session every call needs first (Yahoo Finance's cookie and crumb).
    pub session: Option<session::SessionSpec>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url.as_ref().map(url::Url::as_str))
            .field("key", &self.key.as_ref().map(|(param, _)| (param, "***")))
            .finish()
    }
}

impl Endpoint {
    pub fn new(
        provider: ProviderId,
        base_url: Option<url::Url>,
        key: Option<(&'static str, String)>,
        settings: ProviderSettings,
        stop_signal: StopSignal,
    ) -> Self {
        Self { provider, base_url, key, settings, stop_signal, session: None }
    }

    /// Calls of this provider first get a session from `spec`, and send it.
    pub fn with_session(mut self, spec: session::SessionSpec) -> Self {
        self.session = Some(spec);
        self
    }

    /// Removes the key from any text (errors may echo URLs or bodies), as written
    /// and as it appears URL-encoded in a query string.
    pub fn redact(&self, text: &str) -> String {
        match &self.key {
            Some((_, key)) if !key.is_empty() => {
                let encoded: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
                text.replace(key.as_str(), "***").replace(&encoded, "***")
            }
            _ => text.to_string(),
        }
    }

    /// A body with the key removed, if it holds it (a provider echoing the request).
    fn redact_body(&self, body: Bytes) -> Bytes {
        match &self.key {
            Some((_, key)) if !key.is_empty() && body.windows(key.len()).any(|w| w == key.as_bytes()) => {
                Bytes::from(self.redact(&String::from_utf8_lossy(&body)))
            }
            _ => body,
        }
    }
}

/// One attempt of a call, as the ledger records it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: u32,
    pub reply: Reply,
    /// Waited before this attempt (backoff or `Retry-After`; rate-limit waits not included).
    pub waited: Duration,
    pub cost_usd: f64,
    /// A request of the provider's session handshake, made for this call (its endpoint
    /// name, e.g. `session_crumb`), not the call itself; never billed.
    pub session: Option<&'static str>,
    /// The page of the answer it asked for (1 unless the call pages).
    pub page: u32,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The run was stopped (SIGINT/SIGTERM) while the call waited to go out or to
    /// try again: nothing was paid for it, a resume asks it.
    Stopped,
    /// The last attempt holds the answer, for the parser.
    Answered,
    /// Transient failures until the retry policy gave up; the reason.
    GaveUp(String),
    /// Not (or no longer) sent: breaker open, quota, budget, provider stopped.
    Skipped(Outcome, String),
}

/// Everything that happened to one call.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub attempts: Vec<Attempt>,
    pub ending: Ending,
}

impl Exchange {
    /// The reply to parse, when the call was answered: the last attempt's — or, for a
    /// call answered in several pages, every page's final answer in page order, the
    /// bodies as received joined into one JSON array (`[page 1, page 2, …]`).
    pub fn answer(&self) -> Option<std::borrow::Cow<'_, Reply>> {
        if self.ending != Ending::Answered {
            return None;
        }
        let last = self.attempts.last()?;
        if last.page <= 1 || !last.reply.is_success() {
            return Some(std::borrow::Cow::Borrowed(&last.reply));
        }
        let pages: Vec<&Reply> = (1..=last.page)
            .filter_map(|page| self.attempts.iter().rev().find(|a| a.page == page && a.session.is_none()))
            .map(|a| &a.reply)
            .collect();
        let mut combined = last.reply.clone();
        combined.body = join_pages(pages.iter().map(|r| r.body.as_ref()));
        combined.latency = pages.iter().map(|r| r.latency).sum();
        Some(std::borrow::Cow::Owned(combined))
    }

    pub fn waited(&self) -> Duration {
        self.attempts.iter().map(|a| a.waited).sum()
    }
}

/// The bodies of a paged answer as one JSON array, each byte for byte as received.
pub fn join_pages<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = vec![b'['];
    for (i, body) in bodies.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body);
    }
    out.push(b']');
    Bytes::from(out)
}

/// Per-provider state shared by every task of the run.
struct Lane {
    endpoint: Endpoint,
    /// Its own client: connect timeout and connection pool per provider.
    http: reqwest::Client,
    limiter: RateLimiter,
    /// Endpoints paced on their own (BuiltWith's Free API), by endpoint name.
    endpoint_limiters: std::collections::BTreeMap<String, RateLimiter>,
    breaker: CircuitBreaker,
    stopped: Mutex<Option<(Outcome, String)>>,
    session: Option<session::Session>,
}

impl Lane {
    fn stopped(&self) -> Option<(Outcome, String)> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stop(&self, outcome: Outcome, reason: String) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if stopped.is_none() {
            tracing::warn!(
                provider = self.endpoint.provider.name(),
                "{}: stopped for this run: {reason}",
                self.endpoint.provider.name()
            );
            *stopped = Some((outcome, reason));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("no endpoint configured for provider {0}")]
    NoEndpoint(&'static str),
}

/// Calls already made today per provider (earlier runs of the same date), for the daily quotas.
pub type UsedToday = std::collections::BTreeMap<ProviderId, u64>;

/// Sends calls with at most `concurrency` requests on the wire across all providers.
pub struct Fetcher {
    lanes: Vec<Lane>,
    budget: Budget,
    clock: Arc<dyn Clock>,
    concurrency: usize,
    /// Requests on the wire at once. A call waiting out a backoff holds no slot,
    /// so a burst of retries cannot starve the calls behind it.
    slots: tokio::sync::Semaphore,
    /// Once cancelled, no new call starts and no call waits any longer (rate
    /// limit, request slot, backoff); requests already on the wire finish.
    stop: CancellationToken,
}

/// Where a finished call is made durable. The call path hands every exchange to
/// it and keeps the call's request slot until it returns, so calls answered but
/// not yet durable never outnumber the slots: a crash loses at most `concurrency`.
pub trait Keep: Sync {
    fn keep<'a>(&'a self, call: &'a Call, exchange: &'a Exchange) -> BoxFuture<'a, Result<(), String>>;
}

/// Keeps nothing: for callers that only want the exchanges.
pub struct KeepNothing;

impl Keep for KeepNothing {
    fn keep<'a>(&'a self, _: &'a Call, _: &'a Exchange) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A finished call that could not be kept (the journal failed).
#[derive(Debug, thiserror::Error)]
#[error("{provider} {endpoint} {domain}: the answer could not be kept: {message}")]
pub struct KeepError {
    pub provider: &'static str,
    pub endpoint: &'static str,
    pub domain: String,
    pub message: String,
}

/// Calls under way at once (most of them waiting) per request slot.
const CALLS_PER_SLOT: usize = 8;

/// Sessions one call may renew after refusals (each of a session that had worked).
pub const MAX_RENEWALS: u32 = 3;

impl Fetcher {
    pub fn new(
        endpoints: Vec<Endpoint>,
        concurrency: usize,
        budget: Budget,
        used_today: &UsedToday,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FetchError> {
        let mut lanes = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let agent = match &endpoint.session {
                Some(spec) => spec.user_agent,
                None => concat!("partnerforge/", env!("CARGO_PKG_VERSION")),
            };
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(endpoint.settings.connect_timeout_secs))
                .user_agent(agent)
                .pool_max_idle_per_host(concurrency.max(1))
                .build()
                .map_err(|e| FetchError::Client(e.without_url().to_string()))?;
            let used = used_today.get(&endpoint.provider).copied().unwrap_or(0);
            lanes.push(Lane {
                limiter: RateLimiter::new(&endpoint.settings.rate, used),
                endpoint_limiters: endpoint
                    .settings
                    .endpoint_rates
                    .iter()
                    .map(|(name, rate)| (name.clone(), RateLimiter::new(rate, 0)))
                    .collect(),
                breaker: CircuitBreaker::new(endpoint.settings.breaker.clone()),
                stopped: Mutex::new(None),
                session: endpoint.session.clone().map(session::Session::new),
                http,
                endpoint,
            });
        }
        let concurrency = concurrency.max(1);
        let stop = CancellationToken::new();
        Ok(Self { lanes, budget, clock, concurrency, slots: tokio::sync::Semaphore::new(concurrency), stop })
    }

    fn lane(&self, provider: ProviderId) -> Result<&Lane, FetchError> {
        self.lanes.iter().find(|l| l.endpoint.provider == provider).ok_or(FetchError::NoEndpoint(provider.name()))
    }

    /// Each provider's circuit: its state now and how many times it opened this run.
    pub fn circuits(&self) -> std::collections::BTreeMap<ProviderId, (&'static str, u64)> {
        self.lanes.iter().map(|l| (l.endpoint.provider, (l.breaker.state().name(), l.breaker.times_opened()))).collect()
    }

    pub fn endpoint(&self, provider: ProviderId) -> Result<&Endpoint, FetchError> {
        Ok(&self.lane(provider)?.endpoint)
    }

    /// Stops when `token` is cancelled (a graceful shutdown).
    pub fn stop_on(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Whether a stop was asked for: `execute` then returns only the calls it started.
    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The circuit breaker's state for a provider ("closed", "open", "half-open").
    pub fn breaker_state(&self, provider: ProviderId) -> Option<&'static str> {
        self.lane(provider).ok().map(|l| l.breaker.state().name())
    }

    /// Makes every call, at most `concurrency` requests at once; exchanges come back in call
    /// order. After a stop, only the calls that had started come back.
    pub async fn execute(&self, calls: Vec<Call>) -> Result<Vec<(Call, Exchange)>, FetchError> {
        let mut done: Vec<(usize, Call, Exchange)> = self
            .stream(calls.into_iter().enumerate(), &KeepNothing)?
            .filter_map(|r| futures::future::ready(r.ok()))
            .collect()
            .await;
        done.sort_by_key(|(i, _, _)| *i);
        Ok(done.into_iter().map(|(_, call, exchange)| (call, exchange)).collect())
    }

    /// The calls' exchanges as they finish and are kept, each with the key it came
    /// with. Calls are taken from `calls` only as request slots free up, so a lazy
    /// iterator is never run far ahead. After a stop, calls not yet started never
    /// start (they are left for a resume), and calls waiting to go out end `Stopped`.
    pub fn stream<'a, K: 'a>(
        &'a self,
        calls: impl IntoIterator<Item = (K, Call)> + 'a,
        keep: &'a dyn Keep,
    ) -> Result<impl futures::Stream<Item = Result<(K, Call, Exchange), KeepError>> + 'a, FetchError> {
        let stop = self.stop.clone();
        Ok(futures::stream::iter(calls)
            .take_while(move |_| futures::future::ready(!stop.is_cancelled()))
            .map(move |(key, call)| async move {
                let (exchange, slot) = self.call(&call).await;
                let kept = keep.keep(&call, &exchange).await;
                // The slot of a call that was answered is free only once its answer is kept.
                drop(slot);
                match kept {
                    Ok(()) => Ok((key, call, exchange)),
                    Err(message) => Err(KeepError {
                        provider: call.provider.name(),
                        endpoint: call.endpoint,
                        domain: call.domain.clone(),
                        message,
                    }),
                }
            })
            .buffer_unordered(self.concurrency * CALLS_PER_SLOT))
    }

    /// Waits for `wait`, unless the run is stopped first (`None`).
    async fn wait_unless_stopped<T>(&self, wait: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            value = wait => Some(value),
        }
    }

    /// One call through every stage, with retries. An answered call comes back with
    /// the request slot of its last attempt still held.
    async fn call(&self, call: &Call) -> (Exchange, Option<tokio::sync::SemaphorePermit<'_>>) {
        let Ok(lane) = self.lane(call.provider) else {
            let ending = Ending::Skipped(Outcome::Failed, "no endpoint".into());
            return (Exchange { attempts: Vec::new(), ending }, None);
        };
        let settings = &lane.endpoint.settings;
        // An endpoint with a rate of its own is paced by it alone.
        let limiter = lane.endpoint_limiters.get(call.endpoint).unwrap_or(&lane.limiter);
        let cost = settings.cost(call.endpoint);
        let jitter_key = format!("{}/{}/{}", call.provider.name(), call.endpoint, call.domain);
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut waited = Duration::ZERO;
        let mut wait_before = Duration::ZERO;
        let mut request = std::borrow::Cow::Borrowed(call);
        // Rounds made: attempts of the call, and handshakes that failed on its behalf.
        let mut rounds: u32 = 0;
        // Sessions this call renewed after a refusal.
        let mut renewals: u32 = 0;
        // A paged answer: the page asked for, the rounds and waits before it (each page has
        // the retry policy to itself), and the offsets already asked (an answer that points
        // back to one would never end).
        let (mut page, mut page_from, mut waited_from) = (1u32, 0u32, Duration::ZERO);
        let mut offsets: Vec<String> = Vec::new();
        loop {
            let skipped = |outcome, reason: String, attempts| {
                (Exchange { attempts, ending: Ending::Skipped(outcome, reason) }, None)
            };
            let stopped = |attempts| (Exchange { attempts, ending: Ending::Stopped }, None);
            if let Some((outcome, reason)) = lane.stopped() {
                return skipped(outcome, reason, attempts);
            }
            // A provider with a session: the session first — made (or renewed) by one call
            // at a time, its requests paced by the provider's rate limit — and only then
            // this call's own place in the limiter and a request slot, so that calls waiting
            // for the session hold neither. (The handshake itself takes no slot: one request
            // at a time per provider, beside the calls on the wire.)
            let held = match &lane.session {
                None => None,
                Some(session) => {
                    let pace = || async {
                        match self.wait_unless_stopped(limiter.acquire(self.clock.as_ref())).await {
                            None => Err(session::Failure::Stopped),
                            Some(Err(quota)) => {
                                Err(session::Failure::Quota(format!("daily quota of {} calls used up", quota.per_day)))
                            }
                            Some(Ok(())) => Ok(()),
                        }
                    };
                    let timeout = Duration::from_secs(settings.timeout_secs);
                    let before = attempts.len();
                    let got = session.get(&lane.http, timeout, pace, rounds + 1, &mut attempts).await;
                    for attempt in attempts.iter_mut().skip(before) {
                        attempt.page = page;
                    }
                    match got {
                        Ok(held) => Some(held),
                        Err(session::Failure::Stopped) => return stopped(attempts),
                        Err(session::Failure::Quota(reason)) => {
                            return skipped(Outcome::SkippedQuota, reason, attempts);
                        }
                        Err(session::Failure::Refused(reason)) => {
                            let reason = format!("the session was refused: {reason}");
                            lane.stop(Outcome::SkippedAuth, reason.clone());
                            return skipped(Outcome::SkippedAuth, reason, attempts);
                        }
                        Err(session::Failure::Transient(reason)) => {
                            // A round of this call that failed: retried as a failed attempt is.
                            rounds += 1;
                            let last = attempts.last().map(|a| &a.reply);
                            if last.and_then(|r| r.status) == Some(429) {
                                lane.breaker.on_neutral();
                            } else {
                                lane.breaker.on_failure(self.clock.as_ref());
                            }
                            let retry_after = last
                                .and_then(|r| r.retry_after.as_deref())
                                .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now().timestamp()));
                            let jitter = retry::jitter(&jitter_key, rounds);
                            match retry::decide(
                                &settings.retry,
                                rounds - page_from,
                                waited - waited_from,
                                retry_after,
                                jitter,
                            ) {
                                retry::Decision::Retry(wait) => {
                                    if self.wait_unless_stopped(self.clock.sleep(wait)).await.is_none() {
                                        return stopped(attempts);
                                    }
                                    waited += wait;
                                    wait_before = wait;
                                    continue;
                                }
                                retry::Decision::GiveUp(why) => {
                                    let ending = Ending::GaveUp(format!("no session: {reason}; {why}"));
                                    return (Exchange { attempts, ending }, None);
                                }
                            }
                        }
                    }
                }
            };
            // The quota refuses every call past it; calls that already hold a place still go.
            match self.wait_unless_stopped(limiter.acquire(self.clock.as_ref())).await {
                None => return stopped(attempts),
                Some(Err(quota)) => {
                    let reason = format!("daily quota of {} calls used up", quota.per_day);
                    return skipped(Outcome::SkippedQuota, reason, attempts);
                }
                Some(Ok(())) => {}
            }
            let reservation = match self.budget.reserve(call.provider, cost) {
                Ok(r) => r,
                Err(over) => {
                    limiter.give_back();
                    return skipped(Outcome::SkippedBudget, over.to_string(), attempts);
                }
            };
            // A request slot, then the provider's state again: another call may have
            // stopped the provider or opened its circuit while this one waited.
            let Some(slot) = self.wait_unless_stopped(self.slots.acquire()).await else {
                self.budget.release(reservation);
                limiter.give_back();
                return stopped(attempts);
            };
            if let Some((outcome, reason)) = lane.stopped() {
                self.budget.release(reservation);
                limiter.give_back();
                return skipped(outcome, reason, attempts);
            }
            if !lane.breaker.admit(self.clock.as_ref()) {
                self.budget.release(reservation);
                limiter.give_back();
                let reason = format!("circuit open after {} consecutive failures", settings.breaker.failures_to_open);
                return skipped(Outcome::SkippedCircuit, reason, attempts);
            }
            let reply = Self::send(lane, &request, held.as_ref()).await;
            let charged = reply.is_success();
            // A paged endpoint bills the credits its page holds (none for an empty one).
            let paged = call.pager.filter(|_| charged).map(|pager| (pager, (pager.read)(&reply.body)));
            let billed = paged.as_ref().map_or(cost, |(_, read)| f64::from(read.credits) * cost);
            if charged {
                self.budget.charge(reservation, billed);
            } else {
                self.budget.release(reservation);
            }
            rounds += 1;
            let number = rounds;
            let kind = retry::kind(reply.status);
            let retry_after =
                reply.retry_after.as_deref().and_then(|v| retry::parse_retry_after(v, chrono::Utc::now().timestamp()));
            let status = reply.status;
            let stop = status.and_then(|s| (lane.endpoint.stop_signal)(s, &reply.body));
            let refused = (status == Some(401)).then(|| session_refusal(&reply.body));
            if let (Some(session), Some(held), Some(s)) = (&lane.session, &held, status)
                && s != 401
                && kind == retry::Kind::Final
            {
                session.proved(held.generation); // answered: the provider took the session
            }
            attempts.push(Attempt {
                number,
                reply,
                waited: wait_before,
                cost_usd: if charged { billed } else { 0.0 },
                session: None,
                page,
            });
            if let (Some(refusal), Some(session), Some(held)) = (refused, &lane.session, &held) {
                // Refused for its session: a new one and the call again at once — unless
                // this call already renewed and the session refused was never taken (a new
                // session refused: the provider refuses sessions). A session that went stale
                // after it worked is renewed again, up to a bound.
                lane.breaker.on_success();
                if (renewals == 0 || session.was_proved(held.generation)) && renewals < MAX_RENEWALS {
                    renewals += 1;
                    session.invalidate(held.generation).await;
                    drop(slot);
                    wait_before = Duration::ZERO;
                    continue;
                }
                let reason = format!("the session was refused: HTTP 401 {refusal} again after a new cookie and crumb");
                lane.stop(Outcome::SkippedAuth, reason);
                return (Exchange { attempts, ending: Ending::Answered }, slot.ok());
            }
            if kind == retry::Kind::Final {
                // Any answer, even a 404, shows the provider is up.
                lane.breaker.on_success();
                if status == Some(403)
                    && let Some(query) = request.fallback_on_403.clone()
                {
                    drop(slot);
                    let mut fallback = call.clone();
                    fallback.query = query;
                    fallback.fallback_on_403 = None;
                    request = std::borrow::Cow::Owned(fallback);
                    wait_before = Duration::ZERO;
                    continue;
                }
                match stop {
                    Some(Stop::Quota) => {
                        lane.stop(Outcome::SkippedQuota, format!("quota used up (HTTP {})", status.unwrap_or(0)))
                    }
                    Some(Stop::Auth) => lane
                        .stop(Outcome::SkippedAuth, format!("the API key was refused (HTTP {})", status.unwrap_or(0))),
                    None => {}
                }
                // A body the pager cannot read is the last page: the parser reports it.
                if let (Some((pager, PageRead { next: Ok(Some(next)), .. })), None) = (paged, stop) {
                    if page >= pager.max_pages || offsets.contains(&next) {
                        let why = if page >= pager.max_pages {
                            format!("the answer did not end after {page} pages")
                        } else {
                            format!("page {} pointed back to {}={next}", page, pager.param)
                        };
                        return (Exchange { attempts, ending: Ending::GaveUp(why) }, None);
                    }
                    drop(slot);
                    let mut next_page = call.clone();
                    next_page.fallback_on_403 = None;
                    next_page.query.retain(|(name, _)| *name != pager.param);
                    next_page.query.push((pager.param, next.clone()));
                    offsets.push(next);
                    request = std::borrow::Cow::Owned(next_page);
                    (page, page_from, waited_from) = (page + 1, rounds, waited);
                    wait_before = Duration::ZERO;
                    continue;
                }
                return (Exchange { attempts, ending: Ending::Answered }, slot.ok());
            }
            drop(slot);
            // A 429 is the provider pacing us, not failing: the retry waits it out,
            // and it does not count toward opening the circuit.
            if status == Some(429) {
                lane.breaker.on_neutral();
            } else {
                lane.breaker.on_failure(self.clock.as_ref());
            }
            let jitter = retry::jitter(&jitter_key, number);
            match retry::decide(&settings.retry, number - page_from, waited - waited_from, retry_after, jitter) {
                retry::Decision::Retry(wait) => {
                    if self.wait_unless_stopped(self.clock.sleep(wait)).await.is_none() {
                        return stopped(attempts);
                    }
                    waited += wait;
                    wait_before = wait;
                }
                retry::Decision::GiveUp(reason) => {
                    return (Exchange { attempts, ending: Ending::GaveUp(reason) }, None);
                }
            }
        }
    }

    async fn send(lane: &Lane, call: &Call, held: Option<&session::Held>) -> Reply {
        let endpoint = &lane.endpoint;
        let absolute = url::Url::parse(&call.path).ok().filter(|u| u.scheme() == "http" || u.scheme() == "https");
        let mut url = match (&endpoint.base_url, absolute) {
            // An absolute URL goes to its own host, or through the base as /feeds/{host}{path}.
            (None, Some(absolute)) => absolute,
            (Some(base), Some(absolute)) => {
                let mut url = base.clone();
                let base_path = url.path().trim_end_matches('/').to_string();
                url.set_path(&format!("{base_path}/feeds/{}{}", absolute.host_str().unwrap_or(""), absolute.path()));
                url.set_query(absolute.query());
                url
            }
            (Some(base), None) => {
                let mut url = base.clone();
                let base_path = url.path().trim_end_matches('/').to_string();
                url.set_path(&format!("{base_path}{}", call.path));
                url
            }
            (None, None) => {
                let error = format!("{} has no base URL for {}", endpoint.provider.name(), call.path);
                return Reply {
                    status: None,
                    body: Bytes::new(),
                    latency: Duration::ZERO,
                    error: Some(error),
                    retry_after: None,
                    called_at: chrono::Utc::now(),
                };
            }
        };
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &call.query {
                pairs.append_pair(k, v);
            }
            if let Some((param, key)) = &endpoint.key {
                pairs.append_pair(param, key);
            }
            if let (Some(held), Some(spec)) = (held, &endpoint.session) {
                pairs.append_pair(spec.crumb_param, &held.crumb);
            }
        }
        let mut request = lane
            .http
            .get(url)
            .timeout(Duration::from_secs(endpoint.settings.timeout_secs))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(held) = held {
            request = request.header(reqwest::header::COOKIE, &held.cookie);
        }
        let (mut reply, _) = get(request, |text| endpoint.redact(text)).await;
        // Nothing downstream (parsers, the journal, raw bodies) ever sees the key.
        reply.body = endpoint.redact_body(reply.body);
        reply
    }
}

/// Sends a request and reads its whole answer: the reply (a transport failure, or a body
/// that broke off whatever the status said, in `error`, passed through `redact`) and the
/// cookies the answer set.
pub(crate) async fn get(request: reqwest::RequestBuilder, redact: impl Fn(&str) -> String) -> (Reply, Vec<String>) {
    let called_at = chrono::Utc::now();
    let started = Instant::now();
    let (mut status, mut retry_after, mut set) = (None, None, Vec::new());
    let result = async {
        let response = request.send().await?;
        status = Some(response.status().as_u16());
        let headers = response.headers();
        retry_after = headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string);
        set = headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        response.bytes().await
    }
    .await;
    let latency = started.elapsed();
    let reply = match result {
        Ok(body) => Reply { status, body, latency, error: None, retry_after, called_at },
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connection failed"
            } else if e.is_body() || e.is_decode() {
                "body cut short"
            } else {
                "request failed"
            };
            let detail = redact(&e.without_url().to_string());
            Reply {
                status: None,
                body: Bytes::new(),
                latency,
                error: Some(format!("{kind}: {detail}")),
                retry_after,
                called_at,
            }
        }
    };
    (reply, set)
}

/// What a 401 said, for the message that stops a provider: the error's description
/// when the body is JSON that has one, else its first line, short.
fn session_refusal(body: &[u8]) -> String {
    fn find(value: &serde_json::Value) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .find(|(k, v)| matches!(k.as_str(), "description" | "message") && v.is_string())
                .and_then(|(_, v)| v.as_str().map(str::to_string))
                .or_else(|| map.values().find_map(find)),
            serde_json::Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    let said = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| find(&v)).unwrap_or_else(|| {
        String::from_utf8_lossy(body).lines().next().unwrap_or("").trim().chars().take(160).collect()
    });
    if said.is_empty() { String::new() } else { format!("({said:?})") }
}
