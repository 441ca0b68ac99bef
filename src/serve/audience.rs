//! Who a static site is for, and what it may hold (`DOMAIN.md`, "People, teams,
//! territories"): a person, a team, or a role over territories from the people
//! file. An audience sees some accounts, and some fields of them: an SDR sees no
//! financial values, and an audience with an SDR in it neither.

use std::collections::BTreeSet;

use crate::config::alerts::{People, Role};
use crate::transform::alerts::{Account, covered, owners};

/// What an audience is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum Members {
    /// One person: their own accounts and their team's (an admin: every account).
    Person(String),
    /// A team: the accounts any member owns.
    Team(String),
    /// A role over territories: the accounts they cover (an admin without territories: all).
    Territories(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Audience {
    pub id: String,
    pub name: String,
    /// `person`, `team` or `group`.
    pub kind: &'static str,
    /// The role whose rights the site follows (a team: its most restricted member's).
    pub role: Role,
    pub members: Members,
    /// The people whose alert feeds the site carries.
    pub feeds: Vec<String>,
}

impl Audience {
    /// Whether financial values (revenue, margins, market cap, price, analysts) stay in.
    pub fn sees_financials(&self) -> bool {
        self.role.sees_financials()
    }

    /// Whether the site carries the provider spend (admins and managers run the budget).
    pub fn sees_spend(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Manager)
    }

    /// Whether the audience sees an account.
    pub fn sees(&self, people: &People, domain: &str, account: &Account) -> bool {
        match &self.members {
            Members::Person(id) => {
                let Some(person) = people.person(id) else { return false };
                if person.role.sees_all_accounts() {
                    return true;
                }
                let owners = owners(people, domain, account);
                owners.contains(id.as_str())
                    || person.team.as_ref().is_some_and(|team| {
                        owners.iter().any(|o| people.person(o).is_some_and(|p| p.team.as_ref() == Some(team)))
                    })
            }
            Members::Team(team) => owners(people, domain, account)
                .iter()
                .any(|o| people.person(o).is_some_and(|p| p.team.as_deref() == Some(team.as_str()))),
            Members::Territories(territories) if territories.is_empty() => self.role.sees_all_accounts(),
            Members::Territories(territories) => covered(people, territories, account),
        }
    }
}

/// Columns holding financial values: an audience that may not see financials gets
/// views without them.
pub const FINANCIAL_COLUMNS: [&str; 12] = [
    "revenue",
    "gross_margin",
    "operating_margin",
    "revenue_growth",
    "market_cap",
    "price",
    "strong_buy",
    "buy",
    "hold",
    "sell",
    "strong_sell",
    "mean",
];

/// Columns of `targets` built from financial values: the budget signal's points,
/// reasons and evidence (revenue, margins, growth), and the provenance of every field
/// (it names the financial ones). The budget level itself stays.
pub const FINANCIAL_DERIVED: [&str; 4] = ["budget_points", "budget_reasons", "budget_evidence_on", "provenance"];

/// Tables that hold nothing but financial values besides their keys.
const FINANCIAL_TABLES: [&str; 2] = ["financial_history", "analyst_recommendations"];

