//! The simulated providers: an HTTP server that speaks BuiltWith's, SimilarWeb's
//! and Yahoo Finance's wire formats (paths, query parameters, key checks, error
//! envelopes) over the deterministic world in `world.rs`.
//!
//! It is what a run talks to when no API keys are configured (the embedded
//! default), and what `partnerforge simulate` serves on its own. It knows
//! nothing of the parsers: it answers as the real APIs do, ugly parts included.

pub mod faults;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use serde_json::{Value, json};

pub use world::World;

use crate::config::FaultSettings;
use crate::providers::builtwith;

/// The API keys the simulator accepts, like the real providers' accounts.
#[derive(Debug, Clone)]
pub struct Keys {
    pub builtwith: String,
    pub similarweb: String,
}

#[derive(Clone)]
struct AppState {
    world: Arc<World>,
    keys: Arc<Keys>,
    yahoo: Arc<YahooSessions>,
}

/// The simulator's stand-in for `https://fc.yahoo.com`, which sets Yahoo's session cookie.
pub const YAHOO_COOKIE_PATH: &str = "/fc";
/// Where Yahoo hands out the crumb for a session cookie.
pub const YAHOO_CRUMB_PATH: &str = "/v1/test/getcrumb";

/// Yahoo's sessions, as strict as the live service: a quoteSummary needs a cookie this
/// server set and the crumb it gave for that cookie; every Yahoo request needs a
/// browser's `User-Agent` (library agents get 429).
struct YahooSessions {
    seed: u64,
    /// Cookie token → (crumb, quoteSummary answers with it).
    issued: std::sync::Mutex<HashMap<String, (String, u64)>>,
    stale_after: Option<u64>,
    refuse: bool,
}

impl YahooSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u64)>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new cookie token, unique for the server's life.
    fn new_cookie(&self) -> String {
        let mut issued = self.lock();
        let token = format!("d=AQABBK{:016x}&S=AQAAA", world::hash(self.seed, &["cookie", &issued.len().to_string()]));
        issued.insert(token.clone(), (String::new(), 0));
        token
    }

    /// The cookie's crumb: a new one each time it is asked (the old one stops working).
    fn crumb_for(&self, token: &str) -> Option<String> {
        let mut issued = self.lock();
        let n = issued.len().to_string();
        let entry = issued.get_mut(token)?;
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./";
        let mut h = world::hash(self.seed, &["crumb", token, &n, &entry.1.to_string(), &entry.0]);
        let crumb: String = (0..11)
            .map(|_| {
                let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
                h /= ALPHABET.len() as u64;
                c
            })
            .collect();
        *entry = (crumb.clone(), 0);
        Some(crumb)
    }

    /// Whether a quoteSummary with this cookie header and crumb is let through.
    fn admit(&self, cookie_header: Option<&str>, crumb: Option<&str>) -> bool {
        if self.refuse {
            return false;
        }
        let Some(token) = cookie_header.and_then(a3_cookie) else { return false };
        let mut issued = self.lock();
        let Some((expected, uses)) = issued.get_mut(&token) else { return false };
        if expected.is_empty() || crumb != Some(expected.as_str()) || self.stale_after.is_some_and(|n| *uses >= n) {
            return false;
        }
        *uses += 1;
        true
    }
}

/// The `A3` cookie's value in a `Cookie` header.
fn a3_cookie(header: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|pair| pair.strip_prefix("A3=")).map(str::to_string)
}

fn browser(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).is_some_and(|ua| ua.starts_with("Mozilla/"))
}

fn too_many_requests() -> Response {
    (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "text/html")], "Too Many Requests").into_response()
}

fn invalid_crumb(description: &str) -> Response {
    respond(401, &json!({"finance": {"result": null, "error": {"code": "Unauthorized", "description": description}}}))
}

