-- generated from config/examples/strep_tb.yaml
SELECT *, true AS "_keep" FROM accepted;
