"""Cluster-robust standard errors from lifelines (Cox, cluster_col) and statsmodels (logistic, cov_type="cluster").

Run from the repository root:  python3 crates/analysis/tests/reference/clustered_python.py
(with lifelines and statsmodels installed; versions are recorded in the output). Writes
crates/analysis/tests/reference/clustered_python.json, which crates/analysis/tests/reference.rs compares against.

R (clustered.R) is the reference on tied event times. lifelines computes Cox score residuals one row at a time
("TODO: doesn't handle ties" in its _compute_score_within_strata), so on tied times its robust SEs depend on
the row order and differ from R's by about 6e-5. Here every tie of survival::colon is broken by a fixed shift
(time + (2 id + etype) * 1e-4 days), on which lifelines, statsmodels, R (coxph with timefix = FALSE: R's default
would re-tie times this close) and trialflow agree: robust SEs 0.103672701908 and 0.113723019131.
"""
import json
import sys

import lifelines
import numpy as np
import pandas as pd
import statsmodels
import statsmodels.api as sm
from lifelines import CoxPHFitter

TIGHT = {"precision": 1e-12, "r_precision": 1e-12}
out = {"versions": {"python": sys.version.split()[0], "lifelines": lifelines.__version__,
                    "statsmodels": statsmodels.__version__, "pandas": pd.__version__, "numpy": np.__version__}}

colon = pd.read_csv("data/examples/colon.csv")
x = pd.DataFrame({"Lev": (colon.rx == "Lev").astype(float), "Lev+5FU": (colon.rx == "Lev+5FU").astype(float),
                  "time": colon.time + (2 * colon.id + colon.etype) * 1e-4, "status": colon.status,
                  "id": colon.id})
assert x.time.is_unique
c = CoxPHFitter().fit(x, "time", "status", cluster_col="id", fit_options=TIGHT)
out["cox_colon_untied"] = {"population": "survival::colon, all 1858 rows, ties broken by (2 id + etype) * 1e-4",
                           "coef": c.params_[["Lev", "Lev+5FU"]].tolist(),
                           "robust_se": c.standard_errors_[["Lev", "Lev+5FU"]].tolist()}

resp = pd.read_csv("data/examples/respiratory.csv")
resp = resp[resp.month > 0]
y = (resp.status.str.strip() == "good").astype(float)
X = pd.DataFrame({"const": 1.0, "treatment": (resp.treatment == "treatment").astype(float)})
m = sm.GLM(y, X, family=sm.families.Binomial()).fit(
    tol=1e-14, cov_type="cluster", cov_kwds={"groups": resp.subject.values, "use_correction": False})
out["logistic_respiratory_visits"] = {"coef": m.params.tolist(), "robust_se": m.bse.tolist()}

with open("crates/analysis/tests/reference/clustered_python.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(json.dumps(out, indent=1))
