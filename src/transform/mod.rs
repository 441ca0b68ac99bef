//! Polars transforms: the wide `targets` table, one row per target domain,
//! assembled from the book and the normalized module tables, then scored.
//!
//! Inputs are the Parquet files the fetch layer wrote (files are the contract
//! between the layers); the output is the `targets` Parquet file. Every step is
//! lazy and collected once.

pub mod alerts;
pub mod case_studies;
pub mod changes;
pub mod conflicts;
pub mod encode;
pub mod families;
pub mod gather;
pub mod parts;
pub mod renames;
pub mod scoring;
pub mod signals;

use std::io::Cursor;

use bytes::Bytes;
use polars::prelude::*;

use crate::config::ScoringModel;
use crate::config::signals::SignalRules;
use crate::targets::Target;

/// The columns of `targets` every pipeline has, in order (they follow the system this
/// replaces); [`target_columns`] adds the signal layer's.
pub const TARGET_COLUMNS: [&str; 35] = [
    "domain",
    "company_name",
    "partner_tech",
    "vertical",
    "country",
    "city",
    "state",
    "tech_spend",
    "current_search",
    "sw_monthly_visits",
    "sw_visits_growth_mom",
    "sw_bounce_rate",
    "sw_pages_per_visit",
    "sw_avg_duration",
    "sw_search_traffic_pct",
    "ticker",
    "is_public",
    "revenue",
    "gross_margin",
    "market_cap",
    "exec_name",
    "exec_title",
    "open_roles",
    "search_roles",
    "icp_score",
    "icp_tier",
    "icp_tier_name",
    "score_breakdown",
    "score_reasons",
    "enrichment_level",
    "last_enriched",
    "snapshot_id",
    "modules_failed",
    "family_id",
    "family_primary",
];

/// What the signal rules read beyond the base columns, kept in the targets table as evidence.
pub const SIGNAL_INPUT_COLUMNS: [&str; 11] = [
    "revenue_growth",
    "dead_search_vendor",
    "dead_search_last_seen",
    "trigger_events_recent",
    "trigger_latest_kind",
    "trigger_latest_on",
    "trigger_latest_headline",
    "exec_change_on",
    "exec_change_headline",
    "region",
    "size_band",
];

/// The columns of `targets` for a pipeline with (or without) signal rules, in order.
pub fn target_columns(signals: Option<&SignalRules>) -> Vec<String> {
    let mut out: Vec<String> = TARGET_COLUMNS.iter().map(|c| c.to_string()).collect();
    if let Some(rules) = signals {
        out.extend(SIGNAL_INPUT_COLUMNS.iter().map(|c| c.to_string()));
        out.extend(signals::output_columns(rules));
        out.push("case_studies".into());
        out.push("conflicts".into());
    }
    out.push("provenance".into());
    out
}

/// Reads the named columns of one Parquet file into a lazy frame (only those are
/// decoded: a wide table such as `company`, with its e-mails and phones, costs
/// what the columns asked for cost).
pub fn read_parquet(bytes: Bytes, columns: &[&str]) -> PolarsResult<LazyFrame> {
    let columns = Some(columns.iter().map(|c| c.to_string()).collect());
    Ok(ParquetReader::new(Cursor::new(bytes)).with_columns(columns).finish()?.lazy())
}

/// The named columns of one Parquet file as a scan: filters and projections that follow
/// are applied row group by row group as it is decoded.
fn scan_parquet(bytes: &Bytes, columns: &[&str]) -> PolarsResult<LazyFrame> {
    changes::read_range(bytes, columns, &changes::DomainRange::all())
}

/// `read_parquet` of the columns a `select` names, then the select.
fn read_selected(bytes: &Bytes, select: &[(&str, &str)]) -> PolarsResult<LazyFrame> {
    let names: Vec<&str> = select.iter().map(|(name, _)| *name).collect();
    let exprs: Vec<Expr> =
        select.iter().map(|(name, alias)| if name == alias { col(*name) } else { col(*name).alias(*alias) }).collect();
    Ok(read_parquet(bytes.clone(), &names)?.select(exprs))
}

/// The module tables joined one row per domain, with the columns read from each and the
/// names they take in the joined rows.
const JOINED: [(&str, &[(&str, &str)]); 6] = [
    (
        "company",
        &[
            ("domain", "domain"),
            ("company_name", "bw_company_name"),
            ("vertical", "bw_vertical"),
            ("country", "bw_country"),
            ("city", "city"),
            ("state", "state"),
            ("source", "company_source"),
            ("fetched_at", "company_fetched_at"),
        ],
    ),
    (
        "tech_spend",
        &[
            ("domain", "domain"),
            ("tech_spend", "tech_spend"),
            ("current_search", "current_search"),
            ("partner_tech_detected", "partner_tech_detected"),
            ("runs_algolia", "runs_algolia"),
            ("source", "tech_source"),
            ("fetched_at", "tech_fetched_at"),
        ],
    ),
    (
        "traffic",
        &[
            ("domain", "domain"),
            ("monthly_visits", "sw_monthly_visits"),
            ("visits_growth_mom", "sw_visits_growth_mom"),
            ("bounce_rate", "sw_bounce_rate"),
            ("pages_per_visit", "sw_pages_per_visit"),
            ("avg_visit_duration", "sw_avg_duration"),
            ("source", "traffic_source"),
            ("fetched_at", "traffic_fetched_at"),
        ],
    ),
    (
        "traffic_sources",
        &[
            ("domain", "domain"),
            ("search_traffic_pct", "sw_search_traffic_pct"),
            ("source", "sources_source"),
            ("fetched_at", "sources_fetched_at"),
        ],
    ),
    (
        "financials",
        &[
            ("domain", "domain"),
            ("revenue", "revenue"),
            ("gross_margin", "gross_margin"),
            ("market_cap", "market_cap"),
            ("exec_name", "exec_name"),
            ("exec_title", "exec_title"),
            ("country", "yahoo_country"),
            ("source", "financials_source"),
            ("fetched_at", "financials_fetched_at"),
        ],
    ),
    (
        "hiring",
        &[
            ("domain", "domain"),
            ("open_roles", "open_roles"),
            ("search_roles", "search_roles"),
            ("source", "hiring_source"),
            ("fetched_at", "hiring_fetched_at"),
        ],
    ),
];

/// The tables the signals' inputs are aggregated from, with the columns read from each.
const SIGNAL_TABLES: [(&str, &[&str]); 4] = [
    ("financial_history", &["domain", "fiscal_year_end", "revenue", "source", "fetched_at"]),
    ("tech_stack", &["domain", "technology", "last_detected", "live", "is_search_vendor", "source", "fetched_at"]),
    ("trigger_events", &["domain", "event_type", "headline", "published", "source", "fetched_at"]),
    ("fetches", &["module", "domain", "outcome", "fetched_at"]),
];

/// The module whose fetches say when the news was read.
const NEWS_MODULE: &str = "m12";

/// The rows of the signal tables a split keeps: all the signal inputs read of them (their
/// filters in [`signal_inputs`] keep a subset: dead search vendors, the news's fetches).
const SIGNAL_ROWS: [parts::Keep; 2] = [("tech_stack", "is_search_vendor", "true"), ("fetches", "module", NEWS_MODULE)];

/// The tables the targets' assembly reads and the columns it decodes from each: what a
/// full recompute cannot do without reading.
pub fn scored_columns() -> Vec<(&'static str, Vec<&'static str>)> {
    JOINED
        .iter()
        .map(|(table, select)| (*table, select.iter().map(|(name, _)| *name).collect()))
        .chain(SIGNAL_TABLES.iter().map(|(table, columns)| (*table, columns.to_vec())))
        .collect()
}

/// The module tables `assemble` reads, as Parquet bytes by table name.
pub struct ModuleFiles(changes::SnapshotFiles);

impl ModuleFiles {
    /// The tables by name (`company`, `tech_spend`, …); a table `bytes` lacks is empty.
    pub fn from_tables(bytes: impl Fn(&str) -> Option<Bytes>) -> Self {
        Self(
            scored_columns()
                .into_iter()
                .map(|(table, _)| (table.to_string(), bytes(table).unwrap_or_default()))
                .collect(),
        )
    }

    /// The rows of the tables `read` names that `keep` holds for, only the columns read
    /// (the filter is applied as the row groups are decoded).
    fn narrowed(files: &ModuleFiles, read: &[(&str, &[&str])], keep: Expr) -> PolarsResult<Self> {
        let mut out = changes::SnapshotFiles::new();
        for (table, columns) in read {
            let bytes = files.get(table);
            let narrowed = match bytes.is_empty() {
                true => bytes,
                false => to_parquet(&mut scan_parquet(&bytes, columns)?.filter(keep.clone()).collect()?)?,
            };
            out.insert(table.to_string(), narrowed);
        }
        Ok(Self(out))
    }

    fn get(&self, table: &str) -> Bytes {
        self.0.get(table).cloned().unwrap_or_default()
    }

    /// The named columns of a signal table, scanned.
    fn scan_signal_table(&self, table: &str) -> PolarsResult<LazyFrame> {
        let columns = SIGNAL_TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| *c).unwrap_or_default();
        scan_parquet(&self.get(table), columns)
    }

    /// The joined tables' rows, each sorted by domain (in [`JOINED`]'s order).
    fn joined(&self) -> PolarsResult<Vec<DataFrame>> {
        JOINED.iter().map(|(table, select)| by_domain(read_selected(&self.get(table), select)?.collect()?)).collect()
    }
}

/// How the targets' assembly cuts the book: `rows` targets scored together (a slice, a
/// row group of the table), and the module tables split by domain range into parts of
/// `part_rows` targets when the book is larger, each part's rows decoded alone (memory
/// follows the part, not the book).
#[derive(Debug, Clone, Copy)]
pub struct Slicing {
    pub rows: usize,
    pub part_rows: usize,
}

impl Slicing {
    pub fn of(run: &crate::config::RunSettings) -> Self {
        Self { rows: run.score_slice_rows, part_rows: run.score_part_rows }
    }
}

/// The signal rules and the case studies they match.
pub type SignalSetup = (SignalRules, Vec<case_studies::CaseStudy>);

/// The fields of the targets table that come from a provider (or the seed), with the
/// group of columns (`<group>_source`, `<group>_fetched_at`) their origin is read from,
/// and the seed column that wins over the provider when it has a value.
const PROVENANCE: [(&str, &str, Option<&str>); 24] = [
    ("company_name", "company", Some("seed_company_name")),
    ("vertical", "company", Some("seed_vertical")),
    ("country", "company", Some("seed_country")),
    ("city", "company", None),
    ("state", "company", None),
    ("partner_tech", "tech", Some("seed_partner_tech")),
    ("tech_spend", "tech", None),
    ("current_search", "tech", None),
    ("dead_search_vendor", "stack", None),
    ("sw_monthly_visits", "traffic", None),
    ("sw_visits_growth_mom", "traffic", None),
    ("sw_bounce_rate", "traffic", None),
    ("sw_pages_per_visit", "traffic", None),
    ("sw_avg_duration", "traffic", None),
    ("sw_search_traffic_pct", "sources", None),
    ("revenue", "financials", None),
    ("gross_margin", "financials", None),
    ("market_cap", "financials", None),
    ("exec_name", "financials", None),
    ("exec_title", "financials", None),
    ("revenue_growth", "history", None),
    ("open_roles", "hiring", None),
    ("search_roles", "hiring", None),
    ("trigger_latest_kind", "news", None),
];

