"""The runner's first-contact behaviour, in-process: the thread count a run chooses, progress
lines without a terminal, the flag on reconstructions that fit worse than the initial guess
(never accepted), medians in the summary, the per-image time, failed sweep jobs in the sweep
summary, and one-line errors for a parameter of the wrong type."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from ipsolve.runner import progress as P
from ipsolve.runner import threads as T
from ipsolve.runner.batches import flag_against_initial
from ipsolve.runner.errors import RunError
from ipsolve.runner.reports import metrics_csv, report, summarize, summarize_sweep
from ipsolve.runner.run import review_summary
from ipsolve.solvers.stopping import discrepancy_tau


# -- threads -------------------------------------------------------------------------------
@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` cores with ``busy`` cores used by other work, no OMP_NUM_THREADS."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def set_machine(cores, busy=0.0):
        monkeypatch.setattr(T, "usable_cores", lambda: cores)
        monkeypatch.setattr(T, "busy_cores", lambda c, interval=0.3: (min(busy, c), f"{busy} busy"))

    return set_machine


def test_threads_auto_is_one_per_process_on_a_small_or_shared_machine(machine, monkeypatch):
    machine(2)
    n, why = T.choose_threads("auto")
    assert n == 2 and "idle" in why                               # 2 idle cores: both
    machine(2, busy=0.4)
    n, why = T.choose_threads("auto")
    assert n == 1 and "0.4" in why                                # 2 cores beside other work: one thread
    machine(2)
    assert T.choose_threads("auto", num_processes=2)[0] == 1     # 2 cores, 2 processes: one each
    machine(1)
    assert T.choose_threads("auto")[0] == 1
    machine(16)
    assert T.choose_threads("auto")[0] == T.MAX_AUTO_THREADS == 8  # an idle large machine: capped
    machine(16, busy=13.2)
    n, why = T.choose_threads("auto")
    assert n == 3 and "13.2" in why                                # what other work leaves free
    machine(8, busy=0.0)
    assert T.choose_threads("auto", num_processes=2)[0] == 4       # shared between this run's processes
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert T.choose_threads("auto", num_processes=8)[0] == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")                     # the user's own choice wins over auto
    assert T.choose_threads("auto") == (3, "OMP_NUM_THREADS=3 in the environment")
    assert T.choose_threads(2)[0] == 2 and T.choose_threads("5")[0] == 5
    for bad in ("abc", 0, -1, True):
        with pytest.raises(RunError, match="threads must be auto or an integer >= 1"):
            T.choose_threads(bad)


def test_busy_cores_sees_a_busy_process():
    """The /proc/stat sample counts other processes' CPU use, not this (sleeping) one's."""
    import subprocess
    import sys

    if T._cpu_times() is None:
        pytest.skip("no /proc/stat on this system")
    idle_busy, _ = T.busy_cores(T.usable_cores(), interval=0.3)
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy, why = T.busy_cores(T.usable_cores(), interval=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert "busy with other work" in why
    assert busy >= min(0.6, T.usable_cores() * 0.3) or busy > idle_busy + 0.5, (idle_busy, busy)


def test_run_records_its_thread_count_and_restores_torchs():
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(1, 32)
    solver = ipsolve.make_solver("dmplug", iterations=2, ddim_steps=2, warm_start=0.25, progress=False)
    before = torch.get_num_threads()
    run = ipsolve.reconstruct(x, solver=solver, prior="bundled:phantom-ddpm", progress=False, threads=1,
                              metrics=["psnr"])
    assert torch.get_num_threads() == before
    assert run.summary["threads"] == {"setting": "1", "threads": 1, "reason": "threads=1 (set)"}


# -- deterministic mode ------------------------------------------------------------------------
def torch_determinism() -> tuple:
    import os

    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_deterministic_mode_sets_torchs_flags_names_what_has_no_deterministic_kernel_and_restores(monkeypatch):
    """``deterministic_algorithms``: torch's deterministic mode (warn-only), cuDNN without benchmarking,
    cuBLAS's workspace setting; an operation torch reports without a deterministic kernel is recorded
    once — ``put_`` (no accumulation) is one on a CPU too, a CUDA kernel's alert is copied in torch's
    wording — and other warnings still reach the user."""
    import warnings

    from ipsolve.runner.determinism import CUBLAS_WORKSPACE, deterministic_algorithms

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch_determinism()
    alert = ("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but you set "
             "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at ...")
    with deterministic_algorithms(True) as record:
        assert torch_determinism() == (True, True, True, False, CUBLAS_WORKSPACE)
        with pytest.warns(UserWarning, match="an ordinary warning"):
            for _ in range(2):
                torch.zeros(4).put_(torch.tensor([0, 0]), torch.ones(2))  # torch's own alert, on a CPU
                warnings.warn(alert, UserWarning)
            warnings.warn("an ordinary warning", UserWarning)
    assert record == {"enabled": True, "nondeterministic_ops": ["put_", "upsample_bilinear2d_backward_out_cuda"]}
    assert torch_determinism() == before
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own setting is kept
    with deterministic_algorithms(True):
        assert torch_determinism()[4] == ":16:8"
    with deterministic_algorithms(False) as record:
        assert torch_determinism() == before[:4] + (":16:8",) and record == {"enabled": False, "nondeterministic_ops": []}
    with pytest.raises(RunError, match="deterministic must be true or false, got 'yes'"):
        with deterministic_algorithms("yes"):
            pass


def test_a_deterministic_run_records_it_and_solves_as_the_default_does_on_a_cpu(tmp_path):
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(2, 32)
    kw = dict(solver={"name": "dps", "steps": 8}, prior="bundled:phantom-ddpm", progress=False, metrics=["psnr"])
    before = torch_determinism()
    run = ipsolve.reconstruct(x, deterministic=True, **kw)
    assert torch_determinism() == before
    assert run.summary["deterministic"] == {"enabled": True, "nondeterministic_ops": [], "images": 2}
    assert all(r["deterministic"] for r in run.records)
    assert "deterministic algorithms: on in this run (every operation met had a deterministic kernel)" \
        in report(run.summary)
    default = ipsolve.reconstruct(x, **kw)
    # the same result: bit-identical on the 2-core Xeon; oneDNN may pick other kernels on another CPU (rounding)
    torch.testing.assert_close(run.x, default.x, atol=1e-4, rtol=0)
    assert "deterministic algorithms" not in report(default.summary)
    # a resume may switch it (it changes no result beyond rounding): the report says how many were made with it
    ipsolve.reconstruct(x[:1], deterministic=True, output_dir=tmp_path, names=["a"], **kw)
    mixed = ipsolve.reconstruct(x, output_dir=tmp_path, names=["a", "b"], **kw)
    assert [r["deterministic"] for r in mixed.records] == [True, False]
    assert "deterministic algorithms: off in this run; 1 of 2 image(s) were made with them" in report(mixed.summary)


def test_a_sigma_on_another_scale_is_said_once_in_the_run_and_its_summary(recwarn):
    """σ = 2.55 (a [0, 255] std): the run logs and records the note once; no Python warning escapes
    from each measure/solve, and the images' residual warnings stay in the run's own records."""
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(1, 32)
    solver = ipsolve.make_solver("dmplug", iterations=2, ddim_steps=2, warm_start=0.25, progress=False)
    run = ipsolve.reconstruct(x, solver=solver, prior="bundled:phantom-ddpm", progress=False, threads=1,
                              metrics=["psnr"], sigma=2.55)
    assert [w for w in run.summary["warnings"] if "[-1, 1] scale" in w and "0.02" in w]
    assert not [w for w in recwarn if "ipsolve" in type(w.message).__module__]


# -- progress lines ------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_lines_every_n_iterations_sized_from_the_measured_time(caplog):
    """0.5 s per iteration → a line every 40 iterations (~20 s); batch lines with images done,
    elapsed time and an estimate of the rest from the work done so far."""
    clock = FakeClock()
    lines = P.ProgressLog(total=4, num_batches=2, budget=100, clock=clock)
    with caplog.at_level(logging.INFO, logger="ipsolve"):
        for _ in range(2):
            lines.start_batch(2)
            for it in range(100):
                clock.t += 0.5
                lines.callback(it, None)
            lines.end_batch(2)
    msgs = [r.getMessage() for r in caplog.records]
    assert "a line every 40 iterations" in msgs[0]
    at = [m for m in msgs if "at iteration" in m]
    assert [m.split("at iteration ")[1].split(" ")[0] for m in at] == ["40/100", "80/100", "40/100", "80/100"]
    # iteration 40 of the first batch: 20 s for 0.4 of 2 images out of 4 → 0.8 done, 80 s left
    assert "0/4 images done | 20 s elapsed | about 1 min 20 s left" in at[0]
    batch = [m for m in msgs if "finished" in m]
    assert "batch 1/2 finished | 2/4 images done | 50 s elapsed | about 50 s left" in batch[0]
    assert batch[1].endswith("4/4 images done | 1 min 40 s elapsed | done")
    assert P.duration(3725) == "1 h 02 min" and P.iteration_budget(type("S", (), {"steps": 250})()) == 250


def test_progress_estimate_leaves_out_images_calibration_solved(caplog):
    """Images whose solve calibration made are done at no cost: the estimate extrapolates from the
    images solved since (it said "2/8 images done | 0 s elapsed | about 0 s left": audit 2026-12-07)."""
    clock = FakeClock()
    lines = P.ProgressLog(total=8, num_batches=7, budget=None, clock=clock)
    with caplog.at_level(logging.INFO, logger="ipsolve"):
        lines.start_batch(2)
        lines.end_batch(2, reused=2)
        lines.start_batch(1)
        clock.t += 3.0
        lines.end_batch(1)
    batch = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert "2/8 images done | 0 s elapsed | time left unknown yet" in batch[0]
    assert "batch 1/7 finished (solved by calibration's check, taken from it) |" in batch[0]  # (why 0 s)
    assert "batch 2/7 finished |" in batch[1]
    assert "3/8 images done | 3 s elapsed | about 15 s left" in batch[1]  # 5 left at 3 s each


def test_progress_lines_count_skipped_inputs_apart_from_done_images(caplog):
    """A batch whose inputs could not be used is not reported as images done (it read "2/2 images
    done" for a run that solved none)."""
    lines = P.ProgressLog(total=3, num_batches=2, budget=None, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="ipsolve"):
        lines.start_batch(2)
        lines.end_batch(0, skipped=2)
        lines.start_batch(1)
        lines.end_batch(1)
    batch = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert "| 0/3 images done, 2 skipped |" in batch[0] and not batch[0].endswith("| done")
    assert batch[1].endswith("1/3 images done, 2 skipped | 0 s elapsed | done")


# -- worse than the initial guess ----------------------------------------------------------
def record(name, residual, reliability=-0.1):
    return {"name": name, "rank": 0, "seed": {"noise": 1, "solver": 2}, "metrics": {"psnr": 20.0},
            "initial_metrics": {"psnr": 21.0},
            "info": {"nfe": 10, "iterations": 5, "stop_reason": "budget", "residual": residual, "seconds": 4.0,
                     "reliability": reliability, "reliability_reason": "feasibility"},
            "seconds_per_image": 2.0, "batch_seconds": 4.0}


def test_reconstruction_fitting_worse_than_the_initial_guess_is_flagged_and_never_accepted():
    m = 64
    tau = discrepancy_tau(m)
    recs = [record("fits", 1.0), record("worse", 3.0, reliability=0.0), record("both_bad", 3.0),
            record("below_noise", 0.9 * tau)]
    for rec, init in zip(recs, (2.0, 0.0, 4.0, 0.0)):
        flag_against_initial(rec, init, m, sigma=0.01)
    # above the initial guess's residual AND the noise level: flagged; an initial guess that
    # interpolates y (residual 0) does not flag a reconstruction at the noise level
    assert [bool(r.get("worse_than_initial")) for r in recs] == [False, True, False, False]
    assert recs[1]["initial_residual"] == 0.0 and "above the initial guess's" in recs[1]["worse_than_initial"]
    for below, coverage in ((None, None), (-1.0, None), (None, 1.0)):  # accept-all settings accept it not
        review = review_summary(recs, below, coverage)
        assert review["decisions"]["worse"] == "review" and review["decisions"]["fits"] == "accept"
        assert review["flagged"]["worse"] == "residual above the initial guess's"
        # ranked for acceptance but flagged (and the report says so, below) only where a ranking was asked for
        assert review["accepted_by_score_but_flagged"] == (0 if below is None and coverage is None else 1)
    summary = summarize(recs, settings={"operator": {"name": "inpainting"}, "solver": {"name": "dps"},
                                        "prior": {"source": "p"}, "sigma": 0.01},
                        skipped=[], num_processes=1, wall_seconds=9.0,
                        extra={"review": review_summary(recs, None, 1.0), "warnings": []})
    assert list(summary["worse_than_initial"]) == ["worse"]
    # nothing flagged and no review rule: the report says what accept then means (an audit read it as "good")
    clean = [r for r in recs if r["name"] != "worse"]
    calm = report(summarize(clean, settings={"operator": {"name": "inpainting"}, "solver": {"name": "dps"},
                                            "prior": {"source": "p"}, "sigma": 0.01}, skipped=[], num_processes=1, wall_seconds=1.0,
                            extra={"review": review_summary(clean, None, None), "warnings": []}))
    assert ("review: no image flagged; with no review rule set, accept means only that no flag was raised (residual "
            "within 5× the noise level and the initial guess's)") in calm
    text = report(summary)
    assert "review: no image flagged" not in text
    assert "1 of 4 reconstruction(s) fit the measurement worse than the initial guess" in text and "worse" in text
    assert ("review: 1 of 4 image(s) flagged (each by its first reason: residual above the initial guess's: 1): worse; 1 of them ranked for "
            "acceptance by their reliability but flagged (a flagged image is never accepted") in text
    # the ground truth, where given, evaluates the decisions (never makes them): accepted images below their initial
    # guess in PSNR are named (every record here scores 20 against its guess's 21 dB)
    assert summary["review"]["accepted_below_initial_psnr"] == ["fits", "both_bad", "below_noise"]
    assert "note: 3 accepted image(s) score below their initial guess in PSNR: fits, both_bad, below_noise" in text
    bare = [{**r, "metrics": {}} for r in recs]
    assert review_summary(bare, None, 1.0)["accepted_below_initial_psnr"] is None  # no ground truth: nothing to say
    rows = metrics_csv(recs, summary["review"]["decisions"]).splitlines()
    head = rows[0].split(",")
    worse = dict(zip(head, rows[2].split(",")))
    assert worse["worse_than_initial"] == "yes" and worse["decision"] == "review" and worse["initial_residual"] == "0"
    flag_against_initial(rec := record("blind", 3.0), None, m, 0.01)  # blind operators: no initial residual
    assert rec["initial_residual"] is None and "worse_than_initial" not in rec
    # ... so a residual warning (above 5× the noise level) flags a blind reconstruction instead
    flag_against_initial(unfit := record("blind_unfit", 14.0), None, m, 0.01)
    unfit["warning"] = "residual 14.0× the noise level: ..."
    review = review_summary([rec, unfit], None, None)
    assert review["decisions"] == {"blind": "accept", "blind_unfit": "review"}
    assert review["flagged"]["blind_unfit"].startswith("residual above 5× the noise level")
    # ... and so does it where the initial guess fitted even worse (audit 2026-12-06: a DMPlug image at 5.2σ√m
    # beside an initial guess at 6σ√m was accepted)
    flag_against_initial(better := record("better_but_unfit", 5.2), 6.0, m, 0.01)
    better["warning"] = "residual 5.2× the noise level: ..."
    assert "worse_than_initial" not in better
    assert review_summary([better], None, None)["decisions"] == {"better_but_unfit": "review"}
    # a calibration that found the solver not beating its initial guess on held-out entries: every image reviewed,
    # the more specific reasons first
    review = review_summary(recs, None, None, calibration_warning="the operator's initial guess predicts ...")
    assert set(review["decisions"].values()) == {"review"}
    assert review["flagged"]["fits"] == "calibration: the initial guess predicts held-out entries better"
    assert review["flagged"]["worse"] == "residual above the initial guess's"
    # the discrepancy principle's warning (no candidate fit the noise level) is no such finding: each image's
    # own residual decides
    from ipsolve.runner.run import not_beating_initial

    assert not_beating_initial({"method": "discrepancy", "warning": "no candidate fit the noise level"}) is None
    assert not_beating_initial({"method": "holdout", "warning": "the operator's initial guess ..."}) == \
        "the operator's initial guess ..."
    assert not_beating_initial({"method": "holdout", "warning": ""}) is None and not_beating_initial(None) is None


def test_summary_has_medians_and_honest_per_image_seconds():
    recs = [record(f"im{i}", 1.0) for i in range(3)]
    for r, p in zip(recs, (20.0, 21.0, 40.0)):  # one near-empty image scores 40 dB
        r["metrics"]["psnr"] = p
    summary = summarize(recs, settings={"operator": {"name": "super_resolution"}, "solver": {"name": "dmplug"},
                                        "prior": {"source": "p"}, "sigma": 0.01},
                        skipped=[], num_processes=1, wall_seconds=9.0, extra={"warnings": []})
    assert summary["metrics"]["psnr"]["median"] == 21.0 and summary["metrics"]["psnr"]["mean"] == pytest.approx(27.0)
    assert summary["seconds_per_image"]["mean"] == 2.0 and summary["batch_seconds"]["mean"] == 4.0
    assert "seconds" not in summary  # the old key held the batch's time, not the image's
    text = report(summary)
    assert "PSNR 27.00 ± 11.27, median 21.00 dB" in text and "seconds per image 2.0" in text
    assert "images_by_process_count" not in summary
    recs[0]["num_processes"] = 2  # resumed on one process: one image was made by a two-process run
    resumed = summarize(recs, settings={}, skipped=[], num_processes=1, wall_seconds=1.0)
    assert resumed["num_processes"] == 1 and resumed["images_by_process_count"] == {2: 1, 1: 2}


def test_sweep_summary_lists_failed_jobs_with_their_reason(tmp_path):
    ok = tmp_path / "0"
    ok.mkdir()
    base = record("a", 1.0)
    summary = summarize([base], settings={"operator": {"name": "super_resolution"}, "solver": {"name": "dmplug"},
                                          "prior": {"source": "bundled:phantom-ddpm"}, "sigma": 0.01},
                        skipped=[], num_processes=1, wall_seconds=9.0,
                        extra={"overrides": ["solver=dmplug_cpu", "data.max_images=1"]})
    (ok / "summary.json").write_text(json.dumps(summary))
    bad = tmp_path / "1"
    bad.mkdir()
    (bad / "failed.json").write_text(json.dumps({"job": 1, "overrides": ["solver=fmplug_cpu", "data.max_images=1"],
                                                 "reason": "solver 'fmplug' cannot use a diffusion prior; "
                                                           "the bundled prior that fits: prior=phantom_flow"}))
    md, csv_path = summarize_sweep(tmp_path)
    text = md.read_text()
    assert "| 1 | solver=fmplug_cpu | failed: solver 'fmplug' cannot use a diffusion prior" in text
    assert "prior=phantom_flow" in text and "| 0 | solver=dmplug_cpu | 1 | 20.00" in text
    import csv

    rows = list(csv.DictReader(open(csv_path)))
    assert [r["error"] != "" for r in rows] == [False, True] and rows[0]["seconds_per_image"] == "2.0"
    # a later sweep in the same folder: job 0 refused now (its old summary.json stays), job 1 not run
    # again — the summary lists this sweep's jobs only, job 0 as failed (was: the old results shown)
    from ipsolve.runner.reports import sweep_files

    before = sweep_files(tmp_path)  # as the later sweep starts (it clears failed.json, then takes this)
    (ok / "failed.json").write_text(json.dumps({"job": 0, "overrides": ["solver=dps_cpu"], "reason": "holds results "
                                                "of different settings"}))
    md, _ = summarize_sweep(tmp_path, before=before)
    text = md.read_text()
    assert "failed: holds results of different settings" in text and "20.00" not in text and "fmplug" not in text
    # ... and the earlier sweep's table, whose finished job 0 this one lists as failed, is kept beside it
    kept = sorted(tmp_path.glob("sweep_summary.*-*.md"))
    assert len(kept) == 1 and "| 0 | solver=dmplug_cpu | 1 | 20.00" in kept[0].read_text()
    assert kept[0].with_suffix(".csv").is_file()
    summarize_sweep(tmp_path, before=before)  # the same sweep resumed: nothing more to keep
    assert len(list(tmp_path.glob("sweep_summary.*-*.md"))) == 1
    # the refused job's own operator/solver/prior, recorded as it failed (the folder's .hydra is put back to the
    # earlier job's, whose solver its row named)
    (ok / ".hydra").mkdir()
    (ok / ".hydra" / "config.yaml").write_text("solver:\n  name: dmplug\n")
    (ok / "failed.json").write_text(json.dumps({"job": 0, "overrides": ["solver=ddrm_cpu"], "reason": "refused",
                                                "choices": {"solver": "ddrm"}}))
    _, csv_path = summarize_sweep(tmp_path, before=before)
    assert [r["solver"] for r in csv.DictReader(open(csv_path))] == ["ddrm"]


def test_sweep_summary_gives_what_calibration_chose(tmp_path):
    """A job that calibrated shows its chosen values and the comparison with the initial guess in
    the sweep summary (it showed ``++solver.zeta=auto`` and nothing chosen: audit 2026-12-07); one
    that did not, a dash."""
    settings = {"operator": {"name": "inpainting"}, "solver": {"name": "dps"}, "prior": {"source": "p"}, "sigma": 0.01}
    for job, calibration in (("0", {"params": {"zeta": 0.29781}, "method": "holdout", "against_initial_guess": "worse",
                                    "warning": "the operator's initial guess predicts ..."}), ("1", None)):
        (tmp_path / job).mkdir()
        summary = summarize([record("a", 1.0)], settings=settings, skipped=[], num_processes=1, wall_seconds=1.0,
                            extra={"overrides": [f"seed={job}"], "calibration": calibration})
        (tmp_path / job / "summary.json").write_text(json.dumps(summary))
    md, csv_path = summarize_sweep(tmp_path)
    import csv

    rows = list(csv.DictReader(open(csv_path)))
    assert [(r["calibrated"], r["against_initial_guess"]) for r in rows] == [("zeta=0.298", "worse"), ("n/a", "n/a")]
    text = md.read_text()
    assert "| calibrated |" in text and "| zeta=0.298 (worse) |" in text and text.rstrip().endswith("| - |")


# -- parameters of the wrong type ----------------------------------------------------------
def test_a_non_number_for_a_number_parameter_names_the_parameter():
    import ipsolve

    with pytest.raises(TypeError, match=r"solver 'dps': parameter 'zeta' must be a number or null, got 'abc'"):
        ipsolve.make_solver("dps", zeta="abc")
    with pytest.raises(TypeError, match=r"parameter 'steps' must be an integer, got 'many'"):
        ipsolve.make_solver("dps", steps="many")
    with pytest.raises(TypeError, match=r"parameter 'steps' must be an integer, got 2.5"):  # was a torch TypeError
        ipsolve.make_solver("dps", steps=2.5)
    with pytest.raises(TypeError, match=r"operator 'inpainting': parameter 'missing' must be a number"):
        ipsolve.make_operator("inpainting", missing="most")
    assert ipsolve.make_operator("inpainting", missing=[0.3, 0.7]).params["missing"] == [0.3, 0.7]  # lists pass
    # null where the parameter takes none (steps=null compared None with 1 inside DPS), true for a number
    # (zeta=true ran with ζ = 1); both said as the user wrote them
    with pytest.raises(TypeError, match=r"solver 'dps': parameter 'steps' must be an integer, got null$"):
        ipsolve.make_solver("dps", steps=None)
    with pytest.raises(TypeError, match=r"solver 'dps': parameter 'zeta' must be a number or null, got true$"):
        ipsolve.make_solver("dps", zeta=True)
    with pytest.raises(TypeError, match=r"solver 'daps': parameter 'tau' must be a number, got null$"):
        ipsolve.make_solver("daps", tau=None)
    assert ipsolve.make_solver("dps", zeta=None).zeta is None  # a parameter whose default is null takes null
    assert ipsolve.make_solver("dps", rescale_zeta=True).rescale_zeta is True  # a true/false parameter takes true


def test_solver_prior_mismatch_suggests_the_prior_that_fits():
    import ipsolve
    from ipsolve.runner.settings import check_fits

    prior = ipsolve.load_prior("bundled:phantom-ddpm")
    with pytest.raises(RunError, match=r"cannot use a diffusion prior.*the bundled prior that fits: prior=phantom_flow"
                                       r"; or keep this prior with one of its solvers: dps, .*dmplug"):
        check_fits(ipsolve.make_solver("fmplug"), ipsolve.make_operator("super_resolution"), prior)


# -- what a resume and a reused calibration compare ----------------------------------------
def test_resume_refuses_another_data_set_under_the_same_names(tmp_path):
    """A run folder's finished results are taken only for the same inputs: another folder with the
    same file names (or an edited file) is refused in one line (was: "2 of 2 already finished")."""
    import shutil

    import ipsolve
    from ipsolve.io import load_image, save_image
    from ipsolve.runner.inputs import DEMO_DATA

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for p in sorted((DEMO_DATA / "phantom").glob("*.png"))[:2]:
        shutil.copy(p, a / p.name)
        save_image(torch.flip(load_image(p), (-1,)), b / p.name)  # same name, other picture
    solver = ipsolve.make_solver("dmplug", iterations=2, ddim_steps=2, warm_start=0.25, progress=False)
    kw = dict(solver=solver, prior="bundled:phantom-ddpm", progress=False, threads=1, metrics=["psnr"],
              output_dir=tmp_path / "run")
    first = ipsolve.reconstruct(str(a), **kw)
    assert ipsolve.reconstruct(str(a), **kw).summary["num_resumed"] == first.summary["num_finished"] == 2
    with pytest.raises(RunError, match="made from another input"):
        ipsolve.reconstruct(str(b), **kw)


def test_a_calibration_file_is_reused_only_for_the_same_settings_and_images():
    from types import SimpleNamespace

    from ipsolve.runner.calibration import calibration_options, stale_calibration
    from ipsolve.runner.inputs import Item, input_digest

    items = [Item(name=f"i{k}", tensor=torch.full((1, 1, 4, 4), float(k))) for k in range(2)]
    options = calibration_options(True)
    record = {"options": options, "fingerprint": "f1", "input_digests": {it.name: input_digest(it) for it in items}}
    assert stale_calibration(record, SimpleNamespace(fingerprint="f1"), items, options) is None
    assert "other run settings" in stale_calibration(record, SimpleNamespace(fingerprint="f2"), items, options)
    assert "other calibrate options (calibrate.params None -> ['zeta'])" in stale_calibration(
        record, SimpleNamespace(fingerprint="f1"), items, {**options, "params": ["zeta"]})
    edited = [items[0], Item(name="i1", tensor=torch.zeros(1, 1, 4, 4))]
    assert "i1" in stale_calibration(record, SimpleNamespace(fingerprint="f1"), edited, options)
    assert "not recorded" in stale_calibration({"options": options, "fingerprint": "f1"},
                                               SimpleNamespace(fingerprint="f1"), items, options)


@pytest.mark.parametrize("name, prior", [("dmplug", "bundled:phantom-ddpm"), ("fmplug", "bundled:phantom-flow")])
def test_a_run_leaves_the_solvers_settings_as_they_were(name, prior):
    """A solver object's ``params()`` (its settings: summary.json, the resume fingerprint) are the
    same after a run — DMPlug/FMPlug kept the optimised seed as ``z`` (and FMPlug ``t0``, ``y_hat``)
    among them, so a solver object used twice could not resume its own run."""
    import ipsolve

    solver = ipsolve.make_solver(name, iterations=2, **({"ddim_steps": 2} if name == "dmplug" else {}), progress=False)
    before = repr(solver.params())
    op = ipsolve.make_operator("super_resolution", scale=4)
    y = op.measure(ipsolve.datasets.heldout_phantoms(1, 32), 0.01, generator=torch.Generator().manual_seed(0))
    ipsolve.solve(y, op, ipsolve.load_prior(prior), solver, sigma=0.01)
    assert repr(solver.params()) == before


def test_the_resized_count_holds_only_reconstructed_images():
    """A file skipped as unreadable was counted among the resized images from its header."""
    from ipsolve.runner.run import finished_only

    resized = {"to": [32, 32], "count": 2, "from": {"40x56": 1, "64x64": 1}, "images": ["a", "b"],
               "_size_of": {"a": "40x56", "b": "64x64"}}
    assert finished_only(resized, {"a"}) == {"to": [32, 32], "count": 1, "from": {"40x56": 1}, "images": ["a"]}
    assert finished_only(resized, set()) is None and finished_only(None, {"a"}) is None


def test_each_record_gives_its_files_size(tmp_path, caplog):
    """Which image was centre-cropped and resized, from what size: each record's ``input_size`` (only
    summary.json's counts said so; an inputs audit, 2026-12-07)."""
    import numpy as np
    from skimage.io import imsave

    import ipsolve

    imsave(tmp_path / "wide.png", (np.linspace(0, 255, 40 * 56).reshape(40, 56)).astype(np.uint8))
    imsave(tmp_path / "square.png", (np.linspace(0, 255, 32 * 32).reshape(32, 32)).astype(np.uint8))
    run = ipsolve.reconstruct(tmp_path, solver=ipsolve.make_solver("dps_cpu", steps=2), threads=1, progress=False,
                              return_images=False, metrics=["psnr"])
    assert {r["name"]: r["input_size"] for r in run.records} == {"square": [32, 32], "wide": [40, 56]}
    assert run.summary["resized"]["images"] == ["wide"]
    (tmp_path / "small").mkdir()  # a square file is only resized (it was said to be "centre-cropped")
    imsave(tmp_path / "small" / "ten.png", (np.linspace(0, 255, 100).reshape(10, 10)).astype(np.uint8))
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        small = ipsolve.reconstruct(tmp_path / "small", solver=ipsolve.make_solver("dps_cpu", steps=2), threads=1,
                                    progress=False, return_images=False, metrics=["psnr"])
    assert "1 image file(s) will be resized to the prior's 32×32 as read (10×10 → 32×32: 1;" in caplog.text
    assert "1 image(s) were resized from 10×10" in report(small.summary)


def test_what_reading_changed_about_a_file_is_in_its_record(tmp_path, caplog):
    """Transparency composited on white, a 16-bit file holding 12-bit values: the log said them (transparency
    for the first file only) and no record, summary.json or report did (an inputs audit, 2026-12-07)."""
    import numpy as np
    from PIL import Image

    import ipsolve
    import ipsolve.io.images as images

    grey = np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)
    for name in ("a", "b"):
        Image.fromarray(np.dstack([grey, np.full((32, 32), 128, np.uint8)]), "LA").save(tmp_path / f"{name}.png")
    Image.fromarray((grey.astype(np.uint16) * 16)).save(tmp_path / "c.png")  # values up to 4080: 12-bit data
    Image.fromarray(grey).save(tmp_path / "d.png")
    images._TRANSPARENCY_SAID.clear()
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        run = ipsolve.reconstruct(tmp_path, solver=ipsolve.make_solver("dps_cpu", steps=2), threads=1, progress=False,
                                  return_images=False, metrics=["psnr"], output_dir=tmp_path / "out")
    assert caplog.text.count("has transparent pixels") == 1
    notes = {r["name"]: r.get("input_notes") for r in run.records}
    assert notes["a"] == ["a.png has transparent pixels (alpha down to 0.50): composited on white, as scikit-image's "
                          "rgba2rgb"] and notes["b"][0].startswith("b.png has transparent pixels")
    assert notes["c"] == ["c.png is 16-bit with values up to 4080 only (12-bit data?): read as 4080/65535 of full "
                          "scale, so it looks dark; scale it to the 16-bit range if it is 12-bit"] and notes["d"] is None
    assert set(run.summary["input_notes"]) == {"a", "b", "c"}
    assert "  note: 3 input file(s) changed as read: a.png has transparent pixels (alpha down to 0.50): composited " \
           "on white, as scikit-image's rgba2rgb; 2 more (summary.json input_notes)" in report(run.summary)


