"""The run directory: atomic writes, one image's output files and record, and resume (which
images an interrupted run already finished)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import RunError

log = logging.getLogger("ipsolve")

TEMP_MARK = ".tmp"  # temporary files are ".<name>.tmp<suffix>"
# where a run's results can go instead, by door (the Python API has no Hydra)
ANOTHER_DIRECTORY = "hydra.run.dir=... on the command line, hydra.sweep.dir=... in a sweep, output_dir=... in Python"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: to ``.<stem>.tmp<suffix>`` beside it (parent folders
    created), fsync'd, then renamed over ``path`` — a reader sees the old file or the new one, never
    a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TEMP_MARK}{path.suffix}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_writable(folder: Path) -> Path:
    """Create ``folder`` and prove that files can be written there, or raise :class:`RunError`."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test", suffix=TEMP_MARK)
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # (another rank's clean-up may have removed it already)
    except OSError as err:
        raise RunError(f"cannot write to the output directory {folder}: {err.strerror or err}") from None
    return folder.resolve()


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete what an interrupted run left under temporary names (``.<name>.tmp<suffix>``)."""
    removed = []
    for p in Path(folder).rglob(f".*{TEMP_MARK}*"):
        if p.is_file() and ".hydra" not in p.parts:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_record(path: Path) -> dict | None:
    """An image's JSON record at ``path``, or None when it cannot be read (``OSError``: e.g. missing),
    is not valid JSON, is not an object or has no ``name``."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("name") else None


def is_finished(out: Path, name: str) -> dict | None:
    """The record of an image whose outputs are all written, else None."""
    rec = read_record(out / "records" / f"{name}.json")
    if rec is None:
        return None
    if not all((out / rel).is_file() for rel in rec.get("outputs", {}).values()):
        return None
    return rec


def fingerprint(settings: dict) -> str:
    """The resume fingerprint of ``settings``: CRC-32 of their JSON (sorted keys, other values as
    ``str``) as 8 hex digits — a change check, not a cryptographic hash."""
    return f"{zlib.crc32(json.dumps(settings, sort_keys=True, default=str).encode()):08x}"


def prepare_resume(out: Path, names: Sequence[str], fp: str, config_yaml: str | None = None,
                   digest_of=None) -> tuple[dict[str, dict], str | None]:
    """Rank 0's look at the run directory: ``(finished records by name, error or None)``.

    Removes what an interrupted run left under temporary names, takes the records of the
    finished images, stops at the first one made with other settings (fingerprint other than
    ``fp``) or from another input (``digest_of(name)`` — the current input's digest — other than
    the record's ``input_digest``: another data set under the same names, an edited file): the
    error; writes ``config.yaml`` when there is no error."""
    for p in remove_temp_files(out):
        log.info("removed the temporary file %s left by an interrupted run", p)
    done: dict[str, dict] = {}
    for nm in names:
        rec = is_finished(out, nm)
        if rec is None:
            continue
        if rec.get("fingerprint") != fp:
            return done, (f"{out} holds results of different settings ({out / 'records' / (nm + '.json')}: "
                          f"fingerprint {rec.get('fingerprint')} != {fp}{settings_changed(out, config_yaml)}); use "
                          f"another output directory ({ANOTHER_DIRECTORY}) or remove it")
        recorded = rec.get("input_digest")
        if digest_of is not None and recorded is not None and digest_of(nm) not in (None, recorded):
            return done, (f"{out} holds a result for {nm} made from another input ({rec.get('file') or 'in memory'}, "
                          f"contents {recorded}; now {digest_of(nm)}): the data changed under the same names; use "
                          f"another output directory ({ANOTHER_DIRECTORY}) or remove it")
        done[nm] = rec
    for nm in unselected_records(out, names):  # another input's result in the folder: the same settings or none
        rec = read_record(out / "records" / f"{nm}.json")
        if rec is not None and rec.get("fingerprint") not in (None, fp):
            return done, (f"{out} holds results of different settings ({out / 'records' / (nm + '.json')}: "
                          f"fingerprint {rec.get('fingerprint')} != {fp}{settings_changed(out, config_yaml)}; another "
                          f"input's, so they would be mixed in one folder); use another output directory "
                          f"({ANOTHER_DIRECTORY}) or remove it")
    if config_yaml is not None:
        atomic_write_text(out / "config.yaml", config_yaml)
    return done, None


