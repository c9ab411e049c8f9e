"""The peers of `cargo xtask bench preprocess`: the sample trial's preprocessing job in DuckDB, Polars and pandas,
each written the way that tool's experts write it, and the check that a peer computed what trialflow computed.

    python preprocess_peers.py <duckdb|polars|polars-eager|pandas> <csv glob> <out dir>
    python preprocess_peers.py check <trialflow's processed/ dir> <peer out dir>

The job is trialflow's `clean` + `features` on config/config.yaml, rule for rule:
- every field is text, trimmed; an empty field or a declared missing token (n/a, unknown, ?) is missing;
- a row is quarantined when its id, arm, follow-up or event is missing; when a category or the site looks like an
  undeclared missing token (NA, NULL, ., ...); when a number does not parse to a finite value; when age or follow-up
  is outside its range; when a category (after its synonyms) is not an allowed level; when the event is not 0/1;
- a row with follow-up <= 0 is excluded (the modified intention-to-treat filter);
- of the remaining rows the first per subject id, in input order (file, then line), is kept;
- the other ranged numbers become missing outside their range; BMI is derived from the kept values;
- the pseudonym is the first 16 bytes of HMAC-SHA256(key, id) as hex; the split is SHA-256(salt, 0, pseudonym)'s
  first 53 bits as a unit number, cut at 0.7 and 0.85;
- medians, means and population standard deviations of the train split's values; impute, standardize, one-hot the
  categories with the train split's levels; one zstd Parquet file per split.

Polars computes both hashes with the polars-hash plugin (native, vectorized), DuckDB with its sha256 (HMAC composed
in SQL), pandas with Python's hashlib (the pandas way: no vectorized SHA-256 exists for it). Prints one JSON line:
rows per split.

`check` compares a peer's split files with trialflow's before anything is timed: equal row counts per split, the
same pseudonyms in each split, and the mean of every model input per split to 1e-6 (trialflow's split tables put
through its feature spec: imputed, standardized, one-hot). A peer that did less (or more) than trialflow fails it.
"""

import glob
import hashlib
import hmac
import json
import os
import sys

KEY = "trialflow-sample-development-key"
SALT = "trialflow-split-v1"
MISSING = ["n/a", "unknown", "?"]
# texts that look like a missing value but are not declared one: the row is quarantined
LOOKALIKE = ["NA", "N/A", "#N/A", "NAN", "NULL", "NONE", ".", "NA_NA"]
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
# categories whose numeric spelling (0.0, 1.00) is also a level
NUMERIC_CODES = {"smoker": {0.0: "no", 1.0: "yes"}, "diabetic": {0.0: "no", 1.0: "yes"}}
EVENT_CODES = ["0", "0.0", "1", "1.0"]
ONE_HOT = ["arm", "sex", "smoker", "diabetic"]
TEXT = ["subject_id", "site", "event"] + list(CATEGORIES)


def hmac_pads():
    """HMAC-SHA256's inner and outer key blocks (RFC 2104) for a key up to one block long."""
    block = KEY.encode().ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def python_pseudonym():
    """pseudonym(id) and split_unit(pseudonym) in Python, the key's pads absorbed once."""
    keyed = hmac.new(KEY.encode(), digestmod=hashlib.sha256)
    salted = hashlib.sha256(SALT.encode() + b"\0")

    def pseudonym(sid):
        h = keyed.copy()
        h.update(sid.encode())
        return h.hexdigest()[:32]

    def unit(p):
        h = salted.copy()
        h.update(p.encode())
        return (int.from_bytes(h.digest()[:8], "big") >> 11) / float(1 << 53)

    return pseudonym, unit


def split_of(u):
    return "train" if u < 0.7 else ("val" if u < 0.85 else "test")


# --- Polars: one lazy plan, streaming engine, one materialisation of the clean table ------------------------------