def test_blind_runs_write_kernels_and_their_error(tmp_path):
    """A blind run writes each estimated kernel's values (``kernel/<name>.npy``, beside the picture
    scaled to its maximum), the operator's true kernel (``operator_kernel.npy``) and, the
    measurement being simulated, each kernel's relative error (records, ``summary.json``)."""
    import numpy as np

    import ipsolve

    run = ipsolve.reconstruct("bundled:phantom", operator={"name": "blind_blur", "size": 8, "padding": "zero"},
                              solver={"name": "dps", "steps": 3}, max_images=2, progress=False, metrics=["psnr"],
                              output_dir=tmp_path / "run")
    true = np.load(tmp_path / "run" / "operator_kernel.npy")
    assert true.shape == (8, 8) and abs(true.sum() - 1) < 1e-5
    for rec in run.records:
        k = np.load(tmp_path / "run" / rec["outputs"]["kernel_data"])
        assert k.shape == (8, 8) and abs(k.sum() - 1) < 1e-4 and (tmp_path / "run" / rec["outputs"]["kernel"]).is_file()
        assert rec["kernel_error"] == pytest.approx(np.linalg.norm(k - true) / np.linalg.norm(true), rel=1e-4)
    assert run.summary["kernel_error"]["n"] == 2
    # also in metrics.csv and the report (they were in the JSON files only: audit 2026-12-07)
    import csv

    from ipsolve.runner import report

    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(r["kernel_error"]) for r in rows] == pytest.approx([r["kernel_error"] for r in run.records], rel=1e-5)
    assert "kernel error ‖k̂ − k‖/‖k‖ " in report(run.summary)


