//! The whole path against a real S3-compatible server on loopback (moto_server,
//! from the `moto[server]` PyPI package that `.ci/run` installs): run, a second
//! incremental night, a replacement, query and export, and create-only commits.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::TestStore;

/// A moto_server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3() -> S3Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("moto_server could not start ({e}): install it with pip install 'moto[server]'"));
    wait_listening(child, port)
}

/// moto's server answering one request at a time. Its threaded server checks
/// `If-None-Match: *` and then writes, without a lock, so two racing create-only
/// writes can both succeed there — S3 itself decides them atomically. Races of
/// create-only writes are tested against this one, which decides them in order as S3 does.
fn start_s3_serial() -> S3Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = "import sys\n\
from werkzeug.serving import run_simple\n\
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n\
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)\n";
    let child = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 could not start moto ({e}): install it with pip install 'moto[server]'"));
    wait_listening(child, port)
}

fn wait_listening(child: Child, port: u16) -> S3Server {
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen on {endpoint}");
        std::thread::sleep(Duration::from_millis(100));
    }
    S3Server { child, endpoint }
}

/// A plain HTTP request to the S3 server (moto does not check signatures); returns the response.
fn s3_request(endpoint: &str, request_line: &str) -> String {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "{request_line} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `PUT /bucket`.
fn create_bucket(endpoint: &str, bucket: &str) {
    let response = s3_request(endpoint, &format!("PUT /{bucket}"));
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "creating the bucket: {response}"
    );
}

#[test]
fn the_nightly_path_runs_on_s3() {
    let s3 = start_s3();
    create_bucket(&s3.endpoint, "pf-bucket");
    let store = TestStore::new()
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true");
    let url = "s3://pf-bucket/partnerforge";

    let first = store.ok(&["run", "--store", url, "--limit", "15", "--date", "2026-11-20"]);
    assert!(first.contains("snapshot 2026-11-20 committed") && first.contains(url), "{first}");
    let second = store.ok(&["run", "--store", url, "--limit", "15", "--date", "2026-11-21"]);
    assert!(second.contains("carried forward") && second.contains("from snapshot 2026-11-20"), "{second}");
    let refused = store.fails(&["run", "--store", url, "--limit", "15", "--date", "2026-11-21"]);
    assert!(refused.contains("already has a snapshot"), "{refused}");
    let replaced = store.ok(&["run", "--store", url, "--limit", "15", "--date", "2026-11-21", "--replace"]);
    assert!(replaced.contains("generation 2") && replaced.contains("0 made"), "{replaced}");
    // The Delta tables on S3, read by Python's `deltalake`, equal `query` (each date once).
    let options = [
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let report = support::read_with_deltalake(&store, url, &options);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["tables"]["targets"]["version"], 2, "{report}");

    // Readers copy the snapshot's files to a local cache for DuckDB.
    let out = store.ok(&[
        "query",
        "--store",
        url,
        "--format",
        "json",
        "SELECT count(*) AS n, count(DISTINCT snapshot_id) AS s FROM targets_history",
    ]);
    let rows: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows[0]["s"], 2, "{rows}");
    assert!(rows[0]["n"].as_u64().unwrap() >= 20, "{rows}");
    let site = store.path().join("site");
    store.ok(&["export", "--store", url, "--out", site.to_str().unwrap()]);
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("current.json")).unwrap()).unwrap();
    let version = site.join("versions").join(pointer["version"].as_str().unwrap());
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(version.join("targets-0001.json")).unwrap()).unwrap();
    assert!(!list.is_empty());
    assert!(store.path().join("cache").exists(), "the S3 snapshot was cached locally");

    // A run killed in the middle resumes on S3 too.
    let mut child = store
        .command(&[
            "run",
            "--store",
            url,
            "--limit",
            "40",
            "--date",
            "2026-11-22",
            "--force",
            "m03,m04,m05",
            "--fault",
            "similarweb.latency_ms=100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Killed once a few groups of answers are in the run's journal on S3.
    while s3_request(&s3.endpoint, "GET /pf-bucket?list-type=2&prefix=partnerforge/runs/").matches("/journal/").count()
        < 3
    {
        assert!(Instant::now() < deadline, "no journal appeared on S3");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (resumed, status) = store.ok_both(&["run", "--store", url, "--resume", "last"]);
    assert!(status.contains("calls already made are reused"), "{status}");
    assert!(resumed.contains("snapshot 2026-11-22 committed"), "{resumed}");

    // A night stored by reference: on S3 its base is copied server-side into the Delta
    // table beside its own file, with a deletion vector; `deltalake` reads what `query` does.
    let by_reference = store.pipeline(|t| {
        t.replace("[fetch]", "[run]\ntargets_by_reference_rows = 0\ntargets_rewrite_share = 1.0\n\n[fetch]")
    });
    store.ok(&["run", "--store", url, "--limit", "40", "--date", "2026-11-23", "--pipeline", &by_reference]);
    let listed = keys(&s3.endpoint, "pf-bucket", "partnerforge/delta/targets/snapshot_date=2026-11-23/");
    assert!(listed.contains("snapshot_id=2026-11-23/g0001-base.parquet"), "{listed}");
    let report = support::read_with_deltalake(&store, url, &options);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["tables"]["targets"]["deletion_vectors"], true, "{report}");
}

/// The standard `AWS_*` settings for the moto server at `endpoint`.
fn on_moto(store: TestStore, endpoint: &str) -> TestStore {
    store
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
}

/// Object keys below `prefix` of a bucket, as moto lists them.
fn keys(endpoint: &str, bucket: &str, prefix: &str) -> String {
    s3_request(endpoint, &format!("GET /{bucket}?list-type=2&prefix={prefix}"))
}

#[test]
fn on_s3_two_breakers_and_two_committers_each_get_one_winner() {
    use partnerforge::store::Store;
    use partnerforge::store::lock::{LockHolder, hostname};
    let s3 = start_s3_serial();
    create_bucket(&s3.endpoint, "pf-race");
    let options = [
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ];
    let store = Store::open_with("s3://pf-race/partnerforge", &options).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        store.check_conditional_writes().await.unwrap();
        let ttl = Duration::from_secs(3600);
        for round in 0..5 {
            // A lease left by a process that is gone on this host.
            let pipeline = format!("race-{round}");
            let dead = LockHolder {
                run_id: "run-dead".into(),
                lease: "run-dead/1".into(),
                pipeline: pipeline.clone(),
                host: hostname(),
                pid: u32::MAX,
                started_at: chrono::Utc::now().to_rfc3339(),
                ttl_secs: 3600,
                heartbeat_at: None,
            };
            let path = format!("locks/{pipeline}/0000000001.json");
            store.put(&path, serde_json::to_vec(&dead).unwrap().into()).await.unwrap();
            let (a, b) = tokio::join!(
                store.acquire_lock(&pipeline, "run-a", ttl, true),
                store.acquire_lock(&pipeline, "run-b", ttl, true)
            );
            assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|w| **w).count(), 1, "round {round}: {a:?} / {b:?}");
            let loser = a.err().or(b.err()).unwrap().to_string();
            assert!(loser.contains("in progress"), "the loser is told who holds it: {loser}");

            let (a, b) =
                tokio::join!(store.claim_generation("2026-11-20", "a"), store.claim_generation("2026-11-20", "b"));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_ne!(a, b, "two writers of one date never share a generation folder");
        }
    });
}

