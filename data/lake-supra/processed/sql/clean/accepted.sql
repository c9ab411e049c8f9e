-- generated from config/examples/supraclavicular.yaml
SELECT
  t."_row",
  t."_source",
  t."_line",
  t."_rowhash",
  "subject" AS "subject",
  "group" AS "group",
  "onset_sensory" AS "onset_sensory",
  "nerve_block_censor" AS "nerve_block_censor",
  "age" AS "age",
  "bmi" AS "bmi",
  "gender" AS "gender",
  CAST(CASE WHEN (onset_sensory <= 20) THEN 1 ELSE 0 END AS BIGINT) AS "_outcome",
  "onset_sensory" AS "_time",
  CAST(CASE WHEN "nerve_block_censor" IN ('0') THEN 1 ELSE 0 END AS BIGINT) AS "_event"
FROM typed t
WHERE t."_row" NOT IN (SELECT "_row" FROM violations WHERE "action" = 'quarantine');
