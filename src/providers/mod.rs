//! The providers' wire formats: bytes in, typed rows or typed errors out.
//!
//! Pure parsing and normalization — no HTTP, no retries, no clock — so every
//! ugly payload from `PROVIDERS.md` is a one-line unit test. Request shapes
//! (paths and query parameters below a base URL) live here too, because they
//! are part of each provider's API; sending them is `fetch/`'s job.

pub mod builtwith;
pub mod jobs;
pub mod news;
pub mod similarweb;
pub mod yahoo;

/// A provider-wide stop read from a 403 (BuiltWith's and SimilarWeb's "bad key
/// *or* quota used up"): a quota message is `Quota`, anything else a refused key.
pub fn stop_signal_403(status: u16, body: &[u8]) -> Option<crate::fetch::Stop> {
    if status != 403 {
        return None;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    let quota = ["quota", "credits", "exceeded", "limit reached"].iter().any(|w| text.contains(w));
    Some(if quota { crate::fetch::Stop::Quota } else { crate::fetch::Stop::Auth })
}

/// Why a response body could not become rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The body is not the JSON the provider documents (truncated, HTML error page, …).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The provider answered with an error envelope.
    #[error("provider error {code}: {message}")]
    Api { code: String, message: String },
    /// A value is present but out of range; the field is named.
    #[error("invalid value in {field}: {message}")]
    Invalid { field: String, message: String },
}

/// What a successful call taught us: data, or the fact that there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    Data(T),
    /// A fact, not a failure: the provider knows nothing about this domain/ticker
    /// (BuiltWith "not in our system", SimilarWeb 401 "Data not found", Yahoo 404).
    NoData(String),
}

pub(crate) fn parse_json(body: &[u8]) -> Result<serde_json::Value, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(60)]).replace('\n', " ");
        ProviderError::Malformed(format!("{e} (body starts {start:?})"))
    })
}

/// Trimmed non-empty string; `null`, missing and `""` are all "missing".
pub(crate) fn text(value: Option<&serde_json::Value>) -> Option<String> {
    value.and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Whether `text` contains `phrase` as whole words, case-insensitively ("VP of
/// Search" contains "search"; "Research Analyst" does not).
pub fn contains_phrase(text: &str, phrase: &str) -> bool {
    let text = text.to_lowercase();
    let phrase = phrase.trim().to_lowercase();
    if phrase.is_empty() {
        return false;
    }
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    text.match_indices(&phrase)
        .any(|(i, m)| boundary(text[..i].chars().last()) && boundary(text[i + m.len()..].chars().next()))
}

/// A rate that some sources give as 0–100 and others as 0–1, as a fraction 0–1.
/// Above 1 it must be a percentage; above 100 it is invalid.
pub fn normalize_rate(field: &str, value: f64) -> Result<f64, ProviderError> {
    let invalid = |message: String| ProviderError::Invalid { field: field.to_string(), message };
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(format!("{value} is not a rate")));
    }
    if value <= 1.0 {
        Ok(value)
    } else if value <= 100.0 {
        Ok(value / 100.0)
    } else {
        Err(invalid(format!("{value} is above 100%")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_403_is_told_apart_from_a_bad_key() {
        use crate::fetch::Stop;
        let quota = br#"{"Errors":[{"Message":"API Key has exceeded its daily quota","Code":-1}]}"#;
        assert_eq!(stop_signal_403(403, quota), Some(Stop::Quota));
        assert_eq!(stop_signal_403(403, br#"{"Errors":[{"Message":"Invalid API key"}]}"#), Some(Stop::Auth));
        let data_not_found = br#"{"meta":{"status":"Error","error_code":401,"error_message":"Data not found"}}"#;
        assert_eq!(stop_signal_403(401, data_not_found), None, "SimilarWeb's 401 is a fact about a site");
        assert_eq!(stop_signal_403(200, b"quota"), None);
    }

    #[test]
    fn phrases_match_on_word_boundaries() {
        assert!(contains_phrase("VP of Search & Discovery", "search"));
        assert!(contains_phrase("Head of E-Commerce", "e-commerce"));
        assert!(!contains_phrase("Research Analyst", "search"));
        assert!(!contains_phrase("Searchlight Ops", "search"));
        assert!(contains_phrase("Acme appoints Jane Doe", "appoints"));
    }

    #[test]
    fn rates_become_fractions() {
        assert_eq!(normalize_rate("r", 0.42), Ok(0.42));
        assert_eq!(normalize_rate("r", 1.0), Ok(1.0));
        assert_eq!(normalize_rate("r", 42.0), Ok(0.42));
        assert_eq!(normalize_rate("r", 0.0), Ok(0.0));
        assert!(normalize_rate("bounce_rate", 140.0).unwrap_err().to_string().contains("bounce_rate"));
        assert!(normalize_rate("r", -0.1).is_err());
        assert!(normalize_rate("r", f64::NAN).is_err());
    }
}
