-- output: targets/{key}.json
-- One file per target with its full row (key = domain; unsafe keys are never paths).
SELECT domain AS key, to_json(t)::VARCHAR AS json
FROM targets AS t
ORDER BY domain;