def polars_clean_plan(files):
    import polars as pl
    import polars_hash  # noqa: F401  (registers the .chash namespace)

    def text(c):
        v = pl.col(c).str.strip_chars()
        return pl.when(v.is_in([""] + MISSING) | v.is_null()).then(None).otherwise(v).alias(c)

    def level(c, m):
        v = pl.col(c)
        mapped = v.str.to_lowercase().replace_strict(m, default=None, return_dtype=pl.String)
        if c in NUMERIC_CODES:
            codes = NUMERIC_CODES[c]
            num = v.cast(pl.Float64, strict=False)
            mapped = pl.coalesce(mapped, num.replace_strict(codes, default=None, return_dtype=pl.String))
        return mapped

    lf = pl.scan_csv(files, infer_schema=False, row_index_name="_line")
    lf = lf.select(["_line"] + [text(c) for c in TEXT + NUMERIC])
    ok = [pl.col(c).is_not_null() for c in ["subject_id", "arm", "followup_days", "event"]]
    ok += [~pl.col(c).str.to_uppercase().is_in(LOOKALIKE).fill_null(False) for c in ["arm", "site", "event", "sex",
                                                                                     "smoker", "diabetic"]]
    ok += [pl.col(c).is_null() | pl.col(c).cast(pl.Float64, strict=False).is_finite().fill_null(False)
           for c in NUMERIC]
    ok += [pl.col(c).is_null() | level(c, m).is_not_null() for c, m in CATEGORIES.items()]
    ok += [pl.col("event").is_in(EVENT_CODES).fill_null(False)]
    num = {c: pl.col(c).cast(pl.Float64, strict=False) for c in NUMERIC}
    ok += [num[c].is_between(lo, hi).fill_null(True) for c, (lo, hi) in QUARANTINE_RANGES.items()]
    kept = (lf.filter(pl.all_horizontal(ok) & (num["followup_days"] > 0))
            .unique(subset="subject_id", keep="first", maintain_order=True))
    ranged = [pl.when(num[c].is_between(lo, hi)).then(num[c]).alias(c) for c, (lo, hi) in NULL_RANGES.items()]
    kept = kept.select(
        [pl.col("subject_id"), pl.col("site"), pl.col("event").cast(pl.Float64).cast(pl.Int64).alias("event"),
         num["age"].alias("age"), num["followup_days"].alias("followup_days")]
        + [level(c, m).alias(c) for c, m in CATEGORIES.items()] + ranged)
    pseudonym = pl.col("subject_id").chash.hmac_sha256(key=KEY).str.slice(0, 32)
    kept = kept.with_columns(
        (pl.col("weight_kg") / ((pl.col("height_cm") / 100.0) * (pl.col("height_cm") / 100.0))).alias("bmi"),
        pseudonym.alias("pseudonym")).drop("subject_id")
    top53 = ((pl.lit(SALT + "\0") + pl.col("pseudonym")).chash.sha2_256().str.slice(0, 16)
             .str.to_integer(base=16, dtype=pl.UInt64) // 2048)
    u = top53.cast(pl.Float64) / float(1 << 53)
    return kept.with_columns(pl.when(u < 0.7).then(pl.lit("train")).when(u < 0.85).then(pl.lit("val"))
                             .otherwise(pl.lit("test")).alias("split"))


def polars_features(clean, out, write):
    import polars as pl

    train = clean.filter(pl.col("split") == "train")
    medians = train.select([pl.col(c).median() for c in FEATURES]).collect().row(0)
    imputed = [pl.col(c).fill_null(m) for c, m in zip(FEATURES, medians)]
    moments = train.select([pl.col(c).mean().name.suffix("_mean") for c in FEATURES]
                           + [pl.col(c).std(ddof=0).name.suffix("_std") for c in FEATURES]).collect().row(0)
    levels = train.select([pl.col(c).drop_nulls().unique().sort().implode() for c in ONE_HOT]).collect().row(0)
    n = len(FEATURES)
    exprs = [((e - mu) / (sd or 1.0)).alias(c)
             for c, e, mu, sd in zip(FEATURES, imputed, moments[:n], moments[n:])]
    for c, lvls in zip(ONE_HOT, levels):
        exprs += [(pl.col(c) == lv).fill_null(False).cast(pl.Float32).alias(f"{c}_{lv}") for lv in lvls]
    sizes = {}
    for split in ["train", "val", "test"]:
        part = clean.filter(pl.col("split") == split).select(["pseudonym", "site", "event"] + exprs)
        sizes[split] = write(part, os.path.join(out, f"{split}.parquet"))
    return sizes


def run_polars(files, out):
    import polars as pl

    # the clean table is read twice (train statistics, then the splits): collected once, by the streaming engine
    clean = polars_clean_plan(files).collect(engine="streaming").lazy()

    def sink(part, path):
        part.sink_parquet(path, compression="zstd", engine="streaming")
        return pl.scan_parquet(path).select(pl.len()).collect().item()

    return polars_features(clean, out, sink)


def run_polars_eager(files, out):
    """The same expressions, run eagerly: every step materialised (the way most Polars code is first written)."""
    import polars as pl

    clean = polars_clean_plan(files).collect()

    def write(part, path):
        frame = part.collect()
        frame.write_parquet(path, compression="zstd")
        return frame.height

    return polars_features(clean.lazy(), out, write)


# --- DuckDB: one plan to the clean table, one materialisation, the splits copied from it --------------------------

def run_duckdb(files, out):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    src = "[" + ",".join(f"'{f}'" for f in files) + "]"
    ipad, opad = hmac_pads()
    blob = lambda b: "'" + "".join(f"\\x{x:02X}" for x in b) + "'::BLOB"  # noqa: E731
    quoted = lambda xs: ", ".join("'" + x.replace("'", "''") + "'" for x in xs)  # noqa: E731
    trimmed = ", ".join(
        f"CASE WHEN trim({c}) IN ('', {quoted(MISSING)}) THEN NULL ELSE trim({c}) END AS {c}" for c in TEXT + NUMERIC)

    def level(c, m):
        case = "CASE lower({c}) {whens} END".format(c=c, whens=" ".join(f"WHEN '{k}' THEN '{v}'" for k, v in m.items()))
        if c in NUMERIC_CODES:
            codes = " ".join(f"WHEN {k} THEN '{v}'" for k, v in NUMERIC_CODES[c].items())
            case = f"coalesce({case}, CASE TRY_CAST({c} AS DOUBLE) {codes} END)"
        return case

    checks = [f"{c} IS NOT NULL" for c in ["subject_id", "arm", "followup_days", "event"]]
    checks += [f"coalesce(upper({c}) NOT IN ({quoted(LOOKALIKE)}), true)"
               for c in ["arm", "site", "event", "sex", "smoker", "diabetic"]]
    checks += [f"({c} IS NULL OR coalesce(isfinite(TRY_CAST({c} AS DOUBLE)), false))" for c in NUMERIC]
    checks += [f"({c} IS NULL OR {level(c, m)} IS NOT NULL)" for c, m in CATEGORIES.items()]
    checks += [f"event IN ({quoted(EVENT_CODES)})"]
    checks += [f"coalesce(TRY_CAST({c} AS DOUBLE) BETWEEN {lo} AND {hi}, true)"
               for c, (lo, hi) in QUARANTINE_RANGES.items()]
    checks += ["TRY_CAST(followup_days AS DOUBLE) > 0"]
    ranged = ", ".join(f"CASE WHEN TRY_CAST({c} AS DOUBLE) BETWEEN {lo} AND {hi} THEN TRY_CAST({c} AS DOUBLE) END AS {c}"
                       for c, (lo, hi) in NULL_RANGES.items())
    levels = ", ".join(f"{level(c, m)} AS {c}" for c, m in CATEGORIES.items())
    con.execute(f"""
        CREATE TEMP TABLE clean AS
        WITH src AS (SELECT *, row_number() OVER () AS _line FROM read_csv({src}, all_varchar = true, header = true)),
        text AS (SELECT _line, {trimmed} FROM src),
        kept AS (SELECT * FROM text WHERE {" AND ".join(checks)}
                 QUALIFY row_number() OVER (PARTITION BY subject_id ORDER BY _line) = 1),
        typed AS (SELECT subject_id, site, CAST(TRY_CAST(event AS DOUBLE) AS BIGINT) AS event,
                         TRY_CAST(age AS DOUBLE) AS age, TRY_CAST(followup_days AS DOUBLE) AS followup_days,
                         {levels}, {ranged}
                  FROM kept),
        named AS (SELECT * EXCLUDE (subject_id),
                         weight_kg / ((height_cm / 100.0) * (height_cm / 100.0)) AS bmi,
                         left(sha256({blob(opad)} || unhex(sha256({blob(ipad)} || subject_id::BLOB))), 32) AS pseudonym
                  FROM typed)
        SELECT *, CASE WHEN u < 0.7 THEN 'train' WHEN u < 0.85 THEN 'val' ELSE 'test' END AS split
        FROM (SELECT *, (('0x' || left(sha256('{SALT}' || chr(0) || pseudonym), 16))::UBIGINT >> 11)::DOUBLE
                        / {float(1 << 53)} AS u FROM named)""")
    train = "FROM clean WHERE split = 'train'"
    medians = con.execute("SELECT " + ", ".join(f"median({c})" for c in FEATURES) + f" {train}").fetchone()
    moments = con.execute("SELECT " + ", ".join(
        f"avg({c}), stddev_pop({c})" for c in FEATURES)
        + f" {train}").fetchone()
    levels = {c: [r[0] for r in con.execute(
        f"SELECT DISTINCT {c} {train} AND {c} IS NOT NULL ORDER BY 1").fetchall()] for c in ONE_HOT}
    cols = []
    for i, c in enumerate(FEATURES):
        mean, sd = moments[2 * i:2 * i + 2]
        cols.append(f"(coalesce({c}, {medians[i]}) - {mean}) / {sd or 1.0} AS {c}")
    for c in ONE_HOT:
        cols += [f"CAST(coalesce({c} = '{lv}', false) AS FLOAT) AS {c}_{lv}" for lv in levels[c]]
    sizes = {}
    for split in ["train", "val", "test"]:
        path = os.path.join(out, f"{split}.parquet")
        sizes[split] = con.execute(f"""COPY (SELECT pseudonym, site, event, {", ".join(cols)} FROM clean
                                        WHERE split = '{split}') TO '{path}' (FORMAT parquet, COMPRESSION zstd)""").fetchone()[0]
    return sizes


# --- pandas (pyarrow engine and string dtype) ---------------------------------------------------------------------

def run_pandas(files, out):
    import numpy as np
    import pandas as pd

    frames = []
    for f in files:
        d = pd.read_csv(f, dtype=str, keep_default_na=False, engine="pyarrow", usecols=TEXT + NUMERIC)
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)  # index = input order
    for c in TEXT + NUMERIC:
        s = df[c].str.strip()
        df[c] = s.where(~s.isin([""] + MISSING))
    keep = df[["subject_id", "arm", "followup_days", "event"]].notna().all(axis=1)
    for c in ["arm", "site", "event", "sex", "smoker", "diabetic"]:
        keep &= ~df[c].str.upper().isin(LOOKALIKE)
    num = {}
    for c in NUMERIC:
        num[c] = pd.to_numeric(df[c], errors="coerce")
        keep &= df[c].isna() | np.isfinite(num[c].fillna(np.nan).to_numpy(dtype=float, na_value=np.nan))
    for c, m in CATEGORIES.items():
        mapped = df[c].str.lower().map(m)
        if c in NUMERIC_CODES:
            mapped = mapped.fillna(num.get(c, pd.to_numeric(df[c], errors="coerce")).map(NUMERIC_CODES[c]))
        keep &= df[c].isna() | mapped.notna()
        df[c] = mapped
    keep &= df["event"].isin(EVENT_CODES)
    for c, (lo, hi) in QUARANTINE_RANGES.items():
        keep &= num[c].isna() | num[c].between(lo, hi)
    keep &= num["followup_days"] > 0
    for c in NUMERIC:
        df[c] = num[c]
    df = df[keep].drop_duplicates(subset="subject_id", keep="first")
    for c, (lo, hi) in NULL_RANGES.items():
        df[c] = df[c].where(df[c].between(lo, hi))
    df["event"] = df["event"].astype(float).astype("int64")
    df["bmi"] = df["weight_kg"] / ((df["height_cm"] / 100.0) * (df["height_cm"] / 100.0))
    pseudonym, unit = python_pseudonym()
    df["pseudonym"] = [pseudonym(s) for s in df["subject_id"]]
    u = np.fromiter((unit(p) for p in df["pseudonym"]), dtype=float, count=len(df))
    df["split"] = np.where(u < 0.7, "train", np.where(u < 0.85, "val", "test"))
    train = df[df["split"] == "train"]
    medians = train[FEATURES].median()
    means, sds = train[FEATURES].mean(), train[FEATURES].std(ddof=0).replace(0, 1.0)
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


