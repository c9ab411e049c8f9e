-- generated from config/examples/strep_tb.yaml
SELECT
  pseudonymize("patient_id") AS "subject_id",
  "arm" AS "arm",
  "_outcome" AS "outcome",
  "gender" AS "gender",
  "baseline_condition" AS "baseline_condition",
  "baseline_cavitation" AS "baseline_cavitation",
  "_source",
  "_line"
FROM ranked WHERE "_rank" = 1
ORDER BY "_row";
