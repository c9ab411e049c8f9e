"""The peers of `cargo xtask bench preprocess`: the sample trial's preprocessing job in DuckDB, Polars and pandas.

    python preprocess_peers.py <duckdb|polars|pandas> <csv glob> <out dir>

The job mirrors trialflow's `clean` + `features` on config/config.yaml: read every CSV as text; drop exact
duplicate rows, then repeated subject ids (first kept); trim/lower-case the categories and map their synonyms,
dropping rows whose category is neither blank nor allowed; parse numbers (unparseable -> null); drop rows with age outside
[18, 100] or follow-up outside [0, 4000], null other values outside their ranges; keep follow-up > 0; derive BMI;
pseudonymize the id with a keyed hash; split 70/15/15 by a salted hash of the pseudonym; medians, means and
standard deviations from the train split only; impute, standardize, one-hot with the train split's levels; write
one zstd Parquet file per split. Each tool uses its fastest built-in hash (DuckDB sha256; Polars and pandas their
native 64-bit hashes, a lighter job than trialflow's HMAC-SHA256). Prints one JSON line: rows per split.
"""

import glob
import json
import os
import sys

KEY = "trialflow-sample-development-key"
SALT = "trialflow-split-v1"
NUMERIC = ["age", "weight_kg", "height_cm", "systolic_bp", "diastolic_bp", "ldl_mg_dl", "hdl_mg_dl",
           "creatinine_mg_dl", "hba1c_pct", "followup_days"]
FEATURES = ["age", "weight_kg", "height_cm", "bmi", "systolic_bp", "diastolic_bp", "ldl_mg_dl", "hdl_mg_dl",
            "creatinine_mg_dl", "hba1c_pct"]
QUARANTINE_RANGES = {"age": (18, 100), "followup_days": (0, 4000)}
NULL_RANGES = {"weight_kg": (30, 300), "height_cm": (120, 230), "systolic_bp": (70, 260), "diastolic_bp": (30, 150),
               "ldl_mg_dl": (20, 400), "hdl_mg_dl": (10, 150), "creatinine_mg_dl": (0.2, 15), "hba1c_pct": (3, 20)}
YES_NO = {"no": "no", "yes": "yes", "n": "no", "y": "yes", "0": "no", "1": "yes", "false": "no", "true": "yes"}
CATEGORIES = {
    "arm": {"placebo": "placebo", "treatment": "treatment", "pbo": "placebo", "active": "treatment",
            "trt": "treatment", "drug x": "treatment"},
    "sex": {"f": "F", "m": "M", "female": "F", "male": "M"},
    "smoker": YES_NO,
    "diabetic": YES_NO,
}
ONE_HOT = ["arm", "sex", "smoker", "diabetic"]


