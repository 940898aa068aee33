import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one intra-op thread: the tests' tensors are small, and on a busy 2-core machine more threads only
# add overhead (measured 10×; the runner's threads=auto makes the same choice there)
torch.set_num_threads(1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