def test_blind_samples_report_the_residual_of_what_they_return():
    """``samples=k`` on a blind operator: the residual is that of the returned pair — the mean image
    blurred by the mean kernel (it was the mean of the samples' own residuals)."""
    import ipsolve
    from ipsolve import datasets
    from ipsolve.solvers.base import residual_ratio

    op = ipsolve.make_operator("blind_blur", size=8, padding="zero")
    prior = ipsolve.load_prior("bundled:phantom-ddpm")
    y = op.measure(datasets.heldout_phantoms(1, 32), 0.02, generator=0)
    res = ipsolve.solve(y, op, prior, ipsolve.make_solver("dps", steps=3, progress=False), sigma=0.02, samples=2)
    expected = residual_ratio(y, op(res.x, kernel=res.kernel), 0.02)
    assert res.info[0]["residual"] == pytest.approx(float(expected[0]), rel=1e-5)
    assert res.info[0]["residual"] != pytest.approx(sum(res.info[0]["sample_residuals"]) / 2, rel=1e-3)


def test_deblurring_audit_findings(tmp_path, caplog):
    """Audit 2026-12-05 (deblurring): every setting that shapes y is recorded (a resume at another
    motion intensity took the old results), DiffPIR refuses nonlinear operators (it diverged below
    the blurred image), an operator mismatch names the solvers that take the operator (not another
    prior, nor the solver refused), a kernel wider than the image is one line before any work, the
    papers' 61-px kernel on 32-px images is warned, and DiffPIR's per-task λ is what a kept preset
    reports (was "lam = None")."""
    import logging

    import ipsolve
    from ipsolve.operators import BlindBlur, GaussianBlur, NonlinearBlur
    from ipsolve.runner import RunError
    from ipsolve.solvers import make_solver

    assert NonlinearBlur(size=9, intensity=1.0).params["intensity"] == 1.0
    assert BlindBlur(size=8, intensity=0.3).params["intensity"] == 0.3
    assert BlindBlur(true_kernel="gaussian", size=8, std=2.0).params["std"] == 2.0
    with pytest.raises(ValueError, match="kernel_size must be a positive integer"):
        BlindBlur(size=8, kernel_size=0)
    with pytest.raises(ValueError, match="gain must be a number > 0"):
        NonlinearBlur(size=9, gain=0)
    cheap = dict(max_images=1, progress=False, metrics=["psnr"])
    with pytest.raises(RunError) as err:
        ipsolve.reconstruct("bundled:phantom", operator={"name": "nonlinear_blur", "size": 9}, solver="diffpir_cpu",
                            **cheap)
    assert "needs a linear operator" in str(err.value) and "prior=" not in str(err.value)
    with pytest.raises(RunError) as err:
        ipsolve.reconstruct("bundled:phantom", operator={"name": "motion_blur", "size": 9}, solver="ddrm_cpu", **cheap)
    message = str(err.value)
    assert "solvers that take this operator and prior: dps" in message and "prior=" not in message
    assert "ddrm," not in message.split("take this operator")[1] and "diffpir" in message  # CG: DiffPIR takes it
    with pytest.raises(RunError, match="too small for the 65x65 blur kernel") as err:
        ipsolve.reconstruct("bundled:phantom", operator={"name": "gaussian_blur", "size": 65},
                            solver={"name": "dps", "steps": 2}, **cheap)
    assert "\n" not in str(err.value)
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        ipsolve.reconstruct("bundled:phantom", operator="gaussian_blur", solver={"name": "dps", "steps": 2}, **cheap)
    assert "61-px blur kernel is wider than half the prior's 32-px images" in caplog.text
    diffpir = make_solver("diffpir")
    assert diffpir.default_value("lam", GaussianBlur(9, 1.0)) == 7.0 and diffpir.default_value("steps", GaussianBlur()) == 100
    # a kept DAPS preset reports the lr it ran with (it said "lr None"): the reference's per task and prior kind
    from ipsolve.priors import LatentPrior
    from ipsolve.solvers.daps import LATENT_TASKS, PIXEL_TASKS

    daps, latent = make_solver("daps"), LatentPrior(None, ipsolve.load_prior("gaussian", image_size=8), 8, 1)
    assert daps.default_value("lr", GaussianBlur()) == PIXEL_TASKS["gaussian_blur"][1]
    assert daps.default_value("lr", GaussianBlur(), latent) == LATENT_TASKS["gaussian_blur"][1]


