"""The ``ipsolve`` command line end to end (each command its own process — forked from a warm
server, :mod:`cli_process`, or a fresh interpreter where start-up is under test — tiny settings,
offline) and the Python API that shares its runner: outputs, 2 processes = 1 process, kill -9
and resume, sweeps, bad input."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_process import run_ipsolve

from ipsolve.runner.grid import row_labels

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "ipsolve" / "demo_data" / "phantom"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
# tiny settings: 3 DMPlug iterations, 2 images per batch
TINY = ["solver.iterations=3", "data.batch_size=2", "progress=false"]
OUTPUTS = ("recon", "measurement", "initial")
PER_RUN = ("metrics.csv", "summary.json", "grid.png", "config.yaml", "report.txt")


def ipsolve(*args, cwd, timeout=300, launcher=()):
    """``python -m ipsolve *args`` in its own process (forked from a warm server, :mod:`cli_process`;
    with a ``launcher``, a fresh interpreter started by it)."""
    if not launcher:
        return run_ipsolve(args, cwd=cwd, env=ENV, timeout=timeout)
    return subprocess.run([*launcher, "-m", "ipsolve", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


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
    assert all(r["residual_warning"] in ("yes", "no") and r["worse_than_initial"] in ("yes", "no") for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_finished"] == len(names) and sorted(summary["rank"]) == sorted(names)
    assert sorted(summary["seeds"]) == sorted(names)
    for key in ("nfe", "seconds_per_image", "residual", "stop_reasons", "threads"):
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
    # 32 px images enlarged ×3 (nearest), 2 px gaps, a 14 px header naming the columns, a margin naming the rows
    margin = row_labels(names)[1]
    assert grid.shape[:2] == (14 + 2 + len(names) * 98, margin + 2 + cols * 98) and margin > 6
    assert (grid[:14] < 128).any() and (grid[14:, :margin] < 128).any()  # the header and the margin have text
    assert framed_in_red(grid, len(names), cols - 1, margin) == [r["decision"] == "review" for r in rows]
    return summary


def framed_in_red(grid, n_rows: int, column: int, margin: int) -> list[bool]:
    """Per row of a 32-px run's grid.png: whether the tile in ``column`` has a red frame (the
    middle of its left padding; white when not flagged); ``margin``: the row names' width."""
    px = [grid[14 + i * 98 + 49, margin + column * 98][:3] for i in range(n_rows)]
    assert all(tuple(p) in ((255, 255, 255), (220, 0, 0)) for p in px), px
    return [tuple(p) == (220, 0, 0) for p in px]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The default job (SR ×4, dmplug_cpu, phantom prior, demo data) on 4 images, 1 process,
    progress on (its output is a pipe, not a terminal: progress comes as log lines)."""
    base = tmp_path_factory.mktemp("cli")
    run = base / "single"
    proc = check_ok(ipsolve("data.max_images=4", *[a for a in TINY if a != "progress=false"], f"hydra.run.dir={run}",
                            cwd=base))
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
    assert summary["prior"]["memory_format"] == "channels_last"  # channels_last="auto" on a CPU
    assert f"results written to {run}" in proc.stdout and "PSNR" in proc.stdout
    # the report the console showed is kept with the run (it was printed only: audit 2026-12-07)
    saved = (run / "report.txt").read_text()
    assert saved.startswith("ipsolve: 4 image(s) reconstructed") and "PSNR" in saved and saved in proc.stdout
    # SR ×4: the 8×8 measurement is shown at 32×32 (nearest), like every other image
    assert read_png(run / "measurement" / f"{names[0]}.png").shape == read_png(run / "recon" / f"{names[0]}.png").shape
    cfg = (run / "config.yaml").read_text()
    assert "super_resolution" in cfg and "dmplug" in cfg
    # every measurement kept exactly beside its picture (an 8-bit picture clips and rounds y)
    assert sorted(p.stem for p in (run / "measurement").glob("*.npy")) == names
    assert np.load(run / "measurement" / f"{names[0]}.npy").shape == (1, 8, 8)
    # threads: chosen at the start, logged with the reason, recorded (the tests' environment sets OMP_NUM_THREADS=1)
    log = (run / "ipsolve.log").read_text()
    assert summary["threads"] == {"setting": "auto", "threads": 1, "reason": "OMP_NUM_THREADS=1 in the environment"}
    assert "torch threads: 1 per process (OMP_NUM_THREADS=1 in the environment)" in log
    # no terminal: a progress line per batch with the images done, elapsed time and what is left
    assert "progress: batch 1/2 finished | 2/4 images done |" in log and "left" in log
    assert "progress: batch 2/2 finished | 4/4 images done |" in log
    # honest times: the batch's time divided by its images; medians beside the means
    rec = json.loads((run / "records" / f"{names[0]}.json").read_text())
    assert rec["seconds_per_image"] == pytest.approx(rec["batch_seconds"] / 2)
    assert "median" in summary["metrics"]["psnr"] and ", median " in proc.stdout
    assert "seconds per image" in proc.stdout


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
    # rank 1's warnings on the shared console say whose they are (they read as rank 0's: audit 2026-12-07)
    rank1 = [line for line in (proc.stdout + proc.stderr).splitlines() if "blobs_2:" in line or "blobs_3:" in line]
    assert rank1 and all(line.startswith("[rank 1][") for line in rank1), rank1
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
        # accelerate names a torchrun CPU process's device "cpu:0": kept, it changed results by up to 0.02 dB
        assert ra["device"] == rb["device"] == "cpu"
    # a refused resume into the shared folder (hydra.run.dir given): rank 1's Hydra wrote its settings over the
    # .hydra record rank 0 had restored (an audit, 2026-12-07); now only rank 0 keeps one, and says the error once
    record = (run / ".hydra" / "overrides.yaml").read_text()
    refused = ipsolve("data.max_images=4", *TINY, f"hydra.run.dir={run}", "sigma=0.05", cwd=tmp_path,
                      launcher=[*launcher[:-1], "29518"])
    assert refused.returncode != 0 and refused.stderr.count("ipsolve: error: ") == 1, refused.stderr[-3000:]
    assert "interrupted" not in refused.stderr  # (rank 1, ended by torchrun while it waited for rank 0)
    assert (run / ".hydra" / "overrides.yaml").read_text() == record
    # a failed start in the default folder leaves nothing (an empty outputs/<date>/ was left: each process's
    # Hydra makes its own timed folder, and the first noted the date folder the other had made as there before)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    failed = ipsolve("samples=0", cwd=fresh, launcher=[*launcher[:-1], "29520"])
    assert failed.returncode != 0 and "samples must be an integer >= 1" in failed.stderr
    assert not any(fresh.iterdir()), sorted(fresh.rglob("*"))


def test_accelerates_one_process_cpu_launch_is_named(monkeypatch):
    """``accelerate launch --cpu --num_processes 2`` starts one process (its simple launcher sets
    ACCELERATE_USE_CPU and a MASTER_ADDR, nothing else): said at run time (it went on silently);
    not said for ``--cpu`` alone, nor under torchrun or mpirun."""
    from ipsolve.runner.processes import one_of_many_asked

    for var in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert not one_of_many_asked()  # --cpu, one process asked for
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert one_of_many_asked()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # mpirun started them
    assert not one_of_many_asked()
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")  # a GPU launch
    assert not one_of_many_asked()


def test_other_ranks_leave_hydra_to_the_first(monkeypatch, tmp_path):
    """Rank > 0 writes no .hydra record and logs to its own file from the start; a folder holding only
    Hydra's files and a rank log is a stray one (removed), and a failed start removes a rank's log."""
    from ipsolve import cli

    monkeypatch.setenv("RANK", "0")
    assert cli.rank_overrides() == []
    monkeypatch.setenv("RANK", "1")
    assert cli.rank_overrides() == ["hydra.output_subdir=null", "hydra/hydra_logging=none",
                                    "hydra.job_logging.handlers.file.filename="
                                    "${hydra.runtime.output_dir}/${hydra.job.name}_rank1.log"]
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "ipsolve_rank1.log").write_text("")
    assert cli._hydra_files_only(tmp_path, "ipsolve")
    (tmp_path / "recon").mkdir()
    assert not cli._hydra_files_only(tmp_path, "ipsolve")


def test_two_process_sweep(tmp_path):
    """torchrun, 2 CPU processes, a ``-m`` sweep: every job runs (the process group was destroyed
    after the first job, which failed the others), the first process alone writes and prints the
    sweep summary (both wrote it, and one lost rows), and a setting error is one line, not one per
    process (audit 2026-12-07).  A job whose folder another live run holds is refused on every
    process: only the first process used to learn of it, went on to the next job while the others
    waited in the refused job's first collective, and the sweep hung until killed (2026-12-07)."""
    from ipsolve.runner.lock import LOCK_FILE

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519"]
    (tmp_path / "sw" / "2").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    (tmp_path / "sw" / "2" / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
    try:  # job 1 runs after job 0 in the same processes; job 2's folder is held; job 3's setting fails it (samples=0)
        proc = ipsolve("-m", "samples=1,1,1,0", "data.max_images=2", *TINY, "hydra.sweep.dir=sw", cwd=tmp_path,
                       launcher=launcher)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "sw" / "sweep_summary.csv")))
    assert [bool(r["error"]) for r in rows] == [False, False, True, True], rows
    # the held job has its row (it had none), with its own settings, not those of the run holding its folder
    assert "another ipsolve run" in rows[2]["error"] and rows[2]["solver"] == "dmplug", rows[2]
    # the settings as typed: the "++" the command line puts before a solver parameter is not shown
    table = (tmp_path / "sw" / "sweep_summary.md").read_text()
    assert "Overrides common to all runs: data.max_images=2 solver.iterations=3" in table and "++" not in table
    for job in ("0", "1"):
        assert json.loads((tmp_path / "sw" / job / "summary.json").read_text())["num_processes"] == 2
    assert proc.stdout.count("sweep summary written to") == 1
    assert proc.stderr.count("ipsolve: error: sweep job 2") == 1 and "another ipsolve run" in proc.stderr
    assert proc.stderr.count("ipsolve: error: sweep job 3") == 1 and "samples must be" in proc.stderr


