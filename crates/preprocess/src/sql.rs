//! SQL generated from the dataset contract. Each function returns a statement a person can read; the clean
//! task writes them to `processed/sql/` beside its outputs.
//!
//! Views, each over the one before, run as one streaming plan: `staged` (every contract column as trimmed text,
//! empty = NULL, plus `_row`, `_source`, `_line`, `_rowhash`, `_defect`) → `typed` → `checked` (one `_check_N`
//! column per rule: NULL, or `action|column|rule|reason` where the row breaks it) → `accepted` → `derived` →
//! `clean`. Every input row comes out of `clean`; the clean task routes it to the clean table or to the
//! quarantine by its checks, the filter's verdict `_keep` and the first-row-per-id rule.

use trialflow_core::config::{
    CompetingAs, Config, EventConvention, Rule, RuleAction, SubjectId, population_column,
};
pub use trialflow_core::features::table_column;

/// Quotes an identifier for DataFusion (column names such as `ph.ecog` need it).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

fn in_list(values: &[String]) -> String {
    values.iter().map(|v| lit(v)).collect::<Vec<_>>().join(", ")
}

/// Lower-cased spelling → canonical level for a categorical rule (allowed levels map to themselves).
pub fn canonical_map(rule: Option<&Rule>) -> Vec<(String, String)> {
    let Some(rule) = rule else { return Vec::new() };
    let mut out: Vec<(String, String)> = Vec::new();
    for level in rule.allowed.iter().flatten() {
        out.push((level.to_lowercase(), level.clone()));
    }
    for (k, v) in &rule.synonyms {
        out.push((k.to_lowercase(), v.clone()));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// `coalesce(CASE lower(c) WHEN spelling THEN level … END, c)`: a known spelling becomes its level, anything
/// else stays as it was (and fails the allowed-levels check). Literal WHENs and THENs without an ELSE let
/// DataFusion evaluate the CASE as one hash lookup per row; `ELSE c` would make it test the branches one by
/// one over the rows still unmatched.
fn categorical_expr(col: &str, rule: Option<&Rule>) -> String {
    let map = canonical_map(rule);
    if map.is_empty() {
        return ident(col);
    }
    let arms: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("WHEN {} THEN {}", lit(k), lit(v)))
        .collect();
    // Levels that are numbers also match another spelling of the number (`1.0`, `01` for level `1`): an
    // export's writer, not the data, decides how a code is printed.
    let numbers: Vec<String> = map
        .iter()
        .filter_map(|(k, v)| {
            trialflow_core::codes::number(k).map(|x| format!("WHEN {} THEN {}", fmt_num(x), lit(v)))
        })
        .collect();
    let by_number = if numbers.is_empty() {
        String::new()
    } else {
        format!(
            ", CASE TRY_CAST({c} AS DOUBLE) {} END",
            numbers.join(" "),
            c = ident(col)
        )
    };
    format!(
        "coalesce(CASE lower({c}) {} END{by_number}, {c})",
        arms.join(" "),
        c = ident(col)
    )
}

/// `c` is one of `codes`: the same text, or the same number when the code is one (`1.0` is code `1`).
fn code_in(cfg: &Config, c: &str, codes: &[String]) -> String {
    let numbers: Vec<String> = codes
        .iter()
        .filter_map(|k| trialflow_core::codes::number(k).map(fmt_num))
        .collect();
    let text = format!("{} IN ({})", text_of(cfg, c), in_list(codes));
    if numbers.is_empty() {
        text
    } else {
        format!(
            "({text} OR TRY_CAST({} AS DOUBLE) IN ({}))",
            ident(c),
            numbers.join(", ")
        )
    }
}

/// A column as text: a derived role column (a number) cast, a source column (text already) as it is.
fn text_of(cfg: &Config, c: &str) -> String {
    if cfg.dataset.derived.contains_key(c) {
        format!("CAST({} AS VARCHAR)", ident(c))
    } else {
        ident(c)
    }
}

/// The outcome column name in every table after `typed`.
pub const OUTCOME: &str = "_outcome";
pub const EVENT: &str = "_event";
pub const TIME: &str = "_time";

pub const EVENT_STATE: &str = "_event_state";

/// SQL conditions over the event column: (is an event, is censored, is a competing event, what is expected).
/// CDISC's `CNSR` is 0 for the event and a positive integer for each reason of censoring.
fn event_conditions(cfg: &Config) -> Option<(String, String, String, String)> {
    let t = cfg.dataset.time_to_event.as_ref()?;
    let competing = if t.competing_values.is_empty() {
        "false".to_string()
    } else {
        code_in(cfg, &t.event, &t.competing_values)
    };
    Some(match t.convention {
        EventConvention::Event => {
            let (events, censored) = cfg.event_codes();
            let mut all = events.clone();
            all.extend(censored.iter().cloned());
            all.extend(t.competing_values.iter().cloned());
            (
                code_in(cfg, &t.event, &events),
                code_in(cfg, &t.event, &censored),
                competing,
                format!("expected one of the event codes [{}]", all.join(", ")),
            )
        }
        EventConvention::CdiscCnsr => {
            let cnsr = format!("TRY_CAST({} AS DOUBLE)", ident(&t.event));
            (
                format!("{cnsr} = 0.0"),
                format!("({cnsr} > 0.0 AND {cnsr} = floor({cnsr}) AND NOT {competing})"),
                competing,
                "expected CNSR 0 (event) or a positive integer (censored)".to_string(),
            )
        }
    })
}

const TRUE_WORDS: &str = "'1', '1.0', 'true', 'yes', 'y'";
const FALSE_WORDS: &str = "'0', '0.0', 'false', 'no', 'n'";

/// `typed`: numbers cast (unparseable → NULL, flagged in `violations`), categories canonicalized.
pub fn typed(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let numeric = cfg.numeric_source_columns();
    let mut cols = vec![
        "\"_row\"".to_string(),
        "\"_source\"".into(),
        "\"_line\"".into(),
        "\"_rowhash\"".into(),
        "\"_defect\"".into(),
    ];
    for c in cfg.source_columns() {
        if numeric.contains(&c) {
            cols.push(format!("TRY_CAST({0} AS DOUBLE) AS {0}", ident(&c)));
            cols.push(format!("{} AS {}", ident(&c), ident(&format!("{c}__raw"))));
        } else if d.id.columns().contains(&c)
            || d.cluster.as_ref() == Some(&c)
            || Some(&c) == d.outcome.column.as_ref()
        {
            cols.push(ident(&c));
        } else {
            cols.push(format!(
                "{} AS {}",
                categorical_expr(&c, d.rules.get(&c)),
                ident(&c)
            ));
        }
    }
    let typed = format!("SELECT\n  {}\nFROM staged", cols.join(",\n  "));
    // Derived columns that are the time, the event, the outcome (numbers) or the id, cluster, arm or site
    // (`derived_text`) are needed by the checks that follow, so they are computed here, over the typed values
    // (the other derived columns come after the null rules).
    let roles = cfg.derived_roles();
    if roles.is_empty() && d.derived_text.is_empty() {
        return typed;
    }
    let derived: Vec<String> = roles
        .iter()
        .map(|name| format!("CAST(({}) AS DOUBLE) AS {}", d.derived[name], ident(name)))
        .chain(
            d.derived_text
                .iter()
                .map(|(name, expr)| format!("CAST(({expr}) AS VARCHAR) AS {}", ident(name))),
        )
        .collect();
    format!(
        "SELECT\n  *,\n  {}\nFROM (\n{typed}\n)",
        derived.join(",\n  ")
    )
}

/// The rule of a value spelt like a missing value (`NA`, `.`) that the config does not declare as one.
pub const MISSING_TOKEN_RULE: &str = "missing_token";
const MISSING_TOKEN_REASON: &str = "looks like a missing value; list it in `dataset.missing_values` (or the \
     source's `missing_values`) to read it as one";

/// The pseudonymized subject id: one column, the columns of a composite id joined by a unit separator (no
/// text holds it, so `a`+`bc` and `ab`+`c` stay apart), or the row's source and line.
pub(crate) fn subject_expr(id: &SubjectId) -> String {
    match id {
        SubjectId::Column(c) => format!("pseudonymize({})", ident(c)),
        SubjectId::Composite(cols) => format!(
            "pseudonymize(concat_ws(chr(31), {}))",
            cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
        ),
        SubjectId::Row => {
            "pseudonymize(concat(\"_source\", chr(31), CAST(\"_line\" AS VARCHAR)))".to_string()
        }
    }
}

/// The prefix of the check columns in `checked` and after.
pub const CHECK_PREFIX: &str = "_check_";

/// The label a check column carries where a row breaks its rule: `action|column|rule|reason`. Reasons name
/// the rule, never the value.
pub fn check_label(action: RuleAction, column: &str, rule: &str, reason: &str) -> String {
    let action = match action {
        RuleAction::Quarantine => "quarantine",
        RuleAction::Null => "null",
    };
    format!("{action}|{column}|{rule}|{reason}")
}

/// The check columns: `CASE WHEN <broken> THEN '<label>' END AS "_check_N"`.
fn checks(cfg: &Config) -> Vec<String> {
    let d = &cfg.dataset;
    let numeric = cfg.numeric_source_columns();
    // A malformed record (ragged, not UTF-8) is quarantined whole, its defect as the reason.
    let mut parts: Vec<String> = vec![format!(
        "CASE WHEN \"_defect\" IS NOT NULL THEN concat({}, \"_defect\") END",
        lit(&check_label(
            RuleAction::Quarantine,
            "_record",
            "malformed",
            ""
        ))
    )];
    let mut add = |column: &str, rule: &str, reason: &str, action: RuleAction, cond: String| {
        parts.push(format!(
            "CASE WHEN {cond} THEN {} END",
            lit(&check_label(action, column, rule, reason))
        ));
    };
    // A missing binary outcome is not a reason to drop a randomized subject: the row stays in the clean table
    // (outcome NULL), is described in Table 1 and left out of the outcome analyses and the models, counted.
    let mut required = d.id.columns().to_vec();
    required.extend(d.cluster.clone());
    required.push(d.arm.column.clone());
    if let Some(t) = &d.time_to_event {
        required.push(t.time.clone());
        required.push(t.event.clone());
    }
    let mut seen = std::collections::BTreeSet::new();
    required.retain(|c| seen.insert(c.clone()));
    for c in &required {
        let raw = if numeric.contains(c) {
            format!("{c}__raw")
        } else {
            c.clone()
        };
        add(
            c,
            "required",
            "required value is missing",
            RuleAction::Quarantine,
            format!("{} IS NULL", ident(&raw)),
        );
    }
    let lookalikes = in_list(&trialflow_core::codes::MISSING_LOOKALIKES.map(String::from));
    let mut parse_checks = Vec::new();
    for c in &numeric {
        // One check column, two labels: the look-alike test runs only on the rare value that fails to parse.
        let raw = ident(&format!("{c}__raw"));
        parse_checks.push(format!(
            // NaN and ±inf fail the comparison, NULL (unparseable) is not true either; one comparison, not two.
            // `IS NOT TRUE` rather than `NOT COALESCE(…, false)`, which DataFusion plans as a CASE.
            "CASE WHEN {raw} IS NOT NULL AND (abs({v}) < 1e308) IS NOT TRUE THEN CASE WHEN \
             upper({raw}) IN ({lookalikes}) THEN {missing} ELSE {parse} END END",
            v = ident(c),
            missing = lit(&check_label(
                RuleAction::Quarantine,
                c,
                MISSING_TOKEN_RULE,
                MISSING_TOKEN_REASON
            )),
            parse = lit(&check_label(
                RuleAction::Quarantine,
                c,
                "parse",
                "expected a finite number"
            )),
        ));
    }
    // A level spelt like a missing value ("NA") would become a level of its own in Table 1 and the models;
    // unless the contract lists it as a level, it is a missing value the config has not declared.
    for c in cfg.source_columns() {
        if numeric.contains(&c) || d.id.columns().contains(&c) || d.cluster.as_ref() == Some(&c) {
            continue;
        }
        let declared: Vec<String> = d
            .rules
            .get(&c)
            .and_then(|r| r.allowed.as_ref())
            .into_iter()
            .flatten()
            .map(|l| l.to_uppercase())
            .collect();
        let tokens: Vec<String> = trialflow_core::codes::MISSING_LOOKALIKES
            .iter()
            .filter(|t| !declared.iter().any(|l| l == *t))
            .map(|t| t.to_string())
            .collect();
        if !tokens.is_empty() {
            add(
                &c,
                MISSING_TOKEN_RULE,
                MISSING_TOKEN_REASON,
                RuleAction::Quarantine,
                format!("upper({}) IN ({})", ident(&c), in_list(&tokens)),
            );
        }
    }
    for (c, rule) in &d.rules {
        if numeric.contains(c) {
            if let Some(cond) = range_violation(c, rule) {
                let reason = format!(
                    "outside the valid range [{}, {}]",
                    rule.min.map(fmt_num).unwrap_or("-inf".into()),
                    rule.max.map(fmt_num).unwrap_or("inf".into())
                );
                add(c, "range", &reason, rule.action, cond);
            }
        } else if let Some(allowed) = &rule.allowed {
            add(
                c,
                "allowed",
                &format!("not one of the allowed levels [{}]", allowed.join(", ")),
                rule.action,
                format!(
                    "{0} IS NOT NULL AND {0} NOT IN ({1})",
                    ident(c),
                    in_list(allowed)
                ),
            );
        }
    }
    let o = &d.outcome;
    match (&o.column, &o.expression) {
        (Some(c), _) => {
            let (cond, reason) = match (&o.positive, &o.negative) {
                (Some(p), Some(n)) => {
                    let mut all = p.clone();
                    all.extend(n.iter().cloned());
                    (
                        format!("NOT {}", code_in(cfg, c, &all)),
                        format!("expected one of [{}]", all.join(", ")),
                    )
                }
                (Some(_), None) => ("false".to_string(), String::new()),
                _ => (
                    format!(
                        "lower({}) NOT IN ({TRUE_WORDS}, {FALSE_WORDS})",
                        text_of(cfg, c)
                    ),
                    "expected 0/1, true/false or yes/no".to_string(),
                ),
            };
            if cond != "false" {
                add(
                    c,
                    "outcome",
                    &reason,
                    RuleAction::Quarantine,
                    format!("{} IS NOT NULL AND {cond}", ident(c)),
                );
            }
        }
        (None, Some(_)) => {}
        (None, None) => {}
    }
    if let Some(t) = &d.time_to_event {
        add(
            &t.time,
            "time",
            "expected a non-negative time",
            RuleAction::Quarantine,
            format!("{} < 0", ident(&t.time)),
        );
    }
    if let (Some(t), Some((event, censored, competing, expected))) =
        (&d.time_to_event, event_conditions(cfg))
    {
        add(
            &t.event,
            "event",
            &expected,
            RuleAction::Quarantine,
            format!(
                "{} IS NOT NULL AND ({event} OR {censored} OR {competing}) IS NOT TRUE",
                ident(&t.event),
            ),
        );
    }
    parts.extend(parse_checks);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| format!("{p} AS {}", ident(&format!("{CHECK_PREFIX}{}", i + 1))))
        .collect()
}

