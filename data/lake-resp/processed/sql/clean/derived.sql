-- generated from config/examples/respiratory.yaml
SELECT *, COALESCE((month = 4), false) AS "_keep" FROM accepted;
