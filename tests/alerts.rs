//! Alert delivery from outside: a webhook receiver in the test process counts every
//! message it is sent while runs are killed mid-fetch and mid-delivery, resumed,
//! rerun with `--replace` and rebuilt. Each alert must arrive exactly once; a
//! receiver that fails is reported and served on the next delivery.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::TestStore;

const NIGHTS: [&str; 3] = ["2026-07-30", "2026-07-31", "2026-08-01"];
const TEAM_HOOK: &str = "PARTNERFORGE_WEBHOOK_NA_ENTERPRISE";

/// A Slack-style webhook receiver: records the alert ids of every message that
/// reaches it; can answer with another status, or hold requests without answering.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<String>>>,
    status: Arc<AtomicU16>,
    /// Hold (never answer) every request after this many have been received.
    hold_after: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let hold_after = Arc::new(AtomicUsize::new(usize::MAX));
        let held = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (r, s, h, hd, rel) = (received.clone(), status.clone(), hold_after.clone(), held.clone(), release.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, s, h, hd, rel) = (r.clone(), s.clone(), h.clone(), hd.clone(), rel.clone());
                std::thread::spawn(move || serve(stream, &r, &s, &h, &hd, &rel));
            }
        });
        Self { url, received, status, hold_after, held, release }
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in self.received.lock().unwrap().iter() {
            *counts.entry(id.clone()).or_default() += 1;
        }
        counts
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut stream: std::net::TcpStream,
    received: &Mutex<Vec<String>>,
    status: &AtomicU16,
    hold_after: &AtomicUsize,
    held: &AtomicUsize,
    release: &AtomicBool,
) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let body = loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
            }
        }
    };
    let code = status.load(Ordering::SeqCst);
    if code == 200 {
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let context = json["blocks"][1]["elements"][0]["text"].as_str().unwrap_or_default().to_string();
        let mut ids = received.lock().unwrap();
        for id in context.trim_start_matches("PartnerForge alert ").split(' ') {
            ids.push(id.to_string());
        }
        let so_far = ids.len();
        drop(ids);
        if so_far > hold_after.load(Ordering::SeqCst) {
            // Received, never answered: the sender dies waiting.
            held.fetch_add(1, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    }
    let reason = if code == 200 { "OK" } else { "Error" };
    let _ = write!(stream, "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// The first 600 targets of the book, as a pipeline of the test's own.
fn store_with_book(receiver: &Receiver) -> (TestStore, String) {
    let store = TestStore::new().env(TEAM_HOOK, &receiver.url);
    let text = std::fs::read_to_string(support::repo().join("data/seed/targets.csv")).expect("read book");
    let book: Vec<&str> = text.lines().take(601).collect();
    let path = store.path().join("book.csv");
    std::fs::write(&path, book.join("\n") + "\n").expect("write book");
    let seed = format!("{}/data/seed/targets.csv", support::repo().display());
    let pipeline = store.pipeline(|t| support::without_rate_limits(t.replace(&seed, &path.display().to_string())));
    (store, pipeline)
}

/// The webhook alerts the store's snapshots raised: (person, event) pairs of immediate
/// alerts on the webhook channel to people whose webhook is the team's.
fn expected(store: &TestStore) -> BTreeMap<String, usize> {
    store
        .query(
            "SELECT DISTINCT alert_id FROM alerts
             WHERE frequency = 'immediate' AND list_contains(string_split(channels, ','), 'webhook')
               AND team = 'na-enterprise'",
        )
        .iter()
        .map(|r| (r["alert_id"].as_str().unwrap().to_string(), 1))
        .collect()
}

#[test]
fn every_alert_arrives_once_across_kills_resumes_reruns_and_rebuilds() {
    let receiver = Receiver::start();
    let (store, pipeline) = store_with_book(&receiver);
    let night =
        |date: &'static str| vec!["run", "--pipeline", pipeline.as_str(), "--date", date, "--force", "m02,m03,m04"];
    store.ok(&night(NIGHTS[0]));

    // Night 2 is killed while it fetches, then resumed: it commits and delivers.
    let args = night(NIGHTS[1]);
    let mut child = store.command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start");
    support::wait_for("calls in the journal", Duration::from_secs(120), || store.journal_entries() > 100);
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert_eq!(store.manifests().len(), 1, "the killed night committed nothing");
    let resumed = store.ok(&["run", "--resume", "last"]);
    assert!(resumed.contains("alerts          "), "{resumed}");
    let after_night2 = expected(&store);
    assert!(!after_night2.is_empty(), "night 2 raised webhook alerts for the team: {resumed}");
    assert_eq!(receiver.counts(), after_night2, "night 2's alerts, once each");

    // Night 3 is killed while the receiver holds its second message (received, not answered).
    receiver.hold_after.store(receiver.received.lock().unwrap().len() + 1, Ordering::SeqCst);
    let args = night(NIGHTS[2]);
    let mut child = store.command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start");
    support::wait_for("a message held by the receiver", Duration::from_secs(120), || {
        receiver.held.load(Ordering::SeqCst) > 0
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    receiver.hold_after.store(usize::MAX, Ordering::SeqCst);
    // The next delivery sends the rest; the message in flight at the kill is not sent again.
    let (out, err) = store.ok_both(&["deliver", "--pipeline", &pipeline, "--store", &store.store()]);
    assert!(out.contains("1 in doubt"), "{out}\n{err}");
    assert!(err.contains("in doubt: webhook"), "{err}");
    let all = expected(&store);
    assert!(all.len() > after_night2.len() + 1, "night 3 raised more webhook alerts");
    assert_eq!(receiver.counts(), all, "every alert once, the one in flight at the kill included");

    // A rerun of the night (a new generation), a rebuild and another delivery send nothing again.
    let mut rerun = night(NIGHTS[2]);
    rerun.push("--replace");
    let out = store.ok(&rerun);
    assert!(out.contains("already delivered earlier"), "{out}");
    let out = store.ok(&["rebuild", "--pipeline", &pipeline, "--store", &store.store(), "--snapshot", NIGHTS[2]]);
    assert!(out.contains("alerts "), "{out}");
    store.ok(&["deliver", "--pipeline", &pipeline, "--store", &store.store(), "--snapshot", NIGHTS[1]]);
    assert_eq!(receiver.counts(), expected(&store), "nothing was delivered twice");
    assert_eq!(expected(&store), all, "the rerun and the rebuild raised the same alerts");
}

#[test]
fn a_failing_webhook_is_reported_and_served_on_the_next_delivery() {
    let receiver = Receiver::start();
    let (store, pipeline) = store_with_book(&receiver);
    let night =
        |date: &'static str| vec!["run", "--pipeline", pipeline.as_str(), "--date", date, "--force", "m02,m03,m04"];
    store.ok(&night(NIGHTS[0]));
    receiver.status.store(500, Ordering::SeqCst);
    let (out, _) = store.exits(3, &night(NIGHTS[1]));
    assert!(out.contains("failed (retried on the next delivery)"), "{out}");
    assert!(receiver.counts().is_empty());

    receiver.status.store(200, Ordering::SeqCst);
    let out = store.ok(&["deliver", "--pipeline", &pipeline, "--store", &store.store()]);
    assert!(out.contains("delivered") && out.contains("webhook"), "{out}");
    let want = expected(&store);
    assert!(!want.is_empty());
    assert_eq!(receiver.counts(), want, "the failed messages, once each");
    let out = store.ok(&["deliver", "--pipeline", &pipeline, "--store", &store.store()]);
    assert!(out.contains("nothing new delivered"), "{out}");
    assert_eq!(receiver.counts(), want);
}

#[test]
fn daily_digests_go_once_as_rfc_5322_messages() {
    let receiver = Receiver::start();
    let (store, pipeline) = store_with_book(&receiver);
    for date in NIGHTS {
        store.ok(&["run", "--pipeline", &pipeline, "--date", date, "--force", "m02,m03,m04"]);
    }
    let digests = store.ok(&["digest", "--pipeline", &pipeline, "--store", &store.store(), "--date", NIGHTS[2]]);
    assert!(digests.contains("delivered email"), "{digests}");
    let again = store.ok(&["digest", "--pipeline", &pipeline, "--store", &store.store(), "--date", NIGHTS[2]]);
    assert!(again.contains("nothing new delivered"), "{again}");
    let outbox = support::listing(&store.path().join("store/outbox").join(NIGHTS[2]));
    let digest_files: Vec<&String> = outbox.iter().filter(|f| f.ends_with("digest-2026-08-01.eml")).collect();
    assert!(!digest_files.is_empty(), "{outbox:?}");
    let message = std::fs::read_to_string(digest_files[0]).expect("read eml");
    assert!(message.contains("\r\nSubject: ") && message.contains("\r\nMessage-ID: <"), "{message}");
    assert!(message.contains("Content-Type: text/plain; charset=utf-8"), "{message}");
    let lines = message.split("\r\n\r\n").nth(1).unwrap_or_default().lines().filter(|l| l.starts_with("• ")).count();
    let person = std::path::Path::new(digest_files[0]).parent().and_then(|p| p.file_name()).unwrap().to_string_lossy();
    let rows = store.query(&format!(
        "SELECT count(DISTINCT event_id) AS n FROM alerts
         WHERE person = '{person}' AND frequency = 'daily_digest' AND to_snapshot = '{}'
           AND list_contains(string_split(channels, ','), 'email')",
        NIGHTS[2]
    ));
    assert_eq!(Some(lines as u64), rows[0]["n"].as_u64(), "one line per digest alert of {person}: {message}");
}
