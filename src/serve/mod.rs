//! DuckDB over committed snapshots: views for analysts' SQL (`query`) and the
//! JSON files a static dashboard reads (`export`).
//!
//! DuckDB reads the snapshot's Parquet files in place for a local store, or
//! from a local cache keyed by snapshot for S3. Analysts' SQL is read-only:
//! a statement that is not a query is refused before it runs.

pub mod audience;
pub mod brief;
pub mod export;
pub mod native;
pub mod output;
pub mod params;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use duckdb::Connection;
use duckdb::types::Value;

pub use output::{Format, Output};

use crate::store::{Manifest, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store {0} has no committed snapshot yet: run `partnerforge run` first")]
    NoSnapshot(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("DuckDB: {0}")]
    Sql(String),
    #[error("parameter: {0}")]
    Param(String),
    #[error("read-only: only queries run here (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE); refused: {0}")]
    NotAQuery(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Export { path: PathBuf, message: String },
}

fn sql_error(e: duckdb::Error) -> ServeError {
    ServeError::Sql(e.to_string())
}

/// The tables every snapshot holds besides `targets` and `api_calls`, exposed as
/// views over the latest snapshot.
const MODULE_TABLES: [&str; 21] = [
    "builtwith_free",
    "families",
    "renames",
    "company",
    "tech_stack",
    "tech_spend",
    "traffic",
    "traffic_sources",
    "competitors",
    "related_domains",
    "financials",
    "financial_history",
    "executives",
    "stock",
    "analyst_recommendations",
    "hiring",
    "job_postings",
    "executive_quotes",
    "trigger_events",
    "fetches",
    "raw_responses",
];

/// The columns of the change tables, for an empty view over a store that has none.
fn empty_view_columns(view: &str) -> Option<String> {
    let events = crate::run::changes::changes_batch(&[]).ok()?;
    let batch = match view {
        "changes" => events,
        "alerts" => crate::run::changes::alerts_batch(&[]).ok()?,
        _ => return None,
    };
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                arrow::datatypes::DataType::Int64 => "BIGINT",
                arrow::datatypes::DataType::Float64 => "DOUBLE",
                arrow::datatypes::DataType::Boolean => "BOOLEAN",
                arrow::datatypes::DataType::Timestamp(_, None) => "TIMESTAMP",
                arrow::datatypes::DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ",
                arrow::datatypes::DataType::Date32 => "DATE",
                _ => "VARCHAR",
            };
            format!("NULL::{ty} AS \"{}\"", f.name())
        })
        .collect();
    Some(columns.join(", "))
}

const CONFLICTS_VIEW: &str = "CREATE VIEW conflicts AS SELECT domain, snapshot_id, \
    unnest(conflicts, recursive := true) FROM targets WHERE conflicts IS NOT NULL;";
const CONFLICTS_EMPTY: &str = "CREATE VIEW conflicts AS SELECT NULL::VARCHAR AS domain, NULL::VARCHAR AS snapshot_id, \
    NULL::VARCHAR AS field, NULL::VARCHAR AS value, NULL::VARCHAR AS source, NULL::TIMESTAMPTZ AS fetched_at, \
    NULL::DOUBLE AS weight, NULL::VARCHAR AS other_value, NULL::VARCHAR AS other_source, \
    NULL::TIMESTAMPTZ AS other_fetched_at, NULL::DOUBLE AS other_weight WHERE false;";

/// The `runs` table: one row per committed generation, from its manifest.
const RUNS_TABLE: &str = "CREATE TABLE runs (
    snapshot_id VARCHAR, date DATE, generation INTEGER, current BOOLEAN, run_id VARCHAR,
    created_at TIMESTAMPTZ, status VARCHAR, previous_snapshot VARCHAR, carried_from VARCHAR,
    rebuilt_from INTEGER, pipeline VARCHAR, pipeline_version INTEGER, pipeline_sha256 VARCHAR,
    scoring_model VARCHAR, scoring_model_version INTEGER, providers VARCHAR, book BIGINT,
    targets BIGINT, excluded_customers BIGINT, excluded_algolia BIGINT, rejected_rows BIGINT,
    carried_forward BIGINT, calls BIGINT, spend_usd DOUBLE, failures JSON, tiers JSON,
    changes JSON, alerts BIGINT, files INTEGER, bytes BIGINT,
    trigger VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, exit_code INTEGER,
    spend_by_provider JSON, failed_modules JSON, error VARCHAR
);
";

