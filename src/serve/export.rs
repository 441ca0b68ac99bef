//! `partnerforge export`: the static sites the dashboard serves, one per audience.
//!
//! Every `queries/export/*.sql` file runs over the views an audience may see (see
//! [`super::Warehouse::scope`]). A query returns either one row with one JSON column
//! (written to `<name>.json`), or rows keyed by their first column, written one file per
//! key to the path its header names: `-- output: targets/{key}.json`. Such a file is the
//! row's second column when it has no other (`key, json`); else it is the object of the
//! row's other columns by name. It may hold several statements (`;` between them), each
//! `(key, columns…)`: the first one's keys are the files, and each file the object of
//! every statement's columns, in order (a key a statement lacks gives its columns
//! `null`). A key that is not a safe file name is never used as a path; it is skipped
//! and counted. A query whose header says `-- requires: spend` (or `financials`) runs
//! only for audiences that may see it.
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
    /// Its statements, in order (comments and empty ones left out).
    statements: Vec<String>,
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
        let statements = split_statements(&sql);
        if statements.is_empty() {
            return Err(ServeError::Export { path: file, message: "holds no statement".into() });
        }
        if statements.len() > 1 && !pattern.contains("{key}") {
            return Err(ServeError::Export {
                path: file,
                message: format!(
                    "{pattern} is one file: only a query of a file per key ({{key}}) may have several statements"
                ),
            });
        }
        out.push(ExportQuery { file, statements, pattern, requires });
    }
    Ok(out)
}

/// Every column of a result as text: a text column as it is (a key, or JSON DuckDB
/// wrote), any other column as the JSON of each value ([`column_texts`]).
fn text_columns(result: &super::Output) -> Result<Vec<Vec<Option<String>>>, String> {
    (0..result.schema.fields().len()).map(|i| column_texts(result, i, true)).collect()
}

/// Column `i` of a result as text: a text column as it is when `text_as_is` (a key, or
/// JSON DuckDB wrote), any other column (and then a text column too) as the JSON of
/// each value, encoded by arrow-json from the Arrow result (far faster than DuckDB's
/// `to_json` on nested lists, and timestamps in ISO 8601).
fn column_texts(result: &super::Output, i: usize, text_as_is: bool) -> Result<Vec<Option<String>>, String> {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::DataType;
    let mut texts = Vec::with_capacity(result.rows());
    for batch in &result.batches {
        let column = batch.column(i);
        if text_as_is && matches!(column.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| e.to_string())?;
            let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
                return Err(format!("column {i} does not read as text"));
            };
            texts.extend((0..text.len()).map(|r| (!text.is_null(r)).then(|| text.value(r).to_string())));
        } else {
            texts.extend(json_values(column)?);
        }
    }
    Ok(texts)
}

/// The statements of a SQL text, split at each `;` outside quotes and comments; a piece
/// holding nothing but comments and blanks is left out.
fn split_statements(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let (mut start, mut i, mut code) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && !(bytes[i] == quote && bytes.get(i + 1) != Some(&quote)) {
                    i += if bytes[i] == quote { 2 } else { 1 };
                }
                code = true;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                if code {
                    statements.push(sql[start..i].trim().to_string());
                }
                (start, code) = (i + 1, false);
            }
            c if !c.is_ascii_whitespace() => code = true,
            _ => {}
        }
        i += 1;
    }
    if code && start < sql.len() {
        statements.push(sql[start..].trim().to_string());
    }
    statements
}

/// The results of a query's statements, an error naming the statement (of several).
fn statement_results(
    file: &Path,
    results: impl IntoIterator<Item = Result<super::Output, ServeError>>,
) -> Result<Vec<super::Output>, ServeError> {
    let results: Vec<_> = results.into_iter().collect();
    let all = results.len();
    results
        .into_iter()
        .enumerate()
        .map(|(n, result)| {
            result.map_err(|e| ServeError::Export {
                path: file.to_path_buf(),
                message: match all {
                    1 => e.to_string(),
                    _ => format!("statement {} of {all}: {e}", n + 1),
                },
            })
        })
        .collect()
}

