"""The resume protocol shared by :func:`eo_contrast.to_zarr` and :func:`eo_contrast.build_corpus`.

A resumable write goes through these steps, and this module holds each one:

1. :func:`check_target`: what is at the store decides between a fresh write (nothing there, the
   bucket checked; or ``mode="w"``), a resumed one (``resume=True`` on a Zarr store) and an
   error (not a Zarr store; an existing store with ``mode="w-"``);
2. the store's metadata is written with the group attribute :data:`STATUS_ATTR` set to
   ``"incomplete"``, and completion records (flag arrays, :func:`create_flags`) in the sub-group
   :data:`PROGRESS_GROUP` (:func:`progress_group`);
3. the write tasks run (:func:`run_tasks`), each one setting its flag after its data
   (:func:`set_flag`); a resumed write reads the flags first (:func:`read_flags`) and runs only
   the tasks whose flag is not set;
4. :func:`finish`: the records are dropped, the status becomes ``"complete"`` and the metadata
   is consolidated, in that order.

Examples
--------
>>> import zarr
>>> from eo_contrast._io import resumable
>>> url = "memory://doc/resumable.zarr"
>>> resumable.check_target(url, None, mode="w-", resume=False, job="write")
False
>>> group = zarr.open_group(url, mode="w", zarr_format=3)
>>> group.attrs[resumable.STATUS_ATTR] = "incomplete"
>>> resumable.create_flags(resumable.progress_group(url, {}), "part", (3,))
>>> resumable.set_flag(url, {}, "part", 1)
>>> resumable.read_status(url, {}), resumable.read_flags(url, {}, "part").tolist()
('incomplete', [False, True, False])
>>> resumable.finish(url, {})
>>> resumable.read_status(url, {}), resumable.read_flags(url, {}, "part") is None
('complete', True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eo_contrast._io.remote import check_bucket, store_state

__all__ = [
    "PROGRESS_GROUP",
    "STATUS_ATTR",
    "check_target",
    "consolidate",
    "create_flags",
    "finish",
    "progress_group",
    "read_flags",
    "read_status",
    "record_path",
    "run_tasks",
    "set_flag",
]

#: Group attribute recording whether every chunk was written: "incomplete" or "complete".
STATUS_ATTR = "eo_contrast_status"
#: Sub-group of the store holding the completion records (flag arrays) during a write.
PROGRESS_GROUP = "_eo_contrast_progress"


def check_target(
    url: str,
    storage_options: Mapping[str, Any] | None,
    *,
    mode: str,
    resume: bool,
    job: str,
    other_note: str = "",
) -> bool:
    """Whether a write to ``url`` resumes an existing Zarr store; errors for what cannot be.

    Parameters
    ----------
    url
        The store (see :func:`eo_contrast._io.urls.store_url`).
    storage_options
        fsspec options or None.
    mode
        ``"w-"`` (refuse an existing store) or ``"w"`` (overwrite it).
    resume
        Whether the caller was asked to finish an interrupted write.
    job
        What the caller calls its work in messages (``"write"``, ``"build"``).
    other_note
        Appended to the message for a path that is not a Zarr store.

    Returns
    -------
    bool
        True for ``resume`` on an existing Zarr store (the caller checks that it can resume
        it); False when the write starts afresh (nothing there, or ``mode="w"``).

    Raises
    ------
    ValueError
        Something that is not a Zarr store is at ``url``.
    FileExistsError
        A Zarr store is at ``url``, with ``mode="w-"`` and without ``resume``.
    FileNotFoundError, PermissionError
        A missing bucket, or no credentials (see :mod:`eo_contrast._io.remote`).

    Examples
    --------
    >>> check_target("memory://doc/none.zarr", None, mode="w-", resume=True, job="write")
    False
    """
    state = store_state(url, storage_options)
    if state == "missing":
        check_bucket(url, storage_options)
        return False
    if state == "other":
        raise ValueError(f"{url!r} exists and is not a Zarr store: pick a new path{other_note}")
    if resume:
        return True
    if mode == "w-":
        raise FileExistsError(
            f"Zarr store {url!r} already exists: pass mode='w' to overwrite, or resume=True "
            f"to finish an interrupted {job}"
        )
    return False


def read_status(url: str, zkw: dict[str, Any]) -> str | None:
    """The store's :data:`STATUS_ATTR` (None when it has none).

    Parameters
    ----------
    url
        The store.
    zkw
        Keyword arguments for zarr (see :func:`eo_contrast._io.urls.zarr_kw`).

    Returns
    -------
    str or None
        ``"incomplete"``, ``"complete"``, or None for a store not written this way.
    """
    import zarr

    group = zarr.open_group(url, mode="r", use_consolidated=False, **zkw)
    status = group.attrs.get(STATUS_ATTR)
    return None if status is None else str(status)


def record_path(name: str) -> str:
    """The path in the store of the completion record ``name``.

    Examples
    --------
    >>> record_path("s1")
    '_eo_contrast_progress/s1'
    """
    return f"{PROGRESS_GROUP}/{name}"


def progress_group(url: str, zkw: dict[str, Any]) -> Any:
    """The group of the completion records (:data:`PROGRESS_GROUP`), created if missing.

    Parameters
    ----------
    url
        The store (it must exist).
    zkw
        Keyword arguments for zarr.

    Returns
    -------
    zarr.Group
        The group, open for writing.
    """
    import zarr

    group = zarr.open_group(url, mode="r+", use_consolidated=False, zarr_format=3, **zkw)
    return group.require_group(PROGRESS_GROUP)


def create_flags(progress: Any, name: str, shape: Sequence[int]) -> None:
    """Create (or empty) the flag array ``name``: one single-element chunk per task.

    Each flag is its own Zarr chunk, so tasks set theirs independently and concurrently, also
    on object storage.

    Parameters
    ----------
    progress
        The group from :func:`progress_group`.
    name
        Name of the flag array.
    shape
        One element per task (e.g. the number of Dask blocks along each axis).
    """
    shape = tuple(int(s) for s in shape)
    progress.create_array(
        name, shape=shape, chunks=tuple(1 for _ in shape), dtype="uint8", fill_value=0,
        overwrite=True,
    )  # fmt: skip


def set_flag(url: str, zkw: dict[str, Any], name: str, index: int | tuple[int, ...]) -> None:
    """Record that the task at ``index`` of the flag array ``name`` has written its data.

    Parameters
    ----------
    url
        The store.
    zkw
        Keyword arguments for zarr.
    name
        Name of the flag array.
    index
        The task's element.
    """
    import zarr

    flags = zarr.open_array(url, path=record_path(name), mode="r+", zarr_format=3, **zkw)
    flags[index] = 1


def read_flags(url: str, zkw: dict[str, Any], name: str) -> np.ndarray | None:
    """The flags of ``name`` as booleans, or None when the store has no such record.

    Parameters
    ----------
    url
        The store.
    zkw
        Keyword arguments for zarr.
    name
        Name of the flag array.

    Returns
    -------
    numpy.ndarray or None
        True where the task has written its data.
    """
    import zarr

    try:
        flags = zarr.open_array(url, path=record_path(name), mode="r", zarr_format=3, **zkw)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.NodeTypeValidationError):
        return None
    return np.asarray(flags[...]).astype(bool)


def consolidate(url: str, zkw: dict[str, Any]) -> None:
    """Consolidate the store's metadata (Zarr format 3).

    Parameters
    ----------
    url
        The store.
    zkw
        Keyword arguments for zarr.
    """
    import zarr

    store: Any = url
    if zkw.get("storage_options"):
        store = zarr.storage.FsspecStore.from_url(
            url, storage_options=zkw["storage_options"], read_only=False
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store, zarr_format=3)


def finish(url: str, zkw: dict[str, Any]) -> None:
    """Drop the records, mark the store complete, consolidate the metadata (in that order).

    Parameters
    ----------
    url
        The store.
    zkw
        Keyword arguments for zarr.
    """
    import zarr

    group = zarr.open_group(url, mode="r+", use_consolidated=False, zarr_format=3, **zkw)
    if PROGRESS_GROUP in group:
        del group[PROGRESS_GROUP]
    group.attrs.update({STATUS_ATTR: "complete"})
    consolidate(url, zkw)


def _distributed_client() -> Any:
    """The distributed client that ``dask.compute`` would use now, or None."""
    import sys

    if "distributed" not in sys.modules:
        return None
    from dask.base import get_scheduler
    from distributed import Client

    client = getattr(get_scheduler(), "__self__", None)
    if isinstance(client, Client) and not client.asynchronous:
        return client
    return None


def _compute(tasks: list[Any], progress: bool) -> None:
    """Run ``tasks`` with the current scheduler; a progress bar on stdout when asked.

    The bar is Dask's: ``distributed.progress`` on a distributed client, else
    ``dask.diagnostics.ProgressBar`` (shown for runs longer than a second).
    """
    import dask

    if not progress:
        dask.compute(*tasks)
        return
    client = _distributed_client()
    if client is None:
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=1.0):
            dask.compute(*tasks)
        return
    from distributed import progress as show_progress

    futures = client.compute(tasks)
    try:
        show_progress(futures)
        client.gather(futures)
    except BaseException:
        client.cancel(futures)
        raise


def run_tasks(tasks: list[Any], *, progress: bool, note: str) -> None:
    """Run the write tasks with the current Dask scheduler; on failure, say how to resume.

    Parameters
    ----------
    tasks
        Dask collections (delayed objects) to compute; nothing happens for none.
    progress
        Show Dask's progress bar on stdout: ``distributed.progress`` on a distributed client,
        else ``dask.diagnostics.ProgressBar`` (for runs longer than a second).
    note
        Added to any exception (:meth:`BaseException.add_note`): the store is left
        incomplete and how to finish it.

    Examples
    --------
    >>> import dask
    >>> run_tasks([dask.delayed(len)([1])], progress=False, note="not needed")
    """
    if not tasks:
        return
    try:
        _compute(tasks, progress)
    except BaseException as err:
        err.add_note(note)
        raise
