//! A provider session: a cookie and a crumb the provider hands out and then wants
//! with every call (Yahoo Finance). The handshake — the cookie from one URL, the
//! crumb from another with that cookie — is made once and kept for the run; a call
//! refused for its session renews it once (the first refused call does, the others
//! wait for it) and goes again.
//!
//! The handshake's requests go through the provider's rate limit and are recorded
//! as attempts of the call that made them (endpoints `session_cookie` and
//! `session_crumb`, numbered as the call's attempt they came before, never billed);
//! their bodies are not kept (a crumb is a credential).

use std::time::Duration;

use bytes::Bytes;

use super::{Attempt, Reply};

/// The ledger's endpoint names of the handshake's two requests.
pub const COOKIE_ENDPOINT: &str = "session_cookie";
pub const CRUMB_ENDPOINT: &str = "session_crumb";

/// The endpoint name of a stored session request (the journal keeps names as text).
pub fn endpoint_named(name: &str) -> Option<&'static str> {
    [COOKIE_ENDPOINT, CRUMB_ENDPOINT].into_iter().find(|e| *e == name)
}

/// Where a provider's session comes from.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Answers (whatever its status) with the session's cookies.
    pub cookie_url: url::Url,
    /// Answers the crumb as plain text to a request with those cookies.
    pub crumb_url: url::Url,
    /// The query parameter every call sends the crumb in.
    pub crumb_param: &'static str,
    /// The `User-Agent` of every request to the provider (it refuses library agents).
    pub user_agent: &'static str,
}

/// A session in use: the `Cookie` header and the crumb.
#[derive(Debug, Clone)]
pub struct Held {
    pub cookie: String,
    pub crumb: String,
    /// Which handshake of the run made it (a renewal replaces only the session it saw refused).
    pub generation: u64,
}

/// Why a handshake gave no session.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The request did not get through (transport error, 429, 5xx): worth another try.
    Transient(String),
    /// The provider answered, and not with a session: every further call would fail alike.
    Refused(String),
    /// The provider's daily quota is used up (no request was made).
    Quota(String),
    /// The run was stopped while the handshake waited for the rate limit.
    Stopped,
}

/// The session of one provider for the run.
pub struct Session {
    pub spec: SessionSpec,
    current: tokio::sync::Mutex<Option<Held>>,
    made: std::sync::atomic::AtomicU64,
    /// The newest session generation a call was answered with.
    proved: std::sync::atomic::AtomicU64,
}

impl Session {
    pub fn new(spec: SessionSpec) -> Self {
        Self { spec, current: tokio::sync::Mutex::new(None), made: Default::default(), proved: Default::default() }
    }

