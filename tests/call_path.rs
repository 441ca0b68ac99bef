//! The call path against local HTTP servers started in the test: retries and
//! `Retry-After`, timeouts, truncated and malformed bodies, quota 403s, the
//! circuit breaker, budgets under concurrency, and the rate limiter measured.
//! Waiting goes through a manual clock, so no test sleeps for a backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Response, StatusCode, header};
use axum::routing::get;

use partnerforge::config::{BudgetSettings, ProviderId, ProviderSettings, RateSettings, RetrySettings};
use partnerforge::fetch::budget::Budget;
use partnerforge::fetch::clock::{Clock, ManualClock, TokioClock};
use partnerforge::fetch::{Call, Ending, Endpoint, Exchange, Fetcher, Outcome};

/// What the server answers to its n-th request (0-based).
type Script = dyn Fn(usize) -> Response<Body> + Send + Sync;

struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

async fn serve(script: impl Fn(usize) -> Response<Body> + Send + Sync + 'static) -> Server {
    serve_after(Duration::ZERO, script).await
}

/// A server that takes `delay` (tokio's clock, never blocking a thread) before each answer.
async fn serve_after(delay: Duration, script: impl Fn(usize) -> Response<Body> + Send + Sync + 'static) -> Server {
    let script: Arc<Script> = Arc::new(script);
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(get(move || {
        let (script, hits) = (script.clone(), h.clone());
        async move {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            script(n)
        }
    }));
    listen(app, hits).await
}

/// A server that takes every request and never answers.
async fn serve_never() -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(get(move || {
        h.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Response<Body>>()
    }));
    listen(app, hits).await
}

async fn listen(app: Router, hits: Arc<AtomicUsize>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, hits }
}

