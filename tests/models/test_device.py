"""Device resolution."""

from __future__ import annotations

import pytest
import torch

from eo_contrast.models import resolve_device


def test_auto_prefers_accelerators_then_cpu():
    dev = resolve_device("auto")
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif mps is not None and mps.is_available():
        assert dev.type == "mps"
    else:
        assert dev == torch.device("cpu")
    assert resolve_device(None) == dev
    assert resolve_device(" AUTO ") == dev


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'gpu0' is not a device name"):
        resolve_device("gpu0")
    with pytest.raises(TypeError, match=r"must be a string or torch.device"):
        resolve_device(0)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_unavailable_cuda_is_refused():
    with pytest.raises(ValueError, match=r"CUDA is not available"):
        resolve_device("cuda:0")
