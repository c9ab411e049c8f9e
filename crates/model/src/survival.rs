//! Time-to-event models' survival curves and their evaluation. A model's risk score r (a log hazard ratio)
//! becomes a survival curve S(t | x) = exp(−H₀(t)·eʳ) through the Breslow baseline cumulative hazard H₀ of its
//! train split. The metrics follow scikit-survival 0.28 to the letter (`concordance_index_censored`,
//! `concordance_index_ipcw`, `cumulative_dynamic_auc`, `brier_score`, `integrated_brier_score`), with the
//! censoring distribution G estimated on the train split by the reverse Kaplan–Meier estimator (an event
//! before a censoring at the same time).

use serde::{Deserialize, Serialize};

/// Survival targets: times and events (true = the event, false = censored), one per row.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub time: &'a [f64],
    pub event: &'a [bool],
}

impl Observed<'_> {
    pub fn len(&self) -> usize {
        self.time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.time.is_empty()
    }
}

/// Times and events from a split's interleaved targets `[time, event, time, event, …]`.
pub fn observed(targets: &[f32]) -> (Vec<f64>, Vec<bool>) {
    targets
        .chunks_exact(2)
        .map(|te| (f64::from(te[0]), te[1] > 0.5))
        .unzip()
}

/// The Breslow estimate of the baseline cumulative hazard: a step at each event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineHazard {
    pub times: Vec<f64>,
    pub cumulative_hazard: Vec<f64>,
}

impl BaselineHazard {
    /// H₀(t) = Σ over event times tⱼ ≤ t of dⱼ / Σ_{i at risk at tⱼ} exp(rᵢ) (scikit-survival's
    /// `BreslowEstimator`, lifelines' `baseline_cumulative_hazard_`).
    pub fn breslow(obs: Observed<'_>, risk: &[f32]) -> Self {
        let order = ascending(obs.time);
        let mut at_risk: f64 = risk.iter().map(|r| f64::from(*r).exp()).sum();
        let (mut times, mut cumulative_hazard) = (Vec::new(), Vec::new());
        let mut total = 0.0;
        let mut i = 0;
        while i < order.len() {
            let t = obs.time[order[i]];
            let (mut events, mut leaving) = (0usize, 0.0);
            while i < order.len() && obs.time[order[i]] == t {
                let k = order[i];
                events += usize::from(obs.event[k]);
                leaving += f64::from(risk[k]).exp();
                i += 1;
            }
            if events > 0 && at_risk > 0.0 {
                total += events as f64 / at_risk;
                times.push(t);
                cumulative_hazard.push(total);
            }
            at_risk -= leaving;
        }
        Self {
            times,
            cumulative_hazard,
        }
    }

    /// H₀(t): the last step at or before t, 0 before the first.
    pub fn at(&self, t: f64) -> f64 {
        let n = self.times.partition_point(|&s| s <= t);
        if n == 0 {
            0.0
        } else {
            self.cumulative_hazard[n - 1]
        }
    }

    /// S(t | r) at each of `times`.
    pub fn survival(&self, risk: f32, times: &[f64]) -> Vec<f64> {
        let scale = f64::from(risk).exp();
        times.iter().map(|&t| (-self.at(t) * scale).exp()).collect()
    }
}

/// Row indices by ascending time (stable).
fn ascending(time: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..time.len()).collect();
    order.sort_by(|&a, &b| time[a].total_cmp(&time[b]));
    order
}

/// A Kaplan–Meier curve: the value after each distinct time.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCurve {
    pub times: Vec<f64>,
    pub values: Vec<f64>,
}

impl StepCurve {
    /// The Kaplan–Meier estimate; with `reverse`, of the censoring distribution (scikit-survival's
    /// `kaplan_meier_estimator(reverse=True)`: the events at a time leave the risk set before its censorings).
    pub fn kaplan_meier(obs: Observed<'_>, reverse: bool) -> Self {
        let order = ascending(obs.time);
        let mut at_risk = order.len() as f64;
        let (mut times, mut values) = (Vec::new(), Vec::new());
        let mut s = 1.0;
        let mut i = 0;
        while i < order.len() {
            let t = obs.time[order[i]];
            let (mut events, mut censored) = (0.0, 0.0);
            while i < order.len() && obs.time[order[i]] == t {
                if obs.event[order[i]] {
                    events += 1.0;
                } else {
                    censored += 1.0;
                }
                i += 1;
            }
            let (dropped, risk) = if reverse {
                (censored, at_risk - events)
            } else {
                (events, at_risk)
            };
            if risk > 0.0 {
                s *= 1.0 - dropped / risk;
            }
            times.push(t);
            values.push(s);
            at_risk -= events + censored;
        }
        Self { times, values }
    }

