-- output: changes.json
-- What changed in the last 30 days of snapshots, newest and most significant first.
SELECT coalesce(to_json(list({
    'event_id': event_id, 'snapshot': to_snapshot, 'from_snapshot': from_snapshot, 'domain': domain,
    'field': field, 'item': item, 'change': change, 'old_value': old_value, 'new_value': new_value,
    'category': category, 'significance': significance, 'summary': summary,
    'algolia_relevance': algolia_relevance, 'source': new_source, 'fetched_at': new_fetched_at,
    'evidence': evidence
} ORDER BY to_snapshot DESC,
    CASE significance WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END, domain, field, item)), '[]')::VARCHAR AS json
FROM changes
WHERE to_snapshot::DATE > (SELECT max(to_snapshot)::DATE FROM changes) - INTERVAL 30 DAY;