# -- the Python API (audit 2026-12-06) -----------------------------------------------------
def test_api_audit_findings(tmp_path):
    """An operator object keeps its own image naming after ``reconstruct`` (per-image masks keyed by
    the run's names made a later ``solve(y, op)`` use the run's masks: 20.7 → 13.1 dB); a batch of
    another size under positional keys is warned about; every input unusable → one line (was an
    empty result); unsafe names and a non-integer ``max_images`` are refused; DPS ``steps`` above
    the prior's timesteps is refused (was capped while ζ was still rescaled); ``measure`` takes an
    int seed; a metric covering fewer images than the run (added on a resume) says so; images that
    are no folder, path list or float tensor/array get one line (were a TypeError from iterating)."""
    import numpy as np

    import ipsolve
    from ipsolve import datasets

    prior = ipsolve.load_prior("bundled:phantom-ddpm")
    op = ipsolve.make_operator("inpainting", missing=[0.3, 0.7])
    x = datasets.heldout_phantoms(2, 32)
    y = op.measure(x, 0.01, generator=0)
    assert torch.equal(y, ipsolve.make_operator("inpainting", missing=[0.3, 0.7]).measure(
        x, 0.01, generator=torch.Generator().manual_seed(0)))
    masks = op.mask_for(x.shape).clone()
    ipsolve.reconstruct(x, operator=op, solver=ipsolve.make_solver("dps_cpu", steps=2), prior=prior, threads=1,
                        metrics=["psnr"])
    assert op.image_names() is None and torch.equal(op.mask_for(x.shape), masks)
    # a slice of the measured batch solved alone gets image 0's mask (keyed by position): refused, as y's holes show
    # (a size-change warning fired on new batches too, and a same-size reorder was solved silently wrong)
    with pytest.raises(ValueError, match=r"y's image 0 holds image content where its inpainting mask has holes .*"
                                         r"keyed by position in the batch"):
        ipsolve.solve(y[1:2], op, prior, ipsolve.make_solver("dps_cpu", steps=2), sigma=0.01)
    with pytest.raises(ValueError, match=r"holds image content where its inpainting mask has holes"):  # reordered
        ipsolve.solve(y[[1, 0]], op, prior, ipsolve.make_solver("dps_cpu", steps=2), sigma=0.01)
    ipsolve.solve(y[:1], op, prior, ipsolve.make_solver("dps_cpu", steps=2), sigma=0.01)  # the first alone: its mask
    with pytest.raises(RunError, match=r"none of the 2 image\(s\) could be used; image_0000: .*64"):
        ipsolve.reconstruct(torch.zeros(2, 1, 64, 64), solver="dps_cpu", threads=1)
    with pytest.raises(RunError, match="path separator"):
        ipsolve.reconstruct(x, names=["../escape", "b"], solver="dps_cpu", threads=1)
    from ipsolve.runner.inputs import collect_items

    for bad, what in ((None, "got NoneType"), (["a.png", 3], "got a list holding int, str"),
                      (np.zeros((1, 1, 32, 32), np.uint8), r"got an array of uint8 \(from 0…255 use x / 127.5 − 1\)")):
        with pytest.raises(RunError, match=r"images must be a folder .*" + what):
            ipsolve.reconstruct(bad, solver="dps_cpu", threads=1)
    arrays = collect_items(x.numpy())  # a float array is taken as the tensor it holds
    assert [i.name for i in arrays] == ["image_0000", "image_0001"] and torch.equal(arrays[1].tensor, x[1:2])
    flipped = collect_items(x.numpy().astype(">f8")[:, :, ::-1])  # any byte order and strides
    assert torch.equal(flipped[0].tensor, x[:1].flip(2))
    with pytest.raises(RunError, match="max_images must be an integer"):
        ipsolve.reconstruct(x, max_images="abc", solver="dps_cpu", threads=1)
    with pytest.raises(ValueError, match="steps=2000 is more than the prior's 1000 timesteps"):
        ipsolve.solve(y, op, prior, ipsolve.make_solver("dps", steps=2000), sigma=0.01)
    warm = ipsolve.make_solver("dps_cpu", warm_start=0.05)  # 250 steps asked, 51 timesteps left: 51 run, ζ for 51
    res = ipsolve.solve(y[:1], op, prior, warm, sigma=0.01)
    assert res.info[0]["nfe"] == 51 and warm.step_size(op, 51) == pytest.approx(warm.step_size(op) * 250 / 51)
    with pytest.raises(TypeError, match="int seed, got bool"):
        op.measure(x, 0.01, generator=True)
    # a bad measurement file among good ones: skipped by name, the rest solved (it stopped the whole run)
    sr = ipsolve.make_operator("super_resolution")
    folder = tmp_path / "y"
    folder.mkdir()
    ys = sr.measure(x, 0.01, generator=0)
    np.save(folder / "good.npy", ys[0].numpy())
    np.save(folder / "bad.npy", ((ys[1] + 1) * 127.5).numpy())  # [0, 255]
    run = ipsolve.reconstruct(folder, operator=sr, solver=ipsolve.make_solver("dps_cpu", steps=2), prior=prior,
                              measurements=True, sigma=0.01, threads=1, batch_size=2)
    assert [r["name"] for r in run.records] == ["good"] and "far more than" in run.skipped[0]["reason"]
    summary = {"num_finished": 4, "num_skipped": 0, "skipped": [], "operator": {"name": "sr"}, "solver": {"name": "d"},
               "prior": {"source": "p"}, "sigma": 0.01, "num_processes": 1, "nfe": None, "residual": None,
               "stop_reasons": {},
               "metrics": {"psnr": {"mean": 20.0, "std": 1.0, "median": 20.0, "n": 4},
                           "ssim": {"mean": 0.5, "std": 0.1, "median": 0.5, "n": 2}}}
    text = report(summary)
    assert "SSIM 0.500 ± 0.100, median 0.500 (over 2 of 4 images)" in text and "20.00 (over" not in text