/// The names of the check columns, in order.
pub fn check_columns(cfg: &Config) -> Vec<String> {
    (1..=checks(cfg).len())
        .map(|i| format!("{CHECK_PREFIX}{i}"))
        .collect()
}

/// `checked`: typed rows plus one check column per rule.
pub fn checked(cfg: &Config) -> String {
    format!("SELECT\n  *,\n  {}\nFROM typed", checks(cfg).join(",\n  "))
}

fn range_violation(c: &str, rule: &Rule) -> Option<String> {
    let v = ident(c);
    match (rule.min, rule.max) {
        (Some(lo), Some(hi)) => Some(format!("({v} < {} OR {v} > {})", fmt_num(lo), fmt_num(hi))),
        (Some(lo), None) => Some(format!("{v} < {}", fmt_num(lo))),
        (None, Some(hi)) => Some(format!("{v} > {}", fmt_num(hi))),
        (None, None) => None,
    }
}

/// `accepted`: `null`-action values nulled, outcome/time/event derived into `_outcome`, `_time`, `_event`,
/// the checks carried on (rows that break a quarantine rule are routed out by the clean task).
pub fn accepted(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let numeric = cfg.numeric_source_columns();
    let mut cols = vec![
        "\"_row\"".to_string(),
        "\"_source\"".into(),
        "\"_line\"".into(),
        "\"_rowhash\"".into(),
    ];
    cols.extend(check_columns(cfg).iter().map(|c| ident(c)));
    for c in cfg.source_columns() {
        let rule = d.rules.get(&c).filter(|r| r.action == RuleAction::Null);
        let expr = match rule {
            Some(r) if numeric.contains(&c) => match range_violation(&c, r) {
                // `NOT (broken)` is NULL for a NULL value, so the value stays NULL; a CASE whose only branch
                // yields a column is one null mask for DataFusion, where `THEN NULL ELSE c` merges branches.
                Some(cond) if cond.starts_with('(') => {
                    format!("CASE WHEN NOT {cond} THEN {} END", ident(&c))
                }
                Some(cond) => format!("CASE WHEN NOT ({cond}) THEN {} END", ident(&c)),
                None => ident(&c),
            },
            Some(r) if r.allowed.is_some() => format!(
                "CASE WHEN {0} IN ({1}) THEN {0} ELSE NULL END",
                ident(&c),
                in_list(r.allowed.as_deref().unwrap_or_default())
            ),
            _ => ident(&c),
        };
        cols.push(format!("{expr} AS {}", ident(&c)));
    }
    // the derived id, cluster, arm and site (computed in `typed`) go on to `clean`
    cols.extend(d.derived_text.keys().map(|c| ident(c)));
    let o = &d.outcome;
    // NULL stays NULL: a subject whose outcome is missing is not a subject without the event.
    let outcome = match (&o.column, &o.expression) {
        (Some(c), _) => match &o.positive {
            Some(p) => format!(
                "CASE WHEN {} IS NULL THEN NULL WHEN {} THEN 1 ELSE 0 END",
                ident(c),
                code_in(cfg, c, p)
            ),
            None => format!(
                "CASE WHEN {c} IS NULL THEN NULL WHEN lower({}) IN ({TRUE_WORDS}) THEN 1 ELSE 0 END",
                text_of(cfg, c),
                c = ident(c)
            ),
        },
        (None, Some(expr)) => {
            format!("CASE WHEN ({expr}) IS NULL THEN NULL WHEN ({expr}) THEN 1 ELSE 0 END")
        }
        (None, None) => "0".into(),
    };
    cols.push(format!("CAST({outcome} AS BIGINT) AS {}", ident(OUTCOME)));
    if let (Some(t), Some((event, _, competing, _))) = (&d.time_to_event, event_conditions(cfg)) {
        cols.push(format!("{} AS {}", ident(&t.time), ident(TIME)));
        let counted = match t.competing_as {
            CompetingAs::Censored => event.clone(),
            CompetingAs::Event => format!("({event} OR {competing})"),
        };
        cols.push(format!(
            "CAST(CASE WHEN {counted} THEN 1 ELSE 0 END AS BIGINT) AS {}",
            ident(EVENT)
        ));
        if !t.competing_values.is_empty() {
            cols.push(format!(
                "CAST(CASE WHEN {event} THEN 1 WHEN {competing} THEN 2 ELSE 0 END AS BIGINT) AS {}",
                ident(EVENT_STATE)
            ));
        }
    }
    cols.extend(secondary_endpoints(cfg));
    format!("SELECT\n  {}\nFROM checked", cols.join(",\n  "))
}

