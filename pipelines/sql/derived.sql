-- trialflow preprocessing SQL, generated from config/config.yaml (`trialflow sql`); edit freely.
SELECT
  *,
  CAST((weight_kg / ((height_cm / 100.0) * (height_cm / 100.0))) AS DOUBLE) AS "bmi",
  COALESCE((followup_days > 0), false) AS "_keep"
FROM accepted;
