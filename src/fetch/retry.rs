//! When to try a call again, and how long to wait first.
//!
//! Retried: timeouts, connection errors, 429 and 5xx. Never: any other status
//! (400/401/403/404 will not change by asking again). The wait is exponential
//! backoff with full jitter (a uniform draw in [0, min(cap, base·2^n)]), never
//! below a floor, or the provider's `Retry-After` (seconds or an HTTP date). A
//! `Retry-After` beyond the longest allowed wait gives up rather than stall the
//! run, and so does a wait that would push the call past its total wait budget.

use std::time::Duration;

use crate::config::RetrySettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worth another attempt.
    Transient,
    /// An answer; asking again will not change it.
    Final,
}

/// Classifies an HTTP outcome: `status` is `None` for a transport failure.
pub fn kind(status: Option<u16>) -> Kind {
    match status {
        None => Kind::Transient,
        Some(429) => Kind::Transient,
        Some(s) if (500..600).contains(&s) => Kind::Transient,
        Some(_) => Kind::Final,
    }
}

/// Reads `Retry-After`: delta-seconds or an HTTP date (relative to `now_unix`).
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(Duration::from_secs((date.timestamp() - now_unix).max(0) as u64))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop: the reason goes to the ledger.
    GiveUp(String),
}

/// Decides after a transient failure of attempt `attempt` (1-based), having
/// already waited `waited` for this call. `jitter` is a uniform draw in [0, 1).
pub fn decide(
    settings: &RetrySettings,
    attempt: u32,
    waited: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Decision {
    if attempt >= settings.max_attempts {
        return Decision::GiveUp(format!("gave up after {attempt} attempts"));
    }
    let max = Duration::from_millis(settings.max_delay_ms);
    let floor = Duration::from_millis(settings.min_delay_ms);
    let wait = match retry_after {
        Some(after) if after > max => {
            return Decision::GiveUp(format!(
                "Retry-After {} s is beyond the {} s longest wait",
                after.as_secs(),
                max.as_secs()
            ));
        }
        Some(after) => after.max(floor),
        None => {
            let ceiling =
                settings.base_delay_ms.saturating_mul(1u64 << (attempt - 1).min(32)).min(settings.max_delay_ms);
            Duration::from_millis((ceiling as f64 * jitter.clamp(0.0, 1.0)) as u64).max(floor)
        }
    };
    if waited + wait > Duration::from_millis(settings.max_total_wait_ms) {
        return Decision::GiveUp(format!(
            "another wait of {} ms would pass the call's {} ms wait budget",
            wait.as_millis(),
            settings.max_total_wait_ms
        ));
    }
    Decision::Retry(wait)
}

/// A deterministic uniform draw in [0, 1) for a call's attempt (reproducible
/// runs): FNV-1a over the key and attempt, finished with splitmix64's mixer.
pub fn jitter(key: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_reproducible_and_spread_over_the_unit_interval() {
        assert_eq!(jitter("builtwith/domain/a.com", 1), jitter("builtwith/domain/a.com", 1));
        assert_ne!(jitter("builtwith/domain/a.com", 1), jitter("builtwith/domain/a.com", 2));
        let draws: Vec<f64> = (0..1000).map(|i| jitter(&format!("similarweb/visits/site-{i}.com"), 1)).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
        assert!(draws.iter().filter(|d| **d < 0.1).count() > 50, "the low tenth is reached");
    }

    fn settings() -> RetrySettings {
        RetrySettings {
            max_attempts: 4,
            base_delay_ms: 1_000,
            max_delay_ms: 60_000,
            max_total_wait_ms: 90_000,
            min_delay_ms: 100,
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert_eq!(kind(None), Kind::Transient);
        for s in [429, 500, 502, 503, 504] {
            assert_eq!(kind(Some(s)), Kind::Transient, "{s}");
        }
        for s in [200, 400, 401, 403, 404] {
            assert_eq!(kind(Some(s)), Kind::Final, "{s}");
        }
    }

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT").unwrap().timestamp();
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO), "a past date");
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_with_full_jitter_under_a_cap() {
        let s = settings();
        assert_eq!(decide(&s, 1, Duration::ZERO, None, 0.5), Decision::Retry(Duration::from_millis(500)));
        assert_eq!(decide(&s, 2, Duration::ZERO, None, 0.5), Decision::Retry(Duration::from_millis(1_000)));
        assert_eq!(decide(&s, 3, Duration::ZERO, None, 0.999), Decision::Retry(Duration::from_millis(3_996)));
        assert_eq!(decide(&s, 1, Duration::ZERO, None, 0.0), Decision::Retry(Duration::from_millis(100)), "floor");
        assert!(matches!(decide(&s, 4, Duration::ZERO, None, 0.5), Decision::GiveUp(_)), "attempts are bounded");
    }

    #[test]
    fn retry_after_zero_is_not_a_hot_loop_and_a_long_one_gives_up() {
        let s = settings();
        assert_eq!(
            decide(&s, 1, Duration::ZERO, Some(Duration::ZERO), 0.9),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&s, 1, Duration::ZERO, Some(Duration::from_secs(5)), 0.9),
            Decision::Retry(Duration::from_secs(5))
        );
        let long = decide(&s, 1, Duration::ZERO, Some(Duration::from_secs(3600)), 0.9);
        assert!(matches!(&long, Decision::GiveUp(m) if m.contains("3600")), "{long:?}");
    }

    #[test]
    fn the_total_wait_is_bounded() {
        let s = settings();
        let d = decide(&s, 2, Duration::from_secs(60), Some(Duration::from_secs(40)), 0.5);
        assert!(matches!(d, Decision::GiveUp(_)), "{d:?}");
    }
}
