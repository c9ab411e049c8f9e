//! The trialflow side of `cargo xtask bench train` (the peers are xtask/bench/train_peers.py): the real
//! training function (`trialflow_train::fit`) on arrays shared with the peers through plain float32 files.
//!
//!   trialflow-train-bench gen --rows N --dim D --out DIR         synthetic x.f32 / y.f32 (seeded), and the
//!                                                                same rows' y_value.f32 (a continuous target)
//!                                                                and y_survival.f32 (time, event per row)
//!   trialflow-train-bench export --lake URL --out DIR            the sample trial's encoded splits
//!   trialflow-train-bench throughput --data DIR --dim D --model M --batch B --rows N [--endpoint E] [--cuda]
//!   trialflow-train-bench auc --data DIR --model M --batch B --epochs E
//!   trialflow-train-bench cindex --data DIR --dim D --model M --batch B --epochs E   time-to-event: Harrell's C
//!                                                                on held-out synthetic rows
//!   trialflow-train-bench kmeans --data DIR --dim D --k K --rows N --seed S   k-means (k-means++ seeding, one
//!                                                                run) of the first N synthetic rows: seconds,
//!                                                                inertia, iterations
//!   trialflow-train-bench gpu-check --data DIR [--cpu-only] [--json FILE]   (the bundle of `cargo xtask gpu-check`)
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
        restore_best: true,
        device: trialflow_core::config::DeviceChoice::Cpu,
        threshold: 0.5,
        bootstrap_resamples: 0,
        slices: vec![],
        monitor: Monitor::ValLoss,
        pos_weight: None,
        importance_repeats: 0,
        max_in_memory_mib: 1 << 20,
        stream_block_rows: 262_144,
        population: None,
        endpoint: trialflow_core::config::Endpoint::Binary,
        target: None,
        loss: trialflow_core::config::RegressionLoss::Mse,
        huber_delta: 1.0,
        ties: trialflow_core::config::CoxTies::Efron,
        horizons: vec![],
    }
}

/// The binary objective the bench trains (no positive weight).
const BCE: trialflow_train::fused::Objective =
    trialflow_train::fused::Objective::Bce { pos_weight: 1.0 };

/// The synthetic rows' other endpoints from their features (seeded): a continuous value (a linear predictor
/// plus noise) and a time to event (exponential, hazard 0.1·exp(linear predictor), censored by an independent
/// exponential time, about a third censored), as `[time, event]` per row.
fn synthetic_endpoints(x: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(20_261_205);
    let mut value = Vec::with_capacity(x.len() / dim);
    let mut survival = Vec::with_capacity(2 * x.len() / dim);
    for row in x.chunks_exact(dim) {
        let lp: f32 = row.iter().take(8).map(|v| 0.4 * v).sum::<f32>() + 0.3 * row[0] * row[1];
        value.push(lp + rng.random_range(-1.0f32..1.0));
        let u: f32 = rng.random_range(1e-7..1.0);
        let event_time = -u.ln() / (0.1 * lp.exp());
        let c: f32 = rng.random_range(1e-7..1.0);
        let censor_time = -c.ln() / 0.05;
        survival.push(event_time.min(censor_time));
        survival.push(f32::from(event_time <= censor_time));
    }
    (value, survival)
}

/// The objective of an endpoint on targets `y` (a continuous one standardized by their moments).
fn objective(endpoint: &str, y: &[f32]) -> Result<trialflow_train::fused::Objective> {
    use trialflow_train::fused::Objective;
    Ok(match endpoint {
        "binary" => BCE,
        "continuous" => {
            let n = y.len().max(1) as f32;
            let mean = y.iter().sum::<f32>() / n;
            let sd = (y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
            Objective::Squared { mean, sd }
        }
        "time_to_event" => Objective::Cox { efron: true },
        other => bail!("unknown endpoint {other}: binary, continuous or time_to_event"),
    })
}

/// The targets file of an endpoint in a `gen` folder.
fn targets_file(data: &Path, endpoint: &str) -> PathBuf {
    data.join(match endpoint {
        "continuous" => "y_value.f32",
        "time_to_event" => "y_survival.f32",
        _ => "y.f32",
    })
}

/// Standard normal features and a nonlinear logistic outcome (seeded): the throughput data.
fn synthetic(rows: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
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
            + 0.5 * row[0] * row.get(1).copied().unwrap_or(0.0)
            - 1.0;
        y.push(f32::from(rng.random::<f32>() < 1.0 / (1.0 + (-z).exp())));
        x.extend(row);
    }
    (x, y)
}

fn device(cuda: bool) -> Result<Device> {
    if cuda {
        Device::new_cuda(0).map_err(|e| anyhow::anyhow!("no usable GPU: {e}"))
    } else {
        Ok(Device::Cpu)
    }
}

