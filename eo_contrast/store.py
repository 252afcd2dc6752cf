"""Zarr write-back: CRS that survives, chunk-by-chunk region writes, resumable runs.

:func:`to_zarr` writes a cube, an embedding, a prediction or a paired Dataset to a Zarr (format 3)
store on a local path or any fsspec URL. The write happens in two steps:

1. metadata and coordinates are written (data variables are left empty), the group attribute
   ``eo_contrast_status`` is set to ``"incomplete"`` and one flag array per data variable is
   created in the sub-group ``_eo_contrast_progress`` (one single-element Zarr chunk per Dask
   chunk, so flags are written independently and concurrently, also on object storage);
2. each Dask chunk is computed and written to its own region of the Zarr array (one task per
   chunk, run by the current Dask scheduler), and only then is its flag set.

When every chunk is written, the flag arrays are deleted, ``eo_contrast_status`` becomes
``"complete"`` and the metadata is consolidated. A store whose status is not ``"complete"`` was
interrupted: ``resume=True`` writes only the chunks whose flag is not set.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from eo_contrast._io.resumable import (
    PROGRESS_GROUP,
    STATUS_ATTR,
    check_target,
    consolidate,
    create_flags,
    finish,
    progress_group,
    read_flags,
    read_status,
    run_tasks,
    set_flag,
)
from eo_contrast._io.urls import store_url, zarr_kw

__all__ = ["PROGRESS_GROUP", "STATUS_ATTR", "to_zarr"]

#: Name of the variable a DataArray without a name is written as.
DEFAULT_NAME = "cube"

_MODES = ("w-", "w")
_DATETIME_KINDS = ("M", "m")
#: dtype kinds written straight into Zarr (no CF encoding involved)
_DIRECT_KINDS = ("i", "u", "f", "c")
#: CF packing / masking attributes dropped from data variables: values are already physical
_PACKING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")


# --------------------------------------------------------------------------- helpers


def _crs_of(obj: xr.DataArray | xr.Dataset) -> Any:
    import rioxarray  # noqa: F401  (registers .rio)

    try:
        return obj.rio.crs
    except Exception:  # no spatial dims or conflicting CRS: nothing to carry over
        return None


def _as_dataset(obj: xr.DataArray | xr.Dataset) -> tuple[xr.Dataset, str | None]:
    """The Dataset to write and, for a DataArray, the name of its variable."""
    if isinstance(obj, xr.DataArray):
        name = DEFAULT_NAME if obj.name is None else str(obj.name)
        if name in obj.coords:
            raise ValueError(
                f"the DataArray is named {name!r} like one of its coordinates: rename it first "
                f"(e.g. obj.rename({DEFAULT_NAME!r}))"
            )
        return obj.to_dataset(name=name, promote_attrs=False), name
    if isinstance(obj, xr.Dataset):
        if "spatial_ref" in obj.data_vars:
            obj = obj.set_coords("spatial_ref")
        if not obj.data_vars:
            raise ValueError("the Dataset has no data variables to write")
        return obj, None
    raise TypeError(f"obj must be an xarray DataArray or Dataset, not {type(obj).__name__}")


def _regular_chunks(data: Any, name: Hashable) -> Any:
    """Dask data with regular chunks (all the size of the first one, the last one smaller)."""
    import dask.array as da

    if not isinstance(data, da.Array):
        values = np.asarray(data)
        # dask cannot size object (string) elements for "auto" chunks: one chunk then
        data = da.from_array(values, chunks=-1 if values.dtype.kind == "O" else "auto")
    if data.size == 0:
        raise ValueError(f"data variable {name!r} is empty (shape {data.shape}): nothing to write")
    target = tuple(int(c[0]) for c in data.chunks)
    regular = all(
        all(c == first for c in chunks[:-1]) and chunks[-1] <= first
        for chunks, first in zip(data.chunks, target, strict=True)
    )
    return data if regular else data.rechunk(target)


def _prepare(obj: xr.DataArray | xr.Dataset) -> tuple[xr.Dataset, str | None]:
    """Dataset ready for Zarr: regular Dask chunks, CRS in ``spatial_ref``, safe strings."""
    ds, name = _as_dataset(obj)
    crs = _crs_of(obj)
    if crs is not None:
        ds = ds.rio.write_crs(crs)

    # coordinates: computed (they are written with the metadata), strings as variable-length
    coords: dict[Hashable, xr.Variable] = {}
    for key, coord in ds.coords.items():
        var = coord.variable
        if key not in ds.indexes and var.chunks is not None:
            var = var.compute()
        if var.dtype.kind == "U":
            var = var.astype(object)
        keep = ("units", "calendar") if var.dtype.kind in _DATETIME_KINDS else ()
        var = var.copy(deep=False)
        var.encoding = {k: v for k, v in coord.encoding.items() if k in keep}
        coords[key] = var

    data_vars: dict[Hashable, xr.Variable] = {}
    non_index = [k for k in coords if k not in ds.dims]
    for key, dvar in ds.data_vars.items():
        var = dvar.variable
        if var.dtype.kind in ("O", "V"):
            raise TypeError(
                f"data variable {key!r} has dtype {var.dtype} (Python objects), which Zarr cannot "
                "store: convert it first, e.g. obj.astype('float32') for numbers or "
                "obj.astype(str) for text"
            )
        if var.dtype.kind == "U":
            var = var.astype(object)
        data = _regular_chunks(var.data, key)
        attrs = {k: v for k, v in var.attrs.items() if k not in _PACKING_ATTRS}
        new = xr.Variable(var.dims, data, attrs=attrs)
        encoding: dict[str, Any] = {"chunks": tuple(int(c[0]) for c in data.chunks)}
        if var.dtype.kind in _DATETIME_KINDS:
            encoding.update({k: v for k, v in dvar.encoding.items() if k in ("units", "calendar")})
        grid_mapping = dvar.encoding.get("grid_mapping") or dvar.attrs.get("grid_mapping")
        if grid_mapping is not None:
            new.attrs.pop("grid_mapping", None)
            encoding["grid_mapping"] = grid_mapping
        # name the coordinates explicitly, the CRS one included, so that a plain
        # xr.open_zarr(store) decodes spatial_ref as a coordinate and .rio.crs works
        own = sorted(str(k) for k in non_index if set(coords[k].dims) <= set(var.dims))
        if own:
            new.attrs.pop("coordinates", None)
            encoding["coordinates"] = " ".join(own)
        new.encoding = encoding
        data_vars[key] = new

    out = xr.Dataset(data_vars, coords=coords, attrs=dict(ds.attrs))
    out.attrs[STATUS_ATTR] = "incomplete"
    return out, name


def _describe_mismatch(ds: xr.Dataset, existing: xr.Dataset) -> str | None:
    """Why ``existing`` (an opened store) does not hold the same layout as ``ds``; None if it does."""
    if set(ds.data_vars) != set(existing.data_vars):
        return (
            f"data variables {sorted(map(str, existing.data_vars))} in the store vs "
            f"{sorted(map(str, ds.data_vars))} to write"
        )
    for key, var in ds.data_vars.items():
        old = existing[key]
        if old.dims != var.dims or old.shape != var.shape:
            return (
                f"variable {key!r} has dims/shape {dict(old.sizes)} in the store vs "
                f"{dict(var.sizes)} to write"
            )
        old_chunks = tuple(old.encoding.get("chunks") or ())
        if old_chunks != var.encoding["chunks"]:
            return (
                f"variable {key!r} has chunks {old_chunks} in the store vs {var.encoding['chunks']}"
            )
        if old.dtype != var.dtype and not (old.dtype.kind in "OTU" and var.dtype.kind in "OTU"):
            return f"variable {key!r} has dtype {old.dtype} in the store vs {var.dtype}"
    for key in ds.indexes:
        if key not in existing.coords:
            return f"coordinate {key!r} is missing from the store"
        new_values = ds[key].values
        old_values = existing[key].values
        if new_values.dtype.kind in "OTU" or old_values.dtype.kind in "OTU":
            same = [str(v) for v in new_values] == [str(v) for v in old_values]
        else:
            same = new_values.shape == old_values.shape and bool(
                np.array_equal(new_values, old_values)
            )
        if not same:
            return f"coordinate {key!r} has other values in the store"
    return None


def _block_region(chunks: tuple[tuple[int, ...], ...], idx: tuple[int, ...]) -> list[slice]:
    region = []
    for sizes, i in zip(chunks, idx, strict=True):
        start = int(sum(sizes[:i]))
        region.append(slice(start, start + int(sizes[i])))
    return region


def _write_chunk(
    block: np.ndarray,
    url: str,
    zkw: dict[str, Any],
    name: str,
    dims: tuple[Hashable, ...],
    region: list[slice],
    idx: tuple[int, ...],
    direct: bool,
) -> None:
    """Write one chunk into its region, then set its completion flag (one Dask task).

    Numeric variables (``direct``) are written straight into the Zarr array: they carry no CF
    encoding (see :func:`_prepare`), so this is what xarray would write, with fewer requests.
    Others (bool, datetime, strings) go through xarray's region writes, which encode them.
    """
    import zarr

    if direct:
        array = zarr.open_array(url, path=name, mode="r+", zarr_format=3, **zkw)
        array[tuple(region)] = np.asarray(block)
    else:
        xr.Dataset({name: (dims, np.asarray(block))}).to_zarr(
            url,
            region=dict(zip(map(str, dims), region, strict=True)),
            mode="r+",
            consolidated=False,
            zarr_format=3,
            **zkw,
        )
    set_flag(url, zkw, name, idx)


def _write_block(
    block: np.ndarray,
    *,
    url: str,
    zkw: dict[str, Any],
    var_name: str,
    dims: tuple[Hashable, ...],
    all_chunks: tuple[tuple[int, ...], ...],
    direct: bool,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """:func:`_write_chunk` as a blockwise function; one ``1`` per block."""
    assert block_info is not None
    idx = tuple(block_info[0]["chunk-location"])
    _write_chunk(block, url, zkw, var_name, dims, _block_region(all_chunks, idx), idx, direct)
    return np.ones((1,) * block.ndim, dtype=np.uint8)


def _written(
    data: Any,
    url: str,
    zkw: dict[str, Any],
    name: str,
    dims: tuple[Hashable, ...],
    direct: bool,
    token: str,
) -> Any:
    """A lazy array of one ``1`` per block of ``data``, each written to ``url`` when computed.

    The write is one more blockwise step: Dask fuses reading, computing and writing a chunk
    into one task (no intermediate result kept, moved or scheduled on its own).
    """
    import dask.array as da

    return da.map_blocks(
        _write_block,
        data,
        url=url,
        zkw=zkw,
        var_name=name,
        dims=dims,
        all_chunks=data.chunks,
        direct=direct,
        chunks=tuple((1,) * len(c) for c in data.chunks),
        dtype=np.uint8,
        meta=np.empty((0,) * data.ndim, dtype=np.uint8),
        name=f"to_zarr-{name}-{token}",
    )


def _create_flags(
    url: str, zkw: dict[str, Any], ds: xr.Dataset, existing: Mapping[Hashable, bool]
) -> None:
    """Create the (empty) completion-flag array of each variable that has none yet."""
    progress = progress_group(url, zkw)
    for key, var in ds.data_vars.items():
        if not existing.get(key):
            create_flags(progress, str(key), tuple(len(c) for c in var.chunks or ()))


def _members(url: str, zkw: dict[str, Any]) -> set[str]:
    """Names of the arrays and groups directly in the store's root group."""
    import zarr

    group = zarr.open_group(url, mode="r", use_consolidated=False, **zkw)
    return {str(k) for k in group.keys()}  # noqa: SIM118  (zarr Group)


