-- output: targets/{key}.json
-- One file per target (key = domain; unsafe keys are never paths): its row and score
-- breakdown, company, tech stack (live and dead, with dates), traffic trend, financials,
-- executives and quotes, hiring, trigger events, competitors and its change history. Each
-- module row keeps its `source` and `fetched_at`. Built from the audience's views: what a
-- role may not see is not there. A site that moved keeps its trend and change history:
-- rows under its old domain are listed under the account's current one (`account_domain`),
-- each with the domain it had then.
--
-- One statement per field of the page, each `(key, field)`: the first statement's keys
-- are the files, and each file is the object of every statement's field, in this order
-- (written as JSON by the exporter). Joining the seventeen nested parts in one statement
-- cost three times more than building them apart. Lists are ordered with list_sort over
-- (sort keys, row) structs: an ORDER BY inside the aggregate costs several times more.
SELECT t.domain AS key, t AS target FROM targets AS t;

SELECT k.domain AS key, c AS company FROM targets AS k LEFT JOIN company AS c USING (domain);

SELECT k.domain AS key, ts AS tech_spend FROM targets AS k LEFT JOIN tech_spend AS ts USING (domain);

SELECT k.domain AS key, coalesce(tech.items, []) AS tech_stack
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': NOT s.live, 'b': NOT s.is_search_vendor, 'c': s.technology, 'row': s})), x -> x.row) AS items
    FROM tech_stack AS s GROUP BY domain
) AS tech USING (domain);

SELECT k.domain AS key, tr AS traffic FROM targets AS k LEFT JOIN traffic AS tr USING (domain);

SELECT k.domain AS key, src AS traffic_sources FROM targets AS k LEFT JOIN traffic_sources AS src USING (domain);

SELECT k.domain AS key, coalesce(trend.items, []) AS traffic_trend
FROM targets AS k LEFT JOIN (
    SELECT account_domain AS domain, list_transform(list_sort(list({'a': snapshot_id, 'row': {
        'snapshot': snapshot_id, 'domain': domain, 'monthly_visits': sw_monthly_visits, 'growth_mom': sw_visits_growth_mom,
        'bounce_rate': sw_bounce_rate, 'search_traffic_pct': sw_search_traffic_pct,
        'icp_score': icp_score, 'tier': icp_tier_name, 'fetched_at': last_enriched
    }})), x -> x.row) AS items
    FROM targets_history GROUP BY account_domain
) AS trend USING (domain);

SELECT k.domain AS key, f AS financials FROM targets AS k LEFT JOIN financials AS f USING (domain);

SELECT k.domain AS key, coalesce(history.items, []) AS financial_history
FROM targets AS k LEFT JOIN (
    SELECT domain, list_reverse(list_transform(list_sort(list({'a': h.fiscal_year_end, 'row': h})), x -> x.row)) AS items
    FROM financial_history AS h GROUP BY domain
) AS history USING (domain);

SELECT k.domain AS key, st AS stock FROM targets AS k LEFT JOIN stock AS st USING (domain);

SELECT k.domain AS key, an AS analysts FROM targets AS k LEFT JOIN analyst_recommendations AS an USING (domain);

SELECT k.domain AS key, coalesce(execs.items, []) AS executives
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': e.role IS NULL, 'b': e.role, 'c': e.name, 'row': e})), x -> x.row) AS items
    FROM executives AS e GROUP BY domain
) AS execs USING (domain);

SELECT k.domain AS key, coalesce(quotes.items, []) AS quotes
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': q.published IS NULL, 'b': DATE '2999-12-31' - q.published, 'c': q.name, 'row': q})), x -> x.row) AS items
    FROM executive_quotes AS q GROUP BY domain
) AS quotes USING (domain);

SELECT k.domain AS key, coalesce(boards.items, []) AS hiring
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': h.platform, 'b': h.board, 'row': h})), x -> x.row) AS items
    FROM hiring AS h GROUP BY domain
) AS boards USING (domain);

SELECT k.domain AS key, coalesce(postings.items, []) AS job_postings
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': p.posted_at IS NULL, 'b': DATE '2999-12-31' - p.posted_at, 'c': p.title, 'row': p})), x -> x.row) AS items
    FROM job_postings AS p GROUP BY domain
) AS postings USING (domain);

SELECT k.domain AS key, coalesce(triggers.items, []) AS trigger_events
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': x.published IS NULL, 'b': DATE '2999-12-31' - x.published, 'c': x.headline, 'row': x})), y -> y.row) AS items
    FROM trigger_events AS x GROUP BY domain
) AS triggers USING (domain);

SELECT k.domain AS key, coalesce(rivals.items, []) AS competitors
FROM targets AS k LEFT JOIN (
    SELECT domain, list_transform(list_sort(list({'a': -c.score, 'b': c.competitor, 'row': c})), x -> x.row) AS items
    FROM competitors AS c GROUP BY domain
) AS rivals USING (domain);

SELECT k.domain AS key, coalesce(timeline.items, []) AS changes
FROM targets AS k LEFT JOIN (
    SELECT account_domain AS domain, list_transform(list_sort(list({'a': DATE '2999-12-31' - to_snapshot::DATE, 'b': field, 'c': item, 'row': {
        'snapshot': to_snapshot, 'domain': domain, 'field': field, 'item': item, 'change': change,
        'old_value': old_value, 'new_value': new_value, 'category': category,
        'significance': significance, 'summary': summary, 'source': new_source,
        'fetched_at': new_fetched_at, 'evidence': evidence
    }})), x -> x.row) AS items
    FROM changes GROUP BY account_domain
) AS timeline USING (domain);
