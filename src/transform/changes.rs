//! Change intelligence: what changed between two committed snapshots.
//!
//! Two steps, both Polars:
//!
//! 1. **Observations → tracked state.** Each snapshot's fetched module rows are
//!    read as *observations*: one row per (domain, field, item) the providers
//!    showed this time (a live technology, the CFO's name, the monthly visits).
//!    Only (module, domain) pairs fetched for this snapshot count: a value carried
//!    forward is a copy, not new evidence, and can neither create nor confirm a
//!    change. Observations update the previous snapshot's `change_state`: an
//!    observed item is current; a tracked item missing from a fetch of its module
//!    counts one more absence and is dropped — its removal confirmed — once absent
//!    in the field's `confirm` consecutive fetches (flapping technology detection
//!    never reaches that). Items of modules not fetched stay as they were.
//! 2. **Two states → events.** The states of two snapshots are joined on (domain,
//!    field, item): a changed value, an item that is gone (confirmed), an item that
//!    is new (for a domain whose module was observed before) are candidate changes,
//!    and the rules of `pipelines/changes.toml` — compiled into one expression, the
//!    first rule that holds wins — say which are events and how they read.
//!
//! The nightly `changes` table is step 2 between the previous snapshot's state and
//! the new one; `partnerforge changes --from A --to B` runs the same step on any two
//! committed states.

use std::collections::HashMap;

use bytes::Bytes;
use polars::prelude::*;

use crate::config::changes::{ChangeRule, ChangeRules, Condition, Direction, render};

/// How a field's values read in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Text,
    Count,
    Usd,
    Share,
    Tier,
}

/// A field change rules can name: the module whose fetches observe it.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub module: &'static str,
    /// Whether the value is a number (`relative_change`, `tier_crossed`).
    pub numeric: bool,
    pub unit: Unit,
    /// A list field: many items per domain (technologies, executives by role, postings).
    pub list: bool,
}

const fn field(name: &'static str, module: &'static str, unit: Unit, list: bool) -> FieldSpec {
    let numeric = !matches!(unit, Unit::Text);
    FieldSpec { name, module, numeric, unit, list }
}

/// The catalogue of fields: where each is read from is in `observations`.
pub const FIELDS: [FieldSpec; 15] = [
    field("search_vendor", "m02", Unit::Text, false),
    field("technologies", "m02", Unit::Text, true),
    field("partner_technologies", "m02", Unit::Text, true),
    field("tech_spend", "m02", Unit::Usd, false),
    field("monthly_visits", "m03", Unit::Count, false),
    field("bounce_rate", "m03", Unit::Share, false),
    field("search_traffic_pct", "m04", Unit::Share, false),
    field("revenue", "m07", Unit::Usd, false),
    field("gross_margin", "m07", Unit::Share, false),
    field("executives", "m07", Unit::Text, true),
    field("market_cap", "m08", Unit::Usd, false),
    field("job_postings", "m10", Unit::Text, true),
    field("search_postings", "m10", Unit::Text, true),
    field("trigger_events", "m12", Unit::Text, true),
    field("icp_tier", "m14", Unit::Tier, false),
];

/// Membership of the targets table (entered, left) is a field of its own.
pub const TARGET_FIELD: FieldSpec = field("target", "m14", Unit::Text, false);

/// Field names and whether each is numeric, for checking a rules file.
pub fn field_kinds() -> Vec<(&'static str, bool)> {
    FIELDS.iter().chain([&TARGET_FIELD]).map(|f| (f.name, f.numeric)).collect()
}

fn spec(name: &str) -> Option<&'static FieldSpec> {
    FIELDS.iter().chain([&TARGET_FIELD]).find(|f| f.name == name)
}

/// The marker field: a (domain, module) was observed at least once.
const SEEN: &str = "__seen__";

/// The columns of `change_state`, in order.
/// `since` is when the provider says the item first appeared (BuiltWith's
/// `FirstDetected`); on a marker row, `number` is the observing snapshot's date (ms).
/// `pending` is a new value seen but not yet confirmed (fields whose changes need
/// confirming), `pending_count` the consecutive fetches it was seen in.
pub const STATE_COLUMNS: [&str; 12] = [
    "domain",
    "field",
    "key",
    "value",
    "number",
    "since",
    "module",
    "source",
    "fetched_at",
    "absent",
    "pending",
    "pending_count",
];

/// A range of domains, `lo` included and `hi` excluded (`None`: unbounded): change
/// tracking works one range at a time, so its memory follows the range, not the book.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DomainRange {
    pub lo: Option<String>,
    pub hi: Option<String>,
}

impl DomainRange {
    /// Every domain.
    pub fn all() -> Self {
        Self::default()
    }

    /// Ranges that cover every domain, each holding about `per` of the given sorted domains.
    pub fn split<'a>(sorted: impl Iterator<Item = &'a str>, per: usize) -> Vec<Self> {
        Self::between(sorted.step_by(per.max(1)).skip(1).map(str::to_string).collect())
    }

    /// The ranges that cover every domain with these ascending bounds between them.
    pub fn between(bounds: Vec<String>) -> Vec<Self> {
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut lo = None;
        for bound in bounds {
            ranges.push(Self { lo: lo.take(), hi: Some(bound.clone()) });
            lo = Some(bound);
        }
        ranges.push(Self { lo, hi: None });
        ranges
    }

    /// The rows of `frame` whose domain is in the range.
    pub fn filter(&self, frame: LazyFrame) -> LazyFrame {
        let mut keep = lit(true);
        if let Some(lo) = &self.lo {
            keep = keep.and(col("domain").gt_eq(lit(lo.clone())));
        }
        if let Some(hi) = &self.hi {
            keep = keep.and(col("domain").lt(lit(hi.clone())));
        }
        if self.lo.is_none() && self.hi.is_none() { frame } else { frame.filter(keep) }
    }
}

/// The named columns of a Parquet file's rows in `range`: scanned, so the filter runs
/// as each row group is decoded (and skips row groups whose statistics are outside).
pub(crate) fn read_range(bytes: &Bytes, columns: &[&str], range: &DomainRange) -> PolarsResult<LazyFrame> {
    let frame = scan(bytes)?.select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>());
    Ok(range.filter(frame))
}

/// A Parquet file in memory as a scan of every column.
pub(crate) fn scan(bytes: &Bytes) -> PolarsResult<LazyFrame> {
    let buffer = polars_buffer::Buffer::from_owner(bytes.clone());
    let sources = ScanSources::Buffers(std::sync::Arc::from([buffer]));
    let mut args = ScanArgsParquet::default();
    args.hive_options.enabled = Some(false);
    LazyFrame::scan_parquet_sources(sources, args)
}

fn null_text() -> Expr {
    lit(NULL).cast(DataType::String)
}

fn null_number() -> Expr {
    lit(NULL).cast(DataType::Float64)
}

fn ms(c: &str) -> Expr {
    col(c).cast(DataType::Int64)
}

/// One field's observations in the state's shape (absence 0).
fn shaped(frame: LazyFrame, name: &str, module: &str, key: Expr, value: Expr, number: Expr) -> LazyFrame {
    shaped_since(frame, name, module, key, value, number, lit(NULL).cast(DataType::Int64))
}

fn shaped_since(
    frame: LazyFrame,
    name: &str,
    module: &str,
    key: Expr,
    value: Expr,
    number: Expr,
    since: Expr,
) -> LazyFrame {
    frame.select([
        col("domain"),
        lit(name.to_string()).alias("field"),
        key.cast(DataType::String).alias("key"),
        value.cast(DataType::String).alias("value"),
        number.cast(DataType::Float64).alias("number"),
        since.cast(DataType::Int64).alias("since"),
        lit(module.to_string()).alias("module"),
        col("source").cast(DataType::String),
        ms("fetched_at").alias("fetched_at"),
        lit(0i64).cast(DataType::Int64).alias("absent"),
        null_text().alias("pending"),
        lit(0i64).cast(DataType::Int64).alias("pending_count"),
    ])
}

/// A snapshot's tables as Parquet bytes, by table name.
pub type SnapshotFiles = HashMap<String, Bytes>;

