-- The best displacement targets of the latest snapshot, with why they score: one row per
-- account (a family's members — a company's other sites — are listed under its primary).
-- `*` means any: `--param tier=hot --param vertical=Commerce` narrows the list.
-- param: tier text = *
-- param: vertical text = *
-- param: min_score int = 0
-- param: limit int = 25
SELECT
    domain,
    company_name,
    partner_tech,
    vertical,
    current_search,
    round(sw_monthly_visits / 1e6, 1) AS visits_m,
    round(tech_spend / 1e3) AS spend_k,
    icp_score,
    icp_tier_name AS tier,
    array_to_string(score_reasons, '; ') AS reasons,
    family_id
FROM targets
WHERE listed
  AND ($tier = '*' OR icp_tier_name = lower($tier))
  AND ($vertical = '*' OR lower(vertical) = lower($vertical))
  AND icp_score >= $min_score
ORDER BY icp_score DESC, sw_monthly_visits DESC NULLS LAST, domain
LIMIT $limit;