/// `provenance`: per field, `{source, fetched_at}` of the value the row holds (`seed`
/// with no time for a value from the book; null for a field without a value).
fn provenance(signals: bool) -> Expr {
    let fields: Vec<Expr> = PROVENANCE
        .iter()
        .filter(|(field, _, _)| signals || !SIGNAL_INPUT_COLUMNS.contains(field))
        .map(|(field, group, seed)| {
            let has = col(*field).is_not_null();
            let from_seed = seed.map_or(lit(false), |s| col(s).is_not_null().and(col(s).eq(col(*field))));
            let source = when(has.clone().not())
                .then(lit(NULL).cast(DataType::String))
                .when(from_seed.clone())
                .then(lit("seed"))
                .otherwise(col(format!("{group}_source")));
            let at = when(has.not().or(from_seed))
                .then(lit(NULL).cast(DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC))))
                .otherwise(col(format!("{group}_fetched_at")));
            as_struct(vec![source.alias("source"), at.alias("fetched_at")]).alias(*field)
        })
        .collect();
    as_struct(fields).alias("provenance")
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` snapshot id (the signals' "today").
fn epoch_day(snapshot_id: &str) -> PolarsResult<i32> {
    let date = chrono::NaiveDate::parse_from_str(snapshot_id, "%Y-%m-%d")
        .map_err(|e| PolarsError::ComputeError(format!("snapshot id {snapshot_id:?} is not a date: {e}").into()))?;
    Ok(crate::store::table::days_since_epoch(date))
}

/// The per-domain inputs of the signals that are not in one module row: revenue
/// growth, the latest dead search vendor, the trigger events of the window and the
/// latest executive change; and when the news was read.
fn signal_inputs(files: &ModuleFiles, rules: &SignalRules, snapshot_id: &str) -> PolarsResult<[DataFrame; 5]> {
    let desc = |by: &str| (col(by), SortMultipleOptions::default().with_order_descending(true).with_nulls_last(true));
    let latest = |value: &str, by: &str| {
        let (key, order) = desc(by);
        col(value).sort_by([key], order).first()
    };
    // Scanned, not read: each filter is applied as the row groups are decoded, so memory
    // holds the rows kept (a few search vendors of a tech stack of 25 items a domain).
    let history = files
        .scan_signal_table("financial_history")?
        .filter(col("revenue").is_not_null())
        .group_by([col("domain")])
        .agg([
            latest("revenue", "fiscal_year_end").alias("r0"),
            {
                let (key, order) = desc("fiscal_year_end");
                col("revenue").sort_by([key], order).slice(lit(1), lit(1)).first().alias("r1")
            },
            col("source").first().alias("history_source"),
            col("fetched_at").max().alias("history_fetched_at"),
        ])
        .select([
            col("domain"),
            when(col("r1").gt(lit(0.0)))
                .then(col("r0") / col("r1") - lit(1.0))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("revenue_growth"),
            col("history_source"),
            col("history_fetched_at"),
        ])
        .collect()?;
    let dead = files
        .scan_signal_table("tech_stack")?
        .filter(col("is_search_vendor").and(col("live").not()))
        .group_by([col("domain")])
        .agg([
            latest("technology", "last_detected").alias("dead_search_vendor"),
            col("last_detected").max().cast(DataType::Date).alias("dead_search_last_seen"),
            col("source").first().alias("stack_source"),
            col("fetched_at").max().alias("stack_fetched_at"),
        ])
        .collect()?;
    let since = epoch_day(snapshot_id)? - rules.window_days as i32;
    let recent = files
        .scan_signal_table("trigger_events")?
        .filter(col("published").cast(DataType::Int32).gt_eq(lit(since)))
        .collect()?
        .lazy();
    let triggers = recent
        .clone()
        .group_by([col("domain")])
        .agg([
            col("event_type").count().cast(DataType::Int64).alias("trigger_events_recent"),
            latest("event_type", "published")
                .str()
                .split(lit("_"))
                .list()
                .join(lit(" "), true)
                .alias("trigger_latest_kind"),
            col("published").max().alias("trigger_latest_on"),
            latest("headline", "published").alias("trigger_latest_headline"),
            col("source").first().alias("news_source"),
            // The oldest event in the window: the row's inputs move the day it leaves.
            col("published").min().alias("trigger_window_from"),
        ])
        .collect()?;
    let exec = recent
        .filter(col("event_type").eq(lit("new_executive")))
        .group_by([col("domain")])
        .agg([
            col("published").max().alias("exec_change_on"),
            latest("headline", "published").alias("exec_change_headline"),
        ])
        .collect()?;
    // When the news was read (with or without events): its fetch.
    let news_read = files
        .scan_signal_table("fetches")?
        .filter(col("module").eq(lit(NEWS_MODULE)))
        .group_by([col("domain")])
        .agg([col("fetched_at").max().alias("news_fetched_at")])
        .collect()?;
    Ok([history, dead, triggers, exec, news_read])
}

/// One book target, with what the run knows about it beyond the providers.
#[derive(Clone)]
pub struct BookRow<'a> {
    pub target: &'a Target,
    pub ticker: Option<&'a str>,
    /// Modules whose calls failed for this domain this run, e.g. "m03,m04".
    pub modules_failed: Option<String>,
    /// The family the domain belongs to (its id) and the family's primary domain.
    pub family: Option<families::Membership>,
}

impl BookRow<'_> {
    /// The hash of the row's book fields (its `book_hash`: domain, the seed's fields, ticker,
    /// failed modules, family), seeded as `input_hash` is.
    fn book_hash(&self, state: &PlSeedableRandomStateQuality) -> i64 {
        use std::hash::BuildHasher as _;
        let t = self.target;
        let family = self.family.as_ref().map(|f| (f.family_id.as_str(), f.primary.as_str()));
        let fields = (t.domain.as_str(), t.company_name.as_deref(), t.partner_tech.as_deref(), t.vertical.as_deref());
        state.hash_one((fields, t.country.as_deref(), self.ticker, self.modules_failed.as_deref(), family)) as i64
    }
}

/// The book's rows as a frame of their fields and their `book_hash` (seeded by `seed`).
fn book_frame(rows: &[&BookRow], seed: u64) -> PolarsResult<LazyFrame> {
    // Borrowed: the book's strings are copied once, into the frame.
    let text = |f: &dyn for<'r> Fn(&'r BookRow<'r>) -> Option<&'r str>| {
        rows.iter().map(|r| f(r)).collect::<Vec<Option<&str>>>()
    };
    let df = df!(
        "domain" => text(&|r| Some(r.target.domain.as_str())),
        "seed_company_name" => text(&|r| r.target.company_name.as_deref()),
        "seed_partner_tech" => text(&|r| r.target.partner_tech.as_deref()),
        "seed_vertical" => text(&|r| r.target.vertical.as_deref()),
        "seed_country" => text(&|r| r.target.country.as_deref()),
        "ticker" => text(&|r| r.ticker),
        "modules_failed" => text(&|r| r.modules_failed.as_deref()),
        "family_id" => text(&|r| r.family.as_ref().map(|f| f.family_id.as_str())),
        "family_primary" => text(&|r| r.family.as_ref().map(|f| f.primary.as_str())),
        "book_hash" => {
            let state = PlSeedableRandomStateQuality::seed_from_u64(seed);
            rows.iter().map(|r| r.book_hash(&state)).collect::<Vec<i64>>()
        },
    )?;
    Ok(df.lazy())
}

/// A scored slice of the targets table: its rows, each row's inputs (`target_inputs`:
/// domain, `input_hash`, `dated`), how many rows were carried forward unchanged, and how
/// many of those are carried by reference (in `inputs`, not in `targets`).
pub struct ScoredSlice {
    pub targets: DataFrame,
    pub inputs: DataFrame,
    pub reused: usize,
    pub referenced: usize,
}

/// What a commit may carry forward from an earlier snapshot instead of computing again:
/// its `targets` and `target_inputs` files.
pub struct Reuse {
    /// The stored targets file: the whole table, or, with `base`, the rows stored with
    /// that snapshot (its table is those and the base's rows of its other domains).
    pub targets: Bytes,
    /// The base of a stored table that is itself stored by reference.
    pub base: Option<Bytes>,
    pub inputs: Bytes,
    /// Whether it is of this snapshot's date. A row whose values depend on the date
    /// (`dated`: a conflict weighed by the age of its claims) is reusable only then.
    pub same_day: bool,
    /// Whether this table is stored by reference: a carried row that is a row of the
    /// base (the stored table's base, or the stored table itself when it is whole) is
    /// left out of the slices' rows and counted in `referenced`; the others are copied.
    pub by_reference: bool,
    /// The domains (sorted) whose module rows may differ from those of the snapshot the
    /// stored files are of: the run fetched them, or dropped rows it held. Every other
    /// domain's module rows are that snapshot's, byte for byte. With it, a row of another
    /// domain whose book fields hash the same (`book_hash`) and whose inputs do not move
    /// with the date by now (`valid_until`, `dated`) is carried without being joined or
    /// hashed: a night's work follows what the fetch touched. `None` joins every row.
    pub touched: Option<Vec<String>>,
}

/// A targets table stored by reference: the base file (an earlier snapshot's whole
/// table) and this snapshot's `target_inputs` (every domain of its table).
#[derive(Clone, Copy)]
pub struct Base<'a> {
    pub targets: &'a Bytes,
    pub inputs: &'a Bytes,
}

/// The columns of the targets table change tracking and the alerts read.
pub const TRACKED_TARGET_COLUMNS: [&str; 8] =
    ["domain", "company_name", "icp_tier", "icp_tier_name", "last_enriched", "country", "vertical", "icp_score"];

/// The named columns (`domain` among them) of a stored targets table's rows in `range`, in
/// domain order, timestamps without a zone (as [`SliceWriter`] takes them): `own`'s rows
/// for a whole table; with a [`Base`], also the base's rows of the domains the inputs list
/// and `own` does not, their `snapshot_id` set to this one's.
pub fn read_targets(
    own: &Bytes,
    base: Option<Base>,
    columns: &[&str],
    snapshot_id: &str,
    range: &changes::DomainRange,
) -> PolarsResult<DataFrame> {
    let own_rows = changes::read_range(own, columns, range)?;
    let Some(base) = base else {
        return zoneless(own_rows.sort(["domain"], SortMultipleOptions::default()).collect()?);
    };
    let domains = |bytes: &Bytes| changes::read_range(bytes, &["domain"], range);
    let on = || ([col("domain")], [col("domain")]);
    let (l, r) = on();
    let (l2, r2) = on();
    let mut kept = changes::read_range(base.targets, columns, range)?
        .join(domains(base.inputs)?, l, r, JoinArgs::new(JoinType::Semi))
        .join(domains(own)?, l2, r2, JoinArgs::new(JoinType::Anti));
    if columns.contains(&"snapshot_id") {
        kept = kept.with_column(lit(snapshot_id.to_string()).alias("snapshot_id"));
    }
    merge_by_domain(&zoneless(kept.collect()?)?, &zoneless(own_rows.collect()?)?)
}

/// Writes a targets table stored by reference whole to a new file at `path`, `range_rows`
/// domains at a time (a row group each, small ones together): every column of `own`, in domain order. Returns
/// the rows written; on an error no file is left.
pub fn write_whole(
    own: &Bytes,
    base: Base,
    snapshot_id: &str,
    range_rows: usize,
    path: &std::path::Path,
) -> PolarsResult<usize> {
    let names: Vec<String> = changes::scan(own)?.collect_schema()?.iter_names().map(|n| n.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let inputs =
        read_parquet(base.inputs.clone(), &["domain"])?.sort(["domain"], SortMultipleOptions::default()).collect()?;
    let domains: Vec<&str> = inputs.column("domain")?.str()?.iter().flatten().collect();
    write_targets(own, Some(base), &names, snapshot_id, &domains, range_rows, path)
}

/// [`read_targets`] of every domain written to `path` as one Parquet file, a range of
/// about `range_rows` of the sorted `domains` at a time (a row group each, small ones
/// together): memory follows the range, not the table. Returns the rows written; on an
/// error no file is left.
pub fn write_targets(
    own: &Bytes,
    base: Option<Base>,
    columns: &[&str],
    snapshot_id: &str,
    domains: &[&str],
    range_rows: usize,
    path: &std::path::Path,
) -> PolarsResult<usize> {
    let ranges = changes::DomainRange::split(domains.iter().copied(), range_rows.max(1));
    let mut writer = SliceWriter::new(path).one_row_per_domain();
    let written = ranges
        .iter()
        .try_fold(0, |rows, range| {
            let slice = read_targets(own, base, columns, snapshot_id, range)?;
            // An empty range still gives the file its columns.
            if slice.height() > 0 || rows == 0 {
                writer.write(&slice)?;
            }
            Ok(rows + slice.height())
        })
        .and_then(|rows| writer.finish().map(|()| rows));
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// The seed of every row's `input_hash`: the code that computes a targets row (the
/// transforms' sources and the locked dependencies, fingerprinted by build.rs), the
/// scoring model, the signal rules and the case studies. Change any of them and no
/// hash matches the stored ones: every row is computed again.
pub fn inputs_fingerprint(model: &ScoringModel, signals: Option<&SignalSetup>) -> u64 {
    use sha2::Digest as _;
    let text = format!("{}|{model:?}|{signals:?}", env!("PARTNERFORGE_TRANSFORM_SOURCE"));
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// One hash per row over every column of `frame` (the row's inputs), seeded with the
/// fingerprint; stored as `Int64` (Delta and most engines have no unsigned type).
fn input_hashes(frame: &DataFrame, seed: u64) -> PolarsResult<Vec<i64>> {
    let state = PlSeedableRandomStateQuality::seed_from_u64(seed);
    let mut hashes = Vec::with_capacity(frame.height());
    let mut columns = frame.columns().iter();
    match columns.next() {
        Some(first) => first.vec_hash(state.clone(), &mut hashes)?,
        None => hashes.resize(frame.height(), seed),
    }
    for column in columns {
        column.vec_hash_combine(state.clone(), &mut hashes)?;
    }
    Ok(hashes.into_iter().map(|h| h as i64).collect())
}

/// The named columns of a Parquet file's rows from `lo` to `hi`, both included, scanned
/// (row groups outside the range are skipped by their statistics).
fn read_between(bytes: &Bytes, columns: &[&str], lo: &str, hi: &str) -> PolarsResult<LazyFrame> {
    let from = changes::DomainRange { lo: Some(lo.to_string()), hi: None };
    Ok(changes::read_range(bytes, columns, &from)?.filter(col("domain").lt_eq(lit(hi.to_string()))))
}

/// The domains of `keys` (a slice's rows' `domain` and `input_hash`) whose stored row can
/// be carried forward, with their stored `dated`: same input hash in `stored` (the stored
/// inputs' `domain`, `input_hash`, `dated`), and not dated unless the stored snapshot is of
/// the same date.
fn reusable(stored: LazyFrame, same_day: bool, keys: &DataFrame) -> PolarsResult<DataFrame> {
    let on = [col("domain"), col("input_hash")];
    keys.clone()
        .lazy()
        .select(on.clone())
        .join(
            stored.select([col("domain"), col("input_hash"), col("dated")]),
            on.clone(),
            on,
            JoinArgs::new(JoinType::Inner),
        )
        .filter(col("dated").fill_null(lit(true)).not().or(lit(same_day)))
        .select([col("domain"), col("dated")])
        .collect()
}

/// The columns of `target_inputs` a row's keys fill (`dated` comes from its scored row).
const KEY_COLUMNS: [&str; 4] = ["domain", "input_hash", "book_hash", "valid_until"];

/// A joined slice's keys ([`KEY_COLUMNS`]): each row's `input_hash` (every column), its
/// `book_hash` (the book's fields alone, [`book_frame`]'s) and its `valid_until` — the first
/// day its inputs move with the date though no data changes (the oldest trigger event of
/// the window leaves it), null when none does.
fn row_keys(joined: &DataFrame, seed: u64, window_days: Option<u32>) -> PolarsResult<DataFrame> {
    let keys = |valid_until: Column| -> PolarsResult<DataFrame> {
        let mut keys = df!(
            "domain" => joined.column("domain")?.as_materialized_series().clone(),
            "input_hash" => input_hashes(joined, seed)?,
            "book_hash" => joined.column("book_hash")?.as_materialized_series().clone(),
        )?;
        keys.with_column(valid_until)?;
        Ok(keys)
    };
    let valid_until = match window_days {
        Some(days) if joined.schema().get("trigger_window_from").is_some() => {
            (col("trigger_window_from").cast(DataType::Int32) + lit(days as i32 + 1)).cast(DataType::Date)
        }
        // (A literal alone would make a one-row column.)
        _ => return keys(Series::full_null("valid_until".into(), joined.height(), &DataType::Date).into()),
    };
    keys(joined.clone().lazy().select([valid_until.alias("valid_until")]).collect()?.column("valid_until")?.clone())
}

/// Two frames of the same columns as one (either may be the empty frame).
fn stack(a: DataFrame, b: DataFrame) -> PolarsResult<DataFrame> {
    match (a.width(), b.width()) {
        (0, _) => Ok(b),
        (_, 0) => Ok(a),
        _ => a.vstack(&b),
    }
}

/// Which of the book's rows a night joins when the fetch says what it touched
/// ([`Reuse::touched`]).
struct Skipping {
    /// Per book row (in domain order): joined and hashed (touched by the fetch, new, its
    /// book fields changed, or its inputs moved with the date), or carried as stored.
    join: Vec<bool>,
    /// The stored keys and `dated` of the rows carried without a join, by domain.
    skipped: DataFrame,
    /// The stored `domain`, `input_hash` and `dated` of the rows joined (those that hash
    /// the same are carried still).
    stored_joined: DataFrame,
}

impl Skipping {
    /// `None` when every row is joined: nothing touched is known, the stored inputs lack
    /// the keys (written by an earlier build), or most rows must be joined anyway (then
    /// narrowing the module tables to them costs more than it spares).
    /// The book is walked in pieces of `piece_rows` rows on every core.
    fn find(reuse: &Reuse, order: &[&BookRow], seed: u64, today: i32, piece_rows: usize) -> PolarsResult<Option<Self>> {
        let Some(touched) = &reuse.touched else { return Ok(None) };
        let columns = ["domain", "input_hash", "dated", "book_hash", "valid_until"];
        let schema = changes::scan(&reuse.inputs)?.collect_schema()?;
        if columns.iter().any(|c| schema.get(c).is_none()) {
            return Ok(None);
        }
        // The stored inputs and the book, both in domain order, walked together.
        let mut stored = read_parquet(reuse.inputs.clone(), &columns)?.collect()?;
        let sorted = |df: &DataFrame| -> PolarsResult<bool> {
            let domains = df.column("domain")?.str()?;
            Ok(domains.null_count() == 0 && domains.iter().flatten().is_sorted_by(|a, b| a < b))
        };
        if !sorted(&stored)? {
            stored = stored.sort(["domain"], SortMultipleOptions::default())?;
            if !sorted(&stored)? {
                return Ok(None); // (a domain twice, or none: not this build's file)
            }
        }
        let mut touched: Vec<&str> = touched.iter().map(String::as_str).collect();
        if !touched.is_sorted() {
            touched.sort_unstable();
        }
        // The stored columns as plain vectors (read once), for a walk without lookups.
        let domains: Vec<&str> = stored.column("domain")?.str()?.iter().map(Option::unwrap_or_default).collect();
        let hashed: Vec<bool> = stored.column("input_hash")?.i64()?.iter().map(|h| h.is_some()).collect();
        let book_hashes: Vec<Option<i64>> = stored.column("book_hash")?.i64()?.iter().collect();
        let dated: Vec<Option<bool>> = stored.column("dated")?.bool()?.iter().collect();
        let until: Vec<Option<i32>> = stored.column("valid_until")?.cast(&DataType::Int32)?.i32()?.iter().collect();
        let state = PlSeedableRandomStateQuality::seed_from_u64(seed);
        // The book in pieces, each walked with the stored rows and the touched domains on
        // whichever thread is free (the book's hashes are most of the work). Per piece: its
        // rows' join bits, and per stored row it met: 1 skipped, 2 joined (its stored hash
        // still compared).
        let piece_rows = piece_rows.max(1);
        let walk = |piece: usize| -> (Vec<bool>, Vec<(usize, u8)>) {
            let rows = &order[piece * piece_rows..((piece + 1) * piece_rows).min(order.len())];
            let first = rows.first().map_or("", |r| r.target.domain.as_str());
            let mut at = domains.partition_point(|d| *d < first);
            let mut next_touched = touched.partition_point(|d| *d < first);
            let (mut join, mut taken) = (Vec::with_capacity(rows.len()), Vec::new());
            for row in rows {
                let domain = row.target.domain.as_str();
                while at < domains.len() && domains[at] < domain {
                    at += 1;
                }
                while next_touched < touched.len() && touched[next_touched] < domain {
                    next_touched += 1;
                }
                let is_touched = touched.get(next_touched) == Some(&domain);
                let found = (at < domains.len() && domains[at] == domain).then_some(at);
                let skip = !is_touched
                    && found.is_some_and(|i| {
                        hashed[i]
                            && until[i].is_none_or(|day| day > today)
                            && (reuse.same_day || dated[i] == Some(false))
                            && book_hashes[i] == Some(row.book_hash(&state))
                    });
                if let Some(i) = found {
                    taken.push((i, if skip { 1 } else { 2 }));
                }
                join.push(!skip);
            }
            (join, taken)
        };
        let mut join = Vec::with_capacity(order.len());
        let mut taken = vec![0u8; stored.height()];
        for piece in encode::each_on_threads(order.len().div_ceil(piece_rows), encode::cores(), walk) {
            let (bits, marks) =
                piece.ok_or_else(|| PolarsError::ComputeError("walking the stored inputs panicked".into()))?;
            join.extend(bits);
            for (i, mark) in marks {
                taken[i] = mark;
            }
        }
        let joined = join.iter().filter(|j| **j).count();
        if joined * 2 > order.len() {
            return Ok(None);
        }
        let rows = |mark: u8| -> PolarsResult<DataFrame> {
            let mask: BooleanChunked = taken.iter().map(|t| *t == mark).collect();
            stored.filter(&mask)
        };
        let skipped = rows(1)?.select(["domain", "input_hash", "book_hash", "valid_until", "dated"])?;
        let stored_joined = rows(2)?.select(["domain", "input_hash", "dated"])?;
        Ok(Some(Self { join, skipped, stored_joined }))
    }
}

/// The rows of `domains` (a frame with a `domain` column) of a Parquet file's range.
fn rows_of(bytes: &Bytes, names: &[&str], lo: &str, hi: &str, domains: &DataFrame) -> PolarsResult<DataFrame> {
    read_between(bytes, names, lo, hi)?
        .join(
            domains.clone().lazy().select([col("domain")]),
            [col("domain")],
            [col("domain")],
            JoinArgs::new(JoinType::Semi),
        )
        .collect()
}

/// `domains` split by whether a Parquet file's range holds them: (held, not held).
fn split_by_file(bytes: &Bytes, lo: &str, hi: &str, domains: &DataFrame) -> PolarsResult<(DataFrame, DataFrame)> {
    let held = read_between(bytes, &["domain"], lo, hi)?;
    let on = || ([col("domain")], [col("domain")]);
    let (l, r) = on();
    let inside = domains.clone().lazy().join(held.clone(), l, r, JoinArgs::new(JoinType::Semi)).collect()?;
    let (l, r) = on();
    let outside = domains.clone().lazy().join(held, l, r, JoinArgs::new(JoinType::Anti)).collect()?;
    Ok((inside, outside))
}

/// Builds and scores the targets table in slices of at most `slice_rows` book
/// rows, in domain order, each handed to `emit` as it is scored (an empty book
/// is one empty slice, so the table keeps its columns). Domains found running
/// Algolia are not targets and are dropped here (customers were dropped from the
/// book before). The module tables are decoded a part of the book at a time (only
/// the columns joined; a book larger than `slicing.part_rows` has them split by domain
/// range once), and the joins work on one slice of domains of the part at a time.
///
/// Work grows with change: each row's inputs (the book's fields and every module
/// value joined for it) are hashed, and with `reuse` a row whose hash equals the one
/// stored for it is carried forward from the stored targets table (its `snapshot_id`
/// set to this one) — or, with [`Reuse::by_reference`], left in the base it is a row of
/// and only counted — and only the others go through conflicts, scoring, signals and case
/// studies. With [`Reuse::touched`], only the rows that may have changed are joined and
/// hashed at all (see [`Skipping`]); the module tables are read for their domains alone.
/// Without `reuse` every row is computed: the same rows, as `rebuild` and a test check.
#[allow(clippy::too_many_arguments)]
pub fn assemble_in_slices(
    book: &[BookRow],
    files: &ModuleFiles,
    model: &ScoringModel,
    signals: Option<&SignalSetup>,
    snapshot_id: &str,
    slicing: Slicing,
    reuse: Option<&Reuse>,
    mut emit: impl FnMut(ScoredSlice) -> PolarsResult<()>,
) -> PolarsResult<()> {
    let present = |c: &str| col(c).is_not_null().cast(DataType::Int32);
    let found = present("company_fetched_at")
        + present("tech_fetched_at")
        + present("traffic_fetched_at")
        + present("sources_fetched_at")
        + present("financials_fetched_at");
    let expected = lit(4) + col("is_public").cast(DataType::Int32);
    let enrichment = when(found.clone().gt_eq(expected))
        .then(lit("full"))
        .when(found.gt(lit(0)))
        .then(lit("partial"))
        .otherwise(lit("none"));
    let last_enriched = polars::lazy::dsl::max_horizontal([
        col("company_fetched_at"),
        col("tech_fetched_at"),
        col("traffic_fetched_at"),
        col("sources_fetched_at"),
        col("financials_fetched_at"),
        col("hiring_fetched_at"),
    ])?;
    let columns = target_columns(signals.map(|(rules, _)| rules));
    // Freshness is weighed as of the snapshot's day (its end, so today's fetches are fresh).
    let now_ms = (i64::from(epoch_day(snapshot_id)?) + 1) * 86_400_000;
    let signal_exprs = match signals {
        Some((rules, _)) => Some((size_band(rules), region(rules), signals::signal_columns(rules)?)),
        None => None,
    };

    let slice_rows = slicing.rows.max(1);
    let mut order: Vec<&BookRow> = book.iter().collect();
    order.sort_by(|a, b| a.target.domain.cmp(&b.target.domain));
    let seed = inputs_fingerprint(model, signals);
    let window_days = signals.map(|(rules, _)| rules.window_days);
    // Without signal rules, only the joined tables are read.
    let read = scored_columns();
    let read: Vec<(&str, &[&str])> = read
        .iter()
        .filter(|(table, _)| signals.is_some() || JOINED.iter().any(|(joined, _)| joined == table))
        .map(|(table, columns)| (*table, columns.as_slice()))
        .collect();
    let part_rows = slicing.part_rows.max(slice_rows);
    // With what the fetch touched, only the rows that may have changed are joined: the module
    // tables are read for those domains alone, the other rows carried as stored.
    let skipping = match reuse {
        Some(reuse) if !order.is_empty() => Skipping::find(reuse, &order, seed, epoch_day(snapshot_id)?, slice_rows)?,
        _ => None,
    };
    let mut narrowed = None;
    let mut joined_domains: Vec<&str> = order.iter().map(|r| r.target.domain.as_str()).collect();
    if let Some(skipping) = &skipping {
        joined_domains.retain({
            let mut join = skipping.join.iter();
            move |_| join.next().copied().unwrap_or(true)
        });
        tracing::info!(
            "targets: {} of {} rows joined and hashed; the fetch left the others' inputs as the stored snapshot's",
            joined_domains.len(),
            order.len()
        );
        let wanted = Series::new("wanted".into(), joined_domains.as_slice());
        narrowed = Some(ModuleFiles::narrowed(files, &read, col("domain").is_in(lit(wanted).implode(false), false))?);
    }
    let module_files = narrowed.as_ref().unwrap_or(files);
    // The module tables split once by ranges of the joined domains (none for one part):
    // each part's rows are decoded (only the columns joined), sorted by domain and
    // aggregated alone, and each slice of the part takes its rows by binary search.
    let ranges = changes::DomainRange::split(joined_domains.iter().copied(), part_rows);
    drop(joined_domains);
    let split = parts::partition_by_range(&module_files.0, &read, &SIGNAL_ROWS, &ranges).map_err(|e| {
        PolarsError::ComputeError(format!("splitting the module tables: {}", crate::error_text(&e)).into())
    })?;
    if ranges.len() > 1 {
        tracing::debug!("module tables split into {} parts of {part_rows} targets", ranges.len());
    }
    // The book's rows of each range. An empty book still makes one (empty) slice: the table
    // keeps its columns.
    let book_parts: Vec<&[&BookRow]> = match order.is_empty() {
        true => vec![&[]],
        false => {
            let mut rest = order.as_slice();
            ranges
                .iter()
                .map(|range| {
                    let end = range
                        .hi
                        .as_deref()
                        .map_or(rest.len(), |hi| rest.partition_point(|r| r.target.domain.as_str() < hi));
                    let (part, after) = rest.split_at(end);
                    rest = after;
                    part
                })
                .collect()
        }
    };
    let mut checked = false;
    // A slice's rows from their joined inputs: conflicts, score, signals, provenance,
    // case studies, in the table's column order.
    let mut score = |frame: DataFrame| -> PolarsResult<DataFrame> {
        // Where the book and BuiltWith disagree, the trust order decides what the row holds
        // (before anything reads those fields).
        let mut frame = match signals {
            Some((rules, _)) => conflicts::add_conflicts(frame, &rules.trust, now_ms)?.lazy(),
            None => frame.lazy(),
        };
        frame = scoring::with_stages(frame, scoring::score_columns(model)?)
            .with_column(lit(snapshot_id.to_string()).alias("snapshot_id"));
        if let (Some((size, region, exprs)), Some((rules, _))) = (&signal_exprs, signals) {
            frame = frame.with_columns([size.clone(), region.clone()]);
            if !checked {
                // Once: a rule that names a column the table lacks is an error naming its key.
                let schema = frame.collect_schema()?;
                if let Some((key, column)) = rules.columns().into_iter().find(|(_, c)| schema.get(c.as_str()).is_none())
                {
                    return Err(PolarsError::ColumnNotFound(
                        format!(
                            "signal rules {} v{}: {key} reads {column:?}, which the targets table does not have",
                            rules.name, rules.version
                        )
                        .into(),
                    ));
                }
                checked = true;
            }
            frame = scoring::with_stages(frame, exprs.clone());
        }
        let mut frame = frame.with_column(provenance(signals.is_some())).collect()?;
        if let Some((rules, studies)) = signals {
            let s = &rules.case_studies;
            frame = case_studies::add_matches(frame, studies, &s.weights, s.per_target)?;
        }
        sorted_by_domain(frame.select(columns.iter().map(String::as_str))?)
    };
    // A slice's scored rows and its inputs' keys become the slice handed to `emit`.
    // The rows carried by reference keep the `dated` stored for them.
    let mut emit =
        |targets: DataFrame, hashes: DataFrame, reused: usize, referenced: Option<DataFrame>| -> PolarsResult<()> {
            let dated =
                if targets.schema().get("conflicts").is_some() { col("conflicts").is_not_null() } else { lit(false) };
            let mut known = targets.clone().lazy().select([col("domain"), dated.alias("dated")]);
            let by_reference = referenced.as_ref().map_or(0, DataFrame::height);
            if let Some(referenced) = referenced.filter(|r| r.height() > 0) {
                known = concat([known, referenced.lazy().select([col("domain"), col("dated")])], UnionArgs::default())?;
            }
            let inputs = hashes
                .lazy()
                .join(known, [col("domain")], [col("domain")], JoinArgs::new(JoinType::Left))
                .sort(["domain"], SortMultipleOptions::default())
                .collect()?;
            emit(ScoredSlice { targets, inputs, reused, referenced: by_reference })
        };
    let joiner = Joiner { seed, enrichment, last_enriched, signals, snapshot_id };
    // With a stored snapshot, the rows to compute of several slices are scored together (a
    // night changes a few rows of each slice: scoring them slice by slice cost more in each
    // call's fixed work than in the rows); the slices wait, in order, holding only their
    // hashes and the domains they carry.
    let mut pending: Vec<Pending<'_, '_, '_>> = Vec::new();
    let mut fresh: Vec<DataFrame> = Vec::new();
    let mut fresh_rows = 0;
    let mut flags = skipping.as_ref().map(|s| s.join.as_slice());
    for (p, part) in book_parts.into_iter().enumerate() {
        let part_files = ModuleFiles(split.load(p).map_err(|e| {
            PolarsError::ComputeError(format!("reading the module tables: {}", crate::error_text(&e)).into())
        })?);
        let tables = joiner.tables(&part_files)?;
        drop(part_files);
        let join = |slice: &[&BookRow], range: &Option<(String, String)>| joiner.join(&tables, slice, range);
        // A slice computed again whole (its stored rows could not be carried after all) needs
        // every row's inputs: with the tables narrowed to the rows joined, they are read again
        // for the slice's range.
        let rejoin = |slice: &[&BookRow], range: &Option<(String, String)>| match (&narrowed, range) {
            (Some(_), Some((lo, hi))) => {
                let within = col("domain").gt_eq(lit(lo.clone())).and(col("domain").lt_eq(lit(hi.clone())));
                let whole = joiner.tables(&ModuleFiles::narrowed(files, &read, within)?)?;
                joiner.join(&whole, slice, range)
            }
            _ => join(slice, range),
        };
        // Skipping, a slice joins a few of its rows, and by reference it reads none of the
        // others: slices of more book rows spare each slice's fixed work (its row group of
        // `target_inputs` holds as many). Rows copied (not by reference) keep the slice's size.
        let wide = skipping.is_some() && reuse.is_some_and(|r| r.by_reference);
        let book_slice = if wide { slice_rows * SKIPPING_SLICE_FACTOR } else { slice_rows };
        let slices: Vec<&[&BookRow]> = if part.is_empty() { vec![&[]] } else { part.chunks(book_slice).collect() };
        for slice in slices {
            let range =
                slice.first().zip(slice.last()).map(|(a, b)| (a.target.domain.clone(), b.target.domain.clone()));
            // The rows to join: all, or (skipping) those the fetch touched or that must be
            // computed again; the others are carried with their stored inputs.
            let (to_join, skipped): (Vec<&BookRow>, Option<DataFrame>) = match (&skipping, flags.as_mut(), &range) {
                (Some(skipping), Some(flags), Some((lo, hi))) => {
                    let (these, rest) = flags.split_at(slice.len());
                    *flags = rest;
                    let rows = slice.iter().zip(these).filter(|(_, join)| **join).map(|(r, _)| *r).collect();
                    (rows, Some(domain_range(&skipping.skipped, lo, hi)?))
                }
                _ => (slice.to_vec(), None),
            };
            let joined = if to_join.is_empty() && skipped.is_some() { None } else { Some(join(&to_join, &range)?) };
            // The row's inputs, hashed; with a stored snapshot, the unchanged rows are carried.
            let keys = match &joined {
                Some(joined) => row_keys(joined, seed, window_days)?,
                None => DataFrame::empty(),
            };
            let (Some(reuse), Some((lo, hi))) = (reuse, &range) else {
                let joined = joined.unwrap_or_default();
                let targets = score(joined)?;
                emit(targets, keys, 0, None)?;
                continue;
            };
            let stored = match &skipping {
                Some(skipping) => skipping.stored_joined.clone().lazy(),
                None => read_between(&reuse.inputs, &["domain", "input_hash", "dated"], lo, hi)?,
            };
            let mut same =
                if keys.height() > 0 { reusable(stored, reuse.same_day, &keys)? } else { DataFrame::empty() };
            let mut hashes = keys;
            if let Some(skipped) = skipped.filter(|s| s.height() > 0) {
                same = stack(same, skipped.select(["domain", "dated"])?)?;
                hashes = stack(hashes, skipped.select(KEY_COLUMNS)?)?;
            }
            if let Some(joined) = joined {
                let rows = joined
                    .lazy()
                    .join(same.clone().lazy(), [col("domain")], [col("domain")], JoinArgs::new(JoinType::Anti))
                    .collect()?;
                fresh_rows += rows.height();
                if rows.height() > 0 {
                    fresh.push(rows);
                }
            }
            pending.push(Pending { slice, lo: lo.clone(), hi: hi.clone(), hashes, same });
            if fresh_rows >= slice_rows || pending.len() >= MAX_PENDING_SLICES {
                let scored = score_fresh(&mut fresh, &mut score)?;
                fresh_rows = 0;
                for waiting in pending.drain(..) {
                    carry(waiting, &scored, reuse, &columns, snapshot_id, &rejoin, &mut score, &mut emit)?;
                }
            }
        }
        // The part's waiting slices are done before its tables go.
        if let Some(reuse) = reuse {
            let scored = score_fresh(&mut fresh, &mut score)?;
            fresh_rows = 0;
            for waiting in pending.drain(..) {
                carry(waiting, &scored, reuse, &columns, snapshot_id, &rejoin, &mut score, &mut emit)?;
            }
        }
    }
    Ok(())
}

/// How a slice's rows are joined with their inputs: the book's fields, every module value
/// and the signal inputs, with the columns computed from them before scoring.
struct Joiner<'a> {
    seed: u64,
    enrichment: Expr,
    last_enriched: Expr,
    signals: Option<&'a SignalSetup>,
    snapshot_id: &'a str,
}

/// A part's tables: the joined module tables and the signal inputs, each sorted by domain.
struct PartTables {
    joined: Vec<DataFrame>,
    inputs: Vec<DataFrame>,
}

impl Joiner<'_> {
    fn tables(&self, files: &ModuleFiles) -> PolarsResult<PartTables> {
        let inputs = match self.signals {
            Some((rules, _)) => signal_inputs(files, rules, self.snapshot_id)?.map(by_domain).into_iter().collect(),
            None => Ok(Vec::new()),
        }?;
        Ok(PartTables { joined: files.joined()?, inputs })
    }

    /// A slice's rows joined with their inputs (the tables' rows of the slice's range).
    fn join(
        &self,
        tables: &PartTables,
        slice: &[&BookRow],
        range: &Option<(String, String)>,
    ) -> PolarsResult<DataFrame> {
        let within = |df: &DataFrame| match range {
            Some((lo, hi)) => domain_range(df, lo, hi),
            None => Ok(df.clone()),
        };
        let join = |frame: DataFrame, table: &DataFrame| {
            gather::left_join_unique(frame, &within(table)?, &["domain"], &["domain"], false)
        };
        let mut frame = book_frame(slice, self.seed)?.collect()?;
        for table in &tables.joined {
            frame = join(frame, table)?;
        }
        let mut frame = frame
            .lazy()
            .filter(col("runs_algolia").fill_null(lit(false)).not())
            .with_columns([
                // The book is curated by sales: its values win; the providers fill gaps.
                coalesce(&[col("seed_company_name"), col("bw_company_name")]).alias("company_name"),
                coalesce(&[col("seed_partner_tech"), col("partner_tech_detected")]).alias("partner_tech"),
                coalesce(&[col("seed_vertical"), col("bw_vertical")]).alias("vertical"),
                coalesce(&[col("seed_country"), col("bw_country")]).alias("country"),
                col("ticker").is_not_null().alias("is_public"),
            ])
            .with_columns([
                self.enrichment.clone().alias("enrichment_level"),
                self.last_enriched.clone().alias("last_enriched"),
            ])
            .collect()?;
        for input in &tables.inputs {
            frame = join(frame, input)?;
        }
        Ok(frame)
    }
}

/// How many times `score_slice_rows` book rows a slice holds when only the touched rows
/// are joined (see [`Skipping`]) and the carried rows are named by reference.
const SKIPPING_SLICE_FACTOR: usize = 4;

/// How many slices wait for their rows to be scored together, at most.
const MAX_PENDING_SLICES: usize = 32;

/// A slice waiting for its computed rows: its book rows and range, its inputs' hashes
/// and the domains whose stored rows it carries.
struct Pending<'a, 'b, 'c> {
    slice: &'a [&'b BookRow<'c>],
    lo: String,
    hi: String,
    hashes: DataFrame,
    same: DataFrame,
}

/// Scores the rows waiting to be computed, together (sorted by domain, as `score` leaves them).
fn score_fresh(
    fresh: &mut Vec<DataFrame>,
    score: &mut impl FnMut(DataFrame) -> PolarsResult<DataFrame>,
) -> PolarsResult<DataFrame> {
    let frames = std::mem::take(fresh);
    let Some(first) = frames.first() else { return Ok(DataFrame::empty()) };
    let mut rows = first.clone();
    for frame in &frames[1..] {
        rows.vstack_mut(frame)?;
    }
    score(rows)
}

/// A waiting slice's rows: its stored rows carried forward and its computed rows, in
/// domain order, handed to `emit` (with [`Reuse::by_reference`], the rows of the base
/// are named, not read). Stored rows that cannot be carried after all (missing, or of
/// another schema) have the whole slice computed again.
#[allow(clippy::too_many_arguments)]
fn carry(
    waiting: Pending<'_, '_, '_>,
    scored: &DataFrame,
    reuse: &Reuse,
    columns: &[String],
    snapshot_id: &str,
    join: &impl Fn(&[&BookRow], &Option<(String, String)>) -> PolarsResult<DataFrame>,
    score: &mut impl FnMut(DataFrame) -> PolarsResult<DataFrame>,
    emit: &mut impl FnMut(DataFrame, DataFrame, usize, Option<DataFrame>) -> PolarsResult<()>,
) -> PolarsResult<()> {
    let Pending { slice, lo, hi, hashes, same } = waiting;
    let computed = if scored.height() > 0 { domain_range(scored, &lo, &hi)? } else { scored.clone() };
    if same.height() == 0 {
        // Nothing carried: the computed rows are the slice (an empty slice is still scored,
        // so that its frame has the table's columns).
        let targets = if computed.width() == 0 { score(join(slice, &Some((lo, hi)))?)? } else { computed };
        return emit(targets, hashes, 0, None);
    }
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    // The carried rows copied (read from the stored files) and those carried by reference.
    let (copied, referenced) = match (&reuse.base, reuse.by_reference) {
        // The stored table is whole and is this one's base: every carried row is one of its rows.
        (None, true) => (None, Some(same.clone())),
        (None, false) => (Some(rows_of(&reuse.targets, &names, &lo, &hi, &same)?), None),
        (Some(base), by_reference) => {
            // Stored by reference: the snapshot's own rows, and its base's for the rest.
            let (own, from_base) = split_by_file(&reuse.targets, &lo, &hi, &same)?;
            let own = rows_of(&reuse.targets, &names, &lo, &hi, &own)?;
            match by_reference {
                true => (Some(own), Some(from_base)),
                false => {
                    let from_base = rows_of(base, &names, &lo, &hi, &from_base)?;
                    (Some(merge_by_domain(&zoneless(own)?, &zoneless(from_base)?)?), None)
                }
            }
        }
    };
    let expected = same.height() - referenced.as_ref().map_or(0, DataFrame::height);
    let carried = match copied {
        Some(rows) => rows.lazy().with_column(lit(snapshot_id.to_string()).alias("snapshot_id")).collect()?,
        // Nothing copied: no rows, the computed rows' columns, or (none computed either) the
        // stored file's (its statistics skip every row group).
        None if computed.width() > 0 => computed.slice(0, 0),
        None => read_between(&reuse.targets, &names, "\u{10FFFF}", "\u{10FFFF}")?.collect()?,
    };
    // Polars keeps a zone on a cast only with its `timezones` feature, so the rows computed
    // and those read back may differ in their timestamps' zones (all UTC in the file): both
    // are compared and merged without zones, and the writer stores every timestamp as UTC.
    let (computed, carried) = (zoneless(computed)?, zoneless(carried)?);
    let computed_schema = (computed.height() > 0).then(|| computed.schema().clone());
    if carried.height() != expected || computed_schema.as_ref().is_some_and(|s| s != carried.schema()) {
        // The stored rows are not in this code's shape after all: compute them too.
        let differ: Vec<String> = match &computed_schema {
            None => Vec::new(),
            Some(schema) => schema
                .iter()
                .filter(|(name, dtype)| carried.schema().get(name.as_str()) != Some(*dtype))
                .map(|(name, dtype)| {
                    format!("{name}: {dtype} computed, {:?} stored", carried.schema().get(name.as_str()))
                })
                .collect(),
        };
        tracing::warn!(
            "targets {lo} … {hi}: the stored rows cannot be carried forward ({} of {expected} found; {}); computed again",
            carried.height(),
            if differ.is_empty() { "same columns".to_string() } else { differ.join(", ") }
        );
        let targets = score(join(slice, &Some((lo, hi)))?)?;
        return emit(targets, hashes, 0, None);
    }
    let reused = same.height();
    let both = merge_by_domain(&carried, &computed)?;
    emit(both, hashes, reused, referenced)
}

/// The frame with its timestamps, at any depth, in milliseconds without a zone.
fn zoneless(df: DataFrame) -> PolarsResult<DataFrame> {
    fn naive(dtype: &DataType) -> DataType {
        match dtype {
            DataType::Datetime(..) => DataType::Datetime(TimeUnit::Milliseconds, None),
            DataType::List(inner) => DataType::List(Box::new(naive(inner))),
            DataType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| Field::new(f.name().clone(), naive(f.dtype()))).collect())
            }
            other => other.clone(),
        }
    }
    let schema = df.schema().clone();
    if schema.iter().all(|(_, dtype)| naive(dtype) == *dtype) {
        return Ok(df);
    }
    let cast = schema.iter().map(|(name, dtype)| match naive(dtype) {
        same if same == *dtype => col(name.clone()),
        other => col(name.clone()).cast(other),
    });
    df.lazy().select(cast.collect::<Vec<_>>()).collect()
}

/// `frame` in domain order. Rows already in that order (a slice's rows keep the book's
/// order through its joins) are only flagged sorted: sorting gathers every column, and
/// Polars gathers a nested list column row by row.
fn sorted_by_domain(frame: DataFrame) -> PolarsResult<DataFrame> {
    let mut domain = frame.column("domain")?.as_materialized_series().rechunk();
    let in_order = {
        let domains = domain.str()?;
        domains.null_count() == 0 && domains.iter().flatten().is_sorted()
    };
    if !in_order {
        return frame.sort(["domain"], SortMultipleOptions::default());
    }
    domain.set_sorted_flag(polars::series::IsSorted::Ascending);
    let mut frame = frame;
    frame.with_column(domain.into_column())?;
    Ok(frame)
}

/// Two frames sorted by domain (no domain in both) as one, in domain order: runs of
/// `a` with the runs of `b` that fall between them, sliced and stacked (no row is
/// gathered), in one chunk. Frames that are not sorted after all are stacked and sorted.
fn merge_by_domain(a: &DataFrame, b: &DataFrame) -> PolarsResult<DataFrame> {
    if b.height() == 0 || b.width() == 0 {
        return Ok(a.clone());
    }
    if a.height() == 0 {
        return Ok(b.clone());
    }
    let column = |df: &DataFrame| df.column("domain").map(|c| c.as_materialized_series().rechunk());
    let (a_column, b_column) = (column(a)?, column(b)?);
    let a_domains: Vec<&str> = a_column.str()?.iter().map(Option::unwrap_or_default).collect();
    let b_domains: Vec<&str> = b_column.str()?.iter().map(Option::unwrap_or_default).collect();
    if !a_domains.is_sorted() || !b_domains.is_sorted() {
        return a.vstack(b)?.sort(["domain"], SortMultipleOptions::default());
    }
    let mut out = a.slice(0, 0);
    let (mut from, mut i) = (0, 0);
    while i < b_domains.len() {
        let at = from + a_domains[from..].partition_point(|d| *d < b_domains[i]);
        // The rows of `b` that go into the same gap of `a`, as one run.
        let run = i + b_domains[i..].partition_point(|d| at == a_domains.len() || *d < a_domains[at]);
        // (A domain in both would end no run: it goes in alone.)
        let run = run.max(i + 1);
        if at > from {
            out.vstack_mut(&a.slice(from as i64, at - from))?;
        }
        out.vstack_mut(&b.slice(i as i64, run - i))?;
        (from, i) = (at, run);
    }
    if from < a.height() {
        out.vstack_mut(&a.slice(from as i64, a.height() - from))?;
    }
    out.rechunk_mut();
    Ok(out)
}

/// `size_band`: the first band whose revenue or monthly visits the row reaches (null
/// when neither is known).
fn size_band(rules: &SignalRules) -> Expr {
    let revenue = col("revenue").cast(DataType::Float64);
    let visits = col("sw_monthly_visits").cast(DataType::Float64);
    let known = revenue.clone().is_not_null().or(visits.clone().is_not_null());
    let cases = rules
        .size_bands
        .iter()
        .map(|b| {
            let reached = revenue
                .clone()
                .gt_eq(lit(b.min_revenue))
                .fill_null(lit(false))
                .or(visits.clone().gt_eq(lit(b.min_visits)).fill_null(lit(false)));
            (reached, lit(b.name.clone()))
        })
        .collect();
    when(known)
        .then(scoring::first_match(cases, lit(NULL).cast(DataType::String)))
        .otherwise(lit(NULL).cast(DataType::String))
        .alias("size_band")
}

/// `region`: the region whose countries hold the row's country.
fn region(rules: &SignalRules) -> Expr {
    let country = col("country").str().to_uppercase();
    let cases = rules
        .regions
        .iter()
        .map(|(region, countries)| {
            let list = Series::new("countries".into(), countries.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>());
            (country.clone().is_in(lit(list).implode(false), false).fill_null(lit(false)), lit(region.clone()))
        })
        .collect();
    scoring::first_match(cases, lit(NULL).cast(DataType::String)).alias("region")
}

/// A frame sorted by `domain`, in one chunk (for [`domain_range`]).
fn by_domain(mut df: DataFrame) -> PolarsResult<DataFrame> {
    // In place: one column at a time is gathered in its new order (a sorted copy of the
    // whole frame beside the original would add its size to the peak).
    df.sort_in_place(["domain"], SortMultipleOptions::default().with_maintain_order(true))?;
    df.rechunk_mut();
    Ok(df)
}

/// The rows of a frame sorted by `domain` (nulls first) whose domain is in `lo..=hi`,
/// found by binary search: a slice of the frame, not a copy. (Filtering instead would
/// compare every row once per slice of the book: quadratic in its size.)
fn domain_range(df: &DataFrame, lo: &str, hi: &str) -> PolarsResult<DataFrame> {
    let domains = df.column("domain")?.str()?;
    // The first row for which `before` is false (it holds for a prefix of the rows).
    let first_not = |before: &dyn Fn(&str) -> bool| {
        let (mut a, mut b) = (0, domains.len());
        while a < b {
            let mid = a + (b - a) / 2;
            if domains.get(mid).is_none_or(before) { a = mid + 1 } else { b = mid }
        }
        a
    };
    let start = first_not(&|d| d < lo);
    let end = first_not(&|d| d <= hi);
    Ok(df.slice(start as i64, end.saturating_sub(start)))
}

/// The rows a [`SliceWriter`] gathers into a row group before it ends one with a frame.
pub const MIN_ROW_GROUP_ROWS: usize = 8_192;

/// Writes frames one after another into one Parquet file, a row group each — small frames
/// (a by-reference night's own rows of a slice) several together, until a row group holds
/// [`MIN_ROW_GROUP_ROWS`] rows (each row group costs a column chunk per column, and the
/// footer a description of each) — as every table of the store is written
/// (`store::table::writer_properties`). A row group ends with a frame, or at the writer's
/// limit of 1,048,576 rows; readers find a range's rows by the row groups' statistics.
///
/// The frames go to arrow-rs's writer (through the Arrow C Data Interface, no copy), not
/// Polars' own: on the targets table (lists of structs, a struct of 24 structs) Polars'
/// writer spent 15–18 s on a million rows where arrow-rs takes 4.5 s (`BENCHMARKS.md`).
/// They are encoded and written on a thread of the writer's own while the caller scores
/// the next slice, each row group's columns on every core ([`encode::ParallelWriter`]).
pub struct SliceWriter {
    worker: Option<Worker>,
    /// Whether the file was finished: a writer dropped before removes its file.
    finished: bool,
    /// Whether a write found the thread stopped at an error (its file already removed).
    failed: bool,
    path: std::path::PathBuf,
    metadata: Vec<(String, String)>,
    min_rows: usize,
    /// The columns stored without a dictionary.
    unique: &'static [&'static str],
    pub rows: usize,
}

/// The thread a [`SliceWriter`] encodes and writes on, and the frames on their way to it.
struct Worker {
    frames: Option<std::sync::mpsc::SyncSender<DataFrame>>,
    done: Option<std::thread::JoinHandle<PolarsResult<()>>>,
}

impl Worker {
    /// Waits for the thread to write what it was sent and close the file; its error (or
    /// panic) names the file. A second call is an error too once the first was.
    fn join(&mut self, path: &std::path::Path) -> PolarsResult<()> {
        drop(self.frames.take());
        let stopped = |why: String| PolarsError::ComputeError(format!("writing {}: {why}", path.display()).into());
        match self.done.take().map(std::thread::JoinHandle::join) {
            Some(Ok(written)) => written.map_err(|e| stopped(e.to_string())),
            Some(Err(panic)) => Err(stopped(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the writer's thread stopped".into()),
            )),
            None => Ok(()),
        }
    }
}

impl Drop for SliceWriter {
    /// A writer dropped unfinished (its caller stopped at an error) leaves no file: its
    /// thread is waited for, then the file removed.
    fn drop(&mut self) {
        if let Some(worker) = self.worker.as_mut() {
            let _ = worker.join(&self.path);
            if !self.finished {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Frames a [`SliceWriter`] holds on their way to its thread, at most (beside the one
/// being written): the next slice is scored while the last one is written.
const FRAMES_IN_FLIGHT: usize = 1;

impl SliceWriter {
    pub fn new(path: &std::path::Path) -> Self {
        Self {
            worker: None,
            finished: false,
            failed: false,
            path: path.to_path_buf(),
            metadata: Vec::new(),
            min_rows: MIN_ROW_GROUP_ROWS,
            unique: &[],
            rows: 0,
        }
    }

    /// A table of one row per domain (the targets, their inputs): its domains, company names
    /// and hashes stored without a dictionary.
    pub fn one_row_per_domain(mut self) -> Self {
        self.unique = &ONE_ROW_PER_DOMAIN;
        self
    }

    /// Ends a row group with a frame once it holds `rows` rows (1: a row group per frame).
    pub fn min_row_group_rows(mut self, rows: usize) -> Self {
        self.min_rows = rows;
        self
    }

    /// A (key, value) pair for the file's metadata.
    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.to_string(), value.to_string()));
        self
    }

    /// Hands a frame to the writer's thread (the frame's buffers are shared, not copied);
    /// an error of a frame written before is returned here or by [`Self::finish`].
    pub fn write(&mut self, df: &DataFrame) -> PolarsResult<()> {
        if self.worker.is_none() {
            self.worker = Some(self.start()?);
        }
        let Some(worker) = self.worker.as_mut() else { return Ok(()) };
        let sent = worker.frames.as_ref().is_some_and(|frames| frames.send(df.clone()).is_ok());
        if !sent {
            // The thread stopped at an error: it is the answer (and `finish`'s after it).
            let failed = worker.join(&self.path).err();
            self.worker = None;
            self.failed = true;
            let _ = std::fs::remove_file(&self.path);
            return Err(failed.unwrap_or_else(|| {
                PolarsError::ComputeError(
                    format!("writing {}: the writer's thread stopped", self.path.display()).into(),
                )
            }));
        }
        self.rows += df.height();
        Ok(())
    }

    /// The thread that encodes the frames (each row group's columns on every core, see
    /// [`encode::ParallelWriter`]) and writes them, as they come.
    fn start(&self) -> PolarsResult<Worker> {
        let (frames, received) = std::sync::mpsc::sync_channel::<DataFrame>(FRAMES_IN_FLIGHT);
        let (path, metadata, min_rows, unique) = (self.path.clone(), self.metadata.clone(), self.min_rows, self.unique);
        let done = std::thread::Builder::new()
            .name("partnerforge-writer".into())
            .spawn(move || -> PolarsResult<()> {
                // (`Worker::join` names the file in what this returns.)
                let mut writer = None;
                for df in received {
                    let batch = record_batch(&df)?;
                    let writer = match &mut writer {
                        Some(writer) => writer,
                        none => {
                            let file = std::fs::File::create(&path)
                                .map_err(|e| PolarsError::ComputeError(format!("creating the file: {e}").into()))?;
                            let mut writer =
                                encode::ParallelWriter::new(arrow_writer(file, &batch, unique)?, batch.schema())
                                    .map_err(parquet_error)?;
                            for (key, value) in &metadata {
                                writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                                    key.clone(),
                                    value.clone(),
                                ));
                            }
                            none.insert(writer)
                        }
                    };
                    // An empty frame gives the file its schema, not an empty row group.
                    if df.height() > 0 {
                        writer.write(&batch).map_err(parquet_error)?;
                        // A slice's rows are found by their row group's statistics: a row group ends with a frame.
                        if writer.in_progress_rows() >= min_rows {
                            writer.flush().map_err(parquet_error)?;
                        }
                    }
                }
                match writer {
                    Some(writer) => writer.close().map_err(parquet_error),
                    None => Err(PolarsError::NoData("no slice was written".into())),
                }
            })
            .map_err(|e| {
                PolarsError::ComputeError(format!("starting the writer of {}: {e}", self.path.display()).into())
            })?;
        Ok(Worker { frames: Some(frames), done: Some(done) })
    }

    /// Closes the file once every frame is written (`assemble_in_slices` always emits at
    /// least one slice).
    pub fn finish(mut self) -> PolarsResult<()> {
        let written = match self.worker.as_mut() {
            Some(worker) => worker.join(&self.path),
            None if self.failed => Err(PolarsError::ComputeError(
                format!("writing {}: an earlier write failed", self.path.display()).into(),
            )),
            None => Err(PolarsError::NoData(format!("{}: no slice was written", self.path.display()).into())),
        };
        // Closed: kept when written, removed (by `drop`) when not.
        self.finished = written.is_ok();
        written
    }
}

/// Encodes a frame as one Parquet file.
pub fn to_parquet(df: &mut DataFrame) -> PolarsResult<Bytes> {
    let batch = record_batch(df)?;
    let mut buffer = Vec::new();
    let mut writer = arrow_writer(&mut buffer, &batch, &[])?;
    writer.write(&batch).map_err(parquet_error)?;
    writer.close().map_err(parquet_error)?;
    Ok(Bytes::from(buffer))
}

fn parquet_error(e: parquet::errors::ParquetError) -> PolarsError {
    PolarsError::ComputeError(format!("writing Parquet: {e}").into())
}

/// A frame as an arrow-rs record batch: each column's arrays exported through the Arrow
/// C Data Interface and imported on the other side (the buffers are shared, not copied).
fn record_batch(df: &DataFrame) -> PolarsResult<arrow::record_batch::RecordBatch> {
    let mut df = df.clone();
    df.rechunk_mut();
    let mut fields = Vec::with_capacity(df.width());
    let mut arrays = Vec::with_capacity(df.width());
    for column in df.columns() {
        let series = column.as_materialized_series();
        let array = series.to_arrow(0, CompatLevel::newest());
        let field = polars_arrow::datatypes::Field::new(series.name().clone(), array.dtype().clone(), true);
        let schema = polars_arrow::ffi::export_field_to_c(&field);
        let exported = polars_arrow::ffi::export_array_to_c(array);
        // SAFETY: both crates declare these two structs `#[repr(C)]` after the C Data
        // Interface's `ArrowSchema` and `ArrowArray`, so they have one layout; ownership
        // (the release callbacks) moves to the arrow-rs values, and the Polars values are
        // forgotten so that they are not released twice.
        let (field, data) = unsafe {
            let schema = std::mem::ManuallyDrop::new(schema);
            let exported = std::mem::ManuallyDrop::new(exported);
            let schema: arrow::ffi::FFI_ArrowSchema =
                std::ptr::read((&*schema as *const polars_arrow::ffi::ArrowSchema).cast());
            let exported: arrow::ffi::FFI_ArrowArray =
                std::ptr::read((&*exported as *const polars_arrow::ffi::ArrowArray).cast());
            let field = arrow::datatypes::Field::try_from(&schema);
            let data = arrow::ffi::from_ffi(exported, &schema);
            (field, data)
        };
        let failed =
            |e: arrow::error::ArrowError| PolarsError::ComputeError(format!("column {}: {e}", series.name()).into());
        let (field, mut data) = (field.map_err(failed)?, data.map_err(failed)?);
        // Imported buffers are taken as they are; arrow-rs needs them aligned to their type.
        data.align_buffers();
        let mut array = arrow::array::make_array(data);
        // A timestamp inside a list or struct is stored as the top-level ones are (UTC
        // milliseconds): every slice then has one schema, whichever zone Polars left on it.
        let stored = stored_type(field.data_type(), false);
        if &stored != field.data_type() {
            array = arrow::compute::cast(&array, &stored).map_err(failed)?;
        }
        fields.push(field.with_data_type(stored));
        arrays.push(array);
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(df.height()));
    arrow::record_batch::RecordBatch::try_new_with_options(schema, arrays, &options)
        .map_err(|e| PolarsError::ComputeError(format!("a record batch of the frame: {e}").into()))
}

