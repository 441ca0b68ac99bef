//! m03 traffic & engagement: latest month's visits (and growth over the month
//! before), bounce rate, pages per visit and average visit duration.

use super::tables::TrafficRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, similarweb};

pub const MODULE: Module = Module {
    id: "m03",
    name: "traffic & engagement",
    provider: ProviderId::SimilarWeb,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["traffic"],
    calls,
    normalize,
};

/// A SimilarWeb request for the configured country; a country other than `world`
/// falls back to `world` once when SimilarWeb refuses it with a 403.
pub(super) fn similarweb_call(context: &Context, subject: &Subject, endpoint: &'static str, path: &str) -> Call {
    let (start, end) = &context.months;
    let country = &context.similarweb_country;
    let mut call = Call::get(
        ProviderId::SimilarWeb,
        endpoint,
        subject.domain,
        similarweb::request(subject.domain, path, country, start, end),
    );
    call.fallback_on_403 = (country != "world").then(|| similarweb::request(subject.domain, "", "world", start, end).1);
    call
}

fn calls(context: &Context, subject: &Subject) -> Vec<Call> {
    similarweb::ENGAGEMENT.iter().map(|m| similarweb_call(context, subject, m.endpoint, m.path)).collect()
}

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let series = |endpoint: &str| {
        replies.iter().find_map(|r| match r {
            Parsed::Series { endpoint: e, answer: Answer::Data(points) } if *e == endpoint => Some(points.as_slice()),
            _ => None,
        })
    };
    let Some(visits) = series(similarweb::VISITS.endpoint).filter(|v| !v.is_empty()) else {
        return; // too small to measure: no row
    };
    let latest = &visits[visits.len() - 1];
    let growth = visits
        .len()
        .checked_sub(2)
        .map(|i| &visits[i])
        .filter(|prev| prev.value > 0.0)
        .map(|prev| latest.value / prev.value - 1.0);
    let at_month = |endpoint: &str| {
        series(endpoint).and_then(|points| points.iter().rev().find(|p| p.month == latest.month).map(|p| p.value))
    };
    tables.traffic.push(TrafficRow {
        domain: subject.domain.to_string(),
        month: latest.month.clone(),
        monthly_visits: Some(latest.value),
        visits_growth_mom: growth,
        bounce_rate: at_month(similarweb::BOUNCE_RATE.endpoint),
        pages_per_visit: at_month(similarweb::PAGES_PER_VISIT.endpoint),
        avg_visit_duration: at_month(similarweb::AVERAGE_VISIT_DURATION.endpoint),
    });
}
