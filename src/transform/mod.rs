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
pub mod families;
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
fn read_selected(bytes: &Bytes, select: Vec<(&str, &str)>) -> PolarsResult<LazyFrame> {
    let names: Vec<&str> = select.iter().map(|(name, _)| *name).collect();
    let exprs: Vec<Expr> =
        select.iter().map(|(name, alias)| if name == alias { col(*name) } else { col(*name).alias(*alias) }).collect();
    Ok(read_parquet(bytes.clone(), &names)?.select(exprs))
}

/// The module tables `assemble` joins, as Parquet bytes.
pub struct ModuleFiles {
    pub company: Bytes,
    pub tech_spend: Bytes,
    pub traffic: Bytes,
    pub traffic_sources: Bytes,
    pub financials: Bytes,
    pub hiring: Bytes,
    pub tech_stack: Bytes,
    pub trigger_events: Bytes,
    pub financial_history: Bytes,
    pub fetches: Bytes,
}

impl ModuleFiles {
    /// The tables by name (`company`, `tech_spend`, …); a table `bytes` lacks is empty.
    pub fn from_tables(bytes: impl Fn(&str) -> Option<Bytes>) -> Self {
        let take = |name: &str| bytes(name).unwrap_or_default();
        Self {
            company: take("company"),
            tech_spend: take("tech_spend"),
            traffic: take("traffic"),
            traffic_sources: take("traffic_sources"),
            financials: take("financials"),
            hiring: take("hiring"),
            tech_stack: take("tech_stack"),
            trigger_events: take("trigger_events"),
            financial_history: take("financial_history"),
            fetches: take("fetches"),
        }
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
    let history =
        scan_parquet(&files.financial_history, &["domain", "fiscal_year_end", "revenue", "source", "fetched_at"])?
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
    let dead = scan_parquet(
        &files.tech_stack,
        &["domain", "technology", "last_detected", "live", "is_search_vendor", "source", "fetched_at"],
    )?
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
    let recent = scan_parquet(
        &files.trigger_events,
        &["domain", "event_type", "headline", "published", "source", "fetched_at"],
    )?
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
    let news_read = scan_parquet(&files.fetches, &["module", "domain", "outcome", "fetched_at"])?
        .filter(col("module").eq(lit("m12")))
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

fn book_frame(rows: &[&BookRow]) -> PolarsResult<LazyFrame> {
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
    )?;
    Ok(df.lazy())
}

/// A scored slice of the targets table: its rows, each row's inputs (`target_inputs`:
/// domain, `input_hash`, `dated`), and how many rows were carried forward unchanged.
pub struct ScoredSlice {
    pub targets: DataFrame,
    pub inputs: DataFrame,
    pub reused: usize,
}

/// What a commit may carry forward from an earlier snapshot instead of computing again:
/// its `targets` and `target_inputs` files.
pub struct Reuse {
    pub targets: Bytes,
    pub inputs: Bytes,
    /// Whether it is of this snapshot's date. A row whose values depend on the date
    /// (`dated`: a conflict weighed by the age of its claims) is reusable only then.
    pub same_day: bool,
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

/// The domains of a slice whose stored row can be carried forward: same input hash, and
/// not dated unless the stored snapshot is of the same date.
fn reusable(reuse: &Reuse, hashes: &DataFrame, lo: &str, hi: &str) -> PolarsResult<DataFrame> {
    let stored = read_between(&reuse.inputs, &["domain", "input_hash", "dated"], lo, hi)?;
    let keys = [col("domain"), col("input_hash")];
    hashes
        .clone()
        .lazy()
        .join(stored, keys.clone(), keys, JoinArgs::new(JoinType::Inner))
        .filter(col("dated").fill_null(lit(true)).not().or(lit(reuse.same_day)))
        .select([col("domain")])
        .collect()
}

/// Builds and scores the targets table in slices of at most `slice_rows` book
/// rows, in domain order, each handed to `emit` as it is scored (an empty book
/// is one empty slice, so the table keeps its columns). Domains found running
/// Algolia are not targets and are dropped here (customers were dropped from the
/// book before). The module tables are decoded once (only the columns joined),
/// and the joins work on one slice of domains at a time.
///
/// Work grows with change: each row's inputs (the book's fields and every module
/// value joined for it) are hashed, and with `reuse` a row whose hash equals the one
/// stored for it is carried forward from the stored targets table (its `snapshot_id`
/// set to this one); only the others go through conflicts, scoring, signals and case
/// studies. Without `reuse` every row is computed: the same rows, as `rebuild` and a
/// test check.
#[allow(clippy::too_many_arguments)]
pub fn assemble_in_slices(
    book: &[BookRow],
    files: &ModuleFiles,
    model: &ScoringModel,
    signals: Option<&SignalSetup>,
    snapshot_id: &str,
    slice_rows: usize,
    reuse: Option<&Reuse>,
    mut emit: impl FnMut(ScoredSlice) -> PolarsResult<()>,
) -> PolarsResult<()> {
    let company = read_selected(
        &files.company,
        vec![
            ("domain", "domain"),
            ("company_name", "bw_company_name"),
            ("vertical", "bw_vertical"),
            ("country", "bw_country"),
            ("city", "city"),
            ("state", "state"),
            ("source", "company_source"),
            ("fetched_at", "company_fetched_at"),
        ],
    )?;
    let spend = read_selected(
        &files.tech_spend,
        vec![
            ("domain", "domain"),
            ("tech_spend", "tech_spend"),
            ("current_search", "current_search"),
            ("partner_tech_detected", "partner_tech_detected"),
            ("runs_algolia", "runs_algolia"),
            ("source", "tech_source"),
            ("fetched_at", "tech_fetched_at"),
        ],
    )?;
    let traffic = read_selected(
        &files.traffic,
        vec![
            ("domain", "domain"),
            ("monthly_visits", "sw_monthly_visits"),
            ("visits_growth_mom", "sw_visits_growth_mom"),
            ("bounce_rate", "sw_bounce_rate"),
            ("pages_per_visit", "sw_pages_per_visit"),
            ("avg_visit_duration", "sw_avg_duration"),
            ("source", "traffic_source"),
            ("fetched_at", "traffic_fetched_at"),
        ],
    )?;
    let sources = read_selected(
        &files.traffic_sources,
        vec![
            ("domain", "domain"),
            ("search_traffic_pct", "sw_search_traffic_pct"),
            ("source", "sources_source"),
            ("fetched_at", "sources_fetched_at"),
        ],
    )?;
    let financials = read_selected(
        &files.financials,
        vec![
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
    )?;
    let hiring = read_selected(
        &files.hiring,
        vec![
            ("domain", "domain"),
            ("open_roles", "open_roles"),
            ("search_roles", "search_roles"),
            ("source", "hiring_source"),
            ("fetched_at", "hiring_fetched_at"),
        ],
    )?;

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
    let inputs = match signals {
        Some((rules, _)) => Some(
            signal_inputs(files, rules, snapshot_id)?.map(by_domain).into_iter().collect::<PolarsResult<Vec<_>>>()?,
        ),
        None => None,
    };
    let columns = target_columns(signals.map(|(rules, _)| rules));
    // Freshness is weighed as of the snapshot's day (its end, so today's fetches are fresh).
    let now_ms = (i64::from(epoch_day(snapshot_id)?) + 1) * 86_400_000;
    let signal_exprs = match signals {
        Some((rules, _)) => Some((size_band(rules), region(rules), signals::signal_columns(rules)?)),
        None => None,
    };

    // Decoded once and sorted by domain; each slice takes its range of rows by binary search.
    let (company, spend, traffic, sources, financials, hiring) = (
        by_domain(company.collect()?)?,
        by_domain(spend.collect()?)?,
        by_domain(traffic.collect()?)?,
        by_domain(sources.collect()?)?,
        by_domain(financials.collect()?)?,
        by_domain(hiring.collect()?)?,
    );
    let mut order: Vec<&BookRow> = book.iter().collect();
    order.sort_by(|a, b| a.target.domain.cmp(&b.target.domain));
    // An empty book still makes one (empty) slice: the table keeps its columns.
    let slices: Vec<&[&BookRow]> = if order.is_empty() { vec![&[]] } else { order.chunks(slice_rows.max(1)).collect() };
    let seed = inputs_fingerprint(model, signals);
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
        frame
            .lazy()
            .select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
            .sort(["domain"], SortMultipleOptions::default())
            .collect()
    };
    for slice in slices {
        let range = slice.first().zip(slice.last()).map(|(a, b)| (a.target.domain.clone(), b.target.domain.clone()));
        let within = |df: &DataFrame| match &range {
            Some((lo, hi)) => domain_range(df, lo, hi).map(DataFrame::lazy),
            None => Ok(df.clone().lazy()),
        };
        let mut frame = book_frame(slice)?
            .left_join(within(&company)?, col("domain"), col("domain"))
            .left_join(within(&spend)?, col("domain"), col("domain"))
            .left_join(within(&traffic)?, col("domain"), col("domain"))
            .left_join(within(&sources)?, col("domain"), col("domain"))
            .left_join(within(&financials)?, col("domain"), col("domain"))
            .left_join(within(&hiring)?, col("domain"), col("domain"))
            .filter(col("runs_algolia").fill_null(lit(false)).not())
            .with_columns([
                // The book is curated by sales: its values win; the providers fill gaps.
                coalesce(&[col("seed_company_name"), col("bw_company_name")]).alias("company_name"),
                coalesce(&[col("seed_partner_tech"), col("partner_tech_detected")]).alias("partner_tech"),
                coalesce(&[col("seed_vertical"), col("bw_vertical")]).alias("vertical"),
                coalesce(&[col("seed_country"), col("bw_country")]).alias("country"),
                col("ticker").is_not_null().alias("is_public"),
            ])
            .with_columns([enrichment.clone().alias("enrichment_level"), last_enriched.clone().alias("last_enriched")]);
        if let Some(inputs) = &inputs {
            for input in inputs {
                frame = frame.left_join(within(input)?, col("domain"), col("domain"));
            }
        }
        // The row's inputs, hashed; with a stored snapshot, the unchanged rows are carried.
        let joined = frame.collect()?;
        let hashes = df!(
            "domain" => joined.column("domain")?.as_materialized_series().clone(),
            "input_hash" => input_hashes(&joined, seed)?,
        )?;
        let same = match (reuse, &range) {
            (Some(reuse), Some((lo, hi))) => Some(reusable(reuse, &hashes, lo, hi)?).filter(|d| d.height() > 0),
            _ => None,
        };
        let mut reused = 0;
        let targets = match (&same, reuse, &range) {
            (Some(same), Some(reuse), Some((lo, hi))) => {
                let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                let carried = read_between(&reuse.targets, &names, lo, hi)?
                    .join(same.clone().lazy(), [col("domain")], [col("domain")], JoinArgs::new(JoinType::Semi))
                    .with_column(lit(snapshot_id.to_string()).alias("snapshot_id"))
                    .collect()?;
                let fresh = joined
                    .clone()
                    .lazy()
                    .join(same.clone().lazy(), [col("domain")], [col("domain")], JoinArgs::new(JoinType::Anti))
                    .collect()?;
                // A slice whose rows are all carried computes nothing.
                let fresh = if fresh.height() > 0 { storage_form(&score(fresh)?)? } else { fresh };
                if carried.height() != same.height() || (fresh.height() > 0 && fresh.schema() != carried.schema()) {
                    // The stored rows are not in this code's shape after all: compute them too.
                    tracing::warn!(
                        "targets {lo} … {hi}: the stored rows cannot be carried forward ({} of {} found, or another schema); computed again",
                        carried.height(),
                        same.height()
                    );
                    score(joined)?
                } else {
                    reused = carried.height();
                    let mut both = if fresh.height() > 0 { fresh.vstack(&carried)? } else { carried };
                    both.sort_in_place(["domain"], SortMultipleOptions::default())?;
                    both
                }
            }
            _ => score(joined)?,
        };
        let dated =
            if targets.schema().get("conflicts").is_some() { col("conflicts").is_not_null() } else { lit(false) };
        let inputs = hashes
            .lazy()
            .join(
                targets.clone().lazy().select([col("domain"), dated.alias("dated")]),
                [col("domain")],
                [col("domain")],
                JoinArgs::new(JoinType::Left),
            )
            .sort(["domain"], SortMultipleOptions::default())
            .collect()?;
        emit(ScoredSlice { targets, inputs, reused })?;
    }
    Ok(())
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

/// Writes frames one after another into one Parquet file (zstd), a row group each.
pub struct SliceWriter {
    writer: Option<polars::io::parquet::write::BatchedWriter<std::fs::File>>,
    path: std::path::PathBuf,
    pub rows: usize,
}

impl SliceWriter {
    pub fn new(path: &std::path::Path) -> Self {
        Self { writer: None, path: path.to_path_buf(), rows: 0 }
    }

    pub fn write(&mut self, df: &DataFrame) -> PolarsResult<()> {
        if self.writer.is_none() {
            let file = std::fs::File::create(&self.path)?;
            let df = storage_form(df)?;
            self.writer = Some(parquet_writer(file, df.schema())?.batched(df.schema())?);
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.write_batch(&storage_form(df)?)?;
        }
        self.rows += df.height();
        Ok(())
    }

    /// Closes the file (`assemble_in_slices` always emits at least one slice).
    pub fn finish(self) -> PolarsResult<()> {
        match self.writer {
            Some(writer) => writer.finish().map(|_| ()),
            None => Err(PolarsError::NoData("no slice was written".into())),
        }
    }
}

/// Encodes a frame as Parquet (zstd).
pub fn to_parquet(df: &mut DataFrame) -> PolarsResult<Bytes> {
    let mut buffer = Vec::new();
    let mut df = storage_form(df)?;
    parquet_writer(&mut buffer, df.schema())?.finish(&mut df)?;
    Ok(Bytes::from(buffer))
}

/// How Polars writes a stored table: zstd, with the Arrow schema that readers take
/// their types from spelled in plain Arrow types. Polars would embed its own, which
/// declares `string_view` and `list<string_view>` (its in-memory string layout) and
/// which pandas cannot convert; this one says `utf8` and `list<utf8>`, as the tables
/// arrow-rs writes do, so pandas, pyarrow, DuckDB, Spark and Trino read every table as it is.
fn parquet_writer<W: std::io::Write>(writer: W, schema: &Schema) -> PolarsResult<ParquetWriter<W>> {
    let fields = schema
        .iter()
        .map(|(name, dtype)| Ok(arrow::datatypes::Field::new(name.as_str(), plain_arrow_type(dtype)?, true)))
        .collect::<PolarsResult<Vec<_>>>()?;
    let hint = parquet::arrow::encode_arrow_schema(&arrow::datatypes::Schema::new(fields));
    let metadata = vec![("ARROW:schema".to_string(), hint)];
    Ok(ParquetWriter::new(writer)
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(polars::io::parquet::write::KeyValueMetadata::from_static(metadata))))
}

/// The plain Arrow type a Polars column is stored as.
fn plain_arrow_type(dtype: &DataType) -> PolarsResult<arrow::datatypes::DataType> {
    use arrow::datatypes::{DataType as A, Field, TimeUnit as U};
    Ok(match dtype {
        DataType::Boolean => A::Boolean,
        DataType::Int8 => A::Int8,
        DataType::Int16 => A::Int16,
        DataType::Int32 => A::Int32,
        DataType::Int64 => A::Int64,
        DataType::UInt8 => A::UInt8,
        DataType::UInt16 => A::UInt16,
        DataType::UInt32 => A::UInt32,
        DataType::UInt64 => A::UInt64,
        DataType::Float32 => A::Float32,
        DataType::Float64 => A::Float64,
        DataType::String => A::Utf8,
        DataType::Binary => A::Binary,
        DataType::Date => A::Date32,
        DataType::Datetime(unit, zone) => A::Timestamp(
            match unit {
                TimeUnit::Milliseconds => U::Millisecond,
                TimeUnit::Microseconds => U::Microsecond,
                TimeUnit::Nanoseconds => U::Nanosecond,
            },
            zone.as_ref().map(|z| z.as_str().into()),
        ),
        DataType::List(inner) => A::List(std::sync::Arc::new(Field::new("item", plain_arrow_type(inner)?, true))),
        DataType::Struct(fields) => A::Struct(
            fields
                .iter()
                .map(|f| Ok(Field::new(f.name().as_str(), plain_arrow_type(f.dtype())?, true)))
                .collect::<PolarsResult<Vec<_>>>()?
                .into(),
        ),
        other => {
            return Err(PolarsError::ComputeError(format!("no plain Arrow type for a stored {other} column").into()));
        }
    })
}

/// Every timestamp as a UTC instant in milliseconds (a zone-less one is UTC already:
/// the store keeps no local times).
fn storage_form(df: &DataFrame) -> PolarsResult<DataFrame> {
    let mut out = df.clone();
    for (name, dtype) in df.schema().iter() {
        if matches!(dtype, DataType::Datetime(unit, zone) if *unit != TimeUnit::Milliseconds || zone.is_none()) {
            let column = df.column(name)?.as_materialized_series().clone();
            out.replace(name, utc_ms(&column)?.into_column())?;
        }
    }
    Ok(out)
}

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
}
