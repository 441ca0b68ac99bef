//! The rate limiter: one per provider, shared by every concurrent task of a run.
//!
//! Calls are spaced evenly, one every `max(1/per_second, 60/per_minute)`, so no
//! one-second (or one-minute) window ever holds more calls than the limit — a
//! token bucket with a burst would allow twice the limit across a window's
//! edge. The per-day quota counts the calls made and stops the provider cleanly
//! once it is used up.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::clock::Clock;
use crate::config::RateSettings;

pub struct RateLimiter {
    interval: Duration,
    /// When the next call may start, on the clock.
    next: Mutex<Duration>,
    per_day: Option<u64>,
    used_today: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExhausted {
    pub per_day: u64,
}

impl RateLimiter {
    /// `used_today`: calls already made today (by earlier runs of the same date).
    pub fn new(settings: &RateSettings, used_today: u64) -> Self {
        let per_second = settings.per_second.map(|r| Duration::from_secs_f64(1.0 / r));
        let per_minute = settings.per_minute.map(|r| Duration::from_secs_f64(60.0 / r));
        // 1% of headroom, so that scheduling jitter never puts one call too many in a window.
        let interval = per_second.into_iter().chain(per_minute).max().unwrap_or(Duration::ZERO).mul_f64(1.01);
        Self {
            interval,
            next: Mutex::new(Duration::ZERO),
            per_day: settings.per_day,
            used_today: AtomicU64::new(used_today),
        }
    }

    /// Takes one call from the daily quota and waits for this call's slot.
    pub async fn acquire(&self, clock: &dyn Clock) -> Result<(), QuotaExhausted> {
        if let Some(per_day) = self.per_day {
            let used = self.used_today.fetch_add(1, Ordering::SeqCst);
            if used >= per_day {
                self.used_today.fetch_sub(1, Ordering::SeqCst);
                return Err(QuotaExhausted { per_day });
            }
        }
        if self.interval.is_zero() {
            return Ok(());
        }
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = clock.now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot - now
        };
        if !wait.is_zero() {
            clock.sleep(wait).await;
        }
        Ok(())
    }

    /// Gives back a quota unit taken by a call that was then not sent.
    pub fn give_back(&self) {
        if self.per_day.is_some() {
            self.used_today.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn used_today(&self) -> u64 {
        self.used_today.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::clock::ManualClock;

    #[tokio::test]
    async fn calls_are_spaced_by_the_stricter_limit() {
        let clock = ManualClock::default();
        let limiter =
            RateLimiter::new(&RateSettings { per_second: Some(10.0), per_minute: Some(300.0), per_day: None }, 0);
        let mut starts = Vec::new();
        for _ in 0..4 {
            limiter.acquire(&clock).await.unwrap();
            starts.push(clock.now().as_millis());
        }
        // 300 a minute is one every 200 ms (plus 1% headroom), stricter than 10 a second.
        assert_eq!(starts, [0, 202, 404, 606]);
    }

    #[tokio::test]
    async fn the_daily_quota_stops_cleanly() {
        let clock = ManualClock::default();
        let limiter = RateLimiter::new(&RateSettings { per_day: Some(5), ..Default::default() }, 3);
        assert!(limiter.acquire(&clock).await.is_ok());
        assert!(limiter.acquire(&clock).await.is_ok());
        assert_eq!(limiter.acquire(&clock).await, Err(QuotaExhausted { per_day: 5 }));
        assert_eq!(limiter.used_today(), 5);
    }
}
