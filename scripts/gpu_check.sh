#!/usr/bin/env bash
# Everything a session lent a GPU should measure, in one call (≈ 7 min on one H100/H200-class GPU):
# the paper-scale speed and memory tables (scripts/scale_benchmark.py), the 32-px launch-bound
# table, and the CLI main job on the GPU.  Writes into $OUT (default outputs/gpu_check): scale.csv,
# performance.md, scale.png, env.json (GPU, torch, CUDA), run.log, nvidia-smi.txt, mainjob.log.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine, from the repository root
#   DEADLINE=420 bash scripts/gpu_check.sh     # seconds for the scale benchmark (sections that would not fit are skipped)
#
# A machine without this project's dependencies: carry pure-Python wheels in .whl/ (diffusers,
# hydra-core, omegaconf, antlr4-python3-runtime, lpips, importlib_metadata, zipp); they are
# installed into /tmp/site first.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
start=$(date +%s)
python3 scripts/scale_benchmark.py --scale paper --out "$OUT" --deadline "${DEADLINE:-400}" \
  --sections compile adm small vae resample sd3 flux 2>&1 | tee "$OUT/run.log"
echo "scale benchmark: $(( $(date +%s) - start )) s" | tee -a "$OUT/run.log"
start=$(date +%s)
timeout 120 python3 -m ipsolve device=cuda progress=false hydra.run.dir=/tmp/ipsolve_mainjob > "$OUT/mainjob.log" 2>&1
echo "main job on the GPU: $(( $(date +%s) - start )) s (exit $?)" | tee -a "$OUT/mainjob.log"
tail -n 20 "$OUT/mainjob.log"
