-- output: alerts/{key}.json
-- One alert feed per person (key = person id): their alerts on the feed channel, newest
-- first, from the last 30 days of snapshots. An audience's site holds its own people's.
SELECT person AS key,
       to_json(list({
           'alert_id': alert_id, 'snapshot': to_snapshot, 'domain': domain,
           'significance': significance, 'category': category, 'summary': summary,
           'algolia_relevance': algolia_relevance, 'frequency': frequency, 'rule': alert_rule,
           'source': new_source, 'fetched_at': new_fetched_at
       } ORDER BY to_snapshot DESC,
           CASE significance WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END, domain))::VARCHAR AS json
FROM (
    -- One entry per alert, however many of the person's rules matched it.
    SELECT * FROM alerts
    WHERE list_contains(string_split(channels, ','), 'feed')
      AND to_snapshot::DATE >= (SELECT max(to_snapshot)::DATE FROM alerts) - INTERVAL 30 DAY
    QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY frequency DESC, alert_rule) = 1
)
GROUP BY person
ORDER BY person;