/// The arrow-rs type a column is stored with: its timestamps, at any depth, UTC
/// milliseconds. `plain`: the type the stored schema declares, also without Polars'
/// in-memory layouts (`string_view` is `utf8`, a large list a list).
fn stored_type(dtype: &arrow::datatypes::DataType, plain: bool) -> arrow::datatypes::DataType {
    use arrow::datatypes::{DataType as A, TimeUnit as U};
    let field = |f: &arrow::datatypes::FieldRef| {
        std::sync::Arc::new(f.as_ref().clone().with_data_type(stored_type(f.data_type(), plain)))
    };
    match dtype {
        A::Timestamp(..) => A::Timestamp(U::Millisecond, Some("UTC".into())),
        A::Utf8View | A::LargeUtf8 if plain => A::Utf8,
        A::BinaryView | A::LargeBinary if plain => A::Binary,
        A::List(inner) => A::List(field(inner)),
        A::LargeList(inner) if plain => A::List(field(inner)),
        A::LargeList(inner) => A::LargeList(field(inner)),
        A::Struct(fields) => A::Struct(fields.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// How a frame becomes a stored table: the store's writer properties, with the Arrow
/// schema that readers take their types from spelled in plain Arrow types. Polars' arrays
/// are `string_view` and `list<string_view>` (its in-memory layout), which pandas cannot
/// convert; the schema stored says `utf8` and `list<utf8>` (the Parquet columns are the
/// same either way), so pandas, pyarrow, DuckDB, Spark and Trino read every table as it is.
fn arrow_writer<W: std::io::Write + Send>(
    writer: W,
    batch: &arrow::record_batch::RecordBatch,
    unique: &[&str],
) -> PolarsResult<parquet::arrow::ArrowWriter<W>> {
    let fields: Vec<arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| arrow::datatypes::Field::new(f.name(), stored_type(f.data_type(), true), true))
        .collect();
    let hint = parquet::arrow::encode_arrow_schema(&arrow::datatypes::Schema::new(fields));
    let properties = crate::store::table::writer_properties()
        .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?
        .into_builder()
        // Lists stored as the Parquet specification names them (`list.element`), as before.
        .set_coerce_types(true)
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new("ARROW:schema".to_string(), hint)]));
    // A value of every row (a target's domain, its company's name) gains nothing from a
    // dictionary but an index per row, and building one is a hash and a compare per value.
    let properties = unique
        .iter()
        .fold(properties, |p, c| p.set_column_dictionary_enabled(parquet::schema::types::ColumnPath::from(*c), false))
        .build();
    let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
        .with_properties(properties)
        .with_skip_arrow_metadata(true);
    parquet::arrow::ArrowWriter::try_new_with_options(writer, batch.schema(), options).map_err(parquet_error)
}