/// The `scoped.<view>` definition of one view for an audience: its accounts only,
/// without the columns and change events its role may not see.
pub fn scoped_view(audience: &Audience, view: &str, columns: &[String]) -> String {
    let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let hidden: Vec<String> = if audience.sees_financials() {
        Vec::new()
    } else {
        columns
            .iter()
            .filter(|c| FINANCIAL_COLUMNS.contains(&c.as_str()) || FINANCIAL_DERIVED.contains(&c.as_str()))
            .map(|c| quote(c))
            .collect()
    };
    let mut hidden = hidden;
    if view == "runs" && !audience.sees_spend() {
        hidden.push(quote("spend_usd"));
    }
    let mut select = if hidden.is_empty() { "*".to_string() } else { format!("* EXCLUDE ({})", hidden.join(", ")) };
    // A member whose primary the audience does not see is listed under its own name.
    if view == "targets" && columns.iter().any(|c| c == "listed") && columns.iter().any(|c| c == "family_primary") {
        select.push_str(
            " REPLACE ((listed OR family_primary NOT IN (SELECT domain FROM scoped.audience_domains)) AS listed)",
        );
    }
    let mut conditions: Vec<String> = Vec::new();
    if columns.iter().any(|c| c == "domain") && view != "api_calls" {
        conditions.push("domain IN (SELECT domain FROM scoped.audience_domains)".into());
    }
    if !audience.sees_financials() {
        if columns.iter().any(|c| c == "field") {
            let fields: Vec<String> =
                crate::transform::alerts::FINANCIAL_FIELDS.iter().map(|f| format!("'{f}'")).collect();
            conditions.push(format!("field NOT IN ({})", fields.join(", ")));
        }
        if FINANCIAL_TABLES.contains(&view) {
            conditions.push("false".into());
        }
    }
    if view == "alerts" {
        conditions.push("person IN (SELECT person FROM scoped.audience_people)".into());
    }
    // Raw provider bodies hold every field; the ledger is the account's spend.
    if view == "raw_responses" || (view == "api_calls" && !audience.sees_spend()) {
        conditions.push("false".into());
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    format!("CREATE VIEW scoped.{view} AS SELECT {select} FROM main.{view}{filter};\n", view = quote(view))
}

/// The most restricted of some roles, for what a shared site may show.
fn most_restricted(roles: impl Iterator<Item = Role>) -> Role {
    let rank = |r: &Role| match r {
        Role::Sdr => 0,
        Role::Viewer => 1,
        Role::Se | Role::Ae => 2,
        Role::Manager => 3,
        Role::Admin => 4,
    };
    roles.min_by_key(rank).unwrap_or(Role::Viewer)
}

/// Every audience of the people file: each person, each team, each `[[audiences]]` group.
pub fn all(people: &People) -> Vec<Audience> {
    let mut out = Vec::new();
    for person in &people.people {
        out.push(Audience {
            id: person.id.clone(),
            name: person.name.clone(),
            kind: "person",
            role: person.role,
            members: Members::Person(person.id.clone()),
            feeds: vec![person.id.clone()],
        });
    }
    for team in &people.teams {
        let members: Vec<&crate::config::alerts::Person> =
            people.people.iter().filter(|p| p.team.as_deref() == Some(team.id.as_str())).collect();
        out.push(Audience {
            id: team.id.clone(),
            name: team.name.clone(),
            kind: "team",
            role: most_restricted(members.iter().map(|p| p.role)),
            members: Members::Team(team.id.clone()),
            feeds: members.iter().map(|p| p.id.clone()).collect(),
        });
    }
    for group in &people.audiences {
        out.push(Audience {
            id: group.id.clone(),
            name: group.name.clone(),
            kind: "group",
            role: group.role,
            members: Members::Territories(group.territories.clone()),
            feeds: Vec::new(),
        });
    }
    out
}

/// The audience called `name`, or an error listing the names there are.
pub fn find(people: &People, name: &str) -> Result<Audience, String> {
    let everyone = all(people);
    if let Some(found) = everyone.iter().find(|a| a.id == name) {
        return Ok(found.clone());
    }
    let names: BTreeSet<&str> = everyone.iter().map(|a| a.id.as_str()).collect();
    Err(format!(
        "no audience {name:?}: audiences are people, teams and [[audiences]] of the people file ({})",
        names.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn people(dir: &std::path::Path) -> People {
        let path = dir.join("people.toml");
        std::fs::write(
            &path,
            r#"
version = 1
[regions]
na = ["US"]
[[teams]]
id = "t"
name = "Team"
[[territories]]
id = "us"
regions = ["na"]
[[territories]]
id = "us-hot"
regions = ["na"]
min_icp_score = 70
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
territories = ["us-hot"]
[[people]]
id = "boss"
name = "Boss"
role = "admin"
[[people]]
id = "far"
name = "Far"
role = "ae"
[[assignments]]
domain = "given.com"
owner = "far"
[[audiences]]
id = "hot-sdrs"
name = "Hot SDRs"
role = "sdr"
territories = ["us-hot"]
"#,
        )
        .unwrap();
        People::load(&path).unwrap()
    }

    #[test]
    fn people_teams_and_groups_see_their_accounts_and_their_roles_fields() {
        let dir = tempfile::tempdir().unwrap();
        let people = people(dir.path());
        let account = |country: &str, score: i64| Account {
            country: Some(country.into()),
            vertical: Some("Commerce".into()),
            icp_score: Some(score),
        };
        let sees = |who: &str, domain: &str, a: &Account| find(&people, who).unwrap().sees(&people, domain, a);
        let (us_warm, us_hot, fr) = (account("US", 50), account("US", 80), account("FR", 90));
        // Sid's own territory is the hot one; Ann's warm account is his team's: he sees both.
        assert!(sees("sid", "a.com", &us_hot) && sees("sid", "b.com", &us_warm));
        assert!(!sees("sid", "c.fr", &fr) && !sees("ann", "c.fr", &fr));
        // An assigned account is its owner's only.
        assert!(sees("far", "given.com", &us_warm) && !sees("ann", "given.com", &us_warm));
        // The admin sees every account; the team what its members own; the group its territory.
        assert!(sees("boss", "c.fr", &fr));
        assert!(sees("t", "a.com", &us_hot) && !sees("t", "given.com", &us_warm));
        assert!(sees("hot-sdrs", "a.com", &us_hot) && !sees("hot-sdrs", "b.com", &us_warm));
        // Fields: an SDR, and a team with an SDR in it, see no financials; spend is for admins and managers.
        let role = |who: &str| find(&people, who).unwrap();
        assert!(!role("sid").sees_financials() && !role("t").sees_financials() && !role("hot-sdrs").sees_financials());
        assert!(role("ann").sees_financials() && role("boss").sees_spend() && !role("ann").sees_spend());
        assert_eq!(role("t").feeds, ["ann", "sid"]);
        assert!(find(&people, "nobody").unwrap_err().contains("ann, boss, far, hot-sdrs, sid, t"));
    }
}
