-- The 25 best displacement targets of the latest snapshot, with why they score.
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
    array_to_string(score_reasons, '; ') AS reasons
FROM targets
ORDER BY icp_score DESC, sw_monthly_visits DESC NULLS LAST, domain
LIMIT 25;
