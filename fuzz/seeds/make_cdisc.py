"""Seeds for the stage and ingest_scan fuzz targets in the CDISC formats: the sample's first 24 records (id,
site, arm, age, sex: version 5 names are at most 8 characters) as SAS transport v5 (by pyreadstat) and as
Dataset-JSON 1.1 in both forms (by dsjframe), each behind the format byte the targets index
`SourceFormat::ALL` with (5 = xpt, 6 = dataset-json, 7 = dataset-ndjson). Run: python make_cdisc.py"""

import io
import pathlib
import tempfile

import pandas as pd
import pyreadstat
import dsjframe

HERE = pathlib.Path(__file__).resolve().parent
sample = (HERE / "stage" / "sample.csv").read_bytes()[1:]
df = pd.read_csv(io.BytesIO(sample), dtype=str, keep_default_na=False)[["id", "site", "arm", "age", "sex"]]
df["age"] = pd.to_numeric(df["age"], errors="coerce")
meta = {
    "datasetJSONCreationDateTime": "2026-12-05T00:00:00",
    "datasetJSONVersion": "1.1.0",
    "itemGroupOID": "IG.SAMPLE",
    "name": "SAMPLE",
    "label": "The synthetic sample's first records",
}
with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    pyreadstat.write_xport(df, str(tmp / "s.xpt"), file_format_version=5, table_name="SAMPLE")
    dsjframe.write_dataset(df, tmp / "s.json", metadata=meta, output_format="json", json_indent=None)
    dsjframe.write_dataset(df, tmp / "s.ndjson", metadata=meta, output_format="ndjson")
    for byte, src, name in [(5, "s.xpt", "sample.xpt"), (6, "s.json", "sample.dataset.json"), (7, "s.ndjson", "sample.dataset.ndjson")]:
        data = bytes([byte]) + (tmp / src).read_bytes()
        for target in ["stage", "ingest_scan"]:
            (HERE / target / name).write_bytes(data)
