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
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["PROGRESS_GROUP", "STATUS_ATTR", "to_zarr"]

#: Group attribute recording whether every chunk was written: "incomplete" or "complete".
STATUS_ATTR = "eo_contrast_status"
#: Sub-group of the store holding one completion-flag array per data variable during a write.
PROGRESS_GROUP = "_eo_contrast_progress"
#: Name of the variable a DataArray without a name is written as.
DEFAULT_NAME = "cube"

_MODES = ("w-", "w")
_DATETIME_KINDS = ("M", "m")
#: dtype kinds written straight into Zarr (no CF encoding involved)
_DIRECT_KINDS = ("i", "u", "f", "c")
#: CF packing / masking attributes dropped from data variables: values are already physical
_PACKING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned")


# --------------------------------------------------------------------------- helpers


def _store_url(store: Any) -> str:
    if isinstance(store, str | os.PathLike):
        url = os.fspath(store)
        if not isinstance(url, str) or not url:
            raise TypeError(f"store={store!r} must be a non-empty path or URL string")
        if url.startswith(("file://", "local://")):
            # plain local path: zarr's local store creates folders as needed
            from fsspec.implementations.local import LocalFileSystem

            url = str(LocalFileSystem._strip_protocol(url))
        return url
    raise TypeError(
        f"store must be a local path (str or pathlib.Path) or an fsspec URL string such as "
        f"'s3://bucket/cube.zarr', not {type(store).__name__}"
    )


def _is_url(url: str) -> bool:
    return "://" in url


def _zarr_kw(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments passing ``storage_options`` on to zarr / xarray (URLs only)."""
    if storage_options:
        if not _is_url(url):
            raise ValueError(
                f"storage_options are only used with fsspec URLs, but store={url!r} is a local "
                "path: drop storage_options or pass a URL such as 's3://bucket/cube.zarr'"
            )
        return {"storage_options": dict(storage_options)}
    return {}


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


def _store_state(url: str, storage_options: Mapping[str, Any] | None) -> str:
    """``"missing"``, ``"zarr"`` (holds Zarr metadata) or ``"other"`` (non-empty, not Zarr)."""
    fs, root = _fs(url, storage_options)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    try:
        entries = fs.ls(root, detail=False)  # one listing request on object storage
    except (FileNotFoundError, NotADirectoryError):
        return "other" if fs.isfile(root) else "missing"
    names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
    if names & {"zarr.json", ".zgroup", ".zarray"}:
        return "zarr"
    return "other" if entries else "missing"  # a file or a non-Zarr folder / an empty folder


def _consolidate(url: str, kw: dict[str, Any]) -> None:
    import zarr

    store: Any = url
    if kw.get("storage_options"):
        store = zarr.storage.FsspecStore.from_url(
            url, storage_options=kw["storage_options"], read_only=False
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store, zarr_format=3)


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
        data = da.from_array(np.asarray(data), chunks="auto")
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
    flags = zarr.open_array(url, path=f"{PROGRESS_GROUP}/{name}", mode="r+", zarr_format=3, **zkw)
    flags[idx] = 1


def _create_flags(
    url: str, zkw: dict[str, Any], ds: xr.Dataset, existing: Mapping[Hashable, bool]
) -> None:
    """Create the (empty) completion-flag array of each variable that has none yet."""
    import zarr

    group = zarr.open_group(url, mode="r+", use_consolidated=False, zarr_format=3, **zkw)
    progress = group.require_group(PROGRESS_GROUP)
    for key, var in ds.data_vars.items():
        if existing.get(key):
            continue
        nblocks = tuple(len(c) for c in var.chunks or ())
        progress.create_array(
            str(key),
            shape=nblocks,
            chunks=tuple(1 for _ in nblocks),
            dtype="uint8",
            fill_value=0,
            overwrite=True,
        )


def _written_flags(url: str, zkw: dict[str, Any], name: str) -> np.ndarray | None:
    import zarr

    try:
        flags = zarr.open_array(
            url, path=f"{PROGRESS_GROUP}/{name}", mode="r", zarr_format=3, **zkw
        )
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.NodeTypeValidationError):
        return None
    return np.asarray(flags[...]).astype(bool)


def _status(url: str, zkw: dict[str, Any]) -> str | None:
    import zarr

    group = zarr.open_group(url, mode="r", use_consolidated=False, **zkw)
    status = group.attrs.get(STATUS_ATTR)
    return None if status is None else str(status)


def _open(url: str, zkw: dict[str, Any]) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        return xr.open_zarr(url, **zkw)


def _finish(url: str, zkw: dict[str, Any]) -> None:
    """Drop the flags, mark the store complete, consolidate the metadata (in that order)."""
    import zarr

    group = zarr.open_group(url, mode="r+", use_consolidated=False, zarr_format=3, **zkw)
    if PROGRESS_GROUP in group:
        del group[PROGRESS_GROUP]
    group.attrs.update({STATUS_ATTR: "complete"})
    _consolidate(url, zkw)


# --------------------------------------------------------------------------- public


def to_zarr(
    obj: xr.DataArray | xr.Dataset,
    store: str | os.PathLike[str],
    *,
    mode: str = "w-",
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
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
        Options for the fsspec filesystem of a URL (credentials, endpoint, ...).

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        The written data opened lazily from the store (``xr.open_zarr``): a DataArray for a
        DataArray input, else a Dataset (with ``eo_contrast_status == "complete"`` in its attrs).

    Raises
    ------
    FileExistsError
        ``mode="w-"`` on an existing store without ``resume``.
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
    import dask

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
    url = _store_url(store)
    zkw = _zarr_kw(url, storage_options)
    ds, name = _prepare(obj)

    state = _store_state(url, storage_options)
    if state == "other":
        raise ValueError(
            f"{url!r} exists and is not a Zarr store: pick a new path (nothing was written)"
        )
    done: dict[Hashable, np.ndarray | None] = {}
    init = True
    if state == "zarr":
        if resume:
            status = _status(url, zkw)
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
                return _result(url, zkw, name)
            init = False
            done = {key: _written_flags(url, zkw, str(key)) for key in ds.data_vars}
        elif mode == "w-":
            raise FileExistsError(
                f"Zarr store {url!r} already exists: pass mode='w' to overwrite, or resume=True "
                "to finish an interrupted write"
            )

    if init:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            ds.to_zarr(url, mode="w", compute=False, consolidated=True, zarr_format=3, **zkw)
    _create_flags(url, zkw, ds, {k: v is not None for k, v in done.items()})

    tasks = []
    write = dask.delayed(_write_chunk, pure=False)
    for key, var in ds.data_vars.items():
        data = var.data
        flags = done.get(key)
        if flags is not None and flags.shape != data.numblocks:
            flags = None
        blocks = data.to_delayed()
        direct = var.dtype.kind in _DIRECT_KINDS
        for idx in np.ndindex(*data.numblocks):
            if flags is not None and flags[idx]:
                continue
            region = _block_region(data.chunks, idx)
            tasks.append(write(blocks[idx], url, zkw, str(key), var.dims, region, idx, direct))
    if tasks:
        try:
            dask.compute(*tasks)
        except BaseException as err:
            err.add_note(
                f"eo_contrast.to_zarr: {url!r} is left incomplete ({STATUS_ATTR}='incomplete'); "
                "call to_zarr(obj, store, resume=True) to write the chunks still missing"
            )
            raise
    _finish(url, zkw)
    return _result(url, zkw, name)


def _result(url: str, zkw: dict[str, Any], name: str | None) -> xr.DataArray | xr.Dataset:
    opened = _open(url, zkw)
    return opened if name is None else opened[name]
