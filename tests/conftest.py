import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the runner's threads=auto rule for the test process too: both cores of an idle 2-core machine, one
# thread beside other work (on a busy 2-core machine more threads only add overhead, measured 10×);
# OMP_NUM_THREADS, when set, wins.  The command-line and README tests' subprocesses run with one.
from ipsolve.runner.threads import choose_threads  # noqa: E402

torch.set_num_threads(choose_threads("auto")[0])


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
