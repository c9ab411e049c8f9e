-- generated from config/examples/indo_rct.yaml
SELECT
  pseudonymize("id") AS "subject_id",
  "rx" AS "arm",
  "site" AS "site",
  "_outcome" AS "outcome",
  "age" AS "age",
  "risk" AS "risk",
  "gender" AS "gender",
  "sod" AS "sod",
  "pep" AS "pep",
  "recpanc" AS "recpanc",
  "psphinc" AS "psphinc",
  "difcan" AS "difcan",
  "_source",
  "_line"
FROM ranked WHERE "_rank" = 1
ORDER BY "_row";
