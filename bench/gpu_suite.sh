#!/usr/bin/env bash
# Every GPU figure the project claims, in one run that fits a short GPU window (bench/gpu_suite.py).
#
#   bash bench/gpu_suite.sh [OUT_DIR] [ARGS]   # writes OUT_DIR/gpu_suite.json (default .cache/gpu_suite);
#                                              # ARGS go to `python -m bench.gpu_suite` (--only, --tiny)
#
# Needs a python3 with a CUDA torch. What else the suite imports (diffusers, peft, transformers,
# pydantic, ...) is installed from this repo's pyproject.toml; on a machine with no network, run
# `bash bench/gpu_wheels.sh` on one that has it first and bring the .whl folder along: the wheels
# in it are installed instead (no index). BUDGET (seconds, default 420) bounds the measurements.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-.cache/gpu_suite}}
shift || true
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR"

if ! "$PY" -c "import diffusers, peft, transformers, pydantic, yaml" 2>/dev/null; then
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-suite-site .whl/*.whl
    export PYTHONPATH=/tmp/gpu-suite-site${PYTHONPATH:+:$PYTHONPATH}
  else
    "$PY" -m pip install -q ".[ml]"
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT_DIR/gpu.txt" 2>&1 || true
PYTHONUNBUFFERED=1 "$PY" -m bench.gpu_suite --out "$OUT_DIR/gpu_suite.json" --budget "${BUDGET:-420}" "$@"
