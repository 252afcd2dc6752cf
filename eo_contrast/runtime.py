"""Process settings that decide CPU throughput: the C memory allocator.

A forward pass of a convolutional encoder allocates and frees a few megabytes per layer. With
glibc's defaults, buffers above 128 KiB come from ``mmap`` until glibc raises that threshold
on its own (it does after the first few frees); but once ``MALLOC_TRIM_THRESHOLD_`` is set (Dask's
nanny sets it to 64 KiB in every worker process, to return memory to the OS), that adjustment
is switched off and every such buffer is a fresh ``mmap`` whose pages the kernel zeroes on first
touch. On the 2-core development machine one single-threaded ``ResNet-18`` forward of 64 tiles
of 64 px took about 15,000 page faults and ran at half the speed there; with the thresholds
below, it takes none.

:func:`tune_allocator` raises glibc's mmap threshold to :data:`MMAP_THRESHOLD` (its maximum on
64-bit) and the trim threshold to :data:`TRIM_THRESHOLD`, once per process, with ``mallopt``.
eo-contrast calls it where a process starts heavy array work: the first model a process loads
for :func:`eo_contrast.embed` / :func:`eo_contrast.segment`, :func:`eo_contrast.pretrain`,
:func:`eo_contrast.fit_segmentation`, and the tasks of :func:`eo_contrast.build_corpus`. The
cost: each allocator arena may keep up to :data:`TRIM_THRESHOLD` of freed memory instead of
returning it at once. :func:`allocator_tuned` tells whether a process runs with the settings.

It does nothing on platforms without glibc, when the environment already sets
``MALLOC_MMAP_THRESHOLD_`` (an explicit choice), or when ``EO_CONTRAST_MALLOC=keep``.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "allocator_tuned", "tune_allocator"]

#: Buffers smaller than this come from the heap, not from a fresh ``mmap``: 32 MiB, the largest
#: value glibc accepts on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of a heap kept for reuse, not returned to the OS: 64 MiB.
TRIM_THRESHOLD = 64 * 2**20
#: Set this environment variable to ``keep`` to leave the allocator as it is.
ENV_VAR = "EO_CONTRAST_MALLOC"

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_LOCK = threading.Lock()
_STATE: dict[str, bool] = {}


def _glibc() -> object | None:
    """This process's C library when it is glibc (``mallopt`` and its parameters known)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only, not musl)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; whether they are set.

    Returns ``True`` when the thresholds are (now or already) :data:`MMAP_THRESHOLD` and
    :data:`TRIM_THRESHOLD`, ``False`` when it left the allocator alone: not glibc,
    ``MALLOC_MMAP_THRESHOLD_`` set in the environment, or ``EO_CONTRAST_MALLOC=keep``.
    Safe to call from any thread, any number of times.

    Examples
    --------
    >>> from eo_contrast.runtime import tune_allocator
    >>> tune_allocator() in (True, False)
    True
    """
    done = _STATE.get("done")
    if done is not None:
        return done
    with _LOCK:
        if "done" in _STATE:
            return _STATE["done"]
        ok = False
        keep = os.environ.get(ENV_VAR, "").strip().lower() == "keep"
        if not keep and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc = _glibc()
            if libc is not None:
                mallopt = libc.mallopt  # type: ignore[attr-defined]
                ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                )
        _STATE["done"] = ok
        return ok


def allocator_tuned() -> bool:
    """Whether :func:`tune_allocator` has set the thresholds in this process (it never checks
    the allocator itself, and does not tune it).

    Examples
    --------
    >>> from eo_contrast.runtime import allocator_tuned, tune_allocator
    >>> allocator_tuned() == tune_allocator()
    True
    """
    return bool(_STATE.get("done"))