    /// A call was answered with session `generation`: the provider took it.
    pub fn proved(&self, generation: u64) {
        self.proved.fetch_max(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a call was answered with session `generation` (or a newer one).
    pub fn was_proved(&self, generation: u64) -> bool {
        self.proved.load(std::sync::atomic::Ordering::SeqCst) >= generation
    }

    /// The session, made first if there is none (one handshake at a time: calls that
    /// arrive meanwhile wait for it and share it). `pace` is awaited before each
    /// request of the handshake (the provider's rate limit; it fails when the run is
    /// stopped or the quota is used up); the handshake's requests are appended to `attempts`.
    pub async fn get<P, F>(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        mut pace: P,
        round: u32,
        attempts: &mut Vec<Attempt>,
    ) -> Result<Held, Failure>
    where
        P: FnMut() -> F,
        F: std::future::Future<Output = Result<(), Failure>>,
    {
        let mut current = self.current.lock().await;
        if let Some(held) = current.as_ref() {
            return Ok(held.clone());
        }
        pace().await?;
        // Whatever its status (fc.yahoo.com answers 404), the cookie request did its job if it set one.
        let (reply, set) = get(http, self.spec.cookie_url.clone(), None, timeout).await;
        let failure = match cookies(&set) {
            Some(cookie) => Ok(cookie),
            None if transient(&reply) => {
                Err(Failure::Transient(format!("the cookie request failed: {}", describe(&reply))))
            }
            None => Err(Failure::Refused(format!(
                "the cookie request ({}) set no cookie ({})",
                self.spec.cookie_url,
                describe(&reply)
            ))),
        };
        attempts.push(attempt(round, COOKIE_ENDPOINT, reply, failure.as_ref().err()));
        let cookie = failure?;
        pace().await?;
        let (reply, _) = get(http, self.spec.crumb_url.clone(), Some(&cookie), timeout).await;
        let crumb = String::from_utf8_lossy(&reply.body).trim().to_string();
        let failure = if transient(&reply) {
            Err(Failure::Transient(format!("the crumb request failed: {}", describe(&reply))))
        } else if !reply.is_success() {
            Err(Failure::Refused(format!("the crumb request was refused ({})", describe(&reply))))
        } else {
            // A page instead of a crumb (an edge's error page, a consent wall) may pass.
            valid_crumb(&crumb).map_err(|why| Failure::Transient(format!("the crumb request answered no crumb: {why}")))
        };
        attempts.push(attempt(round, CRUMB_ENDPOINT, reply, failure.as_ref().err()));
        failure?;
        let generation = self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let held = Held { cookie, crumb, generation };
        *current = Some(held.clone());
        Ok(held)
    }

    /// Drops the session `generation` (refused by the provider), unless another call
    /// renewed it already; the next [`Session::get`] makes a new one.
    pub async fn invalidate(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|h| h.generation == generation) {
            *current = None;
        }
    }
}

/// A handshake request as an attempt of the call that made it, numbered as the call's
/// attempt it came before: its `error` says why it gave no session (none when it did its part).
fn attempt(round: u32, endpoint: &'static str, mut reply: Reply, failed: Option<&Failure>) -> Attempt {
    // A session's bodies are not kept: the crumb is a credential, the cookie page says nothing.
    reply.body = Bytes::new();
    reply.error = match failed {
        Some(Failure::Transient(why) | Failure::Refused(why) | Failure::Quota(why)) => Some(why.clone()),
        Some(Failure::Stopped) => Some("the run was stopped".into()),
        None => None,
    };
    Attempt { number: round, reply, waited: Duration::ZERO, cost_usd: 0.0, session: Some(endpoint), page: 1 }
}

fn transient(reply: &Reply) -> bool {
    super::retry::kind(reply.status) == super::retry::Kind::Transient
}

fn describe(reply: &Reply) -> String {
    match (reply.status, &reply.error) {
        (_, Some(error)) => error.clone(),
        (Some(status), None) => format!("HTTP {status}"),
        (None, None) => "no answer".into(),
    }
}

/// The `Cookie` header for what a response set: each `Set-Cookie`'s name=value.
fn cookies(set: &[String]) -> Option<String> {
    let pairs: Vec<&str> = set
        .iter()
        .filter_map(|line| line.split(';').next().map(str::trim))
        .filter(|pair| pair.split_once('=').is_some_and(|(name, _)| !name.trim().is_empty()))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

/// A crumb is a short token: not empty, not a page, not a sentence.
pub fn valid_crumb(crumb: &str) -> Result<(), String> {
    if crumb.is_empty() {
        return Err("the body is empty".into());
    }
    if crumb.len() > 64 {
        return Err(format!("{} characters, longer than any crumb", crumb.len()));
    }
    if crumb.contains(['<', '>', '{', '}']) || crumb.chars().any(char::is_whitespace) {
        return Err("the body is markup or text, not a token".into());
    }
    Ok(())
}

/// A GET with the session's cookie: the reply and the cookies it set.
async fn get(http: &reqwest::Client, url: url::Url, cookie: Option<&str>, timeout: Duration) -> (Reply, Vec<String>) {
    let mut request = http.get(url).timeout(timeout).header(reqwest::header::ACCEPT, "*/*");
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    super::get(request, str::to_string).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crumb_is_a_short_token() {
        assert!(valid_crumb("Ab1cD2eF/g.").is_ok());
        for bad in ["", "<html><body>Not Found</body></html>", "{\"crumb\":1}", "two words", &"x".repeat(65)] {
            assert!(valid_crumb(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cookies_keep_each_name_and_value() {
        let set = vec![
            "A3=d=AQABBK&S=AQAAAl; Expires=Sun, 06 Dec 2027 00:00:00 GMT; Domain=.yahoo.com; Path=/; Secure"
                .to_string(),
            "B=xyz; Path=/".to_string(),
            "; Path=/".to_string(),
        ];
        assert_eq!(cookies(&set).as_deref(), Some("A3=d=AQABBK&S=AQAAAl; B=xyz"));
        assert_eq!(cookies(&[]), None);
    }
}
