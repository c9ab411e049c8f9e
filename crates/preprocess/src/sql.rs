//! SQL generated from the dataset contract. Each function returns a statement a person can read; the clean
//! task writes them to `processed/sql/` beside its outputs.
//!
//! Views, each over the one before, run as one streaming plan: `staged` (every contract column as trimmed text,
//! empty = NULL, plus `_row`, `_source`, `_line`, `_rowhash`, `_defect`) → `typed` → `checked` (one `_check_N`
//! column per rule: NULL, or `action|column|rule|reason` where the row breaks it) → `accepted` → `derived` →
//! `clean`. Every input row comes out of `clean`; the clean task routes it to the clean table or to the
//! quarantine by its checks, the filter's verdict `_keep` and the first-row-per-id rule.

use trialflow_core::config::{Config, EventConvention, Rule, RuleAction};
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
    format!(
        "coalesce(CASE lower({c}) {} END, {c})",
        arms.join(" "),
        c = ident(col)
    )
}

/// The outcome column name in every table after `typed`.
pub const OUTCOME: &str = "_outcome";
pub const EVENT: &str = "_event";
pub const TIME: &str = "_time";

fn event_values(cfg: &Config) -> Option<(Vec<String>, Vec<String>)> {
    let t = cfg.dataset.time_to_event.as_ref()?;
    Some(match t.convention {
        EventConvention::Event => (
            t.event_values.clone().unwrap_or_else(|| vec!["1".into()]),
            vec!["0".into()],
        ),
        EventConvention::CdiscCnsr => (vec!["0".into()], vec!["1".into()]),
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
        } else if c == d.id || Some(&c) == d.outcome.column.as_ref() {
            cols.push(ident(&c));
        } else {
            cols.push(format!(
                "{} AS {}",
                categorical_expr(&c, d.rules.get(&c)),
                ident(&c)
            ));
        }
    }
    format!("SELECT\n  {}\nFROM staged", cols.join(",\n  "))
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
    let mut required = vec![d.id.clone(), d.arm.column.clone()];
    required.extend(d.outcome.column.clone());
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
    for c in &numeric {
        add(
            c,
            "parse",
            "expected a finite number",
            RuleAction::Quarantine,
            format!(
                // NaN and ±inf fail the comparison, NULL (unparseable) the COALESCE; one comparison, not two.
                "{raw} IS NOT NULL AND NOT COALESCE(abs({v}) < 1e308, false)",
                raw = ident(&format!("{c}__raw")),
                v = ident(c)
            ),
        );
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
                        format!("{} NOT IN ({})", ident(c), in_list(&all)),
                        format!("expected one of [{}]", all.join(", ")),
                    )
                }
                (Some(_), None) => ("false".to_string(), String::new()),
                _ => (
                    format!("lower({}) NOT IN ({TRUE_WORDS}, {FALSE_WORDS})", ident(c)),
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
        (None, Some(expr)) => {
            add(
                "outcome",
                "outcome",
                "the outcome expression is NULL",
                RuleAction::Quarantine,
                format!("({expr}) IS NULL"),
            );
        }
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
    if let (Some(t), Some((ev, cens))) = (&d.time_to_event, event_values(cfg)) {
        let mut all = ev.clone();
        all.extend(cens);
        add(
            &t.event,
            "event",
            &format!("expected one of [{}]", all.join(", ")),
            RuleAction::Quarantine,
            format!(
                "{0} IS NOT NULL AND {0} NOT IN ({1})",
                ident(&t.event),
                in_list(&all)
            ),
        );
    }
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
    let o = &d.outcome;
    let outcome = match (&o.column, &o.expression) {
        (Some(c), _) => match &o.positive {
            Some(p) => format!(
                "CASE WHEN {} IN ({}) THEN 1 ELSE 0 END",
                ident(c),
                in_list(p)
            ),
            None => format!(
                "CASE WHEN lower({}) IN ({TRUE_WORDS}) THEN 1 ELSE 0 END",
                ident(c)
            ),
        },
        (None, Some(expr)) => format!("CASE WHEN ({expr}) THEN 1 ELSE 0 END"),
        (None, None) => "0".into(),
    };
    cols.push(format!("CAST({outcome} AS BIGINT) AS {}", ident(OUTCOME)));
    if let (Some(t), Some((ev, _))) = (&d.time_to_event, event_values(cfg)) {
        cols.push(format!("{} AS {}", ident(&t.time), ident(TIME)));
        cols.push(format!(
            "CAST(CASE WHEN {} IN ({}) THEN 1 ELSE 0 END AS BIGINT) AS {}",
            ident(&t.event),
            in_list(&ev),
            ident(EVENT)
        ));
    }
    format!("SELECT\n  {}\nFROM checked", cols.join(",\n  "))
}

/// `derived`: accepted rows plus derived columns and the row filter's verdict.
pub fn derived(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let mut cols = vec!["*".to_string()];
    for (name, expr) in &d.derived {
        cols.push(format!("CAST(({expr}) AS DOUBLE) AS {}", ident(name)));
    }
    let keep = d
        .filter
        .as_deref()
        .map(|f| format!("COALESCE(({f}), false)"))
        .unwrap_or_else(|| "true".into());
    format!(
        "SELECT\n  {},\n  {keep} AS \"_keep\"\nFROM accepted",
        cols.join(",\n  ")
    )
}

/// `clean`: every row, pseudonymized, with the contract's columns under their own names, then the routing
/// columns (`_row`, `_rowhash`, `_keep`, the checks) that the clean task reads and drops.
pub fn clean(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let mut cols = vec![
        format!("pseudonymize({}) AS \"subject_id\"", ident(&d.id)),
        format!("{} AS \"arm\"", ident(&d.arm.column)),
    ];
    if let Some(s) = &d.site {
        cols.push(format!("{} AS \"site\"", ident(s)));
    }
    cols.push(format!("{} AS \"outcome\"", ident(OUTCOME)));
    if d.time_to_event.is_some() {
        cols.push(format!("{} AS \"time\"", ident(TIME)));
        cols.push(format!("{} AS \"event\"", ident(EVENT)));
    }
    for c in d.numeric.iter().chain(&d.categorical) {
        cols.push(format!("{} AS {}", ident(c), ident(&table_column(c))));
    }
    cols.push("\"_source\"".into());
    cols.push("\"_line\"".into());
    for c in ["_row", "_rowhash", "_keep"] {
        cols.push(ident(c));
    }
    cols.extend(check_columns(cfg).iter().map(|c| ident(c)));
    format!("SELECT\n  {}\nFROM derived", cols.join(",\n  "))
}
