//! The feature spec: how raw subject records become model inputs. Written by preprocessing from the TRAIN
//! split only (`processed/feature_spec.json`), embedded in every model version, applied by the `model` crate
//! in training, batch scoring and serving alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happens to a value outside its valid range or levels at scoring time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Treated as missing (imputed), as the clean stage nulls it.
    Impute,
    /// Refused: the clean stage would have quarantined the row.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericFeature {
    pub name: String,
    /// Median of the train split, used for missing values.
    pub impute: f64,
    pub mean: f64,
    /// Population standard deviation of the train split (1 when it is 0).
    pub std: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub on_invalid: OnInvalid,
    /// SQL expression for derived columns (e.g. BMI), evaluated over the record's numeric fields.
    pub derived: Option<String>,
}

/// What a level that the train split never had becomes at encoding time (`preprocessing.unseen_level`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UnseenLevel {
    /// All zeros, as a missing value: the model sees none of the known levels.
    #[default]
    Zeros,
    /// Refused, naming the field: a record the model was not trained for is not scored.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalFeature {
    pub name: String,
    /// One-hot levels seen in the train split, in column order. A missing level encodes as all zeros (the
    /// reference of every level); an unseen one as `unseen` says.
    pub levels: Vec<String>,
    /// Lower-cased spelling → canonical level, from the dataset rules (synonyms and the allowed levels).
    pub canonical: BTreeMap<String, String>,
    #[serde(default)]
    pub unseen: UnseenLevel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub numeric: Vec<NumericFeature>,
    pub categorical: Vec<CategoricalFeature>,
    /// Names of the model's input columns in order (`age`, …, `sex=F`, …).
    pub columns: Vec<String>,
    /// Rows in the train split the statistics come from.
    pub train_rows: u64,
    /// The record field holding the randomized arm (stored as `arm` in the lake's tables).
    pub arm_field: String,
}

/// Columns every clean/features table has under fixed names.
pub const FIXED_COLUMNS: [&str; 6] = ["subject_id", "arm", "site", "outcome", "time", "event"];

/// Name in the lake's tables of covariate `field` (names that clash with the fixed columns get `x_`).
pub fn table_column(field: &str) -> String {
    if FIXED_COLUMNS.contains(&field) {
        format!("x_{field}")
    } else {
        field.to_string()
    }
}

impl FeatureSpec {
    /// Name in the lake's tables of any spec field, the arm included.
    pub fn table_column(&self, field: &str) -> String {
        if field == self.arm_field {
            "arm".to_string()
        } else {
            table_column(field)
        }
    }

    pub fn build_columns(
        numeric: &[NumericFeature],
        categorical: &[CategoricalFeature],
    ) -> Vec<String> {
        let mut cols: Vec<String> = numeric.iter().map(|n| n.name.clone()).collect();
        for c in categorical {
            cols.extend(c.levels.iter().map(|l| format!("{}={}", c.name, l)));
        }
        cols
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }
}

/// Canonicalizes a categorical value: trimmed, matched case-insensitively against the canonical map; values
/// without a rule pass through trimmed.
pub fn canonical_level(canonical: &BTreeMap<String, String>, raw: &str) -> String {
    canonical_level_ref(canonical, raw).to_string()
}

/// [`canonical_level`] without copying: the map's level, or the trimmed value itself. Text that is already
/// lower case (most of it) is looked up as it is, without a lower-cased copy.
pub fn canonical_level_ref<'a>(canonical: &'a BTreeMap<String, String>, raw: &'a str) -> &'a str {
    let t = raw.trim();
    if canonical.is_empty() {
        return t;
    }
    let found = if t.is_ascii() && !t.bytes().any(|b| b.is_ascii_uppercase()) {
        canonical.get(t)
    } else {
        canonical.get(&t.to_lowercase())
    };
    found.map_or(t, String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed lookup matches case-insensitively as the lower-cased copy does, Unicode included, and
    /// passes unknown text through trimmed.
    #[test]
    fn canonical_levels_match_whatever_the_case() {
        let map: BTreeMap<String, String> = [
            ("f".to_string(), "F".to_string()),
            ("féminin".into(), "F".into()),
            ("m".into(), "M".into()),
        ]
        .into();
        for (raw, want) in [
            (" f ", "F"),
            ("F", "F"),
            ("FÉMININ", "F"),
            ("Féminin", "F"),
            ("m", "M"),
            (" other ", "other"),
            ("Other", "Other"),
        ] {
            assert_eq!(canonical_level_ref(&map, raw), want, "{raw:?}");
            assert_eq!(canonical_level(&map, raw), want, "{raw:?}");
        }
        assert_eq!(canonical_level_ref(&BTreeMap::new(), " X "), "X");
    }
}
