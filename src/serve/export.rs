//! `partnerforge export`: the static sites the dashboard serves, one per audience.
//!
//! Every `queries/export/*.sql` file runs over the views an audience may see (see
//! [`super::Warehouse::scope`]). A query returns either one row with one JSON column
//! (written to `<name>.json`), or rows of `(key, json)` written one file per key to
//! the path its header names: `-- output: targets/{key}.json`. A key that is not a
//! safe file name is never used as a path; it is skipped and counted. A query whose
//! header says `-- requires: spend` (or `financials`) runs only for audiences that
//! may see it.
//!
//! A site is published atomically: the files go to a new `versions/<version>/`
//! folder with a `manifest.json` (snapshot, audience, every file with its SHA-256);
//! then `current.json`, the pointer the dashboard reads first, is replaced in one
//! rename. A reader never sees two snapshots mixed; `gc --sites` prunes old versions.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::audience::Audience;
use super::{ServeError, Warehouse};
use crate::config::alerts::People;

/// The dashboard, embedded in the binary: no build step, any static file host.
const ASSETS: [(&str, &str); 3] = [
    ("index.html", include_str!("dashboard/index.html")),
    ("app.js", include_str!("dashboard/app.js")),
    ("app.css", include_str!("dashboard/app.css")),
];

/// The pointer file a site's dashboard reads first.
pub const CURRENT: &str = "current.json";

#[derive(Debug, Default)]
pub struct ExportSummary {
    /// The site's folder and the version just published.
    pub dir: PathBuf,
    pub version: String,
    pub files: usize,
    pub bytes: u64,
    pub accounts: usize,
    pub skipped_keys: Vec<String>,
}

/// A key usable as a file name: lower-case letters, digits, dots and dashes, not
/// starting with a dot, no `..`.
pub fn safe_file_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && !key.starts_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_')
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io { path: path.to_path_buf(), source }
}

/// Writes a file whole, then moves it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let partial = path.with_file_name(format!(
        ".{}.partial",
        path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
    ));
    let mut file = std::fs::File::create(&partial).map_err(io_error(&partial))?;
    file.write_all(bytes).map_err(io_error(&partial))?;
    file.sync_all().map_err(io_error(&partial))?;
    std::fs::rename(&partial, path).map_err(io_error(path))
}

/// One export query: its file, its output pattern, what it requires.
struct ExportQuery {
    file: PathBuf,
    sql: String,
    pattern: String,
    requires: Vec<String>,
}

fn export_queries(queries_dir: &Path) -> Result<Vec<ExportQuery>, ServeError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(queries_dir)
        .map_err(io_error(queries_dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ServeError::Export { path: queries_dir.to_path_buf(), message: "no .sql files to export".into() });
    }
    let mut out = Vec::new();
    for file in files {
        let sql = std::fs::read_to_string(&file).map_err(io_error(&file))?;
        let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let header: Vec<&str> = sql.lines().take_while(|l| l.trim_start().starts_with("--")).collect();
        let directive = |key: &str| {
            header.iter().find_map(|l| l.trim_start().trim_start_matches('-').trim().strip_prefix(key).map(str::trim))
        };
        let pattern = directive("output:").map(str::to_string).unwrap_or_else(|| format!("{name}.json"));
        if pattern.contains("..") || pattern.starts_with('/') {
            return Err(ServeError::Export { path: file, message: format!("output {pattern:?} leaves the site") });
        }
        let requires: Vec<String> = directive("requires:")
            .map(|r| r.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        if let Some(unknown) = requires.iter().find(|r| !["spend", "financials"].contains(&r.as_str())) {
            return Err(ServeError::Export {
                path: file,
                message: format!("requires {unknown:?}: only spend and financials are known"),
            });
        }
        out.push(ExportQuery { file, sql, pattern, requires });
    }
    Ok(out)
}

/// Every column of a result as text: a text column as it is (a key, or JSON DuckDB
/// wrote), any other column as the JSON of each value, encoded by arrow-json from the
/// Arrow result (far faster than DuckDB's `to_json` on nested lists, and timestamps in
/// ISO 8601).
fn text_columns(result: &super::Output) -> Result<Vec<Vec<Option<String>>>, String> {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::DataType;
    let mut columns = vec![Vec::with_capacity(result.rows()); result.schema.fields().len()];
    for batch in &result.batches {
        for (i, column) in batch.columns().iter().enumerate() {
            if matches!(column.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
                let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
                    return Err(format!("column {i} does not read as text"));
                };
                columns[i].extend((0..text.len()).map(|r| (!text.is_null(r)).then(|| text.value(r).to_string())));
            } else {
                columns[i].extend(json_values(column)?);
            }
        }
    }
    Ok(columns)
}

