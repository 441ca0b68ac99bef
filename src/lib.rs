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