/// The tables and columns [`observations`] reads (change tracking's split keeps only these).
pub const OBSERVED: [(&str, &[&str]); 11] = [
    ("fetches", &["module", "domain", "outcome", "fetched_on", "fetched_at"]),
    ("tech_spend", &["domain", "current_search", "tech_spend", "source", "fetched_at"]),
    (
        "tech_stack",
        &["domain", "technology", "tag", "first_detected", "live", "is_partner_tech", "source", "fetched_at"],
    ),
    ("traffic", &["domain", "monthly_visits", "bounce_rate", "source", "fetched_at"]),
    ("traffic_sources", &["domain", "search_traffic_pct", "source", "fetched_at"]),
    ("financials", &["domain", "revenue", "gross_margin", "source", "fetched_at"]),
    ("executives", &["domain", "name", "role", "divisional", "source", "fetched_at"]),
    ("stock", &["domain", "market_cap", "source", "fetched_at"]),
    ("job_postings", &["domain", "title", "signals", "source", "fetched_at"]),
    ("trigger_events", &["domain", "event_type", "headline", "source", "fetched_at"]),
    ("targets", &["domain", "company_name", "icp_tier", "icp_tier_name", "last_enriched"]),
];

/// What a snapshot observed: every field's items of the (module, domain) pairs it
/// fetched, plus one marker row per such pair. `date` is the snapshot's date:
/// fetches dated earlier were carried forward, not made. The targets table (m14)
/// is observed for every domain of `scored_domains` (the run's work).
pub fn observations(files: &SnapshotFiles, date: &str, model: &str, range: &DomainRange) -> PolarsResult<LazyFrame> {
    let read = |bytes: &Bytes, columns: &[&str]| read_range(bytes, columns, range);
    let get = |table: &str| {
        files
            .get(table)
            .cloned()
            .ok_or_else(|| PolarsError::NoData(format!("the snapshot has no {table} table").into()))
    };
    let read_table = |table: &str| -> PolarsResult<LazyFrame> {
        let columns = OBSERVED.iter().find(|(t, _)| *t == table).map(|(_, c)| *c).unwrap_or_default();
        read(&get(table)?, columns)
    };
    let fetches = read_table("fetches")?
        // Typed dates, or `YYYY-MM-DD` text in snapshots written before dates were typed.
        .filter(col("fetched_on").cast(DataType::String).eq(lit(date.to_string())).and(col("outcome").eq(lit("ok"))))
        .select([
            col("domain"),
            // The SimilarWeb fallback observes the tech stack as m02 does.
            when(col("module").eq(lit("m02sw"))).then(lit("m02")).otherwise(col("module")).alias("module"),
            ms("fetched_at").alias("fetched_at"),
        ]);
    let within = |frame: LazyFrame, module: &str| {
        let seen = fetches.clone().filter(col("module").eq(lit(module.to_string()))).select([col("domain")]);
        frame.join(seen, [col("domain")], [col("domain")], JoinArgs::new(JoinType::Semi))
    };
    let tech_spend = within(read_table("tech_spend")?, "m02");
    let tech_stack = within(read_table("tech_stack")?, "m02").filter(col("live").fill_null(lit(false)));
    let traffic = within(read_table("traffic")?, "m03");
    let sources = within(read_table("traffic_sources")?, "m04");
    let financials = within(read_table("financials")?, "m07");
    let executives = within(read_table("executives")?, "m07")
        .filter(col("role").is_not_null().and(col("divisional").fill_null(lit(false)).not()));
    let stock = within(read_table("stock")?, "m08");
    let postings = within(read_table("job_postings")?, "m10");
    let triggers = within(read_table("trigger_events")?, "m12");
    let targets = read_table("targets")?
        .with_columns([lit(format!("partnerforge:{model}")).alias("source"), col("last_enriched").alias("fetched_at")]);

    // The search vendor's FirstDetected is its technology row's.
    let vendor_since = tech_stack.clone().select([
        col("domain"),
        col("technology").alias("current_search"),
        col("first_detected").alias("vendor_since"),
    ]);
    let date_ms = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0);
    let frames = vec![
        shaped_since(
            tech_spend.clone().filter(col("current_search").is_not_null()).join(
                vendor_since,
                [col("domain"), col("current_search")],
                [col("domain"), col("current_search")],
                JoinArgs::new(JoinType::Left),
            ),
            "search_vendor",
            "m02",
            lit(""),
            col("current_search"),
            null_number(),
            ms("vendor_since"),
        ),
        shaped(
            tech_spend.filter(col("tech_spend").is_not_null()),
            "tech_spend",
            "m02",
            lit(""),
            null_text(),
            col("tech_spend"),
        ),
        shaped_since(
            tech_stack.clone(),
            "technologies",
            "m02",
            col("technology"),
            col("tag"),
            null_number(),
            ms("first_detected"),
        ),
        shaped_since(
            tech_stack.filter(col("is_partner_tech").fill_null(lit(false))),
            "partner_technologies",
            "m02",
            col("technology"),
            col("tag"),
            null_number(),
            ms("first_detected"),
        ),
        shaped(
            traffic.clone().filter(col("monthly_visits").is_not_null()),
            "monthly_visits",
            "m03",
            lit(""),
            null_text(),
            col("monthly_visits"),
        ),
        shaped(
            traffic.filter(col("bounce_rate").is_not_null()),
            "bounce_rate",
            "m03",
            lit(""),
            null_text(),
            col("bounce_rate"),
        ),
        shaped(
            sources.filter(col("search_traffic_pct").is_not_null()),
            "search_traffic_pct",
            "m04",
            lit(""),
            null_text(),
            col("search_traffic_pct"),
        ),
        shaped(
            financials.clone().filter(col("revenue").is_not_null()),
            "revenue",
            "m07",
            lit(""),
            null_text(),
            col("revenue"),
        ),
        shaped(
            financials.filter(col("gross_margin").is_not_null()),
            "gross_margin",
            "m07",
            lit(""),
            null_text(),
            col("gross_margin"),
        ),
        first_per_item(shaped(executives, "executives", "m07", col("role"), col("name"), null_number())),
        shaped(
            stock.filter(col("market_cap").is_not_null()),
            "market_cap",
            "m08",
            lit(""),
            null_text(),
            col("market_cap"),
        ),
        first_per_item(shaped(postings.clone(), "job_postings", "m10", col("title"), col("signals"), null_number())),
        first_per_item(shaped(
            // m10 lists the matched categories with `search` first.
            postings.filter(col("signals").fill_null(lit("")).str().starts_with(lit("search"))),
            "search_postings",
            "m10",
            col("title"),
            col("signals"),
            null_number(),
        )),
        first_per_item(shaped(triggers, "trigger_events", "m12", col("headline"), col("event_type"), null_number())),
        shaped(
            targets.clone().filter(col("icp_tier").is_not_null()),
            "icp_tier",
            "m14",
            lit(""),
            col("icp_tier_name"),
            col("icp_tier"),
        ),
        shaped(targets.clone(), "target", "m14", lit(""), col("company_name"), null_number()),
        // Markers: which (domain, module) pairs this snapshot observed.
        first_per_item(marker(fetches, col("module"), null_text(), col("fetched_at"), date_ms)),
        marker(targets, lit("m14"), col("source"), ms("fetched_at"), date_ms),
    ];
    concat(frames, UnionArgs::default())
}

/// Marker rows (field `__seen__`, item = the module): a domain observed for a module on
/// the snapshot's date (`number`, ms).
fn marker(frame: LazyFrame, module: Expr, source: Expr, fetched_at: Expr, date_ms: i64) -> LazyFrame {
    frame.select([
        col("domain"),
        lit(SEEN).alias("field"),
        module.clone().alias("key"),
        null_text().alias("value"),
        lit(date_ms as f64).alias("number"),
        lit(NULL).cast(DataType::Int64).alias("since"),
        module.alias("module"),
        source.alias("source"),
        fetched_at.alias("fetched_at"),
        lit(0i64).cast(DataType::Int64).alias("absent"),
        null_text().alias("pending"),
        lit(0i64).cast(DataType::Int64).alias("pending_count"),
    ])
}

/// One row per (domain, item) of a list whose provider can repeat an item (two officers
/// with one role, a posting listed twice, a headline in two feeds): the first wins.
fn first_per_item(frame: LazyFrame) -> LazyFrame {
    frame.unique_stable(Some(cols(["domain", "key"])), UniqueKeepStrategy::First)
}