/// The JSON text of each value of a column (`null` for a null).
fn json_values(column: &arrow::array::ArrayRef) -> Result<Vec<Option<String>>, String> {
    let field = arrow::datatypes::Field::new("v", column.data_type().clone(), true);
    let batch = arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![field])),
        vec![column.clone()],
    )
    .map_err(|e| e.to_string())?;
    let mut buffer = Vec::with_capacity(column.get_array_memory_size());
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buffer);
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    let text = String::from_utf8(buffer).map_err(|e| e.to_string())?;
    // Each line is `{"v":VALUE}`; strings escape their newlines, so lines are rows.
    text.lines()
        .map(|line| {
            line.strip_prefix("{\"v\":")
                .and_then(|rest| rest.strip_suffix('}'))
                .map(|value| Some(value.to_string()))
                .ok_or_else(|| format!("arrow-json wrote an unexpected line: {line:.80}"))
        })
        .collect()
}

/// Writes files under `folder` on every core (a site is thousands of small files), each
/// with its size and SHA-256, in the order given.
fn write_files(folder: &Path, files: &[(String, &str)]) -> Result<Vec<Written>, ServeError> {
    let mut parents: Vec<PathBuf> =
        files.iter().filter_map(|(p, _)| folder.join(p).parent().map(Path::to_path_buf)).collect();
    parents.sort();
    parents.dedup();
    for parent in &parents {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let write = |(relative, text): &(String, &str)| -> Result<Written, ServeError> {
        let path = folder.join(relative);
        std::fs::write(&path, text).map_err(io_error(&path))?;
        Ok(Written {
            path: relative.clone(),
            bytes: text.len() as u64,
            sha256: crate::config::sha256_hex(text.as_bytes()),
        })
    };
    if files.len() < 64 {
        return files.iter().map(write).collect();
    }
    let threads = crate::transform::encode::cores().min(8);
    crate::transform::encode::each_on_threads(files.len(), threads, |i| write(&files[i]))
        .into_iter()
        .map(|done| {
            done.unwrap_or_else(|| {
                Err(ServeError::Export { path: folder.to_path_buf(), message: "a writer thread panicked".into() })
            })
        })
        .collect()
}

/// A file of the version: its path in the version folder, size and SHA-256.
#[derive(serde::Serialize)]
struct Written {
    path: String,
    bytes: u64,
    sha256: String,
}

/// Exports one site into `out`: every account and field when `audience` is `None`,
/// else what the audience may see.
pub fn export_site(
    warehouse: &Warehouse,
    queries_dir: &Path,
    out: &Path,
    audience: Option<(&Audience, &People)>,
) -> Result<ExportSummary, ServeError> {
    let queries = export_queries(queries_dir)?;
    let accounts = warehouse.scope(audience)?;
    let latest = &warehouse.latest;
    let now = chrono::Utc::now();
    let version = format!("{}-g{}-{}", latest.date, latest.generation, now.format("%Y%m%dT%H%M%S%3fZ"));
    let folder = out.join("versions").join(&version);
    let (sees_spend, sees_financials) = audience.map_or((true, true), |(a, _)| (a.sees_spend(), a.sees_financials()));
    let mut written: Vec<Written> = Vec::new();
    let mut summary =
        ExportSummary { dir: out.to_path_buf(), version: version.clone(), accounts, ..Default::default() };
    for query in &queries {
        let allowed = query.requires.iter().all(|r| match r.as_str() {
            "spend" => sees_spend,
            _ => sees_financials,
        });
        if !allowed {
            continue;
        }
        let fail = |message: String| ServeError::Export { path: query.file.clone(), message };
        let started = std::time::Instant::now();
        let result = warehouse.run(&query.sql, &[]).map_err(|e| fail(e.to_string()))?;
        let queried = started.elapsed();
        let columns = result.schema.fields().len();
        let texts = text_columns(&result).map_err(fail)?;
        let files_before = written.len();
        let mut pending: Vec<(String, &str)> = Vec::with_capacity(result.rows());
        let pattern = &query.pattern;
        if pattern.contains("{key}") {
            if columns != 2 {
                return Err(ServeError::Export {
                    path: query.file.clone(),
                    message: format!("{pattern} needs two columns (key, json); the query returns {columns}"),
                });
            }
            for (key, json) in texts[0].iter().zip(&texts[1]) {
                let key = key.as_deref().unwrap_or_default();
                if !safe_file_key(key) {
                    summary.skipped_keys.push(key.to_string());
                    continue;
                }
                pending.push((pattern.replace("{key}", key), json.as_deref().unwrap_or("null")));
            }
        } else {
            if columns != 1 || result.rows() != 1 {
                return Err(ServeError::Export {
                    path: query.file.clone(),
                    message: format!(
                        "{pattern} needs one row with one JSON column; the query returns {} rows of {columns} columns",
                        result.rows()
                    ),
                });
            }
            pending.push((pattern.clone(), texts[0][0].as_deref().unwrap_or("null")));
        }
        written.extend(write_files(&folder, &pending)?);
        tracing::debug!(
            query = %query.file.display(),
            query_ms = queried.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            files = written.len() - files_before,
            "export query"
        );
    }
    let audience_json = audience.map(|(a, _)| {
        serde_json::json!({
            "id": a.id, "name": a.name, "kind": a.kind, "role": a.role.name(),
            "sees_financials": a.sees_financials(), "sees_spend": a.sees_spend(), "feeds": a.feeds,
        })
    });
    summary.files = written.len();
    summary.bytes = written.iter().map(|w| w.bytes).sum();
    let manifest = serde_json::json!({
        "version": version,
        "snapshot_id": latest.snapshot_id,
        "generation": latest.generation,
        "snapshot_created_at": latest.created_at,
        "generated_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "audience": audience_json,
        "accounts": accounts,
        "files": written,
    });
    let manifest = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ServeError::Export { path: folder.join("manifest.json"), message: e.to_string() })?;
    write_atomic(&folder.join("manifest.json"), &manifest)?;
    for (name, text) in ASSETS {
        write_atomic(&out.join(name), text.as_bytes())?;
    }
    // The switch: one rename, after every file of the version is in place.
    let pointer = serde_json::json!({
        "version": version,
        "manifest": format!("versions/{version}/manifest.json"),
        "manifest_sha256": crate::config::sha256_hex(&manifest),
        "snapshot_id": latest.snapshot_id,
    });
    write_atomic(&out.join(CURRENT), pointer.to_string().as_bytes())?;
    Ok(summary)
}

