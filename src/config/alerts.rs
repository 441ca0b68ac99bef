//! People, teams, territories and assignments (`data/seed/people.toml`), and the
//! alert rules that say who hears about which changes, how and when
//! (`pipelines/alerts.toml`). Checked before any provider call: every error
//! names the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::changes::{SIGNIFICANCE, significance_rank};

/// A role, as the system this replaces defines it (`DOMAIN.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Manager,
    Ae,
    Se,
    Sdr,
    Viewer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Manager => "manager",
            Self::Ae => "ae",
            Self::Se => "se",
            Self::Sdr => "sdr",
            Self::Viewer => "viewer",
        }
    }

    /// Whether the role sees financial values (revenue, margins, market cap).
    pub fn sees_financials(self) -> bool {
        !matches!(self, Self::Sdr)
    }

    /// Whether the role sees every account (not only its own and its team's).
    pub fn sees_all_accounts(self) -> bool {
        matches!(self, Self::Admin)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub id: String,
    pub name: String,
    /// The environment variable holding the team channel's webhook URL (a secret).
    #[serde(default)]
    pub webhook_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Territory {
    pub id: String,
    /// Region names of `[regions]`.
    #[serde(default)]
    pub regions: Vec<String>,
    /// ISO country codes, besides the regions'.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Verticals (case-insensitive); empty: any.
    #[serde(default)]
    pub verticals: Vec<String>,
    #[serde(default)]
    pub min_icp_score: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub team: Option<String>,
    pub email: Option<String>,
    /// The environment variable holding the person's webhook URL (a secret).
    #[serde(default)]
    pub webhook_env: Option<String>,
    /// IANA time zone, e.g. `America/New_York`; a digest goes out at its local hour.
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub territories: Vec<String>,
}

fn utc() -> String {
    "UTC".into()
}

/// A named audience of the static exports besides people and teams: a role over
/// territories (e.g. every SDR of North America's hot accounts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceGroup {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The territories whose accounts it sees (empty: every account, for an admin only).
    #[serde(default)]
    pub territories: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub domain: String,
    pub owner: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeopleFile {
    version: u32,
    #[serde(default)]
    regions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    teams: Vec<Spanned<Team>>,
    #[serde(default)]
    territories: Vec<Spanned<Territory>>,
    people: Vec<Spanned<Person>>,
    #[serde(default)]
    assignments: Vec<Spanned<Assignment>>,
    #[serde(default)]
    audiences: Vec<Spanned<AudienceGroup>>,
}

/// The people file, checked.
#[derive(Debug, Clone)]
pub struct People {
    pub version: u32,
    pub regions: BTreeMap<String, Vec<String>>,
    pub teams: Vec<Team>,
    pub territories: Vec<Territory>,
    pub people: Vec<Person>,
    /// Explicit account owners by domain: they win over territories.
    pub assignments: BTreeMap<String, String>,
    /// Role-over-territory audiences of the static exports.
    pub audiences: Vec<AudienceGroup>,
}

impl People {
    pub fn person(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id == id)
    }

    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    /// The countries a territory covers (its regions' and its own), upper-case.
    pub fn countries(&self, territory: &Territory) -> Vec<String> {
        territory
            .regions
            .iter()
            .flat_map(|r| self.regions.get(r).cloned().unwrap_or_default())
            .chain(territory.countries.iter().cloned())
            .map(|c| c.to_ascii_uppercase())
            .collect()
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (file, text): (PeopleFile, String) = super::load_toml(path)?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |line: usize, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("line {line}: {key}"),
            message,
        };
        let teams: Vec<Team> = file.teams.iter().map(|t| t.get_ref().clone()).collect();
        let territories: Vec<Territory> = file.territories.iter().map(|t| t.get_ref().clone()).collect();
        for (i, t) in file.territories.iter().enumerate() {
            let line = line_of(t.span().start);
            let t = t.get_ref();
            if let Some(region) = t.regions.iter().find(|r| !file.regions.contains_key(*r)) {
                return Err(invalid(
                    line,
                    format!("territories[{i}] ({}).regions", t.id),
                    format!("no region {region:?} in [regions]"),
                ));
            }
            if territories[..i].iter().any(|other| other.id == t.id) {
                return Err(invalid(line, format!("territories[{i}].id"), format!("{:?} is listed twice", t.id)));
            }
        }
        let mut people: Vec<Person> = Vec::new();
        for (i, p) in file.people.iter().enumerate() {
            let line = line_of(p.span().start);
            let p = p.get_ref();
            let key = |k: &str| format!("people[{i}] ({}).{k}", p.id);
            if people.iter().any(|other| other.id == p.id) {
                return Err(invalid(line, key("id"), "person ids must be unique".into()));
            }
            if let Some(team) = &p.team
                && !teams.iter().any(|t| &t.id == team)
            {
                return Err(invalid(line, key("team"), format!("no team {team:?}")));
            }
            if let Some(t) = p.territories.iter().find(|t| !territories.iter().any(|x| &x.id == *t)) {
                return Err(invalid(line, key("territories"), format!("no territory {t:?}")));
            }
            if p.time_zone.parse::<chrono_tz::Tz>().is_err() {
                return Err(invalid(line, key("time_zone"), format!("{:?} is not an IANA time zone", p.time_zone)));
            }
            if let Some(email) = &p.email
                && (!email.contains('@') || email.contains(['\r', '\n', '<', '>']))
            {
                return Err(invalid(line, key("email"), format!("{email:?} is not an e-mail address")));
            }
            people.push(p.clone());
        }
        let mut assignments = BTreeMap::new();
        for (i, a) in file.assignments.iter().enumerate() {
            let line = line_of(a.span().start);
            let a = a.get_ref();
            if !people.iter().any(|p| p.id == a.owner) {
                return Err(invalid(line, format!("assignments[{i}].owner"), format!("no person {:?}", a.owner)));
            }
            if assignments.insert(a.domain.to_ascii_lowercase(), a.owner.clone()).is_some() {
                return Err(invalid(
                    line,
                    format!("assignments[{i}].domain"),
                    format!("{} is assigned twice", a.domain),
                ));
            }
        }
        let mut audiences: Vec<AudienceGroup> = Vec::new();
        for (i, a) in file.audiences.iter().enumerate() {
            let line = line_of(a.span().start);
            let a = a.get_ref();
            let key = |k: &str| format!("audiences[{i}] ({}).{k}", a.id);
            let taken = people.iter().any(|p| p.id == a.id)
                || teams.iter().any(|t| t.id == a.id)
                || audiences.iter().any(|x| x.id == a.id);
            if taken {
                return Err(invalid(
                    line,
                    key("id"),
                    "an audience id must differ from every person, team and audience".into(),
                ));
            }
            if !crate::serve::export::safe_file_key(&a.id) {
                return Err(invalid(
                    line,
                    key("id"),
                    "lower-case letters, digits, '.', '-' and '_' only (it names a folder)".into(),
                ));
            }
            if let Some(t) = a.territories.iter().find(|t| !territories.iter().any(|x| &x.id == *t)) {
                return Err(invalid(line, key("territories"), format!("no territory {t:?}")));
            }
            if a.territories.is_empty() && a.role != Role::Admin {
                return Err(invalid(
                    line,
                    key("territories"),
                    "only an admin audience sees every account: name its territories".into(),
                ));
            }
            audiences.push(a.clone());
        }
        Ok(Self { version: file.version, regions: file.regions, teams, territories, people, assignments, audiences })
    }
}