/// The run history's records on the `runs` rows: a committed run's row gets its trigger,
/// times and exit code; a run that committed nothing (refused, failed, interrupted, or
/// unfinished) gets a row of its own.
fn add_run_history(conn: &Connection, runs: &[crate::run::history::RunHistory]) -> Result<(), ServeError> {
    let mut update = conn
        .prepare(
            "UPDATE runs SET trigger = ?, started_at = ?::TIMESTAMPTZ, ended_at = ?::TIMESTAMPTZ, exit_code = ?, \
             spend_by_provider = ?::JSON, failed_modules = ?::JSON, error = ? WHERE run_id = ? AND generation = ?",
        )
        .map_err(sql_error)?;
    let mut insert = conn
        .prepare(
            "INSERT INTO runs (run_id, status, current, trigger, started_at, ended_at, exit_code, spend_by_provider, \
             failed_modules, error, calls, spend_usd, date) VALUES (?, ?, false, ?, ?::TIMESTAMPTZ, ?::TIMESTAMPTZ, ?, \
             ?::JSON, ?::JSON, ?, ?, ?, ?::DATE)",
        )
        .map_err(sql_error)?;
    for run in runs {
        let (start, end) = (run.start.as_ref(), run.end.as_ref());
        let trigger = start.map(|s| s.trigger.clone());
        let started = start.map(|s| s.started_at.clone());
        let ended = end.map(|e| e.ended_at.clone());
        let code = end.map(|e| i64::from(e.exit_code));
        let providers = end.map(|e| serde_json::json!(e.providers).to_string());
        let modules = end.map(|e| serde_json::json!(e.failed_modules).to_string());
        let error = end.and_then(|e| e.error.clone());
        let committed = end.and_then(|e| e.snapshot_id.as_ref().zip(e.generation));
        if let Some((_, generation)) = committed {
            let run_id = end.map(|e| e.run_id.clone()).unwrap_or_default();
            update
                .execute(duckdb::params![trigger, started, ended, code, providers, modules, error, run_id, generation])
                .map_err(sql_error)?;
        } else {
            insert
                .execute(duckdb::params![
                    run.run_id(),
                    run.status(),
                    trigger,
                    started,
                    ended,
                    code,
                    providers,
                    modules,
                    error,
                    end.map(|e| e.calls),
                    end.map(|e| e.spend_usd),
                    start.map(|s| s.date.clone()),
                ])
                .map_err(sql_error)?;
        }
    }
    Ok(())
}

/// The `spend_record` table: what each run spent and sent per provider and UTC call
/// day, committed or not (what budgets and daily quotas count).
async fn add_spend_record(conn: &Connection, store: &Store) -> Result<(), ServeError> {
    conn.execute_batch(
        "CREATE TABLE spend_record (run_id VARCHAR, providers VARCHAR, day DATE, provider VARCHAR, \
         usd DOUBLE, requests BIGINT, billed BIGINT);",
    )
    .map_err(sql_error)?;
    let rows = crate::run::spend::rows(store).await?;
    let mut insert = conn.prepare("INSERT INTO spend_record VALUES (?, ?, ?::DATE, ?, ?, ?, ?)").map_err(sql_error)?;
    for r in rows {
        insert
            .execute(duckdb::params![
                r.run_id,
                r.account.as_str(),
                r.day,
                r.provider,
                r.used.usd,
                r.used.requests,
                r.used.billed
            ])
            .map_err(sql_error)?;
    }
    Ok(())
}