/// The columns of the targets table and its inputs that hold a different value in almost
/// every row ([`SliceWriter::one_row_per_domain`]). Other tables repeat a domain on each of
/// its rows (the change state about 25 times): a dictionary stores it once a run.
const ONE_ROW_PER_DOMAIN: [&str; 4] = ["domain", "company_name", "input_hash", "book_hash"];

/// A timestamp (or milliseconds) column as UTC milliseconds. Built from the numbers:
/// a cast that names a zone keeps it only with Polars' `timezones` feature.
pub fn utc_ms(series: &Series) -> PolarsResult<Series> {
    let ms = match series.dtype() {
        DataType::Datetime(..) => {
            series.cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?.cast(&DataType::Int64)?
        }
        _ => series.cast(&DataType::Int64)?,
    };
    Ok(ms.into_datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_writer_writes_its_frames_in_order_a_row_group_each_and_reports_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slices.parquet");
        let mut writer = SliceWriter::new(&path).min_row_group_rows(1).with_metadata("k", "v");
        let frames: Vec<DataFrame> = (0..5)
            .map(|i| df!("domain" => [format!("d{i}-a.com"), format!("d{i}-b.com")], "n" => [i, i + 10]).unwrap())
            .collect();
        // An empty frame first: the file's columns, no row group.
        writer.write(&frames[0].slice(0, 0)).unwrap();
        for frame in &frames {
            writer.write(frame).unwrap();
        }
        assert_eq!(writer.rows, 10);
        writer.finish().unwrap();
        let bytes = Bytes::from(std::fs::read(&path).unwrap());
        let back = read_parquet(bytes.clone(), &["domain", "n"]).unwrap().collect().unwrap();
        let mut expected = frames[0].clone();
        for frame in &frames[1..] {
            expected.vstack_mut(frame).unwrap();
        }
        assert!(back.equals(&expected));
        let reader = parquet::file::reader::SerializedFileReader::new(bytes).unwrap();
        use parquet::file::reader::FileReader as _;
        assert_eq!(reader.metadata().num_row_groups(), 5);
        let kv = reader.metadata().file_metadata().key_value_metadata().unwrap();
        assert!(kv.iter().any(|e| e.key == "k" && e.value.as_deref() == Some("v")));
        // A domain repeated on many rows (the change state) keeps its dictionary; a table of one
        // row per domain (the targets) stores it plain.
        assert!(reader.metadata().row_group(0).column(0).dictionary_page_offset().is_some());
        let plain = dir.path().join("plain.parquet");
        let mut writer = SliceWriter::new(&plain).one_row_per_domain();
        writer.write(&frames[0]).unwrap();
        writer.finish().unwrap();
        let reader =
            parquet::file::reader::SerializedFileReader::new(Bytes::from(std::fs::read(&plain).unwrap())).unwrap();
        assert!(reader.metadata().row_group(0).column(0).dictionary_page_offset().is_none());
        assert!(reader.metadata().row_group(0).column(1).dictionary_page_offset().is_some());

        // A file that cannot be created: the error names it, at the latest when finishing.
        let missing = dir.path().join("no-such-folder").join("slices.parquet");
        let mut writer = SliceWriter::new(&missing);
        let mut failed = None;
        for frame in frames.iter().cycle().take(50) {
            if let Err(e) = writer.write(frame) {
                failed = Some(e);
                break;
            }
        }
        let error = match failed {
            Some(e) => {
                // And finishing after it is an error too, not a file.
                assert!(writer.finish().is_err());
                e.to_string()
            }
            None => writer.finish().unwrap_err().to_string(),
        };
        assert!(error.contains("no-such-folder"), "{error}");
        // Nothing written: no file, an error.
        assert!(SliceWriter::new(&dir.path().join("none.parquet")).finish().is_err());
        // Dropped unfinished (its caller stopped at an error): its frames written, no file left.
        let dropped = dir.path().join("dropped.parquet");
        let mut writer = SliceWriter::new(&dropped);
        for frame in &frames {
            writer.write(frame).unwrap();
        }
        drop(writer);
        assert!(!dropped.exists());
    }

    #[test]
    fn rows_in_domain_order_are_flagged_sorted_and_others_sorted() {
        let rows = |domains: [&str; 3]| df!("domain" => domains, "n" => [1, 2, 3]).unwrap();
        let in_order = sorted_by_domain(rows(["a.com", "b.com", "b.com"])).unwrap();
        assert!(in_order.equals(&rows(["a.com", "b.com", "b.com"])));
        assert_eq!(in_order.column("domain").unwrap().is_sorted_flag(), polars::series::IsSorted::Ascending);
        let sorted = sorted_by_domain(rows(["c.com", "a.com", "b.com"])).unwrap();
        let n: Vec<i32> = sorted.column("n").unwrap().i32().unwrap().into_no_null_iter().collect();
        assert_eq!(n, [2, 3, 1]);
    }

    #[test]
    fn a_range_of_a_sorted_frame_is_found_by_binary_search() {
        let df = by_domain(
            df!("domain" => [Some("d.com"), None, Some("a.com"), Some("c.com"), Some("b.com"), Some("c.com")],
                "n" => [4, 0, 1, 3, 2, 5])
            .unwrap(),
        )
        .unwrap();
        let range = |lo: &str, hi: &str| -> Vec<i32> {
            domain_range(&df, lo, hi).unwrap().column("n").unwrap().i32().unwrap().into_no_null_iter().collect()
        };
        assert_eq!(range("b.com", "c.com"), [2, 3, 5], "both ends included, duplicates in their order");
        assert_eq!(range("a", "b"), [1], "bounds need not be present");
        assert_eq!(range("a.com", "z"), [1, 2, 3, 5, 4]);
        assert!(range("e", "f").is_empty() && range("0", "1").is_empty());
    }

    #[test]
    fn computed_rows_are_merged_into_the_carried_ones_in_domain_order() {
        let carried = df!("domain" => ["b.com", "c.com", "e.com", "f.com"], "n" => [2, 3, 5, 6]).unwrap();
        let computed = df!("domain" => ["a.com", "d.com", "g.com"], "n" => [1, 4, 7]).unwrap();
        let merged = merge_by_domain(&carried, &computed).unwrap();
        let n: Vec<i32> = merged.column("n").unwrap().i32().unwrap().into_no_null_iter().collect();
        assert_eq!(n, [1, 2, 3, 4, 5, 6, 7], "before, between and after the carried rows");
        let sorted = carried.vstack(&computed).unwrap().sort(["domain"], Default::default()).unwrap();
        assert!(merged.equals(&sorted), "the same frame a sort gives");
        assert_eq!(merged.first_col_n_chunks(), 1, "one chunk, whatever the runs");
        // Several computed rows in one gap, and at both ends.
        let runs = df!("domain" => ["a.com", "a.net", "d.com", "d.net", "z.com"], "n" => [1, 1, 4, 4, 9]).unwrap();
        let n: Vec<i32> =
            merge_by_domain(&carried, &runs).unwrap().column("n").unwrap().i32().unwrap().into_no_null_iter().collect();
        assert_eq!(n, [1, 1, 2, 3, 4, 4, 5, 6, 9]);
        // Not sorted after all: still the sorted frame.
        let shuffled = carried.slice(2, 2).vstack(&carried.slice(0, 2)).unwrap();
        assert!(merge_by_domain(&shuffled, &computed).unwrap().equals(&sorted));
        assert!(merge_by_domain(&carried, &computed.slice(0, 0)).unwrap().equals(&carried));
        assert!(merge_by_domain(&carried.slice(0, 0), &computed).unwrap().equals(&computed));
    }

    #[test]
    fn a_slices_keys_hold_a_row_each_with_or_without_a_trigger_window() {
        let joined = df!("domain" => ["a.com", "b.com", "c.com"], "book_hash" => [1i64, 2, 3],
            "trigger_window_from" => [Some(20_000i32), None, Some(20_010)])
        .unwrap()
        .lazy()
        .with_column(col("trigger_window_from").cast(DataType::Date))
        .collect()
        .unwrap();
        // Without signal rules no input moves with the date (a literal once made one row).
        let keys = row_keys(&joined, 7, None).unwrap();
        assert_eq!(keys.get_column_names(), ["domain", "input_hash", "book_hash", "valid_until"]);
        assert_eq!((keys.height(), keys.column("valid_until").unwrap().null_count()), (3, 3));
        assert_eq!(row_keys(&joined.slice(0, 0), 7, None).unwrap().width(), 4);
        // A window of 90 days: the day after the oldest event's last day in it.
        let keys = row_keys(&joined, 7, Some(90)).unwrap();
        let until = keys.column("valid_until").unwrap().cast(&DataType::Int32).unwrap();
        assert_eq!(until.i32().unwrap().iter().collect::<Vec<_>>(), [Some(20_091), None, Some(20_101)]);
        assert_eq!(
            keys.column("book_hash").unwrap().i64().unwrap().iter().collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)]
        );
    }

    #[test]
    fn a_table_by_reference_is_its_own_rows_and_its_bases_rows_of_the_other_listed_domains() {
        let file = |mut df: DataFrame| to_parquet(&mut df).unwrap();
        // The base's night: four targets.
        let base = file(
            df!("domain" => ["a.com", "b.com", "c.com", "d.com"], "n" => [1, 2, 3, 4],
                "snapshot_id" => ["2026-11-20"; 4])
            .unwrap(),
        );
        // Tonight: b.com computed again, e.com new, c.com gone from the book.
        let own =
            file(df!("domain" => ["b.com", "e.com"], "n" => [20, 50], "snapshot_id" => ["2026-11-22"; 2]).unwrap());
        let inputs =
            file(df!("domain" => ["a.com", "b.com", "d.com", "e.com"], "input_hash" => [1i64, 2, 3, 4]).unwrap());
        let base = Base { targets: &base, inputs: &inputs };
        let all = changes::DomainRange::all();
        let table = read_targets(&own, Some(base), &["domain", "n", "snapshot_id"], "2026-11-22", &all).unwrap();
        let expected = df!("domain" => ["a.com", "b.com", "d.com", "e.com"], "n" => [1, 20, 4, 50],
            "snapshot_id" => ["2026-11-22"; 4])
        .unwrap();
        assert!(table.equals(&expected), "{table}");
        // A range holds its rows alone; without the snapshot's id among the columns, none is set.
        let range = changes::DomainRange { lo: Some("b.com".into()), hi: Some("e.com".into()) };
        let part = read_targets(&own, Some(base), &["domain", "n"], "2026-11-22", &range).unwrap();
        assert!(part.equals(&expected.select(["domain", "n"]).unwrap().slice(1, 2)), "{part}");
        // Written whole, a range at a time: the same table.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_whole(&own, base, "2026-11-22", 2, &dir.path().join("whole.parquet")).unwrap(), 4);
        let whole = Bytes::from(std::fs::read(dir.path().join("whole.parquet")).unwrap());
        let read = read_targets(&whole, None, &["domain", "n", "snapshot_id"], "2026-11-22", &all).unwrap();
        assert!(read.equals(&expected), "{read}");
    }
}
