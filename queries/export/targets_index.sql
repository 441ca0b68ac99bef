-- output: targets-index.json
-- What the targets list is made of: its shards (file, rows) and the values each filter offers.
-- One row per account: a family's other sites are under its primary (see targets_list.sql).
WITH accounts AS (
    SELECT * FROM targets WHERE listed
),
counted AS (
    SELECT (row_number() OVER (ORDER BY icp_score DESC, domain) - 1) // 1000 + 1 AS shard FROM accounts
)
SELECT json_object(
    'rows', (SELECT count(*) FROM accounts),
    'shard_rows', 1000,
    'shards', coalesce((
        SELECT list(json_object('file', 'targets-' || lpad(shard::VARCHAR, 4, '0') || '.json', 'rows', n) ORDER BY shard)
        FROM (SELECT shard, count(*) AS n FROM counted GROUP BY shard)), []),
    'facets', json_object(
        'tier', (SELECT coalesce(list(DISTINCT icp_tier_name ORDER BY icp_tier_name), []) FROM accounts),
        'vertical', (SELECT coalesce(list(DISTINCT vertical ORDER BY vertical) FILTER (WHERE vertical IS NOT NULL), []) FROM accounts),
        'country', (SELECT coalesce(list(DISTINCT country ORDER BY country) FILTER (WHERE country IS NOT NULL), []) FROM accounts),
        'partner_tech', (SELECT coalesce(list(DISTINCT partner_tech ORDER BY partner_tech) FILTER (WHERE partner_tech IS NOT NULL), []) FROM accounts),
        'current_search', (SELECT coalesce(list(DISTINCT current_search ORDER BY current_search) FILTER (WHERE current_search IS NOT NULL), []) FROM accounts)
    )
)::VARCHAR AS json;
