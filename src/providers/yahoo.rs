//! Yahoo Finance `quoteSummary` (`/v10/finance/quoteSummary/{TICKER}?modules=…`).
//!
//! Numbers arrive as `{"raw": …, "fmt": …}`, as bare numbers
//! (`formatted=false`), as `{}` (missing) or not at all; all four are read.
//! Income statements now carry `grossProfit` zeroed and `operatingIncome` as
//! `{}`: a zero there is unknown, never a 0% margin, so the gross margin comes
//! from `financialData.grossMargins`. A 404 envelope is a fact about the
//! company (delisted, no fundamentals), not a failure to retry.

use serde_json::Value;

use super::{Answer, ProviderError, normalize_rate, parse_json, text};

pub const ENDPOINT_QUOTE_SUMMARY: &str = "quote_summary";
pub const MODULES: &str = "financialData,price,summaryDetail,assetProfile,incomeStatementHistory,recommendationTrend";

/// Path and query of a quoteSummary request.
pub fn quote_summary_request(ticker: &str) -> (String, Vec<(&'static str, String)>) {
    (format!("/v10/finance/quoteSummary/{ticker}"), vec![("modules", MODULES.to_string())])
}

/// Where the session's crumb is asked, below the API's base URL.
pub const CRUMB_PATH: &str = "/v1/test/getcrumb";
/// Where the session's cookie comes from (its answer is a 404; its `Set-Cookie` is the point).
pub const COOKIE_URL: &str = "https://fc.yahoo.com";
/// The environment variable naming another cookie URL.
pub const COOKIE_URL_ENV: &str = "YAHOO_COOKIE_URL";
/// Yahoo answers 429 to some libraries' default agents: a desktop browser's.
pub const BROWSER_USER_AGENT: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The session every quoteSummary call needs: the cookie from `cookie_url`, the crumb
/// from `{base}/v1/test/getcrumb` with it, sent as `&crumb=`.
pub fn session(base: &url::Url, cookie_url: url::Url) -> crate::fetch::session::SessionSpec {
    let mut crumb_url = base.clone();
    let base_path = crumb_url.path().trim_end_matches('/').to_string();
    crumb_url.set_path(&format!("{base_path}{CRUMB_PATH}"));
    crate::fetch::session::SessionSpec { cookie_url, crumb_url, crumb_param: "crumb", user_agent: BROWSER_USER_AGENT }
}

/// Yahoo answers a refused session (bad cookie or crumb) with 401: every further
/// call would get the same.
pub fn stop_signal(status: u16, _body: &[u8]) -> Option<crate::fetch::Stop> {
    (status == 401).then_some(crate::fetch::Stop::Auth)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Officer {
    /// Display form: honorific dropped, spaces collapsed.
    pub name: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Financials {
    pub figures: Figures,
    pub officers: Vec<Officer>,
    /// Fiscal years, newest first (at most three).
    pub annual: Vec<AnnualStatement>,
    pub price: Option<f64>,
    /// The current month's analyst recommendations (`period` "0m").
    pub recommendations: Option<Recommendations>,
}

/// One fiscal year's income statement. Yahoo now zeroes `grossProfit` and leaves
/// `operatingIncome` empty: those read as unknown (`None`), never as zero.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnualStatement {
    /// `YYYY-MM-DD`.
    pub end_date: String,
    pub revenue: f64,
    pub gross_profit: Option<f64>,
    pub operating_income: Option<f64>,
}

impl AnnualStatement {
    pub fn gross_margin(&self) -> Option<f64> {
        self.gross_profit.map(|g| g / self.revenue)
    }

    pub fn operating_margin(&self) -> Option<f64> {
        self.operating_income.map(|o| o / self.revenue)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recommendations {
    pub strong_buy: i64,
    pub buy: i64,
    pub hold: i64,
    pub sell: i64,
    pub strong_sell: i64,
}

impl Recommendations {
    /// The mean on Yahoo's scale: 1 strong buy … 5 strong sell; `None` without analysts.
    pub fn mean(&self) -> Option<f64> {
        let n = self.strong_buy + self.buy + self.hold + self.sell + self.strong_sell;
        let sum = self.strong_buy + 2 * self.buy + 3 * self.hold + 4 * self.sell + 5 * self.strong_sell;
        (n > 0).then(|| sum as f64 / n as f64)
    }
}

/// The company's current figures and profile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    pub currency: Option<String>,
    /// Trailing twelve months.
    pub revenue: Option<f64>,
    pub gross_margin: Option<f64>,
    pub revenue_growth: Option<f64>,
    pub market_cap: Option<f64>,
    pub sector: Option<String>,
    pub industry: Option<String>,
    pub employees: Option<i64>,
    /// Where the company is based, as Yahoo names it ("United States").
    pub country: Option<String>,
}

/// `{"raw": x, …}`, a bare number, `{}` or absent → `Some(x)` / `None`.
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) => o.get("raw").and_then(Value::as_f64),
        _ => None,
    }
}

