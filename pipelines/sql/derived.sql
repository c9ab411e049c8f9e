-- trialflow preprocessing SQL, generated from config/config.yaml (`trialflow sql`); edit freely, or delete a file to run the generated view.
-- contract: 43e63f138d4e8d81 (the contract's hash for this view: a contract change since is an error)
SELECT
  *,
  CAST((weight_kg / ((height_cm / 100.0) * (height_cm / 100.0))) AS DOUBLE) AS "bmi",
  COALESCE((followup_days > 0), false) AS "_keep"
FROM accepted;
