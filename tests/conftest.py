import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the runner's threads=auto rule for the test process too: both cores of an idle 2-core machine, one
# thread beside other work (on a busy 2-core machine more threads only add overhead, measured 10×);
# OMP_NUM_THREADS, when set, wins.  The command-line and README tests' subprocesses run with one.
from ipsolve.runner.threads import choose_threads, usable_cores  # noqa: E402

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # pytest-xdist's worker processes (-n)
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    # the workers share the cores: each gets its share, as the runner gives each of several processes
    # (two threads in each of two processes on 2 cores is the several-fold slowdown above)
    torch.set_num_threads(max(1, usable_cores() // _workers))
else:
    torch.set_num_threads(choose_threads("auto")[0])


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker per usable core, at most 4 (each holds a torch process
    and the module's trained priors; beyond 4 the longest test file bounds the time).  One core: none."""
    cores = min(usable_cores(), 4)
    return cores if cores > 1 else 0


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
