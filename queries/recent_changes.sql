-- What changed in the last 7 days of snapshots, most significant first: the morning read.
SELECT to_snapshot, significance, domain, category, summary, algolia_relevance
FROM changes
WHERE to_snapshot::DATE > (SELECT max(to_snapshot)::DATE FROM changes) - INTERVAL 7 DAY
  AND significance IN ('critical', 'high')
ORDER BY to_snapshot DESC,
         CASE significance WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
         domain
LIMIT 50;