    /// The value at t: the last step at or before t (1 before the first); past the last time, the last value.
    pub fn at(&self, t: f64) -> f64 {
        let n = self.times.partition_point(|&s| s <= t);
        if n == 0 { 1.0 } else { self.values[n - 1] }
    }
}

/// Concordance with weights per comparable pair's earlier (event) row, as scikit-survival's
/// `_estimate_concordance_index`: an event at tᵢ is compared with every row whose time is later and with the
/// rows censored at tᵢ; the higher risk should die first; equal risk scores count one half (scikit-survival
/// counts scores within 1e-8 as equal: the same for scores as far apart as an `f32`'s precision above 0.1).
/// O(n log n): rows are taken latest first, the later rows' scores counted in a Fenwick tree over score ranks.
fn concordance(obs: Observed<'_>, risk: &[f32], weight: &dyn Fn(usize) -> f64) -> Option<f64> {
    let order = ascending(obs.time);
    let n = order.len();
    let mut levels: Vec<f32> = risk.to_vec();
    levels.sort_by(f32::total_cmp);
    levels.dedup();
    let rank = |r: f32| levels.partition_point(|v| v.total_cmp(&r).is_lt());
    let mut later = Fenwick::new(levels.len());
    let (mut numerator, mut denominator) = (0.0, 0.0);
    let mut end = n;
    while end > 0 {
        let t = obs.time[order[end - 1]];
        let mut start = end;
        while start > 0 && obs.time[order[start - 1]] == t {
            start -= 1;
        }
        let group = &order[start..end];
        for &k in group.iter().filter(|&&k| obs.event[k]) {
            let w = weight(k);
            let r = rank(risk[k]);
            // the later rows, then the rows censored at the same time
            let (mut lower, mut equal) = (later.below(r) as f64, later.at(r) as f64);
            let mut comparable = later.total() as f64;
            for &j in group.iter().filter(|&&j| !obs.event[j]) {
                comparable += 1.0;
                match risk[j].total_cmp(&risk[k]) {
                    std::cmp::Ordering::Less => lower += 1.0,
                    std::cmp::Ordering::Equal => equal += 1.0,
                    std::cmp::Ordering::Greater => {}
                }
            }
            numerator += w * (lower + 0.5 * equal);
            denominator += w * comparable;
        }
        for &k in group {
            later.add(rank(risk[k]));
        }
        end = start;
    }
    (denominator > 0.0).then(|| numerator / denominator)
}

/// Counts per rank with prefix sums in O(log n).
struct Fenwick {
    tree: Vec<u64>,
    count: u64,
}

impl Fenwick {
    fn new(n: usize) -> Self {
        Self {
            tree: vec![0; n + 1],
            count: 0,
        }
    }

