//! Fault injection for the simulated providers: outages, quota 403s, 500s, 429s
//! with `Retry-After`, added latency, malformed and truncated bodies.
//!
//! Each decision is a deterministic draw from (seed, provider, request, attempt):
//! the n-th attempt of the same request always meets the same fate, so a run with
//! faults is reproducible and a retry can succeed where the first attempt failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::world::unit;
use crate::config::FaultSettings;

pub struct Faults {
    seed: u64,
    settings: BTreeMap<String, FaultSettings>,
    started: Instant,
    requests: BTreeMap<String, AtomicU64>,
    attempts: Mutex<HashMap<String, u64>>,
}

impl Faults {
    pub fn new(seed: u64, settings: BTreeMap<String, FaultSettings>) -> Self {
        let requests = crate::config::ProviderId::ALL.map(|p| (p.name().to_string(), AtomicU64::new(0))).into();
        Self { seed, settings, started: Instant::now(), requests, attempts: Mutex::new(HashMap::new()) }
    }
}

/// Which provider a request is for, from its path.
pub(crate) fn provider_of(path: &str) -> &'static str {
    if path.starts_with("/v1/website/") {
        "similarweb"
    } else if path.starts_with("/v10/finance/") || path == super::YAHOO_COOKIE_PATH || path == super::YAHOO_CRUMB_PATH {
        "yahoo_finance"
    } else if path.starts_with("/v1/boards/") {
        "greenhouse"
    } else if path.starts_with("/v0/postings/") {
        "lever"
    } else if path.starts_with("/posting-api/") {
        "ashby"
    } else if path.starts_with("/feeds/") {
        "news"
    } else {
        "builtwith"
    }
}

/// The request without its key (or Yahoo's crumb), so that the same request matches
/// across keys and sessions.
pub(crate) fn request_key(request: &Request) -> String {
    let query: Vec<&str> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.starts_with("KEY=") && !pair.starts_with("api_key=") && !pair.starts_with("crumb="))
        .collect();
    format!("{}?{}", request.uri().path(), query.join("&"))
}

fn quota_answer(provider: &str) -> Response {
    let body = match provider {
        "similarweb" => {
            json!({"meta": {"status": "Error", "error_code": 403, "error_message": "Credits exhausted for this account"}})
        }
        _ => {
            json!({"Errors": [{"Lookup": null, "Message": "API Key has exceeded its daily quota", "Code": -1}], "Results": null})
        }
    };
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A body that promises every byte (`Content-Length`) and breaks off halfway, the
/// way a dropped connection does.
pub fn cut_short(bytes: bytes::Bytes) -> Body {
    let half = bytes.slice(..bytes.len() / 2);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        vec![Ok(half), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection dropped"))];
    Body::from_stream(futures::stream::iter(chunks))
}

pub async fn inject(State(faults): State<std::sync::Arc<Faults>>, request: Request, next: Next) -> Response {
    let provider = provider_of(request.uri().path());
    let Some(settings) = faults.settings.get(provider) else {
        return next.run(request).await;
    };
    let key = request_key(&request);
    let attempt = {
        let mut attempts = faults.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let n = attempts.entry(key.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let served = faults.requests.get(provider).map(|c| c.fetch_add(1, Ordering::SeqCst)).unwrap_or(0);
    let draw = |what: &str| unit(faults.seed, &[provider, &key, &attempt.to_string(), what]);

    if let Some([start, end]) = settings.outage {
        let elapsed = faults.started.elapsed().as_secs();
        if (start..end).contains(&elapsed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "<html><body>503 Service Unavailable</body></html>")
                .into_response();
        }
    }
    if settings.quota_after.is_some_and(|n| served >= n) {
        return quota_answer(provider);
    }
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    let roll = draw("status");
    if roll < settings.error_rate {
        return (StatusCode::INTERNAL_SERVER_ERROR, "<html><body>500 Internal Server Error</body></html>")
            .into_response();
    }
    if roll < settings.error_rate + settings.rate_429 {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(settings.retry_after_secs));
        return response;
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let roll = draw("body");
    if roll < settings.malformed_rate {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Temporarily unavailable</body></html>",
        )
            .into_response();
    }
    if roll < settings.malformed_rate + settings.truncated_rate {
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        return Response::from_parts(parts, cut_short(bytes));
    }
    response
}
