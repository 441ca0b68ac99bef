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

fn normalize(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let detection = &context.detection;
    for reply in replies {
        let Parsed::BuiltWith(Answer::Data(profile)) = reply else { continue };
        let mut search: Option<(&str, i64)> = None;
        let mut partner: Option<(usize, &str)> = None;
        let mut runs_algolia = false;
        for tech in &profile.technologies {
            let vendor = matches_name(&tech.name, &detection.search_vendors).is_some();
            let partner_rank = matches_name(&tech.name, &detection.partner_techs);
            if tech.live {
                if matches_name(&tech.name, std::slice::from_ref(&detection.algolia)).is_some() {
                    runs_algolia = true;
                }
                let seen = tech.last_detected_ms.unwrap_or(0);
                if vendor && search.is_none_or(|(_, s)| seen > s) {
                    search = Some((&tech.name, seen));
                }
                if let Some(rank) = partner_rank
                    && partner.is_none_or(|(r, _)| rank < r)
                {
                    partner = Some((rank, &detection.partner_techs[rank]));
                }
            }
            tables.tech_stack.push(TechRow {
                domain: subject.domain.to_string(),
                technology: tech.name.clone(),
                tag: tech.tag.clone(),
                categories: Some(tech.categories.join("; ")).filter(|c| !c.is_empty()),
                first_detected_ms: tech.first_detected_ms,
                last_detected_ms: tech.last_detected_ms,
                live: tech.live,
                is_search_vendor: vendor,
                is_partner_tech: partner_rank.is_some(),
            });
        }
        tables.tech_spend.push(SpendRow {
            domain: subject.domain.to_string(),
            monthly_spend_usd: profile.spend_monthly_usd,
            tech_spend: profile.spend_monthly_usd.map(|m| m * 12.0),
            current_search: search.map(|(name, _)| name.to_string()),
            partner_tech_detected: partner.map(|(_, name)| name.to_string()),
            runs_algolia,
        });
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
