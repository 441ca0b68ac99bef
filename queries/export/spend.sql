-- output: spend.json
-- requires: spend
-- Calls and spend per provider and month, by when the calls were made (every paid call once).
SELECT coalesce(to_json(list(json_object(
    'month', month, 'provider', provider, 'calls', calls, 'failed', failed, 'spend_usd', spend_usd
) ORDER BY month, provider)), '[]')::VARCHAR AS json
FROM (
    SELECT strftime(called_at, '%Y-%m') AS month, provider, count(*) AS calls,
           count(*) FILTER (WHERE outcome IN ('failed', 'invalid')) AS failed,
           round(sum(cost_usd), 2) AS spend_usd
    FROM api_calls
    GROUP BY ALL
);
