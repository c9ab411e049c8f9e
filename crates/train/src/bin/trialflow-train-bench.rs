//! The trialflow side of `cargo xtask bench train` (the peers are xtask/bench/train_peers.py): the real
//! training function (`trialflow_train::fit`) on arrays shared with the peers through plain float32 files.
//!
//!   trialflow-train-bench gen --rows N --dim D --out DIR         synthetic x.f32 / y.f32 (seeded)
//!   trialflow-train-bench export --lake URL --out DIR            the sample trial's encoded splits
//!   trialflow-train-bench throughput --data DIR --dim D --model M --batch B --rows N
//!   trialflow-train-bench auc --data DIR --model M --batch B --epochs E
//!
//! Each command prints one JSON line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trialflow_core::config::{Activation, ModelConfig, Monitor, TrainingConfig};
use trialflow_train::{Arrays, fit};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], flag: &str) -> Result<String> {
    let i = args
        .iter()
        .position(|a| a == flag)
        .with_context(|| format!("{flag} is required"))?;
    args.get(i + 1)
        .cloned()
        .with_context(|| format!("{flag} needs a value"))
}

fn num(args: &[String], flag: &str) -> Result<usize> {
    arg(args, flag)?
        .parse()
        .with_context(|| format!("{flag}: expected a number"))
}

fn write_f32(path: &Path, v: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| path.display().to_string())
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The brief's two networks (and the logistic baseline).
fn architecture(model: &str) -> Result<ModelConfig> {
    let (hidden, dropout) = match model {
        "model_1" => (vec![64], vec![]),
        "model_2" => (vec![128, 64], vec![0.5, 0.0]),
        "baseline" => (vec![], vec![]),
        other => bail!("unknown model {other}"),
    };
    Ok(ModelConfig {
        hidden,
        dropout,
        activation: Activation::Relu,
    })
}

fn training(batch: usize, epochs: usize) -> TrainingConfig {
    TrainingConfig {
        seed: 42,
        epochs,
        batch_size: batch,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        patience: epochs,
        device: trialflow_core::config::DeviceChoice::Cpu,
        threshold: 0.5,
        bootstrap_resamples: 0,
        slices: vec![],
        monitor: Monitor::ValLoss,
        pos_weight: None,
        importance_repeats: 0,
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => {
            let (rows, dim) = (num(&args, "--rows")?, num(&args, "--dim")?);
            let out = PathBuf::from(arg(&args, "--out")?);
            std::fs::create_dir_all(&out)?;
            let mut rng = StdRng::seed_from_u64(20_261_126);
            let coef: Vec<f32> = (0..dim).map(|i| if i < 8 { 0.4 } else { 0.05 }).collect();
            let mut x = Vec::with_capacity(rows * dim);
            let mut y = Vec::with_capacity(rows);
            for _ in 0..rows {
                let row: Vec<f32> = (0..dim)
                    .map(|_| {
                        // Box–Muller: standard normal features
                        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
                        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                    })
                    .collect();
                let z: f32 = row.iter().zip(&coef).map(|(a, b)| a * b).sum::<f32>()
                    + 0.5 * row[0] * row[1]
                    - 1.0;
                y.push(f32::from(rng.random::<f32>() < 1.0 / (1.0 + (-z).exp())));
                x.extend(row);
            }
            write_f32(&out.join("x.f32"), &x)?;
            write_f32(&out.join("y.f32"), &y)?;
            println!("{{\"rows\": {rows}, \"dim\": {dim}}}");
        }
        Some("export") => {
            let lake = trialflow_core::Storage::open(&arg(&args, "--lake")?)?;
            let out = PathBuf::from(arg(&args, "--out")?);
            std::fs::create_dir_all(&out)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let dim = rt.block_on(async {
                let spec: trialflow_core::features::FeatureSpec =
                    lake.get_json(trialflow_core::lake::FEATURE_SPEC).await?;
                for split in ["train", "val", "test"] {
                    let (x, y, _) = trialflow_train::load_arrays(&lake, &spec, split).await?;
                    write_f32(&out.join(format!("x_{split}.f32")), &x)?;
                    write_f32(&out.join(format!("y_{split}.f32")), &y)?;
                }
                Ok::<_, anyhow::Error>(spec.width())
            })?;
            std::fs::write(out.join("dim"), dim.to_string())?;
            println!("{{\"dim\": {dim}}}");
        }
        Some("throughput") => {
            let data = PathBuf::from(arg(&args, "--data")?);
            let (batch, rows) = (num(&args, "--batch")?, num(&args, "--rows")?);
            let dim = num(&args, "--dim")?;
            let x = read_f32(&data.join("x.f32"))?;
            let y = read_f32(&data.join("y.f32"))?;
            let rows = rows.min(y.len());
            let arch = architecture(&arg(&args, "--model")?)?;
            let val_rows = 1024.min(rows);
            let val = Arrays {
                x: &x[..val_rows * dim],
                y: &y[..val_rows],
                rows: val_rows,
            };
            // a short warm-up, then one epoch over `rows` rows
            let warm = (batch * 20).min(rows);
            let warm_arrays = Arrays {
                x: &x[..warm * dim],
                y: &y[..warm],
                rows: warm,
            };
            fit(
                &arch,
                &training(batch, 1),
                warm_arrays,
                val,
                dim,
                42,
                &Device::Cpu,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let train = Arrays {
                x: &x[..rows * dim],
                y: &y[..rows],
                rows,
            };
            let start = Instant::now();
            fit(
                &arch,
                &training(batch, 1),
                train,
                val,
                dim,
                42,
                &Device::Cpu,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{{\"samples_per_s\": {:.1}, \"seconds\": {secs:.3}, \"rows\": {rows}}}",
                rows as f64 / secs
            );
        }
        Some("auc") => {
            let data = PathBuf::from(arg(&args, "--data")?);
            let dim: usize = std::fs::read_to_string(data.join("dim"))?.trim().parse()?;
            let load = |s: &str| -> Result<(Vec<f32>, Vec<f32>)> {
                Ok((
                    read_f32(&data.join(format!("x_{s}.f32")))?,
                    read_f32(&data.join(format!("y_{s}.f32")))?,
                ))
            };
            let (xt, yt) = load("train")?;
            let (xv, yv) = load("val")?;
            let (xs, ys) = load("test")?;
            let arch = architecture(&arg(&args, "--model")?)?;
            let t = training(num(&args, "--batch")?, num(&args, "--epochs")?);
            let train = Arrays {
                x: &xt,
                y: &yt,
                rows: yt.len(),
            };
            let val = Arrays {
                x: &xv,
                y: &yv,
                rows: yv.len(),
            };
            let f = fit(&arch, &t, train, val, dim, 42, &Device::Cpu)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let dense = trialflow_model::DenseCpu::from_network(&f.network)?;
            let auc = trialflow_train::metrics::roc_auc(&ys, &dense.predict_proba(&xs));
            println!("{{\"test_auc\": {auc:.6}, \"epochs\": {}}}", f.epochs_run);
        }
        _ => bail!("usage: trialflow-train-bench gen|export|throughput|auc … (see the source)"),
    }
    Ok(())
}
