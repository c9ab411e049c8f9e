-- generated from config/examples/respiratory.yaml
SELECT v."_row", s."_source", s."_line", s."subject" AS "subject", v."column", v."rule", v."reason"
FROM violations v JOIN staged s ON v."_row" = s."_row" WHERE v."action" = 'quarantine'
UNION ALL
SELECT "_row", "_source", "_line", "subject", '', 'filter', 'excluded by the row filter' FROM derived WHERE NOT "_keep"
UNION ALL
SELECT "_row", "_source", "_line", "subject", 'subject', 'duplicate',
  CASE WHEN "_rowhash" = "_first_hash" THEN 'exact duplicate of an earlier row' ELSE 'repeated subject id; the first row is kept' END
FROM ranked WHERE "_rank" > 1;
