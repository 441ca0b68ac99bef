//! News feeds: RSS 2.0 (`rss/channel/item`) and Atom (`feed/entry`), one feed
//! per company. Items become (title, link, published, summary); the news module
//! reads trigger events and executive quotes out of them by the pipeline's rules.
//! A feed that does not exist (404) is a fact; an empty feed is no news.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{Answer, ProviderError};

pub const ENDPOINT_FEED: &str = "feed";

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    pub title: String,
    pub link: Option<String>,
    /// As the feed gives it (RFC 822 in RSS, RFC 3339 in Atom).
    pub published: Option<String>,
    pub summary: Option<String>,
}

/// The five entities XML predefines; anything else is kept as written.
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

pub fn parse_feed(status: u16, body: &[u8]) -> Result<Answer<Vec<Item>>, ProviderError> {
    if status == 404 || status == 410 {
        return Ok(Answer::NoData("no such feed".into()));
    }
    let malformed = |e: &dyn std::fmt::Display| ProviderError::Malformed(format!("feed XML: {e}"));
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(false);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut root: Option<String> = None;
    let mut items = Vec::new();
    let mut current: Option<Item> = None;
    let mut text = String::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| malformed(&e))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(event, Event::Empty(_));
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_ascii_lowercase();
                if root.is_none() {
                    root = Some(name.clone());
                }
                if name == "item" || name == "entry" {
                    current = Some(Item::default());
                }
                // Atom links are attributes: <link href="…" rel="alternate"/>.
                if name == "link"
                    && let Some(item) = current.as_mut()
                    && let Ok(Some(href)) = e.try_get_attribute("href")
                {
                    let rel = e.try_get_attribute("rel").ok().flatten().map(|r| r.value.into_owned());
                    if item.link.is_none() && rel.as_deref().is_none_or(|r| r == b"alternate") {
                        item.link = Some(String::from_utf8_lossy(&href.value).to_string());
                    }
                }
                text.clear();
                // A self-closing element has no end event.
                if !is_empty {
                    path.push(name);
                }
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| malformed(&e))?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| malformed(&e))?),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| malformed(&e))?;
                    match entity(&name) {
                        Some(c) => text.push(c),
                        None => text.push_str(&format!("&{name};")),
                    }
                }
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let value = text.split_whitespace().collect::<Vec<_>>().join(" ");
                text.clear();
                if name == "item" || name == "entry" {
                    if let Some(item) = current.take().filter(|i| !i.title.is_empty()) {
                        items.push(item);
                    }
                    continue;
                }
                let Some(item) = current.as_mut() else { continue };
                let value = Some(value).filter(|v| !v.is_empty());
                match name.as_str() {
                    "title" => item.title = value.unwrap_or_default(),
                    "link" if item.link.is_none() => item.link = value,
                    "pubdate" | "published" => item.published = value.or(item.published.take()),
                    "updated" if item.published.is_none() => item.published = value,
                    "description" | "summary" | "content" | "encoded" if item.summary.is_none() => item.summary = value,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match root.as_deref() {
        Some("rss") | Some("feed") | Some("rdf") => Ok(Answer::Data(items)),
        Some(other) => Err(ProviderError::Malformed(format!("<{other}> is not an RSS or Atom feed"))),
        None => Err(ProviderError::Malformed("an empty body is not a feed".into())),
    }
}

/// A quote attributed to a named executive: `“…,” said Jane Doe, Chief Digital Officer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub quote: String,
    pub name: String,
    pub title: Option<String>,
}

