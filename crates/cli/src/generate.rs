//! `trialflow generate`: a synthetic two-arm cardiovascular outcomes trial with the messiness of real exports.
//!
//! The data follow a known model so that a correct analysis can recover it: event times are exponential with
//! hazard `exp(linear predictor)`, where treatment multiplies the hazard by `TRUE_HAZARD_RATIO`; follow-up
//! is censored administratively. On top of clean values the writer adds what real exports contain: synonym
//! and mixed-case categories, blanks, impossible values, unparseable cells, exact duplicate rows and repeated ids.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Treatment hazard ratio built into the generator (log HR = -0.4).
pub const TRUE_HAZARD_RATIO: f64 = 0.670_320_046_035_639_3;

const HEADER: &[&str] = &[
    "subject_id",
    "site",
    "arm",
    "age",
    "sex",
    "weight_kg",
    "height_cm",
    "systolic_bp",
    "diastolic_bp",
    "ldl_mg_dl",
    "hdl_mg_dl",
    "creatinine_mg_dl",
    "hba1c_pct",
    "smoker",
    "diabetic",
    "enrollment_date",
    "followup_days",
    "event",
    "ae_count",
];

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        // Box–Muller; one draw per call keeps the stream simple to reason about.
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn poisson(&mut self, lambda: f64) -> u32 {
        let l = (-lambda).exp();
        let (mut k, mut p) = (0u32, 1.0);
        loop {
            p *= self.rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }

    /// A numeric cell: usually the value, sometimes blank, rarely impossible or unparseable.
    fn num(&mut self, v: f64, decimals: usize, impossible: f64) -> String {
        let r: f64 = self.rng.random();
        if r < 0.015 {
            String::new()
        } else if r < 0.020 {
            format!("{impossible}")
        } else if r < 0.021 {
            self.pick(&["n/a", "unknown", "?"]).to_string()
        } else {
            format!("{v:.decimals$}")
        }
    }

    fn yes_no(&mut self, v: bool) -> String {
        if self.chance(0.01) {
            return String::new();
        }
        let s = if v {
            self.pick(&["Yes", "yes", "Y", "1", "TRUE"])
        } else {
            self.pick(&["No", "no", "N", "0", "false"])
        };
        s.to_string()
    }
}

/// The most rows `trialflow generate` writes.
const MAX_ROWS: usize = 50_000_000;

/// Writes `files` CSVs named `clinical_trial_data_<i>.csv` into `out_dir` with `rows` subjects in total.
pub fn generate(rows: usize, seed: u64, files: usize, out_dir: &Path) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(files >= 1, "--files must be at least 1");
    // ~100 bytes a row: 50M rows is ~5 GB of CSV, far beyond any trial; more is a typo, not a benchmark
    anyhow::ensure!(
        rows <= MAX_ROWS,
        "--rows {rows}: at most {MAX_ROWS} rows (about 5 GB of CSV)"
    );
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // Two passes over the same seeded stream: the first counts the lines (duplicates are random), the second
    // writes them, so memory stays flat at 50M rows and the files split where they always did.
    let mut lines = 0usize;
    each_line(rows, seed, |_| {
        lines += 1;
        Ok(())
    })?;
    let per_file = lines.div_ceil(files).max(1);
    let mut written: Vec<PathBuf> = Vec::new();
    let mut open: Option<(csv::Writer<std::fs::File>, PathBuf, PathBuf)> = None;
    let mut in_file = 0usize;
    let close = |open: &mut Option<(csv::Writer<std::fs::File>, PathBuf, PathBuf)>,
                 written: &mut Vec<PathBuf>|
     -> Result<()> {
        if let Some((mut w, tmp, path)) = open.take() {
            w.flush()?;
            drop(w);
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming {} into place", tmp.display()))?;
            written.push(path);
        }
        Ok(())
    };
    each_line(rows, seed, |line| {
        if open.is_none() || in_file == per_file {
            close(&mut open, &mut written)?;
            let path = out_dir.join(format!("clinical_trial_data_{}.csv", written.len() + 1));
            let tmp = path.with_extension("csv.tmp");
            let mut w = csv::Writer::from_path(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            w.write_record(HEADER)?;
            open = Some((w, tmp, path));
            in_file = 0;
        }
        if let Some((w, _, _)) = open.as_mut() {
            w.write_record(line)?;
        }
        in_file += 1;
        Ok(())
    })?;
    close(&mut open, &mut written)?;
    Ok(written)
}