/// The name of `change_feed`'s column that says which state a row is from.
const SIDE: &str = "side";

/// The key, in `change_feed`'s file metadata, of the stored `change_state` path the feed
/// was taken against: a diff uses the feed only from exactly that state.
pub const FEED_BASE: &str = "partnerforge.feed_base";

/// A range's part of a snapshot's `change_feed`: the rows of the previous state
/// (`side` = `before`) and of the new one (`after`) of every domain whose tracked items
/// differ between them ([`differing`]), as stored. The diff of the two snapshots needs
/// nothing else, whatever rules it is run with: every other domain has no event.
pub fn feed_part(before: &DataFrame, after: &DataFrame) -> PolarsResult<DataFrame> {
    let side = |df: &DataFrame, side: &str| -> PolarsResult<LazyFrame> {
        Ok(state_for_storage(df)?.lazy().select(STATE_COLUMNS.map(col)).with_column(lit(side).alias(SIDE)))
    };
    concat([side(before, "before")?, side(after, "after")?], UnionArgs::default())?.collect()
}

/// Reads a stored `change_feed`'s rows in `range`: (the previous state's, the new one's).
pub fn read_feed(bytes: &Bytes, range: &DomainRange) -> PolarsResult<(LazyFrame, LazyFrame)> {
    let mut columns = STATE_COLUMNS.to_vec();
    columns.push(SIDE);
    let rows = read_range(bytes, &columns, range)?.with_columns([ms("since"), ms("fetched_at")]).collect()?;
    let side = |side: &str| rows.clone().lazy().filter(col(SIDE).eq(lit(side))).select(STATE_COLUMNS.map(col));
    Ok((side("before"), side("after")))
}

/// The key, in `change_feed`'s file metadata, of the renames the commit applied (a JSON
/// object, old domain → new): the feed's previous rows are already under the new names.
pub const FEED_RENAMES: &str = "partnerforge.feed_renames";

/// The rows of a change feed a diff reads at a time: a night of a 10M book changes about
/// 5 million (joined at once they held 2 GB); a 1M book's feed is one chunk.
pub const FEED_CHUNK_ROWS: usize = 1_000_000;

/// What a `change_feed`'s footer says, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedInfo {
    /// The stored `change_state` it was taken against ([`FEED_BASE`]).
    pub base: Option<String>,
    /// The renames its commit applied, as JSON ([`FEED_RENAMES`]).
    pub renames: Option<String>,
    /// Its rows, both sides.
    pub rows: usize,
    /// Ranges of domains that cover it in chunks of about `chunk_rows` rows each: its row
    /// groups (one per range the commit tracked, in domain order) taken together until
    /// they hold that many, a chunk starting at its first row group's smallest domain.
    /// Each chunk is read by domain, so a domain's rows are in one whatever the boundaries.
    pub chunks: Vec<DomainRange>,
}

/// Reads a `change_feed`'s footer ([`FeedInfo`]).
pub fn feed_info(bytes: &Bytes, chunk_rows: usize) -> PolarsResult<FeedInfo> {
    use parquet::file::statistics::Statistics;
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .map_err(|e| PolarsError::ComputeError(format!("reading change_feed's metadata: {e}").into()))?;
    let pairs = metadata.file_metadata().key_value_metadata();
    let value = |key: &str| pairs.and_then(|kv| kv.iter().find(|p| p.key == key)).and_then(|p| p.value.clone());
    let (base, renames) = (value(FEED_BASE), value(FEED_RENAMES));
    let rows = usize::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let whole = |base, renames| Ok(FeedInfo { base, renames, rows, chunks: vec![DomainRange::all()] });
    let columns = metadata.file_metadata().schema_descr().columns();
    let Some(at) = columns.iter().position(|c| c.path().string() == "domain") else { return whole(base, renames) };
    let mut starts: Vec<String> = Vec::new();
    let mut held = 0;
    for group in metadata.row_groups() {
        let count = usize::try_from(group.num_rows()).unwrap_or(0);
        if held >= chunk_rows && count > 0 {
            let smallest = match group.column(at).statistics() {
                Some(Statistics::ByteArray(s)) => s.min_opt().and_then(|m| m.as_utf8().ok()).map(str::to_string),
                _ => None,
            };
            // Without statistics the feed is one chunk.
            let Some(smallest) = smallest else { return whole(base, renames) };
            starts.push(smallest);
            held = 0;
        }
        held += count;
    }
    Ok(FeedInfo { base, renames, rows, chunks: DomainRange::between(starts) })
}

/// An empty state (a store's first snapshot, or one from before change tracking).
pub fn empty_state() -> PolarsResult<LazyFrame> {
    let df = df!(
        "domain" => Vec::<String>::new(),
        "field" => Vec::<String>::new(),
        "key" => Vec::<String>::new(),
        "value" => Vec::<Option<String>>::new(),
        "number" => Vec::<Option<f64>>::new(),
        "since" => Vec::<Option<i64>>::new(),
        "module" => Vec::<String>::new(),
        "source" => Vec::<Option<String>>::new(),
        "fetched_at" => Vec::<Option<i64>>::new(),
        "absent" => Vec::<i64>::new(),
        "pending" => Vec::<Option<String>>::new(),
        "pending_count" => Vec::<i64>::new(),
    )?;
    Ok(df.lazy())
}

/// Reads a stored `change_state` table.
pub fn read_state(bytes: &Bytes, range: &DomainRange) -> PolarsResult<LazyFrame> {
    // Times are stored as UTC timestamps (milliseconds as numbers before) and tracked as ms.
    Ok(read_range(bytes, &STATE_COLUMNS, range)?.with_columns([ms("since"), ms("fetched_at")]))
}

/// The column of a stored `change_state` holding its domain's digest (the same on every
/// row of a domain): two states are compared domain by domain without hashing their items.
pub const DIGEST: &str = "digest";

/// The key, in `change_state`'s file metadata, of how its digests were computed: a state
/// is compared by its stored digests only when it says [`DIGEST_VERSION`].
pub const STATE_DIGEST: &str = "partnerforge.state_digest";

/// The digests [`with_digests`] computes: of (field, key, value, number) of every item.
/// They are Polars' seeded hashes: should an upgrade hash otherwise, a state of the old
/// build and one of the new compare every domain as differing (read and joined whole, as
/// without digests: slower for that pair, never wrong) — so the first commit after such
/// an upgrade writes a change feed of both states whole — until both are of one build.
pub const DIGEST_VERSION: &str = "1";

/// A stored `change_state`, and whether its rows carry their domain's digest ([`DIGEST`]);
/// states stored before the digests do not, and their digests are computed when compared.
#[derive(Clone)]
pub struct StateFile {
    pub bytes: Bytes,
    pub digested: bool,
}

impl StateFile {
    /// Reads the file's footer.
    pub fn new(bytes: Bytes) -> PolarsResult<Self> {
        let digested = footer_value(&bytes, STATE_DIGEST, "change_state")?.as_deref() == Some(DIGEST_VERSION);
        Ok(Self { bytes, digested })
    }

    /// The rows in `range`, with their digests when the file has them.
    pub fn read(&self, range: &DomainRange) -> PolarsResult<LazyFrame> {
        if !self.digested {
            return read_state(&self.bytes, range);
        }
        let mut columns = STATE_COLUMNS.to_vec();
        columns.push(DIGEST);
        Ok(read_range(&self.bytes, &columns, range)?.with_columns([ms("since"), ms("fetched_at")]))
    }
}

/// A key's value in a Parquet file's footer (`what` names the file in an error).
fn footer_value(bytes: &Bytes, key: &str, what: &str) -> PolarsResult<Option<String>> {
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .map_err(|e| PolarsError::ComputeError(format!("reading {what}'s metadata: {e}").into()))?;
    let pairs = metadata.file_metadata().key_value_metadata();
    Ok(pairs.and_then(|kv| kv.iter().find(|p| p.key == key)).and_then(|p| p.value.clone()))
}

