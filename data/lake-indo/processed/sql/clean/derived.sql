-- generated from config/examples/indo_rct.yaml
SELECT *, true AS "_keep" FROM accepted;