def _open(url: str, zkw: dict[str, Any]) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return xr.open_zarr(url, **zkw)


def _blocks(data: Any) -> np.ndarray:
    """One :class:`dask.delayed.Delayed` per chunk of ``data``, layer annotations kept.

    ``Array.to_delayed`` wraps the optimised graph in one layer without annotations, and
    low-level task fusion turns it into a plain dict: both drop annotations such as the Dask
    resources of the model tasks (``{"GPU": 1}``). Graphs with annotations are therefore
    optimised with blockwise fusion only (which merges the annotations of fused tasks) and
    their layers kept.
    """
    layers = getattr(getattr(data, "dask", None), "layers", {})
    if not any(getattr(layer, "annotations", None) for layer in layers.values()):
        return data.to_delayed()
    import dask
    from dask.delayed import Delayed

    keys = data.__dask_keys__()
    with dask.config.set({"optimization.fuse.active": False}):
        graph = data.__dask_optimize__(data.__dask_graph__(), keys)
    first = (data.name, *(0 for _ in data.shape))
    names = list(graph.layers)
    layer = next((n for n in names if first in graph.layers[n]), names[-1])
    out = np.empty(data.numblocks, dtype=object)
    for idx in np.ndindex(*data.numblocks):
        out[idx] = Delayed((data.name, *idx), graph, layer=layer)
    return out


