"""Read errors that say where they happened: the store or file, and the chunk.

A lazily opened cube (``xr.open_zarr``, ``rioxarray.open_rasterio(..., chunks=...)``,
``xr.open_dataset(..., chunks=...)``) reads its chunks only when a Dask task needs them. When
one stored chunk is damaged, the error raised deep inside the codec (``RuntimeError: Zstd
decompression error``) names neither the store nor the chunk. :func:`guard_reads` wraps the
arrays a Dask graph reads from, so that such an error is raised again as
:class:`ChunkReadError`, naming the store (or file), the variable, the Zarr chunk key(s) and
the index ranges per dim, with the original error as its cause.

The graph keeps its layers, chunks and key names; only the value of each source-array key
(the ``original-...`` layer that ``dask.array.from_array`` makes) is replaced by a small
picklable wrapper, so the guarded object works with every Dask scheduler, process-based
distributed workers included. NumPy-backed and already-computed data are returned unchanged.

Examples
--------
>>> import numpy as np, xarray as xr
>>> from eo_contrast.readguard import guard_reads
>>> cube = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"))
>>> guard_reads(cube) is cube
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable
from typing import Any, cast, overload

import dask.array as da
import numpy as np
import xarray as xr

__all__ = ["ChunkReadError", "guard_reads"]

#: Chunk keys listed one by one in a message, at most.
_MAX_KEYS = 8
#: How deep to look through xarray's lazy-indexing wrappers for the backend array.
_MAX_DEPTH = 32


class ChunkReadError(OSError):
    """Reading or decoding a chunk of a stored array failed.

    Attributes
    ----------
    store
        The Zarr store or file read (a path or URL), or ``None`` when unknown.
    chunk
        The chunk: Zarr chunk key(s) and/or index ranges per dim.

    Examples
    --------
    >>> err = ChunkReadError("could not read ...", store="/data/cube.zarr", chunk="c/0/1/1")
    >>> isinstance(err, OSError), err.store, err.chunk
    (True, '/data/cube.zarr', 'c/0/1/1')
    """

    def __init__(self, message: str, *, store: str | None = None, chunk: str | None = None):
        super().__init__(message)
        self.store = store
        self.chunk = chunk

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _backend(obj: Any) -> Any:
    """The backend array (``xarray.backends.BackendArray``) under xarray's wrappers, or None."""
    from xarray.backends.common import BackendArray

    for _ in range(_MAX_DEPTH):
        if obj is None or isinstance(obj, np.ndarray):
            return None
        if isinstance(obj, BackendArray):
            return obj
        obj = getattr(obj, "array", None)
    return None


def _zarr_store_url(zarray: Any) -> str:
    store = zarray.store_path.store
    root = getattr(store, "root", None)  # LocalStore
    if root is not None:
        return os.fspath(root)
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and path is not None:  # FsspecStore
        try:
            return str(fs.unstrip_protocol(path))
        except (AttributeError, TypeError, ValueError):
            return str(path)
    return str(store)


def _ranges(key: Any, shape: tuple[int, ...]) -> list[tuple[int, int] | None]:
    """``(start, stop)`` per dim of an indexing key (``None`` where it is not a slice)."""
    parts = key if isinstance(key, tuple) else (key,)
    out: list[tuple[int, int] | None] = []
    for ax, size in enumerate(shape):
        k = parts[ax] if ax < len(parts) else slice(None)
        if isinstance(k, slice) and k.step in (None, 1):
            start, stop, _ = k.indices(size)
            out.append((start, stop))
        elif isinstance(k, int | np.integer):
            out.append((int(k), int(k) + 1))
        else:
            out.append(None)
    return out


def _describe_ranges(ranges: list[tuple[int, int] | None], dims: tuple[str, ...]) -> str:
    parts = []
    for ax, r in enumerate(ranges):
        label = dims[ax] if ax < len(dims) else f"axis {ax}"
        parts.append(f"{label} {r[0]}:{r[1]}" if r is not None else f"{label} (indexed)")
    return ", ".join(parts)


