//! What a split must be before training starts: targets the endpoint can learn from, finite model inputs.

use trialflow_core::config::Endpoint;
use trialflow_core::features::FeatureSpec;
use trialflow_core::{Error, Result};

use crate::Split;

/// Refuses features that are not finite, naming the split and the model input column.
pub(crate) fn check_finite(
    split: &Split,
    name: &str,
    spec: &FeatureSpec,
    location: &str,
) -> Result<()> {
    let dim = spec.width().max(1);
    if let Some(i) = split.x.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_data(
            location,
            format!(
                "the {name} split has a NaN or infinite value in feature `{}` (row {} of the split); \
                 expected finite numbers after imputation",
                spec.columns.get(i % dim).map_or("?", String::as_str),
                i / dim + 1
            ),
        ));
    }
    Ok(())
}

/// A split's targets must be something to learn from and to score: both outcome classes (binary), a target
/// that varies (continuous), times that are not negative, 0/1 events and at least one event (time to event).
pub(crate) fn check_targets(
    endpoint: Endpoint,
    targets: &[f32],
    name: &str,
    location: &str,
) -> Result<()> {
    let fail = |m: String| Err(Error::bad_data(location, m));
    match endpoint {
        Endpoint::Binary => {
            let positives = targets.iter().filter(|v| **v > 0.5).count();
            if positives == 0 || positives == targets.len() {
                return fail(format!(
                    "the {name} split has one outcome class only ({} rows, {positives} positive); expected both",
                    targets.len()
                ));
            }
        }
        Endpoint::Continuous => {
            if targets.len() < 2 || targets.iter().all(|v| *v == targets[0]) {
                return fail(format!(
                    "the {name} split's target is constant ({} rows); a continuous model needs it to vary",
                    targets.len()
                ));
            }
        }
        Endpoint::TimeToEvent => {
            let rows = targets.len() / 2;
            if let Some(r) = (0..rows).find(|&r| targets[2 * r] < 0.0) {
                return fail(format!(
                    "the {name} split has a negative time at row {}",
                    r + 1
                ));
            }
            if let Some(r) =
                (0..rows).find(|&r| targets[2 * r + 1] != 0.0 && targets[2 * r + 1] != 1.0)
            {
                return fail(format!(
                    "the {name} split has an event indicator that is neither 0 nor 1 at row {}",
                    r + 1
                ));
            }
            if (0..rows).all(|r| targets[2 * r + 1] == 0.0) {
                return fail(format!(
                    "the {name} split has no event ({rows} rows, all censored); a time-to-event model cannot \
                     be fitted or scored without events"
                ));
            }
        }
    }
    Ok(())
}