def test_a_refused_resume_says_what_changed(tmp_path):
    """The "different settings" refusal names the settings that changed against the run directory's
    config.yaml, or says that the same configuration was recorded by another ipsolve version."""
    from ipsolve.runner.rundir import settings_changed

    (tmp_path / "config.yaml").write_text("sigma: 0.01\nsolver:\n  name: dps\n  steps: 2\n")
    assert settings_changed(tmp_path, "sigma: 0.01\nsolver:\n  name: dps\n  steps: 3\n") == \
        "; changed: solver.steps (2 → 3)"
    assert "outside it" in settings_changed(tmp_path, "sigma: 0.01\nsolver: {name: dps, steps: 2}\n")
    assert settings_changed(tmp_path, "sigma: 0.01\nthreads: 1\nsolver: {name: dps, steps: 3}\n") == \
        "; changed: solver.steps (2 → 3)"  # settings that do not change results are left out
    assert settings_changed(tmp_path / "none", "sigma: 1") == ""


def test_matrix_audit_findings():
    """Audit 2026-12-06 (every operator × solver preset): PnP-Flow's step normalisation on a
    nonlinear operator uses Gauss–Newton products (its Hessian at x = 0 on phase retrieval was not
    positive: L clamped to 1e-12, NaN at every budget); the blind-blur refusal names the solvers
    that take the prior; an empty batch is one line; the reliability score's network calls are
    counted apart from the solver's."""
    import ipsolve
    from ipsolve import datasets

    x = datasets.heldout_phantoms(2, 32)
    op = ipsolve.make_operator("phase_retrieval")
    y = op.measure(x, 0.05, generator=0)
    flow = ipsolve.load_prior("bundled:phantom-flow")
    res = ipsolve.solve(y, op, flow, ipsolve.make_solver("pnp_flow_cpu", steps=5, progress=False), sigma=0.05)
    assert torch.isfinite(res.x).all() and all(0.1 < i["lipschitz_constant"] < 10 for i in res.info)
    assert res.info[0]["reliability_nfe"] == 2
    with pytest.raises(ValueError, match="with a flow prior use fmplug for blind_blur"):
        ipsolve.make_solver("pnp_flow").check(ipsolve.make_operator("blind_blur"), flow)
    with pytest.raises(ValueError, match="a batch of 0"):
        ipsolve.solve(y[:0], op, flow, ipsolve.make_solver("pnp_flow_cpu", steps=2, progress=False), sigma=0.05)


def test_api_doors_raise_one_error_type_for_the_same_bad_setting():
    """A misspelt solver is a ValueError with the same did-you-mean line whether it reaches
    ``ipsolve.reconstruct`` (the runner's RunError) or ``ipsolve.make_solver``; σ as the command
    line's string is read, a bad one is named."""
    import ipsolve
    from ipsolve.runner.run import check_arguments

    messages = []
    for call in (lambda: ipsolve.reconstruct(torch.zeros(1, 1, 32, 32), solver="dsp_cpu", progress=False),
                 lambda: ipsolve.make_solver("dsp_cpu")):
        with pytest.raises(ValueError, match="did you mean 'dps_cpu'") as err:
            call()
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert issubclass(RunError, ValueError)
    assert check_arguments(4, "gaussian", "0.02") == (4, 0.02)
    for bad in ("abc", -1, True, None, float("nan")):
        with pytest.raises(RunError, match=r"sigma must be a finite number >= 0 .* got "):
            check_arguments(4, "gaussian", bad)


def test_run_settings_are_checked_before_any_work():
    """Metrics, the LPIPS backbone and the review settings are one-line errors before the first image
    (metrics=null was list()'s TypeError, metrics=psnr was read letter by letter, lpips_net waited for
    LPIPS to be asked for, review_coverage=abc was a TypeError and review_below with review_coverage
    a ValueError after the whole run)."""
    import ipsolve
    from ipsolve.runner.run import metric_names

    assert metric_names("psnr", "alex") == ["psnr"] and metric_names(("psnr", "ssim"), "vgg") == ["psnr", "ssim"]
    assert metric_names([], "alex") == []
    for metrics, net, needle in ((None, "alex", "metrics must be a list of psnr, ssim, lpips ([] for none), got null"),
                                 ("abc", "alex", "unknown metric(s) 'abc'; known: psnr, ssim, lpips"),
                                 (["psnr", 3], "alex", "got ['psnr', 3]"),
                                 (["psnr"], "squeeze", "lpips_net must be one of alex, vgg, got 'squeeze'")):
        with pytest.raises(RunError) as err:
            metric_names(metrics, net)
        assert str(err.value).endswith(needle) or needle in str(err.value), str(err.value)
    for kw, needle in (({"review_coverage": "abc"}, "review_coverage must be a fraction in (0, 1]"),
                       ({"review_coverage": True}, "or null, got true"),
                       ({"review_coverage": 0.5, "review_below": -1.0}, "not both"),
                       ({"metrics": None}, "got null")):
        with pytest.raises(RunError) as err:
            ipsolve.reconstruct(torch.zeros(1, 1, 32, 32), solver="dps_cpu", progress=False, **kw)
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)

    # a caller's tensor on [0, 1] is said in the run's warnings (measure()'s InputWarning is filtered in a run)
    x = ipsolve.datasets.heldout_phantoms(1, 32)
    fast = {"name": "dps", "steps": 2}
    run = ipsolve.reconstruct((x + 1) / 2, solver=fast, progress=False, metrics=["psnr"], return_images=False)
    assert any(w.startswith("the image tensor lies in [0, 1] (its range is [0, 0.8") for w in run.summary["warnings"])
    run = ipsolve.reconstruct(x, solver=fast, progress=False, metrics=["psnr"], return_images=False)
    assert not any("lies in [0, 1]" in w for w in run.summary["warnings"])
    # so is a measurement tensor on [0, 1] (up to its noise), with the fix for y and sigma
    y = ipsolve.make_operator("super_resolution").measure(x, sigma=0.01, generator=0)
    run = ipsolve.reconstruct((y + 1) / 2, measurements=True, sigma=0.005, solver=fast, progress=False,
                              return_images=False)
    assert any(w.startswith("the measurement tensor lies in [0, 1] (its range is [-0.0") and
               w.endswith("use 2·y − 1 and 2·sigma") for w in run.summary["warnings"]), run.summary["warnings"]


