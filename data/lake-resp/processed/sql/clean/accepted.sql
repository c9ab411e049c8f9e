-- generated from config/examples/respiratory.yaml
SELECT
  t."_row",
  t."_source",
  t."_line",
  t."_rowhash",
  "subject" AS "subject",
  "treatment" AS "treatment",
  "centre" AS "centre",
  "status" AS "status",
  "age" AS "age",
  "sex" AS "sex",
  "month" AS "month",
  CAST(CASE WHEN "status" IN ('good') THEN 1 ELSE 0 END AS BIGINT) AS "_outcome"
FROM typed t
WHERE t."_row" NOT IN (SELECT "_row" FROM violations WHERE "action" = 'quarantine');
