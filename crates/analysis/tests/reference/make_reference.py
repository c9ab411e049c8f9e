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

# Newton steps until the step is below 1e-12 (lifelines' default 1e-7 leaves ~1e-4 relative error in Wald tests).
TIGHT = {"precision": 1e-12, "r_precision": 1e-12}

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
        c = CoxPHFitter().fit(x, "time", "status", fit_options=TIGHT)
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

# Proportional-hazards check of the rx-only Efron model: scaled Schoenfeld residuals, 1 - KM(t) time transform.
from lifelines.statistics import proportional_hazard_test
c = CoxPHFitter().fit(x, "time", "status", fit_options=TIGHT)
ph = proportional_hazard_test(c, x, time_transform="km")
out["ph_test_km"] = {"chi_square": ph.test_statistic.tolist(), "p": ph.p_value.tolist()}

# Cox adjusted for age, sex, obstruct and node4 (complete columns), Efron ties.
xa = x.assign(age=d.age, sex=d.sex, obstruct=d.obstruct, node4=d.node4)
ca = CoxPHFitter().fit(xa, "time", "status", fit_options=TIGHT)
cols = ["Lev", "Lev+5FU", "age", "sex", "obstruct", "node4"]
out["cox_adjusted"] = {"names": cols, "coef": ca.params_[cols].tolist(), "se": ca.standard_errors_[cols].tolist()}

# Subgroup by sex: HR of Lev+5FU vs Obs within each sex; interaction from a Cox model with rx x sex terms
# (Wald test on the two interaction coefficients, lifelines' covariance).
sub = {}
for s in (0, 1):
    g = x[d.sex == s]
    cs = CoxPHFitter().fit(g, "time", "status", fit_options=TIGHT)
    sub[str(s)] = {"coef": cs.params_[["Lev", "Lev+5FU"]].tolist(), "se": cs.standard_errors_[["Lev", "Lev+5FU"]].tolist()}
xi = x.assign(sex=d.sex, Lev_sex=x.Lev * d.sex, L5_sex=x["Lev+5FU"] * d.sex)
ci_ = CoxPHFitter().fit(xi, "time", "status", fit_options=TIGHT)
b = ci_.params_[["Lev_sex", "L5_sex"]].values
V = ci_.variance_matrix_.loc[["Lev_sex", "L5_sex"], ["Lev_sex", "L5_sex"]].values
w = float(b @ np.linalg.solve(V, b))
out["cox_subgroup_sex"] = {"within": sub, "interaction_wald": w, "interaction_p": float(stats.chi2.sf(w, 2))}

# Logistic regression death ~ rx * sex (statsmodels), Wald test of the interaction terms.
import statsmodels.formula.api as smf
ld = pd.DataFrame({"y": d.status, "lev": x.Lev, "l5": x["Lev+5FU"], "sex": d.sex})
lm = smf.logit("y ~ lev + l5 + sex + lev:sex + l5:sex", ld).fit(disp=0, tol=1e-12)
wt = lm.wald_test("lev:sex = 0, l5:sex = 0", scalar=True)
out["logistic_rx_sex"] = {"coef": lm.params.tolist(), "se": lm.bse.tolist(),
                          "interaction_wald": float(wt.statistic), "interaction_p": float(wt.pvalue)}

# Table 1 pieces: age by arm (numpy's default linear quantiles = R type 7), nodes missing counts, SMD of age.
t1 = {}
for arm in arms:
    g = d[d.rx == arm]
    t1[arm] = {"age_n": int(g.age.notna().sum()), "age_mean": float(g.age.mean()), "age_sd": float(g.age.std(ddof=1)),
               "age_median": float(g.age.median()), "age_q1": float(g.age.quantile(0.25)), "age_q3": float(g.age.quantile(0.75)),
               "nodes_missing": int(g.nodes.isna().sum()), "sex_1": int((g.sex == 1).sum())}
a5, ob = d[d.rx == "Lev+5FU"], d[d.rx == "Obs"]
t1["smd_age_lev5fu_vs_obs"] = float((a5.age.mean() - ob.age.mean()) / np.sqrt((a5.age.var() + ob.age.var()) / 2))
p1, p0 = (a5.sex == 1).mean(), (ob.sex == 1).mean()
t1["smd_sex_lev5fu_vs_obs"] = float((p1 - p0) / np.sqrt((p1 * (1 - p1) + p0 * (1 - p0)) / 2))
out["table1"] = t1

with open("crates/analysis/tests/reference/colon.json", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(json.dumps(out["logrank"]), json.dumps(out["cox_rx"]["efron"]))
