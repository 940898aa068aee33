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
    state = PartialState(cpu=cpu)
    if state.num_processes == 1 and one_of_many_asked():
        log.warning("one process: `accelerate launch --cpu --num_processes N` starts a single process (its CPU "
                    "launcher spreads over processes only through mpirun, --mpirun_hostfile); for N CPU processes use "
                    "`torchrun --nproc_per_node N -m ipsolve ...`")
    return state


def one_of_many_asked() -> bool:
    """``accelerate launch --cpu --num_processes N`` (N > 1) without mpirun: its simple launcher sets
    ``ACCELERATE_USE_CPU`` and, for N > 1, a ``MASTER_ADDR``, and starts one process that is told
    nothing else (accelerate's ``prepare_simple_launcher_cmd_env``) — the run went on as one process
    silently (the README said so; nothing did at run time)."""
    import os

    from accelerate.utils import str_to_bool

    try:
        on_cpu = str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false"))
    except ValueError:
        return False
    launched = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    return bool(on_cpu) and "MASTER_ADDR" in os.environ and not any(os.environ.get(v) for v in launched)


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
