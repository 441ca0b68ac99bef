-- output: targets/{key}.json
-- One file per target (key = domain; unsafe keys are never paths): its row and score
-- breakdown, company, tech stack (live and dead, with dates), traffic trend, financials,
-- executives and quotes, hiring, trigger events, competitors and its change history. Each
-- module row keeps its `source` and `fetched_at`. Built from the audience's views: what a
-- role may not see is not there.
WITH
    tech AS (SELECT domain, list(s ORDER BY s.live DESC, s.is_search_vendor DESC, s.technology) AS items FROM tech_stack AS s GROUP BY domain),
    trend AS (
        SELECT domain, list({
            'snapshot': snapshot_id, 'monthly_visits': sw_monthly_visits, 'growth_mom': sw_visits_growth_mom,
            'bounce_rate': sw_bounce_rate, 'search_traffic_pct': sw_search_traffic_pct,
            'icp_score': icp_score, 'tier': icp_tier_name, 'fetched_at': last_enriched
        } ORDER BY snapshot_id) AS items
        FROM targets_history GROUP BY domain
    ),
    history AS (SELECT domain, list(h ORDER BY h.fiscal_year_end DESC) AS items FROM financial_history AS h GROUP BY domain),
    execs AS (SELECT domain, list(e ORDER BY e.role NULLS LAST, e.name) AS items FROM executives AS e GROUP BY domain),
    quotes AS (SELECT domain, list(q ORDER BY q.published DESC NULLS LAST, q.name) AS items FROM executive_quotes AS q GROUP BY domain),
    boards AS (SELECT domain, list(h ORDER BY h.platform) AS items FROM hiring AS h GROUP BY domain),
    postings AS (SELECT domain, list(p ORDER BY p.posted_at DESC NULLS LAST, p.title) AS items FROM job_postings AS p GROUP BY domain),
    triggers AS (SELECT domain, list(x ORDER BY x.published DESC NULLS LAST, x.headline) AS items FROM trigger_events AS x GROUP BY domain),
    rivals AS (SELECT domain, list(c ORDER BY c.score DESC, c.competitor) AS items FROM competitors AS c GROUP BY domain),
    timeline AS (
        SELECT domain, list({
            'snapshot': to_snapshot, 'field': field, 'item': item, 'change': change,
            'old_value': old_value, 'new_value': new_value, 'category': category,
            'significance': significance, 'summary': summary, 'source': new_source,
            'fetched_at': new_fetched_at, 'evidence': evidence
        } ORDER BY to_snapshot DESC, field, item) AS items
        FROM changes GROUP BY domain
    )
SELECT t.domain AS key,
       to_json({
           'target': t,
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
       })::VARCHAR AS json
FROM targets AS t
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
ORDER BY t.domain;