/// The rows of two stored states in `range` that can make an event, or `None` when no
/// domain's items differ. With both states' digests stored, only the domains and digests
/// are read first and then the rows of the domains whose digests differ (about the share
/// of the book that changed between them); otherwise both ranges are read whole, and
/// [`events`] compares them domain by domain.
pub fn between(old: &StateFile, new: &StateFile, range: &DomainRange) -> PolarsResult<Option<(DataFrame, DataFrame)>> {
    if !(old.digested && new.digested) {
        return Ok(Some((old.read(range)?.collect()?, new.read(range)?.collect()?)));
    }
    let digests = |state: &StateFile| read_range(&state.bytes, &["domain", DIGEST], range)?.collect();
    let (a, b) = (digests(old)?, digests(new)?);
    // A file that says it has digests but holds another column under the name is read whole.
    let usable = |df: &DataFrame| {
        df.column(DIGEST).is_ok_and(|c| c.dtype() == &DataType::Int64 && c.null_count() == 0)
            && df.column("domain").is_ok_and(|c| c.null_count() == 0)
    };
    if !(usable(&a) && usable(&b)) {
        let whole = |state: &StateFile| read_state(&state.bytes, range)?.collect();
        return Ok(Some((whole(old)?, whole(new)?)));
    }
    let wanted = {
        let (a, b) = (Runs::of(&a)?, Runs::of(&b)?);
        let (in_a, in_b) = a.differs_from(&b);
        let mut wanted: Vec<&str> = a
            .runs
            .iter()
            .zip(&in_a)
            .chain(b.runs.iter().zip(&in_b))
            .filter(|(_, differs)| **differs)
            .map(|(run, _)| run.0)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        Series::new("wanted".into(), wanted)
    };
    if wanted.is_empty() {
        return Ok(None);
    }
    let rows = |state: &StateFile| {
        state.read(range)?.filter(col("domain").is_in(lit(wanted.clone()).implode(false), false)).collect()
    };
    Ok(Some((rows(old)?, rows(new)?)))
}

/// A state with its domains' digests ([`DIGEST`]), as it is stored: `state` sorted by domain
/// (as [`next_state`]'s callers sort it), so that each domain's rows are one run.
pub fn with_digests(state: DataFrame) -> PolarsResult<DataFrame> {
    let mut state = if state.schema().contains(DIGEST) { state.drop(DIGEST)? } else { state };
    let digests: Vec<i64> = {
        let runs = Runs::of(&state)?;
        if runs.runs.iter().all(|r| r.1 != usize::MAX) {
            let mut digests = vec![0i64; state.height()];
            for &(_, row, rows, digest) in &runs.runs {
                digests[row..row + rows].fill(digest as i64);
            }
            digests
        } else {
            let domains = state.column("domain")?.str()?;
            domains.iter().map(|d| runs.digest(d.unwrap_or_default()).unwrap_or_default() as i64).collect()
        }
    };
    state.with_column(Column::new(DIGEST.into(), digests))?;
    Ok(state)
}

/// The state as stored: `since` and `fetched_at` as UTC timestamps.
pub fn state_for_storage(state: &DataFrame) -> PolarsResult<DataFrame> {
    let mut out = state.clone();
    for name in ["since", "fetched_at"] {
        let times = super::utc_ms(state.column(name)?.as_materialized_series())?;
        out.replace(name, times.into_column())?;
    }
    Ok(out)
}

/// The state after a snapshot's observations: observed items current (absence 0);
/// tracked items missing from a fetch of their module one absence further, dropped
/// once the field's confirmation is reached; items of modules not fetched as they were.
/// The targets (m14) are observed for every domain the old state or `scored` holds.
pub fn next_state(previous: LazyFrame, observed: LazyFrame, rules: &ChangeRules) -> PolarsResult<LazyFrame> {
    let by_pair = [col("domain"), col("module")];
    let by_item = [col("domain"), col("field"), col("key")];
    let pairs = observed.clone().filter(col("field").eq(lit(SEEN))).select(by_pair.clone());
    // Membership and tier are observed for every tracked domain: the targets table is complete.
    let tracked_m14 = previous
        .clone()
        .filter(col("module").eq(lit("m14")))
        .select([col("domain"), col("module")])
        .unique(None, UniqueKeepStrategy::Any);
    let pairs = concat([pairs, tracked_m14], UnionArgs::default())?.unique(None, UniqueKeepStrategy::Any);
    let previous_for_changes = previous.clone();
    let untouched =
        previous.clone().join(pairs.clone(), by_pair.clone(), by_pair.clone(), JoinArgs::new(JoinType::Anti));
    let confirm: Vec<(String, i64)> =
        field_kinds().iter().map(|(f, _)| (f.to_string(), i64::from(rules.confirm_for(f)))).collect();
    let confirm_frame = df!(
        "field" => confirm.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        "confirm" => confirm.iter().map(|(_, k)| *k).collect::<Vec<_>>(),
    )?
    .lazy();
    let missing = previous
        .join(pairs, by_pair.clone(), by_pair, JoinArgs::new(JoinType::Semi))
        .join(observed.clone().select(by_item.clone()), by_item.clone(), by_item, JoinArgs::new(JoinType::Anti))
        .filter(col("field").neq(lit(SEEN)))
        .with_column((col("absent") + lit(1i64)).alias("absent"))
        .join(confirm_frame, [col("field")], [col("field")], JoinArgs::new(JoinType::Left))
        .filter(col("absent").lt(col("confirm").fill_null(lit(i64::from(rules.confirm_removals)))))
        .select(STATE_COLUMNS.map(col));
    let observed = confirm_changes(previous_for_changes, observed, rules)?;
    concat(
        [untouched.select(STATE_COLUMNS.map(col)), missing, observed.select(STATE_COLUMNS.map(col))],
        UnionArgs::default(),
    )
}

/// For fields whose changes the rules want confirmed (`[confirm_changes]`), an observed
/// value that differs from the tracked one is held as `pending` until it has been seen
/// in that many consecutive fetches; till then the tracked value stays (so a value that
/// flips and flips back is no change).
fn confirm_changes(previous: LazyFrame, observed: LazyFrame, rules: &ChangeRules) -> PolarsResult<LazyFrame> {
    let fields: Vec<(String, i64)> =
        rules.confirm_changes.iter().filter(|(_, k)| **k > 1).map(|(f, k)| (f.clone(), i64::from(*k))).collect();
    if fields.is_empty() {
        return Ok(observed);
    }
    let names = Series::new("fields".into(), fields.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
    let needs = col("field").is_in(lit(names).implode(false), false).fill_null(lit(false));
    let plain = observed.clone().filter(needs.clone().not());
    let by_item = [col("domain"), col("field"), col("key")];
    let ks = df!(
        "field" => fields.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        "needed" => fields.iter().map(|(_, k)| *k).collect::<Vec<_>>(),
    )?
    .lazy();
    let before = previous.filter(needs.clone()).select([
        col("domain"),
        col("field"),
        col("key"),
        col("value").alias("was_value"),
        col("number").alias("was_number"),
        col("since").alias("was_since"),
        col("source").alias("was_source"),
        col("fetched_at").alias("was_fetched_at"),
        col("pending").alias("was_pending"),
        col("pending_count").alias("was_pending_count"),
    ]);
    let seen = |v: &str, n: &str| coalesce(&[col(v), col(n).cast(DataType::String)]);
    let joined = observed.filter(needs).join(before, by_item.clone(), by_item, JoinArgs::new(JoinType::Left)).join(
        ks,
        [col("field")],
        [col("field")],
        JoinArgs::new(JoinType::Left),
    );
    let differs = col("was_source")
        .is_not_null()
        .and(col("value").neq_missing(col("was_value")).or(col("number").neq_missing(col("was_number"))));
    let count = when(col("was_pending").eq(seen("value", "number")).fill_null(lit(false)))
        .then(col("was_pending_count") + lit(1i64))
        .otherwise(lit(1i64));
    let hold = differs.and(count.clone().lt(col("needed")));
    let keep = |was: &str, now: &str| when(hold.clone()).then(col(was)).otherwise(col(now)).alias(now);
    let confirmed = joined.with_columns([
        keep("was_value", "value"),
        keep("was_number", "number"),
        keep("was_since", "since"),
        keep("was_source", "source"),
        keep("was_fetched_at", "fetched_at"),
        when(hold.clone()).then(seen("value", "number")).otherwise(null_text()).alias("pending"),
        when(hold).then(count).otherwise(lit(0i64)).alias("pending_count"),
    ]);
    concat([plain.select(STATE_COLUMNS.map(col)), confirmed.select(STATE_COLUMNS.map(col))], UnionArgs::default())
}

/// A change event, as the `changes` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub domain: String,
    pub module: String,
    pub field: String,
    pub item: Option<String>,
    pub change: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub category: String,
    pub significance: String,
    pub summary: String,
    pub algolia_relevance: String,
    pub rule: String,
    pub from_snapshot: String,
    pub to_snapshot: String,
    pub old_source: Option<String>,
    pub old_fetched_at: Option<i64>,
    pub new_source: Option<String>,
    pub new_fetched_at: Option<i64>,
    /// When the provider says an added item first appeared (BuiltWith's FirstDetected).
    pub first_detected: Option<i64>,
}

