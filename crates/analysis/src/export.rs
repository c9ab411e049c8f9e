//! The report's tables for regulatory documents: each as CSV (`tables/<name>.csv`) and all of them in one RTF
//! file (`tables.rtf`, RTF 1.x tables that Word and LibreOffice open), beside report.html.

use std::fmt::Write as _;

use super::*;
use crate::report::share;

/// A table as text cells: what the report shows, formatted the same way.
#[derive(Debug, Clone)]
pub struct ExportTable {
    /// File name (letters, digits, `_`).
    pub name: String,
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn ci(e: Option<&Estimate>, scale: f64, digits: usize) -> String {
    e.map_or("—".into(), |e| {
        format!(
            "{:.digits$} ({:.digits$}, {:.digits$})",
            scale * e.estimate,
            scale * e.ci_low,
            scale * e.ci_high
        )
    })
}

fn p(v: f64) -> String {
    if v < 0.0001 {
        "<0.0001".into()
    } else {
        format!("{v:.4}")
    }
}

fn arm_header(first: &str, arms: &[(String, u64)]) -> Vec<String> {
    std::iter::once(first.to_string())
        .chain(arms.iter().map(|(a, n)| format!("{a} (N = {n})")))
        .collect()
}

fn disposition_table(d: &Disposition) -> ExportTable {
    ExportTable {
        name: "disposition".into(),
        title: format!("Disposition: end-of-study status ({})", d.status),
        header: arm_header("Status", &d.arms),
        rows: d
            .rows
            .iter()
            .map(|r| {
                let label = if r.reason {
                    format!("  {}", r.label)
                } else {
                    r.label.clone()
                };
                std::iter::once(label)
                    .chain(
                        r.subjects
                            .iter()
                            .zip(&d.arms)
                            .map(|(c, (_, n))| share(*c, *n)),
                    )
                    .collect()
            })
            .collect(),
    }
}

fn safety_tables(s: &Safety) -> Vec<ExportTable> {
    let row = |label: String, r: &SafetyRow| -> Vec<String> {
        let mut cells = vec![label];
        cells.extend(
            r.subjects
                .iter()
                .zip(&r.events)
                .zip(&s.arms)
                .map(|((c, e), (_, n))| format!("{} [{e}]", share(*c, *n))),
        );
        cells.extend(r.risk_differences.iter().map(|d| ci(d.as_ref(), 100.0, 1)));
        cells.extend(r.rates.iter().map(|d| ci(d.as_ref(), 1.0, 1)));
        cells
    };
    let mut header = arm_header("", &s.arms);
    header.extend(
        s.arms[1..]
            .iter()
            .map(|(a, _)| format!("{a} − {}: risk difference, % (95% CI)", s.arms[0].0)),
    );
    if !s.patient_years.is_empty() {
        header.extend(
            s.arms
                .iter()
                .map(|(a, _)| format!("{a}: per 100 patient-years (95% CI)")),
        );
    }
    let mut overview_header = header.clone();
    overview_header[0] = "Subjects with".into();
    let mut soc_header = header;
    soc_header[0] = "System organ class / preferred term".into();
    let mut out = vec![
        ExportTable {
            name: "safety_overview".into(),
            title: "Adverse events: overview, subjects (%) [events]".into(),
            header: overview_header,
            rows: s.overview.iter().map(|r| row(r.label.clone(), r)).collect(),
        },
        ExportTable {
            name: "safety_by_soc".into(),
            title: "Adverse events by system organ class and preferred term, subjects (%) [events]"
                .into(),
            header: soc_header,
            rows: s
                .by_soc
                .iter()
                .flat_map(|g| {
                    std::iter::once(row(g.soc.label.clone(), &g.soc))
                        .chain(g.terms.iter().map(|t| row(format!("  {}", t.label), t)))
                })
                .collect(),
        },
    ];
    if let Some(v) = &s.severity {
        out.push(ExportTable {
            name: "safety_severity".into(),
            title: format!("Subjects by worst {}", v.column),
            header: arm_header("Level", &s.arms),
            rows: v
                .levels
                .iter()
                .zip(&v.subjects)
                .map(|(l, counts)| {
                    std::iter::once(l.clone())
                        .chain(counts.iter().zip(&s.arms).map(|(c, (_, n))| share(*c, *n)))
                        .collect()
                })
                .collect(),
        });
    }
    out
}

fn continuous_tables(a: &Analysis) -> Vec<ExportTable> {
    let mut out = Vec::new();
    for (i, c) in a.continuous.iter().enumerate() {
        let Some(m) = &c.ancova else { continue };
        let mut rows: Vec<Vec<String>> = m
            .lsmeans
            .iter()
            .map(|l| {
                vec![
                    format!("LS mean: {}", l.arm),
                    format!("{:.3} ({:.3}, {:.3})", l.estimate, l.ci_low, l.ci_high),
                    format!("{:.3}", l.se),
                    String::new(),
                ]
            })
            .collect();
        rows.extend(m.differences.iter().map(|d| {
            vec![
                format!("{} − {}", d.arm, d.reference),
                format!("{:.3} ({:.3}, {:.3})", d.estimate, d.ci_low, d.ci_high),
                format!("{:.3}", d.se),
                format!("{} ({} {})", p(d.p), p(d.p_adjusted), m.multiplicity),
            ]
        }));
        if let Some(t) = &m.trend {
            rows.push(vec![
                "Dose-response trend".into(),
                format!("{:.3}", t.estimate),
                format!("{:.3}", t.se),
                p(t.p),
            ]);
        }
        out.push(ExportTable {
            name: format!("continuous_{}", i + 1),
            title: format!(
                "ANCOVA of {}{}: {} complete cases",
                c.column,
                if c.adjust.is_empty() {
                    String::new()
                } else {
                    format!(" adjusted for {}", c.adjust.join(", "))
                },
                m.n
            ),
            header: vec![
                "".into(),
                "Estimate (95% CI)".into(),
                "SE".into(),
                "p (adjusted)".into(),
            ],
            rows,
        });
    }
    out
}

fn survival_table(s: &Survival) -> ExportTable {
    let mut rows: Vec<Vec<String>> = s
        .medians
        .iter()
        .map(|m| {
            let f = |x: Option<f64>| x.map_or("NR".into(), |v| format!("{v:.1}"));
            vec![
                format!("Median: {}", m.arm),
                format!("{} ({}, {})", f(m.median), f(m.ci_low), f(m.ci_high)),
                String::new(),
            ]
        })
        .collect();
    rows.push(vec![
        "Log-rank".into(),
        format!("χ² {:.3} on {} df", s.logrank_chi_square, s.logrank_df),
        p(s.logrank_p_value),
    ]);
    let cox = std::iter::once(("Cox HR", &s.cox)).chain(
        s.stratified
            .as_ref()
            .map(|st| ("Stratified Cox HR", &st.cox)),
    );
    for (what, m) in cox {
        rows.extend(m.terms.iter().map(|t| {
            vec![
                format!("{what}: {}", t.term),
                format!("{:.3} ({:.3}, {:.3})", t.hr, t.ci_low, t.ci_high),
                p(t.p),
            ]
        }));
    }
    if let Some(st) = &s.stratified {
        rows.push(vec![
            format!("Stratified log-rank ({})", st.strata.join(" × ")),
            format!("χ² {:.3} on {} df", st.logrank_chi_square, st.logrank_df),
            p(st.logrank_p_value),
        ]);
    }
    if let Some(r) = &s.rmst {
        rows.extend(r.arms.iter().map(|x| {
            vec![
                format!("RMST to {}: {}", r.horizon, x.arm),
                format!("{:.1} ({:.1}, {:.1})", x.rmst, x.ci_low, x.ci_high),
                String::new(),
            ]
        }));
        rows.extend(r.differences.iter().map(|d| {
            vec![
                format!("RMST difference: {} − {}", d.arm, d.reference),
                format!("{:.1} ({:.1}, {:.1})", d.estimate, d.ci_low, d.ci_high),
                p(d.p),
            ]
        }));
    }
    ExportTable {
        name: "survival".into(),
        title: "Time to event".into(),
        header: vec!["".into(), "Estimate (95% CI)".into(), "p".into()],
        rows,
    }
}

fn lab_tables(l: &LabShifts) -> Vec<ExportTable> {
    l.parameters
        .iter()
        .map(|p| {
            let mut header = vec!["Baseline".to_string()];
            for (arm, n) in &l.arms {
                header.extend(
                    l.levels
                        .iter()
                        .map(|level| format!("{arm} (N = {n}): worst {level}")),
                );
            }
            let labels = l.levels.iter().map(String::as_str).chain(["Missing"]);
            let mut rows: Vec<Vec<String>> = labels
                .zip(&p.subjects)
                .map(|(label, row)| {
                    let mut cells = vec![label.to_string()];
                    for k in 0..l.arms.len() {
                        cells.extend(row.iter().map(|cell| cell[k].to_string()));
                    }
                    cells
                })
                .collect();
            let mut new = vec!["New abnormality".to_string()];
            for (n, of) in &p.new_abnormal {
                new.push(format!("{} of {of}", share(*n, *of)));
                new.extend(std::iter::repeat_n(String::new(), l.levels.len() - 1));
            }
            rows.push(new);
            ExportTable {
                name: format!("lab_shift_{}", file_name(&p.parameter)),
                title: format!(
                    "Lab shift: {} (baseline against worst post-baseline)",
                    p.parameter
                ),
                header,
                rows,
            }
        })
        .collect()
}

/// `s` with every character but ASCII letters and digits as `_`: a file name from a parameter code.
fn file_name(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Every exported table of `a`.
pub fn tables(a: &Analysis) -> Vec<ExportTable> {
    let mut out = vec![ExportTable {
        name: "outcome".into(),
        title: "Binary outcome by arm".into(),
        header: vec![
            "Arm".into(),
            "Events / n".into(),
            "Risk difference (95% CI)".into(),
            "Odds ratio (95% CI)".into(),
        ],
        rows: a
            .arms
            .iter()
            .map(|x| {
                let c = a.comparisons.iter().find(|c| c.arm == x.arm);
                vec![
                    x.arm.clone(),
                    format!("{} / {}", x.events, x.n),
                    c.map_or("—".into(), |c| ci(Some(&c.risk_difference), 1.0, 3)),
                    c.map_or("—".into(), |c| ci(c.odds_ratio.as_ref(), 1.0, 3)),
                ]
            })
            .collect(),
    }];
    out.extend(a.disposition.as_ref().map(disposition_table));
    out.extend(a.survival.as_ref().map(survival_table));
    out.extend(continuous_tables(a));
    out.extend(a.safety.iter().flat_map(safety_tables));
    out.extend(a.lab_shifts.iter().flat_map(lab_tables));
    out
}

/// One table as CSV (RFC 4180).
pub fn csv(t: &ExportTable) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    std::iter::once(&t.header)
        .chain(&t.rows)
        .map(|r| r.iter().map(|c| field(c)).collect::<Vec<_>>().join(",") + "\n")
        .collect()
}

/// Text in RTF: control characters escaped, anything beyond ASCII as `\uN?`.
fn rtf_text(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        match ch {
            '\\' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    // RTF's \u takes a signed 16-bit number
                    let _ = write!(out, "\\u{}?", *u as i16);
                }
            }
        }
    }
    out
}

