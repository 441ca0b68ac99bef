//! m11 executive quotes and m12 trigger events, both read from the company's
//! news feed (one call per domain feeds both).
//!
//! Trigger events are items whose title or summary contains one of the
//! pipeline's `[triggers]` phrases (whole words, case-insensitive), typed by the
//! rule that matched. Executive quotes are quoted passages attributed to a named
//! person ("…," said Jane Doe, CTO) — personal data, kept with their source.

use super::tables::{QuoteRow, TriggerRow};
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::ProviderId;
use crate::fetch::Call;
use crate::providers::{Answer, news};

pub const QUOTES: Module = Module {
    id: "m11",
    name: "executive quotes",
    provider: ProviderId::News,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["executive_quotes"],
    calls,
    normalize: normalize_quotes,
};

pub const TRIGGERS: Module = Module {
    id: "m12",
    name: "trigger events",
    provider: ProviderId::News,
    depends_on: &["m01"],
    fallback_for: None,
    checked_by: None,
    tables: &["trigger_events"],
    calls,
    normalize: normalize_triggers,
};

fn calls(_: &Context, subject: &Subject) -> Vec<Call> {
    let Some(feed) = subject.news_feed else { return Vec::new() };
    vec![Call::get(ProviderId::News, news::ENDPOINT_FEED, subject.domain, (feed.to_string(), Vec::new()))]
}

fn items<'a>(replies: &'a [&Parsed]) -> impl Iterator<Item = &'a news::Item> {
    replies.iter().flat_map(|r| match r {
        Parsed::Feed(Answer::Data(items)) => items.as_slice(),
        _ => &[],
    })
}

/// Text of an item without markup, for matching.
fn plain(item: &news::Item) -> String {
    let summary = item.summary.as_deref().unwrap_or("");
    let mut text = String::with_capacity(summary.len());
    let mut in_tag = false;
    for c in summary.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    format!("{}. {}", item.title, text)
}

fn normalize_quotes(_: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for item in items(replies) {
        for quote in news::quotes(&plain(item)) {
            tables.executive_quotes.push(QuoteRow {
                domain: subject.domain.to_string(),
                name: quote.name,
                title: quote.title,
                quote: quote.quote,
                published: item.published.as_deref().and_then(super::calendar_date),
                link: item.link.clone(),
            });
        }
    }
}

fn normalize_triggers(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for item in items(replies) {
        let text = plain(item);
        for (event_type, phrases) in &context.triggers {
            if let Some(phrase) = phrases.iter().find(|p| crate::providers::contains_phrase(&text, p)) {
                tables.trigger_events.push(TriggerRow {
                    domain: subject.domain.to_string(),
                    event_type: event_type.clone(),
                    matched: phrase.clone(),
                    headline: item.title.clone(),
                    published: item.published.as_deref().and_then(super::calendar_date),
                    link: item.link.clone(),
                });
            }
        }
    }
}
