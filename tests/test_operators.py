"""Operators: adjointness, agreement with the reference definitions, determinism, errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from ipsolve import make_operator
from ipsolve.operators import OPERATORS, gaussian_kernel, motion_kernel

# small kernels so 32-px images can be used; the paper defaults are checked separately
LINEAR_CASES = [
    ("super_resolution", {"scale": 4}),
    ("super_resolution", {"scale": 2, "kernel": "avgpool"}),
    ("super_resolution", {"scale": 3}),
    ("inpainting", {"mask": "random"}),
    ("inpainting", {"mask": "box"}),
    ("gaussian_blur", {"size": 15, "std": 2.0}),
    ("motion_blur", {"size": 15, "intensity": 0.5, "seed": 3}),
    ("blind_blur", {"size": 9}),
]


@pytest.mark.parametrize("name,params", LINEAR_CASES)
def test_adjointness(name, params):
    op = make_operator(name, **params).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 36, 36, generator=g, dtype=torch.float64)
    y = op(x)
    v = torch.randn(y.shape, generator=g, dtype=torch.float64)
    lhs, rhs = (y * v).sum(), (x * op.adjoint(v)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-4, (float(lhs), float(rhs))


@pytest.mark.parametrize("name,params", LINEAR_CASES + [("nonlinear_blur", {"size": 9})])
def test_batched_differentiable_shapes(name, params):
    op = make_operator(name, **params)
    x = (torch.rand(3, 3, 36, 36) * 2 - 1).requires_grad_()
    y = op(x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # batching: each image is processed on its own
    torch.testing.assert_close(op(x[1:2]), y[1:2], atol=1e-5, rtol=1e-5)
    assert op.initial_guess(y.detach()).shape == x.shape


@pytest.mark.parametrize("size", [1, 2, 3, 9, 15, 24, 25, 61, 64])
def test_gaussian_kernel_is_scipys_at_every_size(size):
    """DPS's kernel is scipy's gaussian_filter of a delta (mode 'reflect'): it sums to 1 at every
    size, also below the Gaussian's support (the first ipsolve kernel summed to 0.754 at 9 px)."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    ref = ndimage.gaussian_filter(delta, sigma=3.0, mode="reflect")
    ours = gaussian_kernel(size, 3.0)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-7)  # float32 storage of values <= 1
    assert abs(float(ours.double().sum()) - 1) < 1e-6


def test_gaussian_blur_matches_scipy():
    """DPS's kernel: scipy gaussian_filter of a delta; blur: correlate with mode 'mirror'."""
    size, std = 61, 3.0
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    ref_kernel = ndimage.gaussian_filter(delta, sigma=std)
    np.testing.assert_allclose(gaussian_kernel(size, std).numpy(), ref_kernel, atol=1e-7)
    img = np.random.default_rng(0).uniform(-1, 1, (64, 64))
    ref = ndimage.correlate(img, ref_kernel, mode="mirror")
    out = make_operator("gaussian_blur")(torch.from_numpy(img).float()[None, None])[0, 0].numpy()
    assert np.abs(out - ref).max() < 1e-5


def test_motion_blur_matches_scipy_and_kernel_properties():
    k = motion_kernel(61, 0.5, seed=7)
    assert k.shape == (61, 61) and abs(float(k.sum()) - 1) < 1e-5 and (k >= 0).all()
    assert torch.equal(k, motion_kernel(61, 0.5, seed=7))
    assert not torch.equal(k, motion_kernel(61, 0.5, seed=8))
    img = np.random.default_rng(1).uniform(-1, 1, (64, 64))
    op = make_operator("motion_blur", seed=7)
    ref = ndimage.correlate(img, k.double().numpy(), mode="mirror")
    assert np.abs(op(torch.from_numpy(img).float()[None, None])[0, 0].numpy() - ref).max() < 1e-5
    # a straight path for intensity 0: the support is (close to) a line
    line = motion_kernel(61, 0.0, seed=0)
    assert (line > 1e-3).sum() < 61 * 8


MOTION_REFERENCE = np.load(Path(__file__).parent / "fixtures" / "motionblur_reference.npz")


