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
            tables.company.push(CompanyRow {
                domain: subject.domain.to_string(),
                meta: profile.meta.clone(),
                redirects_to: profile.root_domain.as_deref().and_then(|root| moved_to(subject.domain, root)),
            });
        }
    }
}

/// The domain a site has moved to, when BuiltWith's answer for `asked` is about another
/// root domain: the crawl followed a redirect there. A subdomain's answer naming its
/// parent (or the other way round) is the same site, not a move.
pub fn moved_to(asked: &str, root: &str) -> Option<String> {
    let root = crate::targets::normalize_domain(root).ok()?;
    let same_site = root == asked || asked.ends_with(&format!(".{root}")) || root.ends_with(&format!(".{asked}"));
    (!same_site).then_some(root)
}

#[cfg(test)]
mod tests {
    use super::moved_to;

    #[test]
    fn an_answer_about_another_root_domain_is_a_move() {
        assert_eq!(moved_to("acme.com", "acmegroup.com").as_deref(), Some("acmegroup.com"));
        assert_eq!(moved_to("acme.com", "WWW.AcmeGroup.com.").as_deref(), Some("acmegroup.com"));
        assert_eq!(moved_to("acme.com", "acme.com"), None);
        assert_eq!(moved_to("shop.acme.com", "acme.com"), None);
        assert_eq!(moved_to("acme.com", "shop.acme.com"), None);
        assert_eq!(moved_to("acme.com", ""), None);
    }
}
