//! m06 related domains: sites that share an analytics, tag-manager or ad
//! identifier with the target (subsidiaries, regional sites), from BuiltWith's
//! Relationships API.

use super::tables::RelatedRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, builtwith};

pub const MODULE: Module = Module {
    id: "m06",
    name: "related domains",
    provider: ProviderId::BuiltWith,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["related_domains"],
    calls,
    normalize,
};

fn calls(_: &Context, subject: &Subject) -> Vec<Call> {
    let request = builtwith::relationships_request(subject.domain);
    vec![
        Call::get(ProviderId::BuiltWith, builtwith::ENDPOINT_RELATIONSHIPS, subject.domain, request)
            .paged(builtwith::RELATIONSHIPS_PAGER),
    ]
}

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for reply in replies {
        let Parsed::Related(Answer::Data(related)) = reply else { continue };
        for r in related {
            tables.related_domains.push(RelatedRow {
                domain: subject.domain.to_string(),
                related: r.domain.clone(),
                via: r.via.clone(),
                identifier: r.identifier.clone(),
                first_seen: r.first,
                last_seen: r.last,
            });
        }
    }
}
