"""The phantom families: seeded, in range, and the held-out family really kept out of training."""
from __future__ import annotations

import pytest
import torch

from ipsolve import datasets


def test_phantoms_are_seeded_and_in_range():
    a = datasets.phantoms(6, 32, torch.Generator().manual_seed(3))
    b = datasets.phantoms(6, 32, torch.Generator().manual_seed(3))
    assert a.shape == (6, 1, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, datasets.phantoms(6, 32, torch.Generator().manual_seed(4)))
    assert (a.flatten(1).std(1) > 0.05).float().mean() > 0.5  # mostly images with structure, not blank


@pytest.mark.parametrize("family", [*datasets.PHANTOM_TRAIN_FAMILIES, datasets.PHANTOM_HELDOUT_FAMILY])
def test_each_family_draws(family):
    x = datasets.phantoms(4, 32, torch.Generator().manual_seed(0), families=family)
    assert x.shape == (4, 1, 32, 32) and torch.isfinite(x).all() and x.std() > 0.05


def test_held_out_family_is_not_a_training_family():
    assert datasets.PHANTOM_HELDOUT_FAMILY not in datasets.PHANTOM_TRAIN_FAMILIES
    held = datasets.heldout_phantoms(4, 32)
    assert torch.equal(held, datasets.phantoms(4, 32, torch.Generator().manual_seed(datasets.HELDOUT_SEED),
                                               families="blobs"))
    with pytest.raises(ValueError, match="unknown phantom families"):
        datasets.phantoms(1, 32, families="circles")


def test_training_draws_no_blobs(monkeypatch):
    """The default family set never reaches the held-out shape painter."""
    calls = []
    monkeypatch.setattr(datasets._Canvas, "blob", lambda self, *a: calls.append(a))
    datasets.phantoms(32, 16, torch.Generator().manual_seed(0))
    assert not calls


def test_motion_kernels_for_training_never_use_held_out_seeds(monkeypatch):
    """bundled:kernel-ddpm's training kernels come from seeds ≥ 1,000,000; the operators' seeds
    (0, 1, ...) and the model card's held-out kernels are below."""
    import ipsolve.operators.blur as blur

    seen = []
    real = blur.motion_kernel
    monkeypatch.setattr(blur, "motion_kernel", lambda size, intensity, seed: seen.append(seed) or real(size, intensity, seed))
    k = datasets.motion_kernels(32, 8, torch.Generator().manual_seed(0))
    assert min(seen) >= datasets.KERNEL_TRAIN_SEEDS[0] and len(set(seen)) == 32  # (8 px: drawn at 61 px, resized)
    assert k.shape == (32, 1, 8, 8) and float(k.amax()) == 1.0 and float(k.amin()) == -1.0
    seen.clear()  # the training mixture (75 % motion, 25 % Gaussian) too
    mix = datasets.blur_kernels(40, 8, torch.Generator().manual_seed(0))
    assert mix.shape == (40, 1, 8, 8) and len(set(seen)) == 30 and min(seen) >= datasets.KERNEL_TRAIN_SEEDS[0]


def test_gaussian_kernels_are_centred_gaussians():
    k = datasets.gaussian_kernels(6, 8, torch.Generator().manual_seed(1), std=(1.0, 1.0))  # isotropic: std 1 px
    w = (k + 1) / 2
    w = w / w.sum((-2, -1), keepdim=True)
    r = torch.arange(8.0) - 3.5
    mean_x = (w.sum(-2) * r).sum(-1)
    var_x = (w.sum(-2) * r ** 2).sum(-1)
    assert torch.allclose(mean_x, torch.zeros_like(mean_x), atol=1e-6)  # centred
    assert torch.allclose(var_x, torch.full_like(var_x, 1.0), atol=0.02)  # std 1 px (8 px window: little cut off)
    assert torch.allclose(k, k.flip(-1), atol=1e-6) and float(k.amax()) == 1.0


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_phantoms_are_what_the_script_makes_and_none_is_near_empty():
    """ipsolve/demo_data/phantom holds scripts/make_demo_data.py's output (the seeded held-out
    draws, near-empty ones rejected) and no image is mostly background: one 98 %-black phantom
    once scored 40 dB and moved the demo's mean by 1.5 dB."""
    from ipsolve.io import list_images, load_image
    from ipsolve.runner import DEMO_DATA

    make = _script("make_demo_data")
    files = list_images(DEMO_DATA / "phantom")
    blobs = [p for p in files if p.stem.startswith("blobs_")]
    assert len(files) == 8 and len(blobs) == 7 and (DEMO_DATA / "phantom" / "shepp_logan.png").is_file()
    expected, rejected = make.demo_phantoms(len(blobs))
    assert rejected >= 1  # the seed's second draw is the near-empty one
    for i, x in enumerate(expected):
        img = load_image(DEMO_DATA / "phantom" / f"blobs_{i}.png")
        assert (img - x).abs().max() <= 1 / 127.5 + 1e-6, i  # the same image, up to 8-bit rounding
        assert make.object_fraction(img[0]) >= make.MIN_OBJECT
    # the rule rejects what it should: a 98 %-background image
    empty = -torch.ones(1, 32, 32)
    empty[:, 10:14, 10:14] = 0.5
    assert make.object_fraction(empty) < 0.02
