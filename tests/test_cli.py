"""The ``ipsolve`` command line end to end (subprocesses, tiny settings, offline) and the
Python API that shares its runner: outputs, 2 processes = 1 process, kill -9 and resume,
sweeps, bad input."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "ipsolve" / "demo_data" / "phantom"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
# tiny settings: 3 DMPlug iterations, 2 images per batch
TINY = ["solver.iterations=3", "data.batch_size=2", "progress=false"]
OUTPUTS = ("recon", "measurement", "initial")
PER_RUN = ("metrics.csv", "summary.json", "grid.png", "config.yaml")


def ipsolve(*args, cwd, timeout=300, launcher=()):
    cmd = [*launcher, "-m", "ipsolve", *args] if launcher else [sys.executable, "-m", "ipsolve", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def check_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def read_png(path):
    from skimage import io

    return io.imread(path).astype(np.int16)


def temp_files(folder: Path):
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".write-test")]


def check_run_dir(run: Path, names: list[str], ground_truth=True):
    """Every output exists once per image, nothing temporary is left, files decode."""
    for sub in OUTPUTS:
        assert sorted(p.stem for p in (run / sub).glob("*.png")) == sorted(names), sub
    assert sorted(p.stem for p in (run / "records").glob("*.json")) == sorted(names)
    for f in PER_RUN:
        assert (run / f).is_file(), f
    assert not temp_files(run), temp_files(run)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["name"] for r in rows] == sorted(names)  # each image exactly once
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_finished"] == len(names) and sorted(summary["rank"]) == sorted(names)
    assert sorted(summary["seeds"]) == sorted(names)
    for key in ("nfe", "seconds", "residual", "stop_reasons"):
        assert summary[key], key
    if ground_truth:
        for m in ("psnr", "ssim"):
            s = summary["metrics"][m]
            assert s["n"] == len(names) and np.isfinite(s["mean"]) and np.isfinite(s["std"])
        assert "lpips" in summary["metrics"]  # a number, or null when the backbone is not cached
        assert {"psnr", "ssim", "lpips"} <= set(rows[0])
    else:
        assert summary["metrics"] == {} and "psnr" not in rows[0]
    for name in names:
        rec = json.loads((run / "records" / f"{name}.json").read_text())
        assert rec["name"] == name and {"rank", "seed", "info"} <= set(rec)
        assert {"nfe", "iterations", "stop_reason", "residual", "seconds"} <= set(rec["info"])
        assert ("metrics" in rec) == ground_truth
        read_png(run / "recon" / f"{name}.png")
    grid = read_png(run / "grid.png")
    cols = 4 if ground_truth else 3  # one row per image: [truth |] measurement | initial guess | reconstruction
    assert grid.shape[:2] == (2 + len(names) * 34, 2 + cols * 34)  # 32 px images, 2 px gaps
    return summary


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The default job (SR ×4, dmplug_cpu, phantom prior, demo data) on 4 images, 1 process."""
    base = tmp_path_factory.mktemp("cli")
    run = base / "single"
    proc = check_ok(ipsolve("data.max_images=4", *TINY, f"hydra.run.dir={run}", cwd=base))
    return run, proc


def test_help():
    exe = Path(sys.executable).parent / "ipsolve"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ipsolve"]
    proc = check_ok(subprocess.run([*cmd, "--help"], env=ENV, capture_output=True, text=True, timeout=120))
    assert "ipsolve" in proc.stdout and "operator: " in proc.stdout and "super_resolution" in proc.stdout


def test_default_command_writes_every_output(single_run):
    run, proc = single_run
    names = sorted(p.stem for p in DEMO.glob("*.png"))[:4]
    summary = check_run_dir(run, names)
    assert summary["num_processes"] == 1 and set(summary["rank"].values()) == {0}
    assert summary["operator"]["name"] == "super_resolution" and summary["solver"]["name"] == "dmplug"
    assert summary["prior"]["source"] == "bundled:phantom-ddpm" and summary["sigma"] == 0.01
    assert f"results written to {run}" in proc.stdout and "PSNR" in proc.stdout
    # SR ×4: the 8×8 measurement is shown at 32×32 (nearest), like every other image
    assert read_png(run / "measurement" / f"{names[0]}.png").shape == read_png(run / "recon" / f"{names[0]}.png").shape
    cfg = (run / "config.yaml").read_text()
    assert "super_resolution" in cfg and "dmplug" in cfg


