//! m02 tech stack: every technology BuiltWith reports (live and dead), the
//! current search vendor, the partner technology detected, and tech spend.
//!
//! Search vendors are recognised by name from the pipeline's list — BuiltWith
//! does not tag them `search`, and look-alikes ("Amazon Elastic Load
//! Balancing", "Sitelinks Search Box") must not match.

use super::tables::{SpendRow, TechRow};
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::providers::Answer;

pub const MODULE: Module = Module {
    id: "m02",
    name: "tech stack",
    provider: ProviderId::BuiltWith,
    depends_on: &[],
    fallback_for: None,
    checked_by: Some(super::precheck::MODULE.id),
    tables: &["tech_stack", "tech_spend"],
    calls: super::company::domain_lookup,
    normalize,
};

/// Whether a technology name is one of `names`: the whole name, or the name
/// followed by more words ("Coveo" matches "Coveo Search", not "Coveon").
pub fn matches_name(technology: &str, names: &[String]) -> Option<usize> {
    let tech = technology.trim().to_ascii_lowercase();
    names.iter().position(|name| {
        let name = name.trim().to_ascii_lowercase();
        tech == name || tech.strip_prefix(&name).is_some_and(|rest| rest.starts_with(' '))
    })
}

/// One technology as a provider saw it, before it is read against the pipeline's lists.
pub(super) struct Seen {
    pub name: String,
    pub tag: Option<String>,
    pub categories: Option<String>,
    pub first_detected_ms: Option<i64>,
    pub last_detected_ms: Option<i64>,
    pub live: bool,
}

/// Records a domain's technologies and what they say: the live search vendor
/// (most recently seen), the preferred live partner technology, Algolia.
pub(super) fn record(
    context: &Context,
    domain: &str,
    seen: Vec<Seen>,
    monthly_spend_usd: Option<f64>,
    source: &'static str,
    tables: &mut Tables,
) {
    let detection = &context.detection;
    let mut search: Option<(String, i64)> = None;
    let mut partner: Option<usize> = None;
    let mut runs_algolia = false;
    for tech in seen {
        let vendor = matches_name(&tech.name, &detection.search_vendors).is_some();
        let partner_rank = matches_name(&tech.name, &detection.partner_techs);
        if tech.live {
            runs_algolia |= matches_name(&tech.name, std::slice::from_ref(&detection.algolia)).is_some();
            let last = tech.last_detected_ms.unwrap_or(0);
            if vendor && search.as_ref().is_none_or(|(_, s)| last > *s) {
                search = Some((tech.name.clone(), last));
            }
            if let Some(rank) = partner_rank {
                partner = Some(partner.map_or(rank, |r| r.min(rank)));
            }
        }
        tables.tech_stack.push(TechRow {
            domain: domain.to_string(),
            technology: tech.name,
            tag: tech.tag,
            categories: tech.categories,
            first_detected_ms: tech.first_detected_ms,
            last_detected_ms: tech.last_detected_ms,
            live: tech.live,
            is_search_vendor: vendor,
            is_partner_tech: partner_rank.is_some(),
            source,
        });
    }
    tables.tech_spend.push(SpendRow {
        domain: domain.to_string(),
        monthly_spend_usd,
        tech_spend: monthly_spend_usd.map(|m| m * 12.0),
        current_search: search.map(|(name, _)| name),
        partner_tech_detected: partner.map(|rank| detection.partner_techs[rank].clone()),
        runs_algolia,
        source,
    });
}

fn normalize(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for reply in replies {
        let Parsed::BuiltWith(Answer::Data(profile)) = reply else { continue };
        let seen = profile
            .technologies
            .iter()
            .map(|t| Seen {
                name: t.name.clone(),
                tag: t.tag.clone(),
                categories: Some(t.categories.join("; ")).filter(|c| !c.is_empty()),
                first_detected_ms: t.first_detected_ms,
                last_detected_ms: t.last_detected_ms,
                live: t.live,
            })
            .collect();
        record(context, subject.domain, seen, profile.spend_monthly_usd, "builtwith", tables);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_names_match_whole_words_and_not_look_alikes() {
        let vendors: Vec<String> = ["Elasticsearch", "Coveo", "Algolia"].map(String::from).to_vec();
        assert_eq!(matches_name("Elasticsearch", &vendors), Some(0));
        assert_eq!(matches_name("coveo search", &vendors), Some(1));
        assert_eq!(matches_name("Amazon Elastic Load Balancing", &vendors), None);
        assert_eq!(matches_name("Sitelinks Search Box", &vendors), None);
        assert_eq!(matches_name("Coveon", &vendors), None);
    }
}
