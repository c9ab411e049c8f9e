-- generated from config/examples/strep_tb.yaml
SELECT
  t."_row",
  t."_source",
  t."_line",
  t."_rowhash",
  "patient_id" AS "patient_id",
  "arm" AS "arm",
  "improved" AS "improved",
  "gender" AS "gender",
  "baseline_condition" AS "baseline_condition",
  "baseline_cavitation" AS "baseline_cavitation",
  CAST(CASE WHEN lower("improved") IN ('1', '1.0', 'true', 'yes', 'y') THEN 1 ELSE 0 END AS BIGINT) AS "_outcome"
FROM typed t
WHERE t."_row" NOT IN (SELECT "_row" FROM violations WHERE "action" = 'quarantine');
