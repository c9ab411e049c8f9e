//! What a split must be before training starts: both outcome classes, finite model inputs.

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

/// A split must hold both outcomes to learn from (train) or to be scored by AUC (test).
pub(crate) fn check_both_classes(split: &Split, name: &str, location: &str) -> Result<()> {
    let positives = split.y.iter().filter(|v| **v > 0.5).count();
    if positives == 0 || positives == split.rows {
        return Err(Error::bad_data(
            location,
            format!(
                "the {name} split has one outcome class only ({} rows, {positives} positive); expected both",
                split.rows
            ),
        ));
    }
    Ok(())
}
