-- generated from config/examples/indo_rct.yaml
SELECT *,
  ROW_NUMBER() OVER (PARTITION BY "id" ORDER BY "_row") AS "_rank",
  FIRST_VALUE("_rowhash") OVER (PARTITION BY "id" ORDER BY "_row") AS "_first_hash"
FROM derived WHERE "_keep";
