-- trialflow preprocessing SQL, generated from config/config.yaml (`trialflow sql`); edit freely, or delete a file to run the generated view.
-- contract: 3f8702ae76fc8b93 (the contract's hash for this view: a contract change since is an error)
SELECT * EXCLUDE ("_source", "_line", "_u"), CASE WHEN "_u" < 0.7 THEN 'train' WHEN "_u" < 0.85 THEN 'val' ELSE 'test' END AS "split" FROM (SELECT *, split_unit("subject_id") AS "_u" FROM clean WHERE "outcome" IS NOT NULL);
