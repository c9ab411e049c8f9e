//! The self-contained HTML report: tables and inline SVG charts, no scripts, no fonts, no network. Readable on
//! a narrow screen (charts scale, wide tables scroll) and printable.

mod consort;
mod labs;
mod phenotypes;
mod safety;
mod survival_more;

use std::fmt::Write;

use crate::stats::Estimate;
use crate::{Analysis, Survival};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `n (p%)` of `of` subjects; `n` alone when there are none.
pub(crate) fn share(n: u64, of: u64) -> String {
    if of == 0 {
        n.to_string()
    } else {
        format!("{n} ({:.1}%)", 100.0 * n as f64 / of as f64)
    }
}

fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "—".into(),
    }
}

fn p_value(p: Option<f64>) -> String {
    match p {
        Some(v) if v < 0.0001 => "&lt;0.0001".into(),
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "—".into(),
    }
}

fn est(e: Option<&Estimate>, digits: usize) -> String {
    match e {
        Some(e) => format!(
            "{:.digits$} ({:.digits$}, {:.digits$})",
            e.estimate, e.ci_low, e.ci_high
        ),
        None => "not estimable".into(),
    }
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// A chart frame: maps data coordinates into a `w`×`h` SVG with margins, draws axes and ticks.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
    svg: String,
}

impl Frame {
    fn new(
        label: &str,
        w: f64,
        h: f64,
        x: (f64, f64),
        y: (f64, f64),
        xlabel: &str,
        ylabel: &str,
    ) -> Self {
        let mut f = Frame {
            w,
            h,
            left: 48.0,
            bottom: 36.0,
            x,
            y,
            svg: String::new(),
        };
        let _ = write!(
            f.svg,
            "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\" class=\"chart\"><rect x=\"{}\" y=\"8\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
            esc(label),
            f.left,
            w - f.left - 8.0,
            h - f.bottom - 8.0
        );
        for xv in nice_ticks(x.1) {
            let _ = write!(
                f.svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                f.px(xv),
                h - f.bottom + 13.0,
                trim(xv)
            );
        }
        for k in 0..=4 {
            let yv = y.0 + k as f64 / 4.0 * (y.1 - y.0);
            let _ = write!(
                f.svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                f.left - 4.0,
                f.py(yv) + 3.0,
                trim(yv)
            );
        }
        let _ = write!(
            f.svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text><text x=\"12\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">{}</text>",
            f.left + (w - f.left) / 2.0,
            h - 6.0,
            esc(xlabel),
            (h - f.bottom) / 2.0,
            (h - f.bottom) / 2.0,
            esc(ylabel)
        );
        f
    }

    fn px(&self, v: f64) -> f64 {
        self.left + (self.w - self.left - 8.0) * (v - self.x.0) / (self.x.1 - self.x.0).max(1e-12)
    }

    fn py(&self, v: f64) -> f64 {
        8.0 + (self.h - self.bottom - 8.0)
            * (1.0 - (v - self.y.0) / (self.y.1 - self.y.0).max(1e-12))
    }