fn reply(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn with_retry_after(status: u16, value: &str) -> Response<Body> {
    let mut r = reply(status, "{}");
    r.headers_mut().insert(header::RETRY_AFTER, value.parse().unwrap());
    r
}

fn settings() -> ProviderSettings {
    ProviderSettings {
        retry: RetrySettings {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 60_000,
            max_total_wait_ms: 120_000,
            min_delay_ms: 100,
        },
        costs: [("domain".to_string(), 0.10)].into(),
        ..Default::default()
    }
}

fn fetcher(server: &Server, settings: ProviderSettings, concurrency: usize, clock: Arc<dyn Clock>) -> Fetcher {
    let budget = Budget::new([(ProviderId::BuiltWith, settings.budget.clone())].into(), &Default::default());
    let endpoint = Endpoint::new(
        ProviderId::BuiltWith,
        Some(server.base.parse().unwrap()),
        Some(("KEY", "secret-key-123".into())),
        settings,
        partnerforge::providers::stop_signal_403,
    );
    Fetcher::new(vec![endpoint], concurrency, budget, &Default::default(), clock).unwrap()
}

fn calls(n: usize) -> Vec<Call> {
    (0..n)
        .map(|i| Call {
            provider: ProviderId::BuiltWith,
            endpoint: "domain",
            domain: format!("site-{i}.com"),
            modules: partnerforge::fetch::Feeds::of("m01"),
            path: "/v21/api.json".into(),
            query: vec![("LOOKUP", format!("site-{i}.com"))],
            fallback_on_403: None,
            pager: None,
        })
        .collect()
}

async fn one(server: &Server, settings: ProviderSettings, clock: Arc<ManualClock>) -> Exchange {
    let f = fetcher(server, settings, 1, clock);
    f.execute(calls(1)).await.unwrap().remove(0).1
}

fn statuses(e: &Exchange) -> Vec<Option<u16>> {
    e.attempts.iter().map(|a| a.reply.status).collect()
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_is_honoured() {
    let server = serve(|n| if n == 0 { with_retry_after(429, "7") } else { reply(200, r#"{"Results":[]}"#) }).await;
    let clock = Arc::new(ManualClock::default());
    let e = one(&server, settings(), clock.clone()).await;
    assert_eq!(e.ending, Ending::Answered);
    assert_eq!(statuses(&e), [Some(429), Some(200)]);
    assert_eq!(e.attempts[1].waited, Duration::from_secs(7));
    assert_eq!(clock.now(), Duration::from_secs(7), "the only wait was the one asked for");
    assert_eq!((e.attempts[0].cost_usd, e.attempts[1].cost_usd), (0.0, 0.10), "only the answer is paid");
}

#[tokio::test]
async fn a_429_with_retry_after_as_an_http_date_is_honoured() {
    let server = serve(|n| {
        if n == 0 {
            let at = chrono::Utc::now() + chrono::Duration::seconds(30);
            with_retry_after(429, &at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        } else {
            reply(200, "{}")
        }
    })
    .await;
    let e = one(&server, settings(), Arc::new(ManualClock::default())).await;
    let waited = e.attempts[1].waited.as_secs();
    assert!((28..=30).contains(&waited), "waited {waited} s");
}

#[tokio::test]
async fn retry_after_zero_still_waits_the_floor_and_a_long_one_gives_up() {
    let server = serve(|_| with_retry_after(503, "0")).await;
    let e = one(&server, settings(), Arc::new(ManualClock::default())).await;
    assert_eq!(statuses(&e), [Some(503); 3], "attempts are bounded");
    assert!(e.attempts[1..].iter().all(|a| a.waited == Duration::from_millis(100)), "{:?}", e.attempts);
    assert!(matches!(&e.ending, Ending::GaveUp(r) if r.contains("3 attempts")), "{:?}", e.ending);

    let server = serve(|_| with_retry_after(429, "3600")).await;
    let clock = Arc::new(ManualClock::default());
    let e = one(&server, settings(), clock.clone()).await;
    assert_eq!(statuses(&e), [Some(429)]);
    assert!(matches!(&e.ending, Ending::GaveUp(r) if r.contains("3600")), "{:?}", e.ending);
    assert_eq!(clock.now(), Duration::ZERO, "gave up instead of stalling");
}

#[tokio::test]
async fn a_500_then_success_backs_off_with_jitter() {
    let server = serve(|n| if n < 2 { reply(500, "oops") } else { reply(200, "{}") }).await;
    let e = one(&server, settings(), Arc::new(ManualClock::default())).await;
    assert_eq!(statuses(&e), [Some(500), Some(500), Some(200)]);
    assert!(e.attempts[1].waited <= Duration::from_secs(1) && e.attempts[1].waited >= Duration::from_millis(100));
    assert!(e.attempts[2].waited <= Duration::from_secs(2));
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    for status in [400, 401, 403, 404] {
        let server = serve(move |_| reply(status, r#"{"Errors":[{"Message":"Invalid LOOKUP"}]}"#)).await;
        let e = one(&server, settings(), Arc::new(ManualClock::default())).await;
        assert_eq!(statuses(&e), [Some(status)], "{status}");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_timeout_is_retried_then_given_up() {
    // The server never answers: the client's own timeout ends every attempt.
    let server = serve_never().await;
    let mut s = settings();
    s.timeout_secs = 1;
    s.retry.max_attempts = 2;
    let e = one(&server, s, Arc::new(ManualClock::default())).await;
    assert_eq!(statuses(&e), [None, None]);
    assert!(e.attempts[0].reply.error.as_deref().unwrap().starts_with("timeout"), "{:?}", e.attempts[0].reply.error);
    assert!(matches!(e.ending, Ending::GaveUp(_)));
}

#[tokio::test]
async fn a_truncated_body_is_retried_and_a_malformed_one_is_answered() {
    // The connection drops halfway through the body.
    let server = serve(|n| {
        if n == 0 {
            let body =
                partnerforge::simulate::faults::cut_short(bytes::Bytes::from_static(br#"{"Results":[{"Result":{}}]}"#));
            Response::builder().status(200).body(body).unwrap()
        } else {
            reply(200, "{}")
        }
    })
    .await;
    let e = one(&server, settings(), Arc::new(ManualClock::default())).await;
    assert_eq!(statuses(&e), [None, Some(200)], "{:?}", e.attempts[0].reply.error);

    let server = serve(|_| reply(200, "<html>maintenance</html>")).await;
    let e = one(&server, settings(), Arc::new(ManualClock::default())).await;
    assert_eq!(e.ending, Ending::Answered, "a 200 is an answer; the parser calls it invalid");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_403_for_one_country_falls_back_to_world_once() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().fallback(get(move |uri: axum::http::Uri| {
        let log = log.clone();
        async move {
            let query = uri.query().unwrap_or("").to_string();
            log.lock().unwrap().push(query.clone());
            if query.contains("country=us") {
                reply(403, r#"{"meta":{"status":"Error","error_code":403}}"#)
            } else {
                reply(200, "{}")
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server =
        Server { base: format!("http://{}", listener.local_addr().unwrap()), hits: Arc::new(AtomicUsize::new(0)) };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let f = fetcher(&server, settings(), 1, Arc::new(ManualClock::default()));
    let mut call = calls(1).remove(0);
    call.query = vec![("country", "us".into())];
    call.fallback_on_403 = Some(vec![("country", "world".into())]);
    let e = f.execute(vec![call.clone(), call]).await.unwrap();
    assert_eq!(statuses(&e[0].1), [Some(403), Some(200)]);
    assert_eq!(e[0].1.ending, Ending::Answered);
    assert_eq!(e[1].1.ending, Ending::Answered, "the 403 did not stop the provider");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen.iter().filter(|q| q.contains("country=us")).count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|q| q.contains("country=world")).count(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_quota_403_stops_the_provider_without_more_calls() {
    let server = serve(|_| reply(403, r#"{"Errors":[{"Message":"API Key has exceeded its daily quota"}]}"#)).await;
    let f = fetcher(&server, settings(), 1, Arc::new(ManualClock::default()));
    let done = f.execute(calls(5)).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "one 403, then no call");
    assert_eq!(done[0].1.ending, Ending::Answered);
    for (_, e) in &done[1..] {
        assert!(matches!(e.ending, Ending::Skipped(Outcome::SkippedQuota, _)), "{:?}", e.ending);
        assert!(e.attempts.is_empty());
    }
}

#[tokio::test]
async fn the_daily_quota_is_counted_before_the_provider_says_so() {
    let server = serve(|_| reply(200, "{}")).await;
    let mut s = settings();
    s.rate = RateSettings { per_day: Some(3), ..Default::default() };
    let f = fetcher(&server, s, 2, Arc::new(ManualClock::default()));
    let done = f.execute(calls(6)).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    let skipped = done.iter().filter(|(_, e)| matches!(e.ending, Ending::Skipped(Outcome::SkippedQuota, _))).count();
    assert_eq!(skipped, 3);
}

#[tokio::test]
async fn the_circuit_opens_fails_fast_half_opens_and_closes() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let server = serve(move |_| if flag.load(Ordering::SeqCst) { reply(500, "down") } else { reply(200, "{}") }).await;
    let mut s = settings();
    s.retry.max_attempts = 1;
    s.breaker.failures_to_open = 3;
    s.breaker.cooldown_secs = 60;
    s.breaker.successes_to_close = 2;
    let clock = Arc::new(ManualClock::default());
    let f = fetcher(&server, s, 1, clock.clone());

    let done = f.execute(calls(6)).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 3, "three failures open the circuit");
    assert!(done[3..].iter().all(|(_, e)| matches!(e.ending, Ending::Skipped(Outcome::SkippedCircuit, _))));
    assert_eq!(f.breaker_state(ProviderId::BuiltWith), Some("open"));

    failing.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    let done = f.execute(calls(3)).await.unwrap();
    assert!(done.iter().all(|(_, e)| e.ending == Ending::Answered), "{done:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 6);
    assert_eq!(f.breaker_state(ProviderId::BuiltWith), Some("closed"));
}

#[tokio::test]
async fn throttling_does_not_open_the_circuit() {
    let server = serve(|_| with_retry_after(429, "0")).await;
    let mut s = settings();
    s.retry.max_attempts = 1;
    s.breaker.failures_to_open = 2;
    let f = fetcher(&server, s, 1, Arc::new(ManualClock::default()));
    f.execute(calls(5)).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 5, "every call went out");
    assert_eq!(f.breaker_state(ProviderId::BuiltWith), Some("closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_never_overshoot_a_budget() {
    // Answers take a little while, so the two tasks overlap.
    let server = serve_after(Duration::from_millis(5), |_| reply(200, "{}")).await;
    let mut s = settings();
    s.budget = BudgetSettings { per_run_usd: Some(0.70), per_month_usd: None, warn_at: 0.8 };
    let f = fetcher(&server, s, 2, Arc::new(TokioClock::default()));
    let done = f.execute(calls(20)).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 7, "exactly N = $0.70 / $0.10 calls");
    let skipped = done.iter().filter(|(_, e)| matches!(e.ending, Ending::Skipped(Outcome::SkippedBudget, _))).count();
    assert_eq!(skipped, 13);
}

#[tokio::test]
async fn the_rate_limit_spaces_every_call() {
    // The server notes the (manual) time of each request: the limiter's waits are the only thing moving it.
    let clock = Arc::new(ManualClock::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s2) = (clock.clone(), seen.clone());
    let server = serve(move |_| {
        s2.lock().unwrap().push(c.now());
        reply(200, "{}")
    })
    .await;
    let mut s = settings();
    s.rate = RateSettings { per_second: Some(10.0), ..Default::default() };
    let f = fetcher(&server, s, 1, clock.clone());
    // One call at a time, so each request is seen at the time its slot came (a manual
    // clock cannot order the wake-ups of waits that overlap).
    for call in calls(31) {
        f.execute(vec![call]).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 31);
    for (i, start) in seen.iter().enumerate() {
        let in_window = seen[i..].iter().take_while(|t| **t - *start < Duration::from_secs(1)).count();
        assert!(in_window <= 10, "{in_window} calls within one second from call {i}: {seen:?}");
    }
    // Evenly spaced at the limit (plus the limiter's 1 % margin), not in bursts.
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(100) && *g <= Duration::from_millis(102)), "{gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_share_one_rate_limit() {
    let clock = Arc::new(ManualClock::default());
    let server = serve(|_| reply(200, "{}")).await;
    let mut s = settings();
    s.rate = RateSettings { per_second: Some(10.0), ..Default::default() };
    let f = fetcher(&server, s, 8, clock.clone());
    f.execute(calls(31)).await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 31);
    // 31 calls at 10 a second need at least 30 intervals of waiting, however many tasks ask at once.
    assert!(clock.now() >= Duration::from_secs(3), "31 calls in {:?}", clock.now());
}

/// A Relationships page of `n` matches, saying whether more follow and from where.
fn relationships_page(n: usize, more: bool, next_skip: usize) -> String {
    let matches: Vec<String> = (0..n).map(|i| format!(r#"{{"Domain":"m{next_skip}-{i}.com"}}"#)).collect();
    format!(
        r#"{{"Relationships":[{{"Domain":"big.com","Identifiers":[{{"Type":"gtm","Value":"GTM-1","Matches":[{}]}}]}}],"Errors":[],"results":1100,"max_per_page":500,"more_results":{more},"next_skip":{next_skip}}}"#,
        matches.join(",")
    )
}

/// A server that runs `script` on (request number, query string), recording the queries.
async fn serve_queries(
    script: impl Fn(usize, &str) -> Response<Body> + Send + Sync + 'static,
) -> (Server, Arc<std::sync::Mutex<Vec<String>>>) {
    let script = Arc::new(script);
    let (hits, queries) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let (h, q) = (hits.clone(), queries.clone());
    let app = Router::new().fallback(get(move |axum::extract::RawQuery(query): axum::extract::RawQuery| {
        let (script, h, q) = (script.clone(), h.clone(), q.clone());
        async move {
            let query = query.unwrap_or_default();
            q.lock().unwrap().push(query.clone());
            script(h.fetch_add(1, Ordering::SeqCst), &query)
        }
    }));
    (listen(app, hits).await, queries)
}

fn relationships_call() -> Call {
    use partnerforge::providers::builtwith;
    Call::get(
        ProviderId::BuiltWith,
        builtwith::ENDPOINT_RELATIONSHIPS,
        "big.com",
        builtwith::relationships_request("big.com"),
    )
    .paged(builtwith::RELATIONSHIPS_PAGER)
}

fn relationships_settings(per_run_usd: Option<f64>) -> ProviderSettings {
    let mut s = settings();
    s.costs = [("relationships".to_string(), 0.05)].into();
    s.budget = BudgetSettings { per_run_usd, per_month_usd: None, warn_at: 0.8 };
    s
}

#[tokio::test]
async fn a_paged_call_follows_next_skip_to_its_last_page_each_page_retried_and_billed_by_its_credits() {
    // Page 1 (500 relationships), page 2 fails once then answers (500), page 3 is the last (100).
    let (server, queries) = serve_queries(|n, _| match n {
        0 => reply(200, &relationships_page(500, true, 500)),
        1 => reply(503, "{}"),
        2 => reply(200, &relationships_page(500, true, 1000)),
        _ => reply(200, &relationships_page(100, false, 0)),
    })
    .await;
    let clock = Arc::new(ManualClock::default());
    let f = fetcher(&server, relationships_settings(None), 2, clock);
    let (_, e) = f.execute(vec![relationships_call()]).await.unwrap().remove(0);
    assert_eq!(e.ending, Ending::Answered);
    let pages: Vec<(u32, u32, Option<u16>)> = e.attempts.iter().map(|a| (a.number, a.page, a.reply.status)).collect();
    assert_eq!(pages, [(1, 1, Some(200)), (2, 2, Some(503)), (3, 2, Some(200)), (4, 3, Some(200))]);
    let offsets: Vec<Option<String>> = queries
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.split('&').find_map(|p| p.strip_prefix("OFFSET=")).map(str::to_string))
        .collect();
    assert_eq!(offsets, [None, Some("500".into()), Some("500".into()), Some("1000".into())]);
    // One credit per 500 relationships a page holds; the failed request costs nothing.
    let costs: Vec<f64> = e.attempts.iter().map(|a| a.cost_usd).collect();
    assert_eq!(costs, [0.05, 0.0, 0.05, 0.05]);
    // The answer is every page, in order, as one JSON array the parser reads whole.
    let answer = e.answer().unwrap();
    let parsed = partnerforge::providers::builtwith::parse_relationships(&answer.body).unwrap();
    let partnerforge::providers::Answer::Data(related) = parsed else { panic!("{parsed:?}") };
    assert_eq!(related.len(), 1100);
}

#[tokio::test]
async fn a_paged_call_that_loops_or_crosses_the_budget_stops_without_paying_more() {
    // An answer that points back to an offset already read never ends: the call gives up.
    let (server, _) = serve_queries(|_, _| reply(200, &relationships_page(10, true, 500))).await;
    let f = fetcher(&server, relationships_settings(None), 1, Arc::new(ManualClock::default()));
    let (_, e) = f.execute(vec![relationships_call()]).await.unwrap().remove(0);
    assert_eq!(e.attempts.len(), 2, "{:?}", e.attempts);
    assert!(matches!(&e.ending, Ending::GaveUp(r) if r.contains("pointed back")), "{:?}", e.ending);
    assert!(e.answer().is_none());

    // A budget of two credits: the third page is not asked.
    let (server, queries) = serve_queries(|n, _| reply(200, &relationships_page(500, true, 500 * (n + 1)))).await;
    let f = fetcher(&server, relationships_settings(Some(0.10)), 1, Arc::new(ManualClock::default()));
    let (_, e) = f.execute(vec![relationships_call()]).await.unwrap().remove(0);
    assert_eq!(queries.lock().unwrap().len(), 2);
    assert!(matches!(&e.ending, Ending::Skipped(Outcome::SkippedBudget, _)), "{:?}", e.ending);
    assert_eq!(e.attempts.iter().map(|a| a.cost_usd).sum::<f64>(), 0.10);
}
