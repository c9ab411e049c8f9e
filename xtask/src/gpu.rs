//! `cargo xtask gpu-check [--cpu-smoke] [--with-libs]`: the CUDA build and the bundle that checks it on a GPU machine.
//!
//! The build needs no GPU: the CUDA 13.0 toolkit comes from PyPI wheels (xtask/gpu/requirements-cuda.txt,
//! cached in target/py/cuda), and the driver library the binary links against is a stub made here from the
//! function names cudarc declares (every function returns an error; the real libcuda.so.1 comes with the driver
//! on the GPU machine). What is built is `trialflow-train-bench` with `--features cuda` (the training code
//! without DataFusion), in its own target folder (target/cuda) so the CPU build is never disturbed.
//!
//! The bundle, target/gpu-bundle (gzipped binary, run.sh, the sample trial's encoded splits), runs on a Linux x86-64
//! machine with an NVIDIA GPU, the driver and no Rust or network: `sh target/gpu-bundle/run.sh` trains model_2
//! on the CPU and on the GPU, compares their test metrics and forward passes, and prints throughput. The CUDA
//! runtime libraries (cuBLAS, cuRAND, cudart, nvrtc) are taken from `lib/` in the bundle when present, else from
//! the machine's Python `nvidia` wheels (PyTorch cu130 brings them); `--with-libs` copies them in (~700 MB), not
//! the default because cuBLAS alone is larger than what the lent machines accept. `--cpu-smoke` runs the bundle
//! here against the stub (CPU half only), which proves the binary starts and finds everything it needs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, status, venv};

/// H100 and H200 are compute capability 9.0; PTX built for it runs on later GPUs too.
const COMPUTE_CAP: &str = "90";
const CUDARC_CUDA_VERSION: &str = "13000";
const LIBS: [&str; 6] = [
    "cublas",
    "cublasLt",
    "curand",
    "nvrtc",
    "cudart",
    "nvJitLink",
];

pub fn gpu_check(args: &[String]) -> Result<()> {
    let cpu_smoke = args.iter().any(|a| a == "--cpu-smoke");
    let home = cuda_home()?;
    let bin = build(&home)?;
    let bundle = bundle(&bin)?;
    if args.iter().any(|a| a == "--with-libs") {
        copy_runtime_libs(&bin, &home, &bundle.join("lib"))?;
    }
    eprintln!(
        "xtask: bundle ready in {} ({:.1} MiB): run `sh {}/run.sh` on the GPU machine",
        bundle.display(),
        dir_size(&bundle)? as f64 / 1048576.0,
        bundle.display()
    );
    if cpu_smoke {
        let mut c = Command::new("sh");
        c.arg(bundle.join("run.sh")).arg("--cpu-only");
        c.env(
            "LD_LIBRARY_PATH",
            format!(
                "{}:{}",
                home.join("lib").display(),
                home.join("lib/stubs").display()
            ),
        );
        status(
            c,
            "the bundle here, CPU only, against the stub driver library",
        )?;
    }
    Ok(())
}

/// A CUDA_HOME for cudarc and candle-kernels: bin/ and include/ from the wheels, lib/ with the unversioned
/// library names the linker looks for, lib/stubs/libcuda.so.
fn cuda_home() -> Result<PathBuf> {
    let python = venv("cuda", &root().join("xtask/gpu/requirements-cuda.txt"))?;
    let out = Command::new(&python)
        .args([
            "-c",
            "import nvidia,os\nfor p in nvidia.__path__:\n  d=os.path.join(p,'cu13')\n  if os.path.isdir(os.path.join(d,'bin')): print(d); break",
        ])
        .output()
        .context("locating the nvidia wheels")?;
    let toolkit = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !toolkit.join("bin/nvcc").exists() {
        bail!(
            "nvcc not found under {} after installing xtask/gpu/requirements-cuda.txt",
            toolkit.display()
        );
    }
    let home = root().join("target/cuda-home");
    let lib = home.join("lib");
    std::fs::create_dir_all(lib.join("stubs"))?;
    for sub in ["bin", "include", "nvvm"] {
        let link = home.join(sub);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).ok();
        }
        if toolkit.join(sub).exists() {
            std::os::unix::fs::symlink(toolkit.join(sub), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    for name in LIBS {
        let versioned = std::fs::read_dir(toolkit.join("lib"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&format!("lib{name}.so.")))
            })
            .min_by_key(|p| p.as_os_str().len());
        let Some(versioned) = versioned else {
            continue; // nvJitLink ships only with some toolkit versions
        };
        for link in [
            lib.join(format!("lib{name}.so")),
            lib.join(versioned.file_name().context("library name")?),
        ] {
            std::fs::remove_file(&link).ok();
            std::os::unix::fs::symlink(&versioned, &link)?;
        }
    }
    stub_libcuda(&lib.join("stubs"))?;
    Ok(home)
}

