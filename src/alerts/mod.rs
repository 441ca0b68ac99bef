//! Alert delivery: Slack-compatible webhooks, RFC 5322 messages in the store's
//! outbox, and the delivery log that makes each (person, change, channel) go out
//! at most once — across reruns, resumed runs, replaced generations and rebuilds.
//! (The `feed` channel is the person's file in the dashboard export.)
//!
//! The delivery log lives in the store, one folder per message:
//! `deliveries/<channel>/<user>/<key>/`, where the key is the change event's id
//! (or `digest-<date>`). Each attempt first claims `<n>.sending.json` with a
//! create-only write — holding the message, so a later pass can retry it — then
//! sends, then records `<n>.delivered.json` or `<n>.failed.json`. A pass lists the
//! log once and reads the state from the names:
//!
//! - delivered: never sent again;
//! - failed (the receiver said no, or did not answer through every retry): sent
//!   again, as the next attempt, by the next pass — reported, never dropped;
//! - only claimed: the process stopped while sending, so the receiver may or may
//!   not have it. Sending again could deliver it twice, so it is reported as *in
//!   doubt* and left alone unless the operator asks (`--resend-in-doubt`).
//!
//! Passes hold the store's `alerts` lease, so a claim found without an outcome is
//! never one that a live process is still sending.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::alerts::{AlertRules, Channel, Person};
use crate::store::Store;
use crate::transform::alerts::Alert;

/// One message to one person on one channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outgoing {
    pub channel: String,
    pub user: String,
    /// The event id, or `digest-<date>`.
    pub key: String,
    /// The snapshot (immediate) or digest date the message belongs to.
    pub date: String,
    pub alert_ids: Vec<String>,
    pub subject: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    run_id: String,
    at: String,
    message: Outgoing,
}

#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    at: String,
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default)]
    error: Option<String>,
    attempts: u32,
}

/// What a delivery pass did, per channel.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct DeliveryReport {
    pub delivered: BTreeMap<String, u64>,
    /// Already delivered by an earlier pass: not sent again.
    pub already_delivered: u64,
    /// No webhook (or e-mail address) configured for the person: not sent.
    pub not_configured: BTreeMap<String, u64>,
    /// Failed this pass: retried by the next one. (channel, user, key, reason)
    pub failed: Vec<(String, String, String, String)>,
    /// Claimed by a process that stopped while sending: not sent again.
    pub in_doubt: Vec<(String, String, String)>,
    /// Webhook receivers (by the variable naming them) that failed this pass: the
    /// rest of their messages are recorded failed without being tried again now.
    #[serde(skip)]
    down: std::collections::BTreeSet<String>,
}

impl DeliveryReport {
    /// A pass that could not run at all.
    pub fn failed_pass(reason: String) -> Self {
        Self { failed: vec![("all".into(), String::new(), String::new(), reason)], ..Self::default() }
    }