/// One `runs` row per manifest, every value bound as a parameter.
fn insert_runs(
    conn: &Connection,
    manifests: &[Manifest],
    current: &dyn Fn(&Manifest) -> bool,
) -> Result<(), ServeError> {
    let json = |value: serde_json::Value| value.to_string();
    let mut insert = conn
        .prepare(
            "INSERT INTO runs (snapshot_id, date, generation, current, run_id, created_at, status, previous_snapshot, \
             carried_from, rebuilt_from, pipeline, pipeline_version, pipeline_sha256, scoring_model, \
             scoring_model_version, providers, book, targets, excluded_customers, excluded_algolia, rejected_rows, \
             carried_forward, calls, spend_usd, failures, tiers, changes, alerts, files, bytes) \
             VALUES (?, ?::DATE, ?, ?, ?, ?::TIMESTAMPTZ, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             ?, ?, ?, ?::JSON, ?::JSON, ?::JSON, ?, ?, ?)",
        )
        .map_err(sql_error)?;
    for m in manifests {
        let c = &m.counts;
        let tiers = serde_json::to_value(&c.tiers).unwrap_or_default();
        insert
            .execute(duckdb::params![
                m.snapshot_id,
                m.date,
                m.generation,
                current(m),
                m.run_id,
                m.created_at,
                m.status.as_str(),
                m.previous_snapshot,
                m.carried_from,
                m.rebuilt_from,
                m.pipeline.name,
                m.pipeline.version,
                m.pipeline.sha256,
                m.scoring_model.name,
                m.scoring_model.version,
                m.providers.as_str(),
                c.book,
                c.targets,
                c.excluded_customers,
                c.excluded_algolia,
                c.rejected_rows,
                c.carried_forward,
                c.calls,
                c.spend_usd,
                json(serde_json::json!(c.failures)),
                json(tiers),
                json(serde_json::json!(c.changes)),
                c.alerts,
                m.files.len(),
                m.files.iter().map(|f| f.bytes).sum::<u64>(),
            ])
            .map_err(sql_error)?;
    }
    Ok(())
}

/// An in-memory DuckDB with views over a store's committed snapshots.
pub struct Warehouse {
    conn: Connection,
    pub latest: Manifest,
    pub snapshots: usize,
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn path_list(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths.iter().map(|p| quote_literal(&p.to_string_lossy())).collect();
    format!("[{}]", items.join(", "))
}

/// A targets table stored by reference (see `FileEntry::base`) as a relation: its own
/// rows, and its base's rows of the other domains its inputs list, as of its snapshot.
fn by_reference_relation(own: &Path, base: &Path, inputs: &Path, snapshot_id: &str) -> String {
    let file = |p: &Path| format!("read_parquet({})", quote_literal(&p.to_string_lossy()));
    let (own, base, inputs) = (file(own), file(base), file(inputs));
    format!(
        "(SELECT * REPLACE ({} AS snapshot_id) FROM {base} \
         WHERE domain IN (SELECT domain FROM {inputs}) \
         AND domain NOT IN (SELECT domain FROM {own} WHERE domain IS NOT NULL) \
         UNION ALL BY NAME SELECT * FROM {own})",
        quote_literal(snapshot_id)
    )
}

/// The tables read across snapshots: `targets_history`, `changes`, `alerts` over each
/// date's current generation, `api_calls` over every generation that made calls.
const HISTORY_TABLES: [&str; 4] = ["targets", "api_calls", "changes", "alerts"];

impl Warehouse {
    /// An in-memory DuckDB with the views (see [`Warehouse::define`]).
    pub async fn open(store: &Store, cache_dir: &Path) -> Result<Self, ServeError> {
        let conn = Connection::open_in_memory().map_err(sql_error)?;
        Self::define(conn, store, cache_dir).await
    }