/// The version a site's `current.json` points at, if it has one.
pub fn current_version(site: &Path) -> Option<String> {
    let text = std::fs::read_to_string(site.join(CURRENT)).ok()?;
    let pointer: serde_json::Value = serde_json::from_str(&text).ok()?;
    pointer["version"].as_str().map(str::to_string)
}

/// Old versions of the sites under `root` (a site, or a folder of sites): every
/// version folder but the current one and the `keep` newest before it, when older
/// than `min_age` (a reader that loaded the previous pointer keeps its files).
pub fn stale_versions(root: &Path, keep: usize, min_age: std::time::Duration) -> Vec<PathBuf> {
    let mut sites = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        sites.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join(CURRENT).is_file()));
    }
    let mut stale = Vec::new();
    for site in sites {
        let Some(current) = current_version(&site) else { continue };
        let Ok(entries) = std::fs::read_dir(site.join("versions")) else { continue };
        let mut versions: Vec<String> =
            entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect();
        versions.sort();
        let older: Vec<&String> = versions.iter().filter(|v| **v < current).collect();
        let kept_before = older.len().saturating_sub(keep);
        for version in older.into_iter().take(kept_before).chain(versions.iter().filter(|v| **v > current)) {
            let path = site.join("versions").join(version);
            let old_enough = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old_enough {
                stale.push(path);
            }
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_keys_become_file_names() {
        assert!(safe_file_key("shop.example.com"));
        assert!(safe_file_key("xn--bcher-kva.de"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "a..b", "UPPER.com", "a b.com", "a\\b"] {
            assert!(!safe_file_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn gc_keeps_the_current_version_and_the_ones_just_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("sam");
        for v in ["2026-11-20-g1-a", "2026-11-21-g1-a", "2026-11-22-g1-a", "2026-11-23-g1-a", "2026-11-24-g1-a"] {
            std::fs::create_dir_all(site.join("versions").join(v)).unwrap();
        }
        std::fs::write(site.join(CURRENT), r#"{"version":"2026-11-23-g1-a"}"#).unwrap();
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            let mut n: Vec<String> =
                paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
            n.sort();
            n
        };
        let zero = std::time::Duration::ZERO;
        // The current one and one before stay; a version after the pointer (an export that
        // never switched) goes too.
        assert_eq!(
            names(stale_versions(dir.path(), 1, zero)),
            ["2026-11-20-g1-a", "2026-11-21-g1-a", "2026-11-24-g1-a"]
        );
        // Too young to go: nothing.
        assert!(stale_versions(dir.path(), 1, std::time::Duration::from_secs(3600)).is_empty());
    }
}