@pytest.mark.parametrize("case", sorted(k for k in MOTION_REFERENCE.files if k != "small_nan"))
def test_motion_kernel_is_the_papers_generator(case):
    """Recorded from LeviBorodenko/motionblur (motionblur.py at 5781378, the generator of DPS,
    ReSample, DMPlug and BlindDPS): ``np.random.seed(seed); Kernel(size=(n, n),
    intensity=i).kernelMatrix`` for seeds 0, 1, 7, 123, sizes 54, 61, 64, intensities 0, ½, 1.
    Same numpy stream and Pillow operations: equal to float32 rounding (measured: 0)."""
    seed, size, intensity = case.split("_")
    ours = motion_kernel(int(size[1:]), float(intensity[1:]), int(seed[1:])).numpy()
    assert np.abs(ours - MOTION_REFERENCE[case]).max() <= 1e-6


def test_small_motion_kernels_follow_the_documented_rule():
    """Below 54 px the reference returns NaN (a zero-width line; recorded at 53 px); ipsolve's
    small kernel is the 61-px reference kernel area-resized and renormalised."""
    assert np.isnan(MOTION_REFERENCE["small_nan"]).all()
    k9 = motion_kernel(9, 0.5, seed=1)
    assert k9.shape == (9, 9) and torch.isfinite(k9).all() and abs(float(k9.double().sum()) - 1) < 1e-6
    big = torch.from_numpy(MOTION_REFERENCE["s1_n61_i0.5"]).double()
    area = torch.nn.functional.adaptive_avg_pool2d(big[None, None], 9)[0, 0]
    torch.testing.assert_close(k9.double(), area / area.sum(), atol=1e-7, rtol=0)


def test_sr_border_rows_differ_from_torch_antialias():
    """The papers' resizer repeats the edge pixel; torch's antialiased bicubic does not."""
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    ours = make_operator("super_resolution", scale=4)(x)
    torch_aa = torch.nn.functional.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True)
    assert (ours - torch_aa)[..., 2:-2, 2:-2].abs().max() < 1e-5
    # constant images stay constant (weights sum to 1, border included)
    c = make_operator("super_resolution", scale=4)(torch.full((1, 1, 32, 32), 0.3))
    assert torch.allclose(c, torch.full_like(c, 0.3), atol=1e-6)


@pytest.mark.parametrize("mask,expected", [("random", 0.7), ("box", 0.25)])
def test_inpainting_missing_fraction(mask, expected):
    op = make_operator("inpainting", mask=mask, image_size=256)
    missing = 1 - op.mask.mean().item()
    assert abs(missing - expected) < 1e-3
    if mask == "box":  # a 128x128 hole at 256 px
        rows, cols = torch.nonzero(op.mask[0, 0] == 0, as_tuple=True)
        assert rows.max() - rows.min() + 1 == 128 and cols.max() - cols.min() + 1 == 128
        assert rows.min() >= 16 and rows.max() < 256 - 16
    # same mask for all channels
    x = torch.rand(1, 3, 256, 256) + 0.5
    y = op(x)
    assert torch.equal((y[:, 0] == 0), (y[:, 2] == 0))


def test_inpainting_per_image_missing_fraction():
    """missing=[0.3, 0.7]: DPS's per-image U(0.3, 0.7) random masks, each drawn from (seed, image key)."""
    op = make_operator("inpainting", missing=[0.3, 0.7], seed=3)
    keys = [f"img{i}" for i in range(40)]
    op.set_images(keys)
    masks = op.mask_for((40, 1, 32, 32))
    fractions = 1 - masks.flatten(1).mean(1)
    assert masks.shape == (40, 1, 32, 32) and set(masks.unique().tolist()) == {0.0, 1.0}
    assert fractions.min() >= 0.3 - 1e-3 and fractions.max() <= 0.7 + 1e-3
    assert fractions.std() > 0.08  # uniform on [0.3, 0.7]: std 0.115
    # a mask follows its image: the same key gives the same mask in any batch, another seed another mask
    op.set_images(["img7"])
    assert torch.equal(op.mask_for((1, 1, 32, 32))[0], masks[7])
    other = make_operator("inpainting", missing=[0.3, 0.7], seed=4)
    other.set_images(["img7"])
    assert not torch.equal(other.mask_for((1, 1, 32, 32))[0], masks[7])
    # without keys the images of a batch are keyed by position; the same for all channels
    fresh = make_operator("inpainting", missing=[0.3, 0.7], seed=3)
    y = fresh(torch.rand(2, 3, 32, 32) + 0.5)
    assert torch.equal(y[:, 0] == 0, y[:, 2] == 0) and not torch.equal(y[0, 0] == 0, y[1, 0] == 0)
    fresh.set_images(["a", "b", "c"])
    with pytest.raises(ValueError, match="3 image keys"):
        fresh(torch.zeros(2, 1, 32, 32))
    for bad in ([0.7, 0.3], [0.3, 1.0], [0.1, 0.2, 0.3]):
        with pytest.raises(ValueError, match="missing"):
            make_operator("inpainting", missing=bad)
    with pytest.raises(ValueError, match="mask='random'"):
        make_operator("inpainting", mask="box", missing=[0.3, 0.7])


