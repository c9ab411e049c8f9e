//! SQL generated from the dataset contract. Each function returns a statement a person can read; the clean
//! task writes them to `processed/sql/` beside its outputs.
//!
//! Tables: `staged` (every contract column as trimmed text, empty = NULL, plus `_row`, `_source`, `_line`,
//! `_rowhash`) → `typed` → `violations` → `accepted` → `derived` → `excluded` / `clean`.

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
        "CASE lower({c}) {} ELSE {c} END",
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

/// `violations`: one row per broken rule: `_row, column, rule, reason, action`. Reasons name the rule, never
/// the value.
pub fn violations(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let numeric = cfg.numeric_source_columns();
    // A malformed record (ragged, not UTF-8) is quarantined whole, its defect as the reason.
    let mut parts: Vec<String> = vec![
        "SELECT \"_row\", '_record' AS \"column\", 'malformed' AS \"rule\", \"_defect\" AS \"reason\", 'quarantine' AS \"action\" FROM typed WHERE \"_defect\" IS NOT NULL".to_string(),
    ];
    let mut add = |column: &str, rule: &str, reason: &str, action: RuleAction, cond: String| {
        let action = match action {
            RuleAction::Quarantine => "quarantine",
            RuleAction::Null => "null",
        };
        parts.push(format!(
            "SELECT \"_row\", {} AS \"column\", {} AS \"rule\", {} AS \"reason\", {} AS \"action\" FROM typed WHERE {cond}",
            lit(column),
            lit(rule),
            lit(reason),
            lit(action)
        ));
    };
    let mut required = vec![d.id.clone(), d.arm.column.clone()];
    required.extend(d.outcome.column.clone());
    if let Some(t) = &d.time_to_event {
        required.push(t.time.clone());
        required.push(t.event.clone());
    }
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
                "{raw} IS NOT NULL AND NOT COALESCE({v} > -1e308 AND {v} < 1e308, false)",
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
    parts.join("\nUNION ALL\n")
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

/// `accepted`: typed rows with no quarantine violation, `null`-action values nulled, outcome/time/event
/// derived into `_outcome`, `_time`, `_event`.
pub fn accepted(cfg: &Config) -> String {
    let d = &cfg.dataset;
    let numeric = cfg.numeric_source_columns();
    let mut cols = vec![
        "t.\"_row\"".to_string(),
        "t.\"_source\"".into(),
        "t.\"_line\"".into(),
        "t.\"_rowhash\"".into(),
    ];
    for c in cfg.source_columns() {
        let rule = d.rules.get(&c).filter(|r| r.action == RuleAction::Null);
        let expr = match rule {
            Some(r) if numeric.contains(&c) => match range_violation(&c, r) {
                Some(cond) => format!("CASE WHEN {cond} THEN NULL ELSE {} END", ident(&c)),
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
    format!(
        "SELECT\n  {}\nFROM typed t\nWHERE t.\"_row\" NOT IN (SELECT \"_row\" FROM violations WHERE \"action\" = 'quarantine')",
        cols.join(",\n  ")
    )
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
        "SELECT {}, {keep} AS \"_keep\" FROM accepted",
        cols.join(", ")
    )
}

/// `ranked`: rows the filter keeps, numbered per subject id in input order, to drop duplicates.
pub fn ranked(cfg: &Config) -> String {
    let id = ident(&cfg.dataset.id);
    format!(
        "SELECT *,\n  ROW_NUMBER() OVER (PARTITION BY {id} ORDER BY \"_row\") AS \"_rank\",\n  \
         FIRST_VALUE(\"_rowhash\") OVER (PARTITION BY {id} ORDER BY \"_row\") AS \"_first_hash\"\n\
         FROM derived WHERE \"_keep\""
    )
}

/// `excluded`: every input row that is not in `clean`, with why: quarantine violations, the row filter,
/// duplicates. A row may carry several quarantine violations; it counts once.
pub fn excluded(cfg: &Config) -> String {
    let id = ident(&cfg.dataset.id);
    format!(
        "SELECT v.\"_row\", s.\"_source\", s.\"_line\", s.{id} AS \"subject\", v.\"column\", v.\"rule\", v.\"reason\"\n\
         FROM violations v JOIN staged s ON v.\"_row\" = s.\"_row\" WHERE v.\"action\" = 'quarantine'\n\
         UNION ALL\n\
         SELECT \"_row\", \"_source\", \"_line\", {id}, '', 'filter', 'excluded by the row filter' FROM derived WHERE NOT \"_keep\"\n\
         UNION ALL\n\
         SELECT \"_row\", \"_source\", \"_line\", {id}, {id_lit}, 'duplicate',\n  \
           CASE WHEN \"_rowhash\" = \"_first_hash\" THEN 'exact duplicate of an earlier row' \
         ELSE 'repeated subject id; the first row is kept' END\n\
         FROM ranked WHERE \"_rank\" > 1",
        id_lit = lit(&cfg.dataset.id)
    )
}

/// `clean`: one row per subject, pseudonymized, with the contract's columns under their own names.
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
    format!(
        "SELECT\n  {}\nFROM ranked WHERE \"_rank\" = 1\nORDER BY \"_row\"",
        cols.join(",\n  ")
    )
}
