//! The daemon, left alone with seconds-level cron expressions on the simulated
//! providers: it fires on time, never starts a job that is still running, runs the
//! export after the refresh succeeded, catches a missed run up once, stops cleanly
//! on SIGTERM (the run gives its lock back) and resumes the interrupted run on the
//! next start. Every wait is for an event in the store or the log, never a time.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{TestStore, wait_for};

/// Start and end records of a job, in order.
fn records(store: &TestStore, job: &str) -> Vec<(PathBuf, Value)> {
    let dir = store.path().join("store/history/jobs").join(job);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, value))
        })
        .collect()
}

fn ends(store: &TestStore, job: &str) -> Vec<Value> {
    records(store, job)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with("-end.json"))
        .map(|(_, v)| v)
        .collect()
}

fn starts(store: &TestStore, job: &str) -> Vec<Value> {
    records(store, job)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with("-start.json"))
        .map(|(_, v)| v)
        .collect()
}

fn schedules(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("schedules.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn daemon(store: &TestStore, schedules: &Path, log: &Path) -> Child {
    store
        .command(&[
            "schedule",
            "--schedules",
            &schedules.display().to_string(),
            "--store",
            &store.store(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the daemon")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

fn exits(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    wait_for(what, Duration::from_secs(120), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status.unwrap()
}

/// The daemon's /metrics, parsed by `prometheus_client`'s OpenMetrics parser (from PyPI):
/// one JSON line per sample.
fn metrics(port: &str) -> String {
    let script = r#"
import sys, json, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = urllib.request.urlopen("http://127.0.0.1:" + sys.argv[1] + "/metrics").read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(port).output().expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "install the parser: python3 -m pip install 'prometheus-client==0.21.1'\n{stderr}"
    );
    assert!(out.status.success(), "/metrics did not parse: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The value of one sample (0 when absent).
fn sample(parsed: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parsed
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or(0.0)
}

/// The HTTP status of a GET on the daemon.
fn http_status(port: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_daemon_fires_never_overlaps_runs_dependents_stops_on_sigterm_and_resumes() {
    let store = TestStore::new();
    let repo = support::repo();
    let pipeline = repo.join("pipelines/nightly.toml").display().to_string();
    let queries = repo.join("queries/export").display().to_string();
    // Every 2 s; each run takes longer (BuiltWith is asked again for 24 targets at 8 a second, each
    // answer 2.5 s late: calls are still on the wire when the first answers are journaled), so fire
    // times come while it runs.
    let file = schedules(
        store.path(),
        &format!(
            r#"
[daemon]
stop_grace_secs = 60
[[jobs]]
name = "nightly"
kind = "run"
pipeline = "{pipeline}"
cron = "*/2 * * * * *"
catch_up = "none"
args = ["--limit", "24", "--replace", "--force", "m02", "--fault", "builtwith.latency_ms=2500"]
[[jobs]]
name = "exports"
kind = "export"
pipeline = "{pipeline}"
queries = "{queries}"
out = "site"
audience = "morgan.blake"
after = "nightly"
"#
        ),
    );
    let checked = store.ok(&["schedule", "--schedules", &file.display().to_string(), "--check"]);
    assert!(
        checked.contains("nightly (run, line")
            && checked.contains("exports (export")
            && checked.contains("after nightly"),
        "{checked}"
    );

    let log = store.path().join("daemon.log");
    let mut child = daemon(&store, &file, &log);
    wait_for("two refreshes and their exports", Duration::from_secs(300), || {
        ends(&store, "nightly").len() >= 2 && ends(&store, "exports").len() >= 2
    });
    // Never two at once: each execution starts after the one before ended.
    let runs = ends(&store, "nightly");
    for pair in runs.windows(2) {
        assert!(pair[1]["started_at"].as_str() >= pair[0]["ended_at"].as_str(), "overlap: {pair:?}");
    }
    assert!(runs.iter().all(|r| r["outcome"] == "succeeded"), "{runs:?}");
    assert!(log_of(&log).contains("still running: not started again"), "{}", log_of(&log));
    // Each export started after a refresh succeeded, and published the site.
    for export in starts(&store, "exports") {
        assert_eq!(export["trigger"], serde_json::json!({"kind": "after", "detail": "nightly"}));
    }
    let exports = ends(&store, "exports");
    assert!(exports.iter().all(|e| e["outcome"] == "succeeded"), "{exports:?}");
    assert!(store.path().join("site/current.json").is_file());
    // A run's end record carries its summary: snapshot, calls, spend.
    assert!(runs[0]["summary"]["counts"]["targets"].as_u64().is_some(), "{:?}", runs[0]);

    // /metrics: parsed as OpenMetrics text by the Prometheus client's own parser, and
    // counting what the records say.
    let port = log_of(&log)
        .lines()
        .find_map(|l| l.split("on http://").nth(1).map(|a| a.trim().rsplit(':').next().unwrap_or("").to_string()))
        .expect("the daemon names its metrics address");
    let parsed = metrics(&port);
    let finished = ends(&store, "nightly").iter().filter(|e| e["outcome"] == "succeeded").count() as f64;
    let executions =
        sample(&parsed, "partnerforge_job_executions_total", &[("job", "nightly"), ("outcome", "succeeded")]);
    assert!(executions >= finished - 1.0 && executions <= finished + 1.0, "{executions} vs {finished}: {parsed}");
    assert!(
        sample(&parsed, "partnerforge_runs_total", &[("pipeline", "nightly"), ("status", "completed")]) >= 1.0,
        "{parsed}"
    );
    assert!(sample(&parsed, "partnerforge_provider_calls_total", &[("provider", "builtwith")]) >= 24.0, "{parsed}");
    assert!(
        sample(
            &parsed,
            "partnerforge_call_latency_seconds_count",
            &[("provider", "builtwith"), ("endpoint", "domain")]
        ) >= 24.0,
        "{parsed}"
    );
    assert!(
        sample(&parsed, "partnerforge_job_last_success_timestamp_seconds", &[("job", "exports")]) > 1.7e9,
        "{parsed}"
    );
    assert!(sample(&parsed, "partnerforge_job_next_fire_timestamp_seconds", &[("job", "nightly")]) > 1.7e9, "{parsed}");
    assert_eq!(http_status(&port, "/health"), 200);
    assert_eq!(http_status(&port, "/ready"), 200);

    // SIGTERM while a refresh runs: the run stops as an interactive one does, gives the
    // lock back, and the daemon exits.
    wait_for("a refresh under way", Duration::from_secs(120), || {
        starts(&store, "nightly").len() > ends(&store, "nightly").len() && store.journal_entries() > 0
    });
    sigterm(&child);
    let status = exits(&mut child, "the daemon to stop");
    assert!(status.success(), "{status:?}\n{}", log_of(&log));
    let last = ends(&store, "nightly").pop().unwrap();
    assert_eq!(last["outcome"], "interrupted", "{last:?}");
    assert!(store.lock_holder("nightly").is_none(), "the lock was given back");

    // The run history says what happened, run by run, and who started it.
    let listed: Vec<Value> =
        serde_json::from_str(&store.ok(&["runs", "--store", &store.store(), "--last", "100", "--format", "json"]))
            .unwrap();
    assert!(listed.iter().all(|r| r["trigger"] == "schedule:nightly"), "{listed:?}");
    assert!(listed.iter().any(|r| r["status"] == "interrupted"), "{listed:?}");
    let done = listed.iter().find(|r| r["status"] == "completed").expect("a completed run");
    assert!(done["calls"].as_u64().unwrap() > 0 && done["snapshot"].as_str().is_some(), "{done:?}");
    let shown = store.ok(&["runs", "--store", &store.store(), "show", done["run_id"].as_str().unwrap()]);
    assert!(shown.contains("trigger         schedule:nightly") && shown.contains("builtwith"), "{shown}");
    let interrupted = listed.iter().find(|r| r["status"] == "interrupted").unwrap();
    assert!(interrupted["error"].as_str().unwrap().contains("interrupted by SIGTERM"), "{interrupted:?}");

    // The audit log: who started what, and what was published.
    let audit: Vec<Value> =
        serde_json::from_str(&store.ok(&["audit", "--store", &store.store(), "--format", "json"])).unwrap();
    let by = |action: &str, actor: &str| audit.iter().filter(|e| e["action"] == action && e["actor"] == actor).count();
    assert!(by("run.started", "schedule:nightly") >= 3 && by("run.ended", "schedule:nightly") >= 3, "{audit:?}");
    assert!(by("export.published", "schedule:exports") >= 2, "{audit:?}");

    // The next start resumes it (reusing its journal), and runs nothing else twice.
    let log2 = store.path().join("daemon2.log");
    let mut child = daemon(&store, &file, &log2);
    wait_for("the interrupted refresh resumed and finished", Duration::from_secs(300), || {
        ends(&store, "nightly").last().is_some_and(|e| e["outcome"] == "succeeded")
            && starts(&store, "nightly").iter().any(|s| s["trigger"]["kind"] == "resume")
    });
    let resumed = starts(&store, "nightly").into_iter().find(|s| s["trigger"]["kind"] == "resume").unwrap();
    let args: Vec<&str> = resumed["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.windows(2).any(|w| w == ["--resume", "last"]), "{args:?}");
    sigterm(&child);
    assert!(exits(&mut child, "the daemon to stop again").success());
}

#[test]
fn a_missed_run_is_caught_up_once_not_once_per_missed_period() {
    let store = TestStore::new();
    let pipeline = support::repo().join("pipelines/nightly.toml").display().to_string();
    // Yearly, on 1 January: its last fire time has passed; nothing has run yet.
    let file = schedules(
        store.path(),
        &format!(
            r#"
[[jobs]]
name = "hourly"
kind = "run"
pipeline = "{pipeline}"
cron = "0 0 0 1 1 *"
args = ["--limit", "3", "--replace"]
[[jobs]]
name = "quiet"
kind = "run"
pipeline = "{pipeline}"
cron = "0 0 0 1 1 *"
catch_up = "none"
"#
        ),
    );
    let log = store.path().join("daemon.log");
    let mut child = daemon(&store, &file, &log);
    wait_for("the catch-up run", Duration::from_secs(120), || ends(&store, "hourly").len() == 1);
    let first = starts(&store, "hourly");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["trigger"]["kind"], "catch_up");
    sigterm(&child);
    assert!(exits(&mut child, "the daemon to stop").success());
    // Started again: the last success is after the last fire time, so nothing runs.
    let log2 = store.path().join("daemon2.log");
    let mut child = daemon(&store, &file, &log2);
    wait_for("the daemon to plan its jobs", Duration::from_secs(60), || log_of(&log2).contains("next fire time"));
    sigterm(&child);
    assert!(exits(&mut child, "the daemon to stop").success());
    assert_eq!(starts(&store, "hourly").len(), 1, "caught up twice: {}", log_of(&log2));
    // catch_up = "none" waits for its time.
    assert!(starts(&store, "quiet").is_empty());
}

#[test]
fn a_one_off_run_writes_its_metrics_as_a_node_exporter_textfile() {
    let store = TestStore::new();
    let file = store.path().join("partnerforge.prom");
    store.ok(&["run", "--date", "2026-11-23", "--limit", "10", "--metrics-file", &file.display().to_string()]);
    // The classic text format's own parser (what node-exporter's textfile collector reads).
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&file).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        sample(&parsed, "partnerforge_runs_total", &[("pipeline", "nightly"), ("status", "completed")]),
        1.0,
        "{parsed}"
    );
    assert!(sample(&parsed, "partnerforge_provider_calls_total", &[("provider", "similarweb")]) > 0.0, "{parsed}");
    assert!(
        parsed.lines().any(|l| l.contains("\"partnerforge_runs_total\"") && l.contains("\"type\": \"counter\"")),
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "partnerforge_circuit_state", &[("provider", "similarweb"), ("state", "closed")]),
        1.0,
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "partnerforge_module_executions_total", &[("module", "m03"), ("status", "completed")]),
        1.0,
        "{parsed}"
    );
    // A refused run writes its metrics too.
    store.exits(4, &["run", "--date", "2026-11-23", "--limit", "10", "--metrics-file", &file.display().to_string()]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("status=\"refused\""), "{text}");

    // SimilarWeb failing every call: its circuit opens, its modules fail and the calls past it are skipped.
    let failing = [
        "run",
        "--date",
        "2026-11-24",
        "--limit",
        "40",
        "--fault",
        "similarweb.error_rate=1",
        "--metrics-file",
        &file.display().to_string(),
    ];
    store.exits(3, &failing);
    let out = Command::new("python3").arg("-c").arg(script).arg(&file).output().expect("python3");
    let parsed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(sample(&parsed, "partnerforge_runs_total", &[("status", "partial")]), 1.0, "{parsed}");
    assert_eq!(
        sample(&parsed, "partnerforge_circuit_state", &[("provider", "similarweb"), ("state", "closed")]),
        0.0,
        "{parsed}"
    );
    assert!(sample(&parsed, "partnerforge_circuit_opened_total", &[("provider", "similarweb")]) >= 1.0, "{parsed}");
    assert_eq!(
        sample(&parsed, "partnerforge_module_executions_total", &[("module", "m03"), ("status", "failed")]),
        1.0,
        "{parsed}"
    );
    assert_eq!(
        sample(&parsed, "partnerforge_module_executions_total", &[("module", "m02"), ("status", "completed")]),
        1.0,
        "{parsed}"
    );
    // And `runs show` says so.
    let url = store.store();
    let runs: Value =
        serde_json::from_str(&store.ok(&["runs", "--store", &url, "--last", "1", "--format", "json"])).unwrap();
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let shown = store.ok(&["runs", "--store", &url, "show", &run_id]);
    assert!(shown.contains("circuits        similarweb open") || shown.contains("similarweb half-open"), "{shown}");
    assert!(shown.contains("skipped calls by module") && shown.contains("m03"), "{shown}");
}
