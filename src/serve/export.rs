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
        let result = warehouse.run(&sql, &[]).map_err(|e| fail(e.to_string()))?;
        let columns = result.schema.fields().len();
        let texts = text_columns(&result).map_err(&fail)?;
        if pattern.contains("{key}") {
            if columns != 2 {
                return Err(fail(format!("{pattern} needs two columns (key, json); the query returns {columns}")));
            }
            for (key, json) in texts[0].iter().zip(&texts[1]) {
                let key = key.as_deref().unwrap_or_default();
                if !safe_file_key(key) {
                    summary.skipped_keys.push(key.to_string());
                    continue;
                }
                write_atomic(&out.join(pattern.replace("{key}", key)), json.as_deref().unwrap_or("null"))?;
                summary.files += 1;
            }
        } else {
            if columns != 1 || result.rows() != 1 {
                return Err(fail(format!(
                    "{pattern} needs one row with one JSON column; the query returns {} rows of {columns} columns",
                    result.rows()
                )));
            }
            write_atomic(&out.join(&pattern), texts[0][0].as_deref().unwrap_or("null"))?;
            summary.files += 1;
        }
    }
    Ok(summary)
}

/// Every column of a result as text (an export query's columns are keys and JSON text).
fn text_columns(result: &super::Output) -> Result<Vec<Vec<Option<String>>>, String> {
    use arrow::array::{Array, StringArray};
    let mut columns = vec![Vec::with_capacity(result.rows()); result.schema.fields().len()];
    for batch in &result.batches {
        for (i, column) in batch.columns().iter().enumerate() {
            let text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).map_err(|e| e.to_string())?;
            let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
                return Err(format!("column {i} does not read as text"));
            };
            columns[i].extend((0..text.len()).map(|r| (!text.is_null(r)).then(|| text.value(r).to_string())));
        }
    }
    Ok(columns)
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