    /// Creates, over `conn`, the views of a store's committed snapshots: `targets` and
    /// the module tables of the latest snapshot; `targets_history`, `changes` and `alerts`
    /// of every date's current generation; `api_calls` of every generation that made calls
    /// (a replaced generation's calls were paid; a rebuilt one's ledger is a copy, left out);
    /// and the `runs` table, one row per committed generation from its manifest.
    pub async fn define(conn: Connection, store: &Store, cache_dir: &Path) -> Result<Self, ServeError> {
        let generations = store.all_generations().await?;
        let snapshots = store.snapshots().await?;
        let Some(latest) = snapshots.last().cloned() else {
            return Err(ServeError::NoSnapshot(store.url().to_string()));
        };
        let current = |m: &Manifest| snapshots.iter().any(|s| s.date == m.date && s.generation == m.generation);
        let mut history: Vec<(String, PathBuf)> = Vec::new();
        // Targets tables stored by reference, as relations (per snapshot).
        let mut referenced: BTreeMap<(String, u32), String> = BTreeMap::new();
        let mut latest_files = Vec::new();
        for manifest in &generations {
            let tables: Vec<&str> = if current(manifest) {
                HISTORY_TABLES.to_vec()
            } else if manifest.rebuilt_from.is_none() {
                vec!["api_calls"]
            } else {
                continue;
            };
            let tables: Vec<&str> =
                tables.into_iter().filter(|t| *t != "api_calls" || manifest.rebuilt_from.is_none()).collect();
            let is_latest = manifest.date == latest.date && manifest.generation == latest.generation;
            let by_reference =
                manifest.file("targets").is_some_and(|e| e.base.is_some()) && tables.contains(&"targets");
            let mut tables = tables;
            if by_reference {
                tables.push("target_inputs");
            }
            let wanted = if is_latest { None } else { Some(tables.as_slice()) };
            // Absolute paths: a warehouse file's views must resolve from wherever it is opened.
            let files: Vec<(crate::store::FileEntry, PathBuf)> = store
                .local_files(manifest, cache_dir, wanted)
                .await?
                .into_iter()
                .map(|(entry, path)| {
                    let absolute = std::fs::canonicalize(&path).map_err(|source| ServeError::Io { path, source })?;
                    Ok((entry, absolute))
                })
                .collect::<Result<_, ServeError>>()?;
            let local = |table: &str| files.iter().find(|(e, _)| e.table == table);
            if by_reference && local("target_inputs").is_none() {
                return Err(ServeError::Store(StoreError::BadManifest {
                    url: store.url().to_string(),
                    path: format!("{}/_manifest.json", manifest.folder()),
                    message: "its targets are stored by reference, but it lists no target_inputs table".into(),
                }));
            }
            if let (Some((entry, own)), Some((_, inputs))) = (local("targets"), local("target_inputs"))
                && let Some(base) = entry.base.as_deref().filter(|_| by_reference)
            {
                let base = store.local_base(manifest, base, cache_dir).await?;
                let base = std::fs::canonicalize(&base).map_err(|source| ServeError::Io { path: base, source })?;
                referenced.insert(
                    (manifest.date.clone(), manifest.generation),
                    by_reference_relation(own, &base, inputs, &manifest.snapshot_id),
                );
            }
            for (entry, path) in &files {
                let stored_by_reference = entry.table == "targets" && by_reference;
                if tables.contains(&entry.table.as_str()) && entry.table != "target_inputs" && !stored_by_reference {
                    history.push((entry.table.clone(), path.clone()));
                }
            }
            if is_latest {
                latest_files = files;
            }
        }
        // Discovery runs (`pipelines/discovery.toml`): their calls join the ledger, their finds `discovered`.
        let mut discovered: Vec<PathBuf> = Vec::new();
        let runs = crate::run::discovery::committed(store)
            .await
            .map_err(|e| ServeError::Sql(format!("reading the discovery runs: {}", crate::error_text(&e))))?;
        for (_, folder) in runs {
            for (table, into) in [("api_calls", None), ("candidates", Some(&mut discovered))] {
                let local = store.local_object(&format!("{folder}/{table}.parquet"), cache_dir).await?;
                let path = std::fs::canonicalize(&local).map_err(|source| ServeError::Io { path: local, source })?;
                match into {
                    Some(list) => list.push(path),
                    None => history.push(("api_calls".to_string(), path)),
                }
            }
        }
        // Every time in the store is UTC; so is every time a query shows.
        let mut sql = String::from("SET TimeZone = 'UTC';\n");
        sql.push_str(&match discovered.is_empty() {
            true => "CREATE VIEW discovered AS SELECT NULL::VARCHAR AS domain, NULL::VARCHAR AS technology, \
                     NULL::DATE AS first_seen, NULL::VARCHAR AS source, NULL::VARCHAR AS run_id WHERE false;\n"
                .to_string(),
            false => format!(
                "CREATE VIEW discovered AS SELECT domain, technology, first_seen, source, run_id \
                 FROM read_parquet({}) WHERE known;\n",
                path_list(&discovered)
            ),
        });
        let renames = latest_files.iter().find(|(entry, _)| entry.table == "renames").map(|(_, path)| path.clone());
        for view in HISTORY_TABLES {
            let all: Vec<PathBuf> = history.iter().filter(|(t, _)| t == view).map(|(_, p)| p.clone()).collect();
            let files = match (all.is_empty(), empty_view_columns(view)) {
                // The targets of the snapshots stored by reference join the whole files'.
                _ if view == "targets" && !referenced.is_empty() => {
                    let whole = (!all.is_empty())
                        .then(|| format!("SELECT * FROM read_parquet({}, union_by_name = true)", path_list(&all)));
                    let relations: Vec<String> =
                        whole.into_iter().chain(referenced.values().map(|r| format!("SELECT * FROM {r}"))).collect();
                    format!("({})", relations.join(" UNION ALL BY NAME "))
                }
                (false, _) => format!("read_parquet({}, union_by_name = true)", path_list(&all)),
                // Snapshots from before change tracking (or without alert rules): an empty view
                // with the table's columns, so queries and exports over it still run.
                (true, Some(columns)) => format!("(SELECT {columns} WHERE false)"),
                (true, None) => continue,
            };
            let name = if view == "targets" { "targets_history" } else { view };
            // A renamed domain's rows also under the account's current domain.
            match (view, &renames) {
                ("targets" | "changes", Some(renames)) => sql.push_str(&format!(
                    "CREATE VIEW {name} AS SELECT h.*, coalesce(r.renamed_to, h.domain) AS account_domain \
                     FROM {files} AS h LEFT JOIN read_parquet({}) AS r ON r.domain = h.domain;\n",
                    quote_literal(&renames.to_string_lossy())
                )),
                ("targets" | "changes", None) => {
                    sql.push_str(&format!("CREATE VIEW {name} AS SELECT *, domain AS account_domain FROM {files};\n"))
                }
                _ => sql.push_str(&format!("CREATE VIEW {name} AS SELECT * FROM {files};\n")),
            }
        }
        for (entry, path) in &latest_files {
            if entry.table == "targets" {
                let from = match referenced.get(&(latest.date.clone(), latest.generation)) {
                    Some(relation) => relation.clone(),
                    None => native::parquet_relation(path),
                };
                // The lists read a native copy in their order; the Parquet files if none can be made.
                match native::copy_for(store.url(), &latest, entry, &from, cache_dir) {
                    Ok(copy) => sql.push_str(&native::attach(&copy)),
                    Err(e) => {
                        tracing::warn!(
                            "targets: no native copy in {} ({e}); reading the Parquet file",
                            cache_dir.display()
                        );
                        sql.push_str(&native::parquet_view(&conn, &from)?);
                    }
                }
            } else if MODULE_TABLES.contains(&entry.table.as_str()) {
                sql.push_str(&format!(
                    "CREATE VIEW {} AS SELECT * FROM read_parquet({});\n",
                    entry.table,
                    quote_literal(&path.to_string_lossy())
                ));
            }
        }
        sql.push_str(RUNS_TABLE);
        conn.execute_batch(&sql).map_err(sql_error)?;
        // Where sources disagree, one row per field of a target of the latest snapshot (a
        // snapshot from before the signal layer, or without it, has none).
        if conn.execute_batch(CONFLICTS_VIEW).is_err() {
            conn.execute_batch(CONFLICTS_EMPTY).map_err(sql_error)?;
        }
        insert_runs(&conn, &generations, &current)?;
        let history = crate::run::history::all(store)
            .await
            .map_err(|e| ServeError::Sql(format!("reading the run history: {}", crate::error_text(&e))))?;
        add_run_history(&conn, &history)?;
        add_spend_record(&conn, store).await?;
        Ok(Self { conn, latest, snapshots: snapshots.len() })
    }

