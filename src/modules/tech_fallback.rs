//! m02 fallback: when BuiltWith's lookup failed for a domain (outage, quota,
//! budget), SimilarWeb's technologies stand in for the tech stack, marked with
//! their source. There is no spend estimate from SimilarWeb.

use super::tech_stack::{Seen, record};
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, similarweb};

pub const MODULE: Module = Module {
    id: "m02sw",
    name: "tech stack (SimilarWeb fallback)",
    provider: ProviderId::SimilarWeb,
    depends_on: &[],
    fallback_for: Some("m02"),
    checked_by: None,
    tables: &["tech_stack", "tech_spend"],
    calls,
    normalize,
};

fn calls(_: &Context, subject: &Subject) -> Vec<Call> {
    vec![Call::get(
        ProviderId::SimilarWeb,
        similarweb::ENDPOINT_TECHNOLOGIES,
        subject.domain,
        similarweb::plain_request(subject.domain, similarweb::TECHNOLOGIES_PATH),
    )]
}

fn day_ms(date: Option<&str>) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(date?, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn normalize(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    let window_ms = context.detection.live_within_days * 86_400_000;
    for reply in replies {
        let Parsed::Technologies(Answer::Data(found)) = reply else { continue };
        let updated_ms = day_ms(found.updated.as_deref());
        let seen = found
            .technologies
            .iter()
            .map(|t| {
                let last = day_ms(t.last_detected.as_deref());
                Seen {
                    name: t.name.clone(),
                    tag: t.category.clone(),
                    categories: t.category.clone(),
                    first_detected_ms: day_ms(t.first_detected.as_deref()),
                    last_detected_ms: last,
                    live: match (last, updated_ms) {
                        (Some(last), Some(updated)) => updated - last <= window_ms,
                        _ => true,
                    },
                }
            })
            .collect();
        record(context, subject.domain, seen, None, "similarweb", tables);
    }
}