/// The file of one key of a query of a file per key (the brief's target), each statement
/// read for that key alone: `None` when its first statement has no such key.
pub(super) fn keyed_file(
    warehouse: &Warehouse,
    file: &Path,
    sql: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, ServeError> {
    let statements: Vec<String> = split_statements(sql)
        .iter()
        .map(|statement| format!("SELECT * FROM (\n{statement}\n) AS part WHERE key = $key"))
        .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    let params = [("key".to_string(), duckdb::types::Value::Text(key.to_string()))];
    let results = statement_results(file, warehouse.run_all(&statements, &params, 1))?;
    let files = keyed_files(&results).map_err(|message| ServeError::Export { path: file.to_path_buf(), message })?;
    Ok(files.into_iter().find(|(k, _)| k == key).map(|(_, text)| text))
}

/// The files of a query of a file per key: `(key, text)` for each row of its first
/// statement (see the module's header for how the text is made).
fn keyed_files(results: &[super::Output]) -> Result<Vec<(String, Vec<u8>)>, String> {
    if results.is_empty() {
        return Err("holds no statement".into());
    }
    let columns = |n: usize| results[n].schema.fields().len();
    let of = |n: usize| match results.len() {
        1 => String::new(),
        all => format!("statement {} of {all}: ", n + 1),
    };
    for n in 0..results.len() {
        if columns(n) < 2 {
            return Err(format!("{}needs a key and a field; it returns {} column(s)", of(n), columns(n)));
        }
    }
    let keys = column_texts(&results[0], 0, true)?;
    let keys: Vec<String> = keys.into_iter().map(Option::unwrap_or_default).collect();
    // The file is the row's one other column as it is (`key, json`).
    if results.len() == 1 && columns(0) == 2 {
        let texts = column_texts(&results[0], 1, true)?;
        return Ok(keys
            .into_iter()
            .zip(texts)
            .map(|(k, t)| (k, t.map_or_else(|| b"null".to_vec(), String::into_bytes)))
            .collect());
    }
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(keys.len());
    for (row, key) in keys.iter().enumerate() {
        if index.insert(key.as_str(), row).is_some() && safe_file_key(key) {
            return Err(format!("{}returns the key {key:?} twice", of(0)));
        }
    }
    // Where each file's row is in each statement's result: (batch, row), or none.
    let mut located: Vec<Vec<Option<(usize, usize)>>> = Vec::with_capacity(results.len());
    // Every field: its statement, its column there, its name as JSON.
    let mut fields: Vec<(usize, usize, String)> = Vec::new();
    for (n, result) in results.iter().enumerate() {
        let rows = result.batches.iter().enumerate().flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r)));
        let at = match n {
            0 => rows.map(Some).collect(),
            _ => {
                let mut at = vec![None; keys.len()];
                for (key, row) in column_texts(result, 0, true)?.into_iter().zip(rows) {
                    let Some(file) = key.as_deref().and_then(|k| index.get(k).copied()) else { continue };
                    if at[file].replace(row).is_some() {
                        return Err(format!("{}returns the key {:?} twice", of(n), keys[file]));
                    }
                }
                at
            }
        };
        located.push(at);
        for (i, field) in result.schema.fields().iter().enumerate().skip(1) {
            let name = serde_json::to_string(field.name()).map_err(|e| e.to_string())?;
            if fields.iter().any(|(_, _, known)| *known == name) {
                return Err(format!("{}returns the field {} a statement before it returns", of(n), field.name()));
            }
            fields.push((n, i, name));
        }
    }
    // Each file written whole by arrow-json's encoders, the files in pieces on every core.
    let options = arrow::json::writer::EncoderOptions::default().with_explicit_nulls(true);
    const PIECE: usize = 64;
    let pieces = keys.len().div_ceil(PIECE);
    let written = crate::transform::encode::each_on_threads(pieces, crate::transform::encode::cores(), |piece| {
        let mut encoders = std::collections::HashMap::new();
        let mut page = |file: usize| -> Result<Vec<u8>, String> {
            let mut text = Vec::with_capacity(4096);
            text.push(b'{');
            for (f, (n, i, name)) in fields.iter().enumerate() {
                if f > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(name.as_bytes());
                text.push(b':');
                let Some((b, r)) = located[*n][file] else {
                    text.extend_from_slice(b"null");
                    continue;
                };
                let encoder = match encoders.entry((f, b)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let result = &results[*n];
                        let column = result.batches[b].column(*i).as_ref();
                        e.insert(
                            arrow::json::writer::make_encoder(&result.schema.fields()[*i], column, &options)
                                .map_err(|e| e.to_string())?,
                        )
                    }
                };
                if encoder.is_null(r) {
                    text.extend_from_slice(b"null");
                } else {
                    encoder.encode(r, &mut text);
                }
            }
            text.push(b'}');
            Ok(text)
        };
        (piece * PIECE..((piece + 1) * PIECE).min(keys.len())).map(&mut page).collect::<Result<Vec<_>, String>>()
    });
    let mut texts = Vec::with_capacity(keys.len());
    for piece in written {
        texts.extend(piece.ok_or("encoding files as JSON panicked")??);
    }
    Ok(keys.into_iter().zip(texts).collect())
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
fn write_files(folder: &Path, files: &[(String, &[u8])]) -> Result<Vec<Written>, ServeError> {
    let mut parents: Vec<PathBuf> =
        files.iter().filter_map(|(p, _)| folder.join(p).parent().map(Path::to_path_buf)).collect();
    parents.sort();
    parents.dedup();
    for parent in &parents {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let write = |(relative, text): &(String, &[u8])| -> Result<Written, ServeError> {
        let path = folder.join(relative);
        std::fs::write(&path, text).map_err(io_error(&path))?;
        Ok(Written { path: relative.clone(), bytes: text.len() as u64, sha256: crate::config::sha256_hex(text) })
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
    let allowed: Vec<&ExportQuery> = queries
        .iter()
        .filter(|query| {
            query.requires.iter().all(|r| match r.as_str() {
                "spend" => sees_spend,
                _ => sees_financials,
            })
        })
        .collect();
    // Every statement of every query at once, on every core: most are small.
    let statements: Vec<&str> = allowed.iter().flat_map(|q| q.statements.iter().map(String::as_str)).collect();
    let started = std::time::Instant::now();
    let mut results = warehouse.run_all(&statements, &[], crate::transform::encode::cores()).into_iter();
    tracing::debug!(statements = statements.len(), ms = started.elapsed().as_secs_f64() * 1e3, "export statements");
    for query in allowed {
        let fail = |message: String| ServeError::Export { path: query.file.clone(), message };
        let started = std::time::Instant::now();
        let results = statement_results(&query.file, results.by_ref().take(query.statements.len()))?;
        let pattern = &query.pattern;
        let keyed;
        let single;
        let mut pending: Vec<(String, &[u8])> = Vec::new();
        if pattern.contains("{key}") {
            keyed = keyed_files(&results).map_err(fail)?;
            pending.reserve(keyed.len());
            for (key, json) in &keyed {
                if !safe_file_key(key) {
                    summary.skipped_keys.push(key.clone());
                    continue;
                }
                pending.push((pattern.replace("{key}", key), json.as_slice()));
            }
        } else {
            let result = &results[0];
            let columns = result.schema.fields().len();
            if columns != 1 || result.rows() != 1 {
                return Err(ServeError::Export {
                    path: query.file.clone(),
                    message: format!(
                        "{pattern} needs one row with one JSON column; the query returns {} rows of {columns} columns",
                        result.rows()
                    ),
                });
            }
            single = text_columns(result).map_err(fail)?;
            pending.push((pattern.clone(), single[0][0].as_deref().unwrap_or("null").as_bytes()));
        }
        let built = started.elapsed();
        let files_before = written.len();
        written.extend(write_files(&folder, &pending)?);
        tracing::debug!(
            query = %query.file.display(),
            built_ms = built.as_secs_f64() * 1e3,
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
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let sql = "-- header; with a semicolon\nSELECT 'a;b' AS \"x;y\", 'it''s;' AS q;\n\
                   /* a block; comment */ SELECT 2 -- trailing; comment\n;\n-- only a comment;\n  ;\nSELECT 3";
        assert_eq!(
            split_statements(sql),
            [
                "-- header; with a semicolon\nSELECT 'a;b' AS \"x;y\", 'it''s;' AS q",
                "/* a block; comment */ SELECT 2 -- trailing; comment",
                "SELECT 3",
            ]
        );
        assert!(split_statements("-- nothing but a comment;\n").is_empty());
    }

    fn output(columns: Vec<(&str, arrow::array::ArrayRef)>) -> super::super::Output {
        let batch = arrow::array::RecordBatch::try_from_iter(columns).unwrap();
        super::super::Output { schema: batch.schema(), batches: vec![batch] }
    }

    fn texts(keys: &[&str]) -> arrow::array::ArrayRef {
        std::sync::Arc::new(arrow::array::StringArray::from(keys.to_vec()))
    }

    #[test]
    fn a_file_per_key_is_the_object_of_every_statements_fields() {
        use arrow::array::Int64Array;
        use std::sync::Arc;
        let first = output(vec![("key", texts(&["b.com", "a.com"])), ("name", texts(&["B \"quoted\"", "A"]))]);
        // Another order, a key the first lacks (ignored), a.com missing (null).
        let second = output(vec![
            ("key", texts(&["x.com", "b.com"])),
            ("visits", Arc::new(Int64Array::from(vec![Some(1), Some(7)]))),
            ("rank", Arc::new(Int64Array::from(vec![Some(3), None]))),
        ]);
        let files = keyed_files(&[first, second]).unwrap();
        assert_eq!(
            files,
            [
                ("b.com".to_string(), br#"{"name":"B \"quoted\"","visits":7,"rank":null}"#.to_vec()),
                ("a.com".to_string(), br#"{"name":"A","visits":null,"rank":null}"#.to_vec()),
            ]
        );
        // Results come in batches (DuckDB's chunks): a file's row is found in any of them.
        let first = output(vec![("key", texts(&["a.com", "b.com", "c.com"])), ("n", texts(&["A", "B", "C"]))]);
        let mut split = output(vec![("key", texts(&["c.com"])), ("m", texts(&["3"]))]);
        let more = output(vec![("key", texts(&["a.com", "d.com"])), ("m", texts(&["1", "4"]))]);
        split.batches.extend(more.batches);
        let files = keyed_files(&[first, split]).unwrap();
        let text = |i: usize| String::from_utf8(files[i].1.clone()).unwrap();
        assert_eq!(
            [text(0), text(1), text(2)],
            [r#"{"n":"A","m":"1"}"#, r#"{"n":"B","m":null}"#, r#"{"n":"C","m":"3"}"#]
        );
        // One statement of (key, json): the text is the file as it is.
        let json = output(vec![("key", texts(&["a.com"])), ("json", texts(&[r#"{"raw":true}"#]))]);
        assert_eq!(keyed_files(&[json]).unwrap(), [("a.com".to_string(), br#"{"raw":true}"#.to_vec())]);
    }

    #[test]
    fn a_repeated_key_or_field_or_a_statement_without_a_field_is_refused() {
        let twice = output(vec![("key", texts(&["a.com", "a.com"])), ("name", texts(&["x", "y"]))]);
        let again = output(vec![("key", texts(&["a.com"])), ("other", texts(&["z"]))]);
        let refused = keyed_files(&[twice, again]).unwrap_err();
        assert_eq!(refused, r#"statement 1 of 2: returns the key "a.com" twice"#);
        let first = output(vec![("key", texts(&["a.com"])), ("name", texts(&["x"]))]);
        let same = output(vec![("key", texts(&["a.com"])), ("name", texts(&["y"]))]);
        let refused = keyed_files(&[first, same]).unwrap_err();
        assert_eq!(refused, "statement 2 of 2: returns the field name a statement before it returns");
        let first = output(vec![("key", texts(&["a.com"])), ("name", texts(&["x"]))]);
        let bare = output(vec![("key", texts(&["a.com"]))]);
        let refused = keyed_files(&[first, bare]).unwrap_err();
        assert_eq!(refused, "statement 2 of 2: needs a key and a field; it returns 1 column(s)");
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
