//! m01 company context: name, vertical, location and size from BuiltWith's `Meta`.

use super::tables::CompanyRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, builtwith};

pub const MODULE: Module = Module {
    id: "m01",
    name: "company context",
    provider: ProviderId::BuiltWith,
    depends_on: &[],
    fallback_for: None,
    checked_by: Some(super::precheck::MODULE.id),
    tables: &["company"],
    calls: domain_lookup,
    normalize,
};

/// The BuiltWith domain lookup that m01 and m02 share (made once per domain).
pub(super) fn domain_lookup(context: &Context, subject: &Subject) -> Vec<Call> {
    vec![Call::get(
        ProviderId::BuiltWith,
        builtwith::ENDPOINT_DOMAIN,
        subject.domain,
        builtwith::domain_request(&context.builtwith_version, subject.domain),
    )]
}

fn normalize(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for reply in replies {
        if let Parsed::BuiltWith(Answer::Data(profile)) = reply {
            tables.company.push(CompanyRow { domain: subject.domain.to_string(), meta: profile.meta.clone() });
        }
    }
}
