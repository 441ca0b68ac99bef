-- output: stats.json
-- Counts per tier, per vertical and per partner technology, of accounts (a family counts once).
WITH
    t AS (SELECT * FROM targets WHERE listed),
    by_tier AS (
        SELECT to_json(list(json_object('tier', icp_tier, 'name', icp_tier_name, 'count', n) ORDER BY icp_tier)) AS j
        FROM (SELECT icp_tier, icp_tier_name, count(*) AS n FROM t GROUP BY ALL)
    ),
    by_vertical AS (
        SELECT to_json(list(json_object('vertical', v, 'count', n, 'avg_score', s) ORDER BY n DESC, v)) AS j
        FROM (SELECT coalesce(vertical, '(unknown)') AS v, count(*) AS n, round(avg(icp_score), 1) AS s FROM t GROUP BY ALL)
    ),
    by_partner AS (
        SELECT to_json(list(json_object('partner_tech', p, 'count', n, 'avg_score', s) ORDER BY n DESC, p)) AS j
        FROM (SELECT coalesce(partner_tech, '(unknown)') AS p, count(*) AS n, round(avg(icp_score), 1) AS s FROM t GROUP BY ALL)
    )
SELECT json_object(
    'snapshot_id', (SELECT any_value(snapshot_id) FROM t),
    'targets', (SELECT count(*) FROM t),
    'avg_score', (SELECT round(avg(icp_score), 1) FROM t),
    'by_tier', coalesce((SELECT j FROM by_tier), '[]'),
    'by_vertical', coalesce((SELECT j FROM by_vertical), '[]'),
    'by_partner_tech', coalesce((SELECT j FROM by_partner), '[]')
)::VARCHAR AS json;