def _zarr_keys(zarray: Any, ranges: list[tuple[int, int] | None]) -> list[str] | None:
    """The Zarr chunk (or shard) keys holding the index ranges, or None when unknown."""
    grid = getattr(zarray, "shards", None) or getattr(zarray, "chunks", None)
    if grid is None or len(grid) != len(ranges) or any(r is None for r in ranges):
        return None
    spans = []
    for (start, stop), size in zip((r for r in ranges if r is not None), grid, strict=True):
        if stop <= start:
            return []
        spans.append(range(start // size, (stop - 1) // size + 1))
    count = math.prod(len(s) for s in spans)
    import itertools

    coords = itertools.islice(itertools.product(*spans), _MAX_KEYS + 1)
    keys = [str(zarray.metadata.encode_chunk_key(tuple(c))) for c in coords]
    if count > _MAX_KEYS:
        keys = [*keys[: _MAX_KEYS - 1], f"... ({count} chunks in all)"]
    return keys


def _zarr_dims(zarray: Any) -> tuple[str, ...] | None:
    names = getattr(zarray.metadata, "dimension_names", None)
    if names is None:
        names = zarray.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(str(n) for n in names) if names else None


def _error(
    array: Any,
    key: Any,
    err: Exception,
    source: str | None,
    dims: tuple[str, ...] | None,
    variable: str | None,
) -> ChunkReadError:
    """The :class:`ChunkReadError` for reading ``array[key]`` having raised ``err``."""
    shape = tuple(int(n) for n in getattr(array, "shape", ()))
    ranges = _ranges(key, shape)
    backend = _backend(array)
    zarray = getattr(backend, "_array", None)  # xarray's ZarrArrayWrapper
    kind, store, keys, files = "file", source, None, None
    if zarray is not None and hasattr(zarray, "store_path"):
        try:
            kind, store = "Zarr store", _zarr_store_url(zarray)
            variable = variable or str(zarray.path) or None
            dims = _zarr_dims(zarray) or dims
            keys = _zarr_keys(zarray, ranges)
            if keys and len(keys) == 1:
                files = f"{store.rstrip('/')}/{str(zarray.path).strip('/')}/{keys[0]}"
        except Exception:  # describing the place must never hide the error itself
            keys = None
    else:
        manager = getattr(backend, "manager", None)  # rasterio / netCDF file managers
        args = getattr(manager, "_args", None)
        if args and isinstance(args[0], str | os.PathLike):
            store = os.fspath(args[0])
        elif source is None and backend is not None:
            store = getattr(getattr(backend, "datastore", None), "_filename", None)
    where_dims = _describe_ranges(ranges, dims or ())
    if keys:
        chunk = ("chunk " if len(keys) == 1 else "chunks ") + ", ".join(keys)
        chunk_text = f"{chunk} ({where_dims}{'; file ' + files if files else ''})"
    else:
        chunk = f"({where_dims})"
        chunk_text = f"the chunk {chunk}"
    of_var = f" of variable {variable!r}" if variable else ""
    place = f"{kind} {store}" if store else "its source (unknown store)"
    message = (
        f"could not read {chunk_text}{of_var} from {place}: {type(err).__name__}: "
        f"{str(err).rstrip('. ')}. "
        "The stored data there is damaged or unreadable: check or restore it (or write that "
        "region again); the other chunks can still be read, e.g. by selecting a region that "
        "leaves this one out"
    )
    return ChunkReadError(message, store=store, chunk=keys[0] if keys and len(keys) == 1 else chunk)


class _GuardedArray:
    """A source array whose reads raise :class:`ChunkReadError` naming the store and chunk.

    It stands in for the array that ``dask.array.from_array`` indexes in every chunk task:
    ``__getitem__`` reads through the original (lazy xarray wrappers are read right there, so
    any decoding error happens inside it) and converts exceptions. Shape, dtype and the rest
    are forwarded; it pickles as its parts.
    """

    __slots__ = ("array", "dims", "source", "variable")

    def __init__(
        self,
        array: Any,
        source: str | None = None,
        dims: tuple[str, ...] | None = None,
        variable: str | None = None,
    ) -> None:
        self.array = array
        self.source = source
        self.dims = dims
        self.variable = variable

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.array, self.source, self.dims, self.variable))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _GuardedArray.__slots__:
            raise AttributeError(name)
        return getattr(self.array, name)

    def __repr__(self) -> str:
        return f"_GuardedArray({self.array!r})"

    def __getitem__(self, key: Any) -> Any:
        from xarray.core.indexing import ExplicitlyIndexed

        try:
            out = self.array[key]
            if isinstance(out, ExplicitlyIndexed) or hasattr(out, "get_duck_array"):
                out = out.get_duck_array()  # read now, inside the guard
            return out
        except (ChunkReadError, MemoryError):
            raise
        except Exception as err:
            raise _error(self.array, key, err, self.source, self.dims, self.variable) from err

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.asarray(self[(slice(None),) * self.ndim])
        return out.astype(dtype, copy=False) if dtype is not None else out


