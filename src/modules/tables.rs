//! The normalized tables the modules fill, and their Parquet schemas.
//! Every row carries its `source` and `fetched_at` (data trust: every value
//! says where it came from and when).

use crate::providers::builtwith::CompanyMeta;
use crate::providers::yahoo::Figures;
use crate::store::StoreError;
use crate::store::table::TableBuilder;
use arrow::record_batch::RecordBatch;

#[derive(Debug, Clone, PartialEq)]
pub struct CompanyRow {
    pub domain: String,
    pub meta: CompanyMeta,
    /// The domain the site has moved to, when BuiltWith answered for another root domain.
    pub redirects_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TechRow {
    pub domain: String,
    pub technology: String,
    pub tag: Option<String>,
    pub categories: Option<String>,
    pub first_detected_ms: Option<i64>,
    pub last_detected_ms: Option<i64>,
    pub live: bool,
    pub is_search_vendor: bool,
    pub is_partner_tech: bool,
    /// `builtwith`, or `similarweb` when its technologies stood in.
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpendRow {
    pub domain: String,
    pub monthly_spend_usd: Option<f64>,
    /// Per year: 12 × the monthly estimate.
    pub tech_spend: Option<f64>,
    /// The live search vendor, if any (most recently detected first).
    pub current_search: Option<String>,
    /// The first live partner technology, in the pipeline's order of preference.
    pub partner_tech_detected: Option<String>,
    pub runs_algolia: bool,
    pub source: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrafficRow {
    pub domain: String,
    pub month: String,
    pub monthly_visits: Option<f64>,
    pub visits_growth_mom: Option<f64>,
    pub bounce_rate: Option<f64>,
    pub pages_per_visit: Option<f64>,
    pub avg_visit_duration: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSourcesRow {
    pub domain: String,
    pub month: String,
    pub search_traffic_pct: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FinancialsRow {
    pub domain: String,
    pub ticker: String,
    pub figures: Figures,
    pub exec_name: Option<String>,
    pub exec_title: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutiveRow {
    pub domain: String,
    pub ticker: String,
    pub name: String,
    pub title: String,
    /// CEO, CFO, CTO, CDO, COO or CMO, read from the title.
    pub role: Option<&'static str>,
    /// A divisional role ("CEO of Commercial Business").
    pub divisional: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnnualRow {
    pub domain: String,
    pub ticker: String,
    pub fiscal_year_end: String,
    pub revenue: f64,
    pub gross_margin: Option<f64>,
    pub operating_margin: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StockRow {
    pub domain: String,
    pub ticker: String,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub market_cap: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecommendationRow {
    pub domain: String,
    pub ticker: String,
    pub strong_buy: i64,
    pub buy: i64,
    pub hold: i64,
    pub sell: i64,
    pub strong_sell: i64,
    pub mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HiringRow {
    pub domain: String,
    pub platform: &'static str,
    pub board: String,
    pub open_roles: i64,
    pub search_roles: i64,
    pub ecommerce_roles: i64,
    pub personalization_roles: i64,
    pub leadership_roles: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostingRow {
    pub domain: String,
    pub platform: &'static str,
    pub title: String,
    pub location: Option<String>,
    pub posted_at: Option<chrono::NaiveDate>,
    pub url: Option<String>,
    /// The hiring categories the title matched, e.g. "search,leadership".
    pub signals: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRow {
    pub domain: String,
    pub name: String,
    pub title: Option<String>,
    pub quote: String,
    pub published: Option<chrono::NaiveDate>,
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRow {
    pub domain: String,
    pub event_type: String,
    /// The phrase that matched.
    pub matched: String,
    pub headline: String,
    pub published: Option<chrono::NaiveDate>,
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompetitorRow {
    pub domain: String,
    pub competitor: String,
    pub score: f64,
    /// The competitor is on the customer list: it already runs Algolia.
    pub uses_algolia: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelatedRow {
    pub domain: String,
    pub related: String,
    pub via: String,
    pub identifier: String,
    /// When BuiltWith first and last saw the identifier shared (epoch ms).
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
}

/// What BuiltWith's Free API said of a domain before its paid lookup (m00), and what
/// the run made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FreeCheckRow {
    pub domain: String,
    /// Whether BuiltWith knows the domain at all.
    pub known: bool,
    /// The groups that matter, `cms 1/0; shop 0/0; widgets 2/1` (live/dead counts).
    pub signature: Option<String>,
    /// The same at the last full lookup, when it was checked then.
    pub signature_at_lookup: Option<String>,
    /// The date of the last full (paid) lookup.
    pub looked_up_on: Option<chrono::NaiveDate>,
    /// `unknown` (not looked up: BuiltWith does not know the domain), `unchanged` (the
    /// last lookup's results kept), or why the paid lookup is made: `new`, `changed`,
    /// `expired` (the last lookup is too old), `unsigned` (no check at the last lookup).
    pub verdict: &'static str,
}

/// A (module, domain) that was fetched and read: the record freshness is judged by.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchRow {
    pub module: &'static str,
    pub domain: String,
    /// The run date it was fetched for; freshness counts days from it.
    pub fetched_on: chrono::NaiveDate,
    /// `ok`, or `no_data` when the provider knows nothing of the domain.
    pub outcome: &'static str,
}

/// A provider body as received, kept with the snapshot for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    pub provider: &'static str,
    pub endpoint: &'static str,
    pub domain: String,
    pub modules: String,
    pub http_status: Option<u16>,
    pub fetched_at_ms: i64,
    pub body: String,
    /// The page of a paged answer it is (1 for every other call).
    pub page: u32,
}

/// Rows by table, plus the module outcomes per (module, domain).
#[derive(Debug, Default)]
pub struct Tables {
    pub company: Vec<CompanyRow>,
    pub tech_stack: Vec<TechRow>,
    pub tech_spend: Vec<SpendRow>,
    pub traffic: Vec<TrafficRow>,
    pub traffic_sources: Vec<TrafficSourcesRow>,
    pub financials: Vec<FinancialsRow>,
    pub executives: Vec<ExecutiveRow>,
    pub financial_history: Vec<AnnualRow>,
    pub stock: Vec<StockRow>,
    pub analyst_recommendations: Vec<RecommendationRow>,
    pub hiring: Vec<HiringRow>,
    pub job_postings: Vec<PostingRow>,
    pub competitors: Vec<CompetitorRow>,
    pub related_domains: Vec<RelatedRow>,
    pub executive_quotes: Vec<QuoteRow>,
    pub trigger_events: Vec<TriggerRow>,
    pub builtwith_free: Vec<FreeCheckRow>,
    pub fetches: Vec<FetchRow>,
    pub raw: Vec<RawRow>,
}

/// Adds `source` (one per row), `fetched_at` and `snapshot_id`.
fn stamped(builder: TableBuilder, sources: Vec<&str>, fetched_at_ms: i64, snapshot_id: &str) -> TableBuilder {
    let n = sources.len();
    builder
        .text("source", sources.into_iter().map(Some))
        .timestamp_ms("fetched_at", std::iter::repeat_n(Some(fetched_at_ms), n))
        .text("snapshot_id", std::iter::repeat_n(Some(snapshot_id), n))
}

impl Tables {
    /// Encodes every normalized table as an Arrow batch, by table name.
    pub fn batches(
        &self,
        fetched_at_ms: i64,
        snapshot_id: &str,
    ) -> Result<Vec<(&'static str, RecordBatch)>, StoreError> {
        let stamp = |b, n, source| stamped(b, vec![source; n], fetched_at_ms, snapshot_id);
        let stamp_each = |b, sources| stamped(b, sources, fetched_at_ms, snapshot_id);
        let c = &self.company;
        let company = stamp(
            TableBuilder::new()
                .text("domain", c.iter().map(|r| Some(&r.domain)))
                .text("company_name", c.iter().map(|r| r.meta.company_name.as_ref()))
                .text("vertical", c.iter().map(|r| r.meta.vertical.as_ref()))
                .text("country", c.iter().map(|r| r.meta.country.as_ref()))
                .text("city", c.iter().map(|r| r.meta.city.as_ref()))
                .text("state", c.iter().map(|r| r.meta.state.as_ref()))
                .int("employees", c.iter().map(|r| r.meta.employees))
                .text("emails", c.iter().map(|r| Some(r.meta.emails.join("; ")).filter(|e| !e.is_empty())))
                .text("telephones", c.iter().map(|r| Some(r.meta.telephones.join("; ")).filter(|e| !e.is_empty())))
                .text("socials", c.iter().map(|r| Some(r.meta.socials.join("; ")).filter(|e| !e.is_empty())))
                .text("redirects_to", c.iter().map(|r| r.redirects_to.as_ref())),
            c.len(),
            "builtwith",
        )
        .finish()?;
        let t = &self.tech_stack;
        let tech_stack = stamp_each(
            TableBuilder::new()
                .text("domain", t.iter().map(|r| Some(&r.domain)))
                .text("technology", t.iter().map(|r| Some(&r.technology)))
                .text("tag", t.iter().map(|r| r.tag.as_ref()))
                .text("categories", t.iter().map(|r| r.categories.as_ref()))
                .timestamp_ms("first_detected", t.iter().map(|r| r.first_detected_ms))
                .timestamp_ms("last_detected", t.iter().map(|r| r.last_detected_ms))
                .boolean("live", t.iter().map(|r| Some(r.live)))
                .boolean("is_search_vendor", t.iter().map(|r| Some(r.is_search_vendor)))
                .boolean("is_partner_tech", t.iter().map(|r| Some(r.is_partner_tech))),
            t.iter().map(|r| r.source).collect(),
        )
        .finish()?;
        let s = &self.tech_spend;
        let tech_spend = stamp_each(
            TableBuilder::new()
                .text("domain", s.iter().map(|r| Some(&r.domain)))
                .float("monthly_spend_usd", s.iter().map(|r| r.monthly_spend_usd))
                .float("tech_spend", s.iter().map(|r| r.tech_spend))
                .text("current_search", s.iter().map(|r| r.current_search.as_ref()))
                .text("partner_tech_detected", s.iter().map(|r| r.partner_tech_detected.as_ref()))
                .boolean("runs_algolia", s.iter().map(|r| Some(r.runs_algolia))),
            s.iter().map(|r| r.source).collect(),
        )
        .finish()?;
        let tr = &self.traffic;
        let traffic = stamp(
            TableBuilder::new()
                .text("domain", tr.iter().map(|r| Some(&r.domain)))
                .text("month", tr.iter().map(|r| Some(&r.month)))
                .float("monthly_visits", tr.iter().map(|r| r.monthly_visits))
                .float("visits_growth_mom", tr.iter().map(|r| r.visits_growth_mom))
                .float("bounce_rate", tr.iter().map(|r| r.bounce_rate))
                .float("pages_per_visit", tr.iter().map(|r| r.pages_per_visit))
                .float("avg_visit_duration", tr.iter().map(|r| r.avg_visit_duration)),
            tr.len(),
            "similarweb",
        )
        .finish()?;
        let ts = &self.traffic_sources;
        let traffic_sources = stamp(
            TableBuilder::new()
                .text("domain", ts.iter().map(|r| Some(&r.domain)))
                .text("month", ts.iter().map(|r| Some(&r.month)))
                .float("search_traffic_pct", ts.iter().map(|r| Some(r.search_traffic_pct))),
            ts.len(),
            "similarweb",
        )
        .finish()?;
        let f = &self.financials;
        let financials = stamp(
            TableBuilder::new()
                .text("domain", f.iter().map(|r| Some(&r.domain)))
                .text("ticker", f.iter().map(|r| Some(&r.ticker)))
                .text("currency", f.iter().map(|r| r.figures.currency.as_ref()))
                .float("revenue", f.iter().map(|r| r.figures.revenue))
                .float("gross_margin", f.iter().map(|r| r.figures.gross_margin))
                .float("revenue_growth", f.iter().map(|r| r.figures.revenue_growth))
                .float("market_cap", f.iter().map(|r| r.figures.market_cap))
                .text("sector", f.iter().map(|r| r.figures.sector.as_ref()))
                .text("industry", f.iter().map(|r| r.figures.industry.as_ref()))
                .int("employees", f.iter().map(|r| r.figures.employees))
                .text("country", f.iter().map(|r| r.figures.country.as_ref()))
                .text("exec_name", f.iter().map(|r| r.exec_name.as_ref()))
                .text("exec_title", f.iter().map(|r| r.exec_title.as_ref())),
            f.len(),
            "yahoo_finance",
        )
        .finish()?;
        let e = &self.executives;
        let executives = stamp(
            TableBuilder::new()
                .text("domain", e.iter().map(|r| Some(&r.domain)))
                .text("ticker", e.iter().map(|r| Some(&r.ticker)))
                .text("name", e.iter().map(|r| Some(&r.name)))
                .text("title", e.iter().map(|r| Some(&r.title)))
                .text("role", e.iter().map(|r| r.role))
                .boolean("divisional", e.iter().map(|r| Some(r.divisional))),
            e.len(),
            "yahoo_finance",
        )
        .finish()?;
        let h = &self.financial_history;
        let financial_history = stamp(
            TableBuilder::new()
                .text("domain", h.iter().map(|r| Some(&r.domain)))
                .text("ticker", h.iter().map(|r| Some(&r.ticker)))
                .text("fiscal_year_end", h.iter().map(|r| Some(&r.fiscal_year_end)))
                .float("revenue", h.iter().map(|r| Some(r.revenue)))
                .float("gross_margin", h.iter().map(|r| r.gross_margin))
                .float("operating_margin", h.iter().map(|r| r.operating_margin)),
            h.len(),
            "yahoo_finance",
        )
        .finish()?;
        let st = &self.stock;
        let stock = stamp(
            TableBuilder::new()
                .text("domain", st.iter().map(|r| Some(&r.domain)))
                .text("ticker", st.iter().map(|r| Some(&r.ticker)))
                .float("price", st.iter().map(|r| r.price))
                .text("currency", st.iter().map(|r| r.currency.as_ref()))
                .float("market_cap", st.iter().map(|r| r.market_cap)),
            st.len(),
            "yahoo_finance",
        )
        .finish()?;
        let a = &self.analyst_recommendations;
        let analyst_recommendations = stamp(
            TableBuilder::new()
                .text("domain", a.iter().map(|r| Some(&r.domain)))
                .text("ticker", a.iter().map(|r| Some(&r.ticker)))
                .int("strong_buy", a.iter().map(|r| Some(r.strong_buy)))
                .int("buy", a.iter().map(|r| Some(r.buy)))
                .int("hold", a.iter().map(|r| Some(r.hold)))
                .int("sell", a.iter().map(|r| Some(r.sell)))
                .int("strong_sell", a.iter().map(|r| Some(r.strong_sell)))
                .float("mean", a.iter().map(|r| r.mean)),
            a.len(),
            "yahoo_finance",
        )
        .finish()?;
        let hr = &self.hiring;
        let hiring = TableBuilder::new()
            .text("domain", hr.iter().map(|r| Some(&r.domain)))
            .text("platform", hr.iter().map(|r| Some(r.platform)))
            .text("board", hr.iter().map(|r| Some(&r.board)))
            .int("open_roles", hr.iter().map(|r| Some(r.open_roles)))
            .int("search_roles", hr.iter().map(|r| Some(r.search_roles)))
            .int("ecommerce_roles", hr.iter().map(|r| Some(r.ecommerce_roles)))
            .int("personalization_roles", hr.iter().map(|r| Some(r.personalization_roles)))
            .int("leadership_roles", hr.iter().map(|r| Some(r.leadership_roles)))
            .text("source", hr.iter().map(|r| Some(r.platform)))
            .timestamp_ms("fetched_at", hr.iter().map(|_| Some(fetched_at_ms)))
            .text("snapshot_id", hr.iter().map(|_| Some(snapshot_id)))
            .finish()?;
        let jp = &self.job_postings;
        let job_postings = TableBuilder::new()
            .text("domain", jp.iter().map(|r| Some(&r.domain)))
            .text("platform", jp.iter().map(|r| Some(r.platform)))
            .text("title", jp.iter().map(|r| Some(&r.title)))
            .text("location", jp.iter().map(|r| r.location.as_ref()))
            .date("posted_at", jp.iter().map(|r| r.posted_at))
            .text("url", jp.iter().map(|r| r.url.as_ref()))
            .text("signals", jp.iter().map(|r| r.signals.as_ref()))
            .text("source", jp.iter().map(|r| Some(r.platform)))
            .timestamp_ms("fetched_at", jp.iter().map(|_| Some(fetched_at_ms)))
            .text("snapshot_id", jp.iter().map(|_| Some(snapshot_id)))
            .finish()?;
        let cp = &self.competitors;
        let competitors = stamp(
            TableBuilder::new()
                .text("domain", cp.iter().map(|r| Some(&r.domain)))
                .text("competitor", cp.iter().map(|r| Some(&r.competitor)))
                .float("score", cp.iter().map(|r| Some(r.score)))
                .boolean("uses_algolia", cp.iter().map(|r| Some(r.uses_algolia))),
            cp.len(),
            "similarweb",
        )
        .finish()?;
        let rd = &self.related_domains;
        let related_domains = stamp(
            TableBuilder::new()
                .text("domain", rd.iter().map(|r| Some(&r.domain)))
                .text("related", rd.iter().map(|r| Some(&r.related)))
                .text("via", rd.iter().map(|r| Some(&r.via)))
                .text("identifier", rd.iter().map(|r| Some(&r.identifier)))
                .timestamp_ms("first_seen", rd.iter().map(|r| r.first_seen))
                .timestamp_ms("last_seen", rd.iter().map(|r| r.last_seen)),
            rd.len(),
            "builtwith",
        )
        .finish()?;
        let fc = &self.builtwith_free;
        let builtwith_free = stamp(
            TableBuilder::new()
                .text("domain", fc.iter().map(|r| Some(&r.domain)))
                .boolean("known", fc.iter().map(|r| Some(r.known)))
                .text("signature", fc.iter().map(|r| r.signature.as_ref()))
                .text("signature_at_lookup", fc.iter().map(|r| r.signature_at_lookup.as_ref()))
                .date("looked_up_on", fc.iter().map(|r| r.looked_up_on))
                .text("verdict", fc.iter().map(|r| Some(r.verdict))),
            fc.len(),
            "builtwith",
        )
        .finish()?;
        let q = &self.executive_quotes;
        let executive_quotes = stamp(
            TableBuilder::new()
                .text("domain", q.iter().map(|r| Some(&r.domain)))
                .text("name", q.iter().map(|r| Some(&r.name)))
                .text("title", q.iter().map(|r| r.title.as_ref()))
                .text("quote", q.iter().map(|r| Some(&r.quote)))
                .date("published", q.iter().map(|r| r.published))
                .text("link", q.iter().map(|r| r.link.as_ref())),
            q.len(),
            "news",
        )
        .finish()?;
        let te = &self.trigger_events;
        let trigger_events = stamp(
            TableBuilder::new()
                .text("domain", te.iter().map(|r| Some(&r.domain)))
                .text("event_type", te.iter().map(|r| Some(&r.event_type)))
                .text("matched", te.iter().map(|r| Some(&r.matched)))
                .text("headline", te.iter().map(|r| Some(&r.headline)))
                .date("published", te.iter().map(|r| r.published))
                .text("link", te.iter().map(|r| r.link.as_ref())),
            te.len(),
            "news",
        )
        .finish()?;
        let fr = &self.fetches;
        let fetches = TableBuilder::new()
            .text("module", fr.iter().map(|r| Some(r.module)))
            .text("domain", fr.iter().map(|r| Some(&r.domain)))
            .text("outcome", fr.iter().map(|r| Some(r.outcome)))
            .date("fetched_on", fr.iter().map(|r| Some(r.fetched_on)))
            .timestamp_ms("fetched_at", fr.iter().map(|_| Some(fetched_at_ms)))
            .text("snapshot_id", fr.iter().map(|_| Some(snapshot_id)))
            .finish()?;
        let r = &self.raw;
        let raw = TableBuilder::new()
            .text("provider", r.iter().map(|x| Some(x.provider)))
            .text("endpoint", r.iter().map(|x| Some(x.endpoint)))
            .text("domain", r.iter().map(|x| Some(&x.domain)))
            .text("modules", r.iter().map(|x| Some(&x.modules)))
            .int("http_status", r.iter().map(|x| x.http_status.map(i64::from)))
            .int("page", r.iter().map(|x| Some(i64::from(x.page))))
            .timestamp_ms("fetched_at", r.iter().map(|x| Some(x.fetched_at_ms)))
            .text("body", r.iter().map(|x| Some(&x.body)))
            .text("snapshot_id", r.iter().map(|_| Some(snapshot_id)))
            .finish()?;
        Ok(vec![
            ("company", company),
            ("tech_stack", tech_stack),
            ("tech_spend", tech_spend),
            ("traffic", traffic),
            ("traffic_sources", traffic_sources),
            ("financials", financials),
            ("executives", executives),
            ("financial_history", financial_history),
            ("stock", stock),
            ("analyst_recommendations", analyst_recommendations),
            ("hiring", hiring),
            ("job_postings", job_postings),
            ("competitors", competitors),
            ("related_domains", related_domains),
            ("executive_quotes", executive_quotes),
            ("trigger_events", trigger_events),
            ("builtwith_free", builtwith_free),
            ("fetches", fetches),
            ("raw_responses", raw),
        ])
    }
}
