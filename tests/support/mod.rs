//! A small harness so each end-to-end test reads like a user's session: run the
//! real `partnerforge` binary from the repository root against a temporary
//! store, and on failure print the command, its stdout and stderr, and a
//! listing of the store.

#![allow(dead_code)]

pub mod crash;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary store plus the environment runs get.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl TestStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The `.env` the commands read (empty unless a test writes it), never the checkout's.
        std::fs::write(dir.path().join(".env"), "").expect("an empty .env");
        Self { dir, env: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> String {
        self.path().join("store").display().to_string()
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes a copy of `pipelines/nightly.toml` changed by `edit` into the test's
    /// folder (inputs and model still point at the repository) and returns its path.
    pub fn pipeline(&self, edit: impl Fn(String) -> String) -> String {
        let text = std::fs::read_to_string(repo().join("pipelines/nightly.toml")).expect("read nightly.toml");
        let root = repo().display().to_string();
        let text = text
            .replace("\"data/seed/", &format!("\"{root}/data/seed/"))
            .replace("\"pipelines/scoring/", &format!("\"{root}/pipelines/scoring/"))
            .replace("\"pipelines/changes.toml", &format!("\"{root}/pipelines/changes.toml"))
            .replace("\"pipelines/alerts.toml", &format!("\"{root}/pipelines/alerts.toml"))
            .replace("\"pipelines/signals.toml", &format!("\"{root}/pipelines/signals.toml"));
        let path = self.path().join("pipelines").join("nightly.toml");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create pipelines/");
        std::fs::write(&path, edit(text)).expect("write pipeline");
        path.display().to_string()
    }

    /// The command for `partnerforge ARGS`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_partnerforge"));
        command.current_dir(repo()).args(args);
        if matches!(args.first(), Some(&"run") | Some(&"plan") | Some(&"query") | Some(&"export"))
            && !args.contains(&"--store")
        {
            command.args(["--store", &self.store()]);
        }
        for var in [
            "GREENHOUSE_BASE_URL",
            "LEVER_BASE_URL",
            "ASHBY_BASE_URL",
            "NEWS_BASE_URL",
            "BUILTWITH_API_KEY",
            "SIMILARWEB_API_KEY",
            "BUILTWITH_BASE_URL",
            "SIMILARWEB_BASE_URL",
            "YAHOO_FINANCE_BASE_URL",
            "YAHOO_COOKIE_URL",
            "PARTNERFORGE_STORE",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_ALLOW_HTTP",
            "RUST_LOG",
        ] {
            command.env_remove(var);
        }
        command.env("PARTNERFORGE_CACHE", self.path().join("cache"));
        command.env("PARTNERFORGE_ENV_FILE", self.path().join(".env"));
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Runs `partnerforge ARGS`; `--store` is added for the commands that take it.
    pub fn pf(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("start partnerforge")
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.pf(args);
        if !out.status.success() {
            panic!("{}", self.explain(args, &out));
        }
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs and asserts success, returning stdout and stderr (status lines go to stderr).
    pub fn ok_both(&self, args: &[&str]) -> (String, String) {
        let out = self.pf(args);
        if !out.status.success() {
            panic!("{}", self.explain(args, &out));
        }
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// Runs and asserts the exit code, returning stdout and stderr.
    pub fn exits(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.pf(args);
        if out.status.code() != Some(code) {
            panic!("expected exit code {code}\n{}", self.explain(args, &out));
        }
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    }

    /// The newest lease of the pipeline's lock, unless it was given back.
    pub fn lock_holder(&self, pipeline: &str) -> Option<serde_json::Value> {
        let folder = self.path().join("store/locks").join(pipeline);
        let newest = listing(&folder).into_iter().filter(|f| f.ends_with(".json")).max()?;
        if std::path::Path::new(&newest.replace(".json", ".released")).exists() {
            return None;
        }
        let text = std::fs::read_to_string(&newest).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Answered calls on record in the journals of unfinished runs (a line each).
    pub fn journal_entries(&self) -> usize {
        listing(&self.path().join("store/runs"))
            .iter()
            .filter(|f| f.contains("journal"))
            .map(|f| std::fs::read(f).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0))
            .sum()
    }

    /// Runs and asserts failure, returning stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.pf(args);
        if out.status.success() {
            panic!("expected failure\n{}", self.explain(args, &out));
        }
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    pub fn explain(&self, args: &[&str], out: &Output) -> String {
        format!(
            "command: partnerforge {}\ncwd: {}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}\n--- store\n{}",
            args.join(" "),
            repo().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            listing(&self.path().join("store")).join("\n")
        )
    }

    /// `query --format json` parsed into rows.
    pub fn query(&self, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let out = self.ok(&["query", "--format", "json", sql]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(out.trim()).expect("query --format json prints JSON");
        rows.into_iter().map(|r| r.as_object().cloned().expect("row object")).collect()
    }

    /// Every manifest in the store, by path.
    pub fn manifests(&self) -> Vec<(PathBuf, serde_json::Value)> {
        let mut found: Vec<PathBuf> = listing(&self.path().join("store"))
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.ends_with("_manifest.json"))
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("read manifest");
                (p, serde_json::from_str(&text).expect("manifest is JSON"))
            })
            .collect()
    }
}

/// A store whose runs talk to `base` as every real provider, with these keys.
pub fn against(base: &str, builtwith_key: &str, similarweb_key: &str) -> TestStore {
    let mut store = TestStore::new().env("BUILTWITH_API_KEY", builtwith_key).env("SIMILARWEB_API_KEY", similarweb_key);
    for provider in partnerforge::config::ProviderId::ALL {
        store = store.env(provider.base_url_env(), base);
    }
    // Yahoo's session cookie comes from its own host (fc.yahoo.com): here, the simulator's stand-in.
    store.env(
        partnerforge::providers::yahoo::COOKIE_URL_ENV,
        &format!("{base}{}", partnerforge::simulate::YAHOO_COOKIE_PATH),
    )
}

/// Runs `partnerforge ARGS` off the async runtime (for tests that serve a simulator from
/// their own runtime meanwhile); gives the store back with the output.
pub async fn pf_blocking(store: TestStore, args: &[&str]) -> (TestStore, Output) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = store.pf(&args);
        (store, out)
    })
    .await
    .expect("the command's thread")
}

