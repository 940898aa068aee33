"""``deterministic=true``: bit-reproducible runs on a GPU (torch's reproducibility notes:
https://pytorch.org/docs/stable/notes/randomness.html).

ipsolve seeds every image's noise and solver from (``seed``, its name), so a CPU run repeats to
the last bit.  On a GPU some kernels do not: cuDNN chooses convolution algorithms by timing them
(``cudnn.benchmark``) and some backward kernels (interpolation, indexing with accumulation) add
with atomics in whatever order the threads arrive, so DPS's thousand guided steps can end a few
hundredths of a dB apart between two runs of the same command.  This mode turns on
``torch.use_deterministic_algorithms`` (with ``warn_only``: an operation that has no deterministic
kernel runs anyway and is named in ``summary.json``'s ``deterministic.nondeterministic_ops``
rather than stopping a long run), cuDNN's deterministic algorithms without benchmarking, and
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed for deterministic cuBLAS from CUDA 10.2; read when
cuBLAS starts, so a process that already used cuBLAS keeps its setting).  Everything is restored
afterwards.  It costs speed on a GPU (and torch then fills new tensors' memory); on a CPU the
results stay the same up to rounding (bit-identical on the project's 2-core Xeon)."""
from __future__ import annotations

import contextlib
import os
import re
import warnings

from .errors import flag

CUBLAS_WORKSPACE = ":4096:8"
# torch's wording when warn_only is set (aten/src/ATen/Context.cpp, alertNotDeterministic)
_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


@contextlib.contextmanager
def deterministic_algorithms(enabled):
    """Within: torch's deterministic mode when ``enabled`` (a true/false setting); yields the
    record for ``summary.json``: ``{"enabled": bool, "nondeterministic_ops": [names]}`` (filled as
    the run meets them; empty when off)."""
    import torch

    record = {"enabled": flag("deterministic", enabled), "nondeterministic_ops": []}
    if not record["enabled"]:
        yield record
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def note(message, category, filename, lineno, file=None, line=None):
            found = _NONDETERMINISTIC.match(str(message))
            if found:
                if found.group(1) not in record["nondeterministic_ops"]:
                    record["nondeterministic_ops"].append(found.group(1))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = note  # restored by catch_warnings
        warnings.filterwarnings("always", message=r"\S+ does not have a deterministic implementation")
        try:
            if saved[4] is None:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            yield record
        finally:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
            if saved[4] is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
