//! m05 competitors: the sites SimilarWeb finds most similar, and which of them
//! already run Algolia (they are on the customer list) — the references a rep
//! brings to the conversation.

use super::tables::CompetitorRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, similarweb};

pub const MODULE: Module = Module {
    id: "m05",
    name: "competitors",
    provider: ProviderId::SimilarWeb,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["competitors"],
    calls,
    normalize,
};

fn calls(_: &Context, subject: &Subject) -> Vec<Call> {
    vec![Call::get(
        ProviderId::SimilarWeb,
        similarweb::ENDPOINT_SIMILAR_SITES,
        subject.domain,
        similarweb::plain_request(subject.domain, similarweb::SIMILAR_SITES_PATH),
    )]
}

fn normalize(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for reply in replies {
        let Parsed::SimilarSites(Answer::Data(sites)) = reply else { continue };
        for site in sites.iter().filter(|s| s.domain != subject.domain) {
            tables.competitors.push(CompetitorRow {
                domain: subject.domain.to_string(),
                competitor: site.domain.clone(),
                score: site.score,
                uses_algolia: context.customers.contains(&site.domain),
            });
        }
    }
}
