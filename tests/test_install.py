"""A non-editable install works: the wheel carries the configs, the bundled priors and the
demo data, and the ``ipsolve`` command runs from a directory outside the checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_install_runs_outside_the_checkout(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # No network: no build isolation (setuptools comes from the test extra) and no dependencies
    # (this environment supplies them).
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("ipsolve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("ipsolve/conf/config.yaml", "ipsolve/conf/solver/dmplug_cpu.yaml",
                   "ipsolve/conf/operator/super_resolution.yaml", "ipsolve/demo_data/phantom/shepp_logan.png",
                   "ipsolve/priors/bundled/phantom-ddpm/unet/diffusion_pytorch_model.safetensors",
                   "ipsolve/runner/__init__.py"):
        assert needed in names, f"{needed} missing from the wheel"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    where = subprocess.run([sys.executable, "-c", "import ipsolve; print(ipsolve.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(target), where  # the installed copy, not the checkout
    run = subprocess.run([str(target / "bin" / "ipsolve"), "solver.iterations=2", "data.max_images=2",
                          "progress=false", "hydra.run.dir=run"], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, f"stdout:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[-3000:]}"
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["num_finished"] == 2 and summary["prior"]["source"] == "bundled:phantom-ddpm"
    assert (elsewhere / "run" / "grid.png").is_file() and (elsewhere / "run" / "config.yaml").is_file()


def test_help_lists_the_public_api():
    """``help(ipsolve)`` shows the lazily imported functions (it listed only ``__getattr__``: audit 2026-12-07)."""
    import pydoc

    import ipsolve

    assert set(ipsolve.__all__) <= set(dir(ipsolve))
    text = pydoc.render_doc(ipsolve, renderer=pydoc.plaintext)
    for name in ("solve(", "calibrate(", "reconstruct(", "make_solver(", "estimate_sigma(", "class Result("):
        assert name in text, name
