-- generated from config/examples/indo_rct.yaml
SELECT
  t."_row",
  t."_source",
  t."_line",
  t."_rowhash",
  "id" AS "id",
  "rx" AS "rx",
  "site" AS "site",
  "outcome" AS "outcome",
  "age" AS "age",
  "risk" AS "risk",
  "gender" AS "gender",
  "sod" AS "sod",
  "pep" AS "pep",
  "recpanc" AS "recpanc",
  "psphinc" AS "psphinc",
  "difcan" AS "difcan",
  CAST(CASE WHEN "outcome" IN ('1_yes') THEN 1 ELSE 0 END AS BIGINT) AS "_outcome"
FROM typed t
WHERE t."_row" NOT IN (SELECT "_row" FROM violations WHERE "action" = 'quarantine');
