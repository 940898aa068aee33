"""Process state and gathering: accelerate's process group, splitting the images between the
processes, and sharing small Python objects between them."""
from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger("ipsolve")


def process_state(device=None):
    """accelerate's :class:`PartialState`; on a machine without CUDA (or with ``device='cpu'``)
    created with ``cpu=True`` so that ``torchrun`` / ``accelerate launch --multi_gpu`` processes
    join one gloo group instead of each doing every image."""
    import torch
    from accelerate import PartialState

    dev = None if device in (None, "auto") else checked_device(device)
    cpu = (dev is not None and dev.type == "cpu") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def checked_device(device):
    """``device`` as a torch device, or :class:`RunError` with the one line of
    :func:`ipsolve.priors.loading.check_device`."""
    from ..priors.loading import check_device
    from .errors import RunError

    try:
        return check_device(device)
    except ValueError as err:
        raise RunError(f"{err} (or device=auto)") from None


def process_device(device, state):
    """This process's torch device: ``device``, or accelerate's choice for None / ``"auto"``."""
    import torch

    if device in (None, "auto"):
        device = state.device
        # accelerate names a torchrun CPU process's device "cpu:0"; CPU tensors are on plain "cpu",
        # and the mismatch made some of rank 0's images differ from a one-process run (up to 0.02 dB)
        return torch.device("cpu") if torch.device(device).type == "cpu" else device
    return checked_device(device)


def broadcast(obj, state):
    """Rank 0's ``obj`` on every process."""
    if state.num_processes == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj, state) -> list:
    """Every process's ``obj``, in rank order."""
    if state.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * state.num_processes
    dist.all_gather_object(out, obj)
    return out


def local_items(state, items: Sequence, pending: Sequence[str], by_volume: bool = False) -> list:
    """This process's share of the ``pending`` items (by name; ``by_volume``: whole volumes, for
    z-coupling, which solves a volume's slices together)."""
    by_name = {it.name: it for it in items}
    if by_volume:
        volumes = list(dict.fromkeys(by_name[nm].volume for nm in pending))
        with state.split_between_processes(volumes) as local_volumes:
            mine = set(local_volumes)
        local = [by_name[nm] for nm in pending if by_name[nm].volume in mine]
        log.debug("rank %d/%d: %d volume(s), %d slices", state.process_index, state.num_processes, len(mine),
                  len(local))
        return local
    with state.split_between_processes(pending) as local_names:
        local = [by_name[nm] for nm in local_names]
    log.debug("rank %d/%d: %d images", state.process_index, state.num_processes, len(local))
    return local


def gather_records(state, names: Sequence[str], records: list[dict], skipped: list[dict],
                   done: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """``(records, skipped)`` of every process and of the earlier run (``done``), in the order of ``names``."""
    # everyone gets every record (small); rank 0 writes the summaries
    gathered = all_gather((records, skipped), state)
    all_recs = {r["name"]: r for part, _ in gathered for r in part}
    all_skipped = [s for _, part in gathered for s in part]
    all_recs.update(broadcast(done, state))
    ordered = [all_recs[nm] for nm in names if nm in all_recs]
    return ordered, sorted(all_skipped, key=lambda s: names.index(s["name"]))
