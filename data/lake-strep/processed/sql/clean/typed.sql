-- generated from config/examples/strep_tb.yaml
SELECT
  "_row",
  "_source",
  "_line",
  "_rowhash",
  "patient_id",
  CASE lower("arm") WHEN 'control' THEN 'Control' WHEN 'streptomycin' THEN 'Streptomycin' ELSE "arm" END AS "arm",
  "improved",
  "gender" AS "gender",
  "baseline_condition" AS "baseline_condition",
  "baseline_cavitation" AS "baseline_cavitation"
FROM staged;
