"""README.md's examples run as written: its Python blocks execute, and every ``ipsolve ...``
line of its command-line block passes ipsolve's own checks and composes with Hydra."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from cli_process import run_ipsolve

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def command_lines() -> list[list[str]]:
    """The ``ipsolve ...`` lines of the README's bash blocks (comments dropped)."""
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("ipsolve ") or line == "ipsolve":
                lines.append(shlex.split(line)[1:])
    return lines


def test_readme_has_examples():
    assert len(blocks("python")) >= 1 and len(command_lines()) >= 5


@pytest.mark.parametrize("args", command_lines(), ids=lambda a: " ".join(a) or "(no arguments)")
def test_command_line_composes(args):
    from hydra import compose, initialize_config_dir

    from ipsolve.cli import CONF_DIR, check_overrides

    overrides = check_overrides(list(args))  # exits (SystemExit 2) with a one-line error on a bad argument
    sweep = "-m" in overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    if sweep:  # each combination of the sweep
        choices = [o.split("=", 1)[1].split(",") if "," in o else [o.split("=", 1)[1]] for o in overrides]
        keys = [o.split("=", 1)[0] for o in overrides]
        import itertools

        combos = [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*choices)]
    else:
        combos = [overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for combo in combos:
            cfg = compose("config", overrides=[o for o in combo if not o.startswith("hydra.")])
            assert cfg.solver.name and cfg.operator.name


def run_fresh(code: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``code`` as ``python readme_block.py`` in its own process, with ipsolve imported afresh (as a
    reader pastes a block into a new session), so that no earlier block's imports or state can hide a
    failure: forked from a warm server that has imported torch, diffusers and the like but not ipsolve
    (:mod:`cli_process`; a fresh interpreter spends ~6 s on those imports)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    script = cwd / "readme_block.py"
    script.write_text(code)
    proc = run_ipsolve([], cwd=cwd, env=env, timeout=timeout, script=script)
    assert proc.returncode == 0, f"README block failed:\n{code}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def test_foundation_example_runs_on_a_tiny_sd3_pipeline(tmp_path):
    """The SD3 block as written, with the tiny SD3 pipeline of the foundation tests in place of the
    gated weights, 32 px, CPU, float32 and 2 iterations, in a fresh interpreter."""
    from tiny_pipelines import make_sd3

    (code,) = blocks("python-sd3")
    folder = make_sd3(tmp_path / "sd3")
    swaps = {'"sd3-medium", 512, "cuda"': f'"{folder}", 32, "cpu"', 'dtype="bf16"': 'dtype="float32"',
             "iterations=1000": "iterations=2"}
    for old, new in swaps.items():
        assert old in code, old
        code = code.replace(old, new)
    run_fresh(code + "\nassert res.x.shape == (1, 3, 32, 32), res.x.shape\n", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(index, tmp_path):
    """Each ``python`` block of the README, alone, in a fresh interpreter (an earlier block's
    ``from ipsolve import datasets`` once hid that the deepinv block's ``ipsolve.datasets`` failed)."""
    code = blocks("python")[index]
    if "import deepinv" in code and importlib.util.find_spec("deepinv") is None:
        pytest.skip("deepinv is not installed (pip install 'ipsolve[deepinv]')")
    run_fresh(code, tmp_path)
    if "output_dir=\"out/\"" in code:
        assert (tmp_path / "out" / "summary.json").is_file()