def test_report_warns_when_the_reconstructions_score_below_the_initial_guess():
    """With ground truth, a run whose mean PSNR is below the initial guess's says so (a prior that does
    not fit the images printed its numbers without a word, newcomer audit 2026-12-06); one above does not."""
    settings = {"operator": {"name": "super_resolution"}, "solver": {"name": "dps"}, "prior": {"source": "p"},
                "sigma": 0.01}

    def run(psnr, initial):
        recs = [{**record(f"im{i}", 1.0), "metrics": {"psnr": p}, "initial_metrics": {"psnr": q}}
                for i, (p, q) in enumerate(zip(psnr, initial))]
        return report(summarize(recs, settings=settings, skipped=[], num_processes=1, wall_seconds=1.0,
                                extra={"warnings": []}))

    assert "score below the operator's initial guess (mean PSNR 25.00 against 26.50 dB)" in run([24, 26], [26, 27])
    assert "below the operator's initial guess" not in run([27, 28], [26, 27])



def test_report_gives_the_calibration_score_against_the_initial_guess_with_its_standard_error():
    """The report gives both scores and one standard error of their paired difference; within it, a
    note says the score cannot tell whether the solve beats the initial guess (a note, not a warning)."""
    settings = {"operator": {"name": "inpainting"}, "solver": {"name": "dps"}, "prior": {"source": "p"}, "sigma": 0.01}
    calibration = {"params": {"zeta": 0.5}, "images": ["im0"], "method": "holdout", "candidates": 5,
                   "nfe_per_image": 500.0, "seconds": 3.0, "note": "", "score": 10.4, "initial_guess_score": 10.5,
                   "against_initial_guess": "indistinguishable", "initial_guess_difference": 0.2,
                   "initial_guess_se": 0.3, "comparison_splits": 2}

    def text(**changes):
        summary = summarize([record("im0", 1.0)], settings=settings, skipped=[], num_processes=1, wall_seconds=1.0,
                            extra={"warnings": [], "calibration": {**calibration, **changes}})
        return report(summary)

    tie = text()
    assert "calibration score on the split that chose the values (per entry: held-out entries' error, plus kept entries' misfit beyond it; lower is " \
           "better): 10.4, the operator's initial guess 10.5; on 2 fresh splits of y (other held-out entries, which do " \
           "not flatter the values) the solve scored 0.2 per entry above the guess (one standard error 0.3: " \
           "indistinguishable from the guess)" in tie
    # with the run's σ recorded the unit is said: σ², or the mean squared error of a noise-free run
    assert "calibration score on the split that chose the values (σ² per entry: held-out" in text(sigma=0.01) and "scored 0.2 σ² per entry" in text(sigma=0.01)
    assert "scored 0.2 per entry (mean squared error: σ = 0" in text(sigma=0.0)
    assert "calibrated on 1 image(s) without the ground truth: zeta = 0.5 (holdout" in tie  # no "changes" recorded
    assert "note: calibration: the score cannot tell whether the solve beats the operator's initial guess" in tie
    assert "warning: calibration" not in tie
    better = text(against_initial_guess="better", initial_guess_difference=-1.5, comparison_splits=0)
    assert "; on the calibration's own split the solve scored 1.5 per entry below the guess (one standard " \
           "error 0.3: better than the guess)" in better and "cannot tell" not in better
    tiny = text(against_initial_guess="better", initial_guess_difference=-0.00012, initial_guess_se=0.00005)
    assert "the solve scored 0.00012 per entry below the guess (one standard error 0.00005: better" in tiny  # σ = 0
    # a value the calibration kept is marked as the solver's own; a changed one is not
    assert "zeta = 0.5 (the solver's own, kept) (holdout" in text(changes={})
    assert "zeta = 0.5 (holdout" in text(changes={"zeta": 0.5})
    old = text(against_initial_guess=None, initial_guess_se=None)  # a calibration.json from before 2026-12-06
    assert "guess 10.5 (a warning only where the guess is better by more than one standard error)" in old
    # sigma=auto measures σ to 17 digits; the report's run line gives six
    from ipsolve.runner.reports import sigma_text

    assert sigma_text(0.015166305909509086) == "0.0151663" and sigma_text(0.01) == "0.01"
    assert "| sigma 0.0151663 |" in report(summarize([record("im0", 1.0)], settings={**settings, "sigma": 0.015166305909509086},
                                                     skipped=[], num_processes=1, wall_seconds=1.0, extra={"warnings": []}))
    # the Python API's warning prints the same plain figures as the report, at any scale
    from ipsolve.solvers.calibration import initial_guess_warning
    warning = initial_guess_warning({"comparison_splits": 2, "initial_guess_difference": 1550.0,
                                     "initial_guess_se": 585.04})
    assert "on 2 fresh splits of y, by 1550 per entry, one standard error 585)" in warning
    assert "by 0.00012 per entry" in initial_guess_warning({"comparison_splits": 0, "initial_guess_difference": 0.00012,
                                                             "initial_guess_se": 0.00005})
    assert "by 1550 σ² per entry" in initial_guess_warning({"comparison_splits": 2, "initial_guess_difference": 1550.0,
                                                            "initial_guess_se": 585.04}, sigma=0.05)

def test_api_tensors_of_another_channel_count_are_converted_like_files():
    """A grey tensor for a colour prior is replicated, a colour one for a grey prior converted by
    skimage's luminance weights — as image files are — and the run's warnings say so (was: skipped as
    'the prior needs (3, 32, 32)' and an error that no image could be used)."""
    import ipsolve
    from ipsolve.runner.inputs import convert_channels
    from skimage.color import rgb2gray

    colour = torch.rand(1, 3, 32, 32) * 2 - 1
    grey = convert_channels(colour, 1)
    expected = rgb2gray(((colour[0].permute(1, 2, 0).numpy() + 1) / 2)) * 2 - 1
    torch.testing.assert_close(grey[0, 0], torch.from_numpy(expected).float(), atol=1e-5, rtol=0)
    assert torch.equal(convert_channels(grey, 3), grey.expand(-1, 3, -1, -1))
    fast = {"name": "dps", "steps": 2}
    run = ipsolve.reconstruct(colour, operator="super_resolution", solver=fast, progress=False, metrics=["psnr"])
    assert run.x.shape == (1, 1, 32, 32) and "converted to grey" in run.summary["warnings"][0]


def test_uncertainty_outputs_a_newcomer_reads(tmp_path):
    """(audit 2026-12-07) With ``select=residual`` ``mean/`` held the chosen sample, not the mean; at
    σ = 0 the initial guess's and the samples' residuals came out ~10¹⁰ (the result's was n/a);
    ``review_below`` took NaN, inf and positive values (non-standard JSON, every image flagged); a
    solver that draws no randomness gave k identical samples and a std of 0 unsaid."""
    import numpy as np

    import ipsolve
    from ipsolve.runner import RunError
    from ipsolve.solvers.sampling import IdenticalSamplesWarning

    fast = {"name": "dps", "steps": 3, "rescale_zeta": True}
    run = ipsolve.reconstruct("bundled:phantom", solver=fast, max_images=1, samples=2, select="residual",
                              output_dir=tmp_path / "sel", metrics=["psnr"], progress=False)
    rec = run.records[0]
    mean = ipsolve.io.load_image(tmp_path / "sel" / rec["outputs"]["mean"])
    picks = [ipsolve.io.load_image(tmp_path / "sel" / rec["outputs"][f"samples/_s{j}"]) for j in range(2)]
    assert (mean - (picks[0] + picks[1]) / 2).abs().max() <= 2 / 255 + 1e-6  # the mean (8-bit), not a sample
    assert not torch.equal(mean, picks[rec["info"]["selected_sample"]])
    zero = ipsolve.reconstruct("bundled:phantom", solver=fast, max_images=1, samples=2, sigma=0.0,
                               output_dir=tmp_path / "zero", metrics=["psnr"], progress=False)
    info = zero.records[0]
    assert info["info"]["residual"] is None and info["info"]["sample_residuals"] is None
    assert info["initial_residual"] is None
    for bad in (float("nan"), float("inf"), 0.5):
        with pytest.raises(RunError, match=r"review_below must be a finite number <= 0"):
            ipsolve.reconstruct("bundled:phantom", solver=fast, max_images=1, review_below=bad)
    op = ipsolve.make_operator("super_resolution", scale=4)
    y = op.measure(ipsolve.datasets.heldout_phantoms(1, 32), 0.01, generator=0)
    flow = ipsolve.load_prior("bundled:phantom-flow")
    with pytest.warns(IdenticalSamplesWarning, match="the 2 samples are identical"):
        res = ipsolve.solve(y, op, flow, ipsolve.make_solver("dflow", steps=2, max_iter=1, lbfgs_iter=1,
                                                            inversion="euler", inversion_steps=2, alpha=1.0,
                                                            progress=False), sigma=0.01, samples=np.int64(2))
    assert float(res.std.amax()) == 0.0 and np.isfinite(res.info[0]["residual"])  # (np.int64 samples: was refused)