    pub fn line(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| m.iter().map(|(c, n)| format!("{c} {n}")).collect::<Vec<_>>().join(", ");
        let mut parts = vec![if self.delivered.is_empty() {
            "nothing new delivered".to_string()
        } else {
            format!("delivered {}", join(&self.delivered))
        }];
        if self.already_delivered > 0 {
            parts.push(format!("{} already delivered earlier", self.already_delivered));
        }
        if !self.not_configured.is_empty() {
            parts.push(format!("not configured {}", join(&self.not_configured)));
        }
        if !self.failed.is_empty() {
            parts.push(format!("{} failed (retried on the next delivery)", self.failed.len()));
        }
        if !self.in_doubt.is_empty() {
            parts.push(format!(
                "{} in doubt (a process stopped while sending: not sent again; `partnerforge deliver --resend-in-doubt` sends them)",
                self.in_doubt.len()
            ));
        }
        parts.join(", ")
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A key usable in an object path.
fn path_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

fn folder(message: &Outgoing) -> String {
    format!("deliveries/{}/{}/{}", message.channel, path_safe(&message.user), path_safe(&message.key))
}

/// The log's state of one message: its attempts, from the object names.
#[derive(Debug, Default)]
struct Logged {
    attempts: u32,
    delivered: bool,
    /// Whether the last attempt has an outcome (failed) or not (in doubt).
    last_failed: bool,
    last_claim: Option<String>,
}

async fn read_log(store: &Store) -> anyhow::Result<BTreeMap<String, Logged>> {
    let mut log: BTreeMap<String, Logged> = BTreeMap::new();
    let mut outcomes: BTreeMap<(String, u32), &'static str> = BTreeMap::new();
    let mut claims: Vec<(String, u32, String)> = Vec::new();
    for path in store.list("deliveries/").await? {
        let Some((dir, name)) = path.rsplit_once('/') else { continue };
        let mut parts = name.split('.');
        let (Some(n), Some(kind)) = (parts.next().and_then(|n| n.parse::<u32>().ok()), parts.next()) else {
            continue;
        };
        match kind {
            "sending" => claims.push((dir.to_string(), n, path.clone())),
            "delivered" => {
                outcomes.insert((dir.to_string(), n), "delivered");
            }
            "failed" => {
                outcomes.insert((dir.to_string(), n), "failed");
            }
            _ => {}
        }
    }
    for (dir, n, path) in claims {
        let entry = log.entry(dir.clone()).or_default();
        let outcome = outcomes.get(&(dir, n)).copied();
        entry.delivered |= outcome == Some("delivered");
        if n > entry.attempts {
            entry.attempts = n;
            entry.last_failed = outcome == Some("failed");
            entry.last_claim = Some(path);
        }
    }
    Ok(log)
}

/// Where a person's webhook goes: theirs, else their team's, from the environment
/// (the variable's name, and the URL).
fn webhook_url(rules: &AlertRules, person: &Person) -> Option<(String, String)> {
    let from_env = |name: &Option<String>| {
        name.as_ref().and_then(|n| std::env::var(n).ok().filter(|v| !v.is_empty()).map(|url| (n.clone(), url)))
    };
    from_env(&person.webhook_env).or_else(|| {
        person.team.as_ref().and_then(|t| rules.people.team(t)).and_then(|team| from_env(&team.webhook_env))
    })
}

/// Base64 for RFC 2047 encoded words.
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A header value: as it is when ASCII, else an RFC 2047 encoded word.
fn header_text(text: &str) -> String {
    let clean: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if clean.is_ascii() { clean } else { format!("=?UTF-8?B?{}?=", base64(clean.as_bytes())) }
}

/// An RFC 5322 message (UTF-8 text body).
pub fn eml(person: &Person, message: &Outgoing, email: &str) -> String {
    let date = chrono::Utc::now().to_rfc2822();
    let id = format!("<{}.{}@partnerforge.invalid>", path_safe(&message.key), path_safe(&message.user));
    let body = message.text.replace("\r\n", "\n").replace('\n', "\r\n");
    format!(
        "From: PartnerForge <alerts@partnerforge.invalid>\r\n\
         To: {} <{email}>\r\n\
         Subject: {}\r\n\
         Date: {date}\r\n\
         Message-ID: {id}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         X-PartnerForge-Alerts: {}\r\n\
         \r\n\
         {body}\r\n",
        header_text(&person.name),
        header_text(&message.subject),
        message.alert_ids.join(","),
    )
}

/// POSTs a Slack-compatible message, retrying connection errors, timeouts, 429 and
/// 5xx with exponential backoff. Ok(status) on a 2xx.
async fn post_webhook(rules: &AlertRules, url: &str, message: &Outgoing) -> Result<u16, (Option<u16>, String, u32)> {
    let settings = &rules.webhook;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
        .build()
        .map_err(|e| (None, e.to_string(), 0))?;
    let body = serde_json::json!({
        "text": message.subject,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": message.text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("PartnerForge alert {}", message.alert_ids.join(" "))}]},
        ],
    });
    let mut last = (None, String::new());
    for attempt in 1..=settings.max_attempts.max(1) {
        match client.post(url).json(&body).send().await {
            Ok(response) if response.status().is_success() => return Ok(response.status().as_u16()),
            Ok(response) => {
                let status = response.status();
                last = (Some(status.as_u16()), format!("HTTP {status}"));
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return Err((last.0, last.1, attempt));
                }
            }
            // The URL is a secret: errors are said without it.
            Err(e) => last = (None, if e.is_timeout() { "timed out".into() } else { "could not connect".into() }),
        }
        if attempt < settings.max_attempts {
            tokio::time::sleep(Duration::from_millis(settings.base_delay_ms << (attempt - 1).min(10))).await;
        }
    }
    Err((last.0, last.1, settings.max_attempts))
}