fn lower_in(expr: Expr, values: &[String]) -> Expr {
    let lowered: Vec<String> = values.iter().map(|v| v.to_lowercase()).collect();
    let series = Series::new("values".into(), lowered);
    expr.str().to_lowercase().is_in(lit(series).implode(false), false).fill_null(lit(false))
}

/// A rule as a condition over the candidate changes.
fn rule_expr(rule: &ChangeRule) -> Expr {
    let kind = |k: &str| col("change").eq(lit(k.to_string()));
    let old = col("old_number");
    let new = col("new_number");
    let mut e = col("field").eq(lit(rule.field.clone()));
    e = e.and(match rule.condition {
        Condition::Added => kind("added"),
        Condition::Removed => kind("removed"),
        Condition::Changed => kind("changed"),
        Condition::RelativeChange => {
            let threshold = rule.threshold.unwrap_or(f64::INFINITY);
            let ratio = new.clone() / old.clone() - lit(1.0);
            let moved = match rule.direction {
                Direction::Up => ratio.gt_eq(lit(threshold)),
                Direction::Down => ratio.lt_eq(lit(-threshold)),
                Direction::Either => ratio.clone().gt_eq(lit(threshold)).or(ratio.lt_eq(lit(-threshold))),
            };
            kind("changed")
                .and(old.clone().gt(lit(0.0)))
                .and(new.clone().is_not_null())
                .and(moved.fill_null(lit(false)))
        }
        Condition::TierCrossed => {
            let crossed = match rule.direction {
                Direction::Up => new.clone().lt(old.clone()),
                Direction::Down => new.clone().gt(old.clone()),
                Direction::Either => new.clone().neq(old.clone()),
            };
            kind("changed").and(crossed.fill_null(lit(false)))
        }
    });
    if !rule.keys.is_empty() {
        e = e.and(lower_in(col("key"), &rule.keys));
    }
    if !rule.from.is_empty() {
        e = e.and(lower_in(col("old_value"), &rule.from));
    }
    if !rule.to.is_empty() {
        e = e.and(lower_in(col("new_value"), &rule.to));
    }
    if !rule.not_to.is_empty() {
        e = e.and(lower_in(col("new_value"), &rule.not_to).not());
    }
    e
}

/// The candidate changes between two states, each with the index of the first rule
/// that holds (rows no rule holds for are not events).
fn matched(old: LazyFrame, new: LazyFrame, rules: &ChangeRules) -> PolarsResult<DataFrame> {
    // Domain-first: a domain whose tracked items (field, item, value) are the same on both
    // sides has no event, whatever else moved; only the others (about the share of the
    // book that changed) are joined below.
    let (old, new) = differing(old.collect()?, new.collect()?)?;
    let (old, new) = (old.lazy(), new.lazy());
    let by_item = [col("domain"), col("field"), col("key")];
    let side = |frame: LazyFrame, prefix: &str| {
        frame.filter(col("field").neq(lit(SEEN))).select([
            col("domain"),
            col("field"),
            col("key"),
            col("module").alias(format!("{prefix}_module")),
            col("value").alias(format!("{prefix}_value")),
            col("number").alias(format!("{prefix}_number")),
            col("since").alias(format!("{prefix}_since")),
            col("source").alias(format!("{prefix}_source")),
            col("fetched_at").alias(format!("{prefix}_fetched_at")),
            col("absent").alias(format!("{prefix}_absent")),
        ])
    };
    // The (domain, module) pairs the old state had observed: new items there are additions.
    let old_pairs = old.clone().filter(col("field").eq(lit(SEEN))).select([
        col("domain"),
        col("key").alias("module"),
        col("fetched_at").alias("old_seen_at"),
        col("number").alias("old_seen_on"),
    ]);
    // The latest fetch of each pair in the new state: the evidence of a removal.
    let new_pairs = new.clone().filter(col("field").eq(lit(SEEN))).select([
        col("domain"),
        col("key").alias("module"),
        col("fetched_at").alias("seen_at"),
    ]);
    // Hash-first: an item with the same value on both sides is no change whatever else
    // moved (a new fetch time, an absence counted); only the rest is joined in full.
    let same_value = [col("domain"), col("field"), col("key"), col("value"), col("number")];
    let mut equal = JoinArgs::new(JoinType::Anti);
    equal.nulls_equal = true;
    let values = |frame: LazyFrame| frame.filter(col("field").neq(lit(SEEN))).select(same_value.clone());
    let old_items = old.clone().join(values(new.clone()), same_value.clone(), same_value.clone(), equal.clone());
    let new_items = new.clone().join(values(old.clone()), same_value.clone(), same_value, equal);
    let joined = side(old_items, "old")
        .join(
            side(new_items, "new"),
            by_item.clone(),
            by_item,
            JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .with_column(coalesce(&[col("new_module"), col("old_module")]).alias("module"));
    let known_before = old_pairs.with_column(lit(true).alias("known_before"));
    let joined = joined
        .join(
            known_before,
            [col("domain"), col("module")],
            [col("domain"), col("module")],
            JoinArgs::new(JoinType::Left),
        )
        .join(new_pairs, [col("domain"), col("module")], [col("domain"), col("module")], JoinArgs::new(JoinType::Left));
    let has_old = col("old_module").is_not_null();
    let has_new = col("new_module").is_not_null();
    let differs = col("old_value").neq_missing(col("new_value")).or(col("old_number").neq_missing(col("new_number")));
    let is_target = col("field").eq(lit(TARGET_FIELD.name));
    // What the provider dates (a technology's FirstDetected) is new only when it first
    // appeared after the previous fetch, give or take the crawl's lag: an item missed
    // by one crawl and seen again is no addition.
    let slack_ms = f64::from(rules.first_detected_slack_days) * 86_400_000.0;
    let new_since_then = col("new_since")
        .is_null()
        .or(col("old_seen_on").is_null())
        .or(col("new_since").cast(DataType::Float64).gt_eq(col("old_seen_on") - lit(slack_ms)));
    let change = when(has_old.clone().and(has_new.clone()).and(differs).and(col("new_absent").eq(lit(0i64))))
        .then(lit("changed"))
        .when(has_old.clone().and(has_new.clone().not()))
        .then(lit("removed"))
        .when(
            has_old.not().and(has_new).and(col("known_before").fill_null(lit(false)).and(new_since_then).or(is_target)),
        )
        .then(lit("added"))
        .otherwise(null_text());
    let rule_index = crate::transform::scoring::first_match(
        rules.rules.iter().enumerate().map(|(i, r)| (rule_expr(r), lit(i as i64))).collect(),
        lit(NULL).cast(DataType::Int64),
    );
    joined
        .with_column(change.alias("change"))
        .filter(col("change").is_not_null())
        .with_column(rule_index.alias("rule_index"))
        .filter(col("rule_index").is_not_null())
        .with_columns([
            // A removal's evidence is the fetch that confirmed it; an addition's, the fetch before it.
            coalesce(&[col("new_source"), col("old_source")]).alias("new_source"),
            coalesce(&[col("old_source"), col("new_source")]).alias("old_source"),
            when(col("change").eq(lit("removed")))
                .then(col("seen_at"))
                .otherwise(col("new_fetched_at"))
                .alias("new_fetched_at"),
            when(col("change").eq(lit("added")))
                .then(col("old_seen_at"))
                .otherwise(col("old_fetched_at"))
                .alias("old_fetched_at"),
        ])
        .sort(["domain", "field", "key"], SortMultipleOptions::default())
        .collect()
}

/// Each run of rows with one domain (a state is sorted by domain) and an order-free
/// digest of its items' (field, key, value, number): from the sum of their hashes and
/// their count, or as stored ([`DIGEST`]). The presence rows (`SEEN`) are not items: a new
/// fetch time alone is no change.
struct Runs<'a> {
    /// (domain, first row, rows, digest), sorted by domain.
    runs: Vec<(&'a str, usize, usize, u64)>,
}

/// A domain's digest: the sum of its items' hashes, and their count.
fn finish_digest(sum: u64, items: u64) -> u64 {
    sum ^ items.wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(17)
}

impl<'a> Runs<'a> {
    fn of(df: &'a DataFrame) -> PolarsResult<Self> {
        let domains = df.column("domain")?.str()?;
        // (domain, first row, rows, sum of the items' hashes or the stored digest, items)
        let mut runs: Vec<(&str, usize, usize, u64, u64)> = Vec::new();
        let stored = match df.column(DIGEST) {
            Ok(c) if c.dtype() == &DataType::Int64 && c.null_count() == 0 => Some(c.i64()?),
            _ => None,
        };
        if let Some(stored) = stored {
            for (row, (domain, digest)) in domains.iter().zip(stored.iter()).enumerate() {
                let domain = domain.unwrap_or_default();
                match runs.last_mut() {
                    Some(run) if run.0 == domain => run.2 += 1,
                    _ => runs.push((domain, row, 1, digest.unwrap_or_default() as u64, 0)),
                }
            }
        } else {
            let state = PlSeedableRandomStateQuality::seed_from_u64(0x5eed_d1ff);
            let mut hashes = Vec::with_capacity(df.height());
            df.column("field")?.vec_hash(state.clone(), &mut hashes)?;
            for name in ["key", "value", "number"] {
                df.column(name)?.vec_hash_combine(state.clone(), &mut hashes)?;
            }
            let fields = df.column("field")?.str()?;
            for (row, ((domain, field), hash)) in domains.iter().zip(fields.iter()).zip(hashes).enumerate() {
                let domain = domain.unwrap_or_default();
                match runs.last_mut() {
                    Some(run) if run.0 == domain => run.2 += 1,
                    _ => runs.push((domain, row, 1, 0, 0)),
                }
                if field != Some(SEEN)
                    && let Some(run) = runs.last_mut()
                {
                    // Mixed once more, so that the hashes of several items do not cancel out.
                    run.3 = run.3.wrapping_add(hash.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29));
                    run.4 += 1;
                }
            }
        }
        if !runs.is_sorted_by(|a, b| a.0 < b.0) {
            // Not grouped by domain after all: the runs of one domain are summed (a stored
            // digest is the same on each of them).
            runs.sort_by(|a, b| a.0.cmp(b.0));
            runs.dedup_by(|later, first| {
                let same = later.0 == first.0;
                if same {
                    first.2 += later.2;
                    if stored.is_none() {
                        first.3 = first.3.wrapping_add(later.3);
                        first.4 += later.4;
                    }
                    first.1 = usize::MAX; // rows no longer contiguous
                }
                same
            });
        }
        let finish = stored.is_none();
        let runs = runs
            .into_iter()
            .map(|(domain, row, rows, sum, items)| {
                (domain, row, rows, if finish { finish_digest(sum, items) } else { sum })
            })
            .collect();
        Ok(Self { runs })
    }

    /// Whether each run of `self` and of `other` differs from the other side's run of its
    /// domain (or has none there): one walk of both, sorted by domain.
    fn differs_from(&self, other: &Runs) -> (Vec<bool>, Vec<bool>) {
        let (mut mine, mut theirs) = (vec![true; self.runs.len()], vec![true; other.runs.len()]);
        let (mut i, mut j) = (0, 0);
        while i < self.runs.len() && j < other.runs.len() {
            match self.runs[i].0.cmp(other.runs[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    let differs = self.runs[i].3 != other.runs[j].3;
                    (mine[i], theirs[j]) = (differs, differs);
                    (i, j) = (i + 1, j + 1);
                }
            }
        }
        (mine, theirs)
    }

    /// The rows of `df` (the frame the runs are of) of the runs flagged in `keep`.
    fn keep(&self, df: DataFrame, keep: &[bool]) -> PolarsResult<DataFrame> {
        if keep.iter().all(|k| *k) {
            return Ok(df);
        }
        let wanted = self.runs.iter().zip(keep).filter(|(_, k)| **k).map(|(r, _)| r);
        if self.runs.iter().all(|r| r.1 != usize::MAX) {
            let mut mask = vec![false; df.height()];
            for run in wanted {
                mask[run.1..run.1 + run.2].fill(true);
            }
            return df.filter(&BooleanChunked::from_slice("keep".into(), &mask));
        }
        let wanted = Series::new("domain".into(), wanted.map(|r| r.0).collect::<Vec<_>>());
        df.lazy().filter(col("domain").is_in(lit(wanted).implode(false), false)).collect()
    }

    fn digest(&self, domain: &str) -> Option<u64> {
        let i = self.runs.binary_search_by(|r| r.0.cmp(domain)).ok()?;
        Some(self.runs[i].3)
    }
}

