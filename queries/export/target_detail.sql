-- output: targets/{key}.json
-- One file per target (key = domain; unsafe keys are never paths): its row and score
-- breakdown, company, tech stack (live and dead, with dates), traffic trend, financials,
-- executives and quotes, hiring, trigger events, competitors and its change history. Each
-- module row keeps its `source` and `fetched_at`. Built from the audience's views: what a
-- role may not see is not there. (The struct is written as JSON by the exporter.) A site
-- that moved keeps its trend and change history: rows under its old domain are listed
-- under the account's current one (`account_domain`), each with the domain it had then.
-- Lists are ordered with list_sort over (sort keys, row) structs: an ORDER BY inside the
-- aggregate costs several times more.
WITH
    tech AS (
        SELECT domain, list_transform(list_sort(list({'a': NOT s.live, 'b': NOT s.is_search_vendor, 'c': s.technology, 'row': s})), x -> x.row) AS items
        FROM tech_stack AS s GROUP BY domain
    ),
    trend AS (
        SELECT account_domain AS domain, list_transform(list_sort(list({'a': snapshot_id, 'row': {
            'snapshot': snapshot_id, 'domain': domain, 'monthly_visits': sw_monthly_visits, 'growth_mom': sw_visits_growth_mom,
            'bounce_rate': sw_bounce_rate, 'search_traffic_pct': sw_search_traffic_pct,
            'icp_score': icp_score, 'tier': icp_tier_name, 'fetched_at': last_enriched
        }})), x -> x.row) AS items
        FROM targets_history GROUP BY account_domain
    ),
    history AS (
        SELECT domain, list_reverse(list_transform(list_sort(list({'a': h.fiscal_year_end, 'row': h})), x -> x.row)) AS items
        FROM financial_history AS h GROUP BY domain
    ),
    execs AS (
        SELECT domain, list_transform(list_sort(list({'a': e.role IS NULL, 'b': e.role, 'c': e.name, 'row': e})), x -> x.row) AS items
        FROM executives AS e GROUP BY domain
    ),
    quotes AS (
        SELECT domain, list_transform(list_sort(list({'a': q.published IS NULL, 'b': DATE '2999-12-31' - q.published, 'c': q.name, 'row': q})), x -> x.row) AS items
        FROM executive_quotes AS q GROUP BY domain
    ),
    boards AS (
        SELECT domain, list_transform(list_sort(list({'a': h.platform, 'b': h.board, 'row': h})), x -> x.row) AS items
        FROM hiring AS h GROUP BY domain
    ),
    postings AS (
        SELECT domain, list_transform(list_sort(list({'a': p.posted_at IS NULL, 'b': DATE '2999-12-31' - p.posted_at, 'c': p.title, 'row': p})), x -> x.row) AS items
        FROM job_postings AS p GROUP BY domain
    ),
    triggers AS (
        SELECT domain, list_transform(list_sort(list({'a': x.published IS NULL, 'b': DATE '2999-12-31' - x.published, 'c': x.headline, 'row': x})), y -> y.row) AS items
        FROM trigger_events AS x GROUP BY domain
    ),
    rivals AS (
        SELECT domain, list_transform(list_sort(list({'a': -c.score, 'b': c.competitor, 'row': c})), x -> x.row) AS items
        FROM competitors AS c GROUP BY domain
    ),
    timeline AS (
        SELECT account_domain AS domain, list_transform(list_sort(list({'a': DATE '2999-12-31' - to_snapshot::DATE, 'b': field, 'c': item, 'row': {
            'snapshot': to_snapshot, 'domain': domain, 'field': field, 'item': item, 'change': change,
            'old_value': old_value, 'new_value': new_value, 'category': category,
            'significance': significance, 'summary': summary, 'source': new_source,
            'fetched_at': new_fetched_at, 'evidence': evidence
        }})), x -> x.row) AS items
        FROM changes GROUP BY account_domain
    ),
    -- Everything but the target's own row, joined on its domain alone; the row (wide,
    -- nested) is joined once, last: carried through the 17 joins it cost a fifth of the query.
    detail AS (
        SELECT k.domain, {
            'company': c,
            'tech_spend': ts,
            'tech_stack': coalesce(tech.items, []),
            'traffic': tr,
            'traffic_sources': src,
            'traffic_trend': coalesce(trend.items, []),
            'financials': f,
            'financial_history': coalesce(history.items, []),
            'stock': st,
            'analysts': an,
            'executives': coalesce(execs.items, []),
            'quotes': coalesce(quotes.items, []),
            'hiring': coalesce(boards.items, []),
            'job_postings': coalesce(postings.items, []),
            'trigger_events': coalesce(triggers.items, []),
            'competitors': coalesce(rivals.items, []),
            'changes': coalesce(timeline.items, [])
        } AS d
        FROM (SELECT domain FROM targets) AS k
        LEFT JOIN company AS c USING (domain)
        LEFT JOIN tech_spend AS ts USING (domain)
        LEFT JOIN traffic AS tr USING (domain)
        LEFT JOIN traffic_sources AS src USING (domain)
        LEFT JOIN financials AS f USING (domain)
        LEFT JOIN stock AS st USING (domain)
        LEFT JOIN analyst_recommendations AS an USING (domain)
        LEFT JOIN tech USING (domain)
        LEFT JOIN trend USING (domain)
        LEFT JOIN history USING (domain)
        LEFT JOIN execs USING (domain)
        LEFT JOIN quotes USING (domain)
        LEFT JOIN boards USING (domain)
        LEFT JOIN postings USING (domain)
        LEFT JOIN triggers USING (domain)
        LEFT JOIN rivals USING (domain)
        LEFT JOIN timeline USING (domain)
    )
SELECT t.domain AS key,
       {
           'target': t,
           'company': d.company,
           'tech_spend': d.tech_spend,
           'tech_stack': d.tech_stack,
           'traffic': d.traffic,
           'traffic_sources': d.traffic_sources,
           'traffic_trend': d.traffic_trend,
           'financials': d.financials,
           'financial_history': d.financial_history,
           'stock': d.stock,
           'analysts': d.analysts,
           'executives': d.executives,
           'quotes': d.quotes,
           'hiring': d.hiring,
           'job_postings': d.job_postings,
           'trigger_events': d.trigger_events,
           'competitors': d.competitors,
           'changes': d.changes
       } AS json
FROM targets AS t
JOIN detail USING (domain)
;