def test_inpainting_mask_from_file(tmp_path):
    from ipsolve.io import save_image

    m = torch.ones(1, 1, 32, 32)
    m[..., 8:16, 8:16] = -1  # black = missing
    save_image(m, tmp_path / "mask.png")
    op = make_operator("inpainting", mask=str(tmp_path / "mask.png"))
    assert float(1 - op.mask.mean()) == pytest.approx(64 / 1024)
    with pytest.raises(ValueError, match="mask"):
        op(torch.zeros(1, 3, 64, 64))


def test_harmonic_fill_reproduces_smooth_images():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = (0.5 * xx + 0.3 * yy)[None, None]  # harmonic (linear) image: exact fill expected
    op = make_operator("inpainting", seed=2)
    err = (op.initial_guess(op(x)) - x).abs()
    # exact up to the Neumann (replicate) condition at the image border
    assert err[..., 3:-3, 3:-3].max() < 0.03 and err.mean() < 0.01


def test_determinism_and_noise_std():
    a = make_operator("inpainting", seed=5, image_size=64).mask
    b = make_operator("inpainting", seed=5, image_size=64).mask
    c = make_operator("inpainting", seed=6, image_size=64).mask
    assert torch.equal(a, b) and not torch.equal(a, c)
    op = make_operator("super_resolution", scale=2)
    x = torch.zeros(4, 3, 128, 128)
    y1 = op.measure(x, sigma=0.05, generator=torch.Generator().manual_seed(3))
    y2 = op.measure(x, sigma=0.05, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2)
    assert abs(float(y1.std()) - 0.05) < 0.002
    assert torch.equal(op.measure(x, sigma=0), op(x))
    # no generator: seed 0, as solve's (it drew from torch's global generator: DESIGN §2, an audit 2026-12-07)
    torch.manual_seed(1)
    y0 = op.measure(x, sigma=0.05)
    assert torch.equal(y0, op.measure(x, sigma=0.05)) and torch.equal(y0, op.measure(x, sigma=0.05, generator=0))
    # Poisson noise: std at white equals sigma on the [-1, 1] scale
    yp = op.measure(torch.ones(4, 3, 128, 128), sigma=0.05, noise="poisson", generator=torch.Generator().manual_seed(0))
    assert abs(float(yp.std()) - 0.05) < 0.003 and abs(float(yp.mean()) - 1) < 0.01


def test_nonlinear_blur_camera_is_nonlinear_and_in_range():
    op = make_operator("nonlinear_blur", size=9)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = op(x)
    assert y.min() >= -1 and y.max() <= 1 + 1e-6
    # superposition fails for a saturating response
    lhs = op(x) + op(-x)
    rhs = 2 * op(torch.zeros_like(x))
    assert (lhs - rhs).abs().max() > 1e-2
    assert not op.is_linear
    with pytest.raises(TypeError, match="not linear"):
        op.adjoint(y)


def test_nonlinear_blur_bkse_loads_checkpoint(tmp_path):
    from ipsolve.operators.bkse import KernelWizard

    net = KernelWizard(nf=8, front_RBs=1, back_RBs=1)
    torch.save(net.state_dict(), tmp_path / "bkse.pth")
    with pytest.raises(ValueError, match="bkse.pth"):  # default options do not match this small net
        make_operator("nonlinear_blur", model="bkse", checkpoint=str(tmp_path / "bkse.pth"))
    with pytest.raises(FileNotFoundError, match="GOPRO_wVAE.pth"):
        make_operator("nonlinear_blur", model="bkse", checkpoint=str(tmp_path / "missing.pth"))


def test_blind_blur_accepts_per_image_kernels():
    op = make_operator("blind_blur", true_kernel="gaussian", size=9, std=1.5)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    k = torch.stack([op.kernel, motion_kernel(9, 0.5, 1)])
    y = op(x, kernel=k)
    torch.testing.assert_close(y[0:1], op(x[0:1]))
    with pytest.raises(ValueError, match="one per image"):
        op(x, kernel=k[:1].expand(3, 9, 9))


