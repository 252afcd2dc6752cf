"""Pick the torch device to run on."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device request to a :class:`torch.device`.

    ``"auto"`` (or ``None``) picks CUDA when available, then Apple MPS, then the CPU. An explicit
    request (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a :class:`torch.device`) is checked
    against what this machine has.

    Parameters
    ----------
    device
        ``"auto"``, ``None``, a device string or a :class:`torch.device`.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        When the string is not a device name, or the requested accelerator is not available.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto").type in {"cuda", "mps", "cpu"}
    True
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except RuntimeError as exc:
            raise ValueError(
                f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from exc
    else:
        raise TypeError(
            f"device must be a string or torch.device, got {type(device).__name__}; "
            "use 'auto', 'cpu', 'cuda' or 'mps'"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} requested but CUDA is not available on this machine; "
                "use device='auto' or 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist; pick a lower index or use device='auto'"
            )
    elif dev.type == "mps" and not _mps_available():
        raise ValueError(
            f"device={device!r} requested but Apple MPS is not available on this machine; "
            "use device='auto' or 'cpu'"
        )
    return dev
