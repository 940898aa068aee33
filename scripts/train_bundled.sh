#!/usr/bin/env bash
# Reproduces the bundled priors on 2 CPU cores (about an hour in all when the machine is
# otherwise idle).  Each run resumes from its saved state (outputs/training/<name>/) and stops
# at --steps (the total to reach) or after --max-minutes; the model cards give the figures
# for the steps recorded in each prior's training.json.
set -e
cd "$(dirname "$0")/.."
B=ipsolve/priors/bundled
python scripts/train_prior.py --kind ddpm   --data phantom --out $B/phantom-ddpm   --steps 1600 --max-minutes ${DDPM_MIN:-40} "$@"
python scripts/train_prior.py --kind flow   --data phantom --out $B/phantom-flow   --steps 600 --init-from $B/phantom-ddpm --max-minutes ${FLOW_MIN:-20} "$@"
python scripts/train_prior.py --kind latent --data phantom --out $B/phantom-latent --steps 300 --ae-steps 300 --widths 64,128,128 --export-fp16 --max-minutes ${LATENT_MIN:-20} "$@"
python scripts/train_prior.py --kind ddpm   --data photo   --out $B/photo-ddpm     --steps 250 --max-minutes ${PHOTO_MIN:-15} "$@"