/// libcuda.so (SONAME libcuda.so.1) defining every driver function cudarc declares, each returning
/// CUDA_ERROR_STUB_LIBRARY (34), so a binary linked against it starts and reports "no GPU".
fn stub_libcuda(dir: &Path) -> Result<()> {
    let so = dir.join("libcuda.so");
    if so.exists() {
        return Ok(());
    }
    let cudarc = cargo_registry_crate("cudarc")?;
    let decls = std::fs::read_to_string(cudarc.join("src/driver/sys/mod.rs"))
        .with_context(|| format!("reading {}", cudarc.display()))?;
    let mut names: Vec<&str> = decls
        .split("fn ")
        .skip(1)
        .filter_map(|s| s.split('(').next())
        .filter(|n| n.starts_with("cu") && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < 100 {
        bail!(
            "found only {} driver functions in cudarc's declarations",
            names.len()
        );
    }
    let c: String = names
        .iter()
        .map(|n| format!("int {n}(void) {{ return 34; }}\n"))
        .collect();
    let src = dir.join("libcuda_stub.c");
    std::fs::write(&src, c)?;
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&so)
        .arg(&src);
    status(cc, "cc: the stub libcuda.so")?;
    let one = dir.join("libcuda.so.1");
    std::fs::remove_file(&one).ok();
    std::os::unix::fs::symlink(&so, &one)?;
    Ok(())
}

/// The source folder of a dependency as cargo resolved it (for the version in Cargo.lock).
fn cargo_registry_crate(name: &str) -> Result<PathBuf> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--features",
            "trialflow-train/cuda",
        ])
        .output()
        .context("cargo metadata")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let manifest = v["packages"]
        .as_array()
        .context("cargo metadata: packages")?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["manifest_path"].as_str())
        .with_context(|| format!("{name} is not in the dependency graph with the cuda feature"))?;
    Ok(Path::new(manifest)
        .parent()
        .context("manifest folder")?
        .to_path_buf())
}

fn build(home: &Path) -> Result<PathBuf> {
    let target = root().join("target/cuda");
    let path = format!(
        "{}:{}",
        home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "trialflow-train",
        "--bin",
        "trialflow-train-bench",
        "--features",
        "cuda",
    ])
    .env("CARGO_TARGET_DIR", &target)
    .env("PATH", path)
    .env("CUDA_HOME", home)
    .env("CUDA_PATH", home)
    .env("CUDA_COMPUTE_CAP", COMPUTE_CAP)
    .env("CUDARC_CUDA_VERSION", CUDARC_CUDA_VERSION);
    status(
        c,
        "cargo build --release --features cuda --bin trialflow-train-bench (target/cuda; ~15 min the first time on 2 cores)",
    )?;
    Ok(target.join("release/trialflow-train-bench"))
}

/// target/gpu-bundle: the stripped binary, run.sh and the sample trial's encoded splits.
fn bundle(bin: &Path) -> Result<PathBuf> {
    let dir = root().join("target/gpu-bundle");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join("trialflow-train-bench");
    std::fs::copy(bin, &dest).with_context(|| format!("copying {}", bin.display()))?;
    let mut strip = Command::new("strip");
    strip.arg(&dest);
    status(strip, "strip the CUDA binary")?;
    // ~75 MB stripped (candle's PTX kernels are text): compressed, the bundle fits what a lent machine accepts
    let mut gzip = Command::new("gzip");
    gzip.args(["-9", "-f"]).arg(&dest);
    status(gzip, "gzip the CUDA binary")?;
    std::fs::copy(root().join("xtask/gpu/run.sh"), dir.join("run.sh"))?;
    // The sample trial's splits, encoded by the CPU build of the same binary (the pipeline makes the lake).
    let sample = crate::bench::sample_splits()?;
    let data = dir.join("data/sample");
    std::fs::create_dir_all(&data)?;
    for entry in std::fs::read_dir(&sample)? {
        let p = entry?.path();
        std::fs::copy(&p, data.join(p.file_name().context("file name")?))?;
    }
    Ok(dir)
}

/// The CUDA runtime libraries the binary needs (its `NEEDED` entries but the driver's libcuda), copied from the
/// wheels into the bundle's lib/: a bundle for GPU machines without them (~700 MB, cuBLASLt most of it).
fn copy_runtime_libs(bin: &Path, home: &Path, dest: &Path) -> Result<()> {
    let out = Command::new("readelf")
        .args(["-d"])
        .arg(bin)
        .output()
        .context("readelf -d")?;
    let needed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_string))
        .filter(|n| n.starts_with("libcu") && !n.starts_with("libcuda."))
        .collect();
    std::fs::create_dir_all(dest)?;
    let mut names = needed.clone();
    if needed.iter().any(|n| n.starts_with("libcublas.")) {
        names.push("libcublasLt.so.13".into()); // cuBLAS's own dependency
    }
    for name in names {
        let from = home.join("lib").join(&name);
        std::fs::copy(&from, dest.join(&name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
