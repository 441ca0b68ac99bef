//! m09 analyst recommendations: this month's strong buy … strong sell counts and
//! their mean (1 strong buy … 5 strong sell), from the quoteSummary call m07 makes.

use super::tables::RecommendationRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::providers::Answer;

pub const MODULE: Module = Module {
    id: "m09",
    name: "analyst recommendations",
    provider: ProviderId::YahooFinance,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["analyst_recommendations"],
    calls: super::financials::calls,
    normalize,
};

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let Some(ticker) = subject.ticker else { return };
    for reply in replies {
        if let Parsed::Quote(Answer::Data(f)) = reply
            && let Some(r) = &f.recommendations
        {
            tables.analyst_recommendations.push(RecommendationRow {
                domain: subject.domain.to_string(),
                ticker: ticker.to_string(),
                strong_buy: r.strong_buy,
                buy: r.buy,
                hold: r.hold,
                sell: r.sell,
                strong_sell: r.strong_sell,
                mean: r.mean(),
            });
        }
    }
}
