//! The report's lab shift tables: per parameter, baseline indicator rows against worst post-baseline columns,
//! one column group per arm, and the new abnormalities.

use std::fmt::Write as _;

use super::{esc, share};
use crate::LabShifts;

pub(super) fn section(b: &mut String, l: &LabShifts) {
    let _ = write!(
        b,
        "<h2>Lab shifts</h2><p>Records of <code>{}</code>{}: each subject's baseline indicator against the worst \
         of its post-baseline records (levels from normal to worst: {}).</p>",
        esc(&l.table),
        l.population
            .as_ref()
            .map(|p| format!(", {} population", esc(p)))
            .unwrap_or_default(),
        esc(&l.levels.join(" < "))
    );
    for n in &l.notes {
        let _ = write!(b, "<p class=\"note\">{}</p>", esc(n));
    }
    for p in &l.parameters {
        let _ = write!(
            b,
            "<h3>{}</h3><table><tr><th rowspan=\"2\">Baseline</th>",
            esc(&p.parameter)
        );
        for (arm, _) in &l.arms {
            let _ = write!(
                b,
                "<th colspan=\"{}\">{} — worst post-baseline</th>",
                l.levels.len(),
                esc(arm)
            );
        }
        b.push_str("</tr><tr>");
        for _ in &l.arms {
            for level in &l.levels {
                let _ = write!(b, "<th>{}</th>", esc(level));
            }
        }
        b.push_str("</tr>");
        let labels = l.levels.iter().map(String::as_str).chain(["Missing"]);
        for (label, row) in labels.zip(&p.subjects) {
            let _ = write!(b, "<tr><td>{}</td>", esc(label));
            for k in 0..l.arms.len() {
                for cell in row {
                    let _ = write!(b, "<td>{}</td>", cell[k]);
                }
            }
            b.push_str("</tr>");
        }
        b.push_str("<tr><td>New abnormality</td>");
        for (n, of) in &p.new_abnormal {
            let _ = write!(
                b,
                "<td colspan=\"{}\">{} of {of} normal at baseline</td>",
                l.levels.len(),
                share(*n, *of)
            );
        }
        b.push_str("</tr></table>");
    }
}
