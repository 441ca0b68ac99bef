//! Spending caps per provider, per run and per calendar month.
//!
//! The cost of a call is *reserved* before it is made, under one lock, so
//! concurrent tasks can never overshoot a cap together; the reservation is then
//! either charged (the provider billed the call) or released. A warning is
//! logged once per provider and cap when spending reaches the threshold.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::config::{BudgetSettings, ProviderId};

#[derive(Debug, Default)]
struct Account {
    run_spent: f64,
    month_spent: f64,
    reserved: f64,
    warned_run: bool,
    warned_month: bool,
}

pub struct Budget {
    settings: BTreeMap<ProviderId, BudgetSettings>,
    accounts: Mutex<BTreeMap<ProviderId, Account>>,
}

/// A cost held against the caps until the call's outcome is known.
#[derive(Debug)]
#[must_use = "a reservation must be charged or released"]
pub struct Reservation {
    provider: ProviderId,
    cost: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OverBudget {
    pub cap: &'static str,
    pub limit: f64,
    pub spent: f64,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} cap of ${:.2} would be crossed (${:.2} spent or reserved)", self.cap, self.limit, self.spent)
    }
}

const EPSILON: f64 = 1e-9;

impl Budget {
    /// `month_to_date`: what earlier runs this calendar month already spent, per provider.
    pub fn new(settings: BTreeMap<ProviderId, BudgetSettings>, month_to_date: &BTreeMap<ProviderId, f64>) -> Self {
        let accounts = settings
            .keys()
            .map(|p| (*p, Account { month_spent: month_to_date.get(p).copied().unwrap_or(0.0), ..Default::default() }))
            .collect();
        Self { settings, accounts: Mutex::new(accounts) }
    }

    pub fn reserve(&self, provider: ProviderId, cost: f64) -> Result<Reservation, OverBudget> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let account = accounts.entry(provider).or_default();
        if cost > 0.0
            && let Some(settings) = self.settings.get(&provider)
        {
            let run = account.run_spent + account.reserved;
            let month = account.month_spent + account.reserved;
            if let Some(limit) = settings.per_run_usd
                && run + cost > limit + EPSILON
            {
                return Err(OverBudget { cap: "per-run", limit, spent: run });
            }
            if let Some(limit) = settings.per_month_usd
                && month + cost > limit + EPSILON
            {
                return Err(OverBudget { cap: "per-month", limit, spent: month });
            }
        }
        account.reserved += cost;
        Ok(Reservation { provider, cost })
    }

    /// The provider billed the call `usd` (what was reserved, unless the endpoint bills
    /// by what the answer holds).
    pub fn charge(&self, reservation: Reservation, usd: f64) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let account = accounts.entry(reservation.provider).or_default();
        account.reserved -= reservation.cost;
        account.run_spent += usd;
        account.month_spent += usd;
        if let Some(settings) = self.settings.get(&reservation.provider) {
            let name = reservation.provider.name();
            let caps = [
                (settings.per_run_usd, account.run_spent, &mut account.warned_run, "per-run"),
                (settings.per_month_usd, account.month_spent, &mut account.warned_month, "monthly"),
            ];
            for (limit, spent, warned, cap) in caps {
                if let Some(limit) = limit
                    && !*warned
                    && spent >= settings.warn_at * limit
                {
                    *warned = true;
                    let share = settings.warn_at * 100.0;
                    tracing::warn!(
                        provider = name,
                        spent,
                        limit,
                        "{name} spend reached {share:.0}% of its {cap} budget"
                    );
                }
            }
        }
    }

    /// The call was not billed (it failed, or was never sent).
    pub fn release(&self, reservation: Reservation) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.entry(reservation.provider).or_default().reserved -= reservation.cost;
    }

    /// Counts spending this run did before (a resumed run's reused calls) toward its
    /// per-run cap; the month already counts it (`month_to_date` is the spend record's).
    pub fn spent_earlier(&self, provider: ProviderId, usd: f64) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.entry(provider).or_default().run_spent += usd;
    }

    pub fn run_spent(&self, provider: ProviderId) -> f64 {
        let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.get(&provider).map(|a| a.run_spent).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_run: Option<f64>, per_month: Option<f64>, month_to_date: f64) -> Budget {
        let settings = BudgetSettings { per_run_usd: per_run, per_month_usd: per_month, warn_at: 0.8 };
        Budget::new([(ProviderId::BuiltWith, settings)].into(), &[(ProviderId::BuiltWith, month_to_date)].into())
    }

    #[test]
    fn reservations_hold_the_cap_and_releases_give_it_back() {
        let b = budget(Some(0.30), None, 0.0);
        let r1 = b.reserve(ProviderId::BuiltWith, 0.10).unwrap();
        let r2 = b.reserve(ProviderId::BuiltWith, 0.10).unwrap();
        let r3 = b.reserve(ProviderId::BuiltWith, 0.10).unwrap();
        let over = b.reserve(ProviderId::BuiltWith, 0.10).unwrap_err();
        assert_eq!(over.cap, "per-run");
        b.release(r3);
        let r4 = b.reserve(ProviderId::BuiltWith, 0.10).unwrap();
        for r in [r1, r2, r4] {
            b.charge(r, 0.10);
        }
        assert!((b.run_spent(ProviderId::BuiltWith) - 0.30).abs() < 1e-9);
        assert!(b.reserve(ProviderId::BuiltWith, 0.10).is_err());
        assert!(b.reserve(ProviderId::BuiltWith, 0.0).is_ok(), "free calls are never refused");
    }

    #[test]
    fn the_month_counts_earlier_runs() {
        let b = budget(None, Some(5.00), 4.95);
        let err = b.reserve(ProviderId::BuiltWith, 0.10).unwrap_err();
        assert_eq!((err.cap, err.limit), ("per-month", 5.00));
        assert!(b.reserve(ProviderId::BuiltWith, 0.05).is_ok());
    }
}
