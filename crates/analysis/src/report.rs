//! The self-contained HTML report: tables and inline SVG, no scripts, no network.

use std::fmt::Write;

use crate::Analysis;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn km_svg(a: &Analysis) -> String {
    let Some(s) = &a.survival else {
        return String::new();
    };
    let (w, h, pad) = (640.0, 320.0, 40.0);
    let tmax = s
        .curves
        .iter()
        .flat_map(|c| c.points.last().map(|p| p.time))
        .fold(1.0f64, f64::max);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut svg = format!(
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Kaplan-Meier curves\" style=\"max-width:100%\">\
         <rect x=\"{pad}\" y=\"10\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
        w - pad - 10.0,
        h - pad - 10.0
    );
    let x = |t: f64| pad + (w - pad - 10.0) * t / tmax;
    let y = |s: f64| 10.0 + (h - pad - 10.0) * (1.0 - s);
    for (i, c) in s.curves.iter().enumerate() {
        let mut pts = format!("{:.1},{:.1}", x(0.0), y(1.0));
        let mut last = 1.0;
        for p in &c.points {
            let _ = write!(
                pts,
                " {:.1},{:.1} {:.1},{:.1}",
                x(p.time),
                y(last),
                x(p.time),
                y(p.survival)
            );
            last = p.survival;
        }
        let color = colors[i % colors.len()];
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{pts}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\" font-size=\"12\">{} (n={})</text>",
            pad + 10.0,
            h - pad - 14.0 - 16.0 * i as f64,
            esc(&c.arm),
            c.n
        );
    }
    for k in 0..=4 {
        let v = k as f64 / 4.0;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"10\">{v:.2}</text>",
            y(v) + 3.0
        );
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{:.0}</text>",
            x(tmax * v) - 8.0,
            h - pad + 14.0,
            tmax * v
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn html(a: &Analysis) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Trial analysis: {}</h1><p>{} subjects analyzed; reference arm <b>{}</b>.</p>",
        esc(&a.dataset),
        a.analyzed_rows,
        esc(&a.reference_arm)
    );
    body.push_str(
        "<h2>Outcome by arm</h2><table><tr><th>Arm</th><th>n</th><th>Events</th><th>Risk</th></tr>",
    );
    for r in &a.arms {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td></tr>",
            esc(&r.arm),
            r.n,
            r.events,
            r.risk
        );
    }
    body.push_str("</table><h2>Comparisons with the reference arm</h2><table><tr><th>Arm</th><th>Risk difference (95% CI)</th><th>Risk ratio (95% CI)</th><th>Odds ratio (95% CI)</th><th>χ²</th><th>p</th></tr>");
    for c in &a.comparisons {
        let e = |x: &crate::stats::Estimate| {
            format!("{:.4} ({:.4}, {:.4})", x.estimate, x.ci_low, x.ci_high)
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.4}</td></tr>",
            esc(&c.arm),
            e(&c.risk_difference),
            e(&c.risk_ratio),
            e(&c.odds_ratio),
            c.chi_square,
            c.p_value
        );
    }
    body.push_str("</table>");
    if let Some(s) = &a.survival {
        body.push_str("<h2>Time to event</h2>");
        body.push_str(&km_svg(a));
        body.push_str("<table><tr><th>Arm</th><th>n</th><th>Events</th><th>Median</th></tr>");
        for c in &s.curves {
            let median = c
                .median
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "not reached".into());
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{median}</td></tr>",
                esc(&c.arm),
                c.n,
                c.events
            );
        }
        let _ = write!(
            body,
            "</table><p>Log-rank χ² = {:.3} on {} df, p = {:.4}.</p>",
            s.logrank_chi_square, s.logrank_df, s.logrank_p_value
        );
    }
    body.push_str("<h2>Methods</h2><ul>");
    for m in &a.methods {
        let _ = write!(body, "<li>{}</li>", esc(m));
    }
    body.push_str("</ul>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:auto;padding:1rem}}\
         table{{border-collapse:collapse;margin:.5rem 0;display:block;overflow-x:auto}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}</style></head><body>{body}</body></html>\n",
        esc(&a.dataset)
    )
}
