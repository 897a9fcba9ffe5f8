"""Device choice: the GPU when there is one, a clear refusal when CUDA is asked for and absent."""

import pytest
import torch

from vitpeft import devices
from vitpeft.errors import VitpeftError


def test_device_auto_is_cpu_here_and_cuda_is_refused_without_a_gpu():
    assert devices.pick("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.pick("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(VitpeftError, match="no CUDA device"):
            devices.pick("cuda")