def test_two_processes_equal_one(single_run, tmp_path):
    """torchrun, 2 CPU processes: one run directory (rank 0's, even when the ranks' Hydra chose
    different ones), each image once, the same reconstructions as 1 process."""
    single, _ = single_run
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    proc = check_ok(ipsolve("data.max_images=4", *TINY, f"hydra.run.dir={tmp_path}/mp_" + "${oc.env:RANK}",
                            cwd=tmp_path, launcher=launcher))
    run = tmp_path / "mp_0"
    assert not (tmp_path / "mp_1").exists(), "rank 1's stray Hydra directory was not removed"
    names = sorted(p.stem for p in DEMO.glob("*.png"))[:4]
    summary = check_run_dir(run, names)
    assert summary["num_processes"] == 2
    assert sorted(summary["rank"].values()) == [0, 0, 1, 1]
    assert (run / "ipsolve_rank1.log").is_file()
    assert proc.stdout.count("results written to") == 1  # rank 0 reports
    one = json.loads((single / "summary.json").read_text())
    assert summary["seeds"] == one["seeds"]
    for name in names:
        for sub in OUTPUTS:
            a, b = read_png(single / sub / f"{name}.png"), read_png(run / sub / f"{name}.png")
            assert np.abs(a - b).max() <= 1, (sub, name)  # equal up to 8-bit rounding
        ra = json.loads((single / "records" / f"{name}.json").read_text())
        rb = json.loads((run / "records" / f"{name}.json").read_text())
        assert ra["metrics"]["psnr"] == pytest.approx(rb["metrics"]["psnr"], abs=0.05)