/// Every line of the trial with `rows` subjects from `seed`, in file order: each subject's row, then its exact
/// duplicate or its re-entered typo when the dice say so.
fn each_line(rows: usize, seed: u64, mut emit: impl FnMut(&[String]) -> Result<()>) -> Result<()> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let site_effect: Vec<f64> = (0..12).map(|_| g.normal(0.0, 0.25)).collect();
    for i in 0..rows {
        let site = g.rng.random_range(0..12usize);
        let treated = g.chance(0.5);
        let male = g.chance(0.62);
        let age = g.normal(63.0, 9.0).clamp(30.0, 92.0);
        let height = if male {
            g.normal(175.0, 7.0)
        } else {
            g.normal(162.0, 6.5)
        };
        let bmi = g.normal(28.5, 4.5).clamp(17.0, 50.0);
        let weight = bmi * (height / 100.0).powi(2);
        let smoker = g.chance(0.22);
        let diabetic = g.chance(0.30);
        let sbp = g.normal(136.0 + 0.3 * (age - 63.0), 16.0);
        let dbp = g.normal(80.0 + 0.2 * (sbp - 136.0), 9.0);
        let ldl = g.normal(118.0, 32.0).max(35.0);
        let hdl = g.normal(if male { 44.0 } else { 53.0 }, 11.0).max(18.0);
        let creat = (g.normal(0.0, 0.25).exp() * if male { 1.0 } else { 0.82 }).max(0.3);
        let hba1c = if diabetic {
            g.normal(7.6, 1.1)
        } else {
            g.normal(5.5, 0.4)
        }
        .max(4.0);
        let lp = -8.55
            + 0.045 * (age - 63.0)
            + 0.30 * f64::from(u8::from(male))
            + 0.50 * f64::from(u8::from(smoker))
            + 0.55 * f64::from(u8::from(diabetic))
            + 0.012 * (sbp - 136.0)
            + 0.006 * (ldl - 118.0)
            - 0.015 * (hdl - 48.0)
            + 0.35 * (creat - 1.0)
            + site_effect[site]
            + TRUE_HAZARD_RATIO.ln() * f64::from(u8::from(treated));
        let event_time = -g.rng.random::<f64>().max(f64::MIN_POSITIVE).ln() / lp.exp();
        let enrolled_day = g.rng.random_range(0..912u32); // 2019-01-01 .. 2021-06-30
        let admin_censor = f64::from(1461 - enrolled_day); // data cut 2023-01-01
        let dropout = -g.rng.random::<f64>().max(f64::MIN_POSITIVE).ln() * 9000.0;
        let censor = admin_censor.min(dropout);
        let (followup, event) = if event_time <= censor {
            (event_time, 1)
        } else {
            (censor, 0)
        };
        // ~0.5% randomized but never followed up: the row filter's job.
        let followup = if g.chance(0.005) {
            0
        } else {
            (followup.ceil() as i64).max(1)
        };
        let date = time::Date::from_calendar_date(2019, time::Month::January, 1)
            .map_err(|e| anyhow::anyhow!("date: {e}"))?
            + time::Duration::days(i64::from(enrolled_day));
        let arm = if treated {
            g.pick(&["Treatment", "treatment", "TRT", "Active", "Drug X"])
        } else {
            g.pick(&["Placebo", "placebo", "PBO", "PLACEBO"])
        };
        let sex = if g.chance(0.008) {
            ""
        } else if male {
            g.pick(&["M", "M", "m", "Male", " male"])
        } else {
            g.pick(&["F", "F", "f", "Female", "FEMALE "])
        };
        let age_cell = if g.chance(0.004) {
            g.pick(&["250", "-3", "7"]).to_string()
        } else if g.chance(0.004) {
            String::new()
        } else {
            format!("{}", age.round())
        };
        let row = vec![
            format!("CVT-{:02}-{:05}", site + 1, i + 1),
            format!("SITE{:02}", site + 1),
            arm.to_string(),
            age_cell,
            sex.to_string(),
            g.num(weight, 1, 0.0),
            g.num(height, 1, 17.5),
            g.num(sbp, 0, 1200.0),
            g.num(dbp, 0, 0.0),
            g.num(ldl, 0, 9999.0),
            g.num(hdl, 0, 0.0),
            g.num(creat, 2, 99.0),
            g.num(hba1c, 1, 0.0),
            g.yes_no(smoker),
            g.yes_no(diabetic),
            date.to_string(),
            followup.to_string(),
            event.to_string(),
            g.poisson(1.1 + 0.35 * f64::from(u8::from(treated)))
                .to_string(),
        ];
        let duplicate = g.chance(0.012);
        let repeated_id = g.chance(0.003);
        emit(&row)?;
        if duplicate {
            emit(&row)?; // exact duplicate from a double export
        }
        if repeated_id {
            let mut again = row;
            again[3] = format!("{}", (age + 1.0).round()); // re-entered with a typo: same id, other values
            emit(&again)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_row_count_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let e = generate(4_000_000_000, 1, 2, &dir.path().join("out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 50000000 rows"), "{e}");
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn same_seed_same_bytes_and_messy_values_present() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let fa = generate(2000, 7, 2, a.path()).unwrap();
        let fb = generate(2000, 7, 2, b.path()).unwrap();
        assert_eq!(fa.len(), 2);
        for (x, y) in fa.iter().zip(&fb) {
            assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
        }
        let text = std::fs::read_to_string(&fa[0]).unwrap();
        for messy in ["PBO", "Male", ",,", "250"] {
            assert!(
                text.contains(messy),
                "expected `{messy}` somewhere in the sample"
            );
        }
    }
}
