//! Scoring a model's weights on a split of the lake (the gate re-scores the served version this way).

use trialflow_core::{Error, Result, Storage};

use crate::{DenseCpu, ModelCard, split};

/// `(targets, predictions)` of `card`'s weights on `split` (see [`crate::DenseCpu::predict`]), through the
/// same transform and forward pass serving uses. Weights that do not fit the card or the split are bad data
/// naming the model.
pub async fn score_split(
    lake: &Storage,
    card: &ModelCard,
    weights: &[u8],
    split_name: &str,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let data = split::load_split(lake, &card.feature_spec, split_name, &[], &card.targets).await?;
    let dense = DenseCpu::from_safetensors(&card.architecture, weights)
        .map_err(|e| Error::bad_data(format!("model `{}`", card.name), e))?;
    if dense.input_dim() != card.feature_spec.width() {
        return Err(Error::bad_data(
            format!("model `{}`", card.name),
            format!(
                "weights take {} inputs, the feature spec gives {}",
                dense.input_dim(),
                card.feature_spec.width()
            ),
        ));
    }
    let p = dense.predict(card.endpoint, &data.x);
    Ok((data.y, p))
}