def test_kill_and_resume(tmp_path):
    run = tmp_path / "resume"
    args = ["data.max_images=3", "data.batch_size=1", "solver.iterations=12", "solver.stop=[]", "progress=false",
            f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, "-m", "ipsolve", *args], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = run / "records"
    deadline = time.time() + 240
    try:
        while not (records.is_dir() and any(records.glob("[!.]*.json"))):  # a finished record, not a temp file
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no record appeared"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {p.name: p.read_bytes() for p in records.glob("[!.]*.json")}
    assert 1 <= len(done_before) < 3, "kill must happen mid-run"
    # what a kill during a write would leave: a temporary file and an image without its record
    (run / "recon").mkdir(exist_ok=True)
    (run / "recon" / ".blobs_2.tmp.png").write_bytes(b"\x89PNG truncated")
    check_ok(ipsolve(*args, cwd=tmp_path))
    names = sorted(p.stem for p in DEMO.glob("*.png"))[:3]
    summary = check_run_dir(run, names)
    assert summary["num_resumed"] == len(done_before)
    for name, content in done_before.items():  # finished images were skipped, not redone
        assert (records / name).read_bytes() == content
    assert summary["num_finished"] == 3 and summary["num_skipped"] == 0
    # the killed run wrote no summary: its finished batches' time still counts (was: left out)
    assert summary["wall_seconds_all_runs"] > summary["wall_seconds"]
    # resuming with another setting is refused, and Hydra's record keeps the settings the images had
    # (Hydra rewrote .hydra/ with the refused settings before the run started)
    hydra_record = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    check_error(ipsolve(*args, "seed=3", cwd=tmp_path), "holds results of different settings", "changed: seed (0 → 3)")
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_record