/// Sends one message (claimed as attempt `n`) and records the outcome.
async fn attempt(
    store: &Store,
    rules: &AlertRules,
    message: &Outgoing,
    n: u32,
    run_id: &str,
    report: &mut DeliveryReport,
) -> anyhow::Result<()> {
    let Some(person) = rules.people.person(&message.user) else {
        report.failed.push((
            message.channel.clone(),
            message.user.clone(),
            message.key.clone(),
            "no such person".into(),
        ));
        return Ok(());
    };
    // What can be sent is known before anything is claimed: an unconfigured channel claims nothing.
    let target = match message.channel.as_str() {
        "webhook" => webhook_url(rules, person),
        "email" => person.email.clone().map(|e| (String::new(), e)),
        _ => None,
    };
    let Some((receiver, target)) = target else {
        *report.not_configured.entry(message.channel.clone()).or_default() += 1;
        return Ok(());
    };
    let dir = folder(message);
    let claim = Claim { run_id: run_id.to_string(), at: now_text(), message: message.clone() };
    let body = Bytes::from(serde_json::to_vec_pretty(&claim)?);
    if !store.put_new(&format!("{dir}/{n:04}.sending.json"), body).await? {
        // Another pass claimed this attempt first: it is theirs to send.
        report.already_delivered += 1;
        return Ok(());
    }
    let result = match message.channel.as_str() {
        "webhook" if report.down.contains(&receiver) => {
            Err((None, format!("not tried: the webhook of {receiver} failed earlier in this delivery"), 0))
        }
        "webhook" => {
            let sent = post_webhook(rules, &target, message).await;
            if sent.is_err() {
                report.down.insert(receiver.clone());
            }
            sent
        }
        _ => {
            let path = format!(
                "{}/{}/{}/{}.eml",
                rules.outbox,
                message.date,
                path_safe(&message.user),
                path_safe(&message.key)
            );
            match store.put(&path, Bytes::from(eml(person, message, &target))).await {
                Ok(()) => Ok(0),
                Err(e) => Err((None, e.to_string(), 1)),
            }
        }
    };
    let (kind, outcome) = match &result {
        Ok(status) => (
            "delivered",
            Outcome { at: now_text(), http_status: Some(*status).filter(|s| *s > 0), error: None, attempts: 1 },
        ),
        Err((status, error, tries)) => {
            ("failed", Outcome { at: now_text(), http_status: *status, error: Some(error.clone()), attempts: *tries })
        }
    };
    store.put_new(&format!("{dir}/{n:04}.{kind}.json"), Bytes::from(serde_json::to_vec_pretty(&outcome)?)).await?;
    match result {
        Ok(_) => *report.delivered.entry(message.channel.clone()).or_default() += 1,
        Err((_, error, _)) => {
            tracing::warn!(channel = %message.channel, user = %message.user, key = %message.key, "delivery failed: {error}");
            report.failed.push((message.channel.clone(), message.user.clone(), message.key.clone(), error));
        }
    }
    Ok(())
}

/// Delivers `messages` once each, and retries every earlier failed delivery in the
/// log. Holds the store's `alerts` lease while it works.
pub async fn deliver(
    store: &Store,
    rules: &AlertRules,
    messages: &[Outgoing],
    run_id: &str,
    resend_in_doubt: bool,
) -> anyhow::Result<DeliveryReport> {
    let ttl = Duration::from_secs(15 * 60);
    // A lease left by a process that died is broken; a live one refuses.
    let (lock, _) = store.acquire_lock("alerts", run_id, ttl, true).await.context("taking the alerts lease")?;
    let result = deliver_locked(store, rules, messages, run_id, resend_in_doubt).await;
    store.release_lock(lock).await?;
    if let Ok(report) = &result
        && (!report.delivered.is_empty() || !report.failed.is_empty())
    {
        let detail = serde_json::json!({
            "delivered": report.delivered, "failed": report.failed.len(), "in_doubt": report.in_doubt.len(),
        });
        crate::store::audit::record(store, "alerts.delivered", run_id, detail).await;
    }
    result
}

