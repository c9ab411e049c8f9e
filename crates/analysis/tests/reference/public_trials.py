"""Reference numbers for trialflow's analysis of the public example trials, from lifelines, statsmodels and scipy.

Run from the repository root:  python3 crates/analysis/tests/reference/public_trials.py
Writes crates/analysis/tests/reference/public_trials.json; crates/cli/tests/it/public_trials.rs runs
`trialflow pipeline … --config config/examples/<trial>.yaml` and compares its analysis.json with it.
Each entry below restates the population and definitions of its config file.
"""
import json
import sys
import warnings

import lifelines
import numpy as np
import pandas as pd
import scipy
import statsmodels
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.tools.sm_exceptions import ConvergenceWarning

TIGHT = {"precision": 1e-12, "r_precision": 1e-12}

TRIALS = {
    "colon": dict(csv="colon.csv", arm="rx", ref="Obs", filter=lambda d: d.etype == 2, outcome=lambda d: d.status == 1,
                  numeric=["age", "nodes"], tte=("time", lambda d: d.status == 1), times=[365, 1095, 1825],
                  adjust=["age", "sex", "obstruct", "node4"], subgroups=[("sex", []), ("age", [65]), ("node4", [])]),
    "opt": dict(csv="opt.csv", arm="Group", ref="C",
                # '   ' (three spaces) means missing: such subjects lack the outcome; they are in Table 1 (n) and
                # left out of the outcome analyses
                known=lambda d: d["Preg.ended...37.wk"].str.strip() != "",
                outcome=lambda d: d["Preg.ended...37.wk"].str.strip() == "Yes",
                numeric=["Age", "BMI", "BL.PD.avg", "V5.PD.avg"], subgroups=[("Clinic", []), ("Age", [30])]),
    "indo_rct": dict(csv="indo_rct.csv", arm="rx", ref="0_placebo", outcome=lambda d: (d.outcome == "1_yes"),
                     numeric=["age", "risk"], subgroups=[("gender", []), ("age", [50]), ("site", [])]),
    "strep_tb": dict(csv="strep_tb.csv", arm="arm", ref="Control", outcome=lambda d: d.improved.astype(bool),
                     numeric=[], subgroups=[("gender", []), ("baseline_cavitation", [])]),
    "supraclavicular": dict(csv="supraclavicular.csv", arm="group", ref="1", outcome=lambda d: d.onset_sensory <= 20,
                            numeric=["age", "bmi", "opioid_total"], subgroups=[("gender", [])],
                            tte=("onset_sensory", lambda d: d.nerve_block_censor == 0), times=[10, 20, 30],
                            adjust=["age", "gender"]),
    "respiratory": dict(csv="respiratory.csv", arm="treatment", ref="placebo", filter=lambda d: d.month == 4,
                        outcome=lambda d: d.status == "good", numeric=["age"],
                        subgroups=[("sex", []), ("centre", [])]),
}