/// Finds quotes in running text: a quoted passage followed by `said` (or
/// `says`) and a capitalised name, optionally followed by a title.
pub fn quotes(text: &str) -> Vec<Quote> {
    let mut found = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let (open, close) = match chars[i] {
            '“' => ('“', '”'),
            '"' => ('"', '"'),
            _ => {
                i += 1;
                continue;
            }
        };
        let _ = open;
        let Some(len) = chars[i + 1..].iter().position(|c| *c == close) else { break };
        let quote: String = chars[i + 1..i + 1 + len].iter().collect();
        i += len + 2;
        let rest: String = chars[i..].iter().collect();
        let rest = rest.trim_start_matches([',', ' ']);
        let Some(after) = rest.strip_prefix("said ").or_else(|| rest.strip_prefix("says ")) else { continue };
        let attribution: &str = after.split(['.', ';', '\n']).next().unwrap_or("");
        let mut parts = attribution.splitn(2, ',');
        let name = parts.next().unwrap_or("").trim();
        let words: Vec<&str> = name.split_whitespace().collect();
        let is_name =
            (2..=4).contains(&words.len()) && words.iter().all(|w| w.chars().next().is_some_and(char::is_uppercase));
        if !is_name || quote.trim().len() < 10 {
            continue;
        }
        let title = parts.next().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        found.push(Quote { quote: quote.trim().trim_end_matches(',').to_string(), name: name.to_string(), title });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(body: &str) -> Vec<Item> {
        match parse_feed(200, body.as_bytes()).unwrap() {
            Answer::Data(items) => items,
            other => panic!("expected items, got {other:?}"),
        }
    }

    #[test]
    fn reads_rss_items_with_entities_and_cdata() {
        let rss = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Acme news</title>
            <item><title>Acme appoints Jane Doe as Chief Digital Officer</title><link>https://acme.com/n/1</link>
            <pubDate>Mon, 02 Nov 2026 09:00:00 GMT</pubDate>
            <description><![CDATA[<p>Big news &amp; more</p>]]></description></item>
            <item><title>Q3 results &amp; outlook</title></item></channel></rss>"#;
        let got = items(rss);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].title, "Acme appoints Jane Doe as Chief Digital Officer");
        assert_eq!(got[0].link.as_deref(), Some("https://acme.com/n/1"));
        assert_eq!(got[0].published.as_deref(), Some("Mon, 02 Nov 2026 09:00:00 GMT"));
        assert_eq!(got[0].summary.as_deref(), Some("<p>Big news &amp; more</p>"));
        assert_eq!(got[1].title, "Q3 results & outlook");
    }

    #[test]
    fn reads_atom_entries_with_link_attributes() {
        let atom = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>Acme</title>
            <entry><title type="text">Acme migrates to a new commerce platform</title>
              <link rel="alternate" href="https://acme.com/a/2"/><updated>2026-11-03T10:00:00Z</updated>
              <summary>“We rebuilt search from scratch,” said Jane Doe, CTO of Acme.</summary></entry></feed>"#;
        let got = items(atom);
        assert_eq!(got[0].link.as_deref(), Some("https://acme.com/a/2"));
        assert_eq!(got[0].published.as_deref(), Some("2026-11-03T10:00:00Z"));
        assert!(got[0].summary.as_deref().unwrap().starts_with("“We rebuilt"));
    }

    #[test]
    fn empty_missing_and_broken_feeds() {
        assert!(items(r#"<rss version="2.0"><channel><title>x</title></channel></rss>"#).is_empty());
        assert!(matches!(parse_feed(404, b"not here"), Ok(Answer::NoData(_))));
        assert!(matches!(parse_feed(200, b"<html><body>maintenance</body></html>"), Err(ProviderError::Malformed(_))));
        assert!(matches!(parse_feed(200, b"<rss><channel><item><title>cut"), Err(ProviderError::Malformed(_)) | Ok(_)));
        assert!(matches!(parse_feed(200, b""), Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn quotes_are_attributed_to_named_executives() {
        let q = quotes("“We rebuilt search from scratch,” said Jane Doe, CTO of Acme. Other text.");
        assert_eq!(
            q,
            [Quote {
                quote: "We rebuilt search from scratch".into(),
                name: "Jane Doe".into(),
                title: Some("CTO of Acme".into())
            }]
        );
        let q = quotes(r#""Search is our next priority for growth" says Maria Garcia"#);
        assert_eq!(q[0].name, "Maria Garcia");
        assert_eq!(q[0].title, None);
        assert!(quotes(r#"The "best" store, said nobody."#).is_empty());
    }
}