def test_ctrl_c_says_how_to_resume(tmp_path):
    """SIGINT (Ctrl-C) mid-run: one line saying how to resume, exit status 130, no traceback; the
    finished images stay and the same command resumes.  The child gets SIGINT's default disposition:
    a suite started in the background (``cmd &``) inherits SIGINT ignored, and Python then installs
    no KeyboardInterrupt handler — the run finished as if never interrupted."""
    run = tmp_path / "run"
    args = ["data.max_images=2", "data.batch_size=1", "solver.iterations=40", "solver.stop=[]", "progress=false",
            f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, "-m", "ipsolve", *args], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    try:
        while not any((run / "records").glob("[!.]*.json")):  # interrupt after the first image
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no record appeared"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out[-2000:], err[-3000:])
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert err.strip().splitlines()[-1] == "ipsolve: interrupted; run the same command again to resume"
    assert len(list((run / "records").glob("[!.]*.json"))) == 1


def test_reconstruction_worse_than_the_initial_guess_is_flagged(tmp_path):
    """The first CLI example of the README's past (inpainting with a short DPS) fits the data worse
    than the harmonic fill it starts from: flagged in the log, report, metrics.csv and summary.json,
    and marked for review although no review setting was given."""
    run = tmp_path / "run"
    proc = check_ok(ipsolve("operator=inpainting", "solver=dps_cpu", "solver.steps=10", "data.max_images=1",
                            "progress=false", f"hydra.run.dir={run}", cwd=tmp_path))
    summary = json.loads((run / "summary.json").read_text())
    (name,) = summary["worse_than_initial"]
    rec = json.loads((run / "records" / f"{name}.json").read_text())
    assert rec["info"]["residual"] > max(rec["initial_residual"], 1.0)  # measurable without the ground truth
    assert summary["review"]["decisions"] == {name: "review"}
    assert "fit the measurement worse than the initial guess" in proc.stdout
    assert "explains the measurement worse than the initial guess" in (run / "ipsolve.log").read_text()
    row = next(csv.DictReader(open(run / "metrics.csv")))
    assert row["worse_than_initial"] == "yes" and row["decision"] == "review"
    assert framed_in_red(read_png(run / "grid.png"), 1, 3, row_labels([name])[1]) == [True]  # truth | … | recon


def test_measurements_only(single_run, tmp_path):
    """Measurements alone (ipsolve's own measurement/ folder): no ground truth, no PSNR/SSIM/LPIPS.
    The exact .npy files are read (not the 8-bit pictures) and the operator and sigma come from
    the run that made them, so the reconstructions equal that run's."""
    single, _ = single_run
    run = tmp_path / "ymode"
    check_ok(ipsolve("data=folder", f"data.path={single / 'measurement'}", "data.measurements=true",
                     "data.max_images=2", *TINY, f"hydra.run.dir={run}", cwd=tmp_path))
    names = sorted(p.stem for p in (single / "measurement").glob("*.png"))[:2]
    check_run_dir(run, names, ground_truth=False)
    log = (run / "ipsolve.log").read_text()
    assert "measurements only: operator super_resolution (scale=4, kernel='bicubic'), i.e. " \
           "operator=super_resolution and sigma 0.01 read from" in log
    for name in names:  # a measurement read from its rounded 8-bit picture would change these
        assert np.array_equal(read_png(run / "recon" / f"{name}.png"), read_png(single / "recon" / f"{name}.png"))
    # the measurements copied elsewhere with their run's summary.json and config.yaml beside them: recognised
    # (the folder fell back to the default operator and said "the summary.json ... names its operator")
    from ipsolve.runner.inputs import Item, recorded_settings

    copied = tmp_path / "copied"
    copied.mkdir()
    for name in names:
        shutil.copy(single / "measurement" / f"{name}.npy", copied)
    for f in ("summary.json", "config.yaml"):
        shutil.copy(single / f, copied)
    recorded = recorded_settings([Item(n, path=copied / f"{n}.npy") for n in names])
    assert recorded["operator"]["name"] == "super_resolution" and recorded["config"]["name"] == "super_resolution"


