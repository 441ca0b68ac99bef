-- How targets moved between ICP tiers from one date to another: each side is the last
-- snapshot on or before its date. One row per target whose tier changed.
-- param: from date
-- param: to date
WITH
    picked AS (
        SELECT
            (SELECT max(date) FROM runs WHERE current AND date <= $from) AS older,
            (SELECT max(date) FROM runs WHERE current AND date <= $to) AS newer
    ),
    older AS (SELECT * FROM targets_history WHERE snapshot_id::DATE = (SELECT older FROM picked)),
    newer AS (SELECT * FROM targets_history WHERE snapshot_id::DATE = (SELECT newer FROM picked))
SELECT
    coalesce(n.domain, o.domain) AS domain,
    coalesce(n.company_name, o.company_name) AS company_name,
    o.icp_tier_name AS tier_before,
    n.icp_tier_name AS tier_after,
    o.icp_score AS score_before,
    n.icp_score AS score_after,
    CASE
        WHEN o.domain IS NULL THEN 'entered'
        WHEN n.domain IS NULL THEN 'left'
        WHEN n.icp_tier < o.icp_tier THEN 'up'
        ELSE 'down'
    END AS movement,
    o.snapshot_id AS from_snapshot,
    n.snapshot_id AS to_snapshot
FROM older AS o
FULL OUTER JOIN newer AS n USING (domain)
WHERE o.icp_tier IS DISTINCT FROM n.icp_tier
ORDER BY movement, coalesce(n.icp_score, o.icp_score) DESC, domain;
