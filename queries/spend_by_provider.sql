-- Calls and spend per provider and month, by when the calls were made. Every paid call is
-- counted once: a replaced snapshot's calls were paid too; a rebuild's ledger is a copy and
-- is not in `api_calls`.
-- param: since date = 2000-01-01
SELECT
    strftime(called_at, '%Y-%m') AS month,
    provider,
    count(*) AS calls,
    count(*) FILTER (WHERE http_status IS NOT NULL) AS answered,
    count(*) FILTER (WHERE outcome IN ('failed', 'invalid')) AS failed,
    round(sum(cost_usd), 2) AS spend_usd,
    round(median(latency_ms), 1) AS median_latency_ms
FROM api_calls
WHERE called_at::DATE >= $since
GROUP BY ALL
ORDER BY month, provider;