    fn add(&mut self, rank: usize) {
        self.count += 1;
        let mut i = rank + 1;
        while i < self.tree.len() {
            self.tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Entries with a rank below `rank`.
    fn below(&self, rank: usize) -> u64 {
        let mut i = rank;
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    fn at(&self, rank: usize) -> u64 {
        self.below(rank + 1) - self.below(rank)
    }

    fn total(&self) -> u64 {
        self.count
    }
}

/// Harrell's C of risk scores (`concordance_index_censored`).
pub fn harrell_c(obs: Observed<'_>, risk: &[f32]) -> Option<f64> {
    concordance(obs, risk, &|_| 1.0)
}

/// The censoring distribution G of the train split and its inverse weights.
#[derive(Debug, Clone)]
pub struct Censoring {
    curve: StepCurve,
    /// No row was censored: G = 1 throughout.
    none: bool,
}

impl Censoring {
    pub fn fit(train: Observed<'_>) -> Self {
        Self {
            curve: StepCurve::kaplan_meier(train, true),
            none: train.event.iter().all(|e| *e),
        }
    }

    /// G(t); 0 past the last train time when the censoring curve has reached 0 there.
    pub fn at(&self, t: f64) -> f64 {
        if self.none {
            return 1.0;
        }
        match self.curve.times.last() {
            Some(&last) if t > last && self.curve.values.last().is_some_and(|v| *v == 0.0) => 0.0,
            _ => self.curve.at(t),
        }
    }
}

/// Uno's C (`concordance_index_ipcw`): pairs weighted by 1/G(tᵢ)² of the earlier event, events at or after
/// `tau` left out as the earlier member. `None` when G is 0 at an event time or no pair is comparable.
pub fn uno_c(obs: Observed<'_>, risk: &[f32], censoring: &Censoring, tau: f64) -> Option<f64> {
    let weights: Vec<f64> = (0..obs.len())
        .map(|i| {
            if !obs.event[i] || obs.time[i] >= tau {
                return 0.0;
            }
            let g = censoring.at(obs.time[i]);
            if g > 0.0 { 1.0 / (g * g) } else { f64::NAN }
        })
        .collect();
    if weights.iter().any(|w| w.is_nan()) {
        return None;
    }
    concordance(obs, risk, &|k| weights[k])
}

/// Cumulative/dynamic AUC at each time (`cumulative_dynamic_auc`): cases died by t (weighted 1/G(tᵢ)),
/// controls alive after t; and its mean weighted by the test split's Kaplan–Meier drop between the times.
pub fn cumulative_dynamic_auc(
    obs: Observed<'_>,
    risk: &[f32],
    censoring: &Censoring,
    times: &[f64],
) -> (Vec<Option<f64>>, Option<f64>) {
    let ipcw: Vec<f64> = (0..obs.len())
        .map(|i| {
            if obs.event[i] {
                let g = censoring.at(obs.time[i]);
                if g > 0.0 { 1.0 / g } else { f64::NAN }
            } else {
                0.0
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..obs.len()).collect();
    order.sort_by(|&a, &b| risk[b].total_cmp(&risk[a]));
    let scores: Vec<Option<f64>> = times
        .iter()
        .map(|&t| auc_at(obs, risk, &ipcw, &order, t))
        .collect();
    let mean = if times.len() == 1 {
        scores[0]
    } else {
        let km = StepCurve::kaplan_meier(obs, false);
        let (mut previous, mut integral) = (1.0, 0.0);
        let mut defined = true;
        for (score, &t) in scores.iter().zip(times) {
            let s = km.at(t);
            match score {
                Some(v) => integral += v * (previous - s),
                None => defined = false,
            }
            previous = s;
        }
        (defined && previous < 1.0).then(|| integral / (1.0 - previous))
    };
    (scores, mean)
}

/// One time's AUC: the trapezoid under (false positive, true positive) rates over the distinct risk
/// scores, highest first, from (0, 0).
fn auc_at(obs: Observed<'_>, risk: &[f32], ipcw: &[f64], order: &[usize], t: f64) -> Option<f64> {
    let is_case = |i: usize| obs.event[i] && obs.time[i] <= t;
    let is_control = |i: usize| obs.time[i] > t;
    let cases: f64 = order
        .iter()
        .filter(|&&i| is_case(i))
        .map(|&i| ipcw[i])
        .sum();
    let controls = order.iter().filter(|&&i| is_control(i)).count() as f64;
    if !(cases > 0.0 && controls > 0.0 && cases.is_finite()) {
        return None;
    }
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut last_tpr, mut last_fpr, mut area) = (0.0, 0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if is_case(i) {
            tp += ipcw[i];
        }
        if is_control(i) {
            fp += 1.0;
        }
        let tied_with_next = order
            .get(k + 1)
            .is_some_and(|&j| (f64::from(risk[j]) - f64::from(risk[i])).abs() <= 1e-8);
        if !tied_with_next {
            let (tpr, fpr) = (tp / cases, fp / controls);
            area += (fpr - last_fpr) * (tpr + last_tpr) / 2.0;
            (last_tpr, last_fpr) = (tpr, fpr);
        }
    }
    Some(area)
}

/// IPCW Brier score of predicted survival at each time (`brier_score`): `survival[i][k]` is row i's
/// predicted survival at `times[k]`.
pub fn brier_scores(
    obs: Observed<'_>,
    survival: &[Vec<f64>],
    censoring: &Censoring,
    times: &[f64],
) -> Vec<Option<f64>> {
    let inverse = |g: f64| if g > 0.0 { 1.0 / g } else { 0.0 };
    times
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let at_t = inverse(censoring.at(t));
            let sum: f64 = (0..obs.len())
                .map(|i| {
                    let s = survival[i][k];
                    if obs.event[i] && obs.time[i] <= t {
                        s * s * inverse(censoring.at(obs.time[i]))
                    } else if obs.time[i] > t {
                        (1.0 - s) * (1.0 - s) * at_t
                    } else {
                        0.0
                    }
                })
                .sum();
            (!obs.is_empty()).then(|| sum / obs.len() as f64)
        })
        .collect()
}

/// The Brier scores integrated over the times by the trapezoid rule, per unit time
/// (`integrated_brier_score`); `None` below two times.
pub fn integrated_brier(scores: &[Option<f64>], times: &[f64]) -> Option<f64> {
    if times.len() < 2 {
        return None;
    }
    let mut area = 0.0;
    for k in 1..times.len() {
        area += (times[k] - times[k - 1]) * (scores[k]? + scores[k - 1]?) / 2.0;
    }
    Some(area / (times[times.len() - 1] - times[0]))
}

/// Predicted survival at `t` against the Kaplan–Meier survival at `t`, in groups of predicted survival
/// (tenths of the rows, ranked by prediction; fewer groups below 100 rows).
pub fn calibration_at(
    obs: Observed<'_>,
    predicted: &[f64],
    t: f64,
) -> Vec<trialflow_core::contracts::SurvivalCalibrationBin> {
    let n = obs.len();
    let groups = (n / 10).clamp(1, 10);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| predicted[a].total_cmp(&predicted[b]));
    (0..groups)
        .filter_map(|g| {
            let members = &order[g * n / groups..(g + 1) * n / groups];
            if members.is_empty() {
                return None;
            }
            let time: Vec<f64> = members.iter().map(|&i| obs.time[i]).collect();
            let event: Vec<bool> = members.iter().map(|&i| obs.event[i]).collect();
            let km = StepCurve::kaplan_meier(
                Observed {
                    time: &time,
                    event: &event,
                },
                false,
            );
            Some(trialflow_core::contracts::SurvivalCalibrationBin {
                n: members.len(),
                mean_predicted: members.iter().map(|&i| predicted[i]).sum::<f64>()
                    / members.len() as f64,
                observed: km.at(t),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs<'a>(time: &'a [f64], event: &'a [bool]) -> Observed<'a> {
        Observed { time, event }
    }

    #[test]
    fn harrell_counts_pairs_by_hand() {
        // pairs with an earlier event: (0,1) (0,2) (0,3) (2,3); concordant when the earlier has higher risk
        let (t, e) = ([1.0, 2.0, 3.0, 4.0], [true, false, true, false]);
        let risk = [0.9f32, 0.5, 0.7, 0.1];
        assert_eq!(harrell_c(obs(&t, &e), &risk), Some(1.0));
        let reversed = [0.1f32, 0.5, 0.7, 0.9];
        assert_eq!(harrell_c(obs(&t, &e), &reversed), Some(0.0));
        // a tie in risk counts one half; a row censored at an event's time is comparable with it
        let (t2, e2) = ([1.0, 1.0], [true, false]);
        assert_eq!(harrell_c(obs(&t2, &e2), &[0.3, 0.3]), Some(0.5));
        assert_eq!(
            harrell_c(obs(&[1.0, 2.0], &[false, false]), &[0.1, 0.2]),
            None
        );
    }

    /// The O(n log n) count equals the pairwise definition on data with tied times, tied scores and
    /// censoring at event times, with weights.
    #[test]
    fn concordance_equals_the_pairwise_count() {
        let n = 300;
        let time: Vec<f64> = (0..n).map(|i| ((i * 37) % 41) as f64).collect();
        let event: Vec<bool> = (0..n).map(|i| i % 3 != 1).collect();
        let risk: Vec<f32> = (0..n).map(|i| ((i * 13) % 23) as f32 / 4.0).collect();
        let weight = |k: usize| 1.0 + (k % 5) as f64;
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..n {
            if !event[i] {
                continue;
            }
            for j in 0..n {
                let comparable = time[j] > time[i] || (time[j] == time[i] && !event[j]);
                if !comparable {
                    continue;
                }
                den += weight(i);
                if risk[j] == risk[i] {
                    num += 0.5 * weight(i);
                } else if risk[j] < risk[i] {
                    num += weight(i);
                }
            }
        }
        let got = concordance(obs(&time, &event), &risk, &weight).unwrap();
        assert!((got - num / den).abs() < 1e-12, "{got} vs {}", num / den);
    }

    #[test]
    fn breslow_steps_at_event_times() {
        let (t, e) = ([1.0, 2.0, 2.0, 3.0], [true, true, false, true]);
        let risk = [0.0f32; 4];
        let h = BaselineHazard::breslow(obs(&t, &e), &risk);
        assert_eq!(h.times, vec![1.0, 2.0, 3.0]);
        let want = [
            1.0 / 4.0,
            1.0 / 4.0 + 1.0 / 3.0,
            1.0 / 4.0 + 1.0 / 3.0 + 1.0,
        ];
        for (g, w) in h.cumulative_hazard.iter().zip(want) {
            assert!((g - w).abs() < 1e-12);
        }
        assert_eq!(h.at(0.5), 0.0);
        assert!((h.survival(0.0, &[2.5])[0] - (-want[1]).exp()).abs() < 1e-12);
    }

    #[test]
    fn reverse_kaplan_meier_takes_events_out_first() {
        // at t=2 one event and one censoring: the censoring curve's risk set there is 3 − 1 = 2
        let (t, e) = ([1.0, 2.0, 2.0, 3.0], [true, true, false, false]);
        let g = StepCurve::kaplan_meier(obs(&t, &e), true);
        assert_eq!(g.values, vec![1.0, 0.5, 0.0]);
    }
}
