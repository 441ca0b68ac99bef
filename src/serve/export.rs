//! `partnerforge export`: runs every `queries/export/*.sql` file and writes what
//! a static dashboard reads.
//!
//! An export query returns either one row with one JSON column (written to
//! `<name>.json`), or rows of `(key, json)` written one file per key to the
//! path its first line names: `-- output: targets/{key}.json`. A key that is
//! not a safe file name is never used as a path; it is skipped and counted.

use std::path::{Path, PathBuf};

use super::{ServeError, Warehouse};

#[derive(Debug, Default)]
pub struct ExportSummary {
    pub files: usize,
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

fn write_atomic(path: &Path, text: &str) -> Result<(), ServeError> {
    let io = |source| ServeError::Io { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text).map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// Runs every export query in `queries_dir` (sorted by name) into `out`.
pub fn export(warehouse: &Warehouse, queries_dir: &Path, out: &Path) -> Result<ExportSummary, ServeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(queries_dir)
        .map_err(io(queries_dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ServeError::Export { path: queries_dir.to_path_buf(), message: "no .sql files to export".into() });
    }
    let mut summary = ExportSummary::default();
    for file in files {
        let sql = std::fs::read_to_string(&file).map_err(io(&file))?;
        let name = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let pattern = sql
            .lines()
            .next()
            .and_then(|l| l.trim().strip_prefix("-- output:"))
            .map(|p| p.trim().to_string())
            .unwrap_or_else(|| format!("{name}.json"));
        let fail = |message: String| ServeError::Export { path: file.clone(), message };
        let result = warehouse.query(&sql).map_err(|e| fail(e.to_string()))?;
        if pattern.contains("{key}") {
            if result.columns.len() != 2 {
                return Err(fail(format!(
                    "{pattern} needs two columns (key, json); the query returns {}",
                    result.columns.len()
                )));
            }
            for row in &result.rows {
                let key = row[0].as_str().unwrap_or_default();
                if !safe_file_key(key) {
                    summary.skipped_keys.push(key.to_string());
                    continue;
                }
                write_atomic(&out.join(pattern.replace("{key}", key)), &json_text(&row[1]))?;
                summary.files += 1;
            }
        } else {
            if result.columns.len() != 1 || result.rows.len() != 1 {
                return Err(fail(format!(
                    "{pattern} needs one row with one JSON column; the query returns {} rows of {} columns",
                    result.rows.len(),
                    result.columns.len()
                )));
            }
            write_atomic(&out.join(&pattern), &json_text(&result.rows[0][0]))?;
            summary.files += 1;
        }
    }
    Ok(summary)
}

/// A JSON column arrives as text; anything else is serialized.
fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_file_key;

    #[test]
    fn only_safe_keys_become_file_names() {
        assert!(safe_file_key("shop.example.com"));
        assert!(safe_file_key("xn--bcher-kva.de"));
        for bad in ["", "../etc/passwd", "a/b", ".hidden", "a..b", "UPPER.com", "a b.com", "a\\b"] {
            assert!(!safe_file_key(bad), "{bad:?}");
        }
    }
}
