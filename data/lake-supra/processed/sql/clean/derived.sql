-- generated from config/examples/supraclavicular.yaml
SELECT *, true AS "_keep" FROM accepted;
