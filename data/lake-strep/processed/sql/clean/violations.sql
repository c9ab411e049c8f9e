-- generated from config/examples/strep_tb.yaml
SELECT "_row", 'patient_id' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "patient_id" IS NULL
UNION ALL
SELECT "_row", 'arm' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "arm" IS NULL
UNION ALL
SELECT "_row", 'improved' AS "column", 'required' AS "rule", 'required value is missing' AS "reason", 'quarantine' AS "action" FROM typed WHERE "improved" IS NULL
UNION ALL
SELECT "_row", 'arm' AS "column", 'allowed' AS "rule", 'not one of the allowed levels [Control, Streptomycin]' AS "reason", 'quarantine' AS "action" FROM typed WHERE "arm" IS NOT NULL AND "arm" NOT IN ('Control', 'Streptomycin')
UNION ALL
SELECT "_row", 'improved' AS "column", 'outcome' AS "rule", 'expected 0/1, true/false or yes/no' AS "reason", 'quarantine' AS "action" FROM typed WHERE "improved" IS NOT NULL AND lower("improved") NOT IN ('1', '1.0', 'true', 'yes', 'y', '0', '0.0', 'false', 'no', 'n');
