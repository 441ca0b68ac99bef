//! m08 stock: share price and market capitalisation, from the quoteSummary call
//! m07 makes (one call per domain feeds both).

use super::tables::StockRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::providers::Answer;

pub const MODULE: Module = Module {
    id: "m08",
    name: "stock",
    provider: ProviderId::YahooFinance,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["stock"],
    calls: super::financials::calls,
    normalize,
};

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let Some(ticker) = subject.ticker else { return };
    for reply in replies {
        if let Parsed::Quote(Answer::Data(f)) = reply {
            tables.stock.push(StockRow {
                domain: subject.domain.to_string(),
                ticker: ticker.to_string(),
                price: f.price,
                currency: f.figures.currency.clone(),
                market_cap: f.figures.market_cap,
            });
        }
    }
}