def run_duckdb(files, out):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    src = "[" + ",".join(f"'{f}'" for f in files) + "]"
    def mapped(c, m):
        return "CASE lower(trim({c})) {whens} END".format(
            c=c, whens=" ".join(f"WHEN '{k}' THEN '{v}'" for k, v in m.items()))
    # a blank category is missing (kept); a value outside the synonym map quarantines the row
    cats = ",\n".join(f"{mapped(c, m)} AS {c}, (coalesce(trim({c}), '') <> '' AND {mapped(c, m)} IS NULL) AS bad_{c}"
                      for c, m in CATEGORIES.items())
    nums = ",\n".join(f"TRY_CAST({c} AS DOUBLE) AS {c}" for c in NUMERIC)
    ranged = ",\n".join(
        f"CASE WHEN {c} BETWEEN {lo} AND {hi} THEN {c} END AS {c}" for c, (lo, hi) in NULL_RANGES.items())
    keep = " AND ".join(f"{c} BETWEEN {lo} AND {hi}" for c, (lo, hi) in QUARANTINE_RANGES.items())
    con.execute(f"""
        CREATE TEMP TABLE clean AS
        WITH raw AS (SELECT DISTINCT * FROM read_csv({src}, all_varchar = true, header = true)),
        first AS (SELECT * FROM raw QUALIFY row_number() OVER (PARTITION BY subject_id) = 1),
        typed AS (SELECT subject_id, site, {cats}, {nums}, event FROM first),
        kept AS (SELECT * EXCLUDE ({", ".join(NULL_RANGES)}, {", ".join("bad_" + c for c in CATEGORIES)}), {ranged}
                 FROM typed
                 WHERE NOT ({" OR ".join("bad_" + c for c in CATEGORIES)}) AND {keep} AND followup_days > 0)
        SELECT *, weight_kg / ((height_cm / 100.0) * (height_cm / 100.0)) AS bmi,
               sha256('{KEY}' || subject_id) AS pseudonym,
               (hash('{SALT}' || sha256('{KEY}' || subject_id)) % 10000) / 10000.0 AS u
        FROM kept""")
    con.execute("ALTER TABLE clean DROP COLUMN subject_id")
    con.execute("""CREATE TEMP TABLE parts AS SELECT *, CASE WHEN u < 0.7 THEN 'train' WHEN u < 0.85 THEN 'val'
                   ELSE 'test' END AS split FROM clean""")
    train = "FROM parts WHERE split = 'train'"
    medians = con.execute("SELECT " + ", ".join(f"median({c})" for c in FEATURES) + f" {train}").fetchone()
    moments = con.execute("SELECT " + ", ".join(
        f"avg(coalesce({c}, {m})), stddev_samp(coalesce({c}, {m}))" for c, m in zip(FEATURES, medians))
        + f" {train}").fetchone()
    levels = {c: [r[0] for r in con.execute(
        f"SELECT DISTINCT {c} {train} AND {c} IS NOT NULL ORDER BY 1").fetchall()] for c in ONE_HOT}
    cols = []
    for i, c in enumerate(FEATURES):
        mean, sd = moments[2 * i:2 * i + 2]
        cols.append(f"(coalesce({c}, {medians[i]}) - {mean}) / {sd or 1.0} AS {c}")
    for c in ONE_HOT:
        cols += [f"CAST({c} = '{lv}' AS FLOAT) AS {c}_{lv}" for lv in levels[c]]
    sizes = {}
    for split in ["train", "val", "test"]:
        path = os.path.join(out, f"{split}.parquet")
        con.execute(f"""COPY (SELECT pseudonym, site, event, {", ".join(cols)} FROM parts WHERE split = '{split}')
                        TO '{path}' (FORMAT parquet, COMPRESSION zstd)""")
        sizes[split] = con.execute(f"SELECT count(*) FROM parts WHERE split = '{split}'").fetchone()[0]
    return sizes


def run_polars(files, out):
    import polars as pl

    df = pl.concat([pl.read_csv(f, infer_schema=False) for f in files])
    df = df.unique(maintain_order=True).unique(subset="subject_id", keep="first", maintain_order=True)
    bad = [((pl.col(c).str.strip_chars().fill_null("") != "")
            & pl.col(c).str.strip_chars().str.to_lowercase().replace_strict(m, default=None).is_null())
           .alias(f"bad_{c}") for c, m in CATEGORIES.items()]
    df = df.with_columns(
        bad
        + [pl.col(c).str.strip_chars().str.to_lowercase().replace_strict(m, default=None).alias(c)
           for c, m in CATEGORIES.items()]
        + [pl.col(c).cast(pl.Float64, strict=False) for c in NUMERIC])
    keep = pl.all_horizontal([~pl.col(f"bad_{c}") for c in CATEGORIES]
                             + [pl.col(c).is_between(lo, hi) for c, (lo, hi) in QUARANTINE_RANGES.items()]
                             + [pl.col("followup_days") > 0])
    df = df.filter(keep).drop([f"bad_{c}" for c in CATEGORIES]).with_columns(
        [pl.when(pl.col(c).is_between(lo, hi)).then(pl.col(c)).alias(c) for c, (lo, hi) in NULL_RANGES.items()])
    df = df.with_columns(
        (pl.col("weight_kg") / ((pl.col("height_cm") / 100.0) ** 2)).alias("bmi"),
        (pl.lit(KEY) + pl.col("subject_id")).hash(7).alias("pseudonym"))
    u = (pl.col("pseudonym").cast(pl.Utf8).hash(11) % 10000) / 10000.0
    df = df.with_columns(pl.when(u < 0.7).then(pl.lit("train")).when(u < 0.85).then(pl.lit("val"))
                         .otherwise(pl.lit("test")).alias("split")).drop("subject_id")
    train = df.filter(pl.col("split") == "train")
    medians = train.select([pl.col(c).median() for c in FEATURES]).row(0)
    imputed = train.select([pl.col(c).fill_null(m) for c, m in zip(FEATURES, medians)])
    means = imputed.mean().row(0)
    sds = imputed.std().row(0)
    levels = {c: sorted(train.get_column(c).drop_nulls().unique().to_list()) for c in ONE_HOT}
    exprs = [((pl.col(c).fill_null(m) - mu) / (sd or 1.0)).alias(c)
             for c, m, mu, sd in zip(FEATURES, medians, means, sds)]
    for c in ONE_HOT:
        exprs += [(pl.col(c) == lv).cast(pl.Float32).alias(f"{c}_{lv}") for lv in levels[c]]
    sizes = {}
    for split in ["train", "val", "test"]:
        part = df.filter(pl.col("split") == split).select(["pseudonym", "site", "event"] + exprs)
        part.write_parquet(os.path.join(out, f"{split}.parquet"), compression="zstd")
        sizes[split] = part.height
    return sizes


