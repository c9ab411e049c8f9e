-- generated from config/examples/indo_rct.yaml
SELECT
  "_row",
  "_source",
  "_line",
  "_rowhash",
  "id",
  CASE lower("rx") WHEN '0_placebo' THEN '0_placebo' WHEN '1_indomethacin' THEN '1_indomethacin' ELSE "rx" END AS "rx",
  "site" AS "site",
  "outcome",
  TRY_CAST("age" AS DOUBLE) AS "age",
  "age" AS "age__raw",
  TRY_CAST("risk" AS DOUBLE) AS "risk",
  "risk" AS "risk__raw",
  "gender" AS "gender",
  "sod" AS "sod",
  "pep" AS "pep",
  "recpanc" AS "recpanc",
  "psphinc" AS "psphinc",
  "difcan" AS "difcan"
FROM staged;
