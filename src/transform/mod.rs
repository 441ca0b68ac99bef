//! Polars transforms: the wide `targets` table, one row per target domain,
//! assembled from the book and the normalized module tables, then scored.
//!
//! Inputs are the Parquet files the fetch layer wrote (files are the contract
//! between the layers); the output is the `targets` Parquet file. Every step is
//! lazy and collected once.

pub mod alerts;
pub mod changes;
pub mod scoring;

use std::io::Cursor;

use bytes::Bytes;
use polars::prelude::*;

use crate::config::ScoringModel;
use crate::targets::Target;

/// The columns of `targets`, in order (they follow the system this replaces).
pub const TARGET_COLUMNS: [&str; 33] = [
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
];

/// Reads the named columns of one Parquet file into a lazy frame (only those are
/// decoded: a wide table such as `company`, with its e-mails and phones, costs
/// what the columns asked for cost).
pub fn read_parquet(bytes: Bytes, columns: &[&str]) -> PolarsResult<LazyFrame> {
    let columns = Some(columns.iter().map(|c| c.to_string()).collect());
    Ok(ParquetReader::new(Cursor::new(bytes)).with_columns(columns).finish()?.lazy())
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
}

/// One book target, with what the run knows about it beyond the providers.
pub struct BookRow<'a> {
    pub target: &'a Target,
    pub ticker: Option<&'a str>,
    /// Modules whose calls failed for this domain this run, e.g. "m03,m04".
    pub modules_failed: Option<String>,
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
    )?;
    Ok(df.lazy())
}

/// Builds and scores the targets table in slices of at most `slice_rows` book
/// rows, in domain order, each handed to `emit` as it is scored (an empty book
/// is one empty slice, so the table keeps its columns). Domains found running
/// Algolia are not targets and are dropped here (customers were dropped from the
/// book before). The module tables are decoded once (only the columns joined),
/// and the joins work on one slice of domains at a time.
pub fn assemble_in_slices(
    book: &[BookRow],
    files: &ModuleFiles,
    model: &ScoringModel,
    snapshot_id: &str,
    slice_rows: usize,
    mut emit: impl FnMut(DataFrame) -> PolarsResult<()>,
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
            ("fetched_at", "company_at"),
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
            ("fetched_at", "tech_at"),
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
            ("fetched_at", "traffic_at"),
        ],
    )?;
    let sources = read_selected(
        &files.traffic_sources,
        vec![("domain", "domain"), ("search_traffic_pct", "sw_search_traffic_pct"), ("fetched_at", "sources_at")],
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
            ("fetched_at", "financials_at"),
        ],
    )?;
    let hiring = read_selected(
        &files.hiring,
        vec![
            ("domain", "domain"),
            ("open_roles", "open_roles"),
            ("search_roles", "search_roles"),
            ("fetched_at", "hiring_at"),
        ],
    )?;

    let present = |c: &str| col(c).is_not_null().cast(DataType::Int32);
    let found = present("company_at")
        + present("tech_at")
        + present("traffic_at")
        + present("sources_at")
        + present("financials_at");
    let expected = lit(4) + col("is_public").cast(DataType::Int32);
    let enrichment = when(found.clone().gt_eq(expected))
        .then(lit("full"))
        .when(found.gt(lit(0)))
        .then(lit("partial"))
        .otherwise(lit("none"));
    let last_enriched = polars::lazy::dsl::max_horizontal([
        col("company_at"),
        col("tech_at"),
        col("traffic_at"),
        col("sources_at"),
        col("financials_at"),
        col("hiring_at"),
    ])?;

    // Decoded once; each slice filters them to its range of domains.
    let (company, spend, traffic, sources, financials, hiring) = (
        company.collect()?,
        spend.collect()?,
        traffic.collect()?,
        sources.collect()?,
        financials.collect()?,
        hiring.collect()?,
    );
    let mut order: Vec<&BookRow> = book.iter().collect();
    order.sort_by(|a, b| a.target.domain.cmp(&b.target.domain));
    // An empty book still makes one (empty) slice: the table keeps its columns.
    let slices: Vec<&[&BookRow]> = if order.is_empty() { vec![&[]] } else { order.chunks(slice_rows.max(1)).collect() };
    for slice in slices {
        let range = slice.first().zip(slice.last()).map(|(a, b)| (a.target.domain.clone(), b.target.domain.clone()));
        let within = |df: &DataFrame| match &range {
            Some((lo, hi)) => {
                df.clone().lazy().filter(col("domain").gt_eq(lit(lo.clone())).and(col("domain").lt_eq(lit(hi.clone()))))
            }
            None => df.clone().lazy(),
        };
        let frame = book_frame(slice)?
            .left_join(within(&company), col("domain"), col("domain"))
            .left_join(within(&spend), col("domain"), col("domain"))
            .left_join(within(&traffic), col("domain"), col("domain"))
            .left_join(within(&sources), col("domain"), col("domain"))
            .left_join(within(&financials), col("domain"), col("domain"))
            .left_join(within(&hiring), col("domain"), col("domain"))
            .filter(col("runs_algolia").fill_null(lit(false)).not())
            .with_columns([
                // The book is curated by sales: its values win; the providers fill gaps.
                coalesce(&[col("seed_company_name"), col("bw_company_name")]).alias("company_name"),
                coalesce(&[col("seed_partner_tech"), col("partner_tech_detected")]).alias("partner_tech"),
                coalesce(&[col("seed_vertical"), col("bw_vertical")]).alias("vertical"),
                coalesce(&[col("seed_country"), col("bw_country")]).alias("country"),
                col("ticker").is_not_null().alias("is_public"),
            ])
            .with_columns([enrichment.clone().alias("enrichment_level"), last_enriched.clone().alias("last_enriched")])
            .with_columns(scoring::score_columns(model)?)
            .with_column(lit(snapshot_id.to_string()).alias("snapshot_id"))
            .select(TARGET_COLUMNS.map(col))
            .sort(["domain"], SortMultipleOptions::default());
        emit(frame.collect()?)?;
    }
    Ok(())
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
