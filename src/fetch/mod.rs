//! The provider-agnostic call path: an HTTP client per provider, bounded
//! concurrency across the run, and the ledger of every call.
//!
//! Nothing here knows a provider's wire format: a `Call` is a path and query
//! below a base URL, a `Reply` is a status and bytes. API keys are added here,
//! at the last moment, and never leave: errors are stripped of URLs and
//! scrubbed of key text before they are logged or stored.

pub mod ledger;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::config::{ProviderId, ProviderSettings};
pub use ledger::{LedgerRow, Outcome};

/// One request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub provider: ProviderId,
    /// Endpoint name, as in the pipeline's cost table and the ledger.
    pub endpoint: &'static str,
    pub domain: String,
    /// The module(s) the call feeds, e.g. "m01,m02".
    pub modules: String,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
}

/// What came back: a status and body, or a transport error.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: Option<u16>,
    pub body: Bytes,
    pub latency: Duration,
    /// Transport failure (connect, timeout, reset), already redacted.
    pub error: Option<String>,
    pub called_at: chrono::DateTime<chrono::Utc>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// How to reach one provider.
#[derive(Clone)]
pub struct Endpoint {
    pub provider: ProviderId,
    pub base_url: url::Url,
    /// (query parameter, key) for providers that take a key in the query string.
    key: Option<(&'static str, String)>,
    pub settings: ProviderSettings,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url.as_str())
            .field("key", &self.key.as_ref().map(|(param, _)| (param, "***")))
            .finish()
    }
}

impl Endpoint {
    pub fn new(
        provider: ProviderId,
        base_url: url::Url,
        key: Option<(&'static str, String)>,
        settings: ProviderSettings,
    ) -> Self {
        Self { provider, base_url, key, settings }
    }

    /// Removes the key from any text (errors may echo URLs or bodies).
    pub fn redact(&self, text: &str) -> String {
        match &self.key {
            Some((_, key)) if !key.is_empty() => text.replace(key.as_str(), "***"),
            _ => text.to_string(),
        }
    }
}

/// Sends calls with at most `concurrency` in flight, across all providers.
pub struct Fetcher {
    http: reqwest::Client,
    endpoints: Vec<Endpoint>,
    concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("no endpoint configured for provider {0}")]
    NoEndpoint(&'static str),
}

impl Fetcher {
    pub fn new(endpoints: Vec<Endpoint>, concurrency: usize) -> Result<Self, FetchError> {
        let connect_timeout = endpoints.iter().map(|e| e.settings.connect_timeout_secs).min().unwrap_or(10);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(connect_timeout))
            .user_agent(concat!("partnerforge/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(concurrency.max(1))
            .build()
            .map_err(|e| FetchError::Client(e.without_url().to_string()))?;
        Ok(Self { http, endpoints, concurrency: concurrency.max(1) })
    }

    pub fn endpoint(&self, provider: ProviderId) -> Result<&Endpoint, FetchError> {
        self.endpoints.iter().find(|e| e.provider == provider).ok_or(FetchError::NoEndpoint(provider.name()))
    }

    /// Makes every call, at most `concurrency` at once; replies come back in call order.
    pub async fn execute(&self, calls: Vec<Call>) -> Result<Vec<(Call, Reply)>, FetchError> {
        for call in &calls {
            self.endpoint(call.provider)?;
        }
        let mut replies: Vec<(usize, Call, Reply)> = futures::stream::iter(calls.into_iter().enumerate())
            .map(|(i, call)| async move {
                let reply = self.send(&call).await;
                (i, call, reply)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        replies.sort_by_key(|(i, _, _)| *i);
        Ok(replies.into_iter().map(|(_, call, reply)| (call, reply)).collect())
    }

    async fn send(&self, call: &Call) -> Reply {
        let called_at = chrono::Utc::now();
        let started = Instant::now();
        let Ok(endpoint) = self.endpoint(call.provider) else {
            return Reply {
                status: None,
                body: Bytes::new(),
                latency: Duration::ZERO,
                error: Some("no endpoint".into()),
                called_at,
            };
        };
        let mut url = endpoint.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{}", call.path));
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &call.query {
                pairs.append_pair(k, v);
            }
            if let Some((param, key)) = &endpoint.key {
                pairs.append_pair(param, key);
            }
        }
        let request = self
            .http
            .get(url)
            .timeout(Duration::from_secs(endpoint.settings.timeout_secs))
            .header(reqwest::header::ACCEPT, "application/json");
        let result = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let latency = started.elapsed();
        match result {
            Ok((status, body)) => Reply { status: Some(status), body, latency, error: None, called_at },
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else if e.is_body() || e.is_decode() {
                    "body read failed"
                } else {
                    "request failed"
                };
                let detail = endpoint.redact(&e.without_url().to_string());
                Reply { status: None, body: Bytes::new(), latency, error: Some(format!("{kind}: {detail}")), called_at }
            }
        }
    }
}
