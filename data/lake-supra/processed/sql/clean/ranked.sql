-- generated from config/examples/supraclavicular.yaml
SELECT *,
  ROW_NUMBER() OVER (PARTITION BY "subject" ORDER BY "_row") AS "_rank",
  FIRST_VALUE("_rowhash") OVER (PARTITION BY "subject" ORDER BY "_row") AS "_first_hash"
FROM derived WHERE "_keep";
