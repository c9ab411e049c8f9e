-- generated from config/examples/respiratory.yaml
SELECT "_row", 'subject' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "subject" IS NULL
UNION ALL
SELECT "_row", 'treatment' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "treatment" IS NULL
UNION ALL
SELECT "_row", 'status' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "status" IS NULL
UNION ALL
SELECT "_row", 'age' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "age__raw" IS NOT NULL AND NOT COALESCE("age" > -1e308 AND "age" < 1e308, false)
UNION ALL
SELECT "_row", 'month' AS "column", 'parse' AS "rule", 'expected a finite number' AS "reason", 'quarantine' AS "action" FROM typed WHERE "month__raw" IS NOT NULL AND NOT COALESCE("month" > -1e308 AND "month" < 1e308, false)
UNION ALL
SELECT "_row", 'treatment' AS "column", 'allowed' AS "rule", 'not one of the allowed levels [placebo, treatment]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "treatment" IS NOT NULL AND "treatment" NOT IN ('placebo', 'treatment')
UNION ALL
SELECT "_row", 'status' AS "column", 'outcome' AS "rule", 'expected one of [good, poor]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "status" IS NOT NULL AND "status" NOT IN ('good', 'poor');
