//! The exported sites as their audiences get them: each holds only its accounts and
//! the fields its role may see (an SDR's has no financial value in any file), every
//! file is in its manifest with its SHA-256, a new export switches `current.json`
//! without touching the version before — and the dashboard works in a real browser
//! (headless Chromium, driven by `tests/browser/dashboard.mjs` with playwright-core),
//! served by `python3 -m http.server` as an operator would.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::TestStore;

/// Financial values an SDR may never see, as JSON keys.
const FINANCIAL: [&str; 6] = ["revenue", "gross_margin", "operating_margin", "revenue_growth", "market_cap", "price"];

fn files_under(dir: &Path) -> Vec<PathBuf> {
    support::listing(dir).into_iter().map(PathBuf::from).filter(|p| p.is_file()).collect()
}

fn keys_in(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                keys_in(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys_in(v, out)),
        _ => {}
    }
}

/// The published version's folder of a site, and its manifest.
fn published(site: &Path) -> (PathBuf, Value) {
    let pointer: Value = serde_json::from_slice(&std::fs::read(site.join("current.json")).unwrap()).unwrap();
    let folder = site.join("versions").join(pointer["version"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    (folder, manifest)
}

fn target_files(folder: &Path) -> BTreeSet<String> {
    std::fs::read_dir(folder.join("targets"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn each_audience_gets_its_accounts_and_fields_and_the_dashboard_works_in_a_browser() {
    let store = TestStore::new();
    store.ok(&["run", "--date", "2026-11-23", "--limit", "200"]);
    store.ok(&["run", "--date", "2026-11-24", "--limit", "200"]);
    let sites = store.path().join("sites");
    let out = store.ok(&["export", "--out", sites.to_str().unwrap(), "--all-audiences"]);
    assert!(out.contains("leo.martins (person sdr, no financials)"), "{out}");

    // Every file of a version is in its manifest, with its SHA-256.
    for site in ["morgan.blake", "dana.reyes", "leo.martins", "na-sdrs", "yuki.nakamura"] {
        let (folder, manifest) = published(&sites.join(site));
        let listed: BTreeSet<String> =
            manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect();
        let on_disk: BTreeSet<String> = files_under(&folder)
            .iter()
            .map(|p| p.strip_prefix(&folder).unwrap().display().to_string())
            .filter(|p| p != "manifest.json")
            .collect();
        assert_eq!(listed, on_disk, "{site}");
        for file in manifest["files"].as_array().unwrap() {
            let bytes = std::fs::read(folder.join(file["path"].as_str().unwrap())).unwrap();
            let sha = partnerforge::config::sha256_hex(&bytes);
            assert_eq!(file["sha256"].as_str(), Some(sha.as_str()), "{site} {}", file["path"]);
        }
        assert_eq!(manifest["snapshot_id"], "2026-11-24");
    }

    // The role table: Leo (SDR) and Dana (manager) of one team see the same accounts;
    // Leo's files hold no financial value anywhere, Dana's do, and only Dana's the spend.
    let (leo, leo_manifest) = published(&sites.join("leo.martins"));
    let (dana, _) = published(&sites.join("dana.reyes"));
    let (admin, admin_manifest) = published(&sites.join("morgan.blake"));
    assert_eq!(target_files(&leo), target_files(&dana));
    assert!(!target_files(&leo).is_empty());
    let keys = |folder: &Path| {
        let mut keys = BTreeSet::new();
        for file in files_under(folder) {
            let value: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            keys_in(&value, &mut keys);
        }
        keys
    };
    let leo_keys = keys(&leo);
    for field in FINANCIAL {
        assert!(!leo_keys.contains(field), "the SDR's site holds {field}");
    }
    let dana_keys = keys(&dana);
    assert!(dana_keys.contains("revenue") && dana_keys.contains("market_cap"), "the manager's site holds financials");
    assert!(dana.join("spend.json").is_file() && !leo.join("spend.json").exists());
    assert_eq!(leo_manifest["audience"]["sees_financials"], false);
    // Alert feeds: each person's site holds their own only.
    let feeds = |folder: &Path| -> BTreeSet<String> {
        std::fs::read_dir(folder.join("alerts"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default()
    };
    assert!(feeds(&leo).iter().all(|f| f == "leo.martins.json"), "{:?}", feeds(&leo));
    assert!(feeds(&dana).iter().all(|f| f == "dana.reyes.json"), "{:?}", feeds(&dana));
    // The admin sees every scored account (a family's sites are one account, each with its
    // page); APAC's AE only APAC's.
    let scored = store.query("SELECT count(*) AS n FROM targets")[0]["n"].as_u64().unwrap();
    // One per account, counted from the family columns (the `listed` the lists read must agree).
    let accounts = store.query(
        "SELECT count(*) AS n FROM targets WHERE family_primary IS NULL OR family_primary = domain \
         OR family_primary NOT IN (SELECT domain FROM targets)",
    )[0]["n"]
        .as_u64()
        .unwrap();
    let listed = store.query("SELECT count(*) AS n FROM targets WHERE listed")[0]["n"].as_u64().unwrap();
    assert_eq!(listed, accounts);
    assert!(accounts <= scored);
    assert_eq!(admin_manifest["accounts"].as_u64(), Some(accounts));
    assert_eq!(target_files(&admin).len() as u64, scored);
    let (apac, _) = published(&sites.join("yuki.nakamura"));
    let apac_countries = ["AU", "NZ", "JP", "SG", "IN"];
    for file in target_files(&apac) {
        let detail: Value = serde_json::from_slice(&std::fs::read(apac.join("targets").join(&file)).unwrap()).unwrap();
        let country = detail["target"]["country"].as_str().unwrap_or_default();
        assert!(apac_countries.contains(&country), "{file}: {country}");
    }

    // A new export switches the pointer; the version before stays whole.
    let before = published(&sites.join("leo.martins")).0;
    store.ok(&["export", "--out", sites.join("leo.martins").to_str().unwrap(), "--audience", "leo.martins"]);
    let after = published(&sites.join("leo.martins")).0;
    assert_ne!(before, after);
    assert_eq!(target_files(&before), target_files(&after));
    // gc keeps it (it is the one before the current and young).
    store.ok(&["gc", "--sites", sites.to_str().unwrap()]);
    assert!(before.join("manifest.json").is_file());

    // In a browser, served as a static folder.
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("Chromium is missing: install it with `apt-get install chromium` (Debian)"));
    let browser_dir = support::repo().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: install it with `npm ci --prefix tests/browser`"
    );
    let mut server = Command::new("python3")
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .current_dir(&sites)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    // Wait for the line that names the port, not for a time.
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let port = first.split("port ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string();
    assert!(!port.is_empty(), "http.server said {first:?}");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let run = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("FULL", "morgan.blake")
        .env("SDR", "leo.martins")
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs the browser script");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the browser checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all dashboard checks passed"), "{stdout}");
    for shot in ["overview.png", "target.png", "sdr-target.png", "tablet.png"] {
        assert!(shots.join(shot).is_file(), "no screenshot {shot}");
    }
}