/// The clean table's name of a secondary endpoint's time and event.
pub fn secondary_columns(name: &str) -> (String, String) {
    (format!("time_{name}"), format!("event_{name}"))
}

/// Each secondary endpoint's time and event (1 event, 0 censored), both NULL where the time is missing or
/// negative or the code is neither an event nor a censoring: that row is left out of that endpoint only.
fn secondary_endpoints(cfg: &Config) -> Vec<String> {
    let mut cols = Vec::new();
    for (name, t) in &cfg.dataset.secondary_time_to_event {
        let Some((event, censored, _, _)) = event_conditions(&cfg.with_time_to_event(t)) else {
            continue;
        };
        let time = ident(&t.time);
        let valid = format!("{time} >= 0.0 AND ({event} OR {censored})");
        let (tc, ec) = secondary_columns(name);
        cols.push(format!(
            "CASE WHEN {valid} THEN {time} END AS {}",
            ident(&format!("_{tc}"))
        ));
        cols.push(format!(
            "CAST(CASE WHEN {valid} THEN (CASE WHEN {event} THEN 1 ELSE 0 END) END AS BIGINT) AS {}",
            ident(&format!("_{ec}"))
        ));
    }
    cols
}

/// `derived`: accepted rows plus derived columns and the row filter's verdict.
pub fn derived(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let mut cols = vec!["*".to_string()];
    let roles = cfg.derived_roles();
    for (name, expr) in d.derived.iter().filter(|(n, _)| !roles.contains(*n)) {
        cols.push(format!("CAST(({expr}) AS DOUBLE) AS {}", ident(name)));
    }
    let keep = d
        .filter
        .as_deref()
        .map(|f| format!("COALESCE(({f}), false)"))
        .unwrap_or_else(|| "true".into());
    // A row outside a population stays: the population is a column, not a filter.
    for (name, condition) in &d.populations {
        cols.push(format!(
            "COALESCE(({condition}), false) AS {}",
            ident(&population_column(name))
        ));
    }
    format!(
        "SELECT\n  {},\n  {keep} AS \"_keep\"\nFROM accepted",
        cols.join(",\n  ")
    )
}

