//! Alert matching: which person hears about which change event, by the alert
//! rules (`pipelines/alerts.toml`), the people file's territories and
//! assignments, and what each role may see. One row per (person, event, rule).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::alerts::{AlertRules, Frequency, People, Person, Scope};
use crate::config::changes::significance_rank;
use crate::transform::changes::Event;

/// Fields whose values are financial: an SDR never receives them.
pub const FINANCIAL_FIELDS: [&str; 3] = ["revenue", "gross_margin", "market_cap"];

/// What territories filter on, per domain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub country: Option<String>,
    pub vertical: Option<String>,
    pub icp_score: Option<i64>,
}

/// An alert: a person, a change event and the rule that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Stable per (person, event): the delivery log's key with the channel.
    pub alert_id: String,
    pub user: String,
    pub name: String,
    pub role: &'static str,
    pub team: Option<String>,
    pub rule: String,
    pub channels: Vec<&'static str>,
    pub frequency: &'static str,
    pub digest_hour: Option<u32>,
    pub time_zone: String,
    pub event: Event,
}

fn in_territory(people: &People, person: &Person, account: &Account) -> bool {
    covered(people, &person.territories, account)
}

/// Whether any of the named territories covers the account.
pub fn covered(people: &People, territories: &[String], account: &Account) -> bool {
    territories.iter().filter_map(|id| people.territories.iter().find(|t| &t.id == id)).any(|t| {
        let countries = people.countries(t);
        let country_ok = countries.is_empty()
            || account.country.as_ref().is_some_and(|c| countries.contains(&c.to_ascii_uppercase()));
        let vertical_ok = t.verticals.is_empty()
            || account.vertical.as_ref().is_some_and(|v| t.verticals.iter().any(|x| x.eq_ignore_ascii_case(v)));
        let score_ok = t.min_icp_score.is_none_or(|min| account.icp_score.is_some_and(|s| s >= min));
        country_ok && vertical_ok && score_ok
    })
}

/// The owners of an account: its assignee, else everyone whose territory covers it.
pub fn owners<'a>(people: &'a People, domain: &str, account: &Account) -> BTreeSet<&'a str> {
    if let Some(owner) = people.assignments.get(domain) {
        return people.person(owner).map(|p| p.id.as_str()).into_iter().collect();
    }
    people.people.iter().filter(|p| in_territory(people, p, account)).map(|p| p.id.as_str()).collect()
}

pub fn alert_id(user: &str, event_id: &str) -> String {
    crate::config::sha256_hex(format!("{user}\u{1f}{event_id}").as_bytes())[..32].to_string()
}

