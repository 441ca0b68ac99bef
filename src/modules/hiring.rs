//! m10 hiring signals: open roles from the company's job board (Greenhouse,
//! Lever or Ashby, as `job_boards.csv` maps it), counted by the pipeline's
//! `[hiring]` phrases — search and relevance, e-commerce, personalization, and
//! senior digital or search leadership.

use super::tables::{HiringRow, PostingRow};
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, jobs};

pub const MODULE: Module = Module {
    id: "m10",
    name: "hiring signals",
    provider: ProviderId::Greenhouse,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["hiring", "job_postings"],
    calls,
    normalize,
};

fn calls(_: &Context, subject: &Subject) -> Vec<Call> {
    let Some((platform, board)) = subject.job_board else { return Vec::new() };
    let Some(request) = jobs::postings_request(platform, board) else { return Vec::new() };
    vec![Call::get(platform, jobs::ENDPOINT_POSTINGS, subject.domain, request)]
}

fn normalize(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let Some((platform, board)) = subject.job_board else { return };
    let rules = &context.hiring;
    for reply in replies {
        let Parsed::Postings(Answer::Data(postings)) = reply else { continue };
        let mut row = HiringRow {
            domain: subject.domain.to_string(),
            platform: platform.name(),
            board: board.to_string(),
            open_roles: postings.len() as i64,
            search_roles: 0,
            ecommerce_roles: 0,
            personalization_roles: 0,
            leadership_roles: 0,
        };
        for posting in postings {
            let hits =
                |phrases: &[String]| phrases.iter().any(|p| crate::providers::contains_phrase(&posting.title, p));
            let categories: Vec<&str> = [
                ("search", hits(&rules.search)),
                ("ecommerce", hits(&rules.ecommerce)),
                ("personalization", hits(&rules.personalization)),
                ("leadership", hits(&rules.leadership)),
            ]
            .into_iter()
            .filter_map(|(name, hit)| hit.then_some(name))
            .collect();
            row.search_roles += i64::from(categories.contains(&"search"));
            row.ecommerce_roles += i64::from(categories.contains(&"ecommerce"));
            row.personalization_roles += i64::from(categories.contains(&"personalization"));
            row.leadership_roles += i64::from(categories.contains(&"leadership"));
            tables.job_postings.push(PostingRow {
                domain: subject.domain.to_string(),
                platform: platform.name(),
                title: posting.title.clone(),
                location: posting.location.clone(),
                posted_at: posting.posted_at.as_deref().and_then(super::calendar_date),
                url: posting.url.clone(),
                signals: Some(categories.join(",")).filter(|c| !c.is_empty()),
            });
        }
        tables.hiring.push(row);
    }
}
