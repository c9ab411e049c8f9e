//! Results as data, in the spirit of CDISC's Analysis Results Standard: every number of analysis.json as one
//! record naming its analysis, population, parameter, arm(s), statistic and method, written as
//! `results.json` and `results.csv` beside the report, so that a second programmer's numbers are a diff.
//!
//! The records are read off analysis.json itself, so none is left out: each numeric leaf becomes one record,
//! its context taken from the objects above it (an `arm`, a `reference`, a `label` or `term` or `column`).

use serde_json::Value;

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultRecord {
    /// The analysis (`survival`, `survival.rmst`, `safety.by_soc`, `continuous`, …).
    pub analysis: String,
    /// The population it is computed over; empty for every accepted row.
    pub population: String,
    /// The parameter, term, variable or row label the number belongs to, `/`-joined from the outside in.
    pub parameter: String,
    /// The arm, or `arm vs reference` for a comparison; empty where the number is not by arm.
    pub arms: String,
    /// The statistic (`estimate`, `ci_low`, `p`, `n`, …).
    pub statistic: String,
    pub method: String,
    pub value: f64,
    /// Where the number is in analysis.json (a JSON pointer).
    pub path: String,
}

/// The method behind each analysis, as the report's methods section states it in full.
fn method_of(analysis: &str) -> &'static str {
    let top = analysis.split('.').next().unwrap_or_default();
    match (top, analysis) {
        (_, "survival.rmst") => "restricted mean survival time (R survival print.survfit rmean)",
        (_, "survival.stratified") => {
            "stratified log-rank and Cox (R survdiff/coxph with strata())"
        }
        (_, "survival.milestones") => "Kaplan–Meier difference, Greenwood SE, normal CI",
        ("survival", _) | ("secondary_survival", _) => {
            "Kaplan–Meier (log-log CI), log-rank, Cox proportional hazards"
        }
        ("continuous", _) => "ANCOVA (R lm), least-squares means (R emmeans)",
        ("safety", _) => {
            "subjects with an event / population; Wald risk difference; exact Poisson rate"
        }
        ("disposition", _) => "subject counts by end-of-study status and reason",
        ("comparisons", _) | ("arms", _) | ("overall_chi_square", _) => {
            "2×2: Wald risk difference, Katz risk ratio, Woolf odds ratio, Pearson χ², Fisher exact"
        }
        ("table1", _) => "descriptive statistics by arm; standardized mean differences",
        ("subgroups", _) => "effect within subgroup levels; Wald interaction test",
        ("clustered_outcome", _) => "logistic regression, cluster-robust sandwich SE",
        ("flow", _) => "row accounting of the data pipeline",
        ("models", _) => "model evaluation on the test split",
        _ => "",
    }
}

/// Keys whose string value names the parameter a number belongs to.
const PARAMETER_KEYS: [&str; 6] = ["label", "term", "variable", "column", "name", "level"];

/// Arrays with one item per arm, in the trial's arm order, whatever their items.
const PER_ARM_KEYS: [&str; 4] = ["subjects", "events", "rates", "patient_years"];

#[derive(Clone, Default)]
struct Context {
    analysis: String,
    population: String,
    parameter: Vec<String>,
    arm: Option<String>,
    reference: Option<String>,
}

impl Context {
    /// The context inside object `o` (its arm, reference, parameter, population).
    fn enter(&self, o: &serde_json::Map<String, Value>) -> Self {
        let mut c = self.clone();
        let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(a) = text("arm") {
            c.arm = Some(a);
        }
        if let Some(r) = text("reference") {
            c.reference = Some(r);
        }
        if let Some(p) = text("population") {
            c.population = p;
        }
        if let Some(p) = PARAMETER_KEYS.iter().find_map(|k| text(k)) {
            c.parameter.push(p);
        }
        c
    }

    fn arms(&self) -> String {
        match (&self.arm, &self.reference) {
            (Some(a), Some(r)) if a != r => format!("{a} vs {r}"),
            (Some(a), _) => a.clone(),
            _ => String::new(),
        }
    }
}

