//! Job boards' public posting APIs: Greenhouse (`/v1/boards/{board}/jobs`),
//! Lever (`/v0/postings/{company}?mode=json`) and Ashby
//! (`/posting-api/job-board/{board}`). Each becomes a list of open postings; an
//! unknown board (404) is a fact — the company does not post there — not a failure.

use serde_json::Value;

use super::{Answer, ProviderError, parse_json, text};
use crate::config::ProviderId;

pub const ENDPOINT_POSTINGS: &str = "postings";

/// Path and query of a board's postings, by platform.
pub fn postings_request(platform: ProviderId, board: &str) -> Option<(String, Vec<(&'static str, String)>)> {
    match platform {
        ProviderId::Greenhouse => Some((format!("/v1/boards/{board}/jobs"), Vec::new())),
        ProviderId::Lever => Some((format!("/v0/postings/{board}"), vec![("mode", "json".to_string())])),
        ProviderId::Ashby => {
            Some((format!("/posting-api/job-board/{board}"), vec![("includeCompensation", "false".to_string())]))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    pub title: String,
    pub location: Option<String>,
    /// When it was posted or last updated, as the board gives it.
    pub posted_at: Option<String>,
    pub url: Option<String>,
}

/// Parses a board's postings. `status` tells an unknown board (404) apart.
pub fn parse_postings(platform: ProviderId, status: u16, body: &[u8]) -> Result<Answer<Vec<Posting>>, ProviderError> {
    if status == 404 {
        return Ok(Answer::NoData("no such job board".into()));
    }
    let json = parse_json(body)?;
    let list = match platform {
        // Lever answers a bare array.
        ProviderId::Lever => json.as_array(),
        _ => json.get("jobs").and_then(Value::as_array),
    }
    .ok_or_else(|| ProviderError::Malformed(format!("no {} postings list", platform.name())))?;
    let postings = list
        .iter()
        .filter(|job| job.get("isListed").and_then(Value::as_bool) != Some(false))
        .filter_map(|job| {
            let (title, location, posted_at, url) = match platform {
                ProviderId::Lever => (
                    text(job.get("text")),
                    text(job.get("categories").and_then(|c| c.get("location"))),
                    job.get("createdAt").and_then(Value::as_i64).and_then(|ms| {
                        chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d").to_string())
                    }),
                    text(job.get("hostedUrl")),
                ),
                ProviderId::Ashby => (
                    text(job.get("title")),
                    text(job.get("location")),
                    text(job.get("publishedAt")),
                    text(job.get("jobUrl")),
                ),
                _ => (
                    text(job.get("title")),
                    text(job.get("location").and_then(|l| l.get("name"))),
                    text(job.get("updated_at")),
                    text(job.get("absolute_url")),
                ),
            };
            Some(Posting { title: title?, location, posted_at, url })
        })
        .collect();
    Ok(Answer::Data(postings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(answer: Answer<Vec<Posting>>) -> Vec<Posting> {
        match answer {
            Answer::Data(p) => p,
            other => panic!("expected postings, got {other:?}"),
        }
    }

    #[test]
    fn greenhouse_lever_and_ashby_shapes() {
        let gh = br#"{"jobs":[{"id":1,"title":"Senior Search Engineer","updated_at":"2026-11-01T12:00:00-05:00",
            "location":{"name":"New York"},"absolute_url":"https://boards.greenhouse.io/acme/jobs/1","metadata":null}],
            "meta":{"total":1}}"#;
        let p = data(parse_postings(ProviderId::Greenhouse, 200, gh).unwrap());
        assert_eq!(p[0].title, "Senior Search Engineer");
        assert_eq!(p[0].location.as_deref(), Some("New York"));

        let lever =
            br#"[{"id":"a1","text":"Director of E-Commerce","categories":{"team":"Digital","location":"Remote"},
            "createdAt":1762000000000,"hostedUrl":"https://jobs.lever.co/acme/a1"}]"#;
        let p = data(parse_postings(ProviderId::Lever, 200, lever).unwrap());
        assert_eq!((p[0].title.as_str(), p[0].posted_at.as_deref()), ("Director of E-Commerce", Some("2025-11-01")));

        let ashby = br#"{"apiVersion":"1","jobs":[{"title":"Personalization PM","location":"Berlin","isListed":true,
            "publishedAt":"2026-10-01T00:00:00Z"},{"title":"Hidden","isListed":false}]}"#;
        let p = data(parse_postings(ProviderId::Ashby, 200, ashby).unwrap());
        assert_eq!(p.len(), 1, "unlisted postings are left out");
    }

    #[test]
    fn an_unknown_board_is_a_fact_and_an_empty_board_is_empty() {
        let answer = parse_postings(ProviderId::Lever, 404, br#"{"ok":false,"error":"Document not found"}"#).unwrap();
        assert!(matches!(answer, Answer::NoData(_)));
        assert!(
            data(parse_postings(ProviderId::Greenhouse, 200, br#"{"jobs":[],"meta":{"total":0}}"#).unwrap()).is_empty()
        );
        assert!(matches!(parse_postings(ProviderId::Greenhouse, 200, b"<html>"), Err(ProviderError::Malformed(_))));
    }
}