    fn polyline(&mut self, pts: &[(f64, f64)], color: &str, dash: bool) {
        let p: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        let d = if dash {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let _ = write!(
            self.svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\"{d} points=\"{}\"/>",
            p.join(" ")
        );
    }

    /// A short vertical tick at (x, y): a censoring on a Kaplan–Meier curve.
    fn tick(&mut self, x: f64, y: f64, color: &str) {
        let (px, py) = (self.px(x), self.py(y));
        let _ = write!(
            self.svg,
            "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"1.2\"/>",
            py - 4.0,
            py + 4.0
        );
    }

    /// A translucent band between an upper and a lower line given as one closed outline.
    fn band(&mut self, outline: &[(f64, f64)], color: &str) {
        let p: Vec<String> = outline
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        let _ = write!(
            self.svg,
            "<polygon fill=\"{color}\" fill-opacity=\"0.15\" stroke=\"none\" points=\"{}\"/>",
            p.join(" ")
        );
    }

    /// Legend entry `i`, stacked upwards from the lower left (curves that start high leave it free) or
    /// downwards from the upper left.
    fn legend(&mut self, i: usize, text: &str, color: &str, lower: bool) {
        let y = if lower {
            self.h - self.bottom - 10.0 - 14.0 * i as f64
        } else {
            22.0 + 14.0 * i as f64
        };
        let _ = write!(
            self.svg,
            "<text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"11\" fill=\"{color}\">■ {}</text>",
            self.left + 8.0,
            esc(text)
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// Round tick values from 0 to at most `max`: steps of 1, 2 or 5 × 10^k, four to eight ticks.
fn nice_ticks(max: f64) -> Vec<f64> {
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        return vec![0.0];
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| max / s <= 7.0)
        .unwrap_or(10.0 * mag);
    (0..)
        .map(|k| k as f64 * step)
        .take_while(|v| *v <= max * (1.0 + 1e-9))
        .collect()
}

/// A time as the data hold it: whole numbers as they are, others to four decimals without trailing zeros
/// (43.7 months is not "44").
fn time_text(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// ", in days" after a label, when the config names the unit.
fn unit_suffix(s: &Survival) -> String {
    s.time_unit
        .as_deref()
        .map(|u| format!(", {}", esc(u)))
        .unwrap_or_default()
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The outline of a Kaplan–Meier curve's 95% band as steps: the upper bound forwards, the lower back.
fn step_band(c: &crate::stats::KmCurve) -> Vec<(f64, f64)> {
    let steps = |bound: &dyn Fn(&crate::stats::KmPoint) -> f64| {
        let mut pts = vec![(0.0, 1.0)];
        let mut last = 1.0;
        for p in &c.points {
            pts.push((p.time, last));
            last = bound(p);
            pts.push((p.time, last));
        }
        pts
    };
    let mut outline = steps(&|p| p.ci_high);
    outline.extend(steps(&|p| p.ci_low).into_iter().rev());
    outline
}

fn km_chart(s: &Survival) -> String {
    let tmax = s
        .curves
        .iter()
        .flat_map(|c| c.points.last().map(|p| p.time))
        .fold(1.0f64, f64::max);
    let mut f = Frame::new(
        "Kaplan–Meier curves by arm",
        640.0,
        300.0,
        (0.0, tmax),
        (0.0, 1.0),
        &format!(
            "time{}",
            s.time_unit
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ),
        "survival",
    );
    let mut legend = String::from("<p class=\"legend\">");
    for (i, c) in s.curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if s.ci_bands {
            f.band(&step_band(c), color);
        }
        let mut pts = vec![(0.0, 1.0)];
        let mut last = 1.0;
        for p in &c.points {
            pts.push((p.time, last));
            pts.push((p.time, p.survival));
            last = p.survival;
        }
        f.polyline(&pts, color, false);
        // a tick where subjects were censored, at the curve's height then
        for p in c.points.iter().filter(|p| p.censored > 0) {
            f.tick(p.time, p.survival, color);
        }
        // beside the chart, never over a curve
        let _ = write!(
            legend,
            "<span style=\"color:{color}\">■</span> {} (n = {}) &nbsp; ",
            esc(&c.arm),
            c.n
        );
    }
    legend.push_str("<span>| censored</span></p>");
    let mut out = f.finish();
    out.push_str(&legend);
    // numbers at risk under the x-axis, at the axis ticks
    out.push_str("<table class=\"risk\"><caption>Number at risk</caption><tr><th>Arm</th>");
    let ticks = nice_ticks(tmax);
    for t in &ticks {
        let _ = write!(out, "<th>{}</th>", trim(*t));
    }
    out.push_str("</tr>");
    for c in &s.curves {
        let _ = write!(out, "<tr><td>{}</td>", esc(&c.arm));
        for t in &ticks {
            let _ = write!(out, "<td>{}</td>", c.at_risk_at(*t));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

fn forest_chart(a: &Analysis) -> String {
    let rows: Vec<(String, Option<&Estimate>)> = a
        .subgroups
        .iter()
        .flat_map(|s| {
            s.effects.iter().map(move |e| {
                (
                    format!("{} = {} · {}", s.variable, e.level, e.arm),
                    e.estimate.as_ref(),
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let finite: Vec<f64> = rows
        .iter()
        .flat_map(|(_, e)| e.map(|e| [e.ci_low, e.ci_high]))
        .flatten()
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite.iter().copied().fold(1.0f64, f64::min).max(1e-3).ln();
    let hi = finite.iter().copied().fold(1.0f64, f64::max).min(1e3).ln();
    let (lo, hi) = (lo - 0.1, hi + 0.1);
    let (w, row_h, label_w) = (640.0, 20.0, 250.0);
    let h = 30.0 + row_h * rows.len() as f64;
    let x = |v: f64| label_w + (w - label_w - 10.0) * (v.max(1e-3).ln() - lo) / (hi - lo);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Forest plot of subgroup effects\" class=\"chart\">"
    );
    let _ = write!(
        svg,
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"4\" y2=\"{1:.1}\" stroke=\"#888\" stroke-dasharray=\"3 3\"/>",
        x(1.0),
        h - 20.0
    );
    for (i, (label, e)) in rows.iter().enumerate() {
        let y = 14.0 + row_h * i as f64;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            y + 4.0,
            esc(label)
        );
        match e {
            Some(e) => {
                let _ = write!(
                    svg,
                    "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#333\"/><rect x=\"{:.1}\" y=\"{:.1}\" width=\"7\" height=\"7\" fill=\"#1f77b4\"/>",
                    x(e.ci_low),
                    x(e.ci_high),
                    x(e.estimate) - 3.5,
                    y - 3.5
                );
            }
            None => {
                let _ = write!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#888\">not estimable</text>",
                    label_w,
                    y + 4.0
                );
            }
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">1 (log scale)</text></svg>",
        x(1.0),
        h - 6.0
    );
    svg
}

fn model_charts(a: &Analysis) -> String {
    if a.models.is_empty() {
        return String::new();
    }
    let mut roc = Frame::new(
        "ROC curves",
        320.0,
        300.0,
        (0.0, 1.0),
        (0.0, 1.0),
        "false positive rate",
        "true positive rate",
    );
    roc.polyline(&[(0.0, 0.0), (1.0, 1.0)], "#bbb", true);
    let mut cal = Frame::new(
        "Calibration curves",
        320.0,
        300.0,
        (0.0, 1.0),
        (0.0, 1.0),
        "mean predicted",
        "observed",
    );
    cal.polyline(&[(0.0, 0.0), (1.0, 1.0)], "#bbb", true);
    for (i, m) in a.models.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        roc.polyline(&m.roc, color, false);
        roc.legend(
            i,
            &format!("{} (AUC {})", m.model, num(m.roc_auc, 3)),
            color,
            true,
        );
        let pts: Vec<(f64, f64)> = m.calibration.iter().map(|(p, o, _)| (*p, *o)).collect();
        cal.polyline(&pts, color, false);
        cal.legend(i, &m.model, color, false);
    }
    format!("<div class=\"pair\">{}{}</div>", roc.finish(), cal.finish())
}

/// The self-contained report page: one section per analysis, in the order a statistician reads them.
pub fn html(a: &Analysis) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Trial analysis: {}</h1><p>{} subjects analyzed; reference arm <b>{}</b>.</p>",
        esc(&a.dataset),
        a.analyzed_rows,
        esc(&a.reference_arm)
    );
    flow_section(&mut b, a);
    if let Some(d) = &a.disposition {
        consort::disposition_table(&mut b, d);
    }
    table1_section(&mut b, a);
    outcome_section(&mut b, a);
    survival_section(&mut b, a);
    continuous_section(&mut b, a);
    if let Some(s) = &a.safety {
        safety::section(&mut b, s);
    }
    if let Some(l) = &a.lab_shifts {
        labs::section(&mut b, l);
    }
    subgroup_section(&mut b, a);
    models_section(&mut b, a);
    if let Some(p) = &a.phenotypes {
        phenotypes::section(&mut b, p);
    }
    methods_section(&mut b, a);
    page(&a.dataset, &b)
}

/// The analysis populations of the accepted rows: each one's definition, rows per arm and what uses it.
fn populations_table(b: &mut String, f: &crate::Flow) {
    if f.populations.is_empty() {
        return;
    }
    b.push_str("<table><tr><th>Population</th><th>Definition</th><th>Rows</th>");
    for (arm, _) in &f.analyzed_per_arm {
        let _ = write!(b, "<th>{}</th>", esc(arm));
    }
    b.push_str("<th>Used by</th></tr>");
    for p in &f.populations {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td>",
            esc(&p.name),
            esc(&p.condition),
            p.rows
        );
        for (_, n) in &p.per_arm {
            let _ = write!(b, "<td>{n}</td>");
        }
        let _ = write!(b, "<td>{}</td></tr>", esc(&p.used_by.join(", ")));
    }
    b.push_str("</table>");
}

/// The flow of rows: ingested, excluded by each rule, the filter and de-duplication, analyzed per arm.
fn flow_section(b: &mut String, a: &Analysis) {
    if let Some(f) = &a.flow {
        b.push_str("<h2>Flow of rows</h2><table><tr><th>Step</th><th>Rows</th></tr>");
        let _ = write!(
            b,
            "<tr><td>Rows ingested</td><td>{}</td></tr>",
            f.rows_ingested
        );
        for (col, rule, n) in &f.excluded_by_rule {
            let _ = write!(
                b,
                "<tr><td>Excluded: rule <code>{}</code> on <code>{}</code></td><td>{n}</td></tr>",
                esc(rule),
                esc(col)
            );
        }
        let _ = write!(
            b,
            "<tr><td>Excluded by the row filter</td><td>{}</td></tr>",
            f.excluded_by_filter
        );
        let _ = write!(
            b,
            "<tr><td>Duplicates removed (first row per subject kept)</td><td>{}</td></tr>",
            f.duplicates_removed
        );
        let _ = write!(
            b,
            "<tr><td>Rows excluded in all (a row breaking several rules counts once)</td><td>{}</td></tr>",
            f.rows_excluded
        );
        for (arm, n) in &f.analyzed_per_arm {
            let _ = write!(b, "<tr><td>Analyzed: {}</td><td>{n}</td></tr>", esc(arm));
        }
        b.push_str("</table>");
        populations_table(b, f);
        b.push_str(&consort::diagram(f, a.disposition.as_ref()));
        let _ = write!(
            b,
            "<p>Every text value (identifiers and levels among them) was put in Unicode NFC and \
             stripped of invisible characters (byte-order marks, zero-width spaces, control characters) before \
             validation, so that look-alike values are one subject or one level; {} values changed.</p>",
            f.normalized_values
        );
    }
}

/// Continuous endpoints: by arm, and the ANCOVA's differences against the reference arm.
fn continuous_section(b: &mut String, a: &Analysis) {
    for c in &a.continuous {
        let label = a
            .table1
            .labels
            .get(&c.column)
            .map(|l| format!("{} <small>({})</small>", esc(l), esc(&c.column)))
            .unwrap_or_else(|| esc(&c.column));
        let _ = write!(b, "<h2>Continuous endpoint: {label}</h2>");
        if let Some(p) = &c.population {
            let rows = a
                .flow
                .as_ref()
                .and_then(|f| f.populations.iter().find(|x| &x.name == p));
            let _ = write!(
                b,
                "<p>Population: <b>{}</b>{}.</p>",
                esc(p),
                rows.map(|x| format!(" (<code>{}</code>), {} rows", esc(&x.condition), x.rows))
                    .unwrap_or_default()
            );
        }
        b.push_str("<table><tr><th>Arm</th><th>n</th><th>Missing</th><th>Mean ± SD</th></tr>");
        for (arm, d) in &c.arms {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ± {}</td></tr>",
                esc(arm),
                d.n,
                d.missing,
                num(d.mean, 2),
                num(d.sd, 2)
            );
        }
        b.push_str("</table>");
        match &c.ancova {
            Some(m) => {
                let adjusted = if c.adjust.is_empty() {
                    String::new()
                } else {
                    format!(", adjusted for {}", esc(&c.adjust.join(", ")))
                };
                let _ = write!(
                    b,
                    "<p>ANCOVA{adjusted}: {} complete cases, {} residual df.</p><table><tr><th>Term</th>\
                     <th>Estimate (95% CI)</th><th>SE</th><th>p</th></tr>",
                    m.n, m.df
                );
                for t in &m.terms {
                    let _ = write!(
                        b,
                        "<tr><td>{}</td><td>{:.3} ({:.3}, {:.3})</td><td>{:.3}</td><td>{}</td></tr>",
                        esc(&t.term),
                        t.estimate,
                        t.ci_low,
                        t.ci_high,
                        t.se,
                        p_value(Some(t.p))
                    );
                }
                b.push_str("</table>");
                lsmeans_table(b, m);
            }
            None => b.push_str("<p>ANCOVA: not estimated.</p>"),
        }
        for n in &c.notes {
            let _ = write!(b, "<p class=\"note\">{}</p>", esc(n));
        }
    }
}

/// The arms' least-squares means, their differences against the reference (adjusted as configured) and the
/// dose trend.
fn lsmeans_table(b: &mut String, m: &crate::Ancova) {
    b.push_str(
        "<h3>Least-squares means</h3><table><tr><th>Arm</th><th>LS mean (95% CI)</th><th>SE</th></tr>",
    );
    for l in &m.lsmeans {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{:.3} ({:.3}, {:.3})</td><td>{:.3}</td></tr>",
            esc(&l.arm),
            l.estimate,
            l.ci_low,
            l.ci_high,
            l.se
        );
    }
    b.push_str("</table>");
    let adjusted = match m.multiplicity.as_str() {
        "dunnett" => "Dunnett-adjusted (simultaneous 95% CIs)",
        "bonferroni" => "Bonferroni-adjusted (simultaneous 95% CIs)",
        _ => "unadjusted",
    };
    let _ = write!(
        b,
        "<table><tr><th>Difference</th><th>Estimate (95% CI)</th><th>SE</th><th>p</th>\
         <th>p, {adjusted}</th></tr>"
    );
    for d in &m.differences {
        let _ = write!(
            b,
            "<tr><td>{} − {}</td><td>{:.3} ({:.3}, {:.3})</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.arm),
            esc(&d.reference),
            d.estimate,
            d.ci_low,
            d.ci_high,
            d.se,
            p_value(Some(d.p)),
            p_value(Some(d.p_adjusted))
        );
    }
    b.push_str("</table>");
    if let Some(t) = &m.trend {
        let scores: Vec<String> = t
            .coefficients
            .iter()
            .map(|(a, s, _)| format!("{} {s}", esc(a)))
            .collect();
        let _ = write!(
            b,
            "<p>Dose-response trend over the least-squares means (scores {}; centred as the contrast): \
             {:.3} (SE {:.3}), t = {:.3} on {} df, p = {}.</p>",
            scores.join(", "),
            t.estimate,
            t.se,
            t.t,
            t.df,
            p_value(Some(t.p))
        );
    }
}

/// The population an analysis is computed over, under its heading, when the contract defines populations.
fn population_note(b: &mut String, a: &Analysis, section: &str) {
    let Some(f) = a.flow.as_ref().filter(|f| !f.populations.is_empty()) else {
        return;
    };
    match a
        .analysis_populations
        .get(section)
        .and_then(|name| f.populations.iter().find(|p| &p.name == name))
    {
        Some(p) => {
            let _ = write!(
                b,
                "<p>Population: <b>{}</b> (<code>{}</code>), {} rows.</p>",
                esc(&p.name),
                esc(&p.condition),
                p.rows
            );
        }
        None => b.push_str("<p>Population: every accepted row.</p>"),
    }
}

/// Table 1: baseline characteristics by arm, with standardized mean differences.
fn table1_section(b: &mut String, a: &Analysis) {
    b.push_str("<h2>Table 1: baseline characteristics</h2>");
    population_note(b, a, "table1");
    b.push_str("<table><tr><th>Variable</th><th>Overall</th>");
    let arm_names: Vec<String> = a.arms.iter().map(|x| x.arm.clone()).collect();
    for arm in &arm_names {
        let _ = write!(b, "<th>{}</th>", esc(arm));
    }
    for arm in arm_names.iter().skip(1) {
        let _ = write!(b, "<th>SMD {} vs {}</th>", esc(arm), esc(&a.reference_arm));
    }
    b.push_str("</tr>");
    let d = |x: &crate::stats::Describe| {
        format!(
            "{} ± {}<br>{} [{}, {}]<br>n = {}{}",
            num(x.mean, 1),
            num(x.sd, 1),
            num(x.median, 1),
            num(x.q1, 1),
            num(x.q3, 1),
            x.n,
            if x.missing > 0 {
                format!(", missing {}", x.missing)
            } else {
                String::new()
            }
        )
    };
    for r in &a.table1.numeric {
        let _ = write!(
            b,
            "<tr><td>{}<br><small>mean ± SD; median [IQR]</small></td><td>{}</td>",
            variable_name(a, &r.variable),
            d(&r.overall)
        );
        for (_, x) in &r.arms {
            let _ = write!(b, "<td>{}</td>", d(x));
        }
        for (_, s) in &r.smd {
            let _ = write!(b, "<td>{}</td>", num(*s, 3));
        }
        b.push_str("</tr>");
    }
    for r in &a.table1.categorical {
        let cell = |counts: &[u64], missing: u64| {
            let n: u64 = counts.iter().sum();
            let mut s: Vec<String> = counts
                .iter()
                .zip(&r.levels)
                .map(|(c, l)| {
                    format!(
                        "{}: {c} ({:.1}%)",
                        esc(l),
                        if n > 0 {
                            100.0 * *c as f64 / n as f64
                        } else {
                            0.0
                        }
                    )
                })
                .collect();
            if missing > 0 {
                s.push(format!("missing: {missing}"));
            }
            s.join("<br>")
        };
        let _ = write!(
            b,
            "<tr><td>{}<br><small>n (%)</small></td><td>{}</td>",
            variable_name(a, &r.variable),
            cell(&r.overall.0, r.overall.1)
        );
        for (_, c, m) in &r.arms {
            let _ = write!(b, "<td>{}</td>", cell(c, *m));
        }
        for (_, s) in &r.smd {
            let _ = write!(b, "<td>{}</td>", num(*s, 3));
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
}

/// A Table 1 row's name: the source's label with the variable's name after it, or the name alone.
fn variable_name(a: &Analysis, variable: &str) -> String {
    match a.table1.labels.get(variable) {
        Some(label) => format!("{} <small>({})</small>", esc(label), esc(variable)),
        None => esc(variable),
    }
}

/// A ratio's cells: the term, the ratio with its 95% CI, the p-value.
fn ratio_cells(t: &crate::HazardRatio) -> String {
    format!(
        "<td>{}</td><td>{:.3} ({:.3}, {:.3})</td><td>{}</td>",
        esc(&t.term),
        t.hr,
        t.ci_low,
        t.ci_high,
        p_value(Some(t.p))
    )
}

/// The binary outcome by arm and each arm against the reference.
fn outcome_section(b: &mut String, a: &Analysis) {
    b.push_str("<h2>Binary outcome by arm</h2>");
    population_note(b, a, "outcome");
    if a.outcome_missing > 0 {
        let _ = write!(
            b,
            "<p>{} of the {} subjects have no outcome: they are described in Table 1 and left out of this \
             section, the subgroups of the outcome and the models.</p>",
            a.outcome_missing, a.analyzed_rows
        );
    }
    b.push_str("<table><tr><th>Arm</th><th>n</th><th>Events</th><th>Risk</th></tr>");
    for r in &a.arms {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>",
            esc(&r.arm),
            r.n,
            r.events,
            r.risk
        );
    }
    b.push_str("</table><table><tr><th>Arm vs reference</th><th>Risk difference (95% CI)</th><th>Risk ratio (95% CI)</th><th>Odds ratio (95% CI)</th><th>χ²</th><th>p (χ²)</th><th>p (Fisher)</th></tr>");
    for c in &a.comparisons {
        let _ = write!(
            b,
            "<tr><td>{} vs {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.arm),
            esc(&c.reference),
            est(Some(&c.risk_difference), 4),
            est(c.risk_ratio.as_ref(), 3),
            est(c.odds_ratio.as_ref(), 3),
            num(c.chi_square, 3),
            p_value(c.chi_square_p),
            p_value(Some(c.fisher_p))
        );
    }
    b.push_str("</table>");
    if let Some(t) = &a.overall_chi_square {
        let _ = write!(
            b,
            "<p>All {} arms together: Pearson χ² = {:.3} on {} df, p = {} (no continuity correction).</p>",
            a.arms.len(),
            t.chi_square,
            t.df,
            p_value(Some(t.p_value))
        );
    }
    if let Some(c) = &a.clustered_outcome {
        let _ = write!(
            b,
            "<h3>Clustered records</h3><p>{} rows in {} clusters: the tests above treat rows as independent. \
             Logistic model of the outcome on the arm with cluster-robust (sandwich) standard errors:{}</p>",
            c.rows,
            c.clusters,
            c.not_estimable
                .as_ref()
                .map(|w| format!(" <b>not estimable</b>: {}", esc(w)))
                .unwrap_or_default()
        );
        b.push_str("<table><tr><th>Term</th><th>Odds ratio (95% CI, robust)</th><th>p</th></tr>");
        for t in &c.odds_ratios {
            let _ = write!(b, "<tr>{}</tr>", ratio_cells(t));
        }
        b.push_str("</table>");
    }
}

/// Time to event: Kaplan–Meier curves and tables, the log-rank test, Cox models with the PH test.
fn survival_section(b: &mut String, a: &Analysis) {
    if let Some(s) = &a.survival {
        b.push_str("<h2>Time to event</h2>");
        survival_block(b, a, s);
    }
    for e in &a.secondary_survival {
        let _ = write!(b, "<h2>Time to event: {}</h2>", esc(&e.name));
        if e.left_out > 0 {
            let _ = write!(
                b,
                "<p>{} of {} rows have no valid time or event for this endpoint and are left out of it.</p>",
                e.left_out, e.rows
            );
        }
        match &e.survival {
            Some(s) => survival_block(b, a, s),
            None => b.push_str("<p>No row has this endpoint.</p>"),
        }
    }
}

/// One endpoint's curves, medians, survival at the configured times, log-rank and Cox.
fn survival_block(b: &mut String, a: &Analysis, s: &crate::Survival) {
    {
        population_note(b, a, "survival");
        b.push_str(&km_chart(s));
        let unit = unit_suffix(s);
        let _ = write!(
            b,
            "<table><tr><th>Arm</th><th>n</th><th>Events</th><th>Median (95% CI){unit}</th></tr>"
        );
        for (c, m) in s.curves.iter().zip(&s.medians) {
            let med = |v: &Option<f64>| v.map(time_text).unwrap_or_else(|| "NR".into());
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({}, {})</td></tr>",
                esc(&c.arm),
                c.n,
                c.events,
                med(&m.median),
                med(&m.ci_low),
                med(&m.ci_high)
            );
        }
        b.push_str("</table>");
        b.push_str(
            "<p>Median: the first time the curve is at or below 0.5 (lifelines' rule; NR = not reached).</p>",
        );
        for m in &s.medians {
            if let (Some(ours), Some(r)) = (m.median, m.r_median) {
                let _ = write!(
                    b,
                    "<p><b>Note:</b> the curve of {} lies exactly on 0.5 from {} on; R's survfit takes the \
                     midpoint of that interval as the median: {}{unit} (here: {}).</p>",
                    esc(&m.arm),
                    time_text(ours),
                    time_text(r),
                    time_text(ours)
                );
            }
        }
        if !s.at_times.is_empty() {
            let _ = write!(
                b,
                "<table><tr><th>Arm</th><th>Time{unit}</th><th>Survival (95% CI)</th><th>At risk</th></tr>"
            );
            for t in &s.at_times {
                let estimate = match (t.survival, t.ci_low, t.ci_high) {
                    (Some(v), Some(lo), Some(hi)) => format!("{v:.3} ({lo:.3}, {hi:.3})"),
                    _ => "— (past the arm's last follow-up)".into(),
                };
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{estimate}</td><td>{}</td></tr>",
                    esc(&t.arm),
                    time_text(t.time),
                    t.at_risk
                );
            }
            b.push_str("</table>");
        }
        let _ = write!(
            b,
            "<p>Log-rank test: χ² = {:.3} on {} df, p = {}.</p>",
            s.logrank_chi_square,
            s.logrank_df,
            p_value(Some(s.logrank_p_value))
        );
        if let Some(st) = &s.stratified {
            survival_more::stratified_logrank(b, st);
        }
        let stratified_title = s.stratified.as_ref().map(|st| {
            format!(
                "Cox model, arm only, stratified by {}",
                esc(&st.strata.join(" × "))
            )
        });
        for (title, m) in [
            ("Cox model, arm only", Some(&s.cox)),
            ("Cox model, adjusted", s.cox_adjusted.as_ref()),
            (
                stratified_title.as_deref().unwrap_or_default(),
                s.stratified.as_ref().map(|st| &st.cox),
            ),
        ] {
            let Some(m) = m else { continue };
            let _ = write!(
                b,
                "<h3>{title}</h3><p>{} ties; n = {}, events = {}; {} standard errors; {}.</p>",
                esc(&m.ties),
                m.n,
                m.events,
                esc(&m.variance),
                match &m.not_estimable {
                    Some(w) => format!("<b>not estimable</b>: {}", esc(w)),
                    None => format!("converged in {} iterations", m.iterations),
                }
            );
            b.push_str("<table><tr><th>Term</th><th>HR (95% CI)</th><th>p</th><th>PH test χ² (p)</th></tr>");
            for t in &m.terms {
                let ph = m
                    .ph_test
                    .iter()
                    .find(|(n, _, _)| *n == t.term)
                    .map(|(_, c, p)| format!("{c:.3} ({})", p_value(Some(*p))))
                    .unwrap_or_else(|| "—".into());
                let _ = write!(b, "<tr>{}<td>{ph}</td></tr>", ratio_cells(t));
            }
            b.push_str("</table>");
        }
        survival_more::rmst_and_milestones(b, s);
    }
}

/// Subgroup effects as a forest plot with interaction tests.
fn subgroup_section(b: &mut String, a: &Analysis) {
    if !a.subgroups.is_empty() {
        b.push_str("<h2>Subgroups</h2>");
        population_note(b, a, "subgroups");
        b.push_str(&forest_chart(a));
        b.push_str("<table><tr><th>Subgroup</th><th>Level</th><th>Arm</th><th>n</th><th>Events</th><th>Effect (95% CI)</th><th>Interaction p</th></tr>");
        for s in &a.subgroups {
            let kind = if s.prespecified {
                "pre-specified"
            } else {
                "exploratory"
            };
            let inter = match (&s.interaction_p, &s.not_estimable) {
                (Some(p), _) => format!(
                    "{} (χ² {} on {} df)",
                    p_value(Some(*p)),
                    num(s.interaction_chi_square, 2),
                    s.interaction_df
                ),
                (None, Some(w)) => format!("not estimable: {}", esc(w)),
                _ => "—".into(),
            };
            for (k, e) in s.effects.iter().enumerate() {
                let effect = match (&e.estimate, &e.not_estimable) {
                    (Some(x), _) => format!("{} {}", e.measure, est(Some(x), 3)),
                    (None, Some(w)) => format!("not estimable: {}", esc(w)),
                    _ => "—".into(),
                };
                let first = k == 0;
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{effect}</td><td>{}</td></tr>",
                    if first {
                        format!("{} <small>({kind})</small>", esc(&s.variable))
                    } else {
                        String::new()
                    },
                    esc(&e.level),
                    esc(&e.arm),
                    e.n,
                    e.events,
                    if first { inter.clone() } else { String::new() }
                );
            }
            if s.effects.is_empty() {
                let _ = write!(
                    b,
                    "<tr><td>{} <small>({kind})</small></td><td colspan=\"6\">{inter}</td></tr>",
                    esc(&s.variable)
                );
            }
        }
        b.push_str("</table>");
    }
}

/// The outcome models' ROC and calibration curves and sliced metrics.
fn models_section(b: &mut String, a: &Analysis) {
    if !a.models.is_empty() {
        b.push_str("<h2>Outcome models (test split)</h2>");
        b.push_str(&model_charts(a));
        b.push_str(
            "<table><tr><th>Model</th><th>ROC AUC (95% bootstrap CI)</th><th>Brier</th></tr>",
        );
        for m in &a.models {
            let ci = m
                .roc_auc_ci
                .map(|(lo, hi)| format!(" ({lo:.3}, {hi:.3})"))
                .unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}{ci}</td><td>{:.4}</td></tr>",
                esc(&m.model),
                num(m.roc_auc, 3),
                m.brier
            );
        }
        b.push_str("</table>");
        if a.models.iter().any(|m| !m.slices.is_empty()) {
            b.push_str("<table><caption>Test ROC AUC by slice</caption><tr><th>Slice</th><th>n</th><th>Events</th>");
            for m in &a.models {
                let _ = write!(b, "<th>{}</th>", esc(&m.model));
            }
            b.push_str("</tr>");
            for (k, (col, level, n, pos, _)) in a.models[0].slices.iter().enumerate() {
                let _ = write!(
                    b,
                    "<tr><td>{} = {}</td><td>{n}</td><td>{pos}</td>",
                    esc(col),
                    esc(level)
                );
                for m in &a.models {
                    let _ = write!(b, "<td>{}</td>", num(m.slices.get(k).and_then(|s| s.4), 3));
                }
                b.push_str("</tr>");
            }
            b.push_str("</table>");
        }
    }
}

/// Every method choice the analysis made.
fn methods_section(b: &mut String, a: &Analysis) {
    b.push_str("<h2>Methods</h2><ul>");
    for m in &a.methods {
        let _ = write!(b, "<li>{}</li>", esc(m));
    }
    b.push_str("</ul>");
}

/// The HTML page around `body`, styled for screens and print.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:62rem;margin:auto;padding:1rem;color:#222}}\
         table{{border-collapse:collapse;margin:.5rem 0 1rem;display:block;overflow-x:auto;max-width:100%}}\
         td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;vertical-align:top}}\
         td:first-child,th:first-child{{text-align:left;white-space:normal;min-width:8rem}}td,th{{white-space:nowrap}}caption{{text-align:left;font-size:.9em;color:#555}}\
         .chart{{width:100%;max-width:640px;height:auto;display:block}}.pair{{display:flex;flex-wrap:wrap;gap:1rem}}\
         .pair .chart{{max-width:320px}}small{{color:#666}}.note{{color:#8a4b00}}\
         @media print{{body{{max-width:none}}table{{display:table;overflow:visible}}h2{{break-before:auto;break-after:avoid}}}}\
         </style></head><body>{body}</body></html>\n",
        esc(title)
    )
}