    /// Writes a DuckDB database file at `out` with the views of [`Warehouse::define`]
    /// over the store's Parquet files (in place for a local store; copies in
    /// `cache_dir` for S3, which must stay there), and the latest `targets` as a table
    /// of its own, in the lists' order. Written beside `out`, then moved
    /// into place: an analyst's open copy is never half-written.
    pub async fn write_file(store: &Store, cache_dir: &Path, out: &Path) -> Result<Self, ServeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServeError::Io { path, source }
        };
        let partial = out.with_extension("duckdb.partial");
        for stale in [partial.clone(), partial.with_extension("partial.wal")] {
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(io(&stale))?;
            }
        }
        let conn = Connection::open(&partial).map_err(sql_error)?;
        let warehouse = Self::define(conn, store, cache_dir).await?;
        // The latest targets as a table of the file itself (the cached copy it read is
        // this machine's): the file opens anywhere.
        warehouse
            .conn
            .execute_batch(
                "CREATE TABLE targets_table AS SELECT * FROM targets; DROP VIEW targets; \
                 ALTER TABLE targets_table RENAME TO targets; DETACH DATABASE IF EXISTS serving; CHECKPOINT;",
            )
            .map_err(sql_error)?;
        let Self { conn, latest, snapshots } = warehouse;
        conn.close().map_err(|(_, e)| sql_error(e))?;
        std::fs::rename(&partial, out).map_err(io(out))?;
        Ok(Self { conn: Connection::open_in_memory().map_err(sql_error)?, latest, snapshots })
    }

    /// Narrows every view to what an audience may see, for the export queries that run
    /// next: schema `scoped` holds views of the same names over its accounts, without the
    /// columns its role may not see (removed, not blanked), and the search path reads it
    /// first. `None` goes back to every account and every field. Returns the number of
    /// accounts the audience sees.
    pub fn scope(
        &self,
        audience: Option<(&audience::Audience, &crate::config::alerts::People)>,
    ) -> Result<usize, ServeError> {
        self.conn
            .execute_batch("SET search_path = 'main'; DROP SCHEMA IF EXISTS scoped CASCADE;")
            .map_err(sql_error)?;
        let Some((audience, people)) = audience else {
            return self.accounts();
        };
        // Every domain the store has scored, with its latest country, vertical and score.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT domain, arg_max(country, snapshot_id), arg_max(vertical, snapshot_id), \
                 arg_max(icp_score, snapshot_id)::BIGINT FROM main.targets_history GROUP BY domain",
            )
            .map_err(sql_error)?;
        let accounts: Vec<(String, crate::transform::alerts::Account)> = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    crate::transform::alerts::Account { country: r.get(1)?, vertical: r.get(2)?, icp_score: r.get(3)? },
                ))
            })
            .map_err(sql_error)?
            .collect::<Result<_, _>>()
            .map_err(sql_error)?;
        let seen: Vec<&str> =
            accounts.iter().filter(|(d, a)| audience.sees(people, d, a)).map(|(d, _)| d.as_str()).collect();
        self.conn
            .execute_batch(
                "CREATE SCHEMA scoped; CREATE TABLE scoped.audience_domains (domain VARCHAR PRIMARY KEY); \
                 CREATE TABLE scoped.audience_people (person VARCHAR PRIMARY KEY);",
            )
            .map_err(sql_error)?;
        {
            let mut domains = self.conn.appender_to_db("audience_domains", "scoped").map_err(sql_error)?;
            for domain in &seen {
                domains.append_row([domain]).map_err(sql_error)?;
            }
            let mut feeds = self.conn.appender_to_db("audience_people", "scoped").map_err(sql_error)?;
            for person in &audience.feeds {
                feeds.append_row([person]).map_err(sql_error)?;
            }
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT table_name, list(column_name ORDER BY ordinal_position) FROM information_schema.columns \
                 WHERE table_catalog = current_database() AND table_schema = 'main' GROUP BY table_name ORDER BY table_name",
            )
            .map_err(sql_error)?;
        let views: Vec<(String, Vec<String>)> = stmt
            .query_map([], |r| {
                let columns: duckdb::types::Value = r.get(1)?;
                let columns = match columns {
                    Value::List(items) => {
                        items.into_iter().filter_map(|v| if let Value::Text(t) = v { Some(t) } else { None }).collect()
                    }
                    _ => Vec::new(),
                };
                Ok((r.get::<_, String>(0)?, columns))
            })
            .map_err(sql_error)?
            .collect::<Result<_, _>>()
            .map_err(sql_error)?;
        let mut sql = String::new();
        for (view, columns) in &views {
            sql.push_str(&audience::scoped_view(audience, view, columns));
        }
        sql.push_str("SET search_path = 'scoped,main';");
        self.conn.execute_batch(&sql).map_err(sql_error)?;
        self.accounts()
    }

    /// The accounts the lists show in the current scope (`listed`): a target outside any
    /// family, a family's primary, or a member whose primary the scope does not hold (a
    /// regional site in another territory). A snapshot from before families: every target.
    fn accounts(&self) -> Result<usize, ServeError> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM targets WHERE listed", [], |r| r.get(0)).map_err(sql_error)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Refuses anything but a query, using DuckDB's own parser: only SELECT-like
    /// statements serialize.
    fn check_read_only(&self, sql: &str) -> Result<(), ServeError> {
        check_read_only(&self.conn, sql)
    }

    /// Runs read-only statements, each with `params` bound, on up to `threads` connections
    /// to this warehouse at once (each reading as this one does: its search path and time
    /// zone); the results in the statements' order. Small statements over small tables
    /// keep one core busy each: an export's run side by side.
    pub fn run_all(
        &self,
        statements: &[&str],
        params: &[(String, Value)],
        threads: usize,
    ) -> Vec<Result<Output, ServeError>> {
        let threads = threads.clamp(1, statements.len().max(1));
        if threads == 1 {
            return statements.iter().map(|sql| self.run(sql, params)).collect();
        }
        // Each connection reads as this one does; made here, each used by one thread.
        let settings: Result<(String, String), ServeError> = self
            .conn
            .query_row("SELECT current_setting('search_path'), current_setting('TimeZone')", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(sql_error);
        let connect = || -> Result<Connection, ServeError> {
            let (path, zone) = settings.as_ref().map_err(|e| ServeError::Sql(e.to_string()))?;
            let conn = self.conn.try_clone().map_err(sql_error)?;
            let set = format!("SET search_path = {}; SET TimeZone = {};", quote_literal(path), quote_literal(zone));
            conn.execute_batch(&set).map_err(sql_error)?;
            Ok(conn)
        };
        let connections = std::sync::Mutex::new((0..threads).map(|_| connect()).collect::<Vec<_>>());
        let taken = || connections.lock().ok().and_then(|mut all| all.pop());
        crate::transform::encode::each_on_threads_with(statements.len(), threads, taken, |conn, i| match conn {
            Some(Ok(conn)) => check_read_only(conn, statements[i]).and_then(|()| execute(conn, statements[i], params)),
            Some(Err(e)) => Err(ServeError::Sql(format!("opening a connection: {e}"))),
            None => Err(ServeError::Sql("no connection left for a thread".into())),
        })
        .into_iter()
        .map(|done| done.unwrap_or_else(|| Err(ServeError::Sql("a statement's thread panicked".into()))))
        .collect()
    }

    /// Narrows every view (and table) with a `domain` column to one domain, for a read of
    /// one target (the brief): schema `one` holds the narrowed views, first on the search
    /// path, over whatever the path read before (an audience's `scoped` views included).
    pub fn narrow_to_domain(&self, domain: &str) -> Result<(), ServeError> {
        let path: String =
            self.conn.query_row("SELECT current_setting('search_path')", [], |r| r.get(0)).map_err(sql_error)?;
        let mut schemas: Vec<String> =
            path.split(',').map(|s| s.trim().trim_matches('"').to_string()).filter(|s| !s.is_empty()).collect();
        if schemas.is_empty() {
            schemas.push("main".into());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT table_name FROM information_schema.columns \
                 WHERE table_catalog = current_database() AND table_schema = ? AND column_name = 'domain' ORDER BY table_name",
            )
            .map_err(sql_error)?;
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let literal = quote_literal(domain);
        let mut sql = String::from("DROP SCHEMA IF EXISTS one CASCADE; CREATE SCHEMA one;\n");
        let mut made = std::collections::BTreeSet::new();
        for schema in &schemas {
            let names: Vec<String> = stmt
                .query_map([schema], |r| r.get::<_, String>(0))
                .map_err(sql_error)?
                .collect::<Result<_, _>>()
                .map_err(sql_error)?;
            for name in names.into_iter().filter(|n| made.insert(n.clone())) {
                sql.push_str(&format!(
                    "CREATE VIEW one.{v} AS SELECT * FROM {s}.{v} WHERE domain = {literal};\n",
                    v = quote(&name),
                    s = quote(schema)
                ));
            }
        }
        sql.push_str(&format!("SET search_path = 'one,{}';", schemas.join(",")));
        self.conn.execute_batch(&sql).map_err(sql_error)
    }

    /// Runs one read-only statement with its named parameters (`$name`) bound as
    /// prepared-statement values, never spliced into the text. Every `$name` the
    /// statement uses must be given, and every value given must be used.
    pub fn run(&self, sql: &str, params: &[(String, Value)]) -> Result<Output, ServeError> {
        self.check_read_only(sql)?;
        execute(&self.conn, sql, params)
    }
}