/// Walks `v`, one record per number. `arms` are the trial's arms: a pair `[arm, …]` or a per-arm array is read
/// as by arm.
/// `parent` is the key of the object holding `v` (none at an analysis's top): a statistic is named within it,
/// e.g. `rates.ci_low` beside `risk_differences.ci_low`.
fn walk(
    v: &Value,
    (path, key, parent): (&str, &str, Option<&str>),
    c: &Context,
    arms: &[String],
    out: &mut Vec<ResultRecord>,
) {
    match v {
        Value::Number(n) => {
            if let Some(value) = n.as_f64() {
                out.push(ResultRecord {
                    method: method_of(&c.analysis).to_string(),
                    analysis: c.analysis.clone(),
                    population: c.population.clone(),
                    parameter: c.parameter.join(" / "),
                    arms: c.arms(),
                    statistic: parent.map_or(key.to_string(), |p| format!("{p}.{key}")),
                    value,
                    path: path.to_string(),
                });
            }
        }
        Value::Object(o) => {
            let inner = c.enter(o);
            for (k, x) in o {
                let mut next = inner.clone();
                if matches!(
                    k.as_str(),
                    "rmst" | "stratified" | "milestones" | "by_soc" | "overview"
                ) && !x.is_number()
                    || c.analysis.is_empty()
                {
                    next.analysis = if c.analysis.is_empty() {
                        k.clone()
                    } else {
                        format!("{}.{k}", c.analysis)
                    };
                }
                let inside = (key != c.analysis).then_some(key);
                walk(x, (&format!("{path}/{k}"), k, inside), &next, arms, out);
            }
        }
        Value::Array(items) => {
            // a pair [name, …]: the name is an arm or a parameter of what follows
            let head = items.first().and_then(Value::as_str).map(str::to_string);
            let per_arm = items.len() == arms.len()
                && (items.iter().all(Value::is_number) || PER_ARM_KEYS.contains(&key));
            let against_reference = key == "risk_differences" && items.len() + 1 == arms.len();
            for (i, x) in items.iter().enumerate() {
                let mut next = c.clone();
                match &head {
                    Some(h) if i > 0 => {
                        if arms.contains(h) {
                            next.arm = Some(h.clone());
                        } else {
                            next.parameter.push(h.clone());
                        }
                    }
                    _ => {}
                }
                if per_arm {
                    next.arm = Some(arms[i].clone());
                    next.reference = None;
                } else if against_reference {
                    next.arm = Some(arms[i + 1].clone());
                    next.reference = Some(arms[0].clone());
                }
                let statistic = if per_arm || against_reference || head.is_some() || !x.is_number()
                {
                    key.to_string()
                } else {
                    format!("{key}[{i}]")
                };
                walk(
                    x,
                    (&format!("{path}/{i}"), &statistic, parent),
                    &next,
                    arms,
                    out,
                );
            }
        }
        _ => {}
    }
}

/// Every number of `a` as a record.
pub fn results(a: &Analysis) -> Result<Vec<ResultRecord>> {
    let v =
        serde_json::to_value(a).map_err(|e| Error::Internal(format!("analysis as JSON: {e}")))?;
    let arms: Vec<String> = a.arms.iter().map(|x| x.arm.clone()).collect();
    let mut out = Vec::new();
    if let Value::Object(o) = &v {
        for (k, x) in o {
            let population = a
                .analysis_populations
                .get(match k.as_str() {
                    "arms" | "comparisons" | "overall_chi_square" | "clustered_outcome" => {
                        "outcome"
                    }
                    "secondary_survival" => "survival",
                    other => other,
                })
                .cloned()
                .unwrap_or_default();
            let c = Context {
                analysis: k.clone(),
                population,
                ..Default::default()
            };
            walk(x, (&format!("/{k}"), k, None), &c, &arms, &mut out);
        }
    }
    Ok(out)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The records as CSV (RFC 4180), one header line.
pub fn to_csv(records: &[ResultRecord]) -> String {
    let mut out = String::from("analysis,population,parameter,arms,statistic,method,value,path\n");
    for r in records {
        let fields = [
            csv_field(&r.analysis),
            csv_field(&r.population),
            csv_field(&r.parameter),
            csv_field(&r.arms),
            csv_field(&r.statistic),
            csv_field(&r.method),
            format!("{:?}", r.value),
            csv_field(&r.path),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}