def test_measurements_need_the_operator_state_that_made_them(tmp_path):
    """Inpainting measurements: the mask is hidden state.  ipsolve's own measurement folder
    names it (its run's summary) and refuses another; foreign files need operator.seed or
    operator.mask, and holes stored with any value are ignored (the measurement is projected onto
    the mask)."""
    made = tmp_path / "made"
    check_ok(ipsolve("operator=inpainting", "operator.seed=3", "data.max_images=2", *TINY, f"hydra.run.dir={made}",
                     cwd=tmp_path))
    # ipsolve's own folder with other settings: refused, naming both
    check_error(ipsolve("data=folder", f"data.path={made / 'measurement'}", "data.measurements=true",
                        "operator=inpainting", f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path),
                "made by the operator inpainting (mask='random', missing=0.7, seed=3)", "seed=0)")
    # the same exact measurements elsewhere, holes painted white: no provenance → the seed must be given
    from ipsolve.operators import make_operator

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    mask = make_operator("inpainting", seed=3, image_size=32).mask[0].numpy() > 0
    for p in sorted((made / "measurement").glob("*.npy")):
        y = np.load(p)
        y[~np.broadcast_to(mask, y.shape)] = 1.0
        np.save(foreign / p.name, y)
    check_error(ipsolve("data=folder", f"data.path={foreign}", "data.measurements=true", "operator=inpainting",
                        f"hydra.run.dir={tmp_path / 'y'}", cwd=tmp_path), "operator.seed", "operator.mask")
    own, other = tmp_path / "own", tmp_path / "other"
    check_ok(ipsolve("data=folder", f"data.path={made / 'measurement'}", "data.measurements=true",
                     "operator=inpainting", "operator.seed=3", *TINY, f"hydra.run.dir={own}", cwd=tmp_path))
    check_ok(ipsolve("data=folder", f"data.path={foreign}", "data.measurements=true", "operator=inpainting",
                     "operator.seed=3", *TINY, f"hydra.run.dir={other}", cwd=tmp_path))
    for p in (own / "recon").glob("*.png"):  # black holes are ignored: the same measurement, the same result
        assert np.array_equal(read_png(p), read_png(other / "recon" / p.name))


def test_residual_far_above_the_noise_level_is_reported(tmp_path):
    """Measurements of a 9-px Gaussian blur of std 1 solved with the right blur fit to the noise
    level (measured: residual 1.75 σ√m); solved with std 3 they cannot (10–17 σ√m), and the run
    says so in its log, summary and report."""
    made = tmp_path / "made"
    blur = ["operator=gaussian_blur", "operator.size=9"]
    check_ok(ipsolve(*blur, "operator.std=1.0", "data.max_images=1", *TINY, f"hydra.run.dir={made}", cwd=tmp_path))
    # ipsolve's own folder refuses another operator (naming its own); as foreign files they are taken as given
    foreign = tmp_path / "foreign"
    shutil.copytree(made / "measurement", foreign)
    dps = ["solver=dps_cpu", "progress=false", "data=folder", "data.measurements=true", f"data.path={foreign}"]
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    proc = check_ok(ipsolve(*dps, *blur, "operator.std=1.0", f"hydra.run.dir={right}", cwd=tmp_path))
    summary = json.loads((right / "summary.json").read_text())
    assert summary["residual"]["max"] < 3 and not summary["residual_warnings"] and "warning" not in proc.stdout
    proc = check_ok(ipsolve(*dps, *blur, "operator.std=3.0", f"hydra.run.dir={wrong}", cwd=tmp_path))
    summary = json.loads((wrong / "summary.json").read_text())
    assert summary["residual"]["min"] > 5 and summary["residual_warnings"]
    assert "far from the noise level" in proc.stdout and "does not fit" in (wrong / "ipsolve.log").read_text()


