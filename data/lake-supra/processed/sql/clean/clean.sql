-- generated from config/examples/supraclavicular.yaml
SELECT
  pseudonymize("subject") AS "subject_id",
  "group" AS "arm",
  "_outcome" AS "outcome",
  "_time" AS "time",
  "_event" AS "event",
  "age" AS "age",
  "bmi" AS "bmi",
  "gender" AS "gender",
  "_source",
  "_line"
FROM ranked WHERE "_rank" = 1
ORDER BY "_row";