/// Seconds for one training epoch over the first `rows` rows, after a short warm-up.
#[allow(clippy::too_many_arguments)] // the bench's knobs
fn epoch_seconds(
    arch: &ModelConfig,
    objective: trialflow_train::fused::Objective,
    x: &[f32],
    y: &[f32],
    dim: usize,
    batch: usize,
    rows: usize,
    dev: &Device,
) -> Result<f64> {
    let w = objective.width();
    let val_rows = 1024.min(rows);
    let val = Arrays {
        x: &x[..val_rows * dim],
        y: &y[..val_rows * w],
        rows: val_rows,
    };
    let warm = (batch * 20).min(rows);
    let warm_arrays = Arrays {
        x: &x[..warm * dim],
        y: &y[..warm * w],
        rows: warm,
    };
    fit(
        arch,
        &training(batch, 1),
        objective,
        warm_arrays,
        val,
        dim,
        42,
        dev,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let train = Arrays {
        x: &x[..rows * dim],
        y: &y[..rows * w],
        rows,
    };
    let start = Instant::now();
    fit(
        arch,
        &training(batch, 1),
        objective,
        train,
        val,
        dim,
        42,
        dev,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(start.elapsed().as_secs_f64())
}

/// Harrell's C on held-out synthetic rows of a time-to-event network trained for `epochs` (no early
/// stopping): rows 0–100k train, 100k–110k validation, 110k–115k test.
fn held_out_cindex(
    data: &Path,
    dim: usize,
    model: &str,
    batch: usize,
    epochs: usize,
) -> Result<f64> {
    let x = read_f32(&data.join("x.f32"))?;
    let y = read_f32(&data.join("y_survival.f32"))?;
    let part = |from: usize, to: usize| Arrays {
        x: &x[from * dim..to * dim],
        y: &y[from * 2..to * 2],
        rows: to - from,
    };
    let arch = architecture(model)?;
    let t = training(batch, epochs);
    let f = fit(
        &arch,
        &t,
        trialflow_train::fused::Objective::Cox { efron: true },
        part(0, 100_000),
        part(100_000, 110_000),
        dim,
        42,
        &Device::Cpu,
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let test = part(110_000, 115_000);
    let risk = trialflow_model::DenseCpu::from_network(&f.network)?.outputs(test.x);
    let (time, event) = trialflow_model::survival::observed(test.y);
    trialflow_model::survival::harrell_c(
        trialflow_model::survival::Observed {
            time: &time,
            event: &event,
        },
        &risk,
    )
    .context("no comparable pair")
}

struct SampleSplits {
    dim: usize,
    x: [Vec<f32>; 3],
    y: [Vec<f32>; 3],
}

impl SampleSplits {
    fn load(data: &Path) -> Result<Self> {
        let dim: usize = std::fs::read_to_string(data.join("dim"))
            .with_context(|| data.join("dim").display().to_string())?
            .trim()
            .parse()
            .context("dim: expected a number")?;
        let mut x: [Vec<f32>; 3] = Default::default();
        let mut y: [Vec<f32>; 3] = Default::default();
        for (i, s) in ["train", "val", "test"].iter().enumerate() {
            x[i] = read_f32(&data.join(format!("x_{s}.f32")))?;
            y[i] = read_f32(&data.join(format!("y_{s}.f32")))?;
        }
        Ok(Self { dim, x, y })
    }

    fn arrays(&self, i: usize) -> Arrays<'_> {
        Arrays {
            x: &self.x[i],
            y: &self.y[i],
            rows: self.y[i].len(),
        }
    }
}

/// Test metrics of model_2 trained on one device (20 epochs, batch 64, seed 42), and the network.
fn sample_run(
    s: &SampleSplits,
    dev: &Device,
) -> Result<(trialflow_train::metrics::Metrics, trialflow_model::Network)> {
    let arch = architecture("model_2")?;
    let f = fit(
        &arch,
        &training(64, 20),
        BCE,
        s.arrays(0),
        s.arrays(1),
        s.dim,
        42,
        dev,
    )
    .map_err(|e| anyhow::anyhow!("training on {dev:?}: {e:?}"))?;
    let p = trialflow_model::DenseCpu::from_network(&f.network)?.predict_proba(&s.x[2]);
    Ok((trialflow_train::metrics::compute(&s.y[2], &p), f.network))
}

/// On a GPU machine: model_2 trained on the CPU and on the GPU must reach the same test metrics (within
/// training noise: the GPU's reductions run in another order), the GPU forward pass must equal the CPU one on
/// the same weights, and throughput is measured on both.
/// A failure when `gpu` and `cpu` are more than `tol` apart, or either is not a finite number (a NaN compares
/// false with everything, so a plain `> tol` test would let it pass).
fn apart(name: &str, gpu: f64, cpu: f64, tol: f64) -> Option<String> {
    let close = gpu.is_finite() && cpu.is_finite() && (gpu - cpu).abs() <= tol;
    (!close).then(|| {
        format!("{name}: GPU {gpu:.4} vs CPU {cpu:.4} (more than {tol} apart, or not a number)")
    })
}

fn gpu_check(args: &[String]) -> Result<()> {
    let samples = SampleSplits::load(Path::new(&arg(args, "--data")?))?;
    let cpu_only = args.iter().any(|a| a == "--cpu-only");
    let mut report = serde_json::Map::new();
    let mut failures = Vec::new();
    let (cpu_metrics, cpu_net) = sample_run(&samples, &Device::Cpu)?;
    let auc = |m: &trialflow_train::metrics::Metrics| m.roc_auc.unwrap_or(f64::NAN);
    // the CPU half is the reference: a NaN there must fail too, not make every comparison pass
    for (name, v) in [
        ("CPU test AUC", auc(&cpu_metrics)),
        ("CPU test Brier", cpu_metrics.brier),
        ("CPU test log loss", cpu_metrics.log_loss),
    ] {
        if !v.is_finite() {
            failures.push(format!("{name} is {v}"));
        }
    }
    println!(
        "{:<34} {:>10} {:>10}",
        "sample trial, model_2", "CPU", "GPU"
    );
    let mut gpu = None;
    if !cpu_only {
        let cuda = device(true)?;
        let (gpu_metrics, _) = sample_run(&samples, &cuda)?;
        // the forward pass alone: the CPU-trained weights on the GPU
        let on_gpu = trialflow_model::load_safetensors(
            &cpu_net.config,
            &cpu_net.to_safetensors().map_err(anyhow::Error::msg)?,
            &cuda,
        )
        .map_err(anyhow::Error::msg)?;
        let rows = samples.y[2].len();
        let p_gpu = on_gpu.predict_proba(&samples.x[2], rows, &cuda)?;
        let p_cpu = trialflow_model::DenseCpu::from_network(&cpu_net)?.predict_proba(&samples.x[2]);
        let forward = p_gpu
            .iter()
            .zip(&p_cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        for (name, g, c) in [
            ("test AUC", auc(&gpu_metrics), auc(&cpu_metrics)),
            ("test Brier", gpu_metrics.brier, cpu_metrics.brier),
        ] {
            if let Some(f) = apart(name, g, c, 0.01) {
                failures.push(f);
            }
        }
        if forward.is_nan() || forward > 1e-4 {
            failures.push(format!(
                "forward pass: GPU and CPU probabilities differ by {forward:e} (> 1e-4)"
            ));
        }
        report.insert("forward_max_abs_diff".into(), f64::from(forward).into());
        report.insert("gpu_test".into(), serde_json::to_value(&gpu_metrics)?);
        gpu = Some((gpu_metrics, forward, cuda));
    }
    report.insert("cpu_test".into(), serde_json::to_value(&cpu_metrics)?);
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let g = gpu.as_ref().map(|g| &g.0);
    for (name, c, gv) in [
        ("test ROC AUC", auc(&cpu_metrics), g.map(auc)),
        ("test Brier", cpu_metrics.brier, g.map(|m| m.brier)),
        ("test log loss", cpu_metrics.log_loss, g.map(|m| m.log_loss)),
    ] {
        println!("{name:<34} {:>10} {:>10}", cell(Some(c)), cell(gv));
    }
    if let Some((_, forward, _)) = &gpu {
        println!("{:<34} {:>21e}", "forward |Δp| max (same weights)", forward);
    }
    // throughput on 1M × 20 synthetic rows, as `cargo xtask bench train` measures it
    const ROWS: usize = 1_000_000;
    const DIM: usize = 20;
    let (x, y) = synthetic(ROWS, DIM);
    println!(
        "\n{:<10} {:>6} {:>14} {:>14} {:>8}",
        "model", "batch", "CPU samples/s", "GPU samples/s", "GPU/CPU"
    );
    let mut table = Vec::new();
    for model in ["model_1", "model_2"] {
        let arch = architecture(model)?;
        for batch in [32usize, 256, 4096] {
            let rows = (batch * 1500).clamp(65_536, ROWS);
            let cpu =
                rows as f64 / epoch_seconds(&arch, BCE, &x, &y, DIM, batch, rows, &Device::Cpu)?;
            let on_gpu = match &gpu {
                Some((_, _, cuda)) => {
                    Some(rows as f64 / epoch_seconds(&arch, BCE, &x, &y, DIM, batch, rows, cuda)?)
                }
                None => None,
            };
            println!(
                "{model:<10} {batch:>6} {cpu:>14.0} {:>14} {:>8}",
                on_gpu.map_or("-".into(), |v| format!("{v:.0}")),
                on_gpu.map_or("-".into(), |v| format!("{:.2}", v / cpu))
            );
            table.push(serde_json::json!({
                "model": model, "batch": batch, "rows": rows,
                "cpu_samples_per_s": cpu, "gpu_samples_per_s": on_gpu,
            }));
        }
    }
    report.insert("throughput".into(), table.into());
    report.insert("failures".into(), failures.clone().into());
    if let Ok(path) = arg(args, "--json") {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?).with_context(|| path.clone())?;
    }
    if !failures.is_empty() {
        bail!("GPU check failed:\n  {}", failures.join("\n  "));
    }
    println!(
        "\n{}",
        if cpu_only {
            "CPU half passed (GPU skipped: --cpu-only)"
        } else {
            "GPU check passed"
        }
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => {
            let (rows, dim) = (num(&args, "--rows")?, num(&args, "--dim")?);
            let out = PathBuf::from(arg(&args, "--out")?);
            std::fs::create_dir_all(&out)?;
            let (x, y) = synthetic(rows, dim);
            let (value, survival) = synthetic_endpoints(&x, dim);
            write_f32(&out.join("x.f32"), &x)?;
            write_f32(&out.join("y.f32"), &y)?;
            write_f32(&out.join("y_value.f32"), &value)?;
            write_f32(&out.join("y_survival.f32"), &survival)?;
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
            let endpoint = arg(&args, "--endpoint").unwrap_or_else(|_| "binary".into());
            let x = read_f32(&data.join("x.f32"))?;
            let y = read_f32(&targets_file(&data, &endpoint))?;
            let objective = objective(&endpoint, &y)?;
            let rows = rows.min(y.len() / objective.width());
            let arch = architecture(&arg(&args, "--model")?)?;
            let dev = device(args.iter().any(|a| a == "--cuda"))?;
            let secs = epoch_seconds(&arch, objective, &x, &y, dim, batch, rows, &dev)?;
            println!(
                "{{\"samples_per_s\": {:.1}, \"seconds\": {secs:.3}, \"rows\": {rows}}}",
                rows as f64 / secs
            );
        }
        Some("gpu-check") => gpu_check(&args)?,
        Some("kmeans") => {
            let data = PathBuf::from(arg(&args, "--data")?);
            let (dim, k, rows) = (
                num(&args, "--dim")?,
                num(&args, "--k")?,
                num(&args, "--rows")?,
            );
            let x = read_f32(&data.join("x.f32"))?;
            let rows = rows.min(x.len() / dim);
            let start = Instant::now();
            let fit = trialflow_train::phenotypes::kmeans(
                trialflow_train::phenotypes::Points {
                    x: &[],
                    x32: &x[..rows * dim],
                    d: dim,
                },
                k,
                num(&args, "--seed")? as u64,
                1,
            );
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{{\"seconds\": {secs:.3}, \"inertia\": {:.3}, \"rows\": {rows}, \"iterations\": {}}}",
                fit.inertia, fit.iterations
            );
        }
        Some("cindex") => {
            let data = PathBuf::from(arg(&args, "--data")?);
            let c = held_out_cindex(
                &data,
                num(&args, "--dim")?,
                &arg(&args, "--model")?,
                num(&args, "--batch")?,
                num(&args, "--epochs")?,
            )?;
            println!("{{\"c_index\": {c:.6}}}");
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
            // the peers keep the last epoch's weights: so does this run, or it would be measured on the best
            let mut t = training(num(&args, "--batch")?, num(&args, "--epochs")?);
            t.restore_best = false;
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
            let f = fit(&arch, &t, BCE, train, val, dim, 42, &Device::Cpu)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let dense = trialflow_model::DenseCpu::from_network(&f.network)?;
            let auc = trialflow_train::metrics::roc_auc(&ys, &dense.predict_proba(&xs));
            println!("{{\"test_auc\": {auc:.6}, \"epochs\": {}}}", f.epochs_run);
        }
        _ => bail!(
            "usage: trialflow-train-bench gen|export|throughput|auc|gpu-check … (see the source)"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::apart;

    #[test]
    fn a_nan_metric_fails_the_gpu_check() {
        assert!(apart("auc", 0.80, 0.805, 0.01).is_none());
        assert!(apart("auc", 0.80, 0.82, 0.01).is_some());
        assert!(apart("auc", f64::NAN, 0.80, 0.01).is_some());
        assert!(apart("auc", 0.80, f64::NAN, 0.01).is_some());
        assert!(apart("brier", f64::INFINITY, 0.2, 0.01).is_some());
    }
}
