-- trialflow preprocessing SQL, generated from config/config.yaml (`trialflow sql`); edit freely.
SELECT * EXCLUDE ("_source", "_line", "_u"), CASE WHEN "_u" < 0.7 THEN 'train' WHEN "_u" < 0.85 THEN 'val' ELSE 'test' END AS "split" FROM (SELECT *, split_unit("subject_id") AS "_u" FROM clean);
