#!/usr/bin/env bash
# Builds .whl/: the pure-Python wheels scripts/gpu_check.sh installs on a device machine that has torch
# but not this project's other dependencies (and no network), at the versions installed here.  Run it
# once in a new checkout before the device call; .whl/ is git-ignored and travels only when carried:
#
#   PYTHON=.venv/bin/python bash scripts/gpu_wheels.sh
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
packages=(diffusers hydra-core omegaconf antlr4-python3-runtime lpips importlib_metadata zipp)
mapfile -t pins < <("$PYTHON" -c "import importlib.metadata as m, sys
for p in sys.argv[1:]: print(f'{p}=={m.version(p)}')" "${packages[@]}")
# pip wheel: antlr4-python3-runtime 4.9.3 (hydra's pin) is published as a source archive only
"$PYTHON" -m pip wheel -q --no-deps -w .whl "${pins[@]}"
ls .whl
