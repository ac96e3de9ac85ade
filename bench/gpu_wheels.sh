#!/usr/bin/env bash
# Wheels for running bench/gpu_suite.sh on a GPU machine with no network whose python3 already holds
# torch, transformers, peft, accelerate and safetensors (an NVIDIA PyTorch image): what the suite
# imports beyond those, for CPython 3.12 on x86-64 Linux, into .whl/ (ignored by git).
#
#   bash bench/gpu_wheels.sh            # run where pip can reach PyPI; then carry .whl with the repo
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DIFFUSERS=$("$PY" - <<'PYEOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ml"]
print(next(re.sub(r"^diffusers", "", d) for d in deps if d.startswith("diffusers")))
PYEOF
)
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do PLATFORMS+=(--platform "${tag}_x86_64"); done
download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$@"
}
download "diffusers$DIFFUSERS" "pydantic>=2.6,<3" annotated-types typing-inspection importlib-metadata \
  "$(grep -o 'bitsandbytes[^"]*' pyproject.toml)"
# pydantic pins the one pydantic-core it works with.
CORE=$(unzip -p .whl/pydantic-2*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p')
download "pydantic-core==$CORE"
ls .whl
