-- generated from config/examples/indo_rct.yaml
SELECT v."_row", s."_source", s."_line", s."id" AS "subject", v."column", v."rule", v."reason"
FROM violations v JOIN staged s ON v."_row" = s."_row" WHERE v."action" = 'quarantine'
UNION ALL
SELECT "_row", "_source", "_line", "id", '', 'filter', 'excluded by the row filter' FROM derived WHERE NOT "_keep"
UNION ALL
SELECT "_row", "_source", "_line", "id", 'id', 'duplicate',
  CASE WHEN "_rowhash" = "_first_hash" THEN 'exact duplicate of an earlier row' ELSE 'repeated subject id; the first row is kept' END
FROM ranked WHERE "_rank" > 1;