/// Every (person, event, rule) the alert rules match. `accounts` gives each event's
/// domain its country, vertical and score (a domain that left the targets keeps its
/// last known ones).
pub fn match_alerts(rules: &AlertRules, events: &[Event], accounts: &BTreeMap<String, Account>) -> Vec<Alert> {
    let people = &rules.people;
    let none = Account::default();
    let mut out = Vec::new();
    for event in events {
        let account = accounts.get(&event.domain).unwrap_or(&none);
        let owners = owners(people, &event.domain, account);
        let rank = significance_rank(&event.significance).unwrap_or(usize::MAX);
        let financial = FINANCIAL_FIELDS.contains(&event.field.as_str()) || event.category == "financial_change";
        for person in &people.people {
            if financial && !person.role.sees_financials() {
                continue;
            }
            let team_owns = || {
                person.team.is_some() && owners.iter().any(|o| people.person(o).is_some_and(|p| p.team == person.team))
            };
            for rule in rules.rules.iter().filter(|r| r.applies_to(person)) {
                if significance_rank(&rule.min_significance).is_none_or(|bar| rank > bar) {
                    continue;
                }
                if !rule.categories.is_empty() && !rule.categories.contains(&event.category) {
                    continue;
                }
                let in_scope = match rule.scope {
                    Scope::MyAccounts => owners.contains(person.id.as_str()),
                    Scope::MyTerritory => in_territory(people, person, account),
                    Scope::TeamAccounts => owners.contains(person.id.as_str()) || team_owns(),
                    Scope::AllAccounts => person.role.sees_all_accounts(),
                    Scope::Domains => rule.domains.contains(&event.domain),
                };
                if !in_scope {
                    continue;
                }
                out.push(Alert {
                    alert_id: alert_id(&person.id, &event.event_id),
                    user: person.id.clone(),
                    name: person.name.clone(),
                    role: person.role.name(),
                    team: person.team.clone(),
                    rule: rule.id.clone(),
                    channels: rule.channels.iter().map(|c| c.name()).collect(),
                    frequency: rule.frequency.name(),
                    digest_hour: (rule.frequency == Frequency::DailyDigest).then_some(rule.digest_hour),
                    time_zone: person.time_zone.clone(),
                    event: event.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::AlertRules;

    fn event(domain: &str, field: &str, category: &str, significance: &str) -> Event {
        Event {
            event_id: format!("{domain}-{field}"),
            domain: domain.into(),
            module: "m07".into(),
            field: field.into(),
            item: None,
            change: "changed".into(),
            old_value: Some("100".into()),
            new_value: Some("150".into()),
            category: category.into(),
            significance: significance.into(),
            summary: "Revenue +50 %".into(),
            algolia_relevance: String::new(),
            rule: "revenue_moved".into(),
            from_snapshot: "2026-08-01".into(),
            to_snapshot: "2026-08-02".into(),
            old_source: None,
            old_fetched_at: None,
            new_source: None,
            new_fetched_at: None,
            first_detected: None,
        }
    }

    fn rules(dir: &std::path::Path) -> AlertRules {
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        std::fs::write(
            dir.join("people.toml"),
            r#"
version = 1
[[territories]]
id = "us"
countries = ["US"]
min_icp_score = 50
[[teams]]
id = "t"
name = "T"
[[people]]
id = "ann"
name = "Ann"
role = "ae"
team = "t"
territories = ["us"]
[[people]]
id = "sid"
name = "Sid"
role = "sdr"
team = "t"
territories = ["us"]
[[people]]
id = "max"
name = "Max"
role = "manager"
team = "t"
[[people]]
id = "zoe"
name = "Zoe"
role = "ae"
[[assignments]]
domain = "named.com"
owner = "zoe"
"#,
        )
        .unwrap();
        let path = dir.join("pipelines/alerts.toml");
        std::fs::write(
            &path,
            format!(
                r#"
version = 1
people = "{}"
[[rules]]
id = "owners"
roles = ["ae", "sdr"]
scope = "my_accounts"
min_significance = "medium"
channels = ["feed"]
frequency = "immediate"
[[rules]]
id = "team"
roles = ["manager"]
scope = "team_accounts"
min_significance = "high"
channels = ["email"]
frequency = "daily_digest"
"#,
                dir.join("people.toml").display()
            ),
        )
        .unwrap();
        AlertRules::load(&path, &[]).expect("rules load")
    }

    fn who(alerts: &[Alert]) -> Vec<(&str, &str)> {
        alerts.iter().map(|a| (a.user.as_str(), a.rule.as_str())).collect()
    }

    #[test]
    fn territories_assignments_roles_and_significance_decide_who_hears() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules(dir.path());
        let us = Account { country: Some("us".into()), vertical: None, icp_score: Some(70) };
        let accounts: BTreeMap<String, Account> =
            [("a.com".to_string(), us.clone()), ("named.com".to_string(), us.clone())].into_iter().collect();
        // A traffic change in the territory: both owners, and their manager for a high one.
        let traffic = event("a.com", "monthly_visits", "traffic_change", "high");
        assert_eq!(
            who(&match_alerts(&rules, &[traffic], &accounts)),
            [("ann", "owners"), ("sid", "owners"), ("max", "team")]
        );
        // An assigned account goes to its assignee only (not the territory's reps, nor their manager).
        let named = event("named.com", "monthly_visits", "traffic_change", "high");
        assert_eq!(who(&match_alerts(&rules, &[named], &accounts)), [("zoe", "owners")]);
        // Financial values never reach an SDR; the AE still hears.
        let revenue = event("a.com", "revenue", "financial_change", "high");
        assert_eq!(who(&match_alerts(&rules, &[revenue], &accounts)), [("ann", "owners"), ("max", "team")]);
        // Below a rule's significance, or outside every territory, nobody hears.
        let low = event("a.com", "monthly_visits", "traffic_change", "low");
        assert!(match_alerts(&rules, &[low], &accounts).is_empty());
        let elsewhere = event("b.com", "monthly_visits", "traffic_change", "critical");
        assert!(match_alerts(&rules, &[elsewhere], &accounts).is_empty());
    }
}
