-- generated from config/examples/indo_rct.yaml
SELECT "_row", 'id' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "id" IS NULL
UNION ALL
SELECT "_row", 'rx' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "rx" IS NULL
UNION ALL
SELECT "_row", 'outcome' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "outcome" IS NULL
UNION ALL
SELECT "_row", 'age' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "age__raw" IS NOT NULL AND NOT COALESCE("age" > -1e308 AND "age" < 1e308, false)
UNION ALL
SELECT "_row", 'risk' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "risk__raw" IS NOT NULL AND NOT COALESCE("risk" > -1e308 AND "risk" < 1e308, false)
UNION ALL
SELECT "_row", 'rx' AS "column", 'allowed' AS "rule", 'not one of the allowed levels [0_placebo, 1_indomethacin]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "rx" IS NOT NULL AND "rx" NOT IN ('0_placebo', '1_indomethacin')
UNION ALL
SELECT "_row", 'outcome' AS "column", 'outcome' AS "rule", 'expected one of [1_yes, 0_no]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "outcome" IS NOT NULL AND "outcome" NOT IN ('1_yes', '0_no');
