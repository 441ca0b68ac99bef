//! m07 financials: revenue, margins (three fiscal years), market cap, profile
//! and officers from Yahoo Finance, for targets whose domain maps to a ticker
//! (`tickers.csv`: tickers cannot be searched on Yahoo). m08 and m09 read the
//! same quoteSummary call, which is made once per domain.

use super::tables::{AnnualRow, ExecutiveRow, FinancialsRow};
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, yahoo};

pub const MODULE: Module = Module {
    id: "m07",
    name: "financials",
    provider: ProviderId::YahooFinance,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["financials", "financial_history", "executives"],
    calls,
    normalize,
};

/// The quoteSummary call that m07, m08 and m09 share.
pub(super) fn calls(_: &Context, subject: &Subject) -> Vec<Call> {
    let Some(ticker) = subject.ticker else { return Vec::new() };
    vec![Call::get(
        ProviderId::YahooFinance,
        yahoo::ENDPOINT_QUOTE_SUMMARY,
        subject.domain,
        yahoo::quote_summary_request(ticker),
    )]
}

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let Some(ticker) = subject.ticker else { return };
    for reply in replies {
        let Parsed::Quote(Answer::Data(f)) = reply else { continue };
        let lead = yahoo::lead_executive(&f.officers);
        tables.financials.push(FinancialsRow {
            domain: subject.domain.to_string(),
            ticker: ticker.to_string(),
            figures: f.figures.clone(),
            exec_name: lead.map(|o| o.name.clone()),
            exec_title: lead.map(|o| o.title.clone()),
        });
        for year in &f.annual {
            tables.financial_history.push(AnnualRow {
                domain: subject.domain.to_string(),
                ticker: ticker.to_string(),
                fiscal_year_end: year.end_date.clone(),
                revenue: year.revenue,
                gross_margin: year.gross_margin(),
                operating_margin: year.operating_margin(),
            });
        }
        for officer in &f.officers {
            let role = yahoo::role(&officer.title);
            tables.executives.push(ExecutiveRow {
                domain: subject.domain.to_string(),
                ticker: ticker.to_string(),
                name: officer.name.clone(),
                title: officer.title.clone(),
                role: role.map(|(role, _)| role),
                divisional: role.is_some_and(|(_, divisional)| divisional),
            });
        }
    }
}
