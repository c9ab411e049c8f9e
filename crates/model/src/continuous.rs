//! Test-split metrics of a continuous endpoint, as scikit-learn defines them (`mean_squared_error` under a
//! square root, `mean_absolute_error`, `r2_score`), and the calibration line: the ordinary least-squares fit
//! of the observed on the predicted value (slope 1, intercept 0 when calibrated).

/// RMSE, MAE, R², calibration slope and intercept; NaN where undefined (a constant target or prediction).
pub fn scalars(y: &[f32], predicted: &[f32]) -> [f64; 5] {
    let n = y.len() as f64;
    if y.is_empty() {
        return [f64::NAN; 5];
    }
    let (mut se, mut ae) = (0.0, 0.0);
    for (&a, &p) in y.iter().zip(predicted) {
        let d = f64::from(a) - f64::from(p);
        se += d * d;
        ae += d.abs();
    }
    let mean_y = y.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let mean_p = predicted.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let (mut total, mut sxy, mut sxx) = (0.0, 0.0, 0.0);
    for (&a, &p) in y.iter().zip(predicted) {
        let (dy, dp) = (f64::from(a) - mean_y, f64::from(p) - mean_p);
        total += dy * dy;
        sxy += dp * dy;
        sxx += dp * dp;
    }
    let r2 = if total > 0.0 {
        1.0 - se / total
    } else {
        f64::NAN
    };
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    [(se / n).sqrt(), ae / n, r2, slope, mean_y - slope * mean_p]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_shifted_predictions() {
        let y = [1.0f32, 2.0, 3.0, 4.0];
        let s = scalars(&y, &y);
        assert_eq!(s[..3], [0.0, 0.0, 1.0]);
        assert!((s[3] - 1.0).abs() < 1e-12 && s[4].abs() < 1e-12);
        // predictions one too high: RMSE = MAE = 1, R² = 1 − 4/5, slope 1, intercept −1
        let shifted = [2.0f32, 3.0, 4.0, 5.0];
        let s = scalars(&y, &shifted);
        assert!((s[0] - 1.0).abs() < 1e-12 && (s[1] - 1.0).abs() < 1e-12);
        assert!((s[2] - 0.2).abs() < 1e-12);
        assert!((s[4] + 1.0).abs() < 1e-12);
        assert!(scalars(&[2.0, 2.0], &[1.0, 3.0])[2].is_nan());
    }
}
