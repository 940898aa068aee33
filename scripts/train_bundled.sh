#!/usr/bin/env bash
# Reproduces the bundled priors on 2 CPU cores (each run resumes from its saved state and
# stops at --steps or after --max-minutes; the figures in the model cards are for the
# steps recorded in each prior's training.json).
set -e
cd "$(dirname "$0")/.."
B=ipsolve/priors/bundled
python scripts/train_prior.py --kind ddpm   --data phantom --out $B/phantom-ddpm   --steps 1600 --max-minutes ${DDPM_MIN:-40} "$@"
python scripts/train_prior.py --kind flow   --data phantom --out $B/phantom-flow   --steps 700 --init-from $B/phantom-ddpm --max-minutes ${FLOW_MIN:-20} "$@"
python scripts/train_prior.py --kind latent --data phantom --out $B/phantom-latent --steps 800 --ae-steps 300 --widths 64,128,128 --max-minutes ${LATENT_MIN:-20} "$@"
python scripts/train_prior.py --kind ddpm   --data photo   --out $B/photo-ddpm     --steps 400 --max-minutes ${PHOTO_MIN:-15} "$@"