def test_colour_images_for_a_grey_prior_are_flagged(tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(ROOT / "ipsolve" / "demo_data" / "photo", data)
    run = tmp_path / "run"
    proc = check_ok(ipsolve("data=folder", f"data.path={data}", "data.max_images=1", *TINY, f"hydra.run.dir={run}",
                            cwd=tmp_path))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["warnings"] and "converted to grey" in summary["warnings"][0]
    assert "photo_ddpm" in proc.stdout + proc.stderr


def test_sweep_writes_comparison(tmp_path):
    """Every combination runs; one that cannot (FMPlug with the default diffusion prior) is
    recorded with its one-line reason — naming the prior that fits — and the others still run."""
    sweep = tmp_path / "sweep"
    proc = ipsolve("-m", "operator=super_resolution,inpainting", "solver=dmplug_cpu,fmplug_cpu", "data.max_images=1",
                   *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a failed job fails the sweep, after the others ran
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (sweep / "sweep_summary.md").is_file() and (sweep / "sweep_summary.csv").is_file()
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    ok = [r for r in rows if not r["error"]]
    assert sorted(r["operator"] for r in ok) == ["inpainting", "super_resolution"]
    assert all(r["psnr"] not in ("", "n/a") and r["solver"] == "dmplug" for r in ok)
    assert all(r["residual_warnings"].isdigit() and r["flagged_for_review"].isdigit() for r in ok)
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 2 and all("fmplug" in r["overrides"] and "prior=phantom_flow" in r["error"] for r in failed)
    assert all(r["solver"] == "fmplug" and r["operator"] for r in failed)  # known: from the job's .hydra (was n/a)
    md = (sweep / "sweep_summary.md").read_text()
    assert "operator=inpainting" in md and md.count("failed: solver 'fmplug' cannot use a diffusion prior") == 2
    assert "sweep summary written" in proc.stdout and "2 sweep job(s) failed" in proc.stderr


def test_a_sweep_named_by_settings_with_a_path_is_summarised_and_strict_fails_it(tmp_path):
    """``hydra.sweep.subdir=${hydra.job.override_dirname}`` with ``data.path=/…`` nests each job's
    folder; the summary looked one level down and found none (no summary, exit 0 with a failed job).
    ``strict=true`` fails a sweep whose jobs skipped inputs, which the images column counts (a sweep's
    exit status was 0 and only each job's summary.json said so: audit 2026-12-07)."""
    data = tmp_path / "images"
    data.mkdir()
    shutil.copy(DEMO / "blobs_0.png", data / "failed.png")  # its records/failed.json is no job's (the review of
    (data / "broken.png").write_bytes(b"this is not a png")  # 2026-12-07: it was taken for a failed job)
    sweep = tmp_path / "sweep"
    proc = ipsolve("-m", "data=folder", f"data.path={data}", "sigma=0.01,0.05", "strict=true", *TINY,
                   f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.override_dirname}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(list(sweep.rglob("summary.json"))) == 2 and all(p.parent.parent != sweep for p in sweep.rglob("summary.json"))
    rows = list(csv.DictReader(open(sweep / "sweep_summary.csv")))
    assert [(r["images"], r["skipped"], r["error"]) for r in rows] == [("1", "1", ""), ("1", "1", "")]
    assert "| 1 (1 skipped) |" in (sweep / "sweep_summary.md").read_text()
    assert "ipsolve: error: strict=true: 2 sweep job(s) skipped inputs" in proc.stderr


def test_a_run_into_a_folder_another_live_run_holds_changes_nothing_there(tmp_path):
    """The second of two runs into one folder stops in one line and leaves the first's files as they were:
    its config.yaml, records and Hydra's record of its settings (the refusal went through the failed-start
    clean-up, which removed them, and Hydra's rewrite of .hydra stayed: the review of 2026-12-07)."""
    run = tmp_path / "run"
    check_ok(ipsolve("data.max_images=1", *TINY, f"hydra.run.dir={run}", cwd=tmp_path))
    for record in (run / "records").glob("*.json"):  # as a live run looks before its first image is done
        record.unlink()
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "ipsolve.log"}
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run / ".ipsolve.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                       "started": "2026-12-07 12:00:00"}))
        proc = ipsolve("data.max_images=2", "solver.iterations=5", "data.batch_size=2", "progress=false",
                       f"hydra.run.dir={run}", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    check_error(proc, f"another ipsolve run (process {holder.pid}, started 2026-12-07 12:00:00) is writing to")
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "ipsolve.log"}
    assert after.pop(Path(".ipsolve.lock")) and after == {k: v for k, v in before.items()}


def test_a_refused_run_into_a_python_api_folder_leaves_it_as_it_was(tmp_path):
    """A command-line run into a folder the Python API wrote (other images, other settings) mixed its
    results with the folder's; refused now, it leaves no Hydra record or log behind (2026-12-07)."""
    import ipsolve as api

    run = tmp_path / "api"
    api.reconstruct(api.datasets.heldout_phantoms(1, 32), solver=api.make_solver("dps_cpu", steps=2), output_dir=run,
                    threads=1, progress=False, return_images=False)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    check_error(ipsolve("data.max_images=1", *TINY, f"hydra.run.dir={run}", cwd=tmp_path),
                "holds results of different settings", "another input's")
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_the_resume_line_names_sigterm():
    """SIGTERM (a time limit, scancel, a launcher stopping the others after one process failed) is
    not reported as Ctrl-C's "interrupted" (audit 2026-12-07: a killed rank read as an interruption)."""
    from ipsolve import cli

    try:
        with pytest.raises(KeyboardInterrupt):
            cli._terminated(signal.SIGTERM, None)
        assert cli._stopped().startswith("stopped by SIGTERM (a time limit, scancel, or a launcher stopping")
    finally:
        cli._SIGNAL.clear()
    assert cli._stopped() == "interrupted"


# -- bad input ------------------------------------------------------------------------
def test_missing_data_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    proc = ipsolve("data=folder", f"data.path={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "records").exists()


def test_a_scan_given_to_the_image_loader_names_its_data_preset(tmp_path):
    """A NIfTI file, or a folder of suffix-less DICOM files, given as ``data=folder``: one line naming
    ``data=nifti`` / ``data=dicom`` (not the image reader's plug-in error)."""
    import shutil

    from pydicom.data import get_testdata_file

    (tmp_path / "scan.nii.gz").write_bytes(b"\x1f\x8b")  # the suffix decides; never read
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), series / "IM0001")
    check_error(ipsolve("data=folder", f"data.path={tmp_path / 'scan.nii.gz'}", cwd=tmp_path), "use data=nifti")
    check_error(ipsolve("data=folder", f"data.path={series}", cwd=tmp_path), "no images", "use data=dicom")