/// Which accounts a rule covers for the person it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Accounts the person owns: assigned to them, or in their territories and assigned to no one else.
    MyAccounts,
    /// Every account of the person's territories.
    MyTerritory,
    /// Accounts owned by anyone of the person's team.
    TeamAccounts,
    /// Every account (admins only).
    AllAccounts,
    /// The rule's `domains`.
    Domains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The person's feed file in the dashboard export.
    Feed,
    /// A Slack-compatible webhook (the person's, else their team's).
    Webhook,
    /// An RFC 5322 message in the store's outbox.
    Email,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Feed => "feed",
            Self::Webhook => "webhook",
            Self::Email => "email",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    Immediate,
    DailyDigest,
}

impl Frequency {
    pub fn name(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::DailyDigest => "daily_digest",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRuleFile {
    id: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    roles: Vec<Role>,
    scope: Scope,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
    min_significance: String,
    channels: Vec<Channel>,
    frequency: Frequency,
    /// Local hour (0–23) of a daily digest, in the person's time zone.
    #[serde(default)]
    digest_hour: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    version: u32,
    people: PathBuf,
    /// Where e-mail messages are written, in the store.
    #[serde(default = "outbox")]
    outbox: String,
    #[serde(default)]
    webhook: WebhookSettings,
    rules: Vec<Spanned<AlertRuleFile>>,
}

fn outbox() -> String {
    "outbox".into()
}

/// How webhooks are called.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    pub timeout_secs: u64,
    pub max_attempts: u32,
    pub base_delay_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self { timeout_secs: 10, max_attempts: 3, base_delay_ms: 500 }
    }
}