/// Every table in one RTF document, landscape, each with its title above it.
pub fn rtf(title: &str, tables: &[ExportTable]) -> String {
    let mut out = String::from(
        "{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fmodern Courier New;}}\\landscape\\paperw15840\\paperh12240\\margl720\\margr720\\margt720\\margb720\\fs16\n",
    );
    let _ = writeln!(out, "{{\\pard\\b\\fs24 {}\\par}}", rtf_text(title));
    for t in tables {
        let _ = writeln!(out, "{{\\pard\\sb240\\b {}\\par}}", rtf_text(&t.title));
        let columns = t.header.len().max(1);
        let width = 14400 / columns;
        for (i, row) in std::iter::once(&t.header).chain(&t.rows).enumerate() {
            out.push_str("\\trowd\\trgaph60");
            for c in 1..=columns {
                let _ = write!(out, "\\clbrdrb\\brdrs\\cellx{}", c * width);
            }
            out.push('\n');
            for c in 0..columns {
                let cell = row.get(c).map(String::as_str).unwrap_or_default();
                let bold = if i == 0 { "\\b " } else { "" };
                let _ = write!(out, "\\pard\\intbl{bold}{}\\cell", rtf_text(cell));
                if i == 0 {
                    out.push_str("\\b0");
                }
                out.push(' ');
            }
            out.push_str("\\row\n");
        }
        out.push_str("\\pard\\par\n");
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtf_escapes_and_balances() {
        let t = ExportTable {
            name: "t".into(),
            title: "Risk {difference} \\ −".into(),
            header: vec!["a".into(), "b".into()],
            rows: vec![vec!["x, \"y\"".into(), "ü".into()]],
        };
        let doc = rtf("Trial", std::slice::from_ref(&t));
        assert!(doc.starts_with("{\\rtf1"));
        assert!(doc.contains("Risk \\{difference\\} \\\\ \\u8722?"));
        assert!(doc.contains("\\u252?"));
        let depth = doc.chars().try_fold(0i64, |d, c| {
            let d = match c {
                '{' => d + 1,
                '}' => d - 1,
                _ => d,
            };
            (d >= 0).then_some(d)
        });
        // escaped braces are preceded by a backslash; count only the structural ones
        let structural = doc.replace("\\{", "").replace("\\}", "");
        let open = structural.matches('{').count();
        assert_eq!(open, structural.matches('}').count());
        assert!(depth.is_some());
        assert_eq!(csv(&t), "a,b\n\"x, \"\"y\"\"\",ü\n");
    }
}
