"""Real Open Inference Protocol / Prometheus clients against a running trialflow server.

Run by crates/serve/tests/it/clients.rs (which starts the server and computes the expected probabilities with
trialflow's own transform); `cargo xtask test` installs the pinned clients (xtask/requirements-serve.txt).

    python check_clients.py HOST:PORT CASES.json

CASES.json: {"model": ..., "records": [{field: value|null}], "expected": [p, ...], "numeric": [names],
"categorical": [names]}. Prints one line per check; exits non-zero on the first failure.
"""

import asyncio
import json
import math
import sys
import urllib.request

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException
from prometheus_client.parser import text_string_to_metric_families

ADDR, CASES = sys.argv[1], json.load(open(sys.argv[2]))
MODEL = CASES["model"]
RECORDS, EXPECTED = CASES["records"], np.array(CASES["expected"], dtype=np.float32)
TOL = 1e-6


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    print(f"ok   {name}")


def column(name, numeric):
    vals = [r.get(name) for r in RECORDS]
    if numeric:
        return np.array([math.nan if v is None else float(v) for v in vals], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in vals], dtype=np.object_)


def tensors(make, binary):
    """One input per raw feature. JSON cannot carry NaN, so a numeric column with missing values goes as
    text there (empty = missing); in binary, NaN is the missing value."""
    out = []
    for name in CASES["numeric"] + CASES["categorical"]:
        numeric = name in CASES["numeric"]
        arr = column(name, numeric)
        dtype = "FP64" if numeric else "BYTES"
        if numeric and not binary and np.isnan(arr).any():
            arr = np.array(["" if math.isnan(v) else repr(float(v)) for v in arr], dtype=np.object_)
            dtype = "BYTES"
        t = make(name, [len(RECORDS)], dtype)
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


def triton_inputs(binary):
    return tensors(triton.InferInput, binary)


def tritonclient_checks():
    c = triton.InferenceServerClient(url=ADDR)
    check("triton is_server_live", c.is_server_live())
    check("triton is_server_ready", c.is_server_ready())
    check("triton is_model_ready", c.is_model_ready(MODEL))
    md = c.get_model_metadata(MODEL)
    check("triton model metadata", md["name"] == MODEL and md["outputs"][0]["name"] == "probability", md)
    sm = c.get_server_metadata()
    check("triton server metadata", "binary_tensor_data" in sm["extensions"], sm)

    # the client's defaults: binary input tensors, and binary outputs (binary_data_output) when none are named
    r = c.infer(MODEL, triton_inputs(True), request_id="triton-1")
    got = r.as_numpy("probability").reshape(-1)
    check("triton binary in/out (defaults)", np.allclose(got, EXPECTED, atol=TOL, rtol=0), (got, EXPECTED))
    check("triton request id echoed", r.get_response()["id"] == "triton-1", r.get_response())

    out = triton.InferRequestedOutput("probability", binary_data=True)
    r = c.infer(MODEL, triton_inputs(True), outputs=[out], model_version="")
    got = r.as_numpy("probability").reshape(-1)
    check("triton binary output requested", np.allclose(got, EXPECTED, atol=TOL, rtol=0))

    out = triton.InferRequestedOutput("probability", binary_data=False)
    r = c.infer(MODEL, triton_inputs(False), outputs=[out])
    got = r.as_numpy("probability").reshape(-1)
    check("triton JSON in/out", np.allclose(got, EXPECTED, atol=TOL, rtol=0), (got, EXPECTED))

    # a request without a required feature: a clear 400 naming it
    try:
        c.infer(MODEL, triton_inputs(True)[1:])
        check("triton missing feature refused", False)
    except InferenceServerException as e:
        first = CASES["numeric"][0]
        check("triton missing feature refused", first in str(e) and "missing" in str(e), str(e))
    try:
        c.infer("no-such-model", triton_inputs(True))
        check("triton unknown model refused", False)
    except InferenceServerException as e:
        check("triton unknown model refused", "no-such-model" in str(e), str(e))


async def kserve_checks():
    from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput

    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    base = f"http://{ADDR}"
    check("kserve is_server_live", await client.is_server_live(base))
    check("kserve is_server_ready", await client.is_server_ready(base))
    check("kserve is_model_ready", await client.is_model_ready(base, MODEL))
    for binary in (False, True):
        inputs = tensors(InferInput, binary)
        req = InferRequest(model_name=MODEL, infer_inputs=inputs, request_id=f"kserve-{binary}")
        res = await client.infer(base, req, model_name=MODEL)
        got = np.asarray(res.outputs[0].as_numpy(), dtype=np.float32).reshape(-1)
        check(f"kserve infer (binary inputs: {binary})", np.allclose(got, EXPECTED, atol=TOL, rtol=0), (got, EXPECTED))
        check(f"kserve id echoed (binary inputs: {binary})", res.id == f"kserve-{binary}", res.id)
    await client.close()


def metrics_checks():
    text = urllib.request.urlopen(f"http://{ADDR}/metrics", timeout=10).read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    req = fams.get("trialflow_requests")
    check("metrics: requests counter parses", req is not None and req.type == "counter", list(fams))
    ok = sum(s.value for s in req.samples if s.labels.get("code") == "200" and s.labels.get("api") == "v2"
             and s.labels.get("model") == MODEL and s.name.endswith("_total"))
    check("metrics: v2 successes counted", ok >= 5, ok)
    bad = sum(s.value for s in req.samples if s.labels.get("code") in ("400", "404"))
    check("metrics: client errors counted", bad >= 2, bad)
    lat = fams.get("trialflow_request_duration_seconds")
    check("metrics: latency histogram parses", lat is not None and lat.type == "histogram")
    buckets = [s for s in lat.samples if s.name.endswith("_bucket") and s.labels["api"] == "v2"]
    check("metrics: buckets cumulative", all(a.value <= b.value for a, b in zip(buckets, buckets[1:])))
    loaded = fams.get("trialflow_model_version_loaded")
    check("metrics: loaded versions", loaded is not None and any(s.labels["model"] == MODEL for s in loaded.samples))
    # the standard process metrics every Prometheus client library exports, as its parser reads them
    cpu = fams.get("process_cpu_seconds")
    # /proc counts CPU time in ticks of 10 ms: a server that has only loaded a model and answered a few dozen
    # requests may not have used one yet, so zero is a correct reading (CI saw it once)
    check("metrics: process CPU counter", cpu is not None and cpu.type == "counter" and cpu.samples[0].value >= 0,
          cpu and cpu.samples)
    rss = fams.get("process_resident_memory_bytes")
    check("metrics: process RSS", rss is not None and 1e5 < rss.samples[0].value < 1e11, rss and rss.samples)
    for name in ["process_open_fds", "process_max_fds", "process_start_time_seconds", "process_virtual_memory_bytes"]:
        check(f"metrics: {name}", name in fams and fams[name].type == "gauge", list(fams))


tritonclient_checks()
asyncio.run(kserve_checks())
metrics_checks()
print("all client checks passed")