def test_blur_measurements_are_reused_by_their_kernel(tmp_path, monkeypatch):
    """Audit 2026-12-07: measurements made with ``operator.kernel=k.npy`` (a relative path) could not be
    reused from another folder ("no file at 'k.npy'"), the same file by another path was "another
    operator", and an in-memory kernel's measurements never could be.  The path is recorded absolute,
    kernels compare by the kernel applied, and an array's run is rebuilt from its operator_kernel.npy."""
    import numpy as np

    import ipsolve
    from ipsolve.runner.errors import RunError

    kernel = np.outer([1.0, 2.0, 1.0], [1.0, 1.0, 2.0, 1.0])
    made = tmp_path / "made"
    made.mkdir()
    np.save(made / "k.npy", kernel)
    monkeypatch.chdir(made)
    # threads pinned: runs compared bit for bit must not each follow the machine's load (threads=auto), since 1 and
    # 2 threads round DPS on a blur differently (5e-6; a fresh-clone suite failed here once)
    common = dict(solver=ipsolve.make_solver("dps", steps=5, progress=False), prior="phantom_ddpm", sigma=0.01,
                  max_images=1, progress=False, metrics=["psnr"], threads=1)
    first = ipsolve.reconstruct("bundled:phantom", ipsolve.make_operator("blur", kernel="k.npy"), output_dir="run",
                                **common)
    from_array = ipsolve.reconstruct("bundled:phantom", ipsolve.make_operator("blur", kernel=kernel * 3),
                                     output_dir=tmp_path / "arr", **common)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    del common["sigma"]
    again = ipsolve.reconstruct(made / "run" / "measurement", measurements=True, output_dir="again", **common)
    assert torch.equal(again.x, first.x)  # the recorded operator (and σ) rebuilt from here
    np.save(elsewhere / "copy.npy", kernel)  # the same kernel by another path: the same operator
    ipsolve.reconstruct(made / "run" / "measurement", ipsolve.make_operator("blur", kernel=str(elsewhere / "copy.npy")),
                        measurements=True, output_dir="copy", sigma=0.01, **common)
    arr = ipsolve.reconstruct(tmp_path / "arr" / "measurement", measurements=True, output_dir="arr_again", **common)
    assert torch.equal(arr.x, from_array.x)  # rebuilt from the run's operator_kernel.npy
    np.save(elsewhere / "other.npy", np.ones((3, 3)))
    with pytest.raises(RunError, match="these measurements were made by the operator blur"):
        ipsolve.reconstruct(made / "run" / "measurement", ipsolve.make_operator("blur", kernel="other.npy"),
                            measurements=True, output_dir="other", sigma=0.01, **common)


def test_operator_settings_their_mode_leaves_unused_are_refused_when_given(tmp_path):
    """A setting given on the command line that the operator's mode does not use is one line
    before any work (a BKSE checkpoint given to the camera model ran the camera model silently);
    the same setting in a preset's defaults (not given) is not."""
    import numpy as np

    from ipsolve.operators.blur import BlindBlur
    from ipsolve.operators.inpainting import Inpainting
    from ipsolve.operators.mri import MRI
    from ipsolve.operators.nonlinear import NonlinearBlur
    from ipsolve.runner.run import check_settings_used

    def said(op, explicit):
        with pytest.raises(RunError) as err:
            check_settings_used(op, explicit)
        return str(err.value)

    camera = NonlinearBlur(size=9)
    assert said(camera, ["checkpoint", "size"]) == (
        "operator 'nonlinear_blur' with model=camera, kernel=motion does not use operator.checkpoint (used with "
        "model=bkse): leave it out or choose that mode")
    assert "operator.seed (used with kernel=motion or model=bkse)" in said(NonlinearBlur(kernel="gaussian", size=9),
                                                                          ["seed", "std"])
    check_settings_used(camera, ["size", "intensity", "gain", "seed"])  # the camera's own: nothing said
    check_settings_used(camera, [])                                      # the yaml's code_scale, not given
    assert "operator.std (used with true_kernel=gaussian)" in said(BlindBlur(size=9), ["std"])
    check_settings_used(BlindBlur(true_kernel="gaussian", size=9), ["std", "size"])
    assert "with mask=random does not use operator.box_fraction (used with mask=box)" in said(Inpainting(), ["box_fraction"])
    assert "operator.missing (used with mask=random)" in said(Inpainting(mask="box"), ["missing"])
    mask = tmp_path / "cols.npy"
    np.save(mask, (np.arange(16) % 2 == 0).astype(np.float32))
    message = said(MRI(mask=str(mask)), ["acceleration", "seed", "mask"])
    assert "operator.acceleration (used with mask=random or equispaced or equispaced_fraction (a mask file decides))" in message
    assert "operator.seed" in message and message.endswith("leave them out or choose that mode")
    check_settings_used(MRI(mask=str(mask), coils=2), ["seed"])  # the seed draws the coil maps
    check_settings_used(MRI(), ["acceleration", "seed", "center_fraction"])


def test_a_strip_that_loses_most_of_itself_in_the_centre_crop_is_said(tmp_path, caplog):
    """Files are centre-cropped to a square: a 3×300 strip kept a 3×3 crop, enlarged to the prior's
    size, said only as "resized" (audit 2026-12-07); now said with the files concerned."""
    import numpy as np
    from skimage import io as skio
    from types import SimpleNamespace

    from ipsolve.runner.inputs import Item
    from ipsolve.runner.run import resized_inputs

    for name, shape in (("strip", (3, 300)), ("wide", (40, 56)), ("fits", (32, 32))):
        skio.imsave(tmp_path / f"{name}.png", np.full(shape, 128, np.uint8), check_contrast=False)
    items = [Item(name, path=tmp_path / f"{name}.png") for name in ("strip", "wide", "fits")]
    with caplog.at_level("WARNING", logger="ipsolve"):
        record = resized_inputs(items, SimpleNamespace(image_size=32), rank=0)
    assert record["images"] == ["strip", "wide"] and record["from"] == {"3x300": 1, "40x56": 1}
    said = [r.getMessage() for r in caplog.records]
    assert said[0] == ("1 image file(s) keep less than half of their area in the square centre crop (strip: 3×300): "
                       "crop or pad them yourself to keep what matters")
    assert said[1].startswith("2 image file(s) will be centre-cropped to a square and resized to the prior's 32×32")


def test_bad_input_audit_findings(tmp_path, caplog):
    """Bad input gets one line and the other inputs are solved (audit 2026-12-07): an empty ``.npy``
    (numpy's EOFError stopped the run) and one holding NaN are skipped by name, also from a tensor;
    ``.npy`` measurements on [0, 1] are warned about (only tensors were); an empty ``data.path``
    is refused (it read the current folder); a folder whose images lie in subfolders says so;
    ``sigma=auto`` that estimates 0 is refused (the run went on with every residual check off)."""
    import numpy as np

    import ipsolve
    from ipsolve import datasets

    prior = ipsolve.load_prior("bundled:phantom-ddpm")
    sr, dps = ipsolve.make_operator("super_resolution"), ipsolve.make_solver("dps_cpu", steps=2)
    x = datasets.heldout_phantoms(3, 32)
    ys = sr.measure(x, 0.01, generator=0)
    folder = tmp_path / "y"
    folder.mkdir()
    np.save(folder / "a_good.npy", ys[0].numpy())
    (folder / "b_empty.npy").write_bytes(b"")
    nan = ys[1].numpy().copy()
    nan[0, 0, 0] = np.nan
    np.save(folder / "c_nan.npy", nan)
    np.save(folder / "d_unit.npy", ((ys[2] + 1) / 2).numpy())  # on [0, 1]: solved, and said
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        run = ipsolve.reconstruct(folder, operator=sr, solver=dps, prior=prior, measurements=True, sigma=0.01,
                                  threads=1, batch_size=4)
    assert [r["name"] for r in run.records] == ["a_good", "d_unit"]
    reasons = {s["name"]: s["reason"] for s in run.skipped}
    assert reasons["b_empty"].endswith("b_empty.npy: the file is empty"), reasons
    assert reasons["c_nan"].endswith("c_nan.npy holds 1 NaN or inf value(s); expected finite numbers"), reasons
    assert "d_unit.npy lies in [0, 1]" in caplog.text and "(1 of 2 measurement .npy files, read exactly, lie in" \
        in caplog.text and "a_good.npy lies" not in caplog.text
    ys[1, 0, 0, 0] = float("nan")  # a tensor's NaN image: skipped, the others solved (it stopped the run)
    run = ipsolve.reconstruct(ys, operator=sr, solver=dps, prior=prior, measurements=True, sigma=0.01, threads=1)
    assert [r["name"] for r in run.records] == ["image_0000", "image_0002"]
    assert run.skipped[0]["reason"] == "its measurement holds NaN or inf values; expected finite numbers"
    with pytest.raises(RunError, match="data.path is empty; expected a folder"):
        ipsolve.reconstruct("", solver=dps, prior=prior, threads=1)
    nested = tmp_path / "nested"
    (nested / "class_a").mkdir(parents=True)
    np.save(nested / "class_a" / "x.npy", x[0].numpy())
    with pytest.raises(RunError, match=r"no images .*\.npy\) in data folder .*nested \(1 in its subfolders, which are "
                                       r"not read"):
        ipsolve.reconstruct(nested, solver=dps, prior=prior, threads=1)
    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(flat / "const.npy", np.zeros((1, 32, 32), np.float32))
    with pytest.raises(RunError, match="sigma=auto estimated 0 from the measurements .* give sigma=VALUE"):
        ipsolve.reconstruct(flat, operator=ipsolve.make_operator("gaussian_blur", size=9, std=1.0), solver=dps,
                            prior=prior, measurements=True, sigma="auto", threads=1)


