-- generated from config/examples/respiratory.yaml
SELECT
  "_row",
  "_source",
  "_line",
  "_rowhash",
  "subject",
  CASE lower("treatment") WHEN 'placebo' THEN 'placebo' WHEN 'treatment' THEN 'treatment' ELSE "treatment" END AS "treatment",
  "centre" AS "centre",
  "status",
  TRY_CAST("age" AS DOUBLE) AS "age",
  "age" AS "age__raw",
  "sex" AS "sex",
  TRY_CAST("month" AS DOUBLE) AS "month",
  "month" AS "month__raw"
FROM staged;
