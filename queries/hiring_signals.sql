-- Roles posted in the last N days (to the latest snapshot's date) that signal a search,
-- e-commerce, personalization or leadership project. `signal` narrows to one kind.
-- param: days int = 7
-- param: signal text = *
SELECT
    p.posted_at,
    p.domain,
    t.company_name,
    t.icp_tier_name AS tier,
    p.title,
    p.signals,
    p.location,
    p.url
FROM job_postings AS p
LEFT JOIN targets AS t USING (domain)
WHERE p.signals IS NOT NULL
  AND ($signal = '*' OR list_contains(string_split(p.signals, ','), lower($signal)))
  AND p.posted_at > (SELECT max(date) FROM runs WHERE current) - to_days($days::INTEGER)
ORDER BY p.posted_at DESC, t.icp_score DESC NULLS LAST, p.domain, p.title;
