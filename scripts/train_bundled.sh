#!/usr/bin/env bash
# Reproduces the bundled priors on 2 CPU cores (about 75 minutes in all).
# Re-running continues each from its saved state up to --steps.
set -e
cd "$(dirname "$0")/.."
B=ipsolve/priors/bundled
python scripts/train_prior.py --kind ddpm   --data phantom --out $B/phantom-ddpm   --steps 6000 --max-minutes ${DDPM_MIN:-25} "$@"
python scripts/train_prior.py --kind flow   --data phantom --out $B/phantom-flow   --steps 6000 --max-minutes ${FLOW_MIN:-18} "$@"
python scripts/train_prior.py --kind latent --data phantom --out $B/phantom-latent --steps 6000 --ae-steps 600 --widths 64,128,128 --max-minutes ${LATENT_MIN:-15} "$@"
python scripts/train_prior.py --kind ddpm   --data photo   --out $B/photo-ddpm     --steps 6000 --max-minutes ${PHOTO_MIN:-15} "$@"
