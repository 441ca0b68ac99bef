-- How many targets of each vertical sit in each ICP tier (latest snapshot).
SELECT
    coalesce(vertical, '(unknown)') AS vertical,
    count(*) FILTER (WHERE icp_tier_name = 'hot') AS hot,
    count(*) FILTER (WHERE icp_tier_name = 'warm') AS warm,
    count(*) FILTER (WHERE icp_tier_name = 'cool') AS cool,
    count(*) FILTER (WHERE icp_tier_name = 'cold') AS cold,
    count(*) AS total,
    round(avg(icp_score), 1) AS avg_score
FROM targets
GROUP BY ALL
ORDER BY total DESC, vertical;