#[derive(Debug, Clone)]
pub struct AlertRule {
    pub id: String,
    pub users: Vec<String>,
    pub teams: Vec<String>,
    pub roles: Vec<Role>,
    pub scope: Scope,
    pub domains: Vec<String>,
    pub categories: Vec<String>,
    pub min_significance: String,
    pub channels: Vec<Channel>,
    pub frequency: Frequency,
    pub digest_hour: u32,
}

impl AlertRule {
    /// Whether the rule applies to a person.
    pub fn applies_to(&self, person: &Person) -> bool {
        self.users.contains(&person.id)
            || person.team.as_ref().is_some_and(|t| self.teams.contains(t))
            || self.roles.contains(&person.role)
    }
}

/// The alert rules and the people they name, checked.
#[derive(Debug, Clone)]
pub struct AlertRules {
    pub version: u32,
    pub people: People,
    pub outbox: String,
    pub webhook: WebhookSettings,
    pub rules: Vec<AlertRule>,
}

impl AlertRules {
    /// Loads the rules; the people file's path is relative to the repository the
    /// rules file is in (its `pipelines/` folder's parent); `categories` are the
    /// change rules' categories (empty: not checked).
    pub fn load(path: &Path, categories: &[String]) -> Result<Self, ConfigError> {
        let (file, text): (AlertsFile, String) = super::load_toml(path)?;
        let root = super::repository_root(path);
        let people_path = if file.people.is_absolute() { file.people.clone() } else { root.join(&file.people) };
        let people = People::load(&people_path)?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |line: usize, key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: format!("line {line}: {key}"),
            message,
        };
        let mut rules: Vec<AlertRule> = Vec::new();
        for (i, spanned) in file.rules.iter().enumerate() {
            let line = line_of(spanned.span().start);
            let r = spanned.get_ref();
            let key = |k: &str| format!("rules[{i}] ({}).{k}", r.id);
            if rules.iter().any(|o| o.id == r.id) {
                return Err(invalid(line, key("id"), "rule ids must be unique".into()));
            }
            if r.users.is_empty() && r.teams.is_empty() && r.roles.is_empty() {
                return Err(invalid(line, key("users"), "a rule names users, teams or roles".into()));
            }
            if let Some(u) = r.users.iter().find(|u| people.person(u).is_none()) {
                return Err(invalid(line, key("users"), format!("no person {u:?} in {}", people_path.display())));
            }
            if let Some(t) = r.teams.iter().find(|t| people.team(t).is_none()) {
                return Err(invalid(line, key("teams"), format!("no team {t:?} in {}", people_path.display())));
            }
            if significance_rank(&r.min_significance).is_none() {
                return Err(invalid(
                    line,
                    key("min_significance"),
                    format!("{:?} is not one of {}", r.min_significance, SIGNIFICANCE.join(", ")),
                ));
            }
            if let Some(c) = r.categories.iter().find(|c| !categories.is_empty() && !categories.contains(c)) {
                return Err(invalid(
                    line,
                    key("categories"),
                    format!("{c:?} is not a category of the change rules ({})", categories.join(", ")),
                ));
            }
            if r.channels.is_empty() {
                return Err(invalid(line, key("channels"), "a rule needs at least one channel".into()));
            }
            match (r.scope, r.domains.is_empty()) {
                (Scope::Domains, true) => {
                    return Err(invalid(line, key("domains"), "scope = \"domains\" needs a domain list".into()));
                }
                (s, false) if s != Scope::Domains => {
                    return Err(invalid(line, key("domains"), "a domain list goes with scope = \"domains\"".into()));
                }
                _ => {}
            }
            let rule = AlertRule {
                id: r.id.clone(),
                users: r.users.clone(),
                teams: r.teams.clone(),
                roles: r.roles.clone(),
                scope: r.scope,
                domains: r.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                categories: r.categories.clone(),
                min_significance: r.min_significance.to_ascii_lowercase(),
                channels: r.channels.clone(),
                frequency: r.frequency,
                digest_hour: r.digest_hour.unwrap_or(8),
            };
            if rule.digest_hour > 23 {
                return Err(invalid(line, key("digest_hour"), "an hour is 0 to 23".into()));
            }
            if r.digest_hour.is_some() && rule.frequency != Frequency::DailyDigest {
                return Err(invalid(line, key("digest_hour"), "only a daily_digest rule has an hour".into()));
            }
            if rule.scope == Scope::AllAccounts
                && let Some(p) = people.people.iter().find(|p| rule.applies_to(p) && !p.role.sees_all_accounts())
            {
                return Err(invalid(
                    line,
                    key("scope"),
                    format!("all_accounts applies to {} ({}), who may not see every account", p.id, p.role.name()),
                ));
            }
            rules.push(rule);
        }
        Ok(Self { version: file.version, people, outbox: file.outbox, webhook: file.webhook, rules })
    }
}