fn date_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Object(o) => text(o.get("fmt")).or_else(|| epoch_date(o.get("raw")?.as_i64()?)),
        Value::Number(n) => epoch_date(n.as_i64()?),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn epoch_date(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0).map(|d| d.format("%Y-%m-%d").to_string())
}

/// `"Mr. Kevan  Parekh"` → `"Kevan Parekh"`.
pub fn display_name(raw: &str) -> String {
    const HONORIFICS: [&str; 7] = ["mr.", "mrs.", "ms.", "dr.", "prof.", "sir", "mx."];
    let mut words: Vec<&str> = raw.split_whitespace().collect();
    while words.len() > 1 && HONORIFICS.contains(&words[0].to_ascii_lowercase().as_str()) {
        words.remove(0);
    }
    words.join(" ")
}

pub fn parse_quote_summary(body: &[u8]) -> Result<Answer<Financials>, ProviderError> {
    let json = parse_json(body)?;
    // A bad crumb answers under "finance", not "quoteSummary".
    if let Some(error) = json.get("finance").and_then(|f| f.get("error")).filter(|e| !e.is_null()) {
        return Err(ProviderError::Api {
            code: text(error.get("code")).unwrap_or_else(|| "?".into()),
            message: text(error.get("description")).unwrap_or_default(),
        });
    }
    let summary = json.get("quoteSummary").ok_or_else(|| ProviderError::Malformed("no quoteSummary".into()))?;
    if let Some(error) = summary.get("error").filter(|e| !e.is_null()) {
        let code = text(error.get("code")).unwrap_or_else(|| "?".into());
        let message = text(error.get("description")).unwrap_or_default();
        if code.eq_ignore_ascii_case("not found") {
            return Ok(Answer::NoData(message));
        }
        return Err(ProviderError::Api { code, message });
    }
    let Some(result) = summary.get("result").and_then(Value::as_array).and_then(|r| r.first()) else {
        return Ok(Answer::NoData("empty result".into()));
    };
    let module = |name: &str| result.get(name).filter(|m| m.is_object());
    let financial = module("financialData");
    let field = |m: Option<&Value>, key: &str| number(m.and_then(|m| m.get(key)));

    let revenue = field(financial, "totalRevenue");
    if let Some(revenue) = revenue.filter(|r| *r < 0.0) {
        return Err(ProviderError::Invalid {
            field: "financialData.totalRevenue".into(),
            message: format!("{revenue} is negative"),
        });
    }
    let mut out = Financials {
        figures: Figures {
            currency: text(financial.and_then(|f| f.get("financialCurrency"))),
            // A zero is "unknown" in today's responses, never a real revenue.
            revenue: revenue.filter(|r| *r > 0.0),
            revenue_growth: field(financial, "revenueGrowth"),
            market_cap: field(module("price"), "marketCap")
                .or_else(|| field(module("summaryDetail"), "marketCap"))
                .filter(|m| *m > 0.0),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(margin) = field(financial, "grossMargins") {
        out.figures.gross_margin = Some(normalize_rate("financialData.grossMargins", margin.abs())?.copysign(margin));
    }
    if let Some(profile) = module("assetProfile") {
        out.figures.sector = text(profile.get("sector"));
        out.figures.industry = text(profile.get("industry"));
        out.figures.employees = profile.get("fullTimeEmployees").and_then(Value::as_i64).filter(|n| *n > 0);
        out.figures.country = text(profile.get("country"));
        if let Some(officers) = profile.get("companyOfficers").and_then(Value::as_array) {
            out.officers = officers
                .iter()
                .filter_map(|o| {
                    let name = display_name(&text(o.get("name"))?);
                    let title =
                        text(o.get("title")).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
                    Some(Officer { name, title })
                })
                .collect();
        }
    }
    if let Some(history) =
        module("incomeStatementHistory").and_then(|m| m.get("incomeStatementHistory")).and_then(Value::as_array)
    {
        out.annual = history
            .iter()
            .filter_map(|s| {
                Some(AnnualStatement {
                    end_date: date_text(s.get("endDate"))?,
                    revenue: number(s.get("totalRevenue")).filter(|r| *r > 0.0)?,
                    // Zero means "not given" in today's responses.
                    gross_profit: number(s.get("grossProfit")).filter(|g| *g != 0.0),
                    operating_income: number(s.get("operatingIncome")).filter(|o| *o != 0.0),
                })
            })
            .take(3)
            .collect();
    }
    out.price = field(module("price"), "regularMarketPrice").filter(|p| *p > 0.0);
    if let Some(trend) = module("recommendationTrend").and_then(|m| m.get("trend")).and_then(Value::as_array) {
        out.recommendations = trend.iter().find(|t| t.get("period").and_then(Value::as_str) == Some("0m")).map(|t| {
            let count = |key: &str| number(t.get(key)).map(|n| n as i64).unwrap_or(0);
            Recommendations {
                strong_buy: count("strongBuy"),
                buy: count("buy"),
                hold: count("hold"),
                sell: count("sell"),
                strong_sell: count("strongSell"),
            }
        });
    }
    Ok(Answer::Data(out))
}

/// The C-level roles an officer's free-text title is read for.
const ROLES: [(&str, &str); 6] = [
    ("CEO", "chief executive officer"),
    ("CFO", "chief financial officer"),
    ("CTO", "chief technology officer"),
    ("CDO", "chief digital officer"),
    ("COO", "chief operating officer"),
    ("CMO", "chief marketing officer"),
];

/// An officer's C-level role from a title such as "Senior VP & CFO", matched on
/// word boundaries, and whether it is divisional ("Executive VP & CEO of
/// Commercial Business"). The first role in the title wins.
pub fn role(title: &str) -> Option<(&'static str, bool)> {
    let lower = title.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str, bool)> = None;
    for (abbreviation, long) in ROLES {
        for form in [abbreviation.to_ascii_lowercase(), long.to_string()] {
            let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
            let found = lower
                .match_indices(&form)
                .find(|(i, m)| boundary(lower[..*i].chars().last()) && boundary(lower[i + m.len()..].chars().next()));
            if let Some((i, m)) = found {
                let divisional = lower[i + m.len()..].trim_start().starts_with("of ");
                if best.is_none_or(|(b, _, _)| i < b) {
                    best = Some((i, abbreviation, divisional));
                }
            }
        }
    }
    best.map(|(_, role, divisional)| (role, divisional))
}

/// The officer to show for an account: the plain CEO (not a divisional "CEO of …"),
/// then any CEO, then the first officer listed.
pub fn lead_executive(officers: &[Officer]) -> Option<&Officer> {
    let ceo = |o: &&Officer| role(&o.title).map(|(r, divisional)| (r == "CEO", divisional));
    officers
        .iter()
        .find(|o| ceo(o) == Some((true, false)))
        .or_else(|| officers.iter().find(|o| ceo(o).is_some_and(|(is_ceo, _)| is_ceo)))
        .or_else(|| officers.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(body: &str) -> Financials {
        match parse_quote_summary(body.as_bytes()).unwrap() {
            Answer::Data(f) => f,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn reads_wrapped_bare_and_missing_numbers() {
        let f = data(
            r#"{"quoteSummary":{"result":[{
              "financialData":{"maxAge":86400,"totalRevenue":{"raw":318272995328,"fmt":"318.27B","longFmt":"318,272,995,328"},
                 "grossMargins":{"raw":0.68309,"fmt":"68.31%"},"revenueGrowth":{},"financialCurrency":"USD"},
              "price":{"maxAge":1,"marketCap":3100000000000},
              "assetProfile":{"sector":"Technology","industry":"Software","fullTimeEmployees":228000,
                 "companyOfficers":[{"maxAge":1,"name":"Mr. Bradford L.  Smith","title":"Vice Chair & President","fiscalYear":2024},
                                    {"maxAge":1,"name":"Ms. Amy E. Hood","title":"Executive VP & CFO","fiscalYear":2024},
                                    {"maxAge":1,"name":"Ms. Judson  Althoff","title":"Executive VP & CEO of Commercial Business"},
                                    {"maxAge":1,"name":"Mr. Satya  Nadella","title":"Chairman & CEO","age":57}]},
              "incomeStatementHistory":{"incomeStatementHistory":[
                 {"endDate":{"raw":1719705600,"fmt":"2024-06-30"},"totalRevenue":{"raw":245122000000,"fmt":"245.12B"},
                  "grossProfit":{"raw":0,"fmt":null},"operatingIncome":{}},
                 {"endDate":{"raw":1688083200,"fmt":"2023-06-30"},"totalRevenue":{"raw":211915000000,"fmt":"211.92B"}}]}}],
              "error":null}}"#,
        );
        assert_eq!(f.figures.revenue, Some(318272995328.0));
        assert_eq!(f.figures.gross_margin, Some(0.68309));
        assert_eq!(f.figures.revenue_growth, None, "{{}} is missing");
        assert_eq!(f.figures.market_cap, Some(3.1e12), "bare number");
        assert_eq!(f.figures.currency.as_deref(), Some("USD"));
        assert_eq!(f.figures.employees, Some(228000));
        assert_eq!(f.officers[0].name, "Bradford L. Smith");
        let years: Vec<(&str, f64)> = f.annual.iter().map(|a| (a.end_date.as_str(), a.revenue)).collect();
        assert_eq!(years, [("2024-06-30", 245122000000.0), ("2023-06-30", 211915000000.0)]);
        assert_eq!(f.annual[0].gross_margin(), None, "a zeroed grossProfit is unknown, not a 0% margin");
        assert_eq!(f.annual[0].operating_margin(), None, "{{}} is unknown");
        assert_eq!(f.price, None);
        let ceo = lead_executive(&f.officers).unwrap();
        assert_eq!(
            (ceo.name.as_str(), ceo.title.as_str()),
            ("Satya Nadella", "Chairman & CEO"),
            "plain CEO beats divisional"
        );
    }

    #[test]
    fn price_recommendations_and_known_margins() {
        let f = data(
            r#"{"quoteSummary":{"result":[{
              "price":{"maxAge":1,"regularMarketPrice":{"raw":412.5,"fmt":"412.50"}},
              "recommendationTrend":{"maxAge":86400,"trend":[
                 {"period":"0m","strongBuy":10,"buy":20,"hold":10,"sell":0,"strongSell":0},
                 {"period":"-1m","strongBuy":1,"buy":1,"hold":1,"sell":1,"strongSell":1}]},
              "incomeStatementHistory":{"incomeStatementHistory":[
                 {"endDate":{"raw":1719705600,"fmt":"2024-06-30"},"totalRevenue":{"raw":1000},
                  "grossProfit":{"raw":600},"operatingIncome":{"raw":250}}]}}],"error":null}}"#,
        );
        assert_eq!(f.price, Some(412.5));
        let r = f.recommendations.unwrap();
        assert_eq!((r.strong_buy, r.buy, r.hold), (10, 20, 10));
        assert_eq!(r.mean(), Some(2.0));
        assert_eq!(f.annual[0].gross_margin(), Some(0.6));
        assert_eq!(f.annual[0].operating_margin(), Some(0.25));
    }

    #[test]
    fn not_found_is_a_fact() {
        let body = r#"{"quoteSummary":{"result":null,"error":{"code":"Not Found","description":"No fundamentals data found for any of the summaryTypes=financialData"}}}"#;
        assert!(matches!(parse_quote_summary(body.as_bytes()), Ok(Answer::NoData(_))));
        assert!(matches!(
            parse_quote_summary(br#"{"quoteSummary":{"result":[],"error":null}}"#),
            Ok(Answer::NoData(_))
        ));
    }

    #[test]
    fn a_bad_crumb_is_an_error_under_finance() {
        let body = br#"{"finance":{"result":null,"error":{"code":"Unauthorized","description":"Invalid Crumb"}}}"#;
        assert!(matches!(parse_quote_summary(body), Err(ProviderError::Api { .. })));
    }

    #[test]
    fn missing_modules_are_left_out_not_errors() {
        let f = data(r#"{"quoteSummary":{"result":[{"price":{"maxAge":1}}],"error":null}}"#);
        assert_eq!(f, Financials::default());
    }

    #[test]
    fn negative_revenue_is_invalid_and_zero_is_unknown() {
        let body =
            br#"{"quoteSummary":{"result":[{"financialData":{"totalRevenue":{"raw":-5,"fmt":"-5"}}}],"error":null}}"#;
        let err = parse_quote_summary(body).unwrap_err();
        assert!(err.to_string().contains("financialData.totalRevenue"), "{err}");
        let f = data(
            r#"{"quoteSummary":{"result":[{"financialData":{"totalRevenue":{"raw":0,"fmt":null}}}],"error":null}}"#,
        );
        assert_eq!(f.figures.revenue, None);
    }

    #[test]
    fn margins_given_as_percent_are_normalized() {
        let f = data(r#"{"quoteSummary":{"result":[{"financialData":{"grossMargins":42.5}}],"error":null}}"#);
        assert_eq!(f.figures.gross_margin, Some(0.425));
    }

    #[test]
    fn roles_are_read_from_abbreviated_titles() {
        assert_eq!(role("Senior VP & CFO"), Some(("CFO", false)));
        assert_eq!(role("Executive VP & CEO of Commercial Business"), Some(("CEO", true)));
        assert_eq!(role("Chairman & CEO"), Some(("CEO", false)));
        assert_eq!(role("CTO & Corporate VP of Technology"), Some(("CTO", false)));
        assert_eq!(role("Chief Digital Officer"), Some(("CDO", false)));
        assert_eq!(role("Director of Coordination"), None, "no role hides inside a word");
        assert_eq!(role("Vice Chair & President"), None);
    }

    #[test]
    fn names_lose_honorifics_and_double_spaces() {
        assert_eq!(display_name("Mr. Kevan  Parekh"), "Kevan Parekh");
        assert_eq!(display_name("Dr.  Lisa T. Su"), "Lisa T. Su");
        assert_eq!(display_name("Sir"), "Sir");
    }
}