def unselected_records(out: Path | None, names: Sequence[str]) -> list[str]:
    """The finished images in ``out/records`` that are not among ``names`` (a rerun with a smaller
    ``data.max_images`` or fewer inputs): its summary, metrics.csv, report and grid covered the
    selection only, silently, beside the others' recon/ files."""
    folder = None if out is None else Path(out) / "records"
    if folder is None or not folder.is_dir():
        return []
    chosen = set(names)
    found = (p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("[!.]*.json"))
    return sorted(nm for nm in found if nm not in chosen)


def settings_changed(out: Path, config_yaml: str | None) -> str:
    """What differs between the run directory's ``config.yaml`` (the earlier run's) and this run's
    configuration, as ``"; changed: key (old → new), ..."`` (settings that change results only:
    :data:`NOT_RESULTS` are left out), or — the same result-defining settings — what else the
    fingerprint covers (an input file's contents, the prior's weights, the ipsolve version that
    recorded them: e.g. 2026-12-06 changed a foundation prior's conditioning record); "" when
    either is unknown."""
    import yaml

    old_path = out / "config.yaml"
    if config_yaml is None or not old_path.is_file():
        return ""
    try:
        old, new = yaml.safe_load(old_path.read_text()), yaml.safe_load(config_yaml)
    except yaml.YAMLError:
        return ""

    def flat(d, prefix=""):
        if not isinstance(d, dict):
            return {prefix.rstrip("."): d}
        out_ = {}
        for k, v in d.items():
            out_.update(flat(v, f"{prefix}{k}."))
        return out_

    a, b = flat(old or {}), flat(new or {})
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(NOT_RESULTS)]
    if not changed:  # what defines the results but is not in config.yaml (a file's contents, the weights, ...)
        return ("; the configuration's result-defining settings are the earlier run's: what differs is outside it — an "
                "input file's contents (a mask, a kernel, the prior's weights), settings taken from a measurement "
                "folder, or the ipsolve version that recorded the earlier results")

    def short(v):
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    shown = ", ".join(f"{k} ({short(a.get(k))} → {short(b.get(k))})" for k in changed[:4])
    return f"; changed: {shown}{f' and {len(changed) - 4} more' if len(changed) > 4 else ''}"


# settings that do not change an image's result (not in the resume fingerprint): left out of the list
NOT_RESULTS = ("device", "grid_max", "metrics", "threads", "deterministic", "progress", "strict", "lpips_net", "review_below",
               "review_coverage", "calibrate.comparison_splits", "data.batch_size", "data.max_images", "data.write_dicom", "hydra",
               "prior.gradient_checkpointing", "prior.vae_slicing", "prior.vae_tiling")  # (memory only: README)


def save_array(array, path: Path) -> None:
    """``np.save`` atomically (temporary name, then rename)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # per process: ranks may write the same file
    np.save(tmp, array)
    os.replace(tmp, path)


def write_image_outputs(out: Path, rec: dict, images: Mapping[str, object]) -> None:
    """Write one image's files (``images``: folder → ``(1, C, H, W)``, e.g. ``recon``) and then
    its record, which lists them under ``outputs`` (last: the record marks the image finished)."""
    from ..io import save_image

    name = rec["name"]
    outputs = {}
    for folder, image in images.items():
        if folder.endswith("_data"):  # exact values (float32 .npy) beside the picture: measurement_data → measurement/
            outputs[folder] = f"{folder[:-len('_data')]}/{name}.npy"
            save_array(image[0].numpy(), out / outputs[folder])
            continue
        if folder.startswith("samples/"):  # samples/_s<j> → samples/<name>_s<j>.png
            outputs[folder] = f"samples/{name}{folder[len('samples/'):]}.png"
        else:
            outputs[folder] = f"{folder}/{name}.png"
        save_image(image, out / outputs[folder])
    rec["outputs"] = outputs
    atomic_write_text(out / "records" / f"{name}.json", json.dumps(rec, indent=1, default=str))


def file_digest(path) -> str:
    """The first 16 hex digits of a file's SHA-256 (what a resume compares, beside its path)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