# --------------------------------------------------------------------------- errors
def test_error_messages():
    op = make_operator("super_resolution", scale=4)
    with pytest.raises(ValueError, match="4 dimensions"):
        op(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        op(torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="NaN or inf"):  # measuring checks the values; op(x) inside a
        op.measure(torch.full((1, 3, 32, 32), float("nan")))  # solver's loop passes them on (the solver handles them)
    assert torch.isnan(op(torch.full((1, 3, 32, 32), float("nan")))).all()
    with pytest.raises(TypeError, match="torch.Tensor"):
        op(np.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match="sigma"):
        op.measure(torch.zeros(1, 3, 32, 32), sigma=-0.1)
    with pytest.raises(ValueError, match="too small"):
        make_operator("gaussian_blur")(torch.zeros(1, 1, 24, 24))
    with pytest.raises(ValueError, match="known operators: .*super_resolution"):
        make_operator("deblur")
    with pytest.raises(TypeError, match="Its parameters: scale, kernel"):
        make_operator("super_resolution", factor=4)
    with pytest.raises(ValueError, match="scale"):
        make_operator("super_resolution", scale=0)
    with pytest.raises(FileNotFoundError, match="mask"):
        make_operator("inpainting", mask="/nonexistent/mask.png")
    inp = make_operator("inpainting", image_size=32)
    with pytest.raises(ValueError, match="mask"):
        inp(torch.zeros(1, 3, 64, 64))
    y = op(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        op.check_measurement(y, (1, 3, 64, 64))
    with pytest.raises(ValueError, match="NaN or inf"):
        op.check_measurement(torch.full_like(y, float("inf")), (1, 3, 32, 32))


def test_registry_names():
    assert set(OPERATORS) == {"super_resolution", "inpainting", "gaussian_blur", "blur", "motion_blur", "nonlinear_blur",
                              "blind_blur", "ct", "mri", "phase_retrieval"}


def test_every_operator_names_its_task_and_each_solver_maps_it_as_documented():
    """``Operator.task`` is the one place an operator is mapped to a task (the registry names, with
    inpainting split by mask kind); each solver's per-task defaults read it."""
    from ipsolve.operators.base import TASKS
    from ipsolve.operators.restrict import restrict
    from ipsolve.solvers import daps, diffpir, dps, pnp_flow

    kernel = torch.ones(3, 3)
    ops = {name: make_operator(name, **({"kernel": kernel} if name == "blur" else {})) for name in OPERATORS}
    ops["inpainting_box"] = make_operator("inpainting", mask="box")
    tasks = {name: op.task for name, op in ops.items()}
    assert tasks == {**{n: n for n in OPERATORS}, "inpainting": "inpainting_random", "inpainting_box": "inpainting_box"}
    assert set(tasks.values()) == set(TASKS)
    held = restrict(ops["inpainting_box"], torch.arange(10), (1, 8, 8))
    assert held.task == "inpainting_box"  # a restricted operator keeps its task (calibration's held-out runs)
    own = ops["blur"]  # a kernel of your own: DAPS's motion-blur config, PnP-Flow's one blur α, DiffPIR's deblurring
    assert (daps.task_of(own), pnp_flow.task_alpha(own), diffpir.task_of(own)) == ("motion_blur", 0.01, "deblur")
    for name in ("ct", "mri", "blind_blur"):  # no reference config: each solver's stated fallback
        assert daps.task_of(ops[name]) == "super_resolution" and pnp_flow.task_alpha(ops[name]) == 1.0
    assert [dps.default_zeta(ops[n]) for n in ("inpainting", "inpainting_box", "ct", "mri", "super_resolution")] == \
        [0.5, 0.5, 1.0, 0.6, 0.3]
    assert diffpir.task_of(ops["inpainting_box"]) == "inpainting"


@pytest.mark.parametrize("k", [8, 9])
def test_blind_blur_zero_padding_is_dmplugs_conv2d_same(k):
    """``padding="zero"`` is DMPlug's BlindBlurOperator: per channel ``F.conv2d(x, k, padding="same")``
    (even kernels: one pixel more padding after than before)."""
    import torch.nn.functional as F

    op = make_operator("blind_blur", true_kernel="gaussian", size=k, std=1.5, padding="zero")
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    kern = torch.rand(k, k, dtype=torch.float64)
    ref = torch.cat([F.conv2d(x[:, i:i + 1], kern[None, None], padding="same") for i in range(3)], 1)
    assert torch.allclose(op(x, kernel=kern), ref, atol=1e-12)
    assert torch.allclose(op(x), torch.cat([F.conv2d(x[:, i:i + 1], op.kernel[None, None].double(), padding="same")
                                            for i in range(3)], 1), atol=1e-6)
    with pytest.raises(ValueError, match="padding must be"):
        make_operator("blind_blur", padding="circular")


def test_per_image_masks_hold_out_only_pixels_some_image_observes():
    """Calibration's split with per-image inpainting masks (``inpainting_dps_random``): the pixels
    observed in at least one image of the batch — a pixel missing everywhere carries only noise
    (was: every pixel, about half of them holes)."""
    from ipsolve import make_operator

    op = make_operator("inpainting_dps_random")
    op.set_images(["a", "b", "c"])
    masks = op.mask_for((3, 1, 32, 32))
    observed = op.observed_entries((3, 1, 32, 32))
    assert torch.equal(observed, masks.amax(0).flatten() > 0) and observed.sum() < observed.numel()


def test_residual_counts_only_entries_that_carry_a_measurement():
    """An inpainting measurement read from elsewhere has its holes set to 0 (no noise there): the
    true image's residual ‖y − A(x)‖/(σ√m) is still ≈ 1 (was √0.3 ≈ 0.55 at 70 % missing, so every
    fit looked feasible); ipsolve's own measurement (noise in the holes, as DPS) is unchanged."""
    from ipsolve import datasets, make_operator
    from ipsolve.solvers.base import residual_ratio

    x = datasets.heldout_phantoms(8, 32)
    op = make_operator("inpainting")
    own = op.measure(x, 0.05, generator=torch.Generator().manual_seed(0))
    foreign = op.project_measurement(own)
    for y in (own, foreign):
        ratio = residual_ratio(y, op(x), 0.05)
        assert 0.9 < float(ratio.mean()) < 1.1, ratio


def test_blur_with_your_own_kernel(tmp_path, caplog):
    """``operator=blur operator.kernel=FILE.npy`` (audit 2026-12-05: no way to give a kernel; a
    replaced ``op.kernel`` left the SVD on the Gaussian, and DDRM/ΠGDM/DiffPIR solved the wrong
    problem at 15–17 dB): the kernel is checked and normalised, a separable one has an exact SVD
    of the applied blur, another none; the file's contents count in the run's fingerprint."""
    import logging

    import numpy as np

    from ipsolve.operators import GaussianBlur, gaussian_kernel, make_operator
    from ipsolve.operators.decomposition import NotDecomposable
    from ipsolve.runner.settings import describe_operator

    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    box = np.ones((5, 3)) * 2.0
    np.save(tmp_path / "box.npy", box)
    with caplog.at_level(logging.INFO, logger="ipsolve"):
        op = make_operator("blur", kernel=str(tmp_path / "box.npy"))
    assert "normalised to 1" in caplog.text and abs(float(op.kernel.sum()) - 1) < 1e-6
    dec = op.svd(tuple(x.shape))  # rank one: exact, and it is the blur that is applied
    torch.testing.assert_close(dec.forward(x.double()).float(), op(x), atol=1e-5, rtol=0)
    np.save(tmp_path / "box2.npy", box * 3)  # the same kernel once normalised, but another file: another run
    assert describe_operator(op)["kernel_sha256"] != describe_operator(
        make_operator("blur", kernel=str(tmp_path / "box2.npy")))["kernel_sha256"]
    gauss = GaussianBlur(9, 1.0)
    gauss.kernel = torch.from_numpy(np.outer(np.hanning(9), np.hanning(9))).float()
    gauss.kernel /= gauss.kernel.sum()  # a replaced buffer: the SVD follows it (was: the Gaussian's)
    torch.testing.assert_close(gauss.svd(tuple(x.shape)).forward(x.double()).float(), gauss(x), atol=1e-5, rtol=0)
    gauss.kernel = torch.ones(5, 5) / 25  # another size: decomposed as applied too (was a RuntimeError)
    torch.testing.assert_close(gauss.svd(tuple(x.shape)).forward(x.double()).float(), gauss(x), atol=1e-5, rtol=0)
    rect = make_operator("blur", kernel=np.outer([1.0, 2.0, 1.0], [1.0, 3.0, 3.0, 1.0, 0.5]))
    wide = torch.rand(1, 1, 12, 17, generator=torch.Generator().manual_seed(1)) * 2 - 1  # per-axis orientation
    torch.testing.assert_close(rect.svd(tuple(wide.shape)).forward(wide.double()).float(), rect(wide), atol=1e-5,
                               rtol=0)
    np.savez(tmp_path / "k.npz", k=box)
    with pytest.raises(ValueError, match="npz archive"):
        make_operator("blur", kernel=str(tmp_path / "k.npz"))
    one, other = make_operator("blur", kernel=np.ones((3, 3))), make_operator("blur", kernel=np.eye(3) + 0.1)
    (tmp_path / "<array>").write_text("a file named like the sentinel")  # must not replace the arrays' digests
    import os

    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert describe_operator(one)["kernel_sha256"] != describe_operator(other)["kernel_sha256"]
    finally:
        os.chdir(cwd)
    motion = make_operator("blur", kernel=torch.eye(5) + 0.1)
    with pytest.raises(NotDecomposable):
        motion.svd(tuple(x.shape))
    for bad, match in ((np.ones(3), "2-D"), (-gaussian_kernel(5, 1.0).numpy(), "non-negative"),
                       (np.array([[np.nan]]), "finite")):
        with pytest.raises(ValueError, match=match):
            make_operator("blur", kernel=bad)
    with pytest.raises(FileNotFoundError, match="no file"):
        make_operator("blur", kernel=str(tmp_path / "missing.npy"))


def test_a_users_operator_is_checked_before_the_solve():
    """(audit 2026-12-07) README's "Your own forward model": a wrong ``output_shape``, an ``apply`` that
    is not differentiable, ``is_linear`` on a nonlinear map and a missing ``apply`` were torch errors
    deep inside a solver (or, for is_linear, a silently wrong CG solve); each is now one line."""
    import torch.nn.functional as F

    import ipsolve
    from ipsolve.operators import Operator

    prior = ipsolve.load_prior("gaussian", image_size=8)
    y = torch.zeros(1, 1, 4, 4)

    class NoShape(Operator):  # output_shape forgotten: the default says y has the image's shape
        is_linear = True

        def apply(self, x):
            return F.avg_pool2d(x, 2)

    class Detached(NoShape):
        def output_shape(self, shape):
            return (*shape[:2], shape[2] // 2, shape[3] // 2)

        def apply(self, x):
            return torch.from_numpy(x.detach().numpy()[..., ::2, ::2].copy())

    class Squared(Detached):
        def apply(self, x):
            return F.avg_pool2d(x, 2) ** 2

    class Nothing(Detached):
        apply = Operator.apply

    class Breaks(Detached):
        def apply(self, x):
            return x @ torch.ones(3, 3)

    solver = ipsolve.make_solver("dps", steps=2, progress=False)
    for op, message in ((NoShape(), r"NoShape.apply gives \(1, 1, 4, 4\) for images \(1, 1, 8, 8\), but "
                                    r"NoShape.output_shape says \(1, 1, 8, 8\)"),
                        (Detached(), r"Detached.apply is not differentiable"),
                        (Squared(), r"Squared sets is_linear = True, but A\(a \+ b\) differs"),
                        (Nothing(), r"Nothing must implement apply\(x\)"),
                        (Breaks(), r"Breaks.apply fails on the prior's images \(1, 1, 8, 8\): RuntimeError: ")):
        with pytest.raises((ValueError, NotImplementedError), match=message):
            ipsolve.solve(y, op, prior, solver, sigma=0.01)
    with pytest.raises(ValueError, match=r"NoShape.apply gives \(1, 1, 4, 4\) for images \(1, 1, 8, 8\), but "
                                         r"NoShape.output_shape says \(1, 1, 8, 8\)"):
        NoShape().measure(torch.zeros(1, 1, 8, 8), sigma=0.01)  # (it measured silently: an audit, 2026-12-07)
    with pytest.raises(TypeError, match=r"callback must take two arguments, callback\(step, state\)"):
        ipsolve.solve(y, Squared.__base__(), prior, solver, sigma=0.01, callback=lambda i: None)
    with pytest.raises(TypeError, match=r"mask must be 'random', 'box' or the path of a mask image .* got a Tensor"):
        ipsolve.make_operator("inpainting", mask=torch.ones(8, 8))
    for bad in (0, 1.0, 2, -0.5):
        with pytest.raises(ValueError, match=r"box_fraction must be a fraction in \(0, 1\)"):
            ipsolve.make_operator("inpainting", mask="box", box_fraction=bad)
    with pytest.raises(TypeError, match=r"load_prior\('gaussian'\) has no option 'size'; its options: image_size, "):
        ipsolve.load_prior("gaussian", size=16)


def test_messages_name_operators_as_users_do():
    """``operator 'motion_blur'`` (make_operator's name), also for the restricted copy calibration
    makes, and the class for your own operator — not ``MotionBlur`` / ``RestrictedMotionBlur``."""
    import ipsolve
    from ipsolve.operators import Operator
    from ipsolve.operators.base import operator_label
    from ipsolve.operators.restrict import restrict

    op = ipsolve.make_operator("motion_blur")
    assert operator_label(op) == "operator 'motion_blur'"
    assert operator_label(restrict(op, torch.arange(10), (1, 32, 32))) == "operator 'motion_blur'"

    class Mine(Operator):
        pass

    assert operator_label(Mine()) == "operator Mine"


def test_blur_audit_findings(tmp_path):
    """Audit 2026-12-07: a kernel side no image can take was a 74.5 GiB allocation; a PNG kernel gets
    the way to an array; an even kernel under zero padding is the reflecting blur of that kernel padded
    with a zero row and column at the top and left (README); a blind operator's kernel_size (what is
    estimated) does not make other measurements; BlindDPS's missing kernel model is named as such."""
    import torch.nn.functional as F

    from ipsolve.operators.blur import convolve
    from ipsolve.runner.inputs import same_operator

    for name in ("gaussian_blur", "motion_blur"):
        with pytest.raises(ValueError, match="size 100000 is too large for a blur kernel: at most 2049"):
            make_operator(name, size=100000)
    (tmp_path / "k.png").write_bytes(b"\x89PNG not an array")
    with pytest.raises(ValueError, match=r"not a .npy array .*np.save\(PATH.npy, kernel\)"):
        make_operator("blur", kernel=str(tmp_path / "k.png"))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    k = torch.rand(8, 8, generator=torch.Generator().manual_seed(1))
    k /= k.sum()
    inner = (..., slice(8, 24), slice(8, 24))
    assert torch.allclose(convolve(x, k, "zero")[inner], convolve(x, F.pad(k, (1, 0, 1, 0)))[inner], atol=1e-6)
    assert not torch.allclose(convolve(x, k, "zero")[inner], convolve(x, k)[inner], atol=1e-2)
    made = {"name": "blind_blur_dmplug", "size": 8, "kernel_size": 8, "seed": 123}
    assert same_operator(made, {**made, "kernel_size": 10}) and not same_operator(made, {**made, "size": 10})
    from ipsolve import make_solver

    blind = make_solver("blind_dps", kernel_prior="/nope/kernel_checkpoint.pt", steps=2)
    with pytest.raises(ValueError, match=r"kernel_prior: no file at '/nope/kernel_checkpoint.pt'; BlindDPS's kernel model"):
        blind.check(make_operator("blind_blur_dmplug", size=8), ipsolve_prior())


def ipsolve_prior():
    import ipsolve

    return ipsolve.load_prior("bundled:phantom-ddpm")


def test_cg_pseudo_inverse_stops_where_it_converged_on_a_singular_system():
    """CG on SR's normal equations (AᵀA of rank 1/16) converges by ~10 iterations in float32; its recurrences went
    on past that and x grew from 22 to 1.6e5 by 20 (ΠGDM without an SVD — a super-resolution restricted to part
    of y for calibration — fitted its kept entries at ~7000σ²: an audit, 2026-12-07).  Now it equals the SVD's
    pseudo-inverse and stays there."""
    from ipsolve import datasets
    from ipsolve.operators.decomposition import pinv_cg

    op = make_operator("super_resolution")
    y = op.measure(datasets.heldout_phantoms(2, 32), 0.01, generator=0)
    exact = op.svd((2, 1, 32, 32)).truncated(3e-2).pinv(y, keep_cut=True)
    for iters in (20, 60):
        cg = pinv_cg(op, y, iters)
        assert float((cg - exact).norm() / exact.norm()) < 1e-4, iters