def _guard_dask(
    arr: da.Array, source: str | None, dims: tuple[str, ...], variable: str | None
) -> da.Array:
    """``arr`` with every source array of its graph wrapped in :class:`_GuardedArray`."""
    from dask._task_spec import DataNode
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    graph = arr.__dask_graph__()
    if not isinstance(graph, HighLevelGraph):
        return arr
    layers = dict(graph.layers)
    changed = False
    for lname, layer in graph.layers.items():
        if not isinstance(layer, MaterializedLayer):
            continue
        mapping = layer.mapping
        new: dict[Hashable, Any] | None = None
        for k, v in mapping.items():
            value = v.value if isinstance(v, DataNode) else v
            if isinstance(value, _GuardedArray) or _backend(value) is None:
                continue
            shape = tuple(getattr(value, "shape", ()))
            same = shape == tuple(arr.shape) and len(dims) == len(shape)
            new = dict(mapping) if new is None else new
            new[k] = _GuardedArray(value, source, dims if same else None, variable)
        if new is not None:
            layers[lname] = MaterializedLayer(new, annotations=layer.annotations)
            changed = True
    if not changed:
        return arr
    hlg = HighLevelGraph(layers, dict(graph.dependencies))
    return da.Array(hlg, arr.name, arr.chunks, meta=arr._meta)


def _guard_variable(
    var: xr.Variable, source: str | None, variable: str | None
) -> xr.Variable | None:
    """A guarded copy of ``var``, or None when it has nothing to guard."""
    data = var.data
    if not isinstance(data, da.Array):
        return None
    src = var.encoding.get("source", source)
    guarded = _guard_dask(data, src, tuple(str(d) for d in var.dims), variable)
    if guarded is data:
        return None
    return var.copy(deep=False, data=cast(Any, guarded))


@overload
def guard_reads(obj: xr.DataArray) -> xr.DataArray: ...
@overload
def guard_reads(obj: xr.Dataset) -> xr.Dataset: ...
@overload
def guard_reads(obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset: ...


def guard_reads(obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """``obj`` with its chunk reads guarded: read errors become :class:`ChunkReadError`.

    Every Dask-backed variable (data and non-index coordinates) whose graph reads from a
    stored array (Zarr, GeoTIFF through rioxarray, netCDF: any xarray backend array) gets that
    source wrapped so an exception raised while reading or decoding a chunk is raised again as
    :class:`ChunkReadError` naming the store or file, the variable, the Zarr chunk key(s) and
    the index ranges per dim, ``from`` the original error. Nothing is computed; chunks, layer
    and key names stay the same, and the result pickles (process-based Dask workers).

    Parameters
    ----------
    obj
        A DataArray or Dataset, typically lazily opened. NumPy-backed data, data without a
        stored source, and variables already guarded are left as they are.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        ``obj`` itself when there is nothing to guard, otherwise a shallow copy (same coords,
        attrs and encoding).

    Examples
    --------
    >>> import tempfile, numpy as np, xarray as xr
    >>> path = tempfile.mkdtemp() + "/cube.zarr"
    >>> xr.Dataset({"v": (("y", "x"), np.ones((4, 4), "f4"))}).chunk(2).to_zarr(
    ...     path, consolidated=False)
    <xarray.backends.zarr.ZarrStore object at ...>
    >>> ds = guard_reads(xr.open_zarr(path, consolidated=False))
    >>> ds.v.chunks, float(ds.v.sum())
    (((2, 2), (2, 2)), 16.0)
    """
    if isinstance(obj, xr.DataArray):
        source = obj.encoding.get("source")
        out = obj
        new = _guard_variable(obj.variable, source, None if obj.name is None else str(obj.name))
        if new is not None:
            out = out.copy(deep=False, data=new.data)
        coords: dict[Hashable, xr.Variable] = {}
        for cname, coord in obj.coords.items():
            if cname in obj.indexes:
                continue
            cnew = _guard_variable(coord.variable, source, str(cname))
            if cnew is not None:
                coords[cname] = cnew
        if coords:
            out = out.assign_coords(coords)
        return out
    if isinstance(obj, xr.Dataset):
        source = obj.encoding.get("source")
        data_vars: dict[Hashable, xr.Variable] = {}
        coord_vars: dict[Hashable, xr.Variable] = {}
        for vname, var in obj.variables.items():
            if vname in obj.indexes:
                continue
            new = _guard_variable(var, source, str(vname))
            if new is None:
                continue
            (coord_vars if vname in obj.coords else data_vars)[vname] = new
        if not data_vars and not coord_vars:
            return obj
        out_ds = obj.assign(data_vars) if data_vars else obj
        return out_ds.assign_coords(coord_vars) if coord_vars else out_ds
    raise TypeError(f"guard_reads needs an xarray DataArray or Dataset, not {type(obj).__name__}")
