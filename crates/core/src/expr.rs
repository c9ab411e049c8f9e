//! A small evaluator for the arithmetic SQL expressions of derived columns (`weight_kg / (height_cm/100)^2`
//! written in SQL), so that serving computes them exactly as the clean stage's SQL does: numbers, column
//! names, `+ - * /`, unary minus and parentheses; NULL propagates and division by zero gives NULL.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

/// A derived column's expression, parsed once: numbers read, columns numbered in order of appearance, every
/// operator checked. Evaluating it is arithmetic on the values given by column position, with no lookups
/// by name (serving evaluates it for every record).
#[derive(Debug, Clone)]
pub struct Compiled {
    node: Node,
    columns: Vec<String>,
}

#[derive(Debug, Clone)]
enum Node {
    Column(usize),
    Number(f64),
    Null,
    Neg(Box<Node>),
    Binary(Box<Node>, Op, Box<Node>),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Compiled {
    /// Parses `sql`: an error names what this evaluator does not compute.
    pub fn new(sql: &str) -> Result<Self, String> {
        let expr = parse(sql)?;
        let mut columns = Vec::new();
        let node = compile(&expr, &mut columns)?;
        Ok(Self { node, columns })
    }

    /// The column names the expression reads, in order of appearance; [`Compiled::eval`] takes their values
    /// in this order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The value for the columns' values `vars` (in [`Compiled::columns`] order; `None` = NULL). NULL
    /// propagates; a division by zero is NULL.
    pub fn eval(&self, vars: &[Option<f64>]) -> Option<f64> {
        eval(&self.node, vars)
    }
}

thread_local! {
    // Callers that evaluate by name see the same few derived-column expressions again and again: compile
    // each once per thread (a parse costs far more than the arithmetic). Keys are expressions from feature
    // specs and configs, so the cache stays small.
    static COMPILED: RefCell<HashMap<String, Rc<Compiled>>> = RefCell::new(HashMap::new());
}

fn compiled(sql: &str) -> Result<Rc<Compiled>, String> {
    if let Some(p) = COMPILED.with(|c| c.borrow().get(sql).cloned()) {
        return Ok(p);
    }
    let p = Rc::new(Compiled::new(sql)?);
    COMPILED.with(|c| c.borrow_mut().insert(sql.to_string(), p.clone()));
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
    let c = compiled(sql)?;
    let vars = c
        .columns
        .iter()
        .map(|name| get(name).ok_or_else(|| format!("unknown column `{name}`")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(c.eval(&vars))
}

/// Whether `sql` is an expression this evaluator computes, over columns for which `known` holds: evaluated
/// once with every column at 1 (a division by zero is NULL, not an error).
pub fn check_numeric(sql: &str, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
    eval_numeric_with(sql, &|c| known(c).then_some(Some(1.0))).map(|_| ())
}

/// The column names `sql` refers to, in order of appearance.
pub fn columns(sql: &str) -> Result<Vec<String>, String> {
    Ok(compiled(sql)?.columns.clone())
}

fn compile(e: &Expr, columns: &mut Vec<String>) -> Result<Node, String> {
    Ok(match e {
        Expr::Identifier(id) => Node::Column(match columns.iter().position(|c| *c == id.value) {
            Some(i) => i,
            None => {
                columns.push(id.value.clone());
                columns.len() - 1
            }
        }),
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => compile(inner, columns)?,
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                Node::Number(n.parse::<f64>().map_err(|e| format!("number `{n}`: {e}"))?)
            }
            Value::Null => Node::Null,
            other => return Err(format!("unsupported literal `{other}` in a derived column")),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => Node::Neg(Box::new(compile(expr, columns)?)),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => compile(expr, columns)?,
        Expr::BinaryOp { left, op, right } => {
            let left = compile(left, columns)?;
            let right = compile(right, columns)?;
            let op = match op {
                BinaryOperator::Plus => Op::Add,
                BinaryOperator::Minus => Op::Sub,
                BinaryOperator::Multiply => Op::Mul,
                BinaryOperator::Divide => Op::Div,
                other => {
                    return Err(format!(
                        "unsupported operator `{other}` in a derived column"
                    ));
                }
            };
            Node::Binary(Box::new(left), op, Box::new(right))
        }
        other => {
            return Err(format!(
                "unsupported expression `{other}` in a derived column"
            ));
        }
    })
}

fn eval(n: &Node, vars: &[Option<f64>]) -> Option<f64> {
    match n {
        Node::Column(i) => vars.get(*i).copied().flatten(),
        Node::Number(x) => Some(*x),
        Node::Null => None,
        Node::Neg(inner) => eval(inner, vars).map(|x| -x),
        Node::Binary(left, op, right) => {
            let (a, b) = (eval(left, vars)?, eval(right, vars)?);
            match op {
                Op::Add => Some(a + b),
                Op::Sub => Some(a - b),
                Op::Mul => Some(a * b),
                Op::Div if b == 0.0 => None,
                Op::Div => Some(a / b),
            }
        }
    }
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

    /// Compiled once, evaluated by column position: the values the name-based evaluation gives, NULL and
    /// division by zero included; what it cannot compute is refused when compiled, whatever the values.
    #[test]
    fn compiled_expressions_evaluate_by_position() {
        let c = Compiled::new("-(w - 2) * w / (h + h) + 0.5").unwrap();
        assert_eq!(c.columns(), ["w", "h"]);
        for (w, h) in [
            (Some(3.0), Some(4.0)),
            (Some(3.0), Some(0.0)),
            (None, Some(1.0)),
        ] {
            let vars = BTreeMap::from([("w".to_string(), w), ("h".to_string(), h)]);
            let by_name = eval_numeric("-(w - 2) * w / (h + h) + 0.5", &vars).unwrap();
            assert_eq!(c.eval(&[w, h]), by_name);
        }
        assert_eq!(c.eval(&[Some(3.0), Some(4.0)]), Some(-3.0 / 8.0 + 0.5));
        assert_eq!(c.eval(&[Some(3.0), Some(0.0)]), None);
        assert!(Compiled::new("w % h").is_err());
        assert!(Compiled::new("'text'").is_err());
    }
}
