//! Training and evaluation with candle: the training loop (Adam, binary cross-entropy on logits, early stopping
//! with best-epoch restore, seeded), test-split metrics, candidate artifacts under `candidates/<model>/`, and
//! the leaderboard of all candidates (`candidates/evaluation.json`).
//!
//! Invariants: reads the processed Parquet with arrow/parquet (no DataFusion); transforms records only through
//! `trialflow_model::encode`, the code serving uses.

pub mod metrics;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use trialflow_core::config::{Config, DeviceChoice};
use trialflow_core::features::FeatureSpec;
use trialflow_core::fingerprint::{Fingerprinter, sha256_hex};
use trialflow_core::lake;
use trialflow_core::table::read_parquet_prefix;
use trialflow_core::{Error, Result, Storage};
use trialflow_model::{ModelCard, Network, encode_batches};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub model: String,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub train_rows: usize,
    pub val_rows: usize,
    pub test_rows: usize,
    pub metrics: metrics::Metrics,
    /// Test metrics within each level of the slice columns (arm, site).
    #[serde(default)]
    pub slices: Vec<metrics::Slice>,
}

struct Split {
    x: Vec<f32>,
    y: Vec<f32>,
    rows: usize,
    /// Slice columns (`arm`, `site`) per row, for sliced metrics.
    slices: Vec<(String, Vec<Option<String>>)>,
    /// Pseudonymized subject ids, in row order.
    ids: Vec<Option<String>>,
}

/// Columns the test metrics are always sliced by, when the table has them.
const SLICE_COLUMNS: [&str; 2] = ["arm", "site"];

async fn load_split(
    lake: &Storage,
    spec: &FeatureSpec,
    split: &str,
    extra_slices: &[String],
) -> Result<Split> {
    let prefix = format!("{}split={split}/", lake::FEATURES);
    let batches = read_parquet_prefix(lake, &prefix).await?;
    let (x, rows) =
        encode_batches(spec, &batches, &|name| spec.table_column(name)).map_err(|e| {
            Error::bad_data(
                lake.display(&prefix),
                format!("cannot encode features: {e}"),
            )
        })?;
    let mut y = Vec::with_capacity(rows);
    for b in &batches {
        let col = b
            .column_by_name("outcome")
            .ok_or_else(|| Error::bad_data(lake.display(&prefix), "column `outcome` is missing"))?;
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Float32).map_err(|e| {
            Error::bad_data(lake.display(&prefix), format!("column `outcome`: {e}"))
        })?;
        let col = col
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .ok_or_else(|| Error::Internal("cast".into()))?;
        y.extend(col.iter().map(|v| v.unwrap_or(0.0)));
    }
    let has = |c: &str| {
        batches
            .first()
            .is_some_and(|b| b.column_by_name(c).is_some())
    };
    if let Some(missing) = extra_slices.iter().find(|c| !batches.is_empty() && !has(c)) {
        return Err(Error::bad_data(
            lake.display(&prefix),
            format!("slice column `{missing}` (training.slices) is not in the processed table"),
        ));
    }
    let slices = SLICE_COLUMNS
        .iter()
        .copied()
        .filter(|c| has(c))
        .chain(extra_slices.iter().map(String::as_str))
        .map(|c| Ok((c.to_string(), trialflow_core::table::strings(&batches, c)?)))
        .collect::<Result<_>>()?;
    let ids = if batches
        .first()
        .is_some_and(|b| b.column_by_name("subject_id").is_some())
    {
        trialflow_core::table::strings(&batches, "subject_id")?
    } else {
        vec![None; rows]
    };
    Ok(Split {
        x,
        y,
        rows,
        slices,
        ids,
    })
}

fn device(cfg: &Config) -> Result<Device> {
    match cfg.training.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if cfg!(feature = "cuda") => {
            Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu))
        }
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if cfg!(feature = "cuda") => {
            Device::new_cuda(0).map_err(|e| Error::infra("cuda:0", format!("no usable GPU: {e}")))
        }
        DeviceChoice::Cuda => Err(Error::config(
            &cfg.source_file,
            "training.device",
            "`cuda` needs a binary built with `--features cuda`; this one is CPU-only",
        )),
    }
}

fn ce(e: candle_core::Error) -> Error {
    Error::Internal(format!("candle: {e}"))
}