/// What a simulator serves: a world at a date, the keys it accepts, the faults it injects.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub seed: u64,
    pub as_of: NaiveDate,
    pub keys: Keys,
    /// Faults by provider name (`builtwith`, `similarweb`, `yahoo_finance`).
    pub faults: BTreeMap<String, FaultSettings>,
    /// Where to append a line per request answered (see `SimulatorSettings::request_log`).
    pub request_log: Option<std::path::PathBuf>,
}

/// A header the simulated BuiltWith sets on answers billed by what they hold (the
/// Relationships API's credits per 500 relationships), for the request log.
const CREDITS_HEADER: &str = "x-simulated-credits";

/// The simulated providers' bill: one JSON line per request answered, written
/// before the answer leaves, with the credits it is billed.
struct RequestLog {
    file: std::sync::Mutex<std::fs::File>,
}

async fn log_request(
    State(log): State<Arc<RequestLog>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let provider = faults::provider_of(request.uri().path());
    let key = faults::request_key(&request);
    let response = next.run(request).await;
    // What the provider bills: the credits an answer says it costs, else one per answer.
    let status = response.status().as_u16();
    let credits = match response.headers().get(CREDITS_HEADER).and_then(|v| v.to_str().ok()) {
        Some(credits) => credits.parse::<u64>().unwrap_or(0),
        None => u64::from((200..300).contains(&status)),
    };
    let line = json!({"provider": provider, "request": key, "status": status, "credits": credits});
    let mut file = log.file.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = std::io::Write::write_all(&mut *file, format!("{line}\n").as_bytes()) {
        tracing::warn!("simulated providers: cannot write the request log: {e}");
    }
    response
}

/// Builds the router for a world as of a date.
pub fn router(config: SimulatorConfig) -> std::io::Result<Router> {
    let mut world = World::new(config.seed, config.as_of);
    world.conflict_rate = config.faults.get("builtwith").map_or(0.0, |f| f.conflict_rate);
    world.yahoo_conflict_rate = config.faults.get("yahoo_finance").map_or(0.0, |f| f.conflict_rate);
    let yahoo_faults = config.faults.get("yahoo_finance");
    let yahoo = YahooSessions {
        seed: config.seed,
        issued: Default::default(),
        stale_after: yahoo_faults.and_then(|f| f.stale_crumb_after),
        refuse: yahoo_faults.is_some_and(|f| f.refuse_session),
    };
    let state = AppState { world: Arc::new(world), keys: Arc::new(config.keys), yahoo: Arc::new(yahoo) };
    let faults = Arc::new(faults::Faults::new(config.seed, config.faults));
    let router = Router::new()
        .route("/{version}/api.json", get(builtwith_domain))
        .route("/v1/website/{domain}/{group}/{metric}", get(similarweb))
        .route("/v10/finance/quoteSummary/{ticker}", get(quote_summary))
        .route(YAHOO_COOKIE_PATH, get(yahoo_cookie))
        .route(YAHOO_CRUMB_PATH, get(yahoo_crumb))
        .route("/v1/boards/{board}/jobs", get(greenhouse))
        .route("/v0/postings/{company}", get(lever))
        .route("/posting-api/job-board/{board}", get(ashby))
        .route("/feeds/{host}/{*path}", get(news_feed))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(faults, faults::inject));
    Ok(match config.request_log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("request log {}: {e}", path.display())))?;
            let log = Arc::new(RequestLog { file: std::sync::Mutex::new(file) });
            router.layer(axum::middleware::from_fn_with_state(log, log_request))
        }
        None => router,
    })
}

