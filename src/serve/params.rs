//! Typed parameters of a named query, declared in its header:
//!
//! ```sql
//! -- param: vertical text
//! -- param: min_score int = 60
//! -- param: since date = 2026-01-01
//! SELECT … WHERE vertical = $vertical AND icp_score >= $min_score
//! ```
//!
//! Types: `text`, `int`, `float`, `bool`, `date`. Values from the command line
//! (`--param vertical=Commerce`) are checked against the declared type and bound
//! as DuckDB prepared-statement values: never spliced into the SQL.

use duckdb::types::Value;

/// A declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub kind: Kind,
    /// The default, already typed; `None` means the parameter must be given.
    pub default: Option<Value>,
    /// The default as written, for `--help`-style listings.
    pub default_text: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Bool,
    Date,
}

impl Kind {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "text" | "varchar" | "string" => Self::Text,
            "int" | "integer" | "bigint" => Self::Int,
            "float" | "double" | "real" => Self::Float,
            "bool" | "boolean" => Self::Bool,
            "date" => Self::Date,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Int => "int",
            Self::Float => "float",
            Self::Bool => "bool",
            Self::Date => "date",
        }
    }

    /// The typed value of `text`, or why it is not one.
    pub fn value(self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        match self {
            Self::Text => Ok(Value::Text(text.to_string())),
            Self::Int => t.parse::<i64>().map(Value::BigInt).map_err(|_| format!("{text:?} is not an integer")),
            Self::Float => match t.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Double(f)),
                _ => Err(format!("{text:?} is not a number")),
            },
            Self::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Value::Boolean(true)),
                "false" | "no" | "0" => Ok(Value::Boolean(false)),
                _ => Err(format!("{text:?} is not true or false")),
            },
            Self::Date => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(|d| Value::Date32(crate::store::table::days_since_epoch(d)))
                .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)")),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error("{file}:{line}: {message}")]
    Header { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    Value { file: String, message: String },
}

/// The parameters a query's header declares (the `-- param:` lines among the
/// comment lines before its first statement line).
pub fn declared(file: &str, sql: &str) -> Result<Vec<Param>, ParamError> {
    let mut params: Vec<Param> = Vec::new();
    for (index, line) in sql.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("--") else { break };
        let Some(spec) = comment.trim().strip_prefix("param:") else { continue };
        let fail = |message: String| ParamError::Header { file: file.to_string(), line: line_no, message };
        let (head, default_text) = match spec.split_once('=') {
            Some((head, default)) => (head, Some(default.trim().to_string())),
            None => (spec, None),
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let [name, kind] = words[..] else {
            return Err(fail(format!("`-- param:{spec}` should read `-- param: NAME TYPE [= DEFAULT]`")));
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(fail(format!("{name:?} is not a parameter name (letters, digits and _)")));
        }
        let Some(kind) = Kind::parse(kind) else {
            return Err(fail(format!("{name}: unknown type {kind:?} (text, int, float, bool or date)")));
        };
        if params.iter().any(|p| p.name == name) {
            return Err(fail(format!("{name} is declared twice")));
        }
        let default = match &default_text {
            Some(text) => Some(kind.value(text).map_err(|m| fail(format!("{name}'s default: {m}")))?),
            None => None,
        };
        params.push(Param { name: name.to_string(), kind, default, default_text, line: line_no });
    }
    Ok(params)
}

/// The values to bind: each `NAME=VALUE` given, typed by its declaration, and the
/// defaults of the rest. An undeclared name, an ill-typed value or a missing
/// parameter without a default is an error naming it.
pub fn bind(file: &str, declared: &[Param], given: &[String]) -> Result<Vec<(String, Value)>, ParamError> {
    let fail = |message: String| ParamError::Value { file: file.to_string(), message };
    let names = || {
        if declared.is_empty() {
            "it declares none".to_string()
        } else {
            format!(
                "it declares {}",
                declared.iter().map(|p| format!("{} {}", p.name, p.kind.name())).collect::<Vec<_>>().join(", ")
            )
        }
    };
    let mut values: Vec<(String, Value)> = Vec::new();
    for pair in given {
        let Some((name, text)) = pair.split_once('=') else {
            return Err(fail(format!("--param {pair:?} should read NAME=VALUE")));
        };
        let name = name.trim();
        let Some(param) = declared.iter().find(|p| p.name == name) else {
            return Err(fail(format!("unknown parameter {name:?}: {}", names())));
        };
        if values.iter().any(|(n, _)| n == name) {
            return Err(fail(format!("{name} is given twice")));
        }
        let value = param.kind.value(text).map_err(|m| fail(format!("{name} ({}): {m}", param.kind.name())))?;
        values.push((name.to_string(), value));
    }
    for param in declared {
        if values.iter().any(|(n, _)| *n == param.name) {
            continue;
        }
        match &param.default {
            Some(value) => values.push((param.name.clone(), value.clone())),
            None => {
                return Err(fail(format!(
                    "{} ({}) has no default: give it with --param {}=VALUE",
                    param.name,
                    param.kind.name(),
                    param.name
                )));
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "-- Top targets.\n-- param: vertical text\n-- param: min_score int = 60\n-- param: since date = 2026-01-01\n\nSELECT 1 -- param: not_a_header int\n";

    #[test]
    fn a_header_declares_typed_parameters_with_defaults() {
        let params = declared("q.sql", SQL).unwrap();
        let summary: Vec<(&str, Kind, Option<&str>, usize)> =
            params.iter().map(|p| (p.name.as_str(), p.kind, p.default_text.as_deref(), p.line)).collect();
        assert_eq!(
            summary,
            vec![
                ("vertical", Kind::Text, None, 2),
                ("min_score", Kind::Int, Some("60"), 3),
                ("since", Kind::Date, Some("2026-01-01"), 4)
            ]
        );
        let values = bind("q.sql", &params, &["vertical=Commerce".into(), "min_score=75".into()]).unwrap();
        assert_eq!(values[0], ("vertical".to_string(), Value::Text("Commerce".into())));
        assert_eq!(values[1], ("min_score".to_string(), Value::BigInt(75)));
        assert!(matches!(values[2], (ref n, Value::Date32(_)) if n == "since"));
    }

    #[test]
    fn unknown_ill_typed_and_missing_parameters_are_errors_that_name_them() {
        let params = declared("q.sql", SQL).unwrap();
        let err = |given: &[&str]| {
            bind("q.sql", &params, &given.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err().to_string()
        };
        assert!(err(&["vertical=x", "verticle=y"]).contains("unknown parameter \"verticle\""));
        assert!(err(&["vertical=x", "min_score=lots"]).contains("min_score (int): \"lots\" is not an integer"));
        assert!(err(&["vertical=x", "since=yesterday"]).contains("is not a date"));
        assert!(err(&[]).contains("vertical (text) has no default"));
        assert!(err(&["vertical"]).contains("NAME=VALUE"));
        let bad = declared("q.sql", "-- param: n integerish\nSELECT 1").unwrap_err();
        assert_eq!(bad.to_string(), "q.sql:1: n: unknown type \"integerish\" (text, int, float, bool or date)");
        assert!(declared("q.sql", "-- param: n int = x\nSELECT 1").unwrap_err().to_string().contains("n's default"));
    }
}
