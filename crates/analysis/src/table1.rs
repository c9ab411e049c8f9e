//! Table 1: baseline characteristics by arm (numeric rows as mean ± SD and median [IQR], categorical rows as
//! counts and percentages) with standardized mean differences.

use super::*;

pub(crate) fn table1(cfg: &Config, data: &Data) -> Table1 {
    let mut numeric = Vec::new();
    let mut categorical = Vec::new();
    let idx_of = |arm: &str| -> Vec<usize> {
        (0..data.arm.len())
            .filter(|&i| data.arm[i] == arm)
            .collect()
    };
    for name in cfg.dataset.numeric.iter().chain(&cfg.dataset.categorical) {
        match &data.columns[name] {
            Column::Numeric(v) => {
                let per_arm: Vec<(String, Describe)> = data
                    .arms
                    .iter()
                    .map(|a| {
                        (
                            a.clone(),
                            stats::describe(&idx_of(a).iter().map(|&i| v[i]).collect::<Vec<_>>()),
                        )
                    })
                    .collect();
                let smd = per_arm[1..]
                    .iter()
                    .map(|(a, d)| (a.clone(), stats::smd_numeric(d, &per_arm[0].1)))
                    .collect();
                numeric.push(NumericRow {
                    variable: name.clone(),
                    overall: stats::describe(v),
                    arms: per_arm,
                    smd,
                });
            }
            Column::Categorical(v) => {
                let levels = levels_of(v);
                let count = |rows: &[usize]| -> (Vec<u64>, u64) {
                    let counts = levels
                        .iter()
                        .map(|l| rows.iter().filter(|&&i| v[i].as_ref() == Some(l)).count() as u64)
                        .collect();
                    (
                        counts,
                        rows.iter().filter(|&&i| v[i].is_none()).count() as u64,
                    )
                };
                let all: Vec<usize> = (0..v.len()).collect();
                let arms: Vec<(String, Vec<u64>, u64)> = data
                    .arms
                    .iter()
                    .map(|a| {
                        let (c, m) = count(&idx_of(a));
                        (a.clone(), c, m)
                    })
                    .collect();
                let props = |c: &[u64]| {
                    let n: u64 = c.iter().sum();
                    c.iter()
                        .map(|x| if n > 0 { *x as f64 / n as f64 } else { 0.0 })
                        .collect::<Vec<f64>>()
                };
                let p0 = props(&arms[0].1);
                let smd = arms[1..]
                    .iter()
                    .map(|(a, c, _)| (a.clone(), stats::smd_categorical(&props(c), &p0)))
                    .collect();
                categorical.push(CategoricalRow {
                    variable: name.clone(),
                    levels: levels.clone(),
                    overall: count(&all),
                    arms,
                    smd,
                });
            }
        }
    }
    Table1 {
        numeric,
        categorical,
        labels: BTreeMap::new(),
    }
}