def as_level(v):
    """A value as trialflow's text columns hold it ('1', not '1.0')."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def describe(x):
    x = x.dropna()
    return {"n": int(len(x)), "mean": float(x.mean()), "sd": float(x.std(ddof=1)), "median": float(x.median()),
            "q1": float(x.quantile(0.25)), "q3": float(x.quantile(0.75))}


def binary_comparison(y1, y0):
    e1, n1, e0, n0 = int(y1.sum()), int(len(y1)), int(y0.sum()), int(len(y0))
    table = [[e1, n1 - e1], [e0, n0 - e0]]
    out = {"rd": e1 / n1 - e0 / n0,
           "rd_ci": list(confint_proportions_2indep(e1, n1, e0, n0, method="wald", compare="diff")),
           "fisher_p": float(stats.fisher_exact(table)[1])}
    if min(e1, e0) > 0:
        out["rr"] = (e1 / n1) / (e0 / n0)
        out["rr_ci"] = list(confint_proportions_2indep(e1, n1, e0, n0, method="log", compare="ratio"))
    if min(e1, n1 - e1, e0, n0 - e0) > 0:
        out["or"] = (e1 * (n0 - e0)) / ((n1 - e1) * e0)
        out["or_ci"] = list(confint_proportions_2indep(e1, n1, e0, n0, method="logit", compare="odds-ratio"))
        chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
        out["chi2"], out["chi2_p"] = float(chi2), float(p)
    return {k: (float(v) if not isinstance(v, list) else [float(a) for a in v]) for k, v in out.items()}


def wald(params, cov, names):
    b = params[names].values
    v = cov.loc[names, names].values
    w = float(b @ np.linalg.solve(v, b))
    return w, float(stats.chi2.sf(w, len(names)))


def band_labels(bands):
    f = lambda x: str(int(x)) if float(x).is_integer() else str(x)
    labels = [f"< {f(bands[0])}"] + [f"{f(a)}–{f(b)}" for a, b in zip(bands, bands[1:])] + [f">= {f(bands[-1])}"]
    return labels


def analyze(spec):
    d = pd.read_csv(f"data/examples/{spec['csv']}")
    if "filter" in spec:
        d = d[spec["filter"](d)].copy()
    d["_arm"] = d[spec["arm"]].map(as_level)
    # Table 1 describes every randomized subject; the outcome analyses those with the outcome
    everyone = d
    if "known" in spec:
        d = d[spec["known"](d)].copy()
    d["_y"] = spec["outcome"](d).astype(int)
    ref = spec["ref"]
    arms = [ref] + sorted(a for a in d._arm.unique() if a != ref)
    out = {"n": int(len(everyone)), "outcome_missing": int(len(everyone) - len(d)),
           "arms": {a: {"n": int((d._arm == a).sum()), "events": int(d._y[d._arm == a].sum())} for a in arms}}
    out["comparisons"] = {a: binary_comparison(d._y[d._arm == a], d._y[d._arm == ref]) for a in arms[1:]}
    t1 = {}
    for v in spec["numeric"]:
        per = {a: describe(everyone[v][everyone._arm == a]) for a in arms}
        per["missing"] = {a: int(everyone[v][everyone._arm == a].isna().sum()) for a in arms}
        per["smd"] = {a: (per[a]["mean"] - per[ref]["mean"]) / np.sqrt((per[a]["sd"] ** 2 + per[ref]["sd"] ** 2) / 2)
                      for a in arms[1:]}
        t1[v] = per
    out["table1"] = t1
    dummies = [f"arm={a}" for a in arms[1:]]
    for a in arms[1:]:
        d[f"arm={a}"] = (d._arm == a).astype(float)
    tte = spec.get("tte")
    if tte:
        d["_t"] = d[tte[0]].astype(float)
        d["_e"] = tte[1](d).astype(int)
        surv = {"medians": {}, "at_times": {}}
        for a in arms:
            g = d[d._arm == a]
            k = KaplanMeierFitter().fit(g._t, g._e)
            ci = lifelines.utils.median_survival_times(k.confidence_interval_)
            nan = lambda x: None if np.isinf(x) else float(x)
            surv["medians"][a] = [nan(k.median_survival_time_), nan(ci.iloc[0, 0]), nan(ci.iloc[0, 1])]
            at = {}
            for t in spec.get("times", []):
                cidx = k.confidence_interval_.loc[k.confidence_interval_.index <= t]
                at[str(t)] = {"s": float(k.survival_function_at_times(t).iloc[0]),
                              "ci": [float(cidx.iloc[-1, 0]), float(cidx.iloc[-1, 1])],
                              "at_risk": int((g._t >= t).sum())}
            surv["at_times"][a] = at
        lr = multivariate_logrank_test(d._t, d._arm, d._e)
        surv["logrank"] = [float(lr.test_statistic), float(lr.p_value)]
        x = d[dummies + ["_t", "_e"]]
        c = CoxPHFitter().fit(x, "_t", "_e", fit_options=TIGHT)
        surv["cox"] = {"coef": c.params_[dummies].tolist(), "se": c.standard_errors_[dummies].tolist(),
                       "p": c.summary.loc[dummies, "p"].tolist()}
        ph = proportional_hazard_test(c, x, time_transform="km")
        surv["ph"] = {"chi2": ph.test_statistic.tolist(), "p": ph.p_value.tolist()}
        if spec.get("adjust"):
            xa = d[dummies + spec["adjust"] + ["_t", "_e"]].dropna()
            ca = CoxPHFitter().fit(xa, "_t", "_e", fit_options=TIGHT)
            surv["cox_adjusted"] = {"n": int(len(xa)), "coef": ca.params_[dummies + spec["adjust"]].tolist(),
                                    "se": ca.standard_errors_[dummies + spec["adjust"]].tolist()}
        out["survival"] = surv
    subs = {}
    for var, bands in spec["subgroups"]:
        if bands:
            labels = band_labels(bands)
            lv = d[var].map(lambda v: None if pd.isna(v) else labels[sum(v >= b for b in bands)])
        else:
            lv = d[var].map(lambda v: None if pd.isna(v) else as_level(v))
        dd = d[lv.notna()].copy()
        dd["_lv"] = lv[lv.notna()]
        levels = sorted(dd._lv.unique())
        effects = {}
        for lvl in levels:
            g = dd[dd._lv == lvl]
            for a in arms[1:]:
                gg = g[(g._arm == a) | (g._arm == ref)]
                key = f"{lvl}|{a}"
                if tte:
                    if gg._e.sum() == 0 or gg._arm.nunique() < 2:
                        effects[key] = None
                        continue
                    cx = CoxPHFitter().fit(gg[[f"arm={a}", "_t", "_e"]], "_t", "_e", fit_options=TIGHT)
                    b, se = float(cx.params_.iloc[0]), float(cx.standard_errors_.iloc[0])
                    effects[key] = [np.exp(b), np.exp(b - 1.959963984540054 * se), np.exp(b + 1.959963984540054 * se)]
                else:
                    y1, y0 = gg._y[gg._arm == a], gg._y[gg._arm == ref]
                    e1, n1, e0, n0 = int(y1.sum()), len(y1), int(y0.sum()), len(y0)
                    if min(e1, n1 - e1, e0, n0 - e0) == 0:
                        effects[key] = None
                        continue
                    ci = confint_proportions_2indep(e1, n1, e0, n0, method="logit", compare="odds-ratio")
                    effects[key] = [(e1 * (n0 - e0)) / ((n1 - e1) * e0), float(ci[0]), float(ci[1])]
        # interaction: arm dummies + level dummies + products, Wald test on the products
        X = pd.DataFrame(index=dd.index)
        for a in arms[1:]:
            X[f"a_{a}"] = (dd._arm == a).astype(float)
        for lvl in levels[1:]:
            X[f"l_{lvl}"] = (dd._lv == lvl).astype(float)
        prods = []
        for a in arms[1:]:
            for lvl in levels[1:]:
                X[f"p_{a}_{lvl}"] = X[f"a_{a}"] * X[f"l_{lvl}"]
                prods.append(f"p_{a}_{lvl}")
        inter = None
        if prods:
            try:
                warnings.simplefilter("error", ConvergenceWarning)  # no convergence → not estimable
                if tte:
                    ci_ = CoxPHFitter().fit(X.assign(_t=dd._t, _e=dd._e), "_t", "_e", fit_options=TIGHT)
                    inter = wald(ci_.params_, ci_.variance_matrix_, prods)
                    if np.abs(ci_.params_).max() > 15:
                        inter = None
                else:
                    m = sm.Logit(dd._y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
                    inter = wald(m.params, m.cov_params(), prods)
                    if np.abs(m.params).max() > 15:
                        inter = None  # monotone likelihood (an empty cell): the Wald test is meaningless
            except Exception as exc:  # separation etc.: trialflow reports "not estimable"
                inter = None
        subs[var] = {"effects": effects, "interaction": inter}
    out["subgroups"] = subs
    return out


result = {"versions": {"python": sys.version.split()[0], "lifelines": lifelines.__version__, "scipy": scipy.__version__,
                       "statsmodels": statsmodels.__version__, "pandas": pd.__version__, "numpy": np.__version__}}
for name, spec in TRIALS.items():
    result[name] = analyze(spec)

with open("crates/analysis/tests/reference/public_trials.json", "w") as f:
    json.dump(result, f, indent=1, default=float)
    f.write("\n")
for name in TRIALS:
    r = result[name]
    print(name, r["n"], {k: v["interaction"] for k, v in r["subgroups"].items()})
