#!/usr/bin/env bash
# The device check for issue 15, in one script: set-up, CUDA tests, GPU benchmarks.
#
#   OUT=/some/dir bench/gpu_check.sh            # on the machine with the GPU
#
# Sized to a few minutes on an H100/H200 (16 cores) so that it can run twice inside
# 15 minutes of device time. Every step has its own time limit (580 s in all, under the
# device's 10 minutes per command: run it with timeout_s=600) and writes its output
# to $OUT as it goes, so a step that runs long still leaves the others' figures (the
# load benchmark writes its JSON after each model). GNU timeout signals the step's
# whole process group, so a timed-out serving step takes its servers with it.
#   $OUT/env.txt           GPU, driver, torch, cores, load average
#   $OUT/setup.log         the venv set-up
#   $OUT/cuda_tests.txt    pytest of the CUDA tests (and the CPU twins) on this machine
#   $OUT/gpu_load.txt      bench.bench_gpu_load: rows (a)-(d) + CPU rows, ratios
#   $OUT/gpu_load.json     the same rows as JSON
#   $OUT/serve_b1.txt      bench.bench_runtime, MiniLM on cuda, batch 1 (ours vs plain)
#   $OUT/serve_b32.txt     the same at batch 32
#   $OUT/summary.txt       each step's exit status and seconds
# Knobs (environment): GPU_CHECK_GIB (default 1,4,16), GPU_CHECK_DTYPES (fp32,bf16),
# GPU_CHECK_BF16_GIB (1,4: bf16 is not run at 16 GiB by default, to fit the time),
# GPU_CHECK_REQUESTS (200), GPU_CHECK_SKIP (space-separated step names to skip),
# GPU_CHECK_PYTHON (an interpreter to use instead of the one setup makes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
GIB=${GPU_CHECK_GIB:-1,4,16}
BF16_GIB=${GPU_CHECK_BF16_GIB:-1,4}
REQUESTS=${GPU_CHECK_REQUESTS:-200}
SKIP=" ${GPU_CHECK_SKIP:-} "
: >"$OUT/summary.txt"

step() {  # step NAME LIMIT_S COMMAND...: run it with a time limit, record status and time
  local name=$1 limit=$2; shift 2
  if [[ "$SKIP" == *" $name "* ]]; then echo "$name skipped" >>"$OUT/summary.txt"; return 0; fi
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - started)) limit=$limit" >>"$OUT/summary.txt"
  return 0
}

# --- set-up: the repository's own package, with a CUDA torch -----------------------
# scripts/setup.sh pins the CPU wheel of torch; a GPU machine needs its CUDA build. A
# venv with the system's site-packages reuses a system torch that sees the GPU; pip
# then adds the project's [runtime,test,minilm] extras from whatever index (or local
# wheel mirror) the machine is configured with. The device may be offline: if pip
# cannot fetch, the project goes in without dependencies and the import check below
# (in setup.log) says what is missing.
setup() {
  if [ ! -x .venv-gpu/bin/python ]; then
    python3 -m venv --system-site-packages .venv-gpu
  fi
  if ! .venv-gpu/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    .venv-gpu/bin/pip install -q torch || echo "setup: no CUDA torch could be installed"
  fi
  .venv-gpu/bin/pip install -q -e ".[runtime,test,minilm]" \
    || .venv-gpu/bin/pip install -q --no-deps --no-build-isolation -e . \
    || echo "setup: the project could not be installed; running from the source tree"
  .venv-gpu/bin/python -c 'import importlib.util
missing = [m for m in ("torch", "safetensors", "cryptography", "fastapi", "uvicorn", "grpc",
                       "prometheus_client", "yaml", "pytest", "hypothesis", "requests")
           if importlib.util.find_spec(m) is None]
print("setup: missing modules:", ", ".join(missing) or "none")'
  .venv-gpu/bin/python -m examples.prepare_minilm || echo "setup: MiniLM weights not prepared"
}
step setup 120 bash -c "$(declare -f setup); setup" >"$OUT/setup.log" 2>&1
PY=${GPU_CHECK_PYTHON:-.venv-gpu/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
    --format=csv 2>&1 || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available())' 2>&1
  echo "cores $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  free -g | head -2
} >"$OUT/env.txt"

# --- the CUDA tests, with their CPU twins ------------------------------------------
step cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider -rs \
  tests/integration/secure_runtime/test_runtime_ring_cuda.py \
  tests/integration/secure_runtime/test_runtime_ring.py \
  tests/integration/secure_runtime/test_runtime_loader.py >"$OUT/cuda_tests.txt" 2>&1

# --- the load benchmark: (a)-(d) and the CPU rows, per size and dtype ---------------
step gpu_load_fp32 180 "$PY" -m bench.bench_gpu_load --device cuda --gib "$GIB" \
  --dtypes fp32 --json "$OUT/gpu_load_fp32.json" >"$OUT/gpu_load.txt" 2>&1
step gpu_load_bf16 60 "$PY" -m bench.bench_gpu_load --device cuda --gib "$BF16_GIB" \
  --dtypes bf16 --json "$OUT/gpu_load_bf16.json" >>"$OUT/gpu_load.txt" 2>&1

# --- serving MiniLM on the GPU: ours (--device cuda) vs bench/baseline_server.py -------
for batch in 1 32; do
  step "serve_b$batch" 50 "$PY" -m bench.bench_runtime --project examples/minilm \
    --device cuda --batch "$batch" --requests "$REQUESTS" --rounds 3 --starts 1 \
    --concurrency 4 >"$OUT/serve_b$batch.txt" 2>&1
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
cat "$OUT/summary.txt"
