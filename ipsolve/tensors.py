"""Tensors made inside solver loops without waiting for the device, where a loop may read one, and seeded generators."""
from __future__ import annotations

import numbers

import torch


def seeded_generator(seed) -> torch.Generator:
    """A CPU generator seeded with the int ``seed``, which torch takes in [-2⁶³, 2⁶⁴) (beyond: a one-line error
    here, not torch's "Overflow when unpacking long long")."""
    if not -2**63 <= int(seed) < 2**64:
        raise ValueError(f"generator seed must be an integer in [-2**63, 2**64) (torch.Generator's range), got {int(seed)}")
    return torch.Generator().manual_seed(int(seed))


def host_reads_are_free(device) -> bool:
    """Whether reading a value of a tensor on ``device`` from Python (``bool``, ``int``, ``float``,
    ``.item()``, ``nonzero``) costs nothing: on a CPU it does; on an accelerator it waits for every
    queued kernel, so solver loops read device values only every ``sync_every`` steps there and
    skip checks a CPU makes for free.  The one place that decides it, so that the tests can run a
    CPU through an accelerator's schedule (``tests/test_speed.py``)."""
    return torch.device(device).type == "cpu"


def on_device(value, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` (a number or a tensor) as a 1-D tensor of ``dtype`` (default ``like``'s) on
    ``like``'s device.  A Python number is filled in on the device: ``torch.as_tensor(number,
    device="cuda")`` copies it from the host and then waits for the device to finish all queued
    work (PyTorch's blocking copy, ``memcpy_and_sync``) — once per call inside a solver's loop."""
    dtype = like.dtype if dtype is None else dtype
    if isinstance(value, numbers.Number):
        return torch.full((1,), value, dtype=dtype, device=like.device)
    return torch.as_tensor(value, dtype=dtype, device=like.device).reshape(-1)


def cached_on(owner, name: str, value: torch.Tensor, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` on ``device`` (in ``dtype``, default its own), converted once per device and
    dtype and kept on ``owner`` (``_device_copies``) under ``name`` for as long as ``value`` is
    the same tensor: operators draw their masks, grids and resize matrices on the host, and a
    host tensor copied to a GPU at every call makes the host wait for the device at every step
    (PyTorch's blocking copy)."""
    device, dtype = torch.device(device), value.dtype if dtype is None else dtype
    if value.device == device and value.dtype == dtype:
        return value
    copies = owner.__dict__.setdefault("_device_copies", {})
    key = (name, device, dtype)
    hit = copies.get(key)
    if hit is None or hit[0] is not value:
        hit = copies[key] = (value, value.to(device=device, dtype=dtype))
    return hit[1]


def per_image(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` mask shaped to broadcast over ``like`` ``(B, ...)`` (``torch.where`` per image)."""
    return mask.view(-1, *([1] * (like.ndim - 1)))
