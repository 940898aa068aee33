"""SuperResolution(kernel="bicubic") against recorded outputs of the DPS resizer.

How tests/fixtures/resizer_reference.pt was produced
----------------------------------------------------
Reference: https://github.com/DPS2022/diffusion-posterior-sampling, util/resizer.py at
commit 4962d6e81fd3dcfb4453d4fa712338011a5e931a (Assaf Shocher's resizer,
https://github.com/assafshocher/resizer), used as DPS's SuperResolutionOperator uses it:
`Resizer(in_shape, 1 / scale_factor)` (kernel=None -> cubic, antialiasing=True).
A generation script (kept outside the repository) drew, with torch 2.14 on CPU,
x = rand(shape, float64) * 2 - 1 from Generator seed 7 for shapes (2, 3, 32, 32),
(1, 1, 64, 48), (1, 1, 36, 36), (1, 2, 48, 24) (in that order) and recorded
`Resizer(x.shape, 1 / s)(x)` for every s in (2, 3, 4) that divides both sides.
The reference keeps its weights as float32 parameters, so the recorded float64 outputs
carry float32-rounded weights (~1e-7 relative).
"""

from pathlib import Path

import pytest
import torch

from ipsolve.operators import SuperResolution

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "resizer_reference.pt", weights_only=True)
CASES = FIXTURE["cases"]


def _case_id(case):
    return "x".join(map(str, case["x"].shape)) + f"-s{case['scale']}"


def test_fixture_covers_every_scale():
    assert sorted({c["scale"] for c in CASES}) == [2, 3, 4]
    assert len(CASES) == 10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bicubic_matches_dps_resizer(case, dtype):
    x, expected, scale = case["x"], case["out"], case["scale"]
    op = SuperResolution(scale=scale, kernel="bicubic")
    got = op(x.to(dtype)).double()
    assert got.shape == expected.shape
    err = (got - expected).abs()
    worst = err.max().item()
    border = max(err[..., 0, :].max(), err[..., -1, :].max(), err[..., :, 0].max(), err[..., :, -1].max()).item()
    print(f"SR x1/{scale} {_case_id(case)} {dtype}: max |ours - reference| = {worst:.3g} (border rows/cols {border:.3g})")
    assert worst < 1e-5, (
        f"x1/{scale} on {tuple(x.shape)} ({dtype}): max |ours - reference| = {worst:.3g}, "
        f"border rows/cols {border:.3g}, worst at (b, c, i, j) = {(err == err.max()).nonzero()[0].tolist()}"
    )
