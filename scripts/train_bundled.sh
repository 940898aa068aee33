#!/usr/bin/env bash
# Reproduces the bundled priors on CPU cores.  Each run resumes from its saved state
# (outputs/training/<name>/) and stops at --steps (the total to reach) or after --max-minutes;
# the model cards give the figures for the steps recorded in each prior's training.json.
#
# The phantom priors are trained on the broad phantom family (ipsolve.datasets.phantoms; the
# held-out family "blobs" is never drawn).  They start from the first bundled priors, which
# were trained on the narrow random-ellipse generator (`--data ellipses`, 1600/600/300 steps):
# a fine-tune converges far faster on 1 CPU thread than a fresh start.  Run with one thread
# per process when other work shares the machine:
#   OMP_NUM_THREADS=1 scripts/train_bundled.sh ddpm &  OMP_NUM_THREADS=1 scripts/train_bundled.sh latent &
set -e
cd "$(dirname "$0")/.."
B=ipsolve/priors/bundled
what=${1:-all}
if [ "$what" = ddpm ] || [ "$what" = all ]; then
  python scripts/train_prior.py --kind ddpm --data phantom --out $B/phantom-ddpm --init-from $B/phantom-ddpm \
    --steps ${DDPM_STEPS:-1200} --max-minutes ${DDPM_MIN:-50} --work outputs/training/phantom-ddpm-broad
  python scripts/train_prior.py --kind flow --data phantom --out $B/phantom-flow --init-from $B/phantom-ddpm \
    --steps ${FLOW_STEPS:-500} --max-minutes ${FLOW_MIN:-25} --work outputs/training/phantom-flow-broad
fi
if [ "$what" = latent ] || [ "$what" = all ]; then
  python scripts/train_prior.py --kind latent --data phantom --out $B/phantom-latent --init-from $B/phantom-latent \
    --widths 64,128,128 --export-fp16 --ae-steps ${AE_STEPS:-500} --steps ${LATENT_STEPS:-500} \
    --max-minutes ${LATENT_MIN:-75} --work outputs/training/phantom-latent-broad
fi
if [ "$what" = grey ] || [ "$what" = all ]; then  # phantoms + grey photo crops, from the phantom-ddpm above
  python scripts/train_prior.py --kind ddpm --data grey --out $B/grey-ddpm --init-from $B/phantom-ddpm \
    --steps ${GREY_STEPS:-4000} --max-minutes ${GREY_MIN:-60} --work outputs/training/grey-ddpm
fi
if [ "$what" = photo ] || [ "$what" = all ]; then
  python scripts/train_prior.py --kind ddpm --data photo --out $B/photo-ddpm --steps 250 --max-minutes ${PHOTO_MIN:-15}
fi
if [ "$what" = kernel ] || [ "$what" = all ]; then  # blur kernels for BlindDPS (8 px; the model card's command)
  python scripts/train_prior.py --kind ddpm --data kernels --size 8 --widths 32,64 --out $B/kernel-ddpm --steps 4500 \
    --work outputs/training/kernel-ddpm
fi
