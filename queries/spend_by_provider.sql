-- Calls and spend per provider and endpoint, per snapshot (the ledger).
SELECT
    snapshot_id,
    provider,
    endpoint,
    count(*) AS calls,
    count(*) FILTER (WHERE outcome IN ('failed', 'invalid')) AS failed,
    round(sum(cost_usd), 2) AS spend_usd,
    round(median(latency_ms), 1) AS median_latency_ms
FROM api_calls
GROUP BY ALL
ORDER BY snapshot_id, provider, endpoint;
