//! The report's stratified log-rank test, restricted mean survival times and milestone differences, under a
//! time-to-event endpoint.

use std::fmt::Write as _;

use super::{esc, p_value};
use crate::{ArmContrast, Stratified, Survival};

pub(super) fn stratified_logrank(b: &mut String, st: &Stratified) {
    let _ = write!(
        b,
        "<p>Log-rank test stratified by {} ({} strata): χ² = {:.3} on {} df, p = {}.</p>",
        esc(&st.strata.join(" × ")),
        st.levels.len(),
        st.logrank_chi_square,
        st.logrank_df,
        p_value(Some(st.logrank_p_value))
    );
    for n in &st.notes {
        let _ = write!(b, "<p class=\"note\">{}</p>", esc(n));
    }
}

fn contrast_cells(d: &ArmContrast, digits: usize) -> String {
    format!(
        "<td>{} − {}</td><td>{:.digits$} ({:.digits$}, {:.digits$})</td><td>{}</td>",
        esc(&d.arm),
        esc(&d.reference),
        d.estimate,
        d.ci_low,
        d.ci_high,
        p_value(Some(d.p))
    )
}

pub(super) fn rmst_and_milestones(b: &mut String, s: &Survival) {
    let unit = s.time_unit.as_deref().map(esc).unwrap_or_default();
    if let Some(r) = &s.rmst {
        let _ = write!(
            b,
            "<h3>Restricted mean survival time to {} {unit}</h3><table><tr><th>Arm</th>\
             <th>RMST (95% CI)</th><th>SE</th></tr>",
            r.horizon
        );
        for a in &r.arms {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{:.1} ({:.1}, {:.1})</td><td>{:.2}</td></tr>",
                esc(&a.arm),
                a.rmst,
                a.ci_low,
                a.ci_high,
                a.se
            );
        }
        b.push_str(
            "</table><table><tr><th>Difference</th><th>Estimate (95% CI)</th><th>p</th></tr>",
        );
        for d in &r.differences {
            let _ = write!(b, "<tr>{}</tr>", contrast_cells(d, 1));
        }
        b.push_str("</table>");
        for n in &r.notes {
            let _ = write!(b, "<p class=\"note\">{}</p>", esc(n));
        }
    }
    if !s.milestones.is_empty() {
        b.push_str(
            "<h3>Survival differences at milestone times</h3><table><tr><th>Time</th><th>Difference</th>\
             <th>Estimate (95% CI)</th><th>p</th></tr>",
        );
        for m in &s.milestones {
            let _ = write!(
                b,
                "<tr><td>{} {unit}</td>{}</tr>",
                m.time,
                contrast_cells(&m.difference, 3)
            );
        }
        b.push_str("</table>");
    }
}
