-- output: heatmap.json
-- ICP tier × vertical counts of accounts (a family counts once): one cell per pair that has targets.
SELECT coalesce(to_json(list(json_object(
    'tier', icp_tier, 'tier_name', icp_tier_name, 'vertical', vertical, 'count', n
) ORDER BY icp_tier, vertical)), '[]')::VARCHAR AS json
FROM (
    SELECT icp_tier, icp_tier_name, coalesce(vertical, '(unknown)') AS vertical, count(*) AS n
    FROM targets
    WHERE listed
    GROUP BY ALL
);
