//! Domain families: sites that share a strong identifier in BuiltWith's Relationships
//! (an analytics account here) are one company — one family with one primary, the site
//! with the most traffic — and the lists show the account once. Shared hosting never joins.

mod support;

use support::{TestStore, repo};

#[test]
fn regional_sites_collapse_into_one_family_with_one_primary() {
    let store = TestStore::new();
    let seed = std::fs::read_to_string(repo().join("data/seed/targets.csv")).unwrap();
    let book = store.path().join("book.csv");
    let first: Vec<&str> = seed.lines().take(41).collect();
    std::fs::write(&book, first.join("\n") + "\n").unwrap();
    let book_arg = book.display().to_string();
    store.ok(&["run", "--targets", &book_arg, "--date", "2026-11-20"]);

    // A book domain with regional sites sharing its analytics account: add two of them to the book.
    let siblings = store.query(
        "SELECT domain, list(related ORDER BY related) AS sites FROM related_domains
         WHERE via = 'ga' GROUP BY domain HAVING count(*) >= 2 ORDER BY domain LIMIT 1",
    );
    let brand = siblings[0]["domain"].as_str().unwrap().to_string();
    let sites: Vec<String> =
        siblings[0]["sites"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).take(2).collect();
    let mut text = first.join("\n") + "\n";
    for site in &sites {
        text.push_str(&format!("{site},{site} regional,Shopify Plus,Commerce,DE\n"));
    }
    std::fs::write(&book, text).unwrap();
    store.ok(&["run", "--targets", &book_arg, "--date", "2026-11-21"]);

    let family = store.query(&format!(
        "SELECT family_id, count(*) AS members, count(*) FILTER (WHERE is_primary) AS primaries,
                count(*) FILTER (WHERE in_book) AS in_book
         FROM families WHERE family_id = (SELECT family_id FROM families WHERE domain = '{brand}') GROUP BY ALL"
    ));
    assert_eq!(family.len(), 1, "{brand} is in one family");
    assert_eq!(family[0]["primaries"], 1, "{family:?}");
    assert_eq!(family[0]["in_book"], 3, "{brand} and its two regional sites: {family:?}");
    let targets = store.query(&format!(
        "SELECT domain, family_id, family_primary, sw_monthly_visits FROM targets
         WHERE domain IN ('{brand}', '{}', '{}') ORDER BY domain",
        sites[0], sites[1]
    ));
    assert_eq!(targets.len(), 3);
    let primary = targets[0]["family_primary"].as_str().unwrap().to_string();
    assert!(
        targets.iter().all(|t| t["family_primary"] == primary.as_str() && t["family_id"] == family[0]["family_id"])
    );
    // The primary is the family's busiest site.
    let busiest = targets
        .iter()
        .max_by(|a, b| {
            a["sw_monthly_visits"].as_f64().unwrap_or(-1.0).total_cmp(&b["sw_monthly_visits"].as_f64().unwrap_or(-1.0))
        })
        .unwrap();
    assert_eq!(busiest["domain"], primary.as_str());

    // The list shows the account once: the primary, not its other sites.
    let listed = store.ok(&["query", "--file", "queries/top_targets.sql", "--param", "limit=1000", "--format", "csv"]);
    let rows: Vec<&str> = listed
        .lines()
        .filter(|l| [&brand, &sites[0], &sites[1]].iter().any(|d| l.starts_with(&format!("{d},"))))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with(&format!("{primary},")));

    // Shared hosting never makes a family tie; every family has exactly one primary.
    let strays = store.query(
        "SELECT count(*) AS n FROM (SELECT family_id FROM families GROUP BY family_id HAVING count(*) FILTER (WHERE is_primary) <> 1)",
    );
    assert_eq!(strays[0]["n"], 0);
    let by_ip = store.query("SELECT count(*) AS n FROM families WHERE identifiers LIKE '%ip:%'");
    assert_eq!(by_ip[0]["n"], 0);
}