/// The rows of both states whose domain's tracked items differ between them: the only
/// rows that can make an event, whatever the rules say.
pub fn differing(old: DataFrame, new: DataFrame) -> PolarsResult<(DataFrame, DataFrame)> {
    let (a, b) = (Runs::of(&old)?, Runs::of(&new)?);
    let (keep_old, keep_new) = a.differs_from(&b);
    Ok((a.keep(old.clone(), &keep_old)?, b.keep(new.clone(), &keep_new)?))
}

/// Renders a value for a summary.
fn display(unit: Unit, value: Option<&str>, number: Option<f64>) -> Option<String> {
    if let Some(v) = value {
        return Some(v.to_string());
    }
    let n = number?;
    Some(match unit {
        Unit::Share => format!("{:.1} %", n * 100.0),
        Unit::Usd => format!("${}", compact(n)),
        Unit::Count => compact(n),
        Unit::Tier => format!("tier {n}"),
        Unit::Text => format!("{n}"),
    })
}

fn compact(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.1}B", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// The stable id of an event: a hash of what changed and where it is reported.
pub fn event_id(domain: &str, field: &str, item: &str, old: &str, new: &str, to_snapshot: &str) -> String {
    let text = [domain, field, item, old, new, to_snapshot].join("\u{1f}");
    crate::config::sha256_hex(text.as_bytes())[..32].to_string()
}

