#!/bin/sh
# Runs the CUDA check on a GPU machine (Linux x86-64, NVIDIA driver, no Rust, no network). Made by
# `cargo xtask gpu-check`; everything it needs is in this folder except the driver and the CUDA runtime
# libraries, which come from ./lib when present, else from the machine's Python `nvidia` wheels (PyTorch cu130).
# Arguments go to `trialflow-train-bench gpu-check` (e.g. --cpu-only). With $OUT set, the JSON result is
# written to $OUT/gpu-check.json too.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
libs=""
if [ -d "$here/lib" ]; then libs="$here/lib"; fi
if command -v python3 >/dev/null 2>&1; then
  wheels=$(python3 - <<'PY' 2>/dev/null || true
import os
try:
    import nvidia
    for p in nvidia.__path__:
        d = os.path.join(p, "cu13", "lib")
        if os.path.exists(os.path.join(d, "libcublas.so.13")):
            print(d)
            break
except ImportError:
    pass
PY
)
  if [ -n "$wheels" ]; then libs="${libs:+$libs:}$wheels"; fi
fi
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin="$work/trialflow-train-bench"
gzip -dc "$here/trialflow-train-bench.gz" > "$bin"
chmod +x "$bin"
missing=$(ldd "$bin" 2>&1 | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "run.sh: libraries not found (put them in $here/lib or install the nvidia cu13 wheels):" >&2
  echo "$missing" >&2
  exit 2
fi
json=""
if [ -n "${OUT:-}" ]; then json="--json $OUT/gpu-check.json"; fi
# shellcheck disable=SC2086
"$bin" gpu-check --data "$here/data/sample" $json "$@"
