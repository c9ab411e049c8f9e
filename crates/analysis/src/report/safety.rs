//! The adverse-event section of the report: the overview, the system organ classes with their preferred terms,
//! the worst severity, each as subjects n (%) and events per arm, with risk differences against the reference
//! and exposure-adjusted incidence rates.

use std::fmt::Write as _;

use super::{esc, share};
use crate::{Safety, SafetyRow};

pub(super) fn section(b: &mut String, s: &Safety) {
    let _ = write!(
        b,
        "<h2>Adverse events</h2><p>Records of <code>{}</code>{}{}: {} counted of {} records; denominators are \
         the population's subjects per arm.</p>",
        esc(&s.table),
        s.events
            .as_ref()
            .map(|e| format!(" flagged <code>{}</code>", esc(e)))
            .unwrap_or_default(),
        s.population
            .as_ref()
            .map(|p| format!(", {} population", esc(p)))
            .unwrap_or_default(),
        s.counted,
        s.records
    );
    for n in &s.notes {
        let _ = write!(b, "<p class=\"note\">{}</p>", esc(n));
    }
    b.push_str("<h3>Overview</h3>");
    table(b, s, "Subjects with", s.overview.iter().map(|r| (r, false)));
    b.push_str("<h3>By system organ class and preferred term</h3>");
    let rows = s
        .by_soc
        .iter()
        .flat_map(|g| std::iter::once((&g.soc, false)).chain(g.terms.iter().map(|t| (t, true))));
    table(b, s, "System organ class / preferred term", rows);
    if let Some(v) = &s.severity {
        let _ = write!(
            b,
            "<h3>Subjects by worst {}</h3><table><tr><th>Level</th>",
            esc(&v.column)
        );
        for (arm, n) in &s.arms {
            let _ = write!(b, "<th>{} (N = {n})</th>", esc(arm));
        }
        b.push_str("</tr>");
        for (level, counts) in v.levels.iter().zip(&v.subjects) {
            let _ = write!(b, "<tr><td>{}</td>", esc(level));
            for (c, (_, n)) in counts.iter().zip(&s.arms) {
                let _ = write!(b, "<td>{}</td>", share(*c, *n));
            }
            b.push_str("</tr>");
        }
        b.push_str("</table>");
        if v.unknown_records > 0 {
            let _ = write!(
                b,
                "<p class=\"note\">{} counted records have no level of {}.</p>",
                v.unknown_records,
                esc(&v.column)
            );
        }
    }
}

fn table<'a>(
    b: &mut String,
    s: &Safety,
    heading: &str,
    rows: impl Iterator<Item = (&'a SafetyRow, bool)>,
) {
    let _ = write!(b, "<table><tr><th>{}</th>", esc(heading));
    for (arm, n) in &s.arms {
        let _ = write!(
            b,
            "<th>{} (N = {n})<br><small>subjects (%) [events]</small></th>",
            esc(arm)
        );
    }
    for (arm, _) in &s.arms[1..] {
        let _ = write!(
            b,
            "<th>{} − {}<br><small>risk difference (95% CI)</small></th>",
            esc(arm),
            esc(&s.arms[0].0)
        );
    }
    let rates = !s.patient_years.is_empty();
    if rates {
        for ((arm, _), py) in s.arms.iter().zip(&s.patient_years) {
            let _ = write!(
                b,
                "<th>{}<br><small>per 100 patient-years (95% CI); {py:.1} PY</small></th>",
                esc(arm)
            );
        }
    }
    b.push_str("</tr>");
    for (r, indented) in rows {
        let label = if indented {
            format!("&emsp;{}", esc(&r.label))
        } else {
            format!("<b>{}</b>", esc(&r.label))
        };
        let _ = write!(b, "<tr><td>{label}</td>");
        for (k, (_, n)) in s.arms.iter().enumerate() {
            let _ = write!(b, "<td>{} [{}]</td>", share(r.subjects[k], *n), r.events[k]);
        }
        for d in &r.risk_differences {
            let cell = d.as_ref().map_or("—".into(), |e| {
                format!(
                    "{:.1}% ({:.1}, {:.1})",
                    100.0 * e.estimate,
                    100.0 * e.ci_low,
                    100.0 * e.ci_high
                )
            });
            let _ = write!(b, "<td>{cell}</td>");
        }
        if rates {
            for e in &r.rates {
                let cell = e.as_ref().map_or("—".into(), |e| {
                    format!("{:.1} ({:.1}, {:.1})", e.estimate, e.ci_low, e.ci_high)
                });
                let _ = write!(b, "<td>{cell}</td>");
            }
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
}