/// A running simulator; dropping it does not stop it, `shutdown` does.
pub struct Simulator {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and serves in the background.
    pub async fn start(listen: SocketAddr, config: SimulatorConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(config)?;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulated providers stopped");
            }
        });
        Ok(Self { addr, shutdown: Some(tx), task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

fn respond(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn builtwith_domain(
    State(state): State<AppState>,
    Path(version): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // Relationships only at the version documented today; the Domain API at any `vNN`.
    let relationships = version == builtwith::RELATIONSHIPS_API_VERSION;
    let free = version == "free1";
    if !(relationships
        || free
        || version.starts_with("lists")
        || (version.starts_with('v') && version[1..].parse::<u32>().is_ok()))
    {
        return respond(404, &json!({"Errors": [{"Message": "Not found", "Code": -1}], "Results": null}));
    }
    if query.get("KEY") != Some(&state.keys.builtwith) {
        return respond(
            403,
            &json!({"Errors": [{"Lookup": null, "Message": "Invalid API key", "Code": -1}], "Results": null}),
        );
    }
    let lookup = query.get("LOOKUP").map(String::as_str).unwrap_or("");
    let (status, body) = if relationships {
        state.world.builtwith_relationships(lookup, query.get("OFFSET").map(String::as_str))
    } else if free {
        state.world.builtwith_free(lookup)
    } else if version.starts_with("lists") {
        let tech = query.get("TECH").map(String::as_str).unwrap_or("");
        state.world.builtwith_list(tech, query.get("OFFSET").map(String::as_str))
    } else {
        state.world.builtwith_domain(lookup)
    };
    let mut response = respond(status, &body);
    if relationships && status == 200 {
        let credits = builtwith::relationships_credits(&body);
        response.headers_mut().insert(CREDITS_HEADER, credits.into());
    } else if free {
        response.headers_mut().insert(CREDITS_HEADER, 0.into()); // the Free API costs nothing
    }
    response
}

async fn similarweb(
    State(state): State<AppState>,
    Path((domain, group, metric)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("api_key") != Some(&state.keys.similarweb) {
        return respond(
            403,
            &json!({"meta": {"status": "Error", "error_code": 403, "error_message": "Invalid API key"}}),
        );
    }
    let country = query.get("country").map(String::as_str).unwrap_or("world");
    let (status, body) = state.world.similarweb(&domain, &format!("{group}/{metric}"), country);
    respond(status, &body)
}

/// fc.yahoo.com: a 404 whose point is its `Set-Cookie`.
async fn yahoo_cookie(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if !browser(&headers) {
        return too_many_requests();
    }
    let token = state.yahoo.new_cookie();
    let cookie = format!("A3={token}; Max-Age=31557600; Domain=.yahoo.com; Path=/; SameSite=None; Secure; HttpOnly");
    (StatusCode::NOT_FOUND, [(header::SET_COOKIE, cookie)], "<html><body>404 Not Found</body></html>").into_response()
}

/// The crumb of the session cookie, as plain text.
async fn yahoo_crumb(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if !browser(&headers) {
        return too_many_requests();
    }
    let token = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).and_then(a3_cookie);
    match token.and_then(|t| state.yahoo.crumb_for(&t)) {
        Some(crumb) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain;charset=utf-8")], crumb).into_response(),
        None => invalid_crumb("Invalid Cookie"),
    }
}

async fn quote_summary(
    State(state): State<AppState>,
    Path(ticker): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !browser(&headers) {
        return too_many_requests();
    }
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if !state.yahoo.admit(cookie, query.get("crumb").map(String::as_str)) {
        return invalid_crumb("Invalid Crumb");
    }
    let modules = query.get("modules").map(String::as_str).unwrap_or("");
    let (status, body) = state.world.quote_summary(&ticker, modules);
    respond(status, &body)
}

async fn greenhouse(State(state): State<AppState>, Path(board): Path<String>) -> Response {
    let (status, body) = state.world.job_postings("greenhouse", &board);
    respond(status, &body)
}

async fn lever(State(state): State<AppState>, Path(company): Path<String>) -> Response {
    let (status, body) = state.world.job_postings("lever", &company);
    respond(status, &body)
}

async fn ashby(State(state): State<AppState>, Path(board): Path<String>) -> Response {
    let (status, body) = state.world.job_postings("ashby", &board);
    respond(status, &body)
}

async fn news_feed(State(state): State<AppState>, Path((host, path)): Path<(String, String)>) -> Response {
    let (status, content_type, body) = state.world.news_feed(&host, &format!("/{path}"));
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
