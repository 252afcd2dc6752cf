"""Embed and segment a datacube lazily, chunk by chunk, with a halo.

Both functions build a Dask graph and return a lazy :class:`xarray.DataArray`; computing it (or
writing it with :func:`eo_contrast.to_zarr`) streams each Dask chunk through the model:

cube chunk (plus a halo from its neighbours) -> normalise -> cut tiles -> batches of
``batch_size`` -> model on the device -> stitch -> output chunk.

The model never travels inside the graph. Each task carries a small *reference* (the model
class, a checkpoint path and the SHA-256 of its bytes); every process loads a model once and keeps
it in a module-level cache keyed by that hash. A model given in memory is first written once to a
``.safetensors`` file in the temporary folder (``<tmp>/eo_contrast_models/<sha256>.safetensors``,
hashed over the model's class, metadata and tensors), so worker processes on the same machine
find it there; for a cluster spread over several machines, save the model to storage every
worker can read and pass its path.

Results do not depend on the chunking of the input: tiles sit on one global grid, and each tile
sees exactly the same pixels (halo included) whatever chunk it falls in.

On a Dask cluster whose workers declare a ``GPU`` resource (``dask worker --resources GPU=1``),
the model tasks ask for ``resources={"GPU": 1}`` unless ``device`` names a CPU-like device, so
each GPU runs one model task at a time (see :func:`_task_resources`).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from eo_contrast.cube import as_cube, band_units, canonical_band_names
from eo_contrast.readguard import guard_reads
from eo_contrast.runtime import tune_allocator
from eo_contrast.units import block_location, check_values

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["PIXEL_LEVELS", "embed", "segment"]

#: Pyramid levels (indices into ``ResNetEncoder.features``) concatenated into ``level="pixel"``
#: features: stages 1 and 2 (strides 4 and 8 with the ``"imagenet"`` stem, 1 and 2 with
#: ``"small"``), upsampled bilinearly to the input grid.
PIXEL_LEVELS: tuple[int, ...] = (1, 2)
#: Lowest weight of the blending window at a tile's edge: every pixel gets a defined average.
WINDOW_FLOOR = 1e-3
_LEVELS = ("tile", "pixel")
_DTYPES = ("float32", "float16")
_SPATIAL = ("y", "x")

# ----------------------------------------------------------------------------- model cache

_CACHE: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()
_LOADS: Counter[str] = Counter()


@dataclass(frozen=True)
class ModelRef:
    """What a task needs to find its model: small and picklable.

    Attributes
    ----------
    cls
        The model class (pickled by reference); it must offer ``cls.load(path)``.
    path
        The ``.safetensors`` checkpoint.
    sha256
        The cache key: SHA-256 of the checkpoint's bytes (a model given as a path), or of the
        model's class, metadata and tensors (a model given in memory; its file is named after
        it and written only once).
    device
        The requested device (``"auto"`` is resolved in the process that runs the task).
    """

    cls: type
    path: str
    sha256: str
    device: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_hash(model: Any) -> str:
    """SHA-256 of a model's class, metadata and tensors (stable across saves)."""
    import json

    import torch

    digest = hashlib.sha256()
    cls = type(model)
    digest.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    meta = getattr(model, "metadata", None)
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _model_ref(model: Any, device: str, default_cls: type) -> ModelRef:
    """A :class:`ModelRef` for a checkpoint path or an in-memory model (written once to tmp)."""
    if isinstance(model, str | os.PathLike):
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"model={str(model)!r}: no checkpoint file there")
        return ModelRef(default_cls, str(path), _sha256(path), device)
    if not hasattr(model, "save") or not hasattr(type(model), "load"):
        raise TypeError(
            f"model must be a {default_cls.__name__}, a checkpoint path or None, "
            f"not {type(model).__name__}"
        )
    digest = _content_hash(model)
    folder = _model_folder()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{digest}.safetensors"
    if target.is_file():
        os.utime(target)  # recently used: kept by the pruning below
    else:
        tmp = folder / f".{uuid.uuid4().hex}.safetensors"
        try:
            model.save(tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        _prune_models(folder, keep=target)
    return ModelRef(type(model), str(target), digest, device)


#: Model files of in-memory models kept in the temporary folder whatever their age ...
KEEP_MODEL_FILES = 8
#: ... and, beyond those, files used within this many seconds (running jobs may still read them).
KEEP_MODEL_SECONDS = 3600.0


def _model_folder() -> Path:
    return Path(tempfile.gettempdir()) / "eo_contrast_models"


def _prune_models(folder: Path, *, keep: Path) -> list[Path]:
    """Delete the temporary model files that are neither recent nor among the newest.

    Each embedding or segmentation of a new in-memory model (a training loop calling ``embed``
    on its model every epoch, say) writes one file; without pruning they pile up. Kept: ``keep``,
    the :data:`KEEP_MODEL_FILES` most recently used files, and any file used within
    :data:`KEEP_MODEL_SECONDS`. Returns the files deleted.
    """
    import time

    files = []
    for path in folder.glob("*.safetensors"):
        try:
            files.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # pruned by another process meanwhile
            continue
    files.sort(reverse=True)
    now = time.time()
    deleted = []
    for rank, (mtime, path) in enumerate(files):
        if path == keep or rank < KEEP_MODEL_FILES or now - mtime < KEEP_MODEL_SECONDS:
            continue
        try:
            path.unlink()
            deleted.append(path)
        except OSError:
            continue
    return deleted


def _get_model(ref: ModelRef) -> tuple[Any, threading.Lock, torch.device]:
    """The cached model of ``ref`` in this process, loading it on first use."""
    from eo_contrast.models.device import resolve_device

    dev = resolve_device(ref.device)
    key = (ref.sha256, str(dev))
    hit = _CACHE.get(key)
    if hit is None:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is None:
                # this process is about to run a model: make its buffers cheap to allocate
                tune_allocator()
                loader: Any = ref.cls
                model = loader.load(ref.path)
                model = model.to(dev).eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                hit = (model, threading.Lock())
                _CACHE[key] = hit
                _LOADS[ref.sha256] += 1
    return hit[0], hit[1], dev


def _load_counts() -> dict[str, int]:
    """How many times this process loaded each model (by checkpoint hash)."""
    return dict(_LOADS)


def _clear_cache() -> None:
    """Forget every cached model of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _LOADS.clear()


# ----------------------------------------------------------------------------- Dask resources

#: Dask resource a model task holds on a worker that declares it (``dask worker --resources GPU=1``)
GPU_RESOURCE = "GPU"


def _task_resources(device: str) -> dict[str, float] | None:
    """Dask resources each model task should request: ``{"GPU": 1}`` or ``None``.

    ``{"GPU": 1}`` when the tasks may run on a GPU (``device`` is ``"auto"`` or ``"cuda..."``,
    resolved where the task runs) and the current distributed client's workers declare a
    ``GPU`` resource: the scheduler then runs at most one model task per declared GPU, on
    workers that have one. ``None`` without a distributed client, without workers declaring
    ``GPU``, for other devices, or when the caller already set resources with
    ``dask.annotate(resources=...)`` (those apply as they are).
    """
    import sys

    import dask

    if "resources" in dask.get_annotations():
        return None
    name = str(device).strip().lower()
    if name != "auto" and not name.startswith("cuda"):
        return None
    if "distributed" not in sys.modules:  # no client can exist without it
        return None
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:  # no client
        return None
    if getattr(client, "asynchronous", False):
        return None  # an asynchronous client has no synchronous view of its workers
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except (OSError, TimeoutError):
        return None
    if any((w.get("resources") or {}).get(GPU_RESOURCE) for w in workers.values()):
        return {GPU_RESOURCE: 1}
    return None


def _annotated(device: str) -> Any:
    """``dask.annotate(resources=...)`` for the model tasks' layer, or a null context."""
    import contextlib

    import dask

    resources = _task_resources(device)
    return dask.annotate(resources=resources) if resources else contextlib.nullcontext()


# ----------------------------------------------------------------------------- input checks


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_device(device: Any) -> str:
    from eo_contrast.models.device import resolve_device

    resolve_device(device)  # fail early on a bad name or a missing accelerator
    return device if isinstance(device, str) else str(device)


def _units_of(arr: xr.DataArray, band_dim: str) -> dict[str, str]:
    """Units per band of ``arr``: a coordinate along ``band_dim`` ending in 'units', or defaults."""
    names = [str(b) for b in arr[band_dim].values]
    for cname, coord in arr.coords.items():
        if coord.dims == (band_dim,) and str(cname).endswith("units"):
            return dict(zip(names, (str(u) for u in coord.values), strict=True))
    tmp = xr.DataArray(np.zeros(len(names)), dims=("band",), coords={"band": names})
    return band_units(tmp)


def _select_bands(
    arr: xr.DataArray,
    band_dim: str,
    sensor: str,
    want: Sequence[str],
    unit: str,
    name: str,
) -> xr.DataArray:
    """``arr`` with the bands ``want`` in that order along ``band``, units checked."""
    arr = arr.assign_coords({band_dim: canonical_band_names(arr[band_dim].values)})
    units = _units_of(arr, band_dim)
    wrong = {b: units[b] for b in want if units.get(b) != unit}
    if wrong:
        hint = (
            "convert linear backscatter with eo_contrast.linear_to_db"
            if sensor == "s1"
            else "scale reflectance to 0..1"
        )
        raise ValueError(
            f"{name} bands {sorted(wrong)} are in {sorted(set(wrong.values()))} but the model's "
            f"{sensor} encoder expects {unit!r}; {hint}"
        )
    have = [str(b) for b in arr[band_dim].values]
    pos = [have.index(b) for b in want]
    if pos == list(range(pos[0], pos[0] + len(pos))):
        # the bands in order already: a slice (or nothing) keeps the graph blockwise, so Dask
        # fuses reading, the model and writing a chunk into one task; a list index would not
        out = arr if len(pos) == len(have) else arr.isel({band_dim: slice(pos[0], pos[-1] + 1)})
    else:
        out = arr.sel({band_dim: list(want)})
    if band_dim != "band":
        out = out.rename({band_dim: "band"})
    return out


def _match_encoder(cube: xr.DataArray, bands: dict[str, list[str]], name: str) -> str:
    have = {str(b) for b in cube["band"].values}
    for sensor, names in bands.items():
        if set(names) <= have:
            return sensor
    listing = "; ".join(f"{s} encoder: {names}" for s, names in bands.items())
    raise ValueError(
        f"{name} bands {[str(b) for b in cube['band'].values]} match none of the model's "
        f"encoders ({listing}); give a cube with all the bands of one encoder (band names are "
        "matched after canonicalisation, e.g. 'B4' -> 'B04')"
    )


def _spatial_chunks(size: int, chunks: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """Chunks along one spatial dim whose interior boundaries fall on multiples of ``multiple``.

    Kept as they are when that already holds; otherwise regular chunks of the first chunk's
    size rounded to the nearest multiple (at least one ``multiple``).
    """
    if all(c % multiple == 0 for c in chunks[:-1]):
        return chunks
    step = max(multiple, round(chunks[0] / multiple) * multiple)
    n_full, rest = divmod(size, step)
    return (step,) * n_full + ((rest,) if rest else ())


def _min_last_chunk(chunks: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Merge chunks smaller than ``minimum`` into a neighbour (Dask halos need depth <= chunk)."""
    out = list(chunks)
    i = 0
    while len(out) > 1 and i < len(out):
        if out[i] < minimum:
            j = i - 1 if i > 0 else i + 1
            out[min(i, j)] = out[i] + out[j]
            del out[max(i, j)]
            i = 0
        else:
            i += 1
    return tuple(out)


def _as_dask(arr: xr.DataArray) -> da.Array:
    data = arr.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=tuple(arr.shape))
    return data


def _finish(
    out: xr.DataArray, template: xr.DataArray | xr.Dataset, transform: Any | None = None
) -> xr.DataArray:
    """Carry the CRS of ``template`` over to ``out`` (and a new transform when given)."""
    crs = template.rio.crs
    if "spatial_ref" in out.coords:
        out = out.drop_vars("spatial_ref")
    if crs is not None:
        out = out.rio.write_crs(crs)
        if transform is not None:
            out = out.rio.write_transform(transform)
    return out


# ----------------------------------------------------------------------------- forward passes


_THREAD = threading.local()


def _cpu_threads_per_task() -> int:
    """Torch threads for one task on the CPU: the cores shared among the tasks running at once.

    In the main thread (Dask's synchronous scheduler, or a plain call) a task has the whole
    machine; in a Dask distributed worker, one per worker thread; in a pool
    thread of Dask's threaded scheduler, ``cores // num_workers`` (Dask's ``num_workers``
    setting, the number of cores by default).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    if threading.current_thread() is threading.main_thread():
        return cores
    try:
        from distributed import get_worker

        get_worker()
        # a worker's threads are its CPU budget (its nanny also sets OMP_NUM_THREADS=1)
        return 1
    except (ImportError, ValueError):
        pass
    import dask

    concurrent = dask.config.get("num_workers", None) or cores
    return max(1, cores // int(concurrent))


def _forward_batches(
    ref: ModelRef,
    tiles: np.ndarray,
    batch_size: int,
    run: Any,
) -> list[np.ndarray]:
    """Run ``run(model, tiles[i:j], device)`` over batches; a list of numpy outputs.

    On an accelerator, the process's tasks take turns on the device (one lock per model). On
    the CPU, every task thread runs its own stream of forward passes with its share of the
    cores (:func:`_cpu_threads_per_task`; the main thread keeps the caller's
    ``torch.set_num_threads``), without a lock: a model in eval mode under
    ``torch.inference_mode`` is read-only. Independent single-threaded streams keep all cores
    busy with no synchronisation between them, and reading and cutting the next chunk overlaps
    with the encoder of another; one stream spread over all cores waits at the barriers of
    every layer instead (and degrades badly when the machine is shared).
    """
    import contextlib

    import torch

    model, lock, dev = _get_model(ref)
    guard: Any = lock
    if dev.type == "cpu":
        guard = contextlib.nullcontext()
        # the main thread keeps the caller's torch settings; a pool thread takes its share
        if threading.current_thread() is not threading.main_thread():
            threads = _cpu_threads_per_task()
            if getattr(_THREAD, "torch_threads", None) != threads:
                # under OpenMP this sets the team size of the calling thread only
                torch.set_num_threads(threads)
                _THREAD.torch_threads = threads
    outs: list[np.ndarray] = []
    with guard, torch.inference_mode():
        for start in range(0, tiles.shape[0], batch_size):
            y = run(model, tiles[start : start + batch_size], dev)
            outs.append(y.float().cpu().numpy())
    return outs


def _tiles_of(arr: np.ndarray, tile: int, halo: int) -> tuple[np.ndarray, int, int]:
    """Windows ``(T*ny*nx, C, tile+2*halo, tile+2*halo)`` at stride ``tile`` of ``arr``.

    ``arr`` is ``(T, C, ny*tile + 2*halo, nx*tile + 2*halo)``. The result is always a new,
    writable buffer, never a view of ``arr``.
    """
    t, c, yy, xx = arr.shape
    ny, nx = (yy - 2 * halo) // tile, (xx - 2 * halo) // tile
    if halo == 0:
        import torch

        # torch's multi-threaded copy does this transpose about 2-3x faster than numpy's
        src = torch.from_numpy(np.ascontiguousarray(arr))
        # always a new buffer (never a view of the input block): tiles are normalised in place
        moved = src.reshape(t, c, ny, tile, nx, tile).permute(0, 2, 4, 1, 3, 5)
        moved = moved.clone(memory_format=torch.contiguous_format)
        return moved.numpy().reshape(t * ny * nx, c, tile, tile), ny, nx
    else:
        w = tile + 2 * halo
        view = np.lib.stride_tricks.sliding_window_view(arr, (w, w), axis=(2, 3))
        tiles = view[:, :, ::tile, ::tile][:, :, :ny, :nx].transpose(0, 2, 3, 1, 4, 5)
    side = tile + 2 * halo
    return np.array(tiles, dtype=np.float32, order="C").reshape(t * ny * nx, c, side, side), ny, nx


def _embed_block(
    block: np.ndarray,
    *,
    ref: ModelRef,
    sensor: str,
    level: str,
    tile: int,
    halo: int,
    batch_size: int,
    dim: int,
    out_dtype: str,
    has_time: bool,
    cube_name: str = "cube",
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    arr = block if has_time else block[None]
    arr = np.asarray(arr, dtype=np.float32)
    nt = arr.shape[0]
    core_y, core_x = arr.shape[2] - 2 * halo, arr.shape[3] - 2 * halo
    if level == "pixel":
        # only the last chunk of a dim can be shorter than a multiple of the tile; what lies
        # beyond it (halo included) is outside the cube, i.e. NaN
        py, px = (-core_y) % tile, (-core_x) % tile
        if py or px:
            arr = np.pad(arr, ((0, 0), (0, 0), (0, py), (0, px)), constant_values=np.nan)
    if level == "pixel":
        # pixels with no data in any band stay NaN in the output (before tiles are normalised)
        inner = arr[:, :, halo : halo + core_y, halo : halo + core_x]
        nodata = np.isnan(inner).all(axis=1)
    tiles, ny, nx = _tiles_of(arr, tile, halo)
    n = tiles.shape[0]
    # one reduction and no mask in the usual case of a chunk without NaN
    has_nan = bool(np.isnan(arr.min()))
    valid = ~np.isnan(tiles).all(axis=(1, 2, 3)) if has_nan else np.ones(n, dtype=bool)
    if level == "tile":
        out = np.full((n, dim), np.nan, dtype=np.float32)
    else:
        out = np.full((n, dim, tile, tile), np.nan, dtype=np.float32)
    if valid.any():
        # the values must fit the encoder's units (cheap: a strided sample of the chunk's core)
        loaded = _get_model(ref)[0]
        unit = getattr(loaded, "units", {}).get(sensor)
        if unit is not None:
            dims = ("time", "band", "y", "x") if has_time else ("band", "y", "x")
            names = list(getattr(loaded, "bands", {}).get(sensor, ()))
            check_values(
                arr[:, :, halo : halo + core_y, halo : halo + core_x],
                sensor,
                dict.fromkeys(names, unit) if len(names) == arr.shape[1] else unit,
                name=cube_name,
                where=block_location(
                    block_info, dims, depth={len(dims) - 2: halo, len(dims) - 1: halo}
                ),
            )
        todo = tiles[valid] if not valid.all() else tiles

        def run(model: Any, x: np.ndarray, dev: Any) -> Any:
            # x is a batch of this task's own tile buffer: standardise it in place
            xt = model.normalize(sensor, x, device=dev, copy=False)
            if level == "tile":
                return model.encoder(sensor)(xt)
            feats = model.features(sensor, xt)
            size = xt.shape[-2:]
            maps = [
                F.interpolate(feats[i], size=size, mode="bilinear", align_corners=False)
                for i in PIXEL_LEVELS
            ]
            dense = maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)
            if halo:
                dense = dense[..., halo : halo + tile, halo : halo + tile]
            return dense

        res = np.concatenate(_forward_batches(ref, todo, batch_size, run), axis=0)
        if valid.all():
            out = res
        else:
            out[valid] = res
    if level == "tile":
        result = out.reshape(nt, ny, nx, dim).transpose(0, 3, 1, 2)
    else:
        result = (
            out.reshape(nt, ny, nx, dim, tile, tile)
            .transpose(0, 3, 1, 4, 2, 5)
            .reshape(nt, dim, ny * tile, nx * tile)[:, :, :core_y, :core_x]
        )
        if nodata.any():
            result = np.where(nodata[:, None], np.float32(np.nan), result)
    result = result.astype(out_dtype, copy=False)
    return result if has_time else result[0]


# ----------------------------------------------------------------------------- embed


#: ``(model, bands, units, feature_dim, probe)``, as :func:`_resolve_model` gives them.
_Resolved = tuple[Any, dict[str, list[str]], dict[str, str], int, Any]


def _resolve_model(model: Any, level: str) -> _Resolved:
    """``(model, bands, units, feature_dim, probe)`` of a DualEncoder, a checkpoint path or None.

    ``probe`` is a :class:`DualEncoder` to read the encoders' pyramid channels from (``None``
    for a checkpoint path at ``level="tile"``, whose metadata records its feature size).
    """
    from eo_contrast.models import DualEncoder

    if model is None:
        from eo_contrast.models.dual import DEFAULT_WEIGHTS

        model = DEFAULT_WEIGHTS
    if isinstance(model, str | os.PathLike):
        from eo_contrast.models.checkpoint import read_metadata

        meta = read_metadata(model)
        probe = DualEncoder.from_metadata(meta) if level == "pixel" else None
        bands = {s: list(b) for s, b in meta["bands"].items()}
        units = dict(meta["units"])
        feature_dim = int(meta["architecture"].get("feature_dim", 0))
        if probe is not None or not feature_dim:
            probe = probe or DualEncoder.from_metadata(meta)
            feature_dim = probe.feature_dim
    elif isinstance(model, DualEncoder):
        probe = model
        bands, units, feature_dim = model.bands, model.units, model.feature_dim
    else:
        raise TypeError(
            f"model must be a DualEncoder, a checkpoint path or None, not {type(model).__name__}"
        )
    return model, bands, units, feature_dim, probe


def _check_tile_fits(cube: xr.DataArray | xr.Dataset, tile: int) -> None:
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    if tile > ny or tile > nx:
        raise ValueError(
            f"tile={tile} is larger than the cube ({ny} x {nx} pixels); use a smaller tile"
        )


def _embed_cube(
    da_cube: xr.DataArray,
    resolved: _Resolved,
    *,
    sensor: str | None,
    name: str,
    level: str,
    tile: int,
    overlap: int,
    batch_size: int,
    device: str,
    dtype: str,
) -> xr.DataArray:
    """:func:`embed` of a canonical cube, arguments checked; ``sensor=None`` matches by bands."""
    from eo_contrast.models import DualEncoder

    model, bands, units, feature_dim, probe = resolved
    da_cube = guard_reads(da_cube)  # a chunk that cannot be read names its store and chunk
    ny, nx = da_cube.sizes["y"], da_cube.sizes["x"]
    sensor = _match_encoder(da_cube, bands if sensor is None else {sensor: bands[sensor]}, name)
    sel = _select_bands(da_cube, "band", sensor, bands[sensor], units[sensor], name)
    if level == "pixel":
        assert probe is not None
        chans = probe.encoder(sensor).feature_channels
        dim = int(sum(chans[i] for i in PIXEL_LEVELS))
    else:
        dim = feature_dim

    if level == "tile":
        sel = sel.isel(y=slice(0, (ny // tile) * tile), x=slice(0, (nx // tile) * tile))
    data = _as_dask(sel)
    has_time = "time" in sel.dims
    ax_y = sel.dims.index("y")
    chunks = list(data.chunks)
    chunks[ax_y - 1] = (data.shape[ax_y - 1],)  # all bands in one chunk
    for ax in (ax_y, ax_y + 1):
        chunks[ax] = _spatial_chunks(data.shape[ax], data.chunks[ax], tile)
        if overlap:
            chunks[ax] = _min_last_chunk(chunks[ax], overlap)
    if tuple(chunks) != data.chunks:
        data = data.rechunk(tuple(chunks))
    if overlap:
        depth = {ax_y: overlap, ax_y + 1: overlap}
        data = da.overlap.overlap(
            data, depth=depth, boundary={ax_y: np.nan, ax_y + 1: np.nan}, allow_rechunk=False
        )
    ref = _model_ref(model, device, DualEncoder)
    if level == "tile":
        out_space = tuple(tuple(c // tile for c in chunks[ax]) for ax in (ax_y, ax_y + 1))
    else:
        out_space = (tuple(chunks[ax_y]), tuple(chunks[ax_y + 1]))
    out_chunks = (*(tuple(chunks[:1]) if has_time else ()), (dim,), *out_space)
    with _annotated(device):
        out = da.map_blocks(
            _embed_block,
            data,
            ref=ref,
            sensor=sensor,
            level=level,
            tile=tile,
            halo=overlap,
            batch_size=batch_size,
            dim=dim,
            out_dtype=str(dtype),
            has_time=has_time,
            cube_name=name,
            chunks=out_chunks,
            dtype=np.dtype(str(dtype)),
            # the key names the model and the input: two embeddings in one graph never collide
            name=f"embed-{level}-{ref.sha256[:12]}-"
            + tokenize(data.name, ref, sensor, level, tile, overlap, batch_size, dim, str(dtype)),
            meta=np.empty((0,) * len(out_chunks), dtype=str(dtype)),
        )
    coords: dict[Hashable, Any] = {"feature": np.arange(dim)}
    if has_time:
        coords["time"] = sel["time"].values
    transform = None
    if level == "tile":
        nty, ntx = sel.sizes["y"] // tile, sel.sizes["x"] // tile
        for d, n in (("y", nty), ("x", ntx)):
            c = np.asarray(sel[d].values, dtype=np.float64)
            coords[d] = c.reshape(n, tile).mean(axis=1)
        if da_cube.rio.crs is not None:
            transform = da_cube.rio.transform() * da_cube.rio.transform().scale(tile, tile)
    else:
        coords["y"], coords["x"] = sel["y"].values, sel["x"].values
    dims = (*(("time",) if has_time else ()), "feature", "y", "x")
    result = xr.DataArray(out, dims=dims, coords=coords, name=f"embedding_{sensor}")
    result.attrs.update(
        {"sensor": sensor, "level": level, "tile": tile, "overlap": overlap, "model": ref.sha256}
    )
    return _finish(result, da_cube, transform)


#: Variables of a pairs Dataset (:func:`eo_contrast.pair`) that :func:`embed` embeds.
PAIR_SENSORS: tuple[str, ...] = ("s1", "s2")
_LEAD_DIMS = ("pair", "time")


def _is_pairs(obj: Any) -> bool:
    """Whether ``obj`` is a pairs Dataset: variable ``"s1"`` and/or ``"s2"``, not band variables."""
    return isinstance(obj, xr.Dataset) and any(s in obj.data_vars for s in PAIR_SENSORS)


def _pair_var_cube(pairs: xr.Dataset, sensor: str) -> tuple[xr.DataArray, str | None]:
    """``pairs[sensor]`` as a canonical cube ``(time, band, y, x)``, and its leading dim's name.

    The band dim (``s1_band``, or any one dim besides the leading one and ``y``/``x``) becomes
    ``band`` and the coordinate along it whose name ends in ``units`` becomes ``units``; a
    leading ``pair`` dim becomes ``time``. Only the index coordinates, ``units`` and
    ``spatial_ref`` are kept: the leading dim's other coordinates are put back on the result.
    """
    var = pairs[sensor]
    name = f"pairs[{sensor!r}]"
    rest = [d for d in var.dims if d not in _SPATIAL]
    lead = [d for d in rest if d in _LEAD_DIMS]
    band = [d for d in rest if d not in _LEAD_DIMS]
    if len(band) != 1 or len(lead) > 1 or any(d not in var.dims for d in _SPATIAL):
        raise ValueError(
            f"{name} has dims {tuple(var.dims)}; expected (pair, {sensor}_band, y, x) as "
            "ec.pair makes (the pair dim optional, or named time)"
        )
    bd = str(band[0])
    units = [
        c for c, coord in var.coords.items() if coord.dims == (bd,) and str(c).endswith("units")
    ]
    keep = {*var.dims, "spatial_ref", *units[:1]}
    cube = var.drop_vars([c for c in var.coords if c not in keep])
    renames: dict[Hashable, Hashable] = {bd: "band"}
    if units and units[0] != "units":
        renames[units[0]] = "units"
    cube = cube.rename(renames)
    lead_dim = str(lead[0]) if lead else None
    if lead_dim == "pair":
        cube = cube.rename({"pair": "time"})
    if cube.rio.crs is None and pairs.rio.crs is not None:
        cube = cube.rio.write_crs(pairs.rio.crs)
    cube = as_cube(cube, name=name)
    return cube, lead_dim


def _embed_pairs(
    pairs: xr.Dataset,
    model: Any,
    *,
    level: str,
    tile: int,
    overlap: int,
    batch_size: int,
    device: str,
    dtype: str,
) -> xr.Dataset:
    """:func:`embed` of a pairs Dataset: each sensor's variable by that sensor's encoder."""
    present = [s for s in PAIR_SENSORS if s in pairs.data_vars]
    cubes = {s: _pair_var_cube(pairs, s) for s in present}
    for cube, _ in cubes.values():
        _check_tile_fits(cube, tile)
    resolved = _resolve_model(model, level)
    bands = resolved[1]
    usable = [s for s in present if s in bands]
    for s in present:
        if s not in bands:
            hint = f"select the variables it can embed (pairs[{usable!r}]), or " if usable else ""
            raise ValueError(
                f"the Dataset has variable {s!r} but the model has no {s} encoder (its sensors: "
                f"{sorted(bands)}); {hint}use a model with a {s} encoder"
            )
    out: dict[str, xr.DataArray] = {}
    for s, (cube, lead_dim) in cubes.items():
        emb = _embed_cube(
            cube,
            resolved,
            sensor=s,
            name=f"pairs[{s!r}]",
            level=level,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
        )
        var = pairs[s]
        if lead_dim == "pair":
            emb = emb.rename({"time": "pair"})
            if "pair" not in var.coords:
                emb = emb.drop_vars("pair")
        # the pair coordinates (s1_time, s2_time, dt), along the leading dim or scalar
        along = () if lead_dim is None else (lead_dim,)
        emb = emb.assign_coords(
            {
                c: coord
                for c, coord in var.coords.items()
                if c != "spatial_ref" and (coord.dims == along or coord.dims == ())
            }
        )
        out[s] = emb.rename(s)
    sizes = {emb.sizes["feature"] for emb in out.values()}
    if len(sizes) > 1:
        out = {s: emb.rename({"feature": f"{s}_feature"}) for s, emb in out.items()}
    first = next(iter(out.values()))
    attrs = {k: first.attrs[k] for k in ("level", "tile", "overlap", "model")}
    return xr.Dataset(out, attrs=attrs)


@overload
def embed(
    cube: xr.DataArray,
    model: Any = ...,
    *,
    level: str = ...,
    tile: int = ...,
    overlap: int = ...,
    batch_size: int = ...,
    device: str = ...,
    dtype: str = ...,
) -> xr.DataArray: ...


@overload
def embed(
    cube: xr.Dataset,
    model: Any = ...,
    *,
    level: str = ...,
    tile: int = ...,
    overlap: int = ...,
    batch_size: int = ...,
    device: str = ...,
    dtype: str = ...,
) -> xr.DataArray | xr.Dataset: ...


def embed(
    cube: xr.DataArray | xr.Dataset,
    model: Any = None,
    *,
    level: str = "tile",
    tile: int = 64,
    overlap: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "float32",
) -> xr.DataArray | xr.Dataset:
    """Embed a cube lazily with one of a model's encoders, chunk by chunk.

    The encoder is the one whose band names (``model.bands[sensor]``) are all in the cube;
    the cube's bands are selected and reordered by name to the encoder's order, and their units
    (:func:`eo_contrast.band_units`) must equal ``model.units[sensor]``. A pairs Dataset is
    embedded variable by variable, ``"s1"`` by the S1 encoder and ``"s2"`` by the S2 encoder.

    Parameters
    ----------
    cube
        One of three forms:

        * a single-sensor cube ``(time, band, y, x)`` (time optional), physical units, NaN
          nodata; NumPy-backed cubes are wrapped as one Dask chunk;
        * a Dataset with one variable per band (odc-stac's form, e.g. ``vv``/``vh`` or
          ``B04``/``B08``), converted with :func:`eo_contrast.as_cube`: the result is the same
          as for its ``to_array("band")``;
        * a pairs Dataset as :func:`eo_contrast.pair` makes: variables ``"s1"`` and/or
          ``"s2"`` ``(pair, s1_band|s2_band, y, x)`` on one grid (the leading dim may be absent
          or named ``time``; units from a coordinate along the band dim whose name ends in
          ``units``). Other variables are not embedded.
    model
        A :class:`~eo_contrast.DualEncoder`, the path of a checkpoint written by
        ``DualEncoder.save``, or ``None`` for :meth:`DualEncoder.default`. For a pairs Dataset
        it needs an encoder for each of the sensors present.
    level
        ``"tile"``: one vector per ``tile`` x ``tile`` window (the encoder's pooled output,
        ``model.feature_dim`` values, before the projection head), on a coarser grid whose pixel
        ``(i, j)`` is tile ``(i, j)``: coordinates at tile centres, transform = the input's scaled
        by ``tile``. Pixels beyond the last whole tile (bottom and right strips narrower than a
        tile) are not embedded.
        ``"pixel"``: dense features on the input grid: the encoder pyramid levels
        :data:`PIXEL_LEVELS` of each tile, upsampled bilinearly to the tile and concatenated
        (``feature_channels[1] + feature_channels[2]`` values); NaN where every band is NaN.
    tile
        Tile size in pixels. Spatial chunks are rechunked, when needed, so that chunk boundaries
        fall on multiples of ``tile`` (regular chunks of the first chunk's size rounded to the
        nearest multiple).
    overlap
        Context in pixels added on each side of every tile (a Dask halo between chunks, NaN
        beyond the cube's edge); ``0 <= overlap <= tile``. Tiles stay on the same ``tile`` grid;
        with ``level="pixel"`` only each tile's centre ``tile`` x ``tile`` is kept.
    batch_size
        Tiles per forward pass; all tiles of a chunk are batched together.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (resolved where the chunk is computed). With
        ``"auto"`` or ``"cuda..."`` on a Dask cluster whose workers declare a ``GPU`` resource,
        each model task requests ``resources={"GPU": 1}``.
    dtype
        ``"float32"`` or ``"float16"``.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        For a cube or a Dataset of bands: a lazy DataArray, dims ``(time, feature, y, x)`` (no
        ``time`` when the cube has none), coordinate ``feature`` = ``0..D-1``, CRS of the cube
        in ``spatial_ref``. One output chunk per input chunk.

        For a pairs Dataset: a lazy Dataset with the variables ``"s1"`` and/or ``"s2"`` of the
        input, each ``(pair, feature, y, x)`` and equal to :func:`embed` of that variable as a
        cube; both on one grid (the tile grid, or the input grid at ``level="pixel"``), with
        the coordinates along ``pair`` (``s1_time``, ``s2_time``, ``dt``) and the CRS of the
        input. The feature dim is ``feature`` when both variables have the same number of
        features; otherwise (encoders of different widths) ``s1_feature`` and
        ``s2_feature``. Attributes ``level``, ``tile``, ``overlap`` and ``model``.

    Notes
    -----
    NaN handling: a tile whose pixels are all NaN gives a NaN vector (and is not computed); in a
    partly-NaN tile NaN pixels are normalised to the band mean (:meth:`DualEncoder.normalize`).
    An all-NaN chunk gives NaN output.

    Raises
    ------
    ValueError
        For a bad ``level``, ``tile``, ``overlap``, ``batch_size`` or ``dtype``, a tile larger
        than the cube, bands matching neither encoder (both are listed), wrong units, or a
        pairs variable whose sensor the model has no encoder for (the model's sensors are
        listed).

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> from eo_contrast.models import DualEncoder
    >>> model = DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0)
    >>> cube = xr.DataArray(
    ...     np.full((2, 32, 48), -15.0, dtype="float32"), dims=("band", "y", "x"),
    ...     coords={"band": ["vh", "vv"], "y": 100.0 - 10 * np.arange(32), "x": 10.0 * np.arange(48)},
    ... ).rio.write_crs("EPSG:32630")
    >>> emb = embed(cube, model, tile=16, device="cpu")
    >>> emb.dims, emb.shape, emb.x.values.tolist()
    (('feature', 'y', 'x'), (64, 2, 3), [75.0, 235.0, 395.0])
    >>> tuple(emb.rio.transform())[:6], emb.rio.crs.to_epsg()
    ((160.0, 0.0, -5.0, 0.0, -160.0, 105.0), 32630)
    >>> bool(np.isfinite(emb.compute()).all())
    True

    A pairs Dataset gives one variable per sensor, each from its own encoder:

    >>> import eo_contrast as ec
    >>> both = DualEncoder({"s1": ["vv", "vh"], "s2": ["B04", "B08"]}, width=8, seed=0)
    >>> def sensor_cube(bands, value):
    ...     data = np.full((2, len(bands), 32, 32), value, "float32")
    ...     return xr.DataArray(data, dims=("time", "band", "y", "x"), coords={
    ...         "time": pd.to_datetime(["2020-01-01", "2020-01-11"]), "band": bands,
    ...         "y": 315.0 - 10 * np.arange(32), "x": 5.0 + 10 * np.arange(32)},
    ...     ).rio.write_crs("EPSG:32631")
    >>> pairs = ec.pair(sensor_cube(["vv", "vh"], -12.0), sensor_cube(["B04", "B08"], 0.2))
    >>> out = embed(pairs, both, tile=16, device="cpu")
    >>> list(out.data_vars), out.s1.dims, out.s2.shape
    (['s1', 's2'], ('pair', 'feature', 'y', 'x'), (2, 64, 2, 2))
    >>> sorted(c for c in out.coords if c not in out.dims)
    ['dt', 's1_time', 's2_time', 'spatial_ref']
    >>> embed(pairs[["s2"]], both, level="pixel", tile=16, device="cpu").s2.shape
    (2, 24, 32, 32)
    """
    if level not in _LEVELS:
        raise ValueError(f"level={level!r} is not one of {list(_LEVELS)}")
    tile = _positive_int("tile", tile)
    batch_size = _positive_int("batch_size", batch_size)
    if isinstance(overlap, bool) or not isinstance(overlap, int | np.integer) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}")
    overlap = int(overlap)
    if overlap > tile:
        raise ValueError(f"overlap={overlap} must not exceed tile={tile}")
    if str(dtype) not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {list(_DTYPES)}")
    device = _check_device(device)
    options: dict[str, Any] = {
        "level": level,
        "tile": tile,
        "overlap": overlap,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
    }
    if _is_pairs(cube):
        assert isinstance(cube, xr.Dataset)
        return _embed_pairs(cube, model, **options)
    da_cube = as_cube(cube)
    _check_tile_fits(da_cube, tile)
    return _embed_cube(da_cube, _resolve_model(model, level), sensor=None, name="cube", **options)


# ----------------------------------------------------------------------------- segment


def _window(tile: int) -> np.ndarray:
    """Separable raised-cosine (Hann) blending weights ``(tile, tile)`` with a floor > 0."""
    i = (np.arange(tile) + 0.5) / tile
    w1 = np.maximum(np.sin(np.pi * i) ** 2, WINDOW_FLOOR)
    return np.outer(w1, w1).astype(np.float32)


def _segment_block(
    block: np.ndarray,
    *,
    ref: ModelRef,
    splits: tuple[tuple[str, int], ...],
    tile: int,
    stride: int,
    halo: int,
    starts: tuple[tuple[int, ...], tuple[int, ...]],
    sizes: tuple[tuple[int, ...], tuple[int, ...]],
    num_classes: int,
    probabilities: bool,
    batch_size: int,
    has_lead: bool,
    dims: tuple[str, ...] = (),
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    import torch

    assert block_info is not None
    loc = block_info[None]["chunk-location"]
    iy, ix = loc[-2], loc[-1]
    arr = np.asarray(block if has_lead else block[None], dtype=np.float32)
    nt = arr.shape[0]
    cores = (sizes[0][iy], sizes[1][ix])
    c0 = (starts[0][iy], starts[1][ix])
    # tile origins k*stride (k >= 0) that overlap this chunk's core, as local offsets
    ranges = []
    for c, n in zip(c0, cores, strict=True):
        k0 = max(0, math.ceil((c - tile + 1) / stride))
        k1 = (c + n - 1) // stride
        ranges.append(np.arange(k0, k1 + 1) * stride - (c - halo))
    oy, ox = ranges
    inner = arr[:, :, halo : halo + cores[0], halo : halo + cores[1]]
    nodata = np.asarray(np.isnan(inner).all(axis=1))
    canvas = (nt, num_classes, cores[0] + 2 * halo, cores[1] + 2 * halo)
    acc = np.zeros(canvas, dtype=np.float32)
    wsum = np.zeros(canvas[-2:], dtype=np.float32)
    if not nodata.all():
        # the values must fit the model's units (cheap: a strided sample of the chunk's core)
        loaded = _get_model(ref)[0]
        model_units = getattr(loaded, "units", {})
        model_bands = getattr(loaded, "bands", {})
        depth = {len(dims) - 2: halo, len(dims) - 1: halo}
        start = 0
        for sensor, n in splits:
            if sensor in model_units:
                names = list(model_bands.get(sensor, ()))
                unit = model_units[sensor]
                # this sensor's bands are 0..n of its own variable
                info = {0: dict(block_info[0])}
                ranges = list(info[0]["array-location"])
                ranges[len(dims) - 3] = (0, n)
                info[0]["array-location"] = ranges
                check_values(
                    inner[:, start : start + n],
                    sensor,
                    dict.fromkeys(names, unit) if len(names) == n else unit,
                    name="cube" if len(splits) == 1 else f"cube[{sensor!r}]",
                    where=block_location(info, dims, depth=depth),
                )
            start += n
        w = tile
        view = np.lib.stride_tricks.sliding_window_view(arr, (w, w), axis=(2, 3))
        tiles = view[:, :, oy[0] :: stride, ox[0] :: stride][:, :, : len(oy), : len(ox)]
        tiles = np.ascontiguousarray(tiles.transpose(0, 2, 3, 1, 4, 5))
        tiles = tiles.reshape(nt * len(oy) * len(ox), arr.shape[1], w, w)
        valid = ~np.isnan(tiles).all(axis=(1, 2, 3))
        todo = tiles[valid]

        def run(model: Any, x: np.ndarray, dev: Any) -> Any:
            inputs = {}
            start = 0
            for sensor, n in splits:
                inputs[sensor] = model.normalize(sensor, x[:, start : start + n], device=dev)
                start += n
            return torch.softmax(model(inputs).float(), dim=1)

        probs = np.concatenate(_forward_batches(ref, todo, batch_size, run), axis=0)
        window = _window(tile)
        probs *= window
        idx = np.flatnonzero(valid)
        per_t = len(oy) * len(ox)
        for j, p in zip(idx, probs, strict=True):
            t, r = divmod(int(j), per_t)
            a, b = divmod(r, len(ox))
            ys, xs = int(oy[a]), int(ox[b])
            acc[t, :, ys : ys + tile, xs : xs + tile] += p
        # weights do not depend on time: accumulate them once
        for ys in oy:
            for xs in ox:
                wsum[ys : ys + tile, xs : xs + tile] += window
    acc = acc[:, :, halo : halo + cores[0], halo : halo + cores[1]]
    wsum = wsum[halo : halo + cores[0], halo : halo + cores[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = acc / np.where(wsum > 0, wsum, 1.0)
    if probabilities:
        out = np.where(nodata[:, None], np.float32(np.nan), prob).astype(np.float32)
    else:
        out = np.where(nodata, -1, prob.argmax(axis=1)).astype(np.int16)
    return out if has_lead else out[0]


def _segment_inputs(
    cube: xr.DataArray | xr.Dataset, seg: Any
) -> tuple[list[xr.DataArray], xr.DataArray]:
    """Per-sensor arrays ``(lead?, band, y, x)`` in the model's band order, and a template."""
    sensors = tuple(seg.sensors)
    bands = {s: list(b) for s, b in seg.bands.items()}
    units = dict(seg.units)
    if len(sensors) == 1 and not (isinstance(cube, xr.Dataset) and sensors[0] in cube):
        arr = as_cube(cube)
        sensor = _match_encoder(arr, {sensors[0]: bands[sensors[0]]}, "cube")
        return [_select_bands(arr, "band", sensor, bands[sensor], units[sensor], "cube")], arr
    if not isinstance(cube, xr.Dataset) or any(s not in cube for s in sensors):
        raise ValueError(
            f"this segmentation model uses sensors {list(sensors)}: pass a Dataset with "
            f"variable(s) {list(sensors)} on one grid (as ec.pair makes), not "
            f"{type(cube).__name__}"
            + (
                f" with variables {list(map(str, cube.data_vars))}"
                if isinstance(cube, xr.Dataset)
                else ""
            )
        )
    out = []
    for s in sensors:
        var = cube[s]
        band_dims = [d for d in var.dims if d not in ("y", "x", "time", "pair")]
        if len(band_dims) != 1 or "y" not in var.dims or "x" not in var.dims:
            raise ValueError(
                f"cube[{s!r}] has dims {tuple(var.dims)}; expected (time|pair, band, y, x)"
            )
        bd = band_dims[0]
        names = set(canonical_band_names(var[bd].values))
        missing = [b for b in bands[s] if b not in names]
        if missing:
            raise ValueError(
                f"cube[{s!r}] bands {sorted(names)} lack {missing} that the model's {s} "
                f"encoder needs ({bands[s]})"
            )
        sel = _select_bands(var, bd, s, bands[s], units[s], f"cube[{s!r}]")
        lead = [d for d in sel.dims if d not in ("band", "y", "x")]
        out.append(sel.transpose(*lead, "band", "y", "x"))
    leads = {tuple(a.dims[:-3]) for a in out}
    if len(leads) != 1:
        raise ValueError(f"the sensors' variables have different leading dims: {sorted(leads)}")
    return out, out[0]


def segment(
    cube: xr.DataArray | xr.Dataset,
    seg: Any,
    *,
    probabilities: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
) -> xr.DataArray:
    """Segment a cube lazily with a fitted segmentation model; overlapping tiles, blended.

    Tiles of ``tile`` pixels sit on one global grid with stride ``tile - overlap`` starting at
    the cube's top-left pixel (tiles at the bottom and right edges reach past the cube, which
    counts as nodata there). Each tile's class probabilities (softmax) are weighted by a
    separable raised-cosine window (with a small floor, so pixels at the cube's edges are
    covered too) and averaged where tiles overlap: no seams. Each chunk is computed with a halo
    of one tile from its neighbours, so the result does not depend on the chunking.

    Parameters
    ----------
    cube
        For a single-sensor model, a single-sensor cube ``(time, band, y, x)`` (time optional;
        a Dataset of bands, or a Dataset holding that sensor's variable, works too). For an
        S1+S2 model, a Dataset with variables ``"s1"`` and ``"s2"`` ``(time|pair, band, y, x)``
        on one grid, as :func:`eo_contrast.pair` makes (band dims ``s1_band``/``s2_band`` or
        any one non-spatial dim; units from a coordinate along it whose name ends in
        ``units``). Bands are selected and reordered by name; units are checked.
    seg
        A segmentation model: ``sensors``, ``bands``, ``units``, ``classes``, ``tile``,
        ``normalize(sensor, x)``, ``forward({sensor: tiles}) -> logits``, ``save(path)`` and
        ``load(path)``.
    probabilities
        ``False``: class ids (int16, -1 where every band of every sensor used is NaN);
        ``True``: class probabilities (float32, NaN there).
    tile
        Tile size (default ``seg.tile``).
    overlap
        Overlap of neighbouring tiles in pixels (default ``tile // 4``), ``0 <= overlap < tile``.
    batch_size
        Tiles per forward pass.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (resolved where the chunk is computed). With
        ``"auto"`` or ``"cuda..."`` on a Dask cluster whose workers declare a ``GPU`` resource,
        each model task requests ``resources={"GPU": 1}``.

    Returns
    -------
    xarray.DataArray
        Lazy ``(time, y, x)`` class ids or ``(time, class, y, x)`` probabilities on the input
        grid (the leading dim is the input's: ``time``, ``pair`` or none), coordinate
        ``class`` = ``seg.classes``, CRS carried over.

    Raises
    ------
    ValueError
        For bands the model cannot use, wrong units, a tile larger than the cube, or a bad
        ``tile``/``overlap``/``batch_size``.
    eo_contrast.UnitsError
        (a ``ValueError``, when a chunk is computed) When the values of a chunk plainly
        contradict the units (linear S1 backscatter, S2 digital numbers); the message names the
        chunk and the fix (see :func:`eo_contrast.check_values`).
    eo_contrast.ChunkReadError
        (an ``OSError``, when a chunk is computed) When a stored chunk of ``cube`` cannot be
        read or decoded: it names the store and the chunk (see :func:`eo_contrast.guard_reads`).
    """
    if not all(hasattr(seg, a) for a in ("sensors", "bands", "units", "classes", "normalize")):
        raise TypeError(
            f"seg must be a segmentation model (ec.fit_segmentation's result), "
            f"not {type(seg).__name__}"
        )
    tile = _positive_int("tile", seg.tile if tile is None else tile)
    overlap = tile // 4 if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int | np.integer) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}")
    if overlap >= tile:
        raise ValueError(f"overlap={overlap} must be smaller than tile={tile}")
    batch_size = _positive_int("batch_size", batch_size)
    device = _check_device(device)
    if not isinstance(probabilities, bool):
        raise TypeError(f"probabilities must be True or False, got {probabilities!r}")
    if isinstance(cube, xr.DataArray | xr.Dataset):
        cube = guard_reads(cube)  # a damaged stored chunk is named in the error
    arrays, template = _segment_inputs(cube, seg)
    ny, nx = template.sizes["y"], template.sizes["x"]
    if tile > ny or tile > nx:
        raise ValueError(
            f"tile={tile} is larger than the cube ({ny} x {nx} pixels); use a smaller tile"
        )
    stride = tile - int(overlap)
    halo = tile
    lead = list(template.dims[:-3])
    parts = [_as_dask(a) for a in arrays]
    data = parts[0] if len(parts) == 1 else da.concatenate(parts, axis=len(lead))
    ax_y = len(lead) + 1
    chunks = list(data.chunks)
    chunks[ax_y - 1] = (data.shape[ax_y - 1],)
    for ax in (ax_y, ax_y + 1):
        chunks[ax] = _min_last_chunk(data.chunks[ax], halo)
    if tuple(chunks) != data.chunks:
        data = data.rechunk(tuple(chunks))
    ext = da.overlap.overlap(
        data,
        depth={ax_y: halo, ax_y + 1: halo},
        boundary={ax_y: np.nan, ax_y + 1: np.nan},
        allow_rechunk=False,
    )
    starts = tuple(tuple(int(v) for v in np.cumsum((0, *c[:-1]))) for c in chunks[ax_y:])
    sizes = tuple(tuple(int(v) for v in c) for c in chunks[ax_y:])
    classes = [str(c) for c in seg.classes]
    k = len(classes)
    ref = _model_ref(seg, device, type(seg))
    splits = tuple((s, len(seg.bands[s])) for s in seg.sensors)
    lead_chunks = tuple(chunks[: len(lead)])
    out_space = (chunks[ax_y], chunks[ax_y + 1])
    kw: dict[str, Any] = {
        "ref": ref,
        "splits": splits,
        "tile": tile,
        "stride": stride,
        "halo": halo,
        "starts": starts,
        "sizes": sizes,
        "num_classes": k,
        "probabilities": probabilities,
        "batch_size": batch_size,
        "has_lead": bool(lead),
        "dims": (*map(str, lead), "band", "y", "x"),
    }
    token = tokenize(ext.name, probabilities, *kw.items())
    with _annotated(device):
        if probabilities:
            out = da.map_blocks(
                _segment_block,
                ext,
                chunks=(*lead_chunks, (k,), *out_space),
                dtype=np.float32,
                name=f"segment-prob-{ref.sha256[:12]}-{token}",
                meta=np.empty((0,) * (len(lead) + 3), dtype=np.float32),
                **kw,
            )
            dims = (*lead, "class", "y", "x")
        else:
            out = da.map_blocks(
                _segment_block,
                ext,
                chunks=(*lead_chunks, *out_space),
                drop_axis=len(lead),
                dtype=np.int16,
                name=f"segment-{ref.sha256[:12]}-{token}",
                meta=np.empty((0,) * (len(lead) + 2), dtype=np.int16),
                **kw,
            )
            dims = (*lead, "y", "x")
    coords: dict[Hashable, Any] = {d: template[d].values for d in (*lead, "y", "x")}
    for d in lead:  # keep per-time coordinates (e.g. s1_time, s2_time, dt along "pair")
        for cname, coord in template.coords.items():
            if coord.dims == (d,) and cname != d:
                coords[cname] = (d, coord.values)
    if probabilities:
        coords["class"] = classes
    result = xr.DataArray(
        out, dims=dims, coords=coords, name="probability" if probabilities else "class_id"
    )
    result.attrs.update({"tile": tile, "overlap": int(overlap), "model": ref.sha256})
    if not probabilities:
        result.attrs.update({"classes": classes, "nodata": -1})
    tmpl = cube if isinstance(cube, xr.Dataset) else template
    return _finish(result, tmpl)
