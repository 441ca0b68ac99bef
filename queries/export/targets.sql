-- output: targets.json
-- The dashboard's list: one object per target, best first.
SELECT coalesce(to_json(list(json_object(
    'domain', domain,
    'company_name', company_name,
    'partner_tech', partner_tech,
    'vertical', vertical,
    'country', country,
    'current_search', current_search,
    'sw_monthly_visits', sw_monthly_visits,
    'tech_spend', tech_spend,
    'is_public', is_public,
    'icp_score', icp_score,
    'icp_tier', icp_tier,
    'icp_tier_name', icp_tier_name,
    'enrichment_level', enrichment_level,
    'snapshot_id', snapshot_id
) ORDER BY icp_score DESC, domain)), '[]')::VARCHAR AS json
FROM targets;