def test_one_run_at_a_time_writes_to_a_folder(tmp_path, caplog):
    """A second run into a folder a live run holds stops in one line (two runs a second apart mixed
    steps-60 results with a steps-20 config.yaml, both "written": audit 2026-12-07); a lock left by a
    process that is gone is taken over, one from another host with a warning; the run removes its own."""
    import os
    import subprocess
    import sys

    import ipsolve
    from ipsolve.runner.lock import LOCK_FILE, _start_ticks, run_lock

    x = ipsolve.datasets.heldout_phantoms(1, 32)
    dps = ipsolve.make_solver("dps_cpu", steps=2)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with run_lock(tmp_path):  # held by this process: a second taker on this host with a live holder stops
            lock = json.loads((tmp_path / LOCK_FILE).read_text())
            assert lock["pid"] == os.getpid()
        assert not (tmp_path / LOCK_FILE).exists()
        (tmp_path / LOCK_FILE).write_text(json.dumps({**lock, "pid": holder.pid, "start_ticks": _start_ticks(holder.pid)}))
        with pytest.raises(RunError, match=rf"another ipsolve run \(process {holder.pid}, started .*\) is writing to "
                                           rf".*: wait for it to end, or give another output directory"):
            ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path, threads=1)
        assert not (tmp_path / "records").exists()  # stopped before any work
    finally:
        holder.kill()
        holder.wait()
    run = ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path, threads=1)  # its process is gone: taken over
    assert len(run.records) == 1 and not (tmp_path / LOCK_FILE).exists()
    if lock["start_ticks"] is not None:  # (Linux) a live process under the lock's id, started after it: id reused
        (tmp_path / LOCK_FILE).write_text(json.dumps({**lock, "pid": os.getppid(), "start_ticks": lock["start_ticks"] + 1}))
        ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path, threads=1)
        assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text(json.dumps({**lock, "host": "elsewhere", "pid": 1}))
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path, threads=1)
    assert "holds the lock of a run on host elsewhere (process 1" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_rerun_on_fewer_images_says_the_folder_holds_more(tmp_path):
    """A rerun with a smaller max_images summarised the images it selected, silently, beside the others'
    files: its summary and report now say how many finished images they leave out, and which."""
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(3, 32)
    run = tmp_path / "run"
    dps = ipsolve.make_solver("dps_cpu", steps=2)
    first = ipsolve.reconstruct(x, solver=dps, output_dir=run, threads=1, progress=False, return_images=False)
    assert not any("did not select" in w for w in first.summary["warnings"])
    again = ipsolve.reconstruct(x, solver=dps, output_dir=run, threads=1, progress=False, max_images=1,
                                return_images=False)
    assert again.summary["num_finished"] == 1
    assert f"{run} also holds 2 finished image(s) this run did not select (image_0001, image_0002; a smaller " \
        "data.max_images, or other inputs)" in report(again.summary)
    # other images with other settings: refused (a CLI run into a Python folder mixed DMPlug's results with DPS's)
    import numpy as np
    from skimage.io import imsave

    (tmp_path / "other").mkdir()
    imsave(tmp_path / "other" / "z.png", (np.linspace(0, 255, 32 * 32).reshape(32, 32)).astype(np.uint8))
    with pytest.raises(RunError, match=r"holds results of different settings .*image_0000.json: .*another input's"):
        ipsolve.reconstruct(tmp_path / "other", solver=ipsolve.make_solver("dps_cpu", steps=3),
                            output_dir=run, threads=1, progress=False)


def test_a_resume_at_another_thread_count_says_how_each_image_was_made(tmp_path):
    """summary.json's ``threads`` described the last invocation only; a run's images repeat bit for bit
    only at the thread count each was made with (audit 2026-12-07): each record keeps it, and a mix is
    given per count in the summary and the report."""
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(2, 32)
    dps = ipsolve.make_solver("dps_cpu", steps=2)
    first = ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path, threads=1, max_images=1)
    assert first.records[0]["threads"] == 1 and "images_by_threads" not in first.summary["threads"]
    run = ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path, threads=2)
    assert run.summary["threads"]["images_by_threads"] == {"1": 1, "2": 1}
    assert "the images were made with 1 thread(s): 1, 2 thread(s): 1 (a resume)" in report(run.summary)


def test_save_arrays_keeps_the_exact_values_the_metrics_were_computed_on(tmp_path):
    """The PNGs are 8-bit: PSNR recomputed from them differs by up to ~0.01 dB, a residual near the noise
    level by far more (an audit, 2026-12-07).  ``save_arrays`` also writes recon/ and initial/ as float32
    ``.npy``; the reported PSNR is the one these give."""
    import numpy as np

    import ipsolve
    from ipsolve.metrics import psnr

    x = ipsolve.datasets.heldout_phantoms(2, 32)
    run = ipsolve.reconstruct(x, solver=ipsolve.make_solver("dps_cpu", steps=2), output_dir=tmp_path, threads=1,
                              progress=False, save_arrays=True, return_images=False)
    for i, rec in enumerate(run.records):
        recon = torch.from_numpy(np.load(tmp_path / "recon" / f"{rec['name']}.npy"))[None]
        assert (tmp_path / "initial" / f"{rec['name']}.npy").is_file()
        assert float(psnr(recon, x[i:i + 1])) == pytest.approx(rec["metrics"]["psnr"], abs=1e-4)
    plain = ipsolve.reconstruct(x, solver=ipsolve.make_solver("dps_cpu", steps=2), output_dir=tmp_path / "plain",
                                threads=1, progress=False, return_images=False)
    assert plain.records and not any((tmp_path / "plain" / "recon").glob("*.npy"))


def test_a_batch_out_of_memory_is_solved_in_halves(tmp_path, caplog, monkeypatch):
    """Out of (GPU) memory on a batch was a traceback: the batch is solved as two halves instead — each
    image's seeds are its own, so the results equal a run at that batch size — and the later batches take
    the smaller size; on one image, one line saying what lowers the memory, the finished images kept."""
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(5, 32)
    dps = ipsolve.make_solver("dps_cpu", steps=2)
    real_run = type(dps).run

    def small_memory(self, y, *args, **kwargs):  # room for 2 images at a time
        if y.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self, y, *args, **kwargs)

    monkeypatch.setattr(type(dps), "run", small_memory)
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        run = ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path / "a", batch_size=4, threads=1, progress=False)
    assert "on a batch of 4 image(s) (CUDA out of memory. Tried to allocate 2.00 GiB): solving it as 2 + 2" in caplog.text
    assert [r["batch"] for r in run.records] == [["image_0000", "image_0001"]] * 2 + [["image_0002", "image_0003"]] * 2 \
        + [["image_0004"]]
    pairs = ipsolve.reconstruct(x, solver=dps, batch_size=2, threads=1, progress=False)
    assert torch.equal(run.x, pairs.x)

    def no_memory(self, y, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(type(dps), "run", no_memory)
    with pytest.raises(RunError, match=r"out of .*memory solving one image \(CUDA out of memory\. Tried to allocate "
                                       r"9\.00 GiB\): finished images are kept and a rerun resumes; lower the memory"):
        ipsolve.reconstruct(x[:1], solver=dps, output_dir=tmp_path / "b", threads=1, progress=False)


def test_out_of_memory_in_calibration_is_one_line_naming_fewer_images(tmp_path, monkeypatch):
    """Calibration solves its images as one batch, which the batch loop's halving does not reach: running out of
    memory there was torch's multi-line message; it names calibrate.images and the memory options."""
    import ipsolve

    x = ipsolve.datasets.heldout_phantoms(4, 32)
    dps = ipsolve.make_solver("dps_cpu", steps=2)

    def no_memory(self, y, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nGPU 0 has a total capacity ...")

    monkeypatch.setattr(type(dps), "run", no_memory)
    with pytest.raises(RunError) as caught:
        ipsolve.reconstruct(x, solver=dps, output_dir=tmp_path / "a", calibrate=True, threads=1, progress=False)
    assert str(caught.value) == ("calibration failed: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB): "
                                 "lower it with calibrate.images=2 (its 4 images are solved as one batch), or the memory "
                                 "per image — a prior's memory options (README, 'Memory at 512 px'), a smaller "
                                 "prior.image_size")


def test_a_measurement_array_with_other_channels_says_so(tmp_path):
    """A 1-channel .npy measurement for a 3-channel prior was skipped as "made by another operator or
    preset?" (an inputs audit, 2026-12-07); the reason is its channel count, and arrays are not converted."""
    import numpy as np

    import ipsolve

    np.save(tmp_path / "hw.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(RunError, match=r"hw: measurement hw has 1 channel\(s\) where the prior's images give 3: an "
                                       r"array \(\.npy, a tensor\) is read exactly"):
        ipsolve.reconstruct(tmp_path, prior="photo_ddpm", solver=ipsolve.make_solver("dps_cpu", steps=2),
                            measurements=True, threads=1, progress=False)


def test_calibrate_true_with_a_solver_that_declares_nothing_runs_uncalibrated_saying_why(tmp_path):
    """A calibrate=true sweep over solvers failed DDRM's job ("declares no parameters to calibrate"); DDRM can
    neither be calibrated nor compared on part of y (it works in the operator's SVD): the run goes on
    uncalibrated and its summary and report say why."""
    import ipsolve

    run = ipsolve.reconstruct(ipsolve.datasets.heldout_phantoms(2, 32), solver={"name": "ddrm", "steps": 2},
                              calibrate=True, threads=1, progress=False, metrics=["psnr"], output_dir=tmp_path)
    said = [w for w in run.summary["warnings"] if "declares no parameters to choose" in w]
    assert said == ["calibrate=true: solver ddrm declares no parameters to choose and cannot be compared with the "
                    "initial guess on held-out entries (it works in the operator's SVD, and an operator restricted to "
                    "part of y has none): the run goes on uncalibrated"]
    assert not run.summary.get("calibration") and len(run.records) == 2 and said[0] in report(run.summary)
    assert "calibrate.params=[]" not in report(run.summary)  # (the review line suggested it, which DDRM cannot do)