/// Executes one statement over `conn` with its named parameters bound (see
/// [`Warehouse::run`], which checks first that the statement only reads).
pub fn execute(conn: &Connection, sql: &str, params: &[(String, Value)]) -> Result<Output, ServeError> {
    let mut stmt = conn.prepare(sql).map_err(sql_error)?;
    let mut used = vec![false; params.len()];
    for index in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(index).map_err(sql_error)?;
        let Some(at) = params.iter().position(|(n, _)| *n == name) else {
            let given: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ServeError::Param(format!(
                "the SQL uses ${name}, which has no value (given: {})",
                if given.is_empty() { "none".to_string() } else { given.join(", ") }
            )));
        };
        used[at] = true;
        stmt.raw_bind_parameter(index, &params[at].1).map_err(sql_error)?;
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(ServeError::Param(format!("the SQL never uses ${}", params[unused].0)));
    }
    stmt.raw_execute().map_err(sql_error)?;
    let mut batches = Vec::new();
    while let Some(chunk) = stmt.step().map_err(sql_error)? {
        batches.push(arrow::record_batch::RecordBatch::from(&chunk));
    }
    let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| stmt.schema());
    Ok(Output { schema, batches })
}

/// Refuses anything but a query over `conn` (see [`Warehouse::run`]).
fn check_read_only(conn: &Connection, sql: &str) -> Result<(), ServeError> {
    let verdict: String =
        conn.query_row("SELECT json_serialize_sql(?::VARCHAR)::VARCHAR", [sql], |row| row.get(0)).map_err(sql_error)?;
    judge(sql, &verdict)
}

