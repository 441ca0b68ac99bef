-- output: targets-{key}.json
-- The targets list in shards of 1,000 rows, best first (key = shard number), one row per
-- account (a family's other sites are under its primary, `family_primary`, unless the
-- audience does not see the primary), so a browser
-- never parses more than a few MB at once. Every column of the audience's targets view
-- (what a role may not see is not in the view) but the nested ones a row's page has (case
-- studies, provenance, the signals' reasons and evidence), plus `signals`: why-now tags from
-- the last 30 days (search vendor change, trigger event, search hiring, traffic growth, no search).
WITH
    latest AS (SELECT max(to_snapshot)::DATE AS day FROM changes),
    recent_changes AS (
        SELECT domain, list(DISTINCT CASE category
                   WHEN 'search_vendor_change' THEN 'vendor_change'
                   WHEN 'trigger_event' THEN 'trigger_event'
                   WHEN 'executive_change' THEN 'executive_change'
                   ELSE NULL END) AS tags
        FROM changes
        WHERE to_snapshot::DATE > (SELECT day FROM latest) - INTERVAL 30 DAY
        GROUP BY domain
    ),
    ranked AS (
        SELECT t.*,
               list_sort(list_distinct(list_filter(
                   coalesce(c.tags, []) || [
                       CASE WHEN t.search_roles > 0 THEN 'search_hiring' END,
                       CASE WHEN t.sw_visits_growth_mom >= 0.2 THEN 'traffic_growth' END,
                       CASE WHEN t.current_search IS NULL THEN 'no_search' END
                   ], x -> x IS NOT NULL))) AS signals,
               row_number() OVER (ORDER BY t.icp_score DESC, t.domain) AS rank
        FROM (SELECT COLUMNS(c -> c NOT IN ('snapshot_id', 'case_studies', 'provenance')
                                 AND (c = 'score_reasons' OR NOT ends_with(c, '_reasons'))
                                 AND NOT ends_with(c, '_evidence_on'))
              FROM targets
              WHERE listed) AS t
        LEFT JOIN recent_changes AS c USING (domain)
    )
SELECT lpad(((rank - 1) // 1000 + 1)::VARCHAR, 4, '0') AS key,
       list(r ORDER BY rank) AS json
FROM ranked AS r
GROUP BY ALL
ORDER BY key;
