"""Reference numbers for trialflow's statistics, computed with lifelines, scipy and statsmodels.

Run from the repository root:  python3 crates/analysis/tests/reference/make_reference.py
Writes crates/analysis/tests/reference/colon.json, which crates/analysis/tests/reference.rs compares against.
Versions used are recorded in the output.
"""
import json
import sys

import lifelines
import numpy as np
import pandas as pd
import scipy
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from scipy import stats

df = pd.read_csv("data/examples/colon.csv")
d = df[df.etype == 2].copy()  # death records, one per patient
arms = ["Obs", "Lev", "Lev+5FU"]

out = {"versions": {"python": sys.version.split()[0], "lifelines": lifelines.__version__, "scipy": scipy.__version__,
                    "pandas": pd.__version__, "numpy": np.__version__},
       "population": "survival::colon, etype == 2 (death), 929 patients"}

km = {}
for arm in arms:
    g = d[d.rx == arm]
    k = KaplanMeierFitter().fit(g.time, g.status)  # lifelines default CI: exponential Greenwood (log(-log))
    ci = lifelines.utils.median_survival_times(k.confidence_interval_)
    med = k.median_survival_time_
    km[arm] = {
        "n": int(len(g)), "events": int(g.status.sum()),
        "median": None if np.isinf(med) else float(med),
        "median_ci": [None if np.isinf(v) else float(v) for v in ci.iloc[0].tolist()],
        "survival_at": {str(t): float(k.survival_function_at_times(t).iloc[0]) for t in (365, 1095, 1825)},
        "ci_at_1825": [float(k.confidence_interval_.loc[k.confidence_interval_.index <= 1825].iloc[-1, 0]),
                       float(k.confidence_interval_.loc[k.confidence_interval_.index <= 1825].iloc[-1, 1])],
    }
out["km"] = km

lr = multivariate_logrank_test(d.time, d.rx, d.status)
out["logrank"] = {"chi_square": float(lr.test_statistic), "df": int(lr.degrees_of_freedom), "p": float(lr.p_value)}

x = pd.DataFrame({"Lev": (d.rx == "Lev").astype(float), "Lev+5FU": (d.rx == "Lev+5FU").astype(float),
                  "time": d.time, "status": d.status})
cox = {}
for ties in ("efron", "breslow"):
    # lifelines fits Efron ties only; Breslow comes from statsmodels' PHReg.
    if ties == "efron":
        c = CoxPHFitter().fit(x, "time", "status")
        coef, se = c.params_[["Lev", "Lev+5FU"]].tolist(), c.standard_errors_[["Lev", "Lev+5FU"]].tolist()
        ll = float(c.log_likelihood_)
    else:
        import statsmodels.api as sm
        m = sm.PHReg(d.time.values, x[["Lev", "Lev+5FU"]].values, status=d.status.values, ties="breslow").fit()
        coef, se, ll = m.params.tolist(), m.bse.tolist(), float(m.llf)
    cox[ties] = {"coef": coef, "se": se, "log_likelihood": ll}
out["cox_rx"] = cox

# Binary death by arm, Lev+5FU versus Obs: 2x2 [[events, non-events] arm, [events, non-events] reference]
a = d[d.rx == "Lev+5FU"].status
r = d[d.rx == "Obs"].status
table = [[int(a.sum()), int((1 - a).sum())], [int(r.sum()), int((1 - r).sum())]]
chi2, p_chi, _, _ = stats.chi2_contingency(table, correction=False)
out["binary_lev5fu_vs_obs"] = {"table": table, "chi_square": float(chi2), "chi_p": float(p_chi),
                               "fisher_p": float(stats.fisher_exact(table)[1])}

with open("crates/analysis/tests/reference/colon.json", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(json.dumps(out["logrank"]), json.dumps(out["cox_rx"]["efron"]))