#[test]
fn on_s3_a_run_killed_at_several_points_resumes_to_the_same_snapshot_paying_at_most_the_calls_on_the_wire() {
    use support::crash::{CONCURRENCY, DATE, Provider, assert_same_snapshot, kill_when, run_args, snapshot_folder};
    let s3 = start_s3();
    let dir = tempfile::tempdir().unwrap();
    let provider = Provider::start(dir.path().join("straight.jsonl"), 15);
    let (straight, pipeline) = provider.store();
    let url = straight.store();
    straight.ok(&run_args(&pipeline, &url));
    let calls = straight.manifests()[0].1["counts"]["calls"].as_u64().unwrap() as usize;
    let reference = snapshot_folder(&straight);
    drop(provider);

    let mut crashed = 0;
    for i in 1..=4 {
        let bucket = format!("pf-kill-{i}");
        create_bucket(&s3.endpoint, &bucket);
        let provider = Provider::start(dir.path().join(format!("bill-{i}.jsonl")), 15);
        let (killed, pipeline) = provider.store();
        let killed = on_moto(killed, &s3.endpoint);
        let url = format!("s3://{bucket}/partnerforge");
        // Group commits are objects on S3: kill after a share of the run's answers in groups of any size.
        let groups = calls * i / 10 / CONCURRENCY;
        let context = format!("killed on S3 after {groups} journal objects");
        let reached = || keys(&s3.endpoint, &bucket, "partnerforge/runs/").matches("/journal/").count() >= groups;
        let committed = || keys(&s3.endpoint, &bucket, "partnerforge/snapshots/").contains("_manifest.json");
        if kill_when(&killed, &run_args(&pipeline, &url), &context, reached, committed) {
            crashed += 1;
            let (out, status) = killed.ok_both(&["run", "--store", &url, "--resume", "last"]);
            assert!(out.contains(&format!("snapshot {DATE} committed")), "{context}: {out}");
            assert!(status.contains("calls already made are reused"), "{context}: {status}");
        }
        // `query` copies the committed snapshot's files into the local cache.
        killed.ok(&["query", "--store", &url, "SELECT count(*) FROM targets"]);
        let copied = killed.path().join(format!("cache/snapshots/{DATE}/0001"));
        assert_same_snapshot(&straight, &copied, &reference, &context);
        let twice = provider.paid_twice();
        assert!(twice <= CONCURRENCY, "{context}: {twice} answers paid twice");
    }
    assert!(crashed >= 3, "only {crashed} of 4 kills landed before the commit");
}
