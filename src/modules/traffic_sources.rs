//! m04 traffic sources: the share of visits that come from search engines.

use super::tables::TrafficSourcesRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, similarweb};

pub const MODULE: Module = Module {
    id: "m04",
    name: "traffic sources",
    provider: ProviderId::SimilarWeb,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["traffic_sources"],
    calls,
    normalize,
};

fn calls(context: &Context, subject: &Subject) -> Vec<Call> {
    vec![super::traffic::similarweb_call(
        context,
        subject,
        similarweb::ENDPOINT_TRAFFIC_SOURCES,
        similarweb::TRAFFIC_SOURCES_PATH,
    )]
}

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for reply in replies {
        if let Parsed::Series { answer: Answer::Data(points), .. } = reply
            && let Some(latest) = points.last()
        {
            tables.traffic_sources.push(TrafficSourcesRow {
                domain: subject.domain.to_string(),
                month: latest.month.clone(),
                search_traffic_pct: latest.value,
            });
        }
    }
}
