"""``scripts/train_prior.py`` as a user runs it on their own images (audit 2026-12-05): a training
state belongs to one run and is never resumed with other settings, a moved prior is not silently
retrained from scratch, a part-trained export says so when loaded, a README beside the photos does
not make the folder look like DICOM, and an incomplete prior folder is one line."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from cli_process import run_ipsolve

import ipsolve
from ipsolve.io import save_image

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "2", "--batch-size", "2", "--widths", "16,32"]


def train(*args, cwd):
    """``python scripts/train_prior.py *args`` in its own process (forked from a warm server,
    :mod:`cli_process`: a fresh interpreter spends ~6 s importing torch and diffusers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return run_ipsolve(args, cwd=cwd, env=env, timeout=300, script=ROOT / "scripts" / "train_prior.py")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(3):
        save_image(ipsolve.datasets.heldout_phantoms(1, 32, seed=i), folder / f"img{i}.png")
    (folder / "README.txt").write_text("where these came from")  # not a scan: the folder is still images
    return folder


def test_a_training_state_is_never_resumed_with_other_settings(photos, tmp_path):
    ok = train("--kind", "ddpm", "--data", str(photos), "--out", "runA/prior", *TINY, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    record = json.loads((tmp_path / "runA" / "prior" / "training.json").read_text())
    assert record["data_kind"] == "images" and record["step"] == 2 and record["max_minutes"] is None
    # one of the 3 images held out; the exported weights' denoising loss checked on it against the other two
    assert record["heldout"].startswith("1 of 3 image(s)") and "held out for validation: 1 of 3" in ok.stdout
    (check,) = record["validation"]
    assert check["step"] == 2 and check["ratio"] == pytest.approx(check["heldout_loss"] / check["train_loss"], rel=1e-2)
    card = (tmp_path / "runA" / "prior" / "README.md").read_text()
    assert "Held out for validation**: 1 of 3 image(s)" in card and "| 2 |" in card and ok.stdout.count("saved step 2 ") == 1
    # another export folder with the same name: its own state (was: the DDPM state resumed as a flow)
    other = train("--kind", "flow", "--data", str(photos), "--out", "runB/prior", *TINY, cwd=tmp_path)
    assert other.returncode == 0 and "resumed" not in other.stdout, other.stdout[-2000:]
    # the same export folder with another kind: refused in one line
    clash = train("--kind", "flow", "--data", str(photos), "--out", "runA/prior", *TINY, cwd=tmp_path)
    assert clash.returncode != 0 and "Traceback" not in clash.stderr
    assert "was made with --kind 'ddpm' (now 'flow')" in clash.stderr
    # the prior moved elsewhere and continued from there: its state is not found, said instead of a fresh start
    shutil.copytree(tmp_path / "runA" / "prior", tmp_path / "moved" / "prior")
    moved = train("--kind", "ddpm", "--data", str(photos), "--out", "prior", *TINY, cwd=tmp_path / "moved")
    assert moved.returncode != 0 and "trained for 2 steps, but its training state is not in" in moved.stderr
    # a colour prior to start grey training from: one line (was a "size mismatch" traceback)
    init = train("--kind", "ddpm", "--data", str(photos), "--out", "runC/prior", "--init-from",
                 str(ROOT / "ipsolve" / "priors" / "bundled" / "photo-ddpm"), *TINY, cwd=tmp_path)
    assert init.returncode != 0 and "Traceback" not in init.stderr and "3 channel(s)" in init.stderr, init.stderr[-2000:]


def test_a_part_trained_or_incomplete_prior_is_said(photos, tmp_path, caplog):
    ok = train("--kind", "flow", "--data", str(photos), "--out", "p", "--steps", "400", "--batch-size", "2",
               "--widths", "16,32", "--max-minutes", "0.01", cwd=tmp_path)
    assert ok.returncode == 0 and "stopped by --max-minutes" in ok.stdout, ok.stdout[-2000:]
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        prior = ipsolve.load_prior(str(tmp_path / "p"))
    assert "is part-trained" in caplog.text and prior.training_record["steps"] == 400
    # a prior that denoises its training images clearly better than held-out ones is said to memorise them
    record = json.loads((tmp_path / "p" / "training.json").read_text())
    record["validation"] = [{"step": 400, "heldout_loss": 0.2, "train_loss": 0.1, "ratio": 2.0}]
    (tmp_path / "p" / "training.json").write_text(json.dumps(record))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        ipsolve.load_prior(str(tmp_path / "p"))
    assert "memorises its training images" in caplog.text and "2.00×" in caplog.text
    # a model card not written by train_prior.py is left alone; its own is rewritten at each save
    (tmp_path / "p" / "README.md").write_text("my notes")
    again = train("--kind", "flow", "--data", str(photos), "--out", "p", "--steps", "400", "--batch-size", "2",
                  "--widths", "16,32", "--max-minutes", "0.01", cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / "p" / "README.md").read_text() == "my notes", again.stderr[-2000:]
    assert "saved step" in again.stdout  # (it did save: the card was left alone, not skipped)
    shutil.copytree(tmp_path / "p", tmp_path / "no_unet")
    shutil.rmtree(tmp_path / "no_unet" / "unet")  # was: "couldn't connect to huggingface.co"
    with pytest.raises(ValueError, match="lists unet/"):
        ipsolve.load_prior(str(tmp_path / "no_unet"))
    shutil.rmtree(tmp_path / "p" / "scheduler")  # a flow prior without its scheduler was loaded as DDPM
    with pytest.raises(ValueError, match="scheduler/scheduler_config.json is missing"):
        ipsolve.load_prior(str(tmp_path / "p"))


def test_a_latent_prior_reports_its_autoencoder_round_trip(photos, tmp_path):
    """A latent prior's model card gives the autoencoder's round-trip PSNR on the held-out image
    (no latent reconstruction beats it; below 25 dB the trainer says so) — audit 2026-12-05."""
    ok = train("--kind", "latent", "--data", str(photos), "--out", "lat", "--ae-steps", "3", *TINY, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    record = json.loads((tmp_path / "lat" / "training.json").read_text())
    assert record["autoencoder_psnr"]["images"] == 1 and record["autoencoder_psnr"]["psnr"] < 25
    assert "the autoencoder returns images at" in ok.stdout and "ae step 3 loss" in ok.stdout
    assert "Autoencoder round trip**: " in (tmp_path / "lat" / "README.md").read_text()


def test_what_the_training_data_and_export_folder_are_is_checked_before_training(photos, tmp_path):
    """A folder holding two kinds of training data, or none, is one line (a NIfTI beside PNGs trained on
    the NIfTI alone, and an empty folder was "no DICOM images"); ``--out`` that cannot be a folder is
    refused before any training (a traceback after it, before); ``--steps 0`` (random weights, exported
    with exit 0) is refused; messages from ipsolve.io name this script's flags."""
    import importlib.util

    from ipsolve.io.sources import guess_format

    mixed = tmp_path / "mixed"
    shutil.copytree(photos, mixed)
    shutil.copy(example_scan("CT_small.dcm"), mixed / "ct.dcm")
    with pytest.raises(ValueError, match=r"holds 3 image\(s\) and 1 DICOM file\(s\): one kind is read per folder"):
        guess_format(mixed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images \(.png, .*\), DICOM or NIfTI files in"):
        guess_format(tmp_path / "empty")
    assert guess_format(photos) == "images"  # a README.txt beside the images is not a second kind

    spec = importlib.util.spec_from_file_location("train_prior", ROOT / "scripts" / "train_prior.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.as_flags("use data.window=auto or [lo, hi] (… give data.units=HU, or data.window=[-160, 240])") == \
        "use --window auto or lo,hi (… give --units HU, or --window -160,240)"
    with pytest.raises(ValueError, match="is a file; give a folder"):
        script.check_out(photos / "img0.png")
    with pytest.raises(ValueError, match="img0.png is a file, not a folder"):
        script.check_out(photos / "img0.png" / "prior")
    script.check_out(tmp_path / "new" / "prior")  # a folder that can be made
    # volumes of unequal size: the held-out share comes near --val-fraction (a count of volumes held out
    # 48 of 73 slices for 10 %); none small enough, the smallest
    import torch

    sources = ["volume 0 (a)"] * 48 + ["volume 1 (b)"] * 25 + ["volume 2 (c)"] * 5
    _, held, what = script.split_heldout(torch.zeros(len(sources), 1, 4, 4), sources, 0.1, seed=0)
    assert len(held) == 5 and what.startswith("1 of 3 volume(s) (5 of 78 slice(s)/image(s), 6 %")
    _, held, _ = script.split_heldout(torch.zeros(73, 1, 4, 4), sources[:73], 0.1, seed=0)
    assert len(held) == 25

    started = train("--kind", "ddpm", "--data", str(photos), "--out", str(photos / "img0.png"), *TINY, cwd=tmp_path)
    assert started.returncode != 0 and "Traceback" not in started.stderr and "is a file" in started.stderr
    assert not (tmp_path / "outputs").exists()  # refused before any training state was made
    zero = train("--kind", "ddpm", "--data", str(photos), "--out", "p", "--steps", "0", cwd=tmp_path)
    assert zero.returncode != 0 and "--steps must be >= 1" in zero.stderr and not (tmp_path / "p").exists()
    window = train("--kind", "ddpm", "--data", str(photos), "--out", "p", "--window", "ct_soft_tissue", cwd=tmp_path)
    assert window.returncode != 0 and "--data " + str(photos) + " is a folder of images: drop them" in window.stderr


def example_scan(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_prior", ROOT / "scripts" / "train_prior.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_third_training_audit_findings(photos, tmp_path):
    """Audit 2026-12-07 (twenty-fifth session): a resume with another ``--lr`` kept the saved
    optimiser's rate while training.json and the card said the new one — now the new rate is used and
    the record says which steps ran with which; an ``--out`` holding someone else's files was
    overwritten; ``--batch-size 0`` / ``--widths 16,0`` were tracebacks; changed training files resumed
    silently with another held-out set; class subfolders read as "no DICOM images"; cropping was silent."""
    import argparse

    import torch

    from ipsolve.io.sources import guess_format

    first = train("--kind", "ddpm", "--data", str(photos), "--out", "p", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    more = train("--kind", "ddpm", "--data", str(photos), "--out", "p", "--steps", "3", "--batch-size", "3",
                 "--lr", "1e-4", "--widths", "16,32", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert "note: from step 2 on: --lr 0.0001, --batch-size 3 (before: lr 0.002, batch 2)" in more.stdout
    record = json.loads((tmp_path / "p" / "training.json").read_text())
    assert record["schedule"] == [{"step": 0, "lr": 0.002, "batch_size": 2}, {"step": 2, "lr": 1e-4, "batch_size": 3}]
    saved = torch.load(Path(record["work"]) / "train_state.pt", map_location="cpu", weights_only=False)
    assert saved["opt"]["param_groups"][0]["lr"] == 1e-4  # the rate the optimiser ran with
    assert "batch 3, lr 0.0001 from step 2 (steps 0–2: batch 2, lr 0.002)" in (tmp_path / "p" / "README.md").read_text()
    again = train("--kind", "ddpm", "--data", str(photos), "--out", "p", "--steps", "3", "--batch-size", "3",
                  "--lr", "1e-4", "--widths", "16,32", cwd=tmp_path)
    assert "already trained for 3 steps (--steps 3): nothing to train" in again.stdout
    # the same folder with another image: the held-out split would change under the validation table
    changed = tmp_path / "changed"
    shutil.copytree(photos, changed)
    first = train("--kind", "ddpm", "--data", str(changed), "--out", "q", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    save_image(ipsolve.datasets.heldout_phantoms(1, 32, seed=9), changed / "img9.png")
    refused = train("--kind", "ddpm", "--data", str(changed), "--out", "q", *TINY, cwd=tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "the training data changed since" in refused.stderr and "(3 → 4 source file(s)" in refused.stderr
    assert "--init-from" in refused.stderr
    # someone else's files in --out
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "model_index.json").write_text("{}")
    foreign = train("--kind", "flow", "--data", str(photos), "--out", "theirs", *TINY, cwd=tmp_path)
    assert foreign.returncode != 0 and "holds files this script did not write (model_index.json)" in foreign.stderr
    assert (tmp_path / "theirs" / "model_index.json").read_text() == "{}"
    # numbers that made tracebacks deep in training, or trained nothing
    script = load_script()
    base = dict(widths="16,32", batch_size=2, save_every=10, size=32, lr=1e-3, max_minutes=float("inf"))
    for change, message in (({"batch_size": 0}, "--batch-size must be an integer >= 1, got 0"),
                            ({"widths": "16,0"}, "--widths must be multiples of 8"),
                            ({"widths": "10,20"}, "--widths must be multiples of 8"),
                            ({"widths": "abc"}, "--widths must be comma-separated integers"),
                            ({"size": 0}, "--size must be an integer >= 8, got 0"),
                            ({"lr": 0.0}, "--lr must be a positive number"),
                            ({"save_every": 0}, "--save-every must be an integer >= 1"),
                            ({"max_minutes": 0.0}, "--max-minutes must be > 0")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            script.check_numbers(argparse.Namespace(**{**base, **change}))
    # images in class subfolders, a file that is none of the kinds; non-square images said to be cropped
    nested = tmp_path / "nested"
    shutil.copytree(photos, nested / "cats")
    with pytest.raises(ValueError, match=r"holds no images itself: 3 are in its subfolders \(cats\)"):
        guess_format(nested)
    with pytest.raises(ValueError, match=r"README.txt is no image \(.png"):
        guess_format(photos / "README.txt")
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(2):
        save_image(torch.zeros(1, 1, 32, 48), wide / f"w{i}.png")
    (wide / "notes.txt").write_text("x")
    ok = train("--kind", "ddpm", "--data", str(wide), "--out", "w", *TINY, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "note: 1 file(s) that are not images skipped: notes.txt" in ok.stdout
    assert "note: 2 non-square image(s) centre-cropped to a square before resizing to 32 px: w0.png, w1.png" in ok.stdout


def test_ctrl_c_saves_the_steps_done(photos, tmp_path):
    """Ctrl-C while training: the steps done are saved and exported, one line says how to continue,
    exit 130 (it was a 40-line traceback, and the steps since the last save were lost)."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # SIGINT's default disposition in the child: a suite started in the background (``cmd &``) inherits
    # SIGINT ignored, and the script then trained on through the signal (as tests/test_cli.py's Ctrl-C test)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train_prior.py"), "--kind", "ddpm", "--data",
                             str(photos), "--out", "p", "--steps", "100000", "--save-every", "100000", "--batch-size",
                             "2", "--widths", "16,32"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    line = ""
    while "step 50 loss" not in line:  # training is under way (a line every 50 steps)
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline, "no training step was reported"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "train_prior: interrupted at step " in err.strip().splitlines()[-1]
    step = int(err.split("interrupted at step ")[1].split()[0])
    record = json.loads((tmp_path / "p" / "training.json").read_text())
    assert record["step"] == step >= 50
