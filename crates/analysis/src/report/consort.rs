//! The CONSORT flow diagram (inline SVG: assessed, excluded, randomized, allocated per arm, analysed per
//! population and arm, with completed / discontinued where the disposition is configured) and the disposition
//! table.

use std::fmt::Write as _;

use super::{esc, share};
use crate::{Disposition, Flow};

const WIDTH: f64 = 640.0;
const BOX_H: f64 = 44.0;
const GAP: f64 = 26.0;

/// A box of `lines` at (x, y), `w` wide, and its height.
fn boxed(svg: &mut String, x: f64, y: f64, w: f64, lines: &[String]) -> f64 {
    let h = BOX_H.max(14.0 * lines.len() as f64 + 12.0);
    let _ = write!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"4\" fill=\"#fff\" \
         stroke=\"#555\"/>"
    );
    for (i, line) in lines.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            x + w / 2.0,
            y + 16.0 + 14.0 * i as f64,
            esc(line)
        );
    }
    h
}

fn arrow(svg: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = write!(
        svg,
        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#555\" \
         marker-end=\"url(#consort-arrow)\"/>"
    );
}

/// The diagram; `d` adds each arm's completed and discontinued subjects.
pub(super) fn diagram(f: &Flow, d: Option<&Disposition>) -> String {
    let mut body = String::new();
    let center = WIDTH / 2.0;
    let (main_w, side_w) = (250.0, 200.0);
    let mut y = 10.0;
    let h = boxed(
        &mut body,
        center - main_w / 2.0,
        y,
        main_w,
        &[format!("Assessed: {} rows ingested", f.rows_ingested)],
    );
    let mid = y + h + GAP / 2.0;
    let side_x = center + main_w / 2.0 + 20.0;
    let excluded = [
        format!("Excluded: {}", f.rows_excluded),
        format!(
            "rules {} · filter {} · duplicates {}",
            f.excluded_by_rule.iter().map(|r| r.2).sum::<u64>(),
            f.excluded_by_filter,
            f.duplicates_removed
        ),
    ];
    let side_h = boxed(
        &mut body,
        side_x.min(WIDTH - side_w - 4.0),
        mid - BOX_H / 2.0,
        side_w.min(WIDTH - side_x - 4.0).max(150.0),
        &excluded,
    );
    let _ = write!(
        body,
        "<line x1=\"{center:.1}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"#555\"/>",
        side_x.min(WIDTH - side_w - 4.0)
    );
    arrow(&mut body, center, y + h, center, y + h + GAP + side_h / 2.0);
    y += h + GAP + side_h / 2.0;
    let h = boxed(
        &mut body,
        center - main_w / 2.0,
        y,
        main_w,
        &[format!("Randomized (accepted): {}", f.analyzed)],
    );
    y += h;
    let k = f.analyzed_per_arm.len().max(1);
    let col_w = (WIDTH - 8.0) / k as f64;
    let top = y + GAP;
    let mut bottom: f64 = top;
    for (j, (arm, n)) in f.analyzed_per_arm.iter().enumerate() {
        let x = 4.0 + j as f64 * col_w;
        let w = col_w - 8.0;
        arrow(&mut body, center, y, x + w / 2.0, top);
        let mut yy = top;
        yy += boxed(
            &mut body,
            x,
            yy,
            w,
            &[format!("Allocated to {arm}"), format!("n = {n}")],
        );
        if let Some(d) = d
            && let Some(k) = d.arms.iter().position(|(a, _)| a == arm)
        {
            let completed = d.rows.first().map_or(0, |r| r.subjects[k]);
            let discontinued: u64 = d.rows[1..]
                .iter()
                .filter(|r| !r.reason && r.label != "Status not recorded")
                .map(|r| r.subjects[k])
                .sum();
            arrow(&mut body, x + w / 2.0, yy, x + w / 2.0, yy + GAP);
            yy += GAP;
            yy += boxed(
                &mut body,
                x,
                yy,
                w,
                &[
                    format!("Completed: {completed}"),
                    format!("Discontinued: {discontinued}"),
                ],
            );
        }
        let analysed: Vec<String> = if f.populations.is_empty() {
            vec![format!("Analysed: {n}")]
        } else {
            f.populations
                .iter()
                .map(|p| {
                    let m = p.per_arm.iter().find(|(a, _)| a == arm).map_or(0, |x| x.1);
                    format!("Analysed ({}): {m}", p.name)
                })
                .collect()
        };
        arrow(&mut body, x + w / 2.0, yy, x + w / 2.0, yy + GAP);
        yy += GAP;
        yy += boxed(&mut body, x, yy, w, &analysed);
        bottom = bottom.max(yy);
    }
    format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"CONSORT flow diagram\" viewBox=\"0 0 {WIDTH} {:.0}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><defs><marker id=\"consort-arrow\" viewBox=\"0 0 10 10\" \
         refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0L10,5L0,10z\" fill=\"#555\"/></marker></defs>{body}</svg>",
        bottom + 10.0
    )
}

/// Completed and discontinued subjects with the reasons, per arm.
pub(super) fn disposition_table(b: &mut String, d: &Disposition) {
    let _ = write!(
        b,
        "<h2>Disposition</h2><p>End-of-study status <code>{}</code>{}{}.</p><table><tr><th>Status</th>",
        esc(&d.status),
        d.reason
            .as_ref()
            .map(|r| format!(", reason <code>{}</code>", esc(r)))
            .unwrap_or_default(),
        d.population
            .as_ref()
            .map(|p| format!("; {} population", esc(p)))
            .unwrap_or_else(|| "; every randomized (accepted) subject".into())
    );
    for (arm, n) in &d.arms {
        let _ = write!(b, "<th>{} (N = {n})</th>", esc(arm));
    }
    b.push_str("<th>Total</th></tr>");
    let total: u64 = d.arms.iter().map(|a| a.1).sum();
    for r in &d.rows {
        let label = if r.reason {
            format!("&emsp;{}", esc(&r.label))
        } else {
            format!("<b>{}</b>", esc(&r.label))
        };
        let _ = write!(b, "<tr><td>{label}</td>");
        for (c, (_, n)) in r.subjects.iter().zip(&d.arms) {
            let _ = write!(b, "<td>{}</td>", share(*c, *n));
        }
        let _ = write!(b, "<td>{}</td></tr>", share(r.total, total));
    }
    b.push_str("</table>");
}