/// Numerically stable mean binary cross-entropy on logits: max(z,0) - z*y + log(1 + exp(-|z|)).
fn bce_with_logits(z: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let pos = z.relu()?;
    let soft = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (pos - z.mul(y)?)?.add(&soft)?.mean_all()
}

fn dropout_masks(
    net: &Network,
    rows: usize,
    rng: &mut StdRng,
    device: &Device,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    net.config
        .hidden
        .iter()
        .enumerate()
        .map(|(i, &width)| {
            let p = net.config.dropout.get(i).copied().unwrap_or(0.0);
            if p <= 0.0 {
                return Ok(None);
            }
            let keep = 1.0 / (1.0 - p);
            let m: Vec<f32> = (0..rows * width)
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect();
            Tensor::from_vec(m, (rows, width), device).map(Some)
        })
        .collect()
}

/// Trains `model` from `config.models`, writes `candidates/<model>/{model.safetensors, model.json,
/// metrics.json}`. Deterministic for a seed on the CPU.
pub async fn train(
    cfg: &Config,
    lake: &Storage,
    model: &str,
    code_version: &str,
) -> Result<TrainReport> {
    let arch = cfg
        .models
        .get(model)
        .ok_or_else(|| Error::config(&cfg.source_file, format!("models.{model}"), "no such model"))?
        .clone();
    let spec: FeatureSpec = lake.get_json(lake::FEATURE_SPEC).await?;
    let slice_cols = &cfg.training.slices;
    let train = load_split(lake, &spec, "train", &[]).await?;
    let val = load_split(lake, &spec, "val", &[]).await?;
    let test = load_split(lake, &spec, "test", slice_cols).await?;
    if train.rows == 0 || test.rows == 0 {
        return Err(Error::bad_data(
            lake.display(lake::FEATURES),
            "the train or test split is empty",
        ));
    }
    let t = cfg.training.clone();
    let dev = device(cfg)?;
    let dim = spec.width();
    let seed = t.seed
        ^ u64::from_le_bytes(
            sha256_hex(model.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
    let (net, epochs_run, best_epoch, best_val) =
        tokio::task::block_in_place(|| -> candle_core::Result<_> {
            let net = Network::init(&arch, dim, seed, &dev)?;
            let mut opt = AdamW::new(
                net.vars(),
                ParamsAdamW {
                    lr: t.learning_rate,
                    weight_decay: t.weight_decay,
                    ..Default::default()
                },
            )?;
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
            let xs = Tensor::from_slice(&train.x, (train.rows, dim), &dev)?;
            let ys = Tensor::from_slice(&train.y, train.rows, &dev)?;
            let (vx, vy) = if val.rows > 0 {
                (
                    Tensor::from_slice(&val.x, (val.rows, dim), &dev)?,
                    Tensor::from_slice(&val.y, val.rows, &dev)?,
                )
            } else {
                (xs.clone(), ys.clone()) // no validation split configured: stop on training loss
            };
            let mut order: Vec<u32> = (0..train.rows as u32).collect();
            let mut best = (f64::INFINITY, 0usize, net.snapshot()?);
            let mut epochs_run = 0;
            for epoch in 1..=t.epochs {
                epochs_run = epoch;
                order.shuffle(&mut rng);
                for chunk in order.chunks(t.batch_size) {
                    let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
                    let bx = xs.index_select(&idx, 0)?;
                    let by = ys.index_select(&idx, 0)?;
                    let masks = dropout_masks(&net, chunk.len(), &mut rng, &dev)?;
                    let loss = bce_with_logits(&net.logits(&bx, Some(&masks))?, &by)?;
                    opt.backward_step(&loss)?;
                }
                let val_loss =
                    f64::from(bce_with_logits(&net.logits(&vx, None)?, &vy)?.to_scalar::<f32>()?);
                if val_loss < best.0 - 1e-6 {
                    best = (val_loss, epoch, net.snapshot()?);
                } else if epoch - best.1 >= t.patience {
                    break;
                }
            }
            net.restore(&best.2)?;
            Ok((net, epochs_run, best.1, best.0))
        })
        .map_err(ce)?;

    let p_test = net.predict_proba(&test.x, test.rows, &dev).map_err(ce)?;
    let how = evaluation(&t);
    let metrics = metrics::Metrics::evaluate(&test.y, &p_test, &how);
    let slices = metrics::slices(&test.slices, &test.y, &p_test, &how);
    let mut data_fp = Fingerprinter::new();
    data_fp
        .part("train", &bytes_of(&train.x))
        .part("y", &bytes_of(&train.y));
    let mut cfg_fp = Fingerprinter::new();
    cfg_fp
        .part(
            "model",
            serde_json::to_string(&arch).unwrap_or_default().as_bytes(),
        )
        .part(
            "training",
            serde_json::to_string(&t).unwrap_or_default().as_bytes(),
        );
    let card = ModelCard {
        name: model.to_string(),
        architecture: arch,
        input_dim: dim,
        feature_spec: spec,
        metrics: serde_json::to_value(&metrics).unwrap_or_default(),
        data_fingerprint: data_fp.finish(),
        config_fingerprint: cfg_fp.finish(),
        code_version: code_version.to_string(),
        seed,
    };
    let dir = lake::candidate_dir(model);
    let weights = net.to_safetensors().map_err(Error::Internal)?;
    lake.put(&format!("{dir}model.safetensors"), weights)
        .await?;
    lake.put_json(&format!("{dir}model.json"), &card).await?;
    write_test_predictions(lake, &format!("{dir}{TEST_PREDICTIONS}"), &test, &p_test).await?;
    let report = TrainReport {
        model: model.to_string(),
        epochs_run,
        best_epoch,
        best_val_loss: best_val,
        train_rows: train.rows,
        val_rows: val.rows,
        test_rows: test.rows,
        metrics,
        slices,
    };
    lake.put_json(&format!("{dir}metrics.json"), &report)
        .await?;
    Ok(report)
}

/// Scores a saved model on the lake's current test split, encoded with the model's own feature spec:
/// `(outcomes, probabilities)`. The quality gate compares the served version with a candidate this way.
pub async fn score_test_split(
    lake: &Storage,
    card: &trialflow_model::ModelCard,
    weights: &[u8],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let test = load_split(lake, &card.feature_spec, "test", &[]).await?;
    let net = trialflow_model::load_safetensors(&card.architecture, weights, &Device::Cpu)
        .map_err(|e| Error::bad_data(format!("model `{}`", card.name), e))?;
    let dense = trialflow_model::DenseCpu::from_network(&net).map_err(ce)?;
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
    let p = dense.predict_proba(&test.x);
    Ok((test.y, p))
}

/// The configured threshold and bootstrap, seeded by the training seed.
pub fn evaluation(t: &trialflow_core::config::TrainingConfig) -> metrics::Evaluation {
    metrics::Evaluation {
        threshold: t.threshold,
        resamples: t.bootstrap_resamples,
        seed: t.seed,
    }
}

/// The test split's probabilities as trained, keyed by pseudonymized subject id in split row order: the
/// reference that serving and batch scoring must reproduce.
pub const TEST_PREDICTIONS: &str = "test_predictions.parquet";

async fn write_test_predictions(lake: &Storage, rel: &str, test: &Split, p: &[f32]) -> Result<()> {
    use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("outcome", DataType::Float32, false),
        Field::new("probability", DataType::Float32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(test.ids.clone())) as ArrayRef,
            Arc::new(Float32Array::from(test.y.clone())),
            Arc::new(Float32Array::from(p.to_vec())),
        ],
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    trialflow_core::table::write_parquet(lake, rel, schema, &[batch]).await
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Candidates, best test ROC AUC first.
    pub leaderboard: Vec<TrainReport>,
}

/// Collects the named candidates' metrics into `candidates/evaluation.json`.
pub async fn evaluate(lake: &Storage, models: &[String]) -> Result<Evaluation> {
    let mut leaderboard = Vec::new();
    for name in models {
        let r: TrainReport = lake
            .get_json(&format!("{}metrics.json", lake::candidate_dir(name)))
            .await?;
        leaderboard.push(r);
    }
    leaderboard.sort_by(|a, b| {
        let auc = |r: &TrainReport| r.metrics.roc_auc.unwrap_or(f64::NEG_INFINITY);
        auc(b).total_cmp(&auc(a)).then(a.model.cmp(&b.model))
    });
    let ev = Evaluation { leaderboard };
    lake.put_json(lake::EVALUATION, &ev).await?;
    Ok(ev)
}
