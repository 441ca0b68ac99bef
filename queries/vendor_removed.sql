-- Targets whose search vendor was removed in the last N days (to the latest snapshot):
-- between vendors, the best moment to call. The target's current row beside it.
-- param: days int = 30
SELECT
    c.to_snapshot AS removed_in,
    c.domain,
    t.company_name,
    c.old_value AS removed_vendor,
    t.current_search AS search_now,
    t.icp_score,
    t.icp_tier_name AS tier,
    c.significance,
    c.evidence
FROM changes AS c
LEFT JOIN targets AS t USING (domain)
WHERE c.field = 'search_vendor'
  AND c.change = 'removed'
  AND c.to_snapshot::DATE > (SELECT max(date) FROM runs WHERE current) - to_days($days::INTEGER)
ORDER BY c.to_snapshot DESC, t.icp_score DESC NULLS LAST, c.domain;
