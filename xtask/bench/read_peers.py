"""The peers of trialflow's SAS transport and Dataset-JSON readers in `cargo xtask bench ingest`, and the files
they all read.

  read_peers.py gen ADSL_XPT ADSL_NDJSON DIR MB   DIR/big.xpt, big.json, big.ndjson of about MB megabytes: the CDISC
                                                   pilot's ADSL observations repeated (the transport file byte for
                                                   byte, its header kept; the Dataset-JSON rows line for line)
  read_peers.py NAME FILE COLUMN                   one peer reads FILE whole and prints {"rows", "sum"} of COLUMN

Each peer is what its users would write for a file this size: pyreadstat's chunked reader and pandas.read_sas
with a chunksize stream with flat memory; pyreadstat.read_xport reads it at once; the standard library's json
module reads Dataset-JSON (json.load for the one-object form, a line at a time for NDJSON).
"""

import json
import pathlib
import struct
import sys

OBS = b"HEADER RECORD*******OBS     HEADER RECORD!!!!!!!"


def gen(xpt, ndjson, out, mb):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    b = pathlib.Path(xpt).read_bytes()
    nvars = int(b[7 * 80 + 54:7 * 80 + 58])
    record = sum(struct.unpack(">h", b[640 + i * 140 + 4:640 + i * 140 + 6])[0] for i in range(nvars))
    start = b.index(OBS) + 80
    rows = (len(b) - start) // record
    while rows and b[start + (rows - 1) * record:start + rows * record].strip(b" ") == b"":
        rows -= 1
    data = b[start:start + rows * record]
    n = max(1, int(mb * 1e6 / len(data)))
    with open(out / "big.xpt", "wb") as f:
        f.write(b[:start])
        for _ in range(n):
            f.write(data)
        size = start + n * len(data)
        f.write(b" " * (-size % 80))
    lines = pathlib.Path(ndjson).read_text().splitlines()
    meta, body = json.loads(lines[0]), lines[1:]
    m = max(1, int(mb * 1e6 / sum(len(x) + 1 for x in body)))
    meta["records"] = len(body) * m
    with open(out / "big.ndjson", "w") as f:
        f.write(json.dumps(meta) + "\n")
        for _ in range(m):
            f.write("\n".join(body) + "\n")
    with open(out / "big.json", "w") as f:
        f.write(json.dumps(meta)[:-1] + ', "rows": [')
        for i in range(m):
            f.write(("," if i else "") + ",".join(body))
        f.write("]}")
    print(json.dumps({"xpt_rows": rows * n, "json_rows": len(body) * m}))


def total(frame, column):
    return float(frame[column].sum())


def main():
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    name, path, column = sys.argv[1:4]
    rows, s = 0, 0.0
    if name == "pyreadstat":
        import pyreadstat
        df, _ = pyreadstat.read_xport(path)
        rows, s = len(df), total(df, column)
    elif name == "pyreadstat-chunks":
        import pyreadstat
        for df, _ in pyreadstat.read_file_in_chunks(pyreadstat.read_xport, path, chunksize=100_000):
            rows, s = rows + len(df), s + total(df, column)
    elif name == "pandas":
        import pandas as pd
        with pd.read_sas(path, format="xport", chunksize=100_000) as reader:
            for df in reader:
                rows, s = rows + len(df), s + total(df, column)
    elif name == "json":
        with open(path) as f:
            doc = json.load(f)
        at = [c["name"] for c in doc["columns"]].index(column)
        for r in doc["rows"]:
            rows += 1
            s += r[at] or 0
    elif name == "ndjson":
        with open(path) as f:
            meta = json.loads(f.readline())
            at = [c["name"] for c in meta["columns"]].index(column)
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    rows += 1
                    s += r[at] or 0
    else:
        raise SystemExit(f"unknown peer {name}")
    print(json.dumps({"rows": rows, "sum": s}))


if __name__ == "__main__":
    main()
