-- generated from config/examples/strep_tb.yaml
SELECT *,
  ROW_NUMBER() OVER (PARTITION BY "patient_id" ORDER BY "_row") AS "_rank",
  FIRST_VALUE("_rowhash") OVER (PARTITION BY "patient_id" ORDER BY "_row") AS "_first_hash"
FROM derived WHERE "_keep";
