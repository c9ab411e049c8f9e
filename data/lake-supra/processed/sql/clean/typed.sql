-- generated from config/examples/supraclavicular.yaml
SELECT
  "_row",
  "_source",
  "_line",
  "_rowhash",
  "subject",
  CASE lower("group") WHEN '1' THEN '1' WHEN '2' THEN '2' ELSE "group" END AS "group",
  TRY_CAST("onset_sensory" AS DOUBLE) AS "onset_sensory",
  "onset_sensory" AS "onset_sensory__raw",
  "nerve_block_censor" AS "nerve_block_censor",
  TRY_CAST("age" AS DOUBLE) AS "age",
  "age" AS "age__raw",
  TRY_CAST("bmi" AS DOUBLE) AS "bmi",
  "bmi" AS "bmi__raw",
  "gender" AS "gender"
FROM staged;