/// The events between two states, by the rules.
pub fn events(
    old: LazyFrame,
    new: LazyFrame,
    rules: &ChangeRules,
    from_snapshot: &str,
    to_snapshot: &str,
) -> PolarsResult<Vec<Event>> {
    let df = matched(old, new, rules)?;
    let text = |name: &str| -> PolarsResult<Vec<Option<String>>> {
        Ok(df.column(name)?.str()?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let number = |name: &str| -> PolarsResult<Vec<Option<f64>>> { Ok(df.column(name)?.f64()?.iter().collect()) };
    let int = |name: &str| -> PolarsResult<Vec<Option<i64>>> {
        Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.iter().collect())
    };
    let (domains, fields, keys, modules, changes) =
        (text("domain")?, text("field")?, text("key")?, text("module")?, text("change")?);
    let (old_values, new_values, old_numbers, new_numbers) =
        (text("old_value")?, text("new_value")?, number("old_number")?, number("new_number")?);
    let (old_sources, new_sources, old_at, new_at, rule_index) =
        (text("old_source")?, text("new_source")?, int("old_fetched_at")?, int("new_fetched_at")?, int("rule_index")?);
    let first_detected = int("new_since")?;
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let Some(rule) = rule_index[i].and_then(|r| rules.rules.get(r as usize)) else { continue };
        let field_name = fields[i].clone().unwrap_or_default();
        let unit = spec(&field_name).map(|f| f.unit).unwrap_or(Unit::Text);
        let old = display(unit, old_values[i].as_deref(), old_numbers[i]);
        let new = display(unit, new_values[i].as_deref(), new_numbers[i]);
        let change_pct = match (old_numbers[i], new_numbers[i]) {
            (Some(o), Some(n)) if o != 0.0 => format!("{:+.0} %", (n / o - 1.0) * 100.0),
            _ => String::new(),
        };
        let domain = domains[i].clone().unwrap_or_default();
        let item = keys[i].clone().filter(|k| !k.is_empty());
        let summary = render(
            &rule.summary,
            &[
                ("domain", &domain),
                ("item", item.as_deref().unwrap_or("")),
                ("old", old.as_deref().unwrap_or("none")),
                ("new", new.as_deref().unwrap_or("none")),
                ("change", &change_pct),
            ],
        );
        let old_text = old_values[i].clone().or(old_numbers[i].map(|n| n.to_string()));
        let new_text = new_values[i].clone().or(new_numbers[i].map(|n| n.to_string()));
        out.push(Event {
            event_id: event_id(
                &domain,
                &field_name,
                item.as_deref().unwrap_or(""),
                old_text.as_deref().unwrap_or(""),
                new_text.as_deref().unwrap_or(""),
                to_snapshot,
            ),
            domain,
            module: modules[i].clone().unwrap_or_default(),
            field: field_name,
            item,
            change: changes[i].clone().unwrap_or_default(),
            old_value: if changes[i].as_deref() == Some("added") { None } else { old_text },
            new_value: if changes[i].as_deref() == Some("removed") { None } else { new_text },
            category: rule.category.clone(),
            significance: rule.significance.clone(),
            summary,
            algolia_relevance: rule.relevance.clone(),
            rule: rule.id.clone(),
            from_snapshot: from_snapshot.to_string(),
            to_snapshot: to_snapshot.to_string(),
            old_source: old_sources[i].clone(),
            old_fetched_at: old_at[i],
            new_source: new_sources[i].clone(),
            new_fetched_at: new_at[i],
            first_detected: if changes[i].as_deref() == Some("added") { first_detected[i] } else { None },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_is_read_in_chunks_of_whole_row_groups_and_each_domain_in_one() {
        // A feed written as commits write it: a part per range of domains, in order.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.parquet");
        let mut writer =
            crate::transform::SliceWriter::new(&path).with_metadata(FEED_BASE, "base").min_row_group_rows(1);
        let mut domains = Vec::new();
        for part in 0..6 {
            let names: Vec<String> = (0..3).map(|i| format!("d{part}{i}.com")).collect();
            let rows = |night: i64| {
                night_rows(&names.iter().map(String::as_str).collect::<Vec<_>>(), night).collect().unwrap()
            };
            writer.write(&feed_part(&rows(1), &rows(2)).unwrap()).unwrap();
            domains.extend(names);
        }
        writer.finish().unwrap();
        let bytes = Bytes::from(std::fs::read(&path).unwrap());
        let whole = feed_info(&bytes, 1_000_000).unwrap();
        assert_eq!((whole.base.as_deref(), whole.renames), (Some("base"), None));
        assert_eq!(whole.rows, 6 * 12, "both sides of six parts");
        assert_eq!(whole.chunks, vec![DomainRange::all()]);
        // Parts of 12 rows (3 domains × 2 rows × 2 sides): chunks of at least 20 rows take two.
        let chunks = feed_info(&bytes, 20).unwrap().chunks;
        assert_eq!(chunks.len(), 3, "{chunks:?}");
        let mut seen = Vec::new();
        for chunk in &chunks {
            let (before, after) = read_feed(&bytes, chunk).unwrap();
            let (before, after) = (before.collect().unwrap(), after.collect().unwrap());
            assert_eq!(before.height(), after.height());
            assert_eq!(before.height(), 12, "two parts' domains, each in one chunk");
            seen.extend(before.column("domain").unwrap().str().unwrap().iter().flatten().map(str::to_string));
        }
        seen.dedup();
        assert_eq!(seen, domains);
    }

    #[test]
    fn stored_digests_compare_two_states_by_the_domains_that_differ() {
        // a, b, c: fetched again, the same values (a new fetch time and marker); d: a value
        // changed; e: new; f: gone.
        let same = |night: i64| {
            night_rows(&["a.com", "b.com", "c.com"], 1)
                .with_columns([
                    lit(night * 86_400_000).cast(DataType::Int64).alias("fetched_at"),
                    lit(night as f64).alias("number_seen"),
                ])
                .with_column(
                    when(col("field").eq(lit(SEEN))).then(col("number_seen")).otherwise(col("number")).alias("number"),
                )
                .select(STATE_COLUMNS.map(col))
        };
        let sorted = |frames: Vec<LazyFrame>| {
            concat(frames, UnionArgs::default()).unwrap().sort(["domain"], Default::default()).collect().unwrap()
        };
        let old = sorted(vec![same(1), night_rows(&["d.com"], 1), night_rows(&["f.com"], 1)]);
        let new = sorted(vec![same(2), night_rows(&["d.com"], 2), night_rows(&["e.com"], 2)]);
        // Stored digests are the ones computed from the items.
        let digested = with_digests(new.clone()).unwrap();
        assert_eq!(digested.column(DIGEST).unwrap().null_count(), 0);
        let (stored, computed) = (Runs::of(&digested).unwrap().runs, Runs::of(&new).unwrap().runs);
        assert_eq!(stored, computed);
        assert_eq!(stored.len(), 5);
        let distinct: std::collections::BTreeSet<u64> = stored.iter().map(|r| r.3).collect();
        // d and e hold the same item (the domain is not hashed): their digests are alike,
        // and domains are still compared by name.
        assert_eq!(distinct.len(), 4, "{stored:?}");

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, state: &DataFrame, digests: bool| {
            let path = dir.path().join(name);
            let mut writer = crate::transform::SliceWriter::new(&path);
            let mut state = state.clone();
            if digests {
                writer = writer.with_metadata(STATE_DIGEST, DIGEST_VERSION);
                state = with_digests(state).unwrap();
            }
            writer.write(&state_for_storage(&state).unwrap()).unwrap();
            writer.finish().unwrap();
            StateFile::new(Bytes::from(std::fs::read(&path).unwrap())).unwrap()
        };
        let (a, b) = (write("a.parquet", &old, true), write("b.parquet", &new, true));
        assert!(a.digested && b.digested);
        let all = DomainRange::all();
        let (x, y) = between(&a, &b, &all).unwrap().expect("domains differ");
        assert_eq!(
            (domains(&x), domains(&y)),
            (vec!["d.com".to_string(), "f.com".into()], vec!["d.com".into(), "e.com".into()])
        );
        assert_eq!((x.height(), y.height()), (4, 4), "every row of those domains");
        // The same domains as comparing both states whole, by hashing their items.
        let (p, q) = differing(
            read_state(&a.bytes, &all).unwrap().collect().unwrap(),
            read_state(&b.bytes, &all).unwrap().collect().unwrap(),
        )
        .unwrap();
        assert_eq!((domains(&p), domains(&q)), (domains(&x), domains(&y)));
        // A range: only its domains.
        let range = DomainRange { lo: Some("e.com".into()), hi: None };
        let (x, y) = between(&a, &b, &range).unwrap().expect("e and f");
        assert_eq!((domains(&x), domains(&y)), (vec!["f.com".to_string()], vec!["e.com".to_string()]));
        // Two states alike: nothing to read.
        assert!(between(&b, &b, &all).unwrap().is_none());
        // A file that says it has digests but holds a null among them: read whole.
        let mut odd = with_digests(old.clone()).unwrap();
        let mut digests: Vec<Option<i64>> = odd.column(DIGEST).unwrap().i64().unwrap().iter().collect();
        digests[0] = None;
        odd.with_column(Column::new(DIGEST.into(), digests)).unwrap();
        let path = dir.path().join("odd.parquet");
        let mut writer = crate::transform::SliceWriter::new(&path).with_metadata(STATE_DIGEST, DIGEST_VERSION);
        writer.write(&state_for_storage(&odd).unwrap()).unwrap();
        writer.finish().unwrap();
        let odd = StateFile::new(Bytes::from(std::fs::read(&path).unwrap())).unwrap();
        assert!(odd.digested);
        let (x, y) = between(&odd, &b, &all).unwrap().expect("read whole");
        assert_eq!((x.height(), y.height()), (old.height(), new.height()));
        // A state stored before the digests: read whole, compared by hashing.
        let older = write("older.parquet", &old, false);
        assert!(!older.digested);
        let (x, y) = between(&older, &b, &all).unwrap().expect("read whole");
        assert_eq!((x.height(), y.height()), (old.height(), new.height()));
        let (p, q) = differing(x, y).unwrap();
        assert_eq!(
            (domains(&p), domains(&q)),
            (vec!["d.com".to_string(), "f.com".into()], vec!["d.com".into(), "e.com".into()])
        );
    }

    /// A state's rows for `domains`: a tracked value and a marker each, as of `night`.
    fn night_rows(domains: &[&str], night: i64) -> LazyFrame {
        let n = domains.len();
        let twice: Vec<&str> = domains.iter().flat_map(|d| [*d, *d]).collect();
        df!(
            "domain" => twice,
            "field" => (0..n).flat_map(|_| ["monthly_visits", SEEN]).collect::<Vec<_>>(),
            "key" => (0..n).flat_map(|_| ["", "m03"]).collect::<Vec<_>>(),
            "value" => vec![None::<String>; 2 * n],
            "number" => (0..n).flat_map(|i| [Some((i as i64 * 10 + night) as f64), Some(night as f64)]).collect::<Vec<_>>(),
            "since" => vec![None::<i64>; 2 * n],
            "module" => vec!["m03"; 2 * n],
            "source" => vec![Some("similarweb"); 2 * n],
            "fetched_at" => vec![Some(night * 86_400_000); 2 * n],
            "absent" => vec![0i64; 2 * n],
            "pending" => vec![None::<String>; 2 * n],
            "pending_count" => vec![0i64; 2 * n],
        )
        .unwrap()
        .lazy()
    }

    /// Observations of one night: (domain, field, key, value), all of module m02 for `d.com`.
    fn night(items: &[(&str, &str, &str)], fetched_at: i64, date_ms: i64) -> LazyFrame {
        let n = items.len();
        let items = df!(
            "domain" => vec!["d.com"; n],
            "field" => items.iter().map(|i| i.0).collect::<Vec<_>>(),
            "key" => items.iter().map(|i| i.1).collect::<Vec<_>>(),
            "value" => items.iter().map(|i| Some(i.2)).collect::<Vec<_>>(),
            "number" => vec![None::<f64>; n],
            "since" => vec![None::<i64>; n],
            "module" => vec!["m02"; n],
            "source" => vec![Some("builtwith"); n],
            "fetched_at" => vec![Some(fetched_at); n],
            "absent" => vec![0i64; n],
            "pending" => vec![None::<String>; n],
            "pending_count" => vec![0i64; n],
        )
        .unwrap();
        let seen = df!(
            "domain" => ["d.com"], "field" => [SEEN], "key" => ["m02"], "value" => [None::<String>],
            "number" => [Some(date_ms as f64)], "since" => [None::<i64>], "module" => ["m02"],
            "source" => [None::<String>], "fetched_at" => [Some(fetched_at)], "absent" => [0i64],
            "pending" => [None::<String>], "pending_count" => [0i64],
        )
        .unwrap();
        concat([items.lazy(), seen.lazy()], UnionArgs::default()).unwrap()
    }

    fn rules(text: &str) -> ChangeRules {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes.toml");
        std::fs::write(&path, text).unwrap();
        ChangeRules::load(&path, &field_kinds()).unwrap()
    }

    const RULES: &str = r#"
version = 1
confirm_removals = 2
[confirm_changes]
executives = 2
[[rules]]
id = "tech_removed"
field = "technologies"
condition = "removed"
category = "tech"
significance = "low"
summary = "removed {item}"
[[rules]]
id = "exec_changed"
field = "executives"
condition = "changed"
category = "exec"
significance = "high"
summary = "new {item}: {old} → {new}"
"#;

    /// (rule, item, old, new) of an event.
    type Seen = (String, Option<String>, Option<String>, Option<String>);

    /// Runs the nights one after another; the events of each night's diff.
    fn run(nights: &[Vec<(&str, &str, &str)>]) -> Vec<Vec<Seen>> {
        let rules = rules(RULES);
        let mut state = empty_state().unwrap().collect().unwrap();
        let mut out = Vec::new();
        for (i, items) in nights.iter().enumerate() {
            let day = i as i64 * 86_400_000;
            let next = next_state(state.clone().lazy(), night(items, day + 1, day), &rules).unwrap().collect().unwrap();
            let events = events(state.clone().lazy(), next.clone().lazy(), &rules, "a", "b").unwrap();
            out.push(events.into_iter().map(|e| (e.rule, e.item, e.old_value, e.new_value)).collect());
            state = next;
        }
        out
    }

    #[test]
    fn a_flap_is_no_change_and_a_lasting_removal_is_reported_once() {
        let both = vec![("technologies", "Coveo", "widgets"), ("technologies", "jQuery", "js")];
        let one = vec![("technologies", "jQuery", "js")];
        let events = run(&[both.clone(), one.clone(), both.clone(), one.clone(), one.clone(), one.clone()]);
        let removed = |i: usize| events[i].iter().filter(|e| e.0 == "tech_removed").count();
        assert_eq!([removed(1), removed(2), removed(3), removed(4), removed(5)], [0, 0, 0, 1, 0]);
        assert_eq!(events[4][0].1.as_deref(), Some("Coveo"));
    }

    #[test]
    fn a_changed_value_waits_for_its_confirmation() {
        let cfo = |name| vec![("executives", "CFO", name)];
        let events = run(&[cfo("Ann"), cfo("Bob"), cfo("Ann"), cfo("Cy"), cfo("Cy"), cfo("Cy")]);
        // Bob is seen once and Ann is back: nothing. Cy twice in a row: one change, Ann → Cy.
        assert!(events[1].is_empty() && events[2].is_empty() && events[3].is_empty(), "{events:?}");
        assert_eq!(
            events[4],
            [("exec_changed".to_string(), Some("CFO".into()), Some("Ann".into()), Some("Cy".into()))]
        );
        assert!(events[5].is_empty());
    }

    /// A state's rows: (domain, field, key, value, fetched_at).
    fn state(rows: &[(&str, &str, &str, &str, i64)]) -> DataFrame {
        let n = rows.len();
        df!(
            "domain" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "field" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "key" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "value" => rows.iter().map(|r| Some(r.3)).collect::<Vec<_>>(),
            "number" => vec![None::<f64>; n],
            "fetched_at" => rows.iter().map(|r| Some(r.4)).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn domains(df: &DataFrame) -> Vec<String> {
        let mut out: Vec<String> =
            df.column("domain").unwrap().str().unwrap().iter().flatten().map(String::from).collect();
        out.dedup();
        out
    }

    #[test]
    fn only_domains_whose_items_differ_are_compared() {
        let old = state(&[
            ("a.com", SEEN, "m02", "", 1),
            ("a.com", "technology", "Shopify", "live", 1),
            ("a.com", "technology", "Klevu", "live", 1),
            ("b.com", "technology", "Klevu", "live", 1),
            ("c.com", "exec", "CFO", "Ann", 1),
            ("d.com", "technology", "Klevu", "live", 1),
        ]);
        // a.com: fetched again, its items in another order (no change); b.com: a value
        // changed; c.com: gone; d.com: one more item; e.com: new.
        let new = state(&[
            ("a.com", "technology", "Klevu", "live", 2),
            ("a.com", SEEN, "m02", "", 2),
            ("a.com", "technology", "Shopify", "live", 2),
            ("b.com", "technology", "Klevu", "dead", 2),
            ("d.com", "technology", "Klevu", "live", 2),
            ("d.com", "technology", "Algolia", "live", 2),
            ("e.com", "technology", "Algolia", "live", 2),
        ]);
        let (o, n) = differing(old.clone(), new.clone()).unwrap();
        assert_eq!(domains(&o), ["b.com", "c.com", "d.com"]);
        assert_eq!(domains(&n), ["b.com", "d.com", "e.com"]);
        assert_eq!((o.height(), n.height()), (3, 4), "a kept domain keeps all its rows");
        // Not grouped by domain: the same domains (a.com's rows apart, and unchanged).
        let order = IdxCa::from_vec("row".into(), vec![0, 5, 1, 6, 3, 2, 4]);
        let shuffled = new.take(&order).unwrap();
        let (o, n) = differing(old, shuffled).unwrap();
        assert_eq!(domains(&o), ["b.com", "c.com", "d.com"]);
        let mut kept = domains(&n);
        kept.sort();
        kept.dedup();
        assert_eq!(kept, ["b.com", "d.com", "e.com"]);
        assert_eq!(n.height(), 4);
    }
}
