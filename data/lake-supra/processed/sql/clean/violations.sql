-- generated from config/examples/supraclavicular.yaml
SELECT "_row", 'subject' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "subject" IS NULL
UNION ALL
SELECT "_row", 'group' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "group" IS NULL
UNION ALL
SELECT "_row", 'onset_sensory' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "onset_sensory__raw" IS NULL
UNION ALL
SELECT "_row", 'nerve_block_censor' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "nerve_block_censor" IS NULL
UNION ALL
SELECT "_row", 'age' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "age__raw" IS NOT NULL AND NOT COALESCE("age" > -1e308 AND "age" < 1e308, false)
UNION ALL
SELECT "_row", 'bmi' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "bmi__raw" IS NOT NULL AND NOT COALESCE("bmi" > -1e308 AND "bmi" < 1e308, false)
UNION ALL
SELECT "_row", 'onset_sensory' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "onset_sensory__raw" IS NOT NULL AND NOT COALESCE("onset_sensory" > -1e308 AND "onset_sensory" < 1e308, false)
UNION ALL
SELECT "_row", 'group' AS "column", 'allowed' AS "rule", 'not one of the allowed levels [1, 2]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "group" IS NOT NULL AND "group" NOT IN ('1', '2')
UNION ALL
SELECT "_row", 'outcome' AS "column", 'outcome' AS "rule", 'the outcome expression is NULL' AS "reason", 'quarantine' AS "action" FROM typed WHERE (onset_sensory <= 20) IS NULL
UNION ALL
SELECT "_row", 'onset_sensory' AS "column", 'time' AS "rule", 'expected a non-negative time' AS "reason", 'quarantine' AS "action" FROM typed WHERE "onset_sensory" < 0
UNION ALL
SELECT "_row", 'nerve_block_censor' AS "column", 'event' AS "rule", 'expected one of [0, 1]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "nerve_block_censor" IS NOT NULL AND "nerve_block_censor" NOT IN ('0', '1');