def run_pandas(files, out):
    import numpy as np
    import pandas as pd

    df = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False, engine="pyarrow") for f in files],
                   ignore_index=True)
    df = df.drop_duplicates().drop_duplicates(subset="subject_id", keep="first")
    keep = pd.Series(True, index=df.index)
    for c, m in CATEGORIES.items():
        text = df[c].str.strip()
        df[c] = text.str.lower().map(m)
        keep &= ~((text != "") & df[c].isna())
    for c in NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    keep &= df["followup_days"] > 0
    for c, (lo, hi) in QUARANTINE_RANGES.items():
        keep &= df[c].between(lo, hi)
    df = df[keep].copy()
    for c, (lo, hi) in NULL_RANGES.items():
        df[c] = df[c].where(df[c].between(lo, hi))
    df["bmi"] = df["weight_kg"] / (df["height_cm"] / 100.0) ** 2
    df["pseudonym"] = pd.util.hash_pandas_object(KEY + df["subject_id"], index=False, hash_key="trialflow-bench!")
    u = (pd.util.hash_pandas_object(df["pseudonym"].astype(str), index=False) % 10000) / 10000.0
    df["split"] = np.where(u < 0.7, "train", np.where(u < 0.85, "val", "test"))
    df = df.drop(columns="subject_id")
    train = df[df["split"] == "train"]
    medians = train[FEATURES].median()
    imputed = train[FEATURES].fillna(medians)
    means, sds = imputed.mean(), imputed.std().replace(0, 1.0)
    levels = {c: sorted(train[c].dropna().unique()) for c in ONE_HOT}
    sizes = {}
    for split in ["train", "val", "test"]:
        part = df[df["split"] == split]
        feats = (part[FEATURES].fillna(medians) - means) / sds
        for c in ONE_HOT:
            for lv in levels[c]:
                feats[f"{c}_{lv}"] = (part[c] == lv).astype("float32")
        result = pd.concat([part[["pseudonym", "site", "event"]], feats], axis=1)
        result.to_parquet(os.path.join(out, f"{split}.parquet"), compression="zstd", index=False)
        sizes[split] = len(part)
    return sizes


def main():
    tool, pattern, out = sys.argv[1:4]
    files = sorted(glob.glob(pattern))
    if not files:
        sys.exit(f"no files match {pattern}")
    os.makedirs(out, exist_ok=True)
    sizes = {"duckdb": run_duckdb, "polars": run_polars, "pandas": run_pandas}[tool](files, out)
    print(json.dumps({"rows": sizes}))


if __name__ == "__main__":
    main()
