//! BuiltWith's free pre-check (m00, the Free API `free1`): before a paid Domain lookup,
//! a domain BuiltWith does not know is not looked up, and one whose groups that matter
//! are unchanged since its last full lookup keeps that lookup (carried with its dates)
//! until the lookup is older than the maximum age. The simulator serves `free1`.

mod support;

use support::TestStore;

fn n(store: &TestStore, sql: &str) -> i64 {
    store.query(sql)[0]["n"].as_i64().unwrap()
}

fn paid_lookups(store: &TestStore, date: &str) -> i64 {
    n(
        store,
        &format!(
            "SELECT count(*) AS n FROM api_calls WHERE endpoint = 'domain' AND snapshot_id = '{date}' AND http_status IS NOT NULL"
        ),
    )
}

#[test]
fn the_free_api_spares_paid_lookups_of_unknown_and_unchanged_domains() {
    let store = TestStore::new();
    let run = |date: &str| store.ok(&["run", "--limit", "300", "--date", date]);

    // Night 1: every domain is new; the unknown ones are not looked up.
    run("2026-11-20");
    let verdicts = |v: &str| n(&store, &format!("SELECT count(*) AS n FROM builtwith_free WHERE verdict = '{v}'"));
    let unknown = verdicts("unknown");
    assert!(unknown > 0, "the simulator has domains BuiltWith does not know");
    assert_eq!(verdicts("new") + unknown, 300);
    assert_eq!(paid_lookups(&store, "2026-11-20"), 300 - unknown);
    assert_eq!(
        n(&store, "SELECT count(*) AS n FROM api_calls WHERE outcome = 'skipped_precheck' AND modules = 'm01,m02'"),
        unknown
    );
    assert_eq!(
        n(&store, "SELECT count(*) AS n FROM fetches WHERE module IN ('m01', 'm02') AND outcome = 'no_data'"),
        2 * unknown,
        "m01 and m02 hold no data for a domain BuiltWith does not know"
    );
    assert_eq!(n(&store, "SELECT count(*) AS n FROM api_calls WHERE endpoint = 'free' AND cost_usd > 0"), 0, "free");
    assert_eq!(n(&store, "SELECT count(*) AS n FROM api_calls WHERE endpoint = 'free'"), 300);
    let targets = n(&store, "SELECT count(*) AS n FROM targets");
    let stacks = n(&store, "SELECT count(DISTINCT domain) AS n FROM tech_stack");

    // A week later m01 is due again: only the domains whose groups changed are looked up.
    run("2026-11-27");
    let (unchanged, changed) = (verdicts("unchanged"), verdicts("changed"));
    assert!(unchanged > 200 && changed > 0, "{unchanged} unchanged, {changed} changed");
    assert_eq!(paid_lookups(&store, "2026-11-27"), changed);
    // The kept lookups are carried with their dates: the rows of the first night's run.
    let kept = |earlier: bool| {
        n(
            &store,
            &format!(
                "SELECT count(*) AS n FROM company c JOIN builtwith_free f USING (domain)
                 WHERE f.verdict = 'unchanged' AND f.looked_up_on = DATE '2026-11-20'
                   AND (c.fetched_at < f.fetched_at) = {earlier}"
            ),
        )
    };
    assert_eq!((kept(true), kept(false)), (unchanged, 0));
    assert_eq!(n(&store, "SELECT count(DISTINCT domain) AS n FROM tech_stack"), stacks, "no stack lost");
    assert_eq!(n(&store, "SELECT count(*) AS n FROM targets"), targets, "no target lost");

    // The next night the checks are still in force: no BuiltWith lookup, paid or free.
    let plan = store.ok(&["plan", "--limit", "300", "--date", "2026-11-28"]);
    assert!(plan.contains(&format!("{unchanged} keep their last lookup")), "{plan}");
    run("2026-11-28");
    assert_eq!(
        n(&store, "SELECT count(*) AS n FROM api_calls WHERE provider = 'builtwith' AND snapshot_id = '2026-11-28'"),
        0
    );

    // Past the maximum age (28 days) the lookup is made whatever the groups say.
    run("2026-12-19");
    assert!(verdicts("expired") > 200, "{}", verdicts("expired"));
    assert_eq!(verdicts("unchanged") + verdicts("unknown") + paid_lookups(&store, "2026-12-19"), 300);
}
