//! The circuit breaker, one per provider: closed → open after N consecutive
//! failures → half-open after a cool-down (one probe at a time) → closed after
//! M successes, or open again on a failure. While open, calls fail fast
//! without touching the network.

use std::sync::Mutex;
use std::time::Duration;

use super::clock::Clock;
use crate::config::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Duration },
    HalfOpen { successes: u32, probing: bool },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: Mutex<State>,
    /// How many times it opened.
    opened: std::sync::atomic::AtomicU64,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self { settings, state: Mutex::new(State::Closed { failures: 0 }), opened: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        *self.lock()
    }

    /// How many times the circuit opened (after a failure in closed or half-open).
    pub fn times_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a call may go out now. In half-open, one probe at a time.
    pub fn admit(&self, clock: &dyn Clock) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if clock.now() >= until => {
                *state = State::HalfOpen { successes: 0, probing: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { successes, probing: false } => {
                *state = State::HalfOpen { successes, probing: true };
                true
            }
            State::HalfOpen { probing: true, .. } => false,
        }
    }

    pub fn on_success(&self) {
        let mut state = self.lock();
        *state = match *state {
            State::HalfOpen { successes, .. } if successes + 1 < self.settings.successes_to_close => {
                State::HalfOpen { successes: successes + 1, probing: false }
            }
            _ => State::Closed { failures: 0 },
        };
    }

    /// An answer that says nothing about the provider's health (a 429): a
    /// half-open probe is given back, so the next call can probe.
    pub fn on_neutral(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { successes, .. } = *state {
            *state = State::HalfOpen { successes, probing: false };
        }
    }

    pub fn on_failure(&self, clock: &dyn Clock) {
        let mut state = self.lock();
        let open = State::Open { until: clock.now() + Duration::from_secs(self.settings.cooldown_secs) };
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.settings.failures_to_open => {
                State::Closed { failures: failures + 1 }
            }
            State::Open { until } => State::Open { until },
            _ => {
                self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                open
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::clock::ManualClock;

    #[test]
    fn opens_fails_fast_half_opens_and_closes() {
        let clock = ManualClock::default();
        let breaker =
            CircuitBreaker::new(BreakerSettings { failures_to_open: 3, cooldown_secs: 60, successes_to_close: 2 });
        for _ in 0..2 {
            assert!(breaker.admit(&clock));
            breaker.on_failure(&clock);
        }
        assert!(breaker.admit(&clock));
        breaker.on_success(); // a success resets the count
        for _ in 0..3 {
            assert!(breaker.admit(&clock));
            breaker.on_failure(&clock);
        }
        assert_eq!(breaker.state().name(), "open");
        assert!(!breaker.admit(&clock), "fails fast while open");
        clock.advance(Duration::from_secs(59));
        assert!(!breaker.admit(&clock));
        clock.advance(Duration::from_secs(1));
        assert!(breaker.admit(&clock), "half-open: one probe");
        assert!(!breaker.admit(&clock), "only one probe at a time");
        breaker.on_success();
        assert_eq!(breaker.state().name(), "half-open");
        assert!(breaker.admit(&clock));
        breaker.on_success();
        assert_eq!(breaker.state(), State::Closed { failures: 0 });
        assert_eq!(breaker.times_opened(), 1);
    }

    /// A breaker that opened on one failure and, 10 s later, has let one probe through.
    fn probing() -> (ManualClock, CircuitBreaker) {
        let clock = ManualClock::default();
        let breaker =
            CircuitBreaker::new(BreakerSettings { failures_to_open: 1, cooldown_secs: 10, successes_to_close: 1 });
        breaker.on_failure(&clock);
        clock.advance(Duration::from_secs(10));
        assert!(breaker.admit(&clock));
        (clock, breaker)
    }

    #[test]
    fn a_throttled_probe_lets_the_next_call_probe() {
        let (clock, breaker) = probing();
        breaker.on_neutral();
        assert!(breaker.admit(&clock), "a 429 on the probe does not wedge the circuit half-open");
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let (clock, breaker) = probing();
        breaker.on_failure(&clock);
        assert_eq!(breaker.state(), State::Open { until: Duration::from_secs(20) });
    }
}
