#!/usr/bin/env bash
# Everything a session lent a GPU should measure, in one call (≈ 7 min on one H100/H200-class GPU):
# the paper-scale speed and memory tables (scripts/scale_benchmark.py), the 32-px launch-bound
# table, the CLI main job on the GPU, and whether a run repeats to the last bit with and without
# deterministic=true (scripts/repeatability.py).  Writes into $OUT (default outputs/gpu_check): scale.csv,
# performance.md, scale.png, env.json (GPU, torch, CUDA), run.log, nvidia-smi.txt, mainjob.log,
# repeatability.json / .log.
#
#   bash scripts/gpu_check.sh                  # on the GPU machine, from the repository root
#   DEADLINE=420 bash scripts/gpu_check.sh     # seconds for the scale benchmark (sections that would not fit are skipped)
#   DRY_RUN=1 PYTHON=.venv/bin/python bash scripts/gpu_check.sh   # before spending device time: every section
#                                              # at tiny scale and the main job on this CPU (≈ 7 min on 2 cores)
#
# A machine without this project's dependencies: carry pure-Python wheels in .whl/ (diffusers,
# hydra-core, omegaconf, antlr4-python3-runtime, lpips, importlib_metadata, zipp); they are
# installed into /tmp/site first.  `bash scripts/gpu_wheels.sh` builds .whl/ from this venv's versions.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
if [ -z "${DRY_RUN:-}" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
start=$(date +%s)
if [ -n "${DRY_RUN:-}" ]; then
  scale=(--scale tiny --device cpu --size 32 --budget 2 --batches 1 2) device=cpu deadline=${DEADLINE:-900}
else
  scale=(--scale paper) device=cuda deadline=${DEADLINE:-380}
fi
"$PYTHON" scripts/scale_benchmark.py "${scale[@]}" --out "$OUT" --deadline "$deadline" \
  --sections compile adm small vae resample sd3 flux 2>&1 | tee "$OUT/run.log"
rc=${PIPESTATUS[0]}  # the benchmark's status, not tee's
echo "scale benchmark: $(( $(date +%s) - start )) s (exit $rc)" | tee -a "$OUT/run.log"
"$PYTHON" -c "import json, sys; f = json.load(open(sys.argv[1])).get('failed'); print('failed sections:', f or 'none')" \
  "$OUT/env.json" 2>&1 | tee -a "$OUT/run.log"
rm -rf /tmp/ipsolve_mainjob  # a rerun on a warm machine times a fresh first run, not a resume
start=$(date +%s)
timeout 120 "$PYTHON" -m ipsolve device=$device progress=false hydra.run.dir=/tmp/ipsolve_mainjob > "$OUT/mainjob.log" 2>&1
rc=$?  # read before the echo's own command substitution resets it
echo "main job on $device: $(( $(date +%s) - start )) s (exit $rc)" | tee -a "$OUT/mainjob.log"
tail -n 20 "$OUT/mainjob.log"
start=$(date +%s)
if [ -n "${DRY_RUN:-}" ]; then repeat=(--steps 20 --images 2 --solvers dps); else repeat=(); fi
timeout 120 "$PYTHON" scripts/repeatability.py --out "$OUT" --device $device ${repeat[@]+"${repeat[@]}"} > "$OUT/repeatability.log" 2>&1
rc=$?
echo "repeatability on $device: $(( $(date +%s) - start )) s (exit $rc)" | tee -a "$OUT/repeatability.log"
tail -n 6 "$OUT/repeatability.log"