/// A pipeline text without rate limits (`rate = {…}` and `endpoint_rates = {…}` lines): for
/// tests that are not about pacing.
pub fn without_rate_limits(text: String) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("rate = {") && !l.trim_start().starts_with("endpoint_rates = {"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (polling) until `ready`, failing the test after `deadline`.
pub fn wait_for(what: &str, deadline: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !ready() {
        assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl TestStore {
    /// Starts a slow run (every SimilarWeb answer takes 300 ms) and waits until it holds the lock.
    pub fn start_slow_run(&self, date: &str, output: impl Fn() -> std::process::Stdio) -> std::process::Child {
        let child = self
            .command(&["run", "--limit", "60", "--date", date, "--fault", "similarweb.latency_ms=300"])
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("start the run");
        wait_for("the run to take the lock", std::time::Duration::from_secs(30), || {
            self.lock_holder("nightly").is_some()
        });
        child
    }
}

/// Every file below `dir`, recursively, as paths.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(listing(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out.sort();
    out
}

/// `tests/delta_read.py` over a store: its JSON report (it exits 1 on a difference).
pub fn read_with_deltalake(store: &TestStore, url: &str, options: &[(&str, &str)]) -> serde_json::Value {
    let mut command = std::process::Command::new("python3");
    command
        .current_dir(repo())
        .args(["tests/delta_read.py", env!("CARGO_BIN_EXE_partnerforge"), url])
        .env("PARTNERFORGE_CACHE", store.path().join("cache"));
    for (key, value) in options {
        command.arg("--storage-option").arg(format!("{key}={value}")).env(key, value);
    }
    let out = command.output().expect("python3 tests/delta_read.py (pip install deltalake)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "delta_read.py: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