# --------------------------------------------------------------------------- public


def to_zarr(
    obj: xr.DataArray | xr.Dataset,
    store: str | os.PathLike[str],
    *,
    mode: str = "w-",
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> xr.DataArray | xr.Dataset:
    """Write a cube, embedding, prediction or paired Dataset to Zarr, chunk by chunk.

    The store is Zarr format 3 with consolidated metadata. Each data variable's Zarr chunks are
    its Dask chunks (irregular Dask chunks are first rechunked to the size of the first chunk;
    NumPy-backed variables get Dask's ``"auto"`` chunks). Each chunk is computed and written in
    its own Dask task by the current scheduler (threads, processes or a distributed client), so
    memory stays bounded by chunk size x concurrency. The CRS is stored the CF/rioxarray way (a
    ``spatial_ref`` coordinate with ``crs_wkt``, named by ``grid_mapping``), so
    ``xr.open_zarr(store).rio.crs == obj.rio.crs``. String coordinates (band names) are stored
    as variable-length strings. Encodings of the data variables (packing, compressors, chunks)
    and CF packing attributes (``scale_factor``, ``add_offset``, ``_FillValue``,
    ``missing_value``) are not carried over: values are written as they are in memory (float32
    stays float32, NaN stays NaN, an integer nodata value such as -1 stays -1).

    The group attribute ``eo_contrast_status`` is ``"incomplete"`` until every chunk is written,
    then ``"complete"``; completion of each chunk is recorded in flag arrays under
    ``_eo_contrast_progress`` while the write runs, and removed at the end.

    Parameters
    ----------
    obj
        A DataArray, written as a Dataset with one variable named after the array
        (``"cube"`` when it has no name; read it back with ``xr.open_zarr(store)[name]``), or a
        Dataset (e.g. the output of :func:`eo_contrast.pair`).
    store
        Local path or fsspec URL (``"memory://x.zarr"``, ``"file:///data/x.zarr"``,
        ``"s3://bucket/x.zarr"``, ...).
    mode
        ``"w-"`` (default): refuse a store that already exists; ``"w"``: overwrite it.
    resume
        Finish an interrupted write: on an incomplete store written by this function with the
        same variables, shapes, chunks and coordinates, write only the chunks not recorded as
        written; on a complete store do nothing; on a missing store write normally.
    storage_options
        Options for the fsspec filesystem of a URL (credentials, endpoint, ...). Without them
        fsspec finds credentials the usual way (``AWS_*`` environment variables, profiles,
        instance roles for ``s3://``). They travel with the write tasks to the workers of a
        distributed cluster and are never written to the store.
    progress
        Show Dask's progress bar on stdout while the chunks are written:
        ``distributed.progress`` on a distributed client, else
        ``dask.diagnostics.ProgressBar`` (for writes longer than a second).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        The written data opened lazily from the store (``xr.open_zarr``): a DataArray for a
        DataArray input, else a Dataset (with ``eo_contrast_status == "complete"`` in its attrs).

    Raises
    ------
    FileExistsError
        ``mode="w-"`` on an existing store without ``resume``.
    FileNotFoundError
        The bucket of an object-store URL (``s3://bucket/...``) does not exist; the message
        names it.
    PermissionError
        No credentials were found for an object-store URL; the message says what to set
        (environment variables or ``storage_options``), never the credentials.
    ValueError
        Invalid ``mode``; ``resume`` with ``mode="w"``; a path that exists and is not a Zarr
        store; ``resume`` on a store not written by this function or holding another layout.
    TypeError
        ``obj`` or ``store`` of the wrong type.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import rioxarray  # registers .rio
    >>> import eo_contrast as ec
    >>> cube = xr.DataArray(
    ...     np.arange(2 * 4 * 6, dtype="float32").reshape(2, 4, 6), dims=("band", "y", "x"),
    ...     coords={"band": ["vv", "vh"], "y": [35.0, 25.0, 15.0, 5.0],
    ...             "x": [5.0, 15.0, 25.0, 35.0, 45.0, 55.0]},
    ... ).rio.write_crs("EPSG:32631").chunk({"y": 2, "x": 3})
    >>> out = ec.to_zarr(cube, "memory://doc/cube.zarr")
    >>> out.name, out.rio.crs.to_epsg(), out.chunks
    ('cube', 32631, ((2,), (2, 2), (3, 3)))
    >>> bool((out.values == cube.values).all()), [str(b) for b in out.band.values]
    (True, ['vv', 'vh'])
    >>> ec.to_zarr(cube, "memory://doc/cube.zarr")
    Traceback (most recent call last):
    ...
    FileExistsError: Zarr store 'memory://doc/cube.zarr' already exists: ...
    """
    if mode not in _MODES:
        raise ValueError(
            f"mode={mode!r} is not supported: use 'w-' (refuse an existing store, the default) "
            "or 'w' (overwrite it)"
        )
    if resume and mode == "w":
        raise ValueError(
            "resume=True finishes an interrupted write and mode='w' overwrites the store: pass "
            "one or the other"
        )
    url = store_url(store)
    zkw = zarr_kw(url, storage_options)
    ds, name = _prepare(obj)

    done: dict[Hashable, np.ndarray | None] = {}
    init = True
    if check_target(
        url, storage_options, mode=mode, resume=resume, job="write",
        other_note=" (nothing was written)",
    ):  # fmt: skip
        members = _members(url, zkw)
        status = read_status(url, zkw)
        # a write killed inside its metadata step (an empty group, or no completion flags
        # yet) has no chunk recorded as written: it starts again from scratch
        killed_early = (status is None and not members) or (
            status not in (None, "complete") and PROGRESS_GROUP not in members
        )
        if not killed_early:
            if status is None:
                raise ValueError(
                    f"cannot resume {url!r}: it was not written by eo_contrast.to_zarr (no "
                    f"{STATUS_ATTR!r} attribute), so which chunks are written is unknown; pass "
                    "mode='w' to overwrite it"
                )
            mismatch = _describe_mismatch(ds, _open(url, zkw))
            if mismatch is not None:
                raise ValueError(
                    f"cannot resume {url!r}: it holds another layout ({mismatch}); pass "
                    "mode='w' to overwrite it, or resume with the same object"
                )
            if status == "complete":
                consolidate(url, zkw)  # idempotent: a kill may have come before it
                return _result(url, zkw, name)
            init = False
            done = {key: read_flags(url, zkw, str(key)) for key in ds.data_vars}

    if init:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.to_zarr(url, mode="w", compute=False, consolidated=True, zarr_format=3, **zkw)
    _create_flags(url, zkw, ds, {k: v is not None for k, v in done.items()})

    tasks: list[Any] = []
    token = uuid.uuid4().hex
    for key, var in ds.data_vars.items():
        data = var.data
        flags = done.get(key)
        if flags is not None and flags.shape != data.numblocks:
            flags = None
        direct = var.dtype.kind in _DIRECT_KINDS
        blocks = _blocks(_written(data, url, zkw, str(key), var.dims, direct, token))
        tasks.extend(
            blocks[idx] for idx in np.ndindex(*data.numblocks) if flags is None or not flags[idx]
        )
    run_tasks(
        tasks,
        progress=progress,
        note=(
            f"eo_contrast.to_zarr: {url!r} is left incomplete ({STATUS_ATTR}='incomplete'); "
            "call to_zarr(obj, store, resume=True) to write the chunks still missing"
        ),
    )
    finish(url, zkw)
    return _result(url, zkw, name)


def _result(url: str, zkw: dict[str, Any], name: str | None) -> xr.DataArray | xr.Dataset:
    opened = _open(url, zkw)
    return opened if name is None else opened[name]
