//! PartnerForge: an account-intelligence batch engine. Provider data (BuiltWith,
//! SimilarWeb, Yahoo Finance) goes into immutable Parquet snapshots on object
//! storage; Polars scores the targets; DuckDB serves SQL and dashboard JSON.
//!
//! The path of the data, module by module: `targets` (the book) → `modules`
//! (what to fetch) → `fetch` (the call path) → `providers` (parsing) → `store`
//! (snapshots) → `transform` (Polars) → `serve` (DuckDB). `simulate` is the
//! stand-in for the provider APIs; `run` ties one refresh together.

pub mod alerts;
pub mod config;
pub mod fetch;
pub mod freshness;
pub mod modules;
pub mod plan;
pub mod providers;
pub mod rebuild;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod simulate;
pub mod store;
pub mod targets;
pub mod transform;

/// An error and its causes on one line, each cause once. Many errors name their file and
/// already end with their cause's text (`cannot read X: No such file or directory`), which
/// `{:#}` would print a second time.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        // A cause its error already ends with is left out; one it does not is joined.
        let named = anyhow::Error::new(crate::config::ConfigError::Read { path: "p.toml".into(), source: io });
        assert_eq!(crate::error_text(&named), "cannot read p.toml: No such file or directory");
        let wrapped = named.context("loading the pipeline");
        assert_eq!(crate::error_text(&wrapped), "loading the pipeline: cannot read p.toml: No such file or directory");
    }
}
