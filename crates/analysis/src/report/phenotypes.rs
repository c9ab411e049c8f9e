//! The report's phenotype clusters (exploratory): how many and how stable, each cluster's baseline profile,
//! and the outcome by arm within each cluster.

use std::fmt::Write as _;

use super::{esc, num};
use trialflow_core::contracts::PhenotypeReport;

pub(super) fn section(b: &mut String, p: &PhenotypeReport) {
    let method = match p.method {
        trialflow_core::config::ClusterMethod::Kmeans => "k-means, chosen by the mean silhouette",
        trialflow_core::config::ClusterMethod::Gmm => "Gaussian mixture, chosen by BIC",
    };
    let _ = write!(
        b,
        "<h2>Phenotype clusters (exploratory)</h2><p class=\"note\">{}</p><p>{} clusters of the {} train rows' \
         baseline inputs ({method}; tried: {}).",
        esc(&p.note),
        p.k,
        p.train_rows,
        p.tried
            .iter()
            .map(|t| match (t.silhouette, t.bic) {
                (_, Some(bic)) => format!("k = {}: BIC {bic:.1}", t.k),
                (s, None) => format!("k = {}: silhouette {}", t.k, num(s, 3)),
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some(s) = &p.stability {
        let _ = write!(
            b,
            " Stability over {} bootstrap refits: adjusted Rand index {} (range {} to {}).",
            s.resamples,
            num(Some(s.ari_mean), 2),
            num(Some(s.ari_min), 2),
            num(Some(s.ari_max), 2)
        );
    }
    b.push_str("</p>");
    let Some(first) = p.clusters.first() else {
        return;
    };
    b.push_str("<table><tr><th>Baseline (train rows)</th>");
    for c in &p.clusters {
        let _ = write!(
            b,
            "<th>Cluster {} (n = {})</th>",
            c.cluster + 1,
            c.train_rows
        );
    }
    b.push_str("</tr>");
    for name in first.numeric.keys() {
        let _ = write!(b, "<tr><td>{}, mean</td>", esc(name));
        for c in &p.clusters {
            let _ = write!(b, "<td>{}</td>", num(c.numeric.get(name).copied(), 2));
        }
        b.push_str("</tr>");
    }
    for (field, levels) in &first.levels {
        for level in levels.keys() {
            let _ = write!(b, "<tr><td>{} = {}</td>", esc(field), esc(level));
            for c in &p.clusters {
                let share = c.levels.get(field).and_then(|l| l.get(level)).copied();
                let _ = write!(b, "<td>{}</td>", num(share.map(|v| 100.0 * v), 1) + "%");
            }
            b.push_str("</tr>");
        }
    }
    b.push_str("</table>");
    let _ = write!(
        b,
        "<h3>Outcome by arm within each cluster</h3><p>{} (all splits' rows); the difference is against the \
         reference arm in the same cluster, descriptive only.</p><table><tr><th>Cluster</th><th>Arm</th><th>n</th>\
         <th>Outcome</th><th>Difference</th></tr>",
        esc(&p.outcome_measure)
    );
    for c in &p.clusters {
        for o in &c.outcome {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.cluster + 1,
                esc(&o.arm),
                o.n,
                num(o.value, 3),
                num(o.difference, 3)
            );
        }
    }
    b.push_str("</table>");
}
