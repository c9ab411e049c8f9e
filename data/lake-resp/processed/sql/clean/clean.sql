-- generated from config/examples/respiratory.yaml
SELECT
  pseudonymize("subject") AS "subject_id",
  "treatment" AS "arm",
  "centre" AS "site",
  "_outcome" AS "outcome",
  "age" AS "age",
  "sex" AS "sex",
  "_source",
  "_line"
FROM ranked WHERE "_rank" = 1
ORDER BY "_row";