def test_kill_and_resume(tmp_path):
    run = tmp_path / "resume"
    args = ["data.max_images=3", "data.batch_size=1", "solver.iterations=12", "solver.stop=[]", "progress=false",
            f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, "-m", "ipsolve", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = run / "records"
    deadline = time.time() + 240
    try:
        while not (records.is_dir() and any(records.glob("*.json"))):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no record appeared"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {p.name: p.read_bytes() for p in records.glob("*.json")}
    assert 1 <= len(done_before) < 3, "kill must happen mid-run"
    # what a kill during a write would leave: a temporary file and an image without its record
    (run / "recon").mkdir(exist_ok=True)
    (run / "recon" / ".ellipses_2.tmp.png").write_bytes(b"\x89PNG truncated")
    proc = check_ok(ipsolve(*args, cwd=tmp_path))
    assert "already finished" in proc.stderr + proc.stdout + (run / "ipsolve.log").read_text()
    names = sorted(p.stem for p in DEMO.glob("*.png"))[:3]
    summary = check_run_dir(run, names)
    for name, content in done_before.items():  # finished images were skipped, not redone
        assert (records / name).read_bytes() == content
    assert summary["num_finished"] == 3 and summary["num_skipped"] == 0


def test_measurements_only(single_run, tmp_path):
    """Measurements alone (ipsolve's own measurement/ folder): no ground truth, no PSNR/SSIM/LPIPS."""
    single, _ = single_run
    run = tmp_path / "ymode"
    check_ok(ipsolve("data=folder", f"data.path={single / 'measurement'}", "data.measurements=true",
                     "data.max_images=2", *TINY, f"hydra.run.dir={run}", cwd=tmp_path))
    names = sorted(p.stem for p in (single / "measurement").glob("*.png"))[:2]
    check_run_dir(run, names, ground_truth=False)


def test_sweep_writes_comparison(tmp_path):
    sweep = tmp_path / "sweep"
    proc = check_ok(ipsolve("-m", "operator=super_resolution,inpainting", "data.max_images=1", *TINY,
                            f"hydra.sweep.dir={sweep}", cwd=tmp_path))
    assert (sweep / "sweep_summary.md").is_file() and (sweep / "sweep_summary.csv").is_file()
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert sorted(r["operator"] for r in rows) == ["inpainting", "super_resolution"]
    assert all(r["psnr"] not in ("", "n/a") for r in rows)
    assert "operator=inpainting" in (sweep / "sweep_summary.md").read_text()
    assert "sweep summary written" in proc.stdout


# -- bad input ------------------------------------------------------------------------
def test_missing_data_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    proc = ipsolve("data=folder", f"data.path={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "records").exists()


def test_corrupt_image_is_skipped(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for name in ("ellipses_0.png", "ellipses_1.png"):
        shutil.copy(DEMO / name, data / name)
    (data / "broken.png").write_bytes(b"this is not a png")
    run = tmp_path / "run"
    proc = check_ok(ipsolve("data=folder", f"data.path={data}", *TINY, f"hydra.run.dir={run}", cwd=tmp_path))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_finished"] == 2 and summary["num_skipped"] == 1
    assert summary["skipped"][0]["file"].endswith("broken.png") and summary["skipped"][0]["reason"]
    assert "broken.png" in (run / "ipsolve.log").read_text()
    assert "broken.png" in proc.stdout + proc.stderr
    assert sorted(p.stem for p in (run / "records").glob("*.json")) == ["ellipses_0", "ellipses_1"]


def test_unknown_config_option(tmp_path):
    proc = ipsolve("no_such_option=1", cwd=tmp_path)
    assert proc.returncode != 0 and "Could not override 'no_such_option'" in proc.stderr
    proc = ipsolve("solver=no_such_solver", cwd=tmp_path)
    assert proc.returncode != 0 and "Could not find 'solver/no_such_solver'" in proc.stderr
    assert "dmplug_cpu" in proc.stderr  # Hydra lists the options


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = ipsolve(f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert proc.returncode != 0
    assert "cannot write to the output directory" in proc.stderr and str(blocker) in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the Python API over the same runner ------------------------------------------------
def test_reconstruct_api_matches_cli(single_run, tmp_path, request):
    import torch

    import ipsolve
    from ipsolve.io import load_image, to_uint8
    from ipsolve.runner import RunError

    single, _ = single_run
    threads = torch.get_num_threads()
    torch.set_num_threads(int(ENV["OMP_NUM_THREADS"]))  # as in the subprocesses (conftest may set more)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    files = sorted(DEMO.glob("*.png"))[:2]
    x, records = ipsolve.reconstruct(files, operator="super_resolution",
                                     solver={"name": "dmplug", "iterations": 3, "ddim_steps": 2, "warm_start": 0.25,
                                             "window": 20, "patience": 50},
                                     prior="phantom_ddpm", output_dir=tmp_path / "api", batch_size=2, progress=False)
    assert x.shape == (2, 1, 32, 32) and [r["name"] for r in records] == [f.stem for f in files]
    for xi, f in zip(x, files):  # the same numbers as the command line (same per-image seeds)
        cli = to_uint8(load_image(single / "recon" / f"{f.stem}.png")).astype(np.int16)
        assert np.abs(to_uint8(xi).astype(np.int16) - cli).max() <= 1
    assert (tmp_path / "api" / "summary.json").is_file()
    with pytest.raises(RunError, match="different settings"):  # resuming with other settings is refused
        ipsolve.reconstruct(files, operator="inpainting", solver="dmplug_cpu", output_dir=tmp_path / "api")
    # a tensor input, no outputs written
    res = ipsolve.reconstruct(torch.zeros(1, 1, 32, 32), solver=ipsolve.make_solver("dmplug", iterations=2, progress=False),
                              prior="bundled:phantom-ddpm", progress=False)
    assert res.x.shape == (1, 1, 32, 32) and res.output_dir is None and res.records[0]["name"] == "image_0000"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunError, match="cannot write"):
        ipsolve.reconstruct(files, output_dir=blocker / "out")
