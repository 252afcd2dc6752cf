"""The harness the benchmark scripts share: their common options, work folder and machine line.

- :func:`make_parser` and :func:`add_options`: the command-line options the scripts repeat
  (``--size``, ``--chunk``, ``--tile``, ``--batch-size``, ``--device``, ``--repeats``,
  ``--workdir``, ...), each with its type, choices and help; a script gives its own defaults.
- :func:`work_folder`: ``--workdir`` (created, kept) or a temporary folder (removed at the end).
- :func:`machine_info` and :func:`machine`: the machine a run was measured on (CPU, cores,
  torch version and threads, GPU, allocator settings).

Scripts import it after putting this folder first on ``sys.path`` (they run as plain scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: name -> (type, choices, help) of the options several scripts take
OPTIONS: dict[str, tuple[Any, tuple[str, ...] | None, str | None]] = {
    "size": (int, None, "cube side in pixels"),
    "chunk": (int, None, "Zarr/Dask chunk side"),
    "tile": (int, None, None),
    "batch_size": (int, None, None),
    "width": (int, None, "fresh model of this width"),
    "encoder": (str, ("resnet18", "resnet50"), None),
    "stem": (str, ("imagenet", "small"), None),
    "device": (str, None, None),
    "threads": (int, None, "torch threads"),
    "repeats": (int, None, None),
    "warmup": (int, None, "untimed updates first"),
    "prefetch": (int, None, None),
    "seed": (int, None, None),
    "workdir": (Path, None, "kept between runs if given"),
}


def make_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of a script's docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])


def add_options(
    p: argparse.ArgumentParser, helps: dict[str, str] | None = None, **defaults: Any
) -> argparse.ArgumentParser:
    """Add the shared options named in ``defaults`` (``batch_size=64``), in that order.

    ``helps`` replaces the help text of some of them (``{"size": "scene edge in pixels"}``).
    """
    for name, default in defaults.items():
        kind, choices, text = OPTIONS[name]
        text = (helps or {}).get(name, text)
        kwargs: dict[str, Any] = {"default": default}
        if kind is not str:
            kwargs["type"] = kind
        if choices is not None:
            kwargs["choices"] = choices
        if text is not None:
            kwargs["help"] = text
        p.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    return p


@contextlib.contextmanager
def work_folder(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """``workdir`` (created if needed, kept), or a temporary folder removed at the end."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def cpu_name() -> str:
    """The processor's name, or the machine type where the platform does not give one."""
    return platform.processor() or platform.machine()


def machine_info(device: Any = None) -> dict[str, Any]:
    """Where this runs: Python, torch (version, threads), CPU, cores, GPU and allocator.

    With ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ...): also ``device`` (resolved) and
    ``device_name`` (the GPU's name on CUDA, else the CPU's).
    """
    import torch

    from eo_contrast.runtime import allocator_tuned

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator_tuned": allocator_tuned(),
    }
    if device is not None:
        from eo_contrast.models import resolve_device

        dev = resolve_device(device)
        info["device"] = str(dev)
        info["device_name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return info


def machine(device: Any) -> str:
    """One line describing where this runs (CPU, cores, torch threads, device, allocator)."""
    m = machine_info(device)
    allocator = "glibc thresholds raised" if m["allocator_tuned"] else "allocator as started"
    return (
        f"{m['cpu']}, {m['cpus']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
        f"device {m['device']}, {allocator}"
    )
