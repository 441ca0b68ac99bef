//! m00 BuiltWith free pre-check: before a paid Domain lookup (m01, m02), BuiltWith's
//! Free API (`free1`: technology group counts, live and dead; no charge, 1 request/s)
//! says whether the lookup is worth paying for. A domain BuiltWith does not know is
//! not looked up (m01 and m02 record no data); one whose groups that matter have the
//! counts they had at its last full lookup, younger than the configured maximum age,
//! keeps that lookup's results (carried forward with their dates). Any other answer —
//! or none, the free API failing — and the paid lookup is made.

use std::collections::HashMap;

use super::tables::FreeCheckRow;
use super::{Context, Module, Parsed, Subject, Tables};
use crate::config::{PrecheckSettings, ProviderId};
use crate::fetch::Call;
use crate::providers::{Answer, builtwith};

pub const MODULE: Module = Module {
    id: "m00",
    name: "BuiltWith free pre-check",
    provider: ProviderId::BuiltWith,
    depends_on: &[],
    fallback_for: None,
    checked_by: None,
    tables: &["builtwith_free"],
    calls,
    normalize,
};

/// The verdict that spares the paid lookup and keeps the last one's results.
pub const UNCHANGED: &str = "unchanged";
/// The verdict that spares the paid lookup: BuiltWith does not know the domain.
pub const UNKNOWN: &str = "unknown";

/// A domain's last full (paid, answered) lookup, and the free check made before it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastLookup {
    pub on: chrono::NaiveDate,
    /// The signature of the groups that matter the free API gave that night.
    pub signature: Option<String>,
}

/// The pre-check's settings and what it compares with, resolved once per run.
#[derive(Debug, Clone, Default)]
pub struct Precheck {
    pub settings: PrecheckSettings,
    /// Per domain looked up before.
    pub lookups: HashMap<String, LastLookup>,
}

fn calls(context: &Context, subject: &Subject) -> Vec<Call> {
    let p = &context.precheck;
    if !p.settings.enabled || (!p.settings.new_domains && !p.lookups.contains_key(subject.domain)) {
        return Vec::new();
    }
    vec![Call::get(
        ProviderId::BuiltWith,
        builtwith::ENDPOINT_FREE,
        subject.domain,
        builtwith::free_request(subject.domain),
    )]
}

/// What the free answer means for the paid lookup of `domain` on `run_date`.
pub fn verdict(
    precheck: &Precheck,
    run_date: chrono::NaiveDate,
    domain: &str,
    answer: &Answer<builtwith::FreeProfile>,
) -> FreeCheckRow {
    let last = precheck.lookups.get(domain);
    let signature = match answer {
        Answer::Data(profile) => Some(profile.signature(&precheck.settings.groups)),
        Answer::NoData(_) => None,
    };
    let verdict = match (&signature, last) {
        (None, _) => UNKNOWN,
        (Some(_), None) => "new",
        (Some(_), Some(last)) if (run_date - last.on).num_days() >= i64::from(precheck.settings.max_age_days) => {
            "expired"
        }
        (Some(_), Some(LastLookup { signature: None, .. })) => "unsigned",
        (Some(now), Some(LastLookup { signature: Some(then), .. })) if now != then => "changed",
        (Some(_), Some(_)) => UNCHANGED,
    };
    FreeCheckRow {
        domain: domain.to_string(),
        known: signature.is_some(),
        signature,
        signature_at_lookup: last.and_then(|l| l.signature.clone()),
        looked_up_on: last.map(|l| l.on),
        verdict,
    }
}

fn normalize(context: &Context, subject: &Subject, replies: &[&Parsed], tables: &mut Tables) {
    for reply in replies {
        if let Parsed::Free(answer) = reply {
            tables.builtwith_free.push(verdict(&context.precheck, context.run_date, subject.domain, answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::builtwith::{FreeGroup, FreeProfile};

    fn profile(cms_live: u64) -> Answer<FreeProfile> {
        let groups = vec![FreeGroup { name: "cms".into(), live: cms_live, dead: 0 }];
        Answer::Data(FreeProfile { groups, last_indexed: Some(1) })
    }

    #[test]
    fn the_paid_lookup_is_spared_only_for_unknown_domains_and_unchanged_young_lookups() {
        let day = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
        let mut precheck = Precheck::default();
        let signature = |answer: &Answer<FreeProfile>| match answer {
            Answer::Data(p) => Some(p.signature(&precheck.settings.groups)),
            Answer::NoData(_) => None,
        };
        let then = signature(&profile(1));
        precheck.lookups.insert("a.com".into(), LastLookup { on: day("2026-11-01"), signature: then });
        precheck.lookups.insert("b.com".into(), LastLookup { on: day("2026-11-01"), signature: None });
        let on =
            |d: &str, domain: &str, answer: &Answer<FreeProfile>| verdict(&precheck, day(d), domain, answer).verdict;
        assert_eq!(on("2026-11-08", "a.com", &profile(1)), UNCHANGED);
        assert_eq!(on("2026-11-08", "a.com", &profile(2)), "changed");
        assert_eq!(on("2026-11-29", "a.com", &profile(1)), "expired", "28 days is the default maximum age");
        assert_eq!(on("2026-11-08", "b.com", &profile(1)), "unsigned");
        assert_eq!(on("2026-11-08", "c.com", &profile(1)), "new");
        assert_eq!(on("2026-11-08", "a.com", &Answer::NoData("not in our system".into())), UNKNOWN);
        let row = verdict(&precheck, day("2026-11-08"), "a.com", &profile(1));
        assert_eq!(row.looked_up_on, Some(day("2026-11-01")));
        assert_eq!(row.signature, row.signature_at_lookup);
    }
}
