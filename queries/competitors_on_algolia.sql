-- Per target, the competitors (SimilarWeb's similar sites) that already run Algolia: the
-- reference customers to name on the call.
-- param: min_competitors int = 1
SELECT
    t.domain,
    t.company_name,
    t.vertical,
    t.icp_score,
    t.icp_tier_name AS tier,
    count(*) AS competitors_on_algolia,
    string_agg(c.competitor, ', ' ORDER BY c.score DESC, c.competitor) AS competitors
FROM targets AS t
JOIN competitors AS c USING (domain)
WHERE c.uses_algolia
GROUP BY ALL
HAVING count(*) >= $min_competitors
ORDER BY competitors_on_algolia DESC, t.icp_score DESC, t.domain;