def test_corrupt_image_is_skipped(tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for name in ("blobs_0.png", "blobs_1.png"):
        shutil.copy(DEMO / name, data / name)
    (data / "broken.png").write_bytes(b"this is not a png")
    from skimage import io as skio  # an own image not at the prior's size: resized, and said so

    skio.imsave(data / "wide.png", np.tile(read_png(DEMO / "blobs_2.png").astype(np.uint8), (2, 3))[:40, :56],
                check_contrast=False)
    run = tmp_path / "run"
    proc = check_ok(ipsolve("data=folder", f"data.path={data}", *TINY, f"hydra.run.dir={run}", cwd=tmp_path))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_finished"] == 3 and summary["num_skipped"] == 1
    assert summary["resized"] == {"to": [32, 32], "count": 1, "from": {"40x56": 1}, "images": ["wide"]}
    assert "metrics are at the prior's size 32×32: 1 image(s) were centre-cropped and resized from 40×56" in proc.stdout
    assert (run / "ipsolve.log").read_text().count("centre-cropped to a square and resized") == 1
    assert summary["skipped"][0]["file"].endswith("broken.png") and summary["skipped"][0]["reason"]
    assert "broken.png" in (run / "ipsolve.log").read_text()
    assert "broken.png" in proc.stdout + proc.stderr
    assert sorted(p.stem for p in (run / "records").glob("*.json")) == ["blobs_0", "blobs_1", "wide"]
    # strict=true: the same run (resumed) ends with status 1 and one line, for a script or a SLURM job to notice
    strict = ipsolve("data=folder", f"data.path={data}", *TINY, f"hydra.run.dir={run}", "strict=true", cwd=tmp_path)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr, strict.stderr[-2000:]
    assert "ipsolve: error: strict=true: 1 input(s) skipped (" in strict.stderr and "broken.png" in strict.stderr
    assert json.loads((run / "summary.json").read_text())["num_finished"] == 3  # the others' results kept
    check_error(ipsolve("data=folder", f"data.path={data}", *TINY, f"hydra.run.dir={run}", "strict=yes", cwd=tmp_path),
                "strict must be true or false")


def check_error(proc, *needles):
    """A command-line error: exit code 2, one line on stderr, printed once, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("ipsolve: error: "), errors
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_unknown_config_option(tmp_path):
    check_error(ipsolve("no_such_option=1", cwd=tmp_path), "no_such_option", "sigma")
    check_error(ipsolve("solver=no_such_solver", cwd=tmp_path), "no_such_solver", "dmplug_cpu")
    line = check_error(ipsolve("data=no_such_data", cwd=tmp_path), "unknown data 'no_such_data'; data presets:")
    assert "datas" not in line
    check_error(ipsolve("solver=dps_cpu", "solver.zeta=abc", cwd=tmp_path),
                "solver 'dps': parameter 'zeta' must be a number or null, got 'abc'")


def test_overrides_are_read_with_hydras_grammar(capsys):
    """A list value is one value, not a sweep (``operator.missing=[0.3,0.7]``, documented, was refused
    as "must be a number, got '[0.3'"); sweeps and range(...) are checked value by value."""
    from ipsolve.cli import check_overrides

    assert check_overrides(["operator=inpainting", "operator.missing=[0.3,0.7]"])[1] == "++operator.missing=[0.3,0.7]"
    with pytest.raises(SystemExit):
        check_overrides(["operator=inpainting", "operator.missing=[0.3,abc]"])
    assert "'missing' must be a number or a list of numbers" in capsys.readouterr().err
    assert check_overrides(["solver=dps_cpu", "solver.steps=range(10,30,10)"])[1] == "++solver.steps=range(10,30,10)"
    for bad, needle in (("solver.zeta=0.1,abc", "'zeta' must be a number or null, got 'abc'"),
                        ("solver.steps=[1,2]", "'steps' must be an integer"),
                        ("solver.steps={a:1}", "'steps' must be an integer, got {'a': 1}"),
                        ("solver.steps=null", "'steps' must be an integer, got null"),
                        ("solver.zeta=true", "'zeta' must be a number or null, got true"),
                        ("calibrate={enabled:true,comparison_split:1}",  # a dict setting given whole: its keys too
                         "calibrate has no setting 'comparison_split' (did you mean 'comparison_splits'?)")):
        with pytest.raises(SystemExit):
            check_overrides(["solver=dps_cpu", bad])
        assert needle in capsys.readouterr().err
    assert check_overrides(["calibrate={enabled:true,images:2}"]) == ["calibrate={enabled:true,images:2}"]
    # a calibrate option turns calibration on (it was ignored while calibrate.enabled stayed false), unless
    # enabled is given too
    assert check_overrides(["calibrate.budget=3"]) == ["calibrate.budget=3", "calibrate.enabled=true"]
    assert check_overrides(["calibrate={images:2}"])[-1] == "calibrate.enabled=true"
    for off in (["calibrate=false", "calibrate.budget=3"], ["calibrate.budget=3", "calibrate.enabled=false"],
                ["calibrate={enabled:false,budget:3}"]):
        assert "calibrate.enabled=true" not in check_overrides(off)
    capsys.readouterr()
    check_overrides(["calibrate=false", "calibrate.params=[]"])  # nothing is compared: said (audit 2026-12-07)
    assert "note: calibration is off (calibrate=false), so calibrate.params is not used" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a dotted typo of a setting (Hydra's "Key 'review' is not in struct" before)
        check_overrides(["review.coverage=0.5"])
    assert "unknown setting 'review.coverage'; did you mean 'review_coverage'?" in capsys.readouterr().err
    assert check_overrides(["sigma=0.05"]) == ["sigma=0.05"]
    # an argparse habit gets Hydra's form (it got argparse's usage block and "unrecognized arguments")
    for args, needle in ((["--sigma", "0.05"], "unknown option --sigma: ipsolve takes its settings as key=value "
                                                "(Hydra), e.g. sigma=0.05"),
                         (["--data.path=my_images"], "e.g. data.path=my_images")):
        with pytest.raises(SystemExit):
            check_overrides(args)
        assert needle in capsys.readouterr().err
    for flags in (["--multirun"], ["-m"], ["--multi"], ["--cfg", "job"], ["--cfg=job"], ["--info", "config"], ["--"]):
        assert check_overrides([*flags, "sigma=0.01,0.05"]) == [*flags, "sigma=0.01,0.05"]  # Hydra's (abbreviated too)
    with pytest.raises(SystemExit):
        check_overrides(["--sigma", "-0.05"])
    assert "e.g. sigma=-0.05" in capsys.readouterr().err
    # a group given twice: the last wins, as in Hydra, for the checks too (they used the first)
    assert check_overrides(["solver=dps_cpu", "solver=daps_cpu", "solver.mcmc=hmc"])[-1] == "++solver.mcmc=hmc"
    with pytest.raises(SystemExit):
        check_overrides(["solver=daps_cpu", "solver=dps_cpu", "solver.mcmc=hmc"])
    assert "solver 'dps' has no parameter 'mcmc'" in capsys.readouterr().err


def test_misspelt_solver_parameter_names_the_valid_ones(tmp_path):
    line = check_error(ipsolve("solver.iteration=5", cwd=tmp_path), "'iteration'", "did you mean 'iterations'")
    assert "window" in line and "patience" in line  # the full list of the solver's parameters
    check_error(ipsolve("operator=inpainting", "operator.missng=0.5", cwd=tmp_path), "did you mean 'missing'")
    # data presets and calibrate have fixed keys: Hydra's struct error (six lines) becomes one
    check_error(ipsolve("data.max_image=8", cwd=tmp_path), "data has no setting 'max_image'",
                "did you mean 'max_images'", "data=phantom_demo")
    check_error(ipsolve("data=dicom", "data.windw=ct", cwd=tmp_path), "did you mean 'window'", "data=dicom")
    check_error(ipsolve("calibrate.imags=2", cwd=tmp_path), "calibrate has no setting 'imags'", "did you mean 'images'")


def test_valid_parameter_missing_from_the_preset_and_prior_as_a_path(tmp_path):
    """``solver.window=`` is a DMPlug parameter that dmplug_cpu.yaml does not list; ``prior=DIR``
    takes a prior directory (here the bundled one's folder)."""
    run = tmp_path / "run"
    prior_dir = ROOT / "ipsolve" / "priors" / "bundled" / "phantom-flow"
    check_ok(ipsolve(f"prior={prior_dir}", "solver=fmplug_cpu", "solver.window=7", "data.max_images=1", *TINY,
                     f"hydra.run.dir={run}", cwd=tmp_path))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["solver"]["window"] == 7 and summary["prior"]["source"] == str(prior_dir)


def test_bad_settings_are_one_line_errors(tmp_path):
    check_error(ipsolve("prior=ffhq_adm", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path),
                "prior.source=PATH", "ffhq_10m.pt")
    check_error(ipsolve("sigma=-1", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path), "sigma", ">= 0")
    assert not (tmp_path / "b").exists()  # a failed run leaves no directory of Hydra files behind
    check_error(ipsolve("samples=0", f"hydra.run.dir={tmp_path / 'd'}", cwd=tmp_path), "samples must be an integer >= 1")
    check_error(ipsolve("review_coverage=2", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path),
                "review_coverage must be a fraction in (0, 1]")
    # solver.lr=auto calibrated silently under calibrate.enabled=false (audit 2026-12-07)
    check_error(ipsolve("solver.lr=auto", "calibrate.enabled=false", f"hydra.run.dir={tmp_path / 'auto'}", cwd=tmp_path),
                "calibrate.enabled=false turns calibration off, but solver.lr=auto asks for it")
    check_error(ipsolve("threads=many", f"hydra.run.dir={tmp_path / 'f'}", cwd=tmp_path), "threads must be auto")
    # a seed of 1.5 ran as seed 1; review_below=abc was a TypeError (audit 2026-12-05)
    check_error(ipsolve("seed=1.5", "review_below=abc", f"hydra.run.dir={tmp_path / 'g'}", cwd=tmp_path),
                "seed must be an integer", "got 1.5")
    check_error(ipsolve("-m", "solver=dps_cpu,fmplug_cpu", "solver.steps=20", cwd=tmp_path),
                "solver 'fmplug' has no parameter 'steps'", "(preset solver=fmplug_cpu)")
    assert not any((tmp_path / d).exists() for d in "bdef")
    fresh = tmp_path / "fresh"  # the default folder: no empty outputs/ is left either (it was)
    fresh.mkdir()
    check_error(ipsolve("samples=0", cwd=fresh), "samples must be an integer >= 1")
    assert not any(fresh.iterdir()), sorted(fresh.rglob("*"))
    import torch

    if not torch.cuda.is_available():
        check_error(ipsolve("device=cuda", f"hydra.run.dir={tmp_path / 'c'}", cwd=tmp_path), "device 'cuda'", "no CUDA GPU")


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
                                     solver={"name": "dmplug", "iterations": 3, "ddim_steps": 1, "warm_start": 0.25,
                                             "window": 5, "patience": 10, "tau": 1.0, "combine": "armed"},  # dmplug_quick
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


@pytest.mark.parametrize("preset", ["ct_sparse", "mri_4x", "phase_retrieval"])
def test_science_operator_demo_and_exact_measurements(preset, tmp_path):
    """README's science demos: the usual outputs, the measurement kept exactly as .npy (its PNG
    only shows it), and a measurements-only rerun from those files gives the same reconstruction."""
    run = tmp_path / "run"
    extra = ["operator.hio_iterations=50", "operator.restarts=2"] if preset == "phase_retrieval" else []
    check_ok(ipsolve(f"operator={preset}", "data.max_images=2", *TINY, *extra, f"hydra.run.dir={run}", cwd=tmp_path))
    names = sorted(p.stem for p in (run / "recon").glob("*.png"))
    check_run_dir(run, names)
    assert sorted(p.stem for p in (run / "measurement").glob("*.npy")) == names
    # phase retrieval with one sample says that one run is a draw and how to take the best of k by misfit
    said = [w for w in json.loads((run / "summary.json").read_text())["warnings"] if "one run of any solver is a draw" in w]
    assert len(said) == (preset == "phase_retrieval") and (not said or "samples=4 select=residual" in said[0])
    rec = json.loads((run / "records" / f"{names[0]}.json").read_text())
    assert rec["outputs"]["measurement_data"] == f"measurement/{names[0]}.npy"
    again = tmp_path / "again"
    # the operator is read from the run that made the measurements (phase retrieval's HIO settings are
    # given here, and with them its preset)
    given = [f"operator={preset}", *extra] if extra else []
    proc = check_ok(ipsolve("data=folder", f"data.path={run / 'measurement'}", "data.measurements=true", *TINY, *given,
                            f"hydra.run.dir={again}", cwd=tmp_path))
    check_run_dir(again, names, ground_truth=False)
    if not extra:
        (line,) = [x for x in proc.stdout.splitlines() if "measurements only:" in x]
        assert preset in line and f"and sigma 0.01 read from {run / 'config.yaml'}" in line
    if preset == "ct_sparse":  # another preset than the one that made them: refused, naming it; no run left behind
        check_error(ipsolve("operator=ct_limited", "data=folder", f"data.path={run / 'measurement'}",
                            "data.measurements=true", *TINY, f"hydra.run.dir={tmp_path / 'wrong'}", cwd=tmp_path),
                    "made by the operator ct (views=16", "i.e. operator=ct_sparse", "operator=ct_limited")
        assert not (tmp_path / "wrong").exists()
    for name in names:
        assert (read_png(again / "recon" / f"{name}.png") == read_png(run / "recon" / f"{name}.png")).all()
    # a picture of the data is not the data
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    shutil.copy(run / "measurement" / f"{names[0]}.png", pictures)
    seed = ["operator.seed=0"] if preset == "mri_4x" else []  # the mask's seed (else that is the first error)
    proc = ipsolve(f"operator={preset}", "data=folder", f"data.path={pictures}", "data.measurements=true", *TINY,
                   *seed, f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert "measurements are data, read from .npy files" in proc.stdout + proc.stderr


def test_per_image_inpainting_masks_follow_the_images_across_batches(tmp_path):
    """operator=inpainting_dps_random (DPS's per-image U(0.3, 0.7) masks): each image's mask comes from
    operator.seed and its name, so batch size 1 and 2 measure the same images identically."""
    runs = {}
    for b in (1, 2):
        runs[b] = tmp_path / f"b{b}"
        check_ok(ipsolve("operator=inpainting_dps_random", "data.max_images=2", f"data.batch_size={b}",
                         "solver.iterations=1", "progress=false", f"hydra.run.dir={runs[b]}", cwd=tmp_path))
    names = sorted(p.stem for p in (runs[1] / "measurement").glob("*.png"))
    assert len(names) == 2
    from ipsolve import make_operator

    op, fractions = make_operator("inpainting", missing=[0.3, 0.7], seed=0), []
    for name in names:
        one, two = read_png(runs[1] / "measurement" / f"{name}.png"), read_png(runs[2] / "measurement" / f"{name}.png")
        assert np.array_equal(one, two), name
        op.set_images([name])  # the mask keyed by the image's name: its holes show 0 + noise (mid-grey)
        hole = op.mask_for((1, 1, 32, 32))[0, 0].numpy() == 0
        assert np.abs(one[hole] - 127.5).max() <= 7, name  # σ = 0.01 → 1.3 grey levels
        fractions.append(float(hole.mean()))
    assert len(set(fractions)) == 2 and all(0.3 <= f <= 0.7 for f in fractions), fractions


def test_output_folders_that_cannot_be_made_and_presets_misspelt_are_one_line(tmp_path):
    """Audit 2026-12-06 (twenty-third session): an empty ``hydra.run.dir`` wrote every output into the
    current directory; a folder under a parent that refuses it (``/proc``) was Hydra's traceback; a
    misspelt preset listed the presets without "did you mean"."""
    from ipsolve.cli import _writable_target

    assert "is empty" in _writable_target("")
    if Path("/proc").is_dir():  # (Linux: a folder no one may create under; elsewhere there is no /proc)
        assert "cannot be created" in _writable_target(Path("/proc/ipsolve-audit/run"))
    assert _writable_target(tmp_path / "a" / "b") is None and (tmp_path / "a" / "b").is_dir()
    check_error(ipsolve("operator=inpaintng", cwd=tmp_path), "unknown operator 'inpaintng' (did you mean 'inpainting'?)")


def test_a_metric_asked_for_on_resume_is_said_missing_for_the_finished_images():
    """Metrics are not in the resume fingerprint: ``metrics=[psnr,ssim]`` resuming a psnr run showed
    SSIM for the new images only, unsaid; now the run's warnings say which images lack it."""
    from ipsolve.runner.run import resumed_without_metrics

    done = {"a": {"metrics": {"psnr": 20.0}}, "b": {"metrics": {"psnr": 21.0, "ssim": 0.5}}}
    note = resumed_without_metrics(done, ["psnr", "ssim"], measurements=False)
    assert note.startswith("ssim asked for now, not when 1 of the 2 image(s) the earlier run finished")
    assert resumed_without_metrics(done, ["psnr"], False) is None
    assert resumed_without_metrics(done, ["psnr", "ssim"], measurements=True) is None  # no truth: no metrics anyway


def test_a_blind_preset_on_a_known_kernel_is_said(caplog):
    """``solver=dmplug_blind`` with ``operator=motion_blur`` ran as plain DMPlug without a word (audit 2026-12-07)."""
    import logging

    from omegaconf import OmegaConf

    from ipsolve.cli import blind_preset_note

    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        blind_preset_note("dmplug_blind", OmegaConf.create({"name": "motion_blur", "size": 9}))
        blind_preset_note("dmplug_blind", OmegaConf.create({"name": "blind_blur_dmplug", "size": 8}))
        blind_preset_note("dmplug_cpu", OmegaConf.create({"name": "motion_blur"}))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "solver=dmplug_blind is a blind-deblurring preset, but operator motion_blur knows its kernel"]
