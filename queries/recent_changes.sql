-- What changed in the last N days of snapshots, most significant first: the morning read.
-- param: days int = 7
-- param: min_significance text = high
SELECT to_snapshot, significance, domain, category, summary, algolia_relevance
FROM changes
WHERE to_snapshot::DATE > (SELECT max(to_snapshot)::DATE FROM changes) - to_days($days::INTEGER)
  AND CASE significance WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END
      <= CASE lower($min_significance) WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END
ORDER BY to_snapshot DESC,
         CASE significance WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
         domain
LIMIT 200;
