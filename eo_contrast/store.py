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


#: fsspec protocols whose first path element is a bucket (or container)
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss")
#: exception class names (botocore, google-auth, azure) meaning "no credentials were found"
_NO_CREDENTIALS = ("NoCredentialsError", "DefaultCredentialsError", "ClientAuthenticationError")


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if _is_url(url) else "file"


def _credentials_hint(protocol: str, options: str = "storage_options") -> str:
    """What to set so that fsspec finds credentials for ``protocol`` (no values shown)."""
    if protocol in ("s3", "s3a"):
        return (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_ENDPOINT_URL for an S3 "
            f"server other than AWS) or AWS_PROFILE, or give {options} with 'key' and 'secret' "
            "('anon': true for a public bucket)"
        )
    if protocol in ("gs", "gcs"):
        return f"set GOOGLE_APPLICATION_CREDENTIALS, or give {options} with 'token'"
    if protocol in ("az", "abfs", "abfss"):
        return (
            "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or "
            f"AZURE_STORAGE_CONNECTION_STRING), or give {options} with 'account_name' and "
            "'account_key'"
        )
    return f"give the credentials in {options}"


def _remote_failure(err: BaseException, url: str) -> Exception | None:
    """A clear exception for a failure of an object store's filesystem, else None.

    Covers missing or partial credentials, access denied and storage options the filesystem
    does not take. The message names the store and what to set, never credential values.
    """
    if _protocol(url) in ("file", "local", "memory"):
        return None
    name = type(err).__name__
    hint = _credentials_hint(_protocol(url))
    if name in _NO_CREDENTIALS:
        return PermissionError(f"no credentials found for {url!r}: {hint}")
    if name == "PartialCredentialsError":  # botocore names what is missing, not the values
        return PermissionError(f"incomplete credentials for {url!r} ({err}): {hint}")
    if isinstance(err, TypeError) and "unexpected keyword argument" in str(err):
        return ValueError(
            f"the filesystem of {url!r} does not take one of the storage_options ({err}): "
            "check their names"
        )
    if isinstance(err, PermissionError):
        return PermissionError(f"access to {url!r} was denied ({err}): {hint}")
    return None


def _bucket(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The bucket of an object-store URL, or None for other stores."""
    if _protocol(url) not in _BUCKET_PROTOCOLS:
        return None
    _, root = _fs(url, storage_options)
    return root.strip("/").split("/", 1)[0] or None


def _check_bucket(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raise FileNotFoundError naming the bucket when ``url``'s bucket does not exist."""
    bucket = _bucket(url, storage_options)
    if bucket is None:
        return
    try:
        fs, _ = _fs(url, storage_options)
        fs.invalidate_cache(bucket)
        fs.info(bucket)  # unlike fs.exists, says why when it cannot tell
    except FileNotFoundError:
        raise FileNotFoundError(
            f"bucket {bucket!r} of {url!r} does not exist: create the bucket first or fix the URL"
        ) from None
    except Exception as err:
        clear = _remote_failure(err, url)
        if clear is not None:
            raise clear from None
        raise


def _store_state(url: str, storage_options: Mapping[str, Any] | None) -> str:
    """``"missing"``, ``"zarr"`` (holds Zarr metadata) or ``"other"`` (non-empty, not Zarr)."""
    try:
        fs, root = _fs(url, storage_options)
        root = root.rstrip("/")
        fs.invalidate_cache(root)
        try:
            entries = fs.ls(root, detail=False)  # one listing request on object storage
        except (FileNotFoundError, NotADirectoryError):
            return "other" if fs.isfile(root) else "missing"
    except Exception as err:
        clear = _remote_failure(err, url)
        if clear is not None:
            raise clear from None
        raise
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
    flags = zarr.open_array(url, path=f"{PROGRESS_GROUP}/{name}", mode="r+", zarr_format=3, **zkw)
    flags[idx] = 1


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


def _members(url: str, zkw: dict[str, Any]) -> set[str]:
    """Names of the arrays and groups directly in the store's root group."""
    import zarr

    group = zarr.open_group(url, mode="r", use_consolidated=False, **zkw)
    return {str(k) for k in group.keys()}  # noqa: SIM118  (zarr Group)


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
        Options for the fsspec filesystem of a URL (credentials, endpoint, ...). Without them
        fsspec finds credentials the usual way (``AWS_*`` environment variables, profiles,
        instance roles for ``s3://``). They travel with the write tasks to the workers of a
        distributed cluster and are never written to the store.

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
    return _to_zarr(obj, store, mode=mode, resume=resume, storage_options=storage_options)


def _to_zarr(
    obj: xr.DataArray | xr.Dataset,
    store: str | os.PathLike[str],
    *,
    mode: str = "w-",
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> xr.DataArray | xr.Dataset:
    """:func:`to_zarr` with a progress bar when ``progress`` (see :func:`_compute`)."""
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
    if state == "missing":
        _check_bucket(url, storage_options)
    if state == "other":
        raise ValueError(
            f"{url!r} exists and is not a Zarr store: pick a new path (nothing was written)"
        )
    done: dict[Hashable, np.ndarray | None] = {}
    init = True
    if state == "zarr":
        members = _members(url, zkw) if resume else set()
        status = _status(url, zkw) if resume else None
        if resume and (
            (status is None and not members)
            or (status not in (None, "complete") and PROGRESS_GROUP not in members)
        ):
            # a write killed inside its metadata step (an empty group, or no completion flags
            # yet): no chunk is recorded as written, so start it again from scratch
            pass
        elif resume:
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
                _consolidate(url, zkw)  # idempotent: a kill may have come before it
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
    if tasks:
        try:
            _compute(tasks, progress)
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