async fn deliver_locked(
    store: &Store,
    rules: &AlertRules,
    messages: &[Outgoing],
    run_id: &str,
    resend_in_doubt: bool,
) -> anyhow::Result<DeliveryReport> {
    let log = read_log(store).await?;
    let mut report = DeliveryReport::default();
    let mut handled = std::collections::BTreeSet::new();
    for message in messages.iter().filter(|m| m.channel != Channel::Feed.name()) {
        let dir = folder(message);
        if !handled.insert(dir.clone()) {
            continue;
        }
        match log.get(&dir) {
            None => attempt(store, rules, message, 1, run_id, &mut report).await?,
            Some(l) if l.delivered => report.already_delivered += 1,
            Some(l) if l.last_failed || resend_in_doubt => {
                attempt(store, rules, message, l.attempts + 1, run_id, &mut report).await?
            }
            Some(_) => report.in_doubt.push((message.channel.clone(), message.user.clone(), message.key.clone())),
        }
    }
    // Earlier failures (and, when asked, messages in doubt) are sent again from the claim they left.
    for (dir, logged) in &log {
        if handled.contains(dir) || logged.delivered {
            continue;
        }
        let Some(path) = &logged.last_claim else { continue };
        if !logged.last_failed && !resend_in_doubt {
            if let Ok(claim) = serde_json::from_slice::<Claim>(&store.get(path).await?) {
                let m = claim.message;
                report.in_doubt.push((m.channel, m.user, m.key));
            }
            continue;
        }
        let claim: Claim = serde_json::from_slice(&store.get(path).await?)
            .with_context(|| format!("reading the delivery log {path}"))?;
        attempt(store, rules, &claim.message, logged.attempts + 1, run_id, &mut report).await?;
    }
    Ok(report)
}

fn line_of(alert: &Alert) -> String {
    let e = &alert.event;
    format!("[{}] {} — {}", e.significance, e.domain, e.summary)
}

/// The immediate messages of a snapshot's alerts: one per (person, event, channel).
pub fn immediate(alerts: &[Alert]) -> Vec<Outgoing> {
    let mut out: BTreeMap<(String, String, String), Outgoing> = BTreeMap::new();
    for alert in alerts.iter().filter(|a| a.frequency == "immediate") {
        let e = &alert.event;
        for channel in alert.channels.iter().filter(|c| **c != "feed") {
            out.entry((channel.to_string(), alert.user.clone(), e.event_id.clone())).or_insert_with(|| Outgoing {
                channel: channel.to_string(),
                user: alert.user.clone(),
                key: e.event_id.clone(),
                date: e.to_snapshot.clone(),
                alert_ids: vec![alert.alert_id.clone()],
                subject: format!("[PartnerForge] {}: {} — {}", e.significance, e.domain, e.summary),
                text: format!(
                    "*{}* · {} · {}\n{}\n_{}_\nEvidence: {}\nSnapshot {} (since {}) · rule {}",
                    e.significance,
                    e.domain,
                    e.category,
                    e.summary,
                    e.algolia_relevance,
                    crate::run::changes::evidence(e),
                    e.to_snapshot,
                    e.from_snapshot,
                    alert.rule
                ),
            });
        }
    }
    out.into_values().collect()
}

/// The daily digests of `date`: one message per (person, channel) with every
/// digest alert of that date, most significant first.
pub fn digests(alerts: &[Alert], date: &str) -> Vec<Outgoing> {
    let mut by: BTreeMap<(String, String), Vec<&Alert>> = BTreeMap::new();
    for alert in alerts.iter().filter(|a| a.frequency == "daily_digest") {
        for channel in alert.channels.iter().filter(|c| **c != "feed") {
            by.entry((channel.to_string(), alert.user.clone())).or_default().push(alert);
        }
    }
    let rank = |a: &Alert| crate::config::changes::significance_rank(&a.event.significance).unwrap_or(9);
    by.into_iter()
        .map(|((channel, user), mut list)| {
            list.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.event.domain.cmp(&b.event.domain)));
            list.dedup_by(|a, b| a.event.event_id == b.event.event_id);
            let lines: Vec<String> = list.iter().map(|a| format!("• {}", line_of(a))).collect();
            Outgoing {
                channel,
                user,
                key: format!("digest-{date}"),
                date: date.to_string(),
                alert_ids: list.iter().map(|a| a.alert_id.clone()).collect(),
                subject: format!("[PartnerForge] Daily digest {date}: {} changes on your accounts", list.len()),
                text: format!("*Daily digest {date}*\n{}", lines.join("\n")),
            }
        })
        .collect()
}
