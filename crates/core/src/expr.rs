//! A small evaluator for the arithmetic SQL expressions of derived columns (`weight_kg / (height_cm/100)^2`
//! written in SQL), so that serving computes them exactly as the clean stage's SQL does: numbers, column
//! names, `+ - * /`, unary minus and parentheses; NULL propagates and division by zero gives NULL.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

/// A parsed expression and the columns it reads.
struct Parsed {
    expr: Expr,
    columns: Vec<String>,
}

thread_local! {
    // Scoring evaluates the same few derived-column expressions for every record: parse each once per
    // thread (a parse costs far more than the arithmetic). Keys are expressions from feature specs, so the
    // cache stays small.
    static PARSED: RefCell<HashMap<String, Rc<Parsed>>> = RefCell::new(HashMap::new());
}

fn parsed(sql: &str) -> Result<Rc<Parsed>, String> {
    if let Some(p) = PARSED.with(|c| c.borrow().get(sql).cloned()) {
        return Ok(p);
    }
    let expr = parse(sql)?;
    let p = Rc::new(Parsed {
        columns: walk_columns(&expr),
        expr,
    });
    PARSED.with(|c| c.borrow_mut().insert(sql.to_string(), p.clone()));
    Ok(p)
}

fn parse(sql: &str) -> Result<Expr, String> {
    let dialect = sqlparser::dialect::GenericDialect {};
    sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("not a valid SQL expression: {e}"))
}

/// Evaluates `sql` with `vars` as the numeric columns (`None` = NULL).
pub fn eval_numeric(
    sql: &str,
    vars: &BTreeMap<String, Option<f64>>,
) -> Result<Option<f64>, String> {
    eval_numeric_with(sql, &|name| vars.get(name).copied())
}

/// Evaluates `sql` with `get(column)`: `None` for an unknown column, `Some(None)` for NULL.
pub fn eval_numeric_with(
    sql: &str,
    get: &dyn Fn(&str) -> Option<Option<f64>>,
) -> Result<Option<f64>, String> {
    eval(&parsed(sql)?.expr, get)
}

/// Whether `sql` is an expression this evaluator computes, over columns for which `known` holds: evaluated
/// once with every column at 1 (a division by zero is NULL, not an error).
pub fn check_numeric(sql: &str, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
    eval_numeric_with(sql, &|c| known(c).then_some(Some(1.0))).map(|_| ())
}

/// The column names `sql` refers to, in order of appearance.
pub fn columns(sql: &str) -> Result<Vec<String>, String> {
    Ok(parsed(sql)?.columns.clone())
}

fn walk_columns(expr: &Expr) -> Vec<String> {
    fn walk(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Identifier(id) if !out.contains(&id.value) => out.push(id.value.clone()),
            Expr::Nested(inner)
            | Expr::UnaryOp { expr: inner, .. }
            | Expr::Cast { expr: inner, .. } => walk(inner, out),
            Expr::BinaryOp { left, right, .. } => {
                walk(left, out);
                walk(right, out);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(expr, &mut out);
    out
}

fn eval(e: &Expr, vars: &dyn Fn(&str) -> Option<Option<f64>>) -> Result<Option<f64>, String> {
    Ok(match e {
        Expr::Identifier(id) => {
            vars(&id.value).ok_or_else(|| format!("unknown column `{}`", id.value))?
        }
        Expr::Nested(inner) => eval(inner, vars)?,
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                Some(n.parse::<f64>().map_err(|e| format!("number `{n}`: {e}"))?)
            }
            Value::Null => None,
            other => return Err(format!("unsupported literal `{other}` in a derived column")),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => eval(expr, vars)?.map(|x| -x),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => eval(expr, vars)?,
        Expr::BinaryOp { left, op, right } => {
            let (Some(a), Some(b)) = (eval(left, vars)?, eval(right, vars)?) else {
                return Ok(None);
            };
            match op {
                BinaryOperator::Plus => Some(a + b),
                BinaryOperator::Minus => Some(a - b),
                BinaryOperator::Multiply => Some(a * b),
                BinaryOperator::Divide if b == 0.0 => None,
                BinaryOperator::Divide => Some(a / b),
                other => {
                    return Err(format!(
                        "unsupported operator `{other}` in a derived column"
                    ));
                }
            }
        }
        Expr::Cast { expr, .. } => eval(expr, vars)?,
        other => {
            return Err(format!(
                "unsupported expression `{other}` in a derived column"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmi_and_null_propagation() {
        let mut v = BTreeMap::new();
        v.insert("weight_kg".to_string(), Some(81.0));
        v.insert("height_cm".to_string(), Some(180.0));
        let bmi = eval_numeric(
            "weight_kg / ((height_cm / 100.0) * (height_cm / 100.0))",
            &v,
        )
        .unwrap()
        .unwrap();
        assert!((bmi - 25.0).abs() < 1e-12);
        v.insert("height_cm".to_string(), None);
        assert_eq!(eval_numeric("weight_kg / height_cm", &v).unwrap(), None);
        assert!(eval_numeric("upper(weight_kg)", &v).is_err());
        assert!(eval_numeric("nope + 1", &v).is_err());
        assert_eq!(columns("\"w.kg\" / (h * h) + 1e2").unwrap(), ["w.kg", "h"]);
    }
}