/// `clean`: every row, pseudonymized, with the contract's columns under their own names, then the routing
/// columns (`_row`, `_rowhash`, `_keep`, the checks) that the clean task reads and drops.
pub fn clean(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let mut cols = vec![format!("{} AS \"subject_id\"", subject_expr(&d.id))];
    if let Some(c) = &d.cluster {
        cols.push(format!("pseudonymize({}) AS \"cluster\"", ident(c)));
    }
    cols.push(format!("{} AS \"arm\"", ident(&d.arm.column)));
    if let Some(s) = &d.site {
        cols.push(format!("{} AS \"site\"", ident(s)));
    }
    cols.push(format!("{} AS \"outcome\"", ident(OUTCOME)));
    if d.time_to_event.is_some() {
        cols.push(format!("{} AS \"time\"", ident(TIME)));
        cols.push(format!("{} AS \"event\"", ident(EVENT)));
        if d.time_to_event
            .as_ref()
            .is_some_and(|t| !t.competing_values.is_empty())
        {
            cols.push(format!("{} AS \"event_state\"", ident(EVENT_STATE)));
        }
    }
    for c in d.numeric.iter().chain(&d.categorical) {
        cols.push(format!("{} AS {}", ident(c), ident(&table_column(c))));
    }
    // The disposition's status and reason may be extras (the status is often the outcome's column too).
    let disposition = cfg
        .analysis
        .disposition
        .iter()
        .flat_map(|dp| std::iter::once(&dp.status).chain(&dp.reason));
    for c in disposition.filter(|c| !d.categorical.contains(c)) {
        cols.push(format!("{} AS {}", ident(c), ident(&table_column(c))));
    }
    cols.extend(d.populations.keys().map(|p| ident(&population_column(p))));
    for name in d.secondary_time_to_event.keys() {
        let (tc, ec) = secondary_columns(name);
        cols.push(format!("{} AS {}", ident(&format!("_{tc}")), ident(&tc)));
        cols.push(format!("{} AS {}", ident(&format!("_{ec}")), ident(&ec)));
    }
    cols.push("\"_source\"".into());
    cols.push("\"_line\"".into());
    for c in ["_row", "_rowhash", "_keep"] {
        cols.push(ident(c));
    }
    cols.extend(check_columns(cfg).iter().map(|c| ident(c)));
    format!("SELECT\n  {}\nFROM derived", cols.join(",\n  "))
}