# --- the check ----------------------------------------------------------------------------------------------------

def split_files(root, split):
    """A split's Parquet files: a peer's `<split>.parquet`, trialflow's `features/split=<split>/*.parquet`."""
    one = os.path.join(root, f"{split}.parquet")
    return [one] if os.path.isfile(one) else sorted(
        glob.glob(os.path.join(root, "features", f"split={split}", "*.parquet")))


def model_input_means(con, files, spec):
    """trialflow's split table through its feature spec (impute, standardize, one-hot): each input's mean."""
    cols = []
    for f in spec["numeric"]:
        cols.append((f["name"], f"avg((coalesce(\"{f['name']}\", {f['impute']!r}) - {f['mean']!r}) / {f['std']!r})"))
    for f in spec["categorical"]:
        for lv in f["levels"]:
            cols.append((f"{f['name']}_{lv}", f"avg(CAST(coalesce(\"{f['name']}\" = '{lv}', false) AS DOUBLE))"))
    rel = con.read_parquet(files)  # noqa: F841  (named in the query)
    row = con.execute("SELECT count(*), bit_xor(hash(subject_id)), "
                      + ", ".join(e for _, e in cols) + " FROM rel").fetchone()
    return row[0], row[1], dict(zip([n for n, _ in cols], row[2:]))