/// Reads DuckDB's verdict on a statement. Fails closed: only a verdict that says
/// in so many words that there was no error lets the statement run.
fn judge(sql: &str, verdict: &str) -> Result<(), ServeError> {
    let first_word = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
    let Ok(verdict) = serde_json::from_str::<serde_json::Value>(verdict) else {
        return Err(ServeError::NotAQuery(format!("{first_word} statement (DuckDB's verdict on it was not readable)")));
    };
    match verdict["error"].as_bool() {
        Some(false) => Ok(()),
        Some(true) if verdict["error_type"].as_str() == Some("parser") => {
            Err(ServeError::Sql(verdict["error_message"].as_str().unwrap_or("cannot parse the statement").to_string()))
        }
        Some(true) => Err(ServeError::NotAQuery(format!("{first_word} statement"))),
        None => Err(ServeError::NotAQuery(format!(
            "{first_word} statement (DuckDB's verdict on it said neither yes nor no)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_verdict_that_says_no_error_lets_a_statement_run() {
        assert!(judge("SELECT 1", r#"{"error":false,"statements":[]}"#).is_ok());
        for unreadable in ["", "not json", "{}", r#"{"error":"maybe"}"#, "[]"] {
            let refused = judge("SELECT 1", unreadable);
            assert!(matches!(refused, Err(ServeError::NotAQuery(_))), "{unreadable:?} must refuse: {refused:?}");
        }
        let refused = judge("DELETE FROM x", r#"{"error":true,"error_type":"not implemented","error_message":"x"}"#);
        assert!(matches!(refused, Err(ServeError::NotAQuery(m)) if m.starts_with("DELETE")));
        let parse = judge("SELEC 1", r#"{"error":true,"error_type":"parser","error_message":"syntax error"}"#);
        assert!(matches!(parse, Err(ServeError::Sql(m)) if m == "syntax error"));
    }
}
