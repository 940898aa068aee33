"""Reading third-party ``.pt``/``.pth`` checkpoints strictly (ADM UNet, BKSE blur network):
one place for "which file, what is wrong with it", never a partial load."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "params", "netG", "net")


def _describe_load_error(err: Exception) -> str:
    """Short reason for a failed ``torch.load`` (drops torch's long advice text)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if "Weights only load failed" in str(err):
        reason = "unsupported content"
        for i, ln in enumerate(lines):
            if "WeightsUnpickler error:" in ln:
                tail = ln.split("WeightsUnpickler error:", 1)[1].strip()
                nxt = lines[i + 1] if i + 1 < len(lines) else reason
                reason = (tail or nxt).split(". ")[0]
        return f"{type(err).__name__}: weights-only unpickling failed: {reason}"
    return f"{type(err).__name__}: {lines[0] if lines else 'no details'}"[:200]


def read_state_dict(path: str | os.PathLike, kind: str, not_found: str) -> dict[str, torch.Tensor]:
    """The tensors of checkpoint ``path`` (a raw state_dict, or one wrapped under a key of
    ``WRAPPER_KEYS``; a DataParallel ``module.`` prefix is removed), read with
    ``weights_only=True``.  ``FileNotFoundError`` (with ``not_found`` as the hint) or
    ``ValueError``, both naming the file and ``kind``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} checkpoint not found: '{path}'. {not_found}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, truncated, not a torch file, or pickled objects
        raise ValueError(f"could not read {kind} checkpoint '{path}' ({_describe_load_error(err)}); the file is "
                         f"corrupt, truncated, not a PyTorch file, or pickles objects other than tensors") from None

    def tensors_only(m):
        return isinstance(m, Mapping) and m and all(isinstance(v, torch.Tensor) for v in m.values())

    if isinstance(obj, Mapping) and not tensors_only(obj):
        obj = next((obj[k] for k in WRAPPER_KEYS if tensors_only(obj.get(k))), obj)
    if not tensors_only(obj):
        top = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"{kind} checkpoint '{path}' is not a state_dict (a mapping of parameter names to tensors, "
                         f"possibly under one of {list(WRAPPER_KEYS)}); found {top}")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")


def _inert_class(qualified: str) -> type:
    """A stand-in for a pickled training-time class (e.g. Lightning's ``ModelCheckpoint``, the key
    of a PL 1.x checkpoint's ``callbacks`` entry): it only stores the state it is given."""
    module, _, name = qualified.rpartition(".")

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    return type(name, (), {"__module__": module, "__qualname__": name, "__init__": __init__,
                           "__setstate__": __setstate__})


def read_lightning_state_dict(path: str | os.PathLike, kind: str, not_found: str) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict` for a PyTorch Lightning checkpoint (``.ckpt``, e.g. CompVis
    latent-diffusion's): such files also pickle Lightning classes (``callbacks`` keyed by
    ``ModelCheckpoint``), which the weights-only unpickler refuses.  Those classes — and only
    those, any other non-tensor global is still refused — are resolved to inert stand-ins
    (``torch.serialization.safe_globals``), so nothing from the file is executed."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} checkpoint not found: '{path}'. {not_found}")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: read_state_dict reports it
        names = []
    if names and all(n.startswith(LIGHTNING_MODULES) for n in names):
        with torch.serialization.safe_globals([_inert_class(n) for n in names]):
            return read_state_dict(path, kind, not_found)
    return read_state_dict(path, kind, not_found)


def layout_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], n: int = 5) -> list[str]:
    """Lines naming missing, unexpected and shape-mismatched keys (empty if the layouts agree)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    lines = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
            lines.append(f"  {label} ({len(items)}): {items[:n]}{more}")
    return lines