def peer_means(con, files, names):
    rel = con.read_parquet(files)
    present = [n for n in names if n in rel.columns]
    row = con.execute("SELECT count(*), bit_xor(hash(pseudonym)), "
                      + ", ".join(f"avg(CAST(\"{n}\" AS DOUBLE))" for n in present) + " FROM rel").fetchone()
    return row[0], row[1], dict(zip(present, row[2:]))


def check(processed, peer_dir):
    """Problems with a peer's output against trialflow's `processed/` (split tables and feature spec)."""
    import duckdb

    con = duckdb.connect()
    with open(os.path.join(processed, "feature_spec.json")) as f:
        spec = json.load(f)
    problems = []
    for split in ["train", "val", "test"]:
        ours, theirs = split_files(processed, split), split_files(peer_dir, split)
        if not ours or not theirs:
            problems.append(f"{split}: no files (trialflow {len(ours)}, peer {len(theirs)})")
            continue
        n1, ids1, means1 = model_input_means(con, ours, spec)
        n2, ids2, means2 = peer_means(con, theirs, list(means1))
        if n1 != n2:
            problems.append(f"{split}: {n2} rows, trialflow {n1}")
        elif ids1 != ids2:
            problems.append(f"{split}: other subjects than trialflow's")
        for name, a in means1.items():
            b = means2.get(name)
            if b is None or a is None or abs(a - b) > 1e-6:
                problems.append(f"{split}: mean of {name} {b}, trialflow {a}")
    return problems


def main():
    if sys.argv[1] == "check":
        problems = check(sys.argv[2], sys.argv[3])
        print(json.dumps({"problems": problems}))
        sys.exit(1 if problems else 0)
    tool, pattern, out = sys.argv[1:4]
    files = sorted(glob.glob(pattern))
    if not files:
        sys.exit(f"no files match {pattern}")
    os.makedirs(out, exist_ok=True)
    run = {"duckdb": run_duckdb, "polars": run_polars, "polars-eager": run_polars_eager, "pandas": run_pandas}[tool]
    print(json.dumps({"rows": run(files, out)}))


if __name__ == "__main__":
    main()
