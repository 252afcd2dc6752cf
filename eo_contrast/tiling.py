"""Tile plans over Dask chunks, and a stream of training batches that reads each chunk once.

Vocabulary: a **tile** is the model's input window (``tile`` x ``tile`` pixels); a **chunk** is a
Dask block. Tiles never cross a chunk boundary, so every tile is cut from one chunk that has been
read into memory once.

- :func:`plan_tiles` lays tiles out inside the chunks of a grid (:class:`TilePlan`).
- :class:`TileStream` iterates over batches of tiles: chunk order shuffled with a seeded
  generator, the next chunks read in background threads while the caller (the device) works on
  the current batch, NaN-heavy tiles dropped, NaN filled and a validity mask passed along,
  per-band normalisation, a shuffle buffer, torch tensors out (pinned memory and non-blocking
  copies on CUDA).
- ``TileDataset`` wraps a stream as a :class:`torch.utils.data.IterableDataset` (created on first
  access, so that importing this module does not import torch).

Only threads are used. Worker *processes* started by ``fork`` after Dask has started its thread
pools can deadlock (a forked child inherits locks held by threads that do not exist in it); if you
use ``DataLoader(num_workers>0)`` give it ``multiprocessing_context="spawn"`` or
``"forkserver"``.

Examples
--------
>>> import numpy as np, xarray as xr
>>> cube = xr.DataArray(np.ones((2, 40, 40), "float32"), dims=("band", "y", "x"),
...                     coords={"band": ["vv", "vh"]}).chunk({"y": 20, "x": 20})
>>> plan_tiles(cube, 16).n_tiles
4
>>> batch = next(iter(TileStream(cube, tile=16, batch_size=4, output="numpy")))
>>> batch["s1"].shape, batch["valid"].shape, batch["index"].shape
((4, 2, 16, 16), (4, 16, 16), (4, 3))
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any, Literal

import dask.array as darray
import numpy as np
import xarray as xr
from dask.base import get_scheduler
from dask.optimization import cull

from eo_contrast.cube import S1_BANDS, S2_BANDS, as_cube, canonical_band_names, sensor_of

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TileDataset", "TilePlan", "TileStats", "TileStream", "plan_tiles"]  # noqa: F822

#: Keys of a batch that are not data variables.
_RESERVED = ("valid", "index")
#: Dims read as the lead dim (one image per index), in order of preference.
_LEAD_DIMS = ("pair", "chip", "time")
#: Default memory budget of the shuffle buffer when ``shuffle_buffer`` is not given.
_BUFFER_BYTES = 256 * 2**20


# --------------------------------------------------------------------------------------------
# Tile plans
# --------------------------------------------------------------------------------------------


def _renamed(old: str, new: str) -> None:
    import warnings

    warnings.warn(
        f"TilePlan.{old} is deprecated: use TilePlan.{new} (the project says chunk for a Dask "
        "chunk)",
        DeprecationWarning,
        stacklevel=3,
    )


@dataclass(frozen=True, eq=False)
class TilePlan:
    """Where tiles lie inside the chunks of a ``(y, x)`` grid; see :func:`plan_tiles`.

    Tile positions are separable: every tile of chunk ``(i, j)`` starts at a row in
    ``y_starts[i]`` and a column in ``x_starts[j]`` (absolute pixel offsets in the grid).

    Attributes
    ----------
    tile
        Tile size in pixels (tiles are square).
    overlap
        Pixels shared by neighbouring tiles; the stride is ``tile - overlap``.
    cover
        Whether every pixel is covered (a last tile aligned to each chunk's end).
    y_chunks, x_chunks
        Chunk sizes along ``y`` and ``x``.
    y_starts, x_starts
        For each chunk along ``y`` (``x``), the absolute start rows (columns) of its tiles.
    """

    tile: int
    overlap: int
    cover: bool
    y_chunks: tuple[int, ...]
    x_chunks: tuple[int, ...]
    y_starts: tuple[np.ndarray, ...] = field(repr=False)
    x_starts: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def stride(self) -> int:
        """Distance between the starts of neighbouring tiles: ``tile - overlap``."""
        return self.tile - self.overlap

    @property
    def shape(self) -> tuple[int, int]:
        """Grid size ``(ny, nx)`` in pixels."""
        return sum(self.y_chunks), sum(self.x_chunks)

    @property
    def nchunks(self) -> tuple[int, int]:
        """Number of chunks along ``y`` and ``x``."""
        return len(self.y_chunks), len(self.x_chunks)

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the whole grid."""
        return sum(len(a) for a in self.y_starts) * sum(len(a) for a in self.x_starts)

    @property
    def max_chunk_tiles(self) -> int:
        """Largest number of tiles in one chunk."""
        return max(len(a) for a in self.y_starts) * max(len(a) for a in self.x_starts)

    def chunk_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Pixel slices ``(y, x)`` of chunk ``(i, j)``."""
        y0 = sum(self.y_chunks[:i])
        x0 = sum(self.x_chunks[:j])
        return slice(y0, y0 + self.y_chunks[i]), slice(x0, x0 + self.x_chunks[j])

    def chunk_tiles(self, i: int, j: int) -> np.ndarray:
        """Absolute ``(y0, x0)`` offsets of the tiles of chunk ``(i, j)``, shape ``(n, 2)``."""
        yy, xx = np.meshgrid(self.y_starts[i], self.x_starts[j], indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.int64)

    def tiles(self) -> np.ndarray:
        """Absolute ``(y0, x0)`` offsets of all tiles, chunk by chunk (row-major), ``(n, 2)``."""
        parts = [
            self.chunk_tiles(i, j) for i in range(self.nchunks[0]) for j in range(self.nchunks[1])
        ]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, 2), np.int64)

    # The names of an earlier release, which said "block" for a Dask chunk.
    @property
    def nblocks(self) -> tuple[int, int]:
        """Deprecated name of :attr:`nchunks`."""
        _renamed("nblocks", "nchunks")
        return self.nchunks

    @property
    def max_block_tiles(self) -> int:
        """Deprecated name of :attr:`max_chunk_tiles`."""
        _renamed("max_block_tiles", "max_chunk_tiles")
        return self.max_chunk_tiles

    def block_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Deprecated name of :meth:`chunk_slices`."""
        _renamed("block_slices", "chunk_slices")
        return self.chunk_slices(i, j)

    def block_tiles(self, i: int, j: int) -> np.ndarray:
        """Deprecated name of :meth:`chunk_tiles`."""
        _renamed("block_tiles", "chunk_tiles")
        return self.chunk_tiles(i, j)

    def coverage(self) -> np.ndarray:
        """How many tiles cover each pixel: an ``int`` array of the grid's shape."""
        ny, nx = self.shape
        ycount = np.zeros(ny, np.int64)
        xcount = np.zeros(nx, np.int64)
        for starts in self.y_starts:
            for s in starts:
                ycount[s : s + self.tile] += 1
        for starts in self.x_starts:
            for s in starts:
                xcount[s : s + self.tile] += 1
        return np.outer(ycount, xcount)


def _as_chunk_tuple(value: int | Sequence[int], dim: str) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        sizes: tuple[int, ...] = (int(value),)
    else:
        sizes = tuple(int(v) for v in value)
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"chunks along {dim!r} must be positive sizes, got {value!r}")
    return sizes


def _yx_chunks(obj: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(y_chunks, x_chunks)`` of an xarray object, a mapping or a pair."""
    if isinstance(obj, (xr.DataArray, xr.Dataset)):
        for dim in ("y", "x"):
            if dim not in obj.dims:
                raise ValueError(
                    f"the object has dims {tuple(obj.dims)} but tiles need 'y' and 'x' dims"
                )
        chunks = obj.chunksizes
        y, x = (
            tuple(int(c) for c in chunks[d]) if d in chunks else (int(obj.sizes[d]),)
            for d in ("y", "x")
        )
        return y, x
    if isinstance(obj, Mapping):
        missing = [d for d in ("y", "x") if d not in obj]
        if missing:
            raise KeyError(f"chunks mapping needs 'y' and 'x' keys; missing {missing}")
        return _as_chunk_tuple(obj["y"], "y"), _as_chunk_tuple(obj["x"], "x")
    if isinstance(obj, Sequence) and len(obj) == 2:
        return _as_chunk_tuple(obj[0], "y"), _as_chunk_tuple(obj[1], "x")
    raise TypeError(
        "chunks must be an xarray object, a mapping {'y': ..., 'x': ...} or a pair (y, x) of "
        f"chunk sizes, not {type(obj).__name__}"
    )


def _merged_suggestion(chunks: tuple[int, ...], tile: int) -> tuple[int, ...]:
    """Merge chunks smaller than ``tile`` into their neighbour (for error messages)."""
    out: list[int] = []
    for c in chunks:
        if out and (c < tile or out[-1] < tile):
            out[-1] += c
        else:
            out.append(c)
    return tuple(out)


def _axis_starts(
    chunks: tuple[int, ...], tile: int, stride: int, cover: bool, dim: str
) -> tuple[np.ndarray, ...]:
    starts: list[np.ndarray] = []
    offset = 0
    for k, n in enumerate(chunks):
        if n < tile:
            if cover:
                raise ValueError(
                    f"chunk {k + 1} of {len(chunks)} along {dim!r} has {n} pixels, fewer than "
                    f"tile={tile}; with cover=True every chunk must hold a tile (tiles never "
                    f"cross chunk boundaries). Rechunk so that every chunk has >= {tile} pixels, "
                    f"e.g. obj.chunk({{{dim!r}: {_merged_suggestion(chunks, tile)}}})"
                )
            starts.append(np.zeros(0, np.int64))
        else:
            local = np.arange(0, n - tile + 1, stride, dtype=np.int64)
            if cover and local[-1] + tile < n:
                local = np.append(local, n - tile)
            starts.append(local + offset)
        offset += n
    return tuple(starts)


def plan_tiles(
    chunks: xr.DataArray | xr.Dataset | Mapping[str, Any] | Sequence[Any],
    tile: int,
    *,
    overlap: int = 0,
    cover: bool = False,
) -> TilePlan:
    """Lay ``tile`` x ``tile`` tiles out inside the chunks of a ``(y, x)`` grid.

    Tiles never cross a chunk boundary. Inside each chunk they start every ``tile - overlap``
    pixels from the chunk's first pixel. When a chunk's size is not a multiple of the stride,
    the remainder is either left out (``cover=False``, fine for training) or covered by one
    more tile aligned to the chunk's end (``cover=True``, needed to embed every pixel; that
    tile overlaps its neighbour by more than ``overlap``).

    Parameters
    ----------
    chunks
        Where the chunks are: an xarray object with ``y``/``x`` dims (its Dask chunks; one
        chunk when it is not Dask-backed), a mapping ``{"y": ..., "x": ...}`` or a pair
        ``(y, x)``, each an int (one chunk of that size) or a tuple of chunk sizes.
    tile
        Tile size in pixels.
    overlap
        Pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
    cover
        Cover every pixel (see above). Every chunk must then be at least ``tile`` pixels.

    Returns
    -------
    TilePlan

    Raises
    ------
    ValueError
        When the tile is larger than the grid, when no chunk (or, with ``cover=True``, not
        every chunk) can hold a tile (the message suggests a rechunking), or for a bad
        ``tile``/``overlap``.

    Examples
    --------
    >>> plan = plan_tiles({"y": (100, 100), "x": 100}, 32)
    >>> plan.n_tiles, [s.tolist() for s in plan.y_starts]
    (18, [[0, 32, 64], [100, 132, 164]])
    >>> [s.tolist() for s in plan_tiles({"y": 100, "x": 100}, 32, cover=True).y_starts]
    [[0, 32, 64, 68]]
    """
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)):
        raise ValueError(f"overlap must be an int number of pixels, got {overlap!r}")
    tile, overlap = int(tile), int(overlap)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile={tile}, got {overlap}")
    y_chunks, x_chunks = _yx_chunks(chunks)
    ny, nx = sum(y_chunks), sum(x_chunks)
    if tile > min(ny, nx):
        raise ValueError(
            f"tile={tile} is larger than the cube: it has y={ny} and x={nx} pixels; use "
            f"tile <= {min(ny, nx)}"
        )
    stride = tile - overlap
    y_starts = _axis_starts(y_chunks, tile, stride, cover, "y")
    x_starts = _axis_starts(x_chunks, tile, stride, cover, "x")
    for dim, cks, st in (("y", y_chunks, y_starts), ("x", x_chunks, x_starts)):
        if not any(len(s) for s in st):
            k = max(1, min(max(cks) // tile + 1, max(1, 512 // tile), sum(cks) // tile))
            raise ValueError(
                f"no chunk along {dim!r} holds a whole tile: its chunks {cks} are all smaller "
                f"than tile={tile}, and tiles never cross chunk boundaries. Rechunk to a "
                f"multiple of the tile, e.g. obj.chunk({{'y': {k * tile}, 'x': {k * tile}}})"
            )
    return TilePlan(tile, overlap, bool(cover), y_chunks, x_chunks, y_starts, x_starts)


# --------------------------------------------------------------------------------------------
# Inputs: sources, chunk grid
# --------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """One data variable, as a 4-D Dask array ``(lead, band, y, x)``."""

    name: str
    data: darray.Array
    has_lead: bool
    image: bool  # floating point data: NaN policy, normalisation, validity
    bands: list[str] | None


def _boundaries(chunks: tuple[int, ...]) -> set[int]:
    return set(np.cumsum((0, *chunks)).tolist())


def _common_chunks(options: list[tuple[int, ...]], size: int, default: int) -> tuple[int, ...]:
    """Coarsest chunking whose boundaries are boundaries of every option."""
    if not options:
        n = max(1, min(default, size))
        return tuple([n] * (size // n) + ([size % n] if size % n else []))
    common = set.intersection(*(_boundaries(o) for o in options))
    edges = sorted(common)
    return tuple(int(b - a) for a, b in pairwise(edges))


def _is_band_name(name: Hashable) -> bool:
    return canonical_band_names([name])[0] in (*S1_BANDS, *S2_BANDS)


def _sensor_key(bands: list[str], fallback: str) -> str:
    try:
        return sensor_of(bands)
    except ValueError:
        return fallback


def _parse_sources(
    obj: Any,
) -> tuple[list[tuple[str, xr.DataArray, str | None, str | None]], str | None, dict[str, Any]]:
    """Split the input into named variables with their lead and band dims.

    Also returns the variables without ``y``/``x`` that go along the lead dim (per-pair labels,
    say), which batches carry per tile.
    """
    if isinstance(obj, xr.Dataset) and not any(v in obj.data_vars for v in ("s1", "s2")):
        band_vars = [v for v in obj.data_vars if v != "spatial_ref"]
        if band_vars and all(_is_band_name(v) for v in band_vars):
            obj = as_cube(obj)
    if isinstance(obj, xr.DataArray):
        cube = as_cube(obj)
        bands = [str(b) for b in cube["band"].values]
        fallback = str(obj.name) if obj.name is not None else "data"
        lead = "time" if "time" in cube.dims else None
        return [(_sensor_key(bands, fallback), cube, lead, "band")], lead, {}
    if not isinstance(obj, xr.Dataset):
        raise TypeError(
            "the tile stream needs an xarray Dataset (e.g. from ec.pair) or a cube DataArray "
            f"(time, band, y, x), not {type(obj).__name__}"
        )
    names = [str(v) for v in obj.data_vars if v != "spatial_ref"]
    if not names:
        raise ValueError("the Dataset has no data variables to cut tiles from")
    lead = next((d for d in _LEAD_DIMS if d in obj.dims), None)
    out = []
    per_lead: dict[str, Any] = {}
    for name in names:
        var = obj[name]
        if "y" not in var.dims and "x" not in var.dims and lead in var.dims and var.ndim <= 2:
            per_lead[name] = var.transpose(lead, ...)
            continue
        if "y" not in var.dims or "x" not in var.dims:
            raise ValueError(
                f"variable {name!r} has dims {tuple(var.dims)}; a variable needs 'y' and 'x' "
                f"dims, or only {lead!r} and at most one other dim (values per "
                f"{lead or 'lead index'}); drop it from the Dataset first"
            )
        others = [d for d in var.dims if d not in ("y", "x", lead)]
        if len(others) > 1:
            raise ValueError(
                f"variable {name!r} has dims {tuple(var.dims)}: besides {lead!r}, 'y' and 'x' it "
                f"may have one band dim, not {others}; select or stack the others away"
            )
        out.append(
            (name, var, lead if lead in var.dims else None, str(others[0]) if others else None)
        )
    if not out:
        raise ValueError("the Dataset has no variable with 'y' and 'x' dims to cut tiles from")
    return out, lead, per_lead


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _model_statistics(
    model: Any, bands: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-sensor ``(mean, std)`` arrays shaped ``(C, 1, 1)`` from a model's metadata, if it has
    them for every sensor (``model.normalization[sensor] = {"mean": [...], "std": [...]}``)."""
    stats = getattr(model, "normalization", None)
    if bands is None or not isinstance(stats, Mapping):
        return {}
    out = {}
    for sensor, names in bands.items():
        entry = stats.get(sensor)
        if not isinstance(entry, Mapping) or not {"mean", "std"} <= set(entry):
            return {}
        mean = np.asarray(entry["mean"], dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(entry["std"], dtype=np.float32).reshape(-1, 1, 1)
        if mean.shape[0] != len(names) or std.shape[0] != len(names):
            return {}
        out[str(sensor)] = (mean, std)
    return out


@dataclass
class TileStats:
    """What a :class:`TileStream` has read and kept so far (all epochs together).

    Attributes
    ----------
    epochs
        Epochs completed.
    chunks
        Chunks read (one read per chunk and epoch).
    tiles_seen
        Tiles cut (before the invalid-data policy).
    tiles_kept
        Tiles that went into batches.
    tiles_dropped
        Tiles dropped because too many of their pixels were NaN.
    dropped_by
        Per data variable, how many tiles had more than ``max_nan_fraction`` NaN pixels in that
        variable (a tile can count for several variables).
    batches
        Batches produced.
    max_nan_fraction
        The threshold used.
    """

    epochs: int = 0
    chunks: int = 0
    tiles_seen: int = 0
    tiles_kept: int = 0
    tiles_dropped: int = 0
    dropped_by: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    max_nan_fraction: float = 0.5

    def summary(self) -> str:
        """One line saying how many tiles were kept and why the others were dropped.

        Examples
        --------
        >>> TileStats(tiles_seen=10, tiles_kept=4, tiles_dropped=6, dropped_by={"s2": 6}).summary()
        '4 of 10 tiles kept; 6 dropped with > 50% NaN pixels (s2: 6)'
        """
        text = f"{self.tiles_kept} of {self.tiles_seen} tiles kept"
        if self.tiles_dropped:
            per = ", ".join(f"{k}: {v}" for k, v in self.dropped_by.items() if v)
            text += (
                f"; {self.tiles_dropped} dropped with > {self.max_nan_fraction:.0%} NaN pixels"
                f" ({per})"
            )
        return text

    def _add(self, other: _ChunkTiles) -> None:
        self.chunks += 1
        self.tiles_seen += other.seen
        self.tiles_kept += other.n
        self.tiles_dropped += other.seen - other.n
        for k, v in other.dropped_by.items():
            self.dropped_by[k] = self.dropped_by.get(k, 0) + v


# --------------------------------------------------------------------------------------------
# Chunk reading and tile cutting (background threads)
# --------------------------------------------------------------------------------------------


@dataclass
class _ChunkTiles:
    """The kept tiles of one chunk, ready for the shuffle buffer."""

    seen: int
    n: int
    dropped_by: dict[str, int]
    arrays: dict[str, np.ndarray]  # name -> (n, C, t, t); "valid" -> (n, t, t); "index" -> (n, 3)


def _batch_dtype(values: np.ndarray) -> np.ndarray:
    """Values as a batch holds them: float32, int64 or bool."""
    if values.dtype == np.bool_:
        return values
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32, copy=False)
    return values.astype(np.int64, copy=False)


def _nested_lists(x: Any) -> Any:
    """Scheduler results (nested lists or tuples of blocks) as nested lists, for np.block."""
    return [_nested_lists(v) for v in x] if isinstance(x, (list, tuple)) else x


def _cut(arr: np.ndarray, li: np.ndarray, yi: np.ndarray, xi: np.ndarray, tile: int) -> np.ndarray:
    """Gather tiles ``arr[l, ..., y:y+tile, x:x+tile]`` into one contiguous array."""
    view = np.lib.stride_tricks.sliding_window_view(arr, (tile, tile), axis=(-2, -1))
    if arr.ndim == 4:
        return np.ascontiguousarray(view[li, :, yi, xi])
    return np.ascontiguousarray(view[li, yi, xi])


Normalizer = Callable[[str, np.ndarray], np.ndarray]


@dataclass
class _TaskGraph:
    """All sources' tasks in one dict, their block keys and block edges along each dim."""

    dsk: dict[Hashable, Any]
    keys: list[np.ndarray]
    edges: list[list[np.ndarray]]


# --------------------------------------------------------------------------------------------
# Shuffle buffer
# --------------------------------------------------------------------------------------------


class _TileBuffer:
    """Tiles waiting to be batched, drawn at random (or first-in, first-out).

    The buffer keeps the tile arrays of each chunk as they came (no copy on the way in) and
    references to their live rows. A batch is gathered straight from those arrays into the
    batch's memory. When fewer than a quarter of a chunk's tiles are still live, they are
    moved to a smaller array, so memory stays under about four times the live tiles.
    """

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, np.ndarray]] = {}
        self.live: dict[int, int] = {}
        self.ref_block = np.zeros(0, np.int64)
        self.ref_row = np.zeros(0, np.int64)
        self._next = 0

    def __len__(self) -> int:
        return len(self.ref_block)

    def add(self, chunk: _ChunkTiles) -> None:
        bid = self._next
        self._next += 1
        self.blocks[bid] = chunk.arrays
        self.live[bid] = chunk.n
        self.ref_block = np.concatenate([self.ref_block, np.full(chunk.n, bid, np.int64)])
        self.ref_row = np.concatenate([self.ref_row, np.arange(chunk.n, dtype=np.int64)])

    def take(
        self,
        n: int,
        rng: np.random.Generator | None,
        alloc: Callable[[tuple[int, ...], np.dtype], tuple[np.ndarray, Any]],
    ) -> dict[str, Any]:
        if rng is None:
            pos = np.arange(n)
        else:
            pos = rng.choice(len(self.ref_block), size=n, replace=False)
        blocks, rows = self.ref_block[pos], self.ref_row[pos]
        keep = np.ones(len(self.ref_block), bool)
        keep[pos] = False
        self.ref_block, self.ref_row = self.ref_block[keep], self.ref_row[keep]
        # Gather chunk by chunk (rows ascending): contiguous runs of the batch per chunk.
        order = np.lexsort((rows, blocks))
        blocks, rows = blocks[order], rows[order]
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [n]])
        sample = self.blocks[int(blocks[0])]
        out: dict[str, Any] = {}
        views: dict[str, np.ndarray] = {}
        for k, arr in sample.items():
            views[k], out[k] = alloc((n, *arr.shape[1:]), arr.dtype)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            bid = int(blocks[s])
            for k, arr in self.blocks[bid].items():
                np.take(arr, rows[s:e], axis=0, out=views[k][s:e])
            self._release(bid, e - s)
        return out

    def _release(self, bid: int, used: int) -> None:
        self.live[bid] -= used
        left = self.live[bid]
        size = len(next(iter(self.blocks[bid].values())))
        if left == 0:
            del self.blocks[bid], self.live[bid]
        elif 4 * left < size:  # keep at most ~4x the live tiles, whatever the chunk size
            where = np.flatnonzero(self.ref_block == bid)
            rows = self.ref_row[where]
            self.blocks[bid] = {k: v[rows] for k, v in self.blocks[bid].items()}
            self.ref_row[where] = np.arange(len(where), dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


class TileStream:
    """Batches of tiles streamed from a paired Dataset or a cube, reading each chunk once.

    Each epoch: the chunks (Dask blocks along the lead dim -- ``pair``, ``chip`` or ``time``
    -- and ``y``/``x``) are put in a seeded random order; the next ``prefetch`` chunks are read in
    background threads while the caller works on the current batch. A chunk is read with one
    scheduler call for all variables together, through the Dask scheduler in use when
    iteration starts (threads, or the current distributed client); the task graph is
    materialised once per stream, so a read costs no more in a large graph than in a small
    one. Each chunk is cut into tiles (see :func:`plan_tiles`); tiles with too many NaN pixels
    are dropped, the rest are normalised, NaN-filled and go through a shuffle buffer from
    which batches are drawn. Batches are assembled in a background thread too. The order of
    batches depends only on ``seed`` and the epoch, never on which read finishes first: same
    seed, same batches, whatever ``prefetch``.

    When variables are chunked differently, a chunk here is the smallest region whose edges are
    block edges of every variable, so each Dask block is still read once per epoch (variables
    without the lead dim are read once per lead chunk).

    Parameters
    ----------
    data
        A paired :class:`xarray.Dataset` as made by :func:`eo_contrast.pair` (variables ``s1``
        ``(pair, s1_band, y, x)`` and ``s2`` ``(pair, s2_band, y, x)``), any Dataset whose
        variables have dims ``([pair|chip|time], [band dim], y, x)`` (a corpus from
        :func:`eo_contrast.corpus.build_corpus` is one, chunked by shard: pass
        ``keep="valid"``) (variables without the lead
        dim, e.g. labels ``(y, x)``, are repeated for every lead index; variables with only
        the lead dim and at most one other, e.g. BigEarthNet's ``labels (pair, class)``, come
        out per tile as ``(B, ...)``), or a single-sensor
        cube ``(time, band, y, x)`` / ``(band, y, x)`` (its batch key is ``"s1"``/``"s2"``
        from its band names). Numpy-backed variables are fine (they take the chunks of the
        Dask ones, or one chunk per lead index).
    tile
        Tile size in pixels (the model's input window).
    batch_size
        Tiles per batch.
    overlap, cover
        Tile layout inside chunks, see :func:`plan_tiles`. For training keep the defaults; to
        embed every pixel use ``cover=True, shuffle=False, max_nan_fraction=1.0``.
    shuffle
        Shuffle the chunk order and draw tiles at random from the shuffle buffer. ``False``
        gives tiles chunk by chunk, in plan order (lead, then y, then x).
    seed
        Seed of every random choice; epoch ``e`` uses ``numpy.random.default_rng([seed, e])``.
    prefetch
        Chunks read ahead in background threads (and batches assembled ahead). ``0`` reads
        and assembles synchronously in the caller's thread.
    shuffle_buffer
        Tiles held by the shuffle buffer (at least ``batch_size``). Default: four chunks' worth
        of tiles, at most 256 MiB, at least two batches. Tiles are drawn uniformly from the
        buffer; memory stays below about four times the buffer (tiles are kept in their
        chunk's array until most of them are used).
    max_nan_fraction
        A tile is dropped when more than this fraction of its pixels is invalid (NaN in any
        band) in any floating-point variable. ``1.0`` keeps every tile.
    fill_value
        What NaN becomes, after normalisation: a number (default ``0.0``: with normalisation
        by dataset statistics, the band mean) or ``"mean"`` (the mean of the tile's valid
        pixels in that band; 0 when it has none).
    normalize
        ``None`` (values as they are); a model with a ``normalize(sensor, x)`` method and a
        ``bands`` mapping (its metadata: bands are then selected and ordered as the model
        expects); a callable ``f(sensor, x) -> x`` on ``(..., C, H, W)`` float32 arrays; or a
        mapping ``{name: (mean, std)}`` (or ``{name: {"mean": ..., "std": ...}}``) of per-band
        statistics, applied as ``(x - mean) / std``. Applied to all tiles of a chunk at once.
    bands
        ``{name: [band, ...]}``: select and order the bands of a variable.
    drop_last
        Drop the last, incomplete batch of an epoch.
    device
        Where tensors go: ``None``/``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"``
        or a :class:`torch.device`. On CUDA batches are assembled in pinned memory and copied
        with ``non_blocking=True``.
    epochs
        Epochs run by one ``iter(stream)``. Each iteration continues from :attr:`epoch`
        (settable with :meth:`set_epoch`), so a new pass reshuffles.
    output
        ``"torch"`` (tensors) or ``"numpy"`` (arrays; torch is not needed).
    keep
        Which indices of the lead dim to use: a boolean array along it, or the name of such a
        coordinate or variable of ``data`` (e.g. a corpus's ``"valid"``). The others are never
        cut into tiles, and chunks with none to keep are not read. ``None`` uses them all.

    Yields
    ------
    dict
        ``{name: (B, C, tile, tile) float32, ..., "valid": (B, tile, tile) bool,
        "index": (B, 3) int64}`` per batch. ``valid`` is True where a pixel is valid in every
        band of every floating-point variable; ``index`` holds, per tile, the position along the
        lead dim (pair or time index; 0 without one) and the absolute ``y0``, ``x0`` pixel
        offsets of its top-left corner (it stays on the host when ``device`` is an
        accelerator). Non-floating variables (labels) come out as int64 and are neither
        normalised nor checked for NaN. Batches are in the order tiles were drawn; inside a
        batch, tiles are grouped by chunk.

    Raises
    ------
    ValueError
        On bad parameters, a tile larger than the cube or its chunks, and, while iterating,
        when an epoch yields no tile at all (the message says how many tiles were dropped and
        why).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> pairs = xr.Dataset({
    ...     "s1": (("pair", "s1_band", "y", "x"), rng.normal(-12, 3, (2, 2, 64, 64)).astype("f4")),
    ...     "s2": (("pair", "s2_band", "y", "x"), rng.uniform(0, 0.4, (2, 4, 64, 64)).astype("f4")),
    ... }).chunk({"pair": 1, "y": 32, "x": 32})
    >>> stream = TileStream(pairs, tile=32, batch_size=3, seed=1, output="numpy")
    >>> [b["s2"].shape[0] for b in stream]
    [3, 3, 2]
    >>> stream.stats.summary()
    '8 of 8 tiles kept'
    """

    def __init__(
        self,
        data: xr.Dataset | xr.DataArray,
        tile: int = 64,
        batch_size: int = 32,
        *,
        overlap: int = 0,
        cover: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        prefetch: int = 2,
        shuffle_buffer: int | None = None,
        max_nan_fraction: float = 0.5,
        fill_value: float | Literal["mean"] = 0.0,
        normalize: Any = None,
        bands: Mapping[str, Sequence[str]] | None = None,
        drop_last: bool = False,
        device: Any = None,
        epochs: int = 1,
        output: Literal["torch", "numpy"] = "torch",
        keep: Any = None,
    ) -> None:
        for pname, value, low in (
            ("batch_size", batch_size, 1),
            ("prefetch", prefetch, 0),
            ("epochs", epochs, 1),
            ("seed", seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{pname} must be an int >= {low}, got {value!r}")
        if not isinstance(max_nan_fraction, (int, float)) or not 0 <= max_nan_fraction <= 1:
            raise ValueError(
                f"max_nan_fraction must be a fraction in [0, 1], got {max_nan_fraction!r}"
            )
        if not (fill_value == "mean" or isinstance(fill_value, (int, float))):
            raise ValueError(f"fill_value must be a number or 'mean', got {fill_value!r}")
        if output not in ("torch", "numpy"):
            raise ValueError(f"output must be 'torch' or 'numpy', got {output!r}")
        self.tile = int(tile) if isinstance(tile, (int, np.integer)) else tile
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.prefetch = int(prefetch)
        self.max_nan_fraction = float(max_nan_fraction)
        self.fill_value = fill_value
        self.drop_last = bool(drop_last)
        self.epochs = int(epochs)
        self.output = output
        self.epoch = 0
        self.stats = TileStats(max_nan_fraction=self.max_nan_fraction)

        self._normalizer: Normalizer | None = None
        self._stats_norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        model_bands: Mapping[str, Sequence[str]] | None = None
        # a model's own statistics, applied with in-place numpy (no torch round trip per chunk)
        self._model_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if normalize is not None and callable(getattr(normalize, "normalize", None)):
            model_bands = getattr(normalize, "bands", None)
            self._model_stats = _model_statistics(normalize, model_bands)
            if not self._model_stats:
                self._normalizer = normalize.normalize
        elif isinstance(normalize, Mapping):
            pass  # checked once the variables are known
        elif callable(normalize):
            self._normalizer = normalize
        elif normalize is not None:
            raise TypeError(
                "normalize must be None, a model with a .normalize(sensor, x) method, a callable "
                f"f(sensor, x) or a mapping {{name: (mean, std)}}, not {type(normalize).__name__}"
            )

        parsed, self.lead_dim, per_lead = _parse_sources(data)
        self._sources = self._build_sources(parsed, [*per_lead], bands, model_bands)
        # values per lead index (e.g. per-pair labels): small, loaded once, given per tile
        if isinstance(keep, str):
            per_lead.pop(keep, None)  # the mask itself is not a batch key
        self._per_lead = {k: _batch_dtype(np.asarray(v.values)) for k, v in per_lead.items()}
        names = [s.name for s in self._sources]
        if isinstance(normalize, Mapping):
            self._stats_norm = self._parse_stats(normalize)
        # a model normalises the sensors it knows; a plain callable every floating variable
        self._norm_names = {
            s.name
            for s in self._sources
            if s.image and (model_bands is None or s.name in model_bands)
        }
        if (self._normalizer is not None or self._model_stats) and not self._norm_names:
            known = sorted(model_bands) if model_bands is not None else "floating-point"
            raise ValueError(
                f"normalize was given but none of the variables {names} is one it applies to "
                f"({known}); name the variables after the sensors, e.g. 's1' and 's2'"
            )

        self.plan = plan_tiles(
            {"y": self._y_chunks, "x": self._x_chunks}, self.tile, overlap=overlap, cover=cover
        )
        self._lead_edges = np.cumsum((0, *self._lead_chunks)).tolist()
        self._keep = self._parse_keep(keep, data)
        self._y_edges = np.cumsum((0, *self._y_chunks)).tolist()
        self._x_edges = np.cumsum((0, *self._x_chunks)).tolist()
        self._max_chunk_tiles = max(self._lead_chunks) * self.plan.max_chunk_tiles
        tile_bytes = (
            sum(
                (s.data.shape[1] * (4 if s.image else 8)) * self.plan.tile**2 for s in self._sources
            )
            + self.plan.tile**2
            + 24
        )
        if shuffle_buffer is None:
            by_memory = max(1, _BUFFER_BYTES // tile_bytes)
            shuffle_buffer = max(2 * self.batch_size, min(4 * self._max_chunk_tiles, by_memory))
        elif (
            isinstance(shuffle_buffer, bool)
            or not isinstance(shuffle_buffer, int)
            or shuffle_buffer < 1
        ):
            raise ValueError(
                f"shuffle_buffer must be a positive number of tiles, got {shuffle_buffer!r}"
            )
        self.shuffle_buffer = max(int(shuffle_buffer), self.batch_size)
        # resolved now, so that a bad device fails here rather than at the first batch
        self._device: Any = _resolve_device(device) if device is not None else None
        self._graph: _TaskGraph | None = None
        self._get: Callable[..., Any] | None = None  # the Dask scheduler, set per iteration
        if output == "numpy" and device not in (None, "cpu"):
            raise ValueError(
                f"output='numpy' gives host arrays; device={device!r} needs output='torch'"
            )

    # -- construction helpers ------------------------------------------------------------------

    def _build_sources(
        self,
        parsed: list[tuple[str, xr.DataArray, str | None, str | None]],
        extra_names: list[str],
        bands: Mapping[str, Sequence[str]] | None,
        model_bands: Mapping[str, Sequence[str]] | None,
    ) -> list[_Source]:
        names = [p[0] for p in parsed] + extra_names
        for reserved in _RESERVED:
            if reserved in names:
                raise ValueError(
                    f"a data variable is called {reserved!r}, which is a batch key of the tile "
                    "stream; rename it (ds.rename({...}))"
                )
        unknown = [k for k in (bands or {}) if k not in names]
        if unknown:
            raise KeyError(f"bands names variables {unknown} that are not in the data {names}")
        selection: dict[str, Sequence[str]] = {}
        if model_bands is not None:
            selection.update({k: v for k, v in model_bands.items() if k in names})
        selection.update(bands or {})

        arrays: list[tuple[str, xr.DataArray, bool, bool, list[str] | None]] = []
        for name, var, lead, band_dim in parsed:
            order = [d for d in (lead, band_dim) if d is not None] + ["y", "x"]
            var = var.transpose(*order)
            names_b = (
                canonical_band_names(var[band_dim].values)
                if band_dim is not None and band_dim in var.coords
                else None
            )
            if name in selection:
                want = canonical_band_names(selection[name])
                if names_b is None:
                    raise ValueError(
                        f"bands were requested for {name!r} but it has no band coordinate naming "
                        "its bands"
                    )
                missing = [b for b in want if b not in names_b]
                if missing:
                    raise ValueError(
                        f"variable {name!r} lacks bands {missing} (it has {names_b}); the model "
                        f"or the bands argument needs {want}"
                    )
                var = var.isel({band_dim: [names_b.index(b) for b in want]})
                names_b = want
            image = np.issubdtype(var.dtype, np.floating) or (
                names_b is not None and all(b in (*S1_BANDS, *S2_BANDS) for b in names_b)
            )
            arrays.append((name, var, lead is not None, bool(image), names_b))

        sizes = {(int(v.sizes["y"]), int(v.sizes["x"])) for _, v, *_ in arrays}
        if len(sizes) > 1:
            raise ValueError(f"the variables have different y/x sizes {sorted(sizes)}")
        ny, nx = sizes.pop()
        leads = [int(v.shape[0]) for _, v, has, *_ in arrays if has]
        nlead = leads[0] if leads else 1

        dask_vars = [(n, v, has) for n, v, has, *_ in arrays if isinstance(v.data, darray.Array)]
        lead_opts = [tuple(v.data.chunks[0]) for _, v, has in dask_vars if has]
        y_opts = [tuple(v.data.chunks[v.ndim - 2]) for _, v, _h in dask_vars]
        x_opts = [tuple(v.data.chunks[v.ndim - 1]) for _, v, _h in dask_vars]
        self._lead_chunks = _common_chunks(lead_opts, nlead, 1)
        self._y_chunks = _common_chunks(y_opts, ny, ny)
        self._x_chunks = _common_chunks(x_opts, nx, nx)

        sources = []
        for name, var, has_lead, image, names_b in arrays:
            arr = var.data
            if not isinstance(arr, darray.Array):
                chunks: list[Any] = (
                    ([self._lead_chunks] if has_lead else [])
                    + ([-1] if var.ndim - has_lead == 3 else [])
                    + [self._y_chunks, self._x_chunks]
                )
                arr = darray.from_array(np.asarray(arr), chunks=tuple(chunks))
            if var.ndim - has_lead == 2:  # no band dim
                arr = arr[..., None, :, :] if has_lead else arr[None]
            if not has_lead:
                arr = arr[None]
            sources.append(_Source(name, arr, has_lead, image, names_b))
        return sources

    def _parse_keep(self, keep: Any, data: Any) -> np.ndarray | None:
        """The ``keep`` mask as a boolean array along the lead dim, or None."""
        if keep is None:
            return None
        n = int(self._lead_edges[-1])
        if self.lead_dim is None:
            raise ValueError(
                "keep selects indices of the lead dim (pair, chip or time), but the data has none"
            )
        if isinstance(keep, str):
            names = list(getattr(data, "coords", {})) + list(getattr(data, "data_vars", {}))
            if keep not in names:
                raise KeyError(
                    f"keep={keep!r} names no coordinate or variable of the data; give a boolean "
                    f"array along {self.lead_dim!r} or the name of one (e.g. 'valid')"
                )
            var = data[keep]
            if var.dims != (self.lead_dim,):
                raise ValueError(
                    f"keep={keep!r} has dims {var.dims}; it must lie along {self.lead_dim!r} only"
                )
            keep = var.values
        mask = np.asarray(keep)
        if mask.dtype != np.bool_ or mask.shape != (n,):
            raise ValueError(
                f"keep must be booleans, one per index of {self.lead_dim!r} ({n}), got "
                f"dtype {mask.dtype} and shape {mask.shape}"
            )
        return mask.copy()

    def _parse_stats(self, mapping: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        by_name = {s.name: s for s in self._sources}
        out = {}
        for name, value in mapping.items():
            if name not in by_name or not by_name[name].image:
                raise KeyError(
                    f"normalize has statistics for {name!r}, which is not a floating-point "
                    f"variable of the data ({[s.name for s in self._sources if s.image]})"
                )
            if isinstance(value, Mapping):
                mean, std = value["mean"], value["std"]
            else:
                mean, std = value
            nb = by_name[name].data.shape[1]
            try:
                mean = np.broadcast_to(np.asarray(mean, np.float32), (nb,)).reshape(1, nb, 1, 1)
                std = np.broadcast_to(np.asarray(std, np.float32), (nb,)).reshape(1, nb, 1, 1)
            except ValueError as exc:
                raise ValueError(
                    f"normalize statistics for {name!r} must have one mean and one std per band "
                    f"({nb} bands: {by_name[name].bands}), got mean {np.shape(mean)} and std "
                    f"{np.shape(std)}"
                ) from exc
            if not np.all(np.isfinite(std) & (std > 0)):
                raise ValueError(f"normalize std for {name!r} must be positive, got {std.ravel()}")
            out[name] = (mean.copy(), std.copy())
        return out

    # -- public helpers ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Batch keys of the data variables, in order (tiled ones, then per-lead values)."""
        return [s.name for s in self._sources] + list(self._per_lead)

    @property
    def bands(self) -> dict[str, list[str] | None]:
        """Band names of each variable, in the order of the batch's channel axis."""
        return {s.name: s.bands for s in self._sources}

    @property
    def n_chunks(self) -> int:
        """Chunks read per epoch."""
        return len(self._lead_chunks) * len(self._y_chunks) * len(self._x_chunks)

    @property
    def tiles_per_epoch(self) -> int:
        """Tiles cut per epoch, before invalid tiles are dropped."""
        leads = int(self._lead_edges[-1]) if self._keep is None else int(self._keep.sum())
        return leads * self.plan.n_tiles

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch the next iteration starts from (its shuffle depends on it)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_graph"] = None  # rebuilt on first use, e.g. in a spawned worker
        state["_get"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"TileStream(variables={self.names}, tile={self.tile}, batch_size={self.batch_size}, "
            f"chunks={self.n_chunks}, tiles_per_epoch={self.tiles_per_epoch}, "
            f"shuffle={self.shuffle}, seed={self.seed})"
        )

    # -- reading one chunk (runs in background threads) ---------------------------------------

    def _task_graph(self) -> _TaskGraph:
        """The sources' task graph as a plain dict, built once (culling it per read is cheap)."""
        if self._graph is None:
            dsk: dict[Hashable, Any] = {}
            keys = []
            edges = []
            for s in self._sources:
                hlg = s.data.__dask_graph__()
                dsk.update(hlg.to_dict() if hasattr(hlg, "to_dict") else dict(hlg))
                block_keys = np.empty(s.data.numblocks, dtype=object)
                for idx in np.ndindex(*s.data.numblocks):
                    block_keys[idx] = (s.data.name, *idx)
                keys.append(block_keys)
                edges.append([np.cumsum((0, *c)) for c in s.data.chunks])
            self._graph = _TaskGraph(dsk, keys, edges)
        return self._graph

    def _read(self, unit: tuple[int, int, int]) -> _ChunkTiles:
        il, iy, ix = unit
        l0, l1 = self._lead_edges[il], self._lead_edges[il + 1]
        y0, y1 = self._y_edges[iy], self._y_edges[iy + 1]
        x0, x1 = self._x_edges[ix], self._x_edges[ix + 1]
        graph = self._task_graph()
        wanted = []
        for s, keys, (le, _be, ye, xe) in zip(self._sources, graph.keys, graph.edges, strict=True):
            lo, hi = (l0, l1) if s.has_lead else (0, 1)
            ls = slice(*np.searchsorted(le, (lo, hi)).tolist())
            ys = slice(*np.searchsorted(ye, (y0, y1)).tolist())
            xs = slice(*np.searchsorted(xe, (x0, x1)).tolist())
            wanted.append(keys[ls, :, ys, xs])
        flat = [k for w in wanted for k in w.ravel().tolist()]
        culled, _deps = cull(graph.dsk, flat)
        assert self._get is not None, "reads happen while iterating"
        results = self._get(culled, [w.tolist() for w in wanted])
        values = [
            np.asarray(r[0][0][0][0]) if w.size == 1 else np.block(_nested_lists(r))
            for r, w in zip(results, wanted, strict=True)
        ]
        return self._cut_chunk(
            values, l0, y0, x0, l1 - l0, self.plan.y_starts[iy], self.plan.x_starts[ix]
        )

    def _cut_chunk(
        self,
        values: Sequence[np.ndarray],
        l0: int,
        y0: int,
        x0: int,
        nl: int,
        y_starts: np.ndarray,
        x_starts: np.ndarray,
    ) -> _ChunkTiles:
        t = self.plan.tile
        leads = np.arange(nl) if self._keep is None else np.flatnonzero(self._keep[l0 : l0 + nl])
        grid = np.meshgrid(leads, y_starts - y0, x_starts - x0, indexing="ij")
        li, yi, xi = (g.ravel().astype(np.intp) for g in grid)
        seen = len(li)
        zeros = np.zeros_like(li)
        limit = self.max_nan_fraction * t * t
        drop = np.zeros(seen, bool)
        dropped_by: dict[str, int] = {}
        arrays: list[np.ndarray] = []
        bad_masks: list[tuple[np.ndarray, bool]] = []  # (invalid (L, Y, X), has_lead)
        nan_in: dict[str, bool] = {}
        for src, value in zip(self._sources, values, strict=True):
            arr = np.asarray(value)
            if src.image:
                arr = arr.astype(np.float32, copy=False)
                bad = np.isnan(arr).any(axis=1)
                over_count = 0
                nan_in[src.name] = bool(bad.any())
                if nan_in[src.name]:
                    counts = _cut(bad, li if src.has_lead else zeros, yi, xi, t)
                    over = counts.reshape(seen, -1).sum(axis=1, dtype=np.int64) > limit
                    over_count = int(over.sum())
                    drop |= over
                    bad_masks.append((bad, src.has_lead))
                dropped_by[src.name] = over_count
            arrays.append(arr)
        keep = ~drop
        li, yi, xi = li[keep], yi[keep], xi[keep]
        n = len(li)
        out: dict[str, np.ndarray] = {}
        if n:
            zeros = np.zeros_like(li)
            for src, arr in zip(self._sources, arrays, strict=True):
                tiles = _cut(arr, li if src.has_lead else zeros, yi, xi, t)
                if src.image:
                    tiles = self._normalise(src.name, tiles, nan_in[src.name])
                else:
                    tiles = _batch_dtype(tiles)
                out[src.name] = tiles
            valid = np.ones((n, t, t), bool)
            for bad, has_lead in bad_masks:
                valid &= ~_cut(bad, li if has_lead else zeros, yi, xi, t)
            out["valid"] = valid
            out["index"] = np.stack([li + l0, yi + y0, xi + x0], axis=1).astype(np.int64)
            for name, per_lead in self._per_lead.items():
                out[name] = per_lead[li + l0]
        return _ChunkTiles(seen, n, dropped_by, out)

    def _normalise(self, name: str, tiles: np.ndarray, had_nan: bool) -> np.ndarray:
        if name in self._model_stats and name in self._norm_names:
            # same result as DualEncoder.normalize: standardise, then non-finite -> 0 (band mean)
            mean, std = self._model_stats[name]
            if not tiles.flags.writeable:
                tiles = tiles.copy()
            tiles -= mean
            tiles /= std
            bad = ~np.isfinite(tiles)
            if bad.any():
                tiles[bad] = 0.0
            return tiles
        if self._normalizer is not None and name in self._norm_names:
            res = np.asarray(self._normalizer(name, tiles), dtype=np.float32)
            if res.shape != tiles.shape:
                raise ValueError(
                    f"normalize({name!r}, x) returned shape {res.shape} for input {tiles.shape}; "
                    "it must keep the shape"
                )
            tiles, had_nan = res, True
        elif name in self._stats_norm:
            mean, std = self._stats_norm[name]
            tiles -= mean
            tiles /= std
        if not had_nan:
            return tiles
        nan = np.isnan(tiles)
        if nan.any():
            if not tiles.flags.writeable:
                tiles = tiles.copy()
            if self.fill_value == "mean":
                count = (~nan).sum(axis=(-2, -1), keepdims=True)
                total = np.where(nan, 0, tiles).sum(axis=(-2, -1), keepdims=True, dtype=np.float64)
                mean_v = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
                np.copyto(tiles, np.broadcast_to(mean_v, tiles.shape).astype(np.float32), where=nan)
            else:
                np.copyto(tiles, np.float32(self.fill_value), where=nan)
        return tiles

    # -- chunks in order, read ahead ------------------------------------------------------------

    def _units(self, epoch: int, shard: tuple[int, int] | None) -> list[tuple[int, int, int]]:
        nl, ny, nx = len(self._lead_chunks), len(self._y_chunks), len(self._x_chunks)
        leads: Sequence[int] = range(nl)
        if self._keep is not None:  # chunks with nothing to keep are never read
            edges = self._lead_edges
            leads = [a for a in leads if self._keep[edges[a] : edges[a + 1]].any()]
        units = [(a, b, c) for a in leads for b in range(ny) for c in range(nx)]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(units))
            units = [units[k] for k in order]
        if shard is not None:
            units = units[shard[0] :: shard[1]]
        return units

    def _chunks(self, units: list[tuple[int, int, int]]) -> Iterator[_ChunkTiles]:
        if self.prefetch == 0:
            for u in units:
                yield self._read(u)
            return
        pool = ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="eo-contrast-read")
        pending: deque[Future[_ChunkTiles]] = deque()
        it = iter(units)
        try:
            pending.extend(pool.submit(self._read, u) for u in islice(it, self.prefetch))
            while pending:
                chunk = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(self._read, nxt))
                yield chunk
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- batches --------------------------------------------------------------------------------

    def _batches(
        self,
        first_epoch: int,
        shard: tuple[int, int] | None,
        alloc: Callable[[tuple[int, ...], np.dtype], tuple[np.ndarray, Any]],
    ) -> Generator[dict[str, Any], None, None]:
        B = self.batch_size
        for epoch in range(first_epoch, first_epoch + self.epochs):
            rng = np.random.default_rng([self.seed, epoch, 1, *(shard or ())])
            draw = rng if self.shuffle else None
            threshold = self.shuffle_buffer if self.shuffle else B
            buffer = _TileBuffer()
            seen = kept = 0
            dropped: dict[str, int] = {}
            yielded = 0
            for chunk in self._chunks(self._units(epoch, shard)):
                self.stats._add(chunk)
                seen += chunk.seen
                kept += chunk.n
                for k, v in chunk.dropped_by.items():
                    dropped[k] = dropped.get(k, 0) + v
                if not chunk.n:
                    continue
                buffer.add(chunk)
                while len(buffer) >= threshold:
                    self.stats.batches += 1
                    yielded += 1
                    yield buffer.take(B, draw, alloc)
            while len(buffer) >= B:
                self.stats.batches += 1
                yielded += 1
                yield buffer.take(B, draw, alloc)
            if len(buffer) and not self.drop_last:
                self.stats.batches += 1
                yielded += 1
                yield buffer.take(len(buffer), draw, alloc)
            self.stats.epochs += 1
            if not yielded and shard is None:
                summary = TileStats(
                    tiles_seen=seen,
                    tiles_kept=kept,
                    tiles_dropped=seen - kept,
                    dropped_by=dropped,
                    max_nan_fraction=self.max_nan_fraction,
                ).summary()
                if kept:
                    raise ValueError(
                        f"epoch {epoch} yielded no batch: {summary}, fewer than batch_size={B} "
                        "with drop_last=True; lower batch_size or set drop_last=False"
                    )
                per = ", ".join(f"{k}: {v}" for k, v in dropped.items())
                raise ValueError(
                    f"epoch {epoch} yielded no tile: all {seen} tiles were dropped because more "
                    f"than {self.max_nan_fraction:.0%} of their pixels were NaN (tiles over the "
                    f"limit per variable: {per}). Check the data's nodata coverage, or raise "
                    f"max_nan_fraction (now {self.max_nan_fraction})"
                )

    # -- iteration --------------------------------------------------------------------------------

    def _allocator(
        self,
    ) -> tuple[Callable[[tuple[int, ...], np.dtype], tuple[np.ndarray, Any]], Any]:
        if self.output == "numpy":

            def alloc_np(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
                arr = np.empty(shape, dtype)
                return arr, arr

            return alloc_np, None
        import torch

        device = self._device if self._device is not None else _resolve_device(None)
        pin = device.type == "cuda"

        dtypes = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}

        def alloc_torch(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
            if pin:
                tensor = torch.empty(shape, dtype=dtypes[np.dtype(dtype).name], pin_memory=True)
                return tensor.numpy(), tensor
            arr = np.empty(shape, dtype)
            return arr, torch.from_numpy(arr)

        return alloc_torch, device

    def _iterate(self, shard: tuple[int, int] | None) -> Iterator[dict[str, Any]]:
        alloc, device = self._allocator()
        self._task_graph()
        # the scheduler in use when iteration starts: threads by default, or a distributed client
        self._get = get_scheduler(collections=[s.data for s in self._sources])
        first = self.epoch
        self.epoch += self.epochs
        gen = self._batches(first, shard, alloc)

        def send(batch: dict[str, Any]) -> dict[str, Any]:
            if device is None or device.type == "cpu":
                return batch
            # tile positions stay on the host, where stitching and bookkeeping read them
            return {
                k: v if k == "index" else v.to(device, non_blocking=True) for k, v in batch.items()
            }

        if self.prefetch == 0:
            for batch in gen:
                yield send(batch)
            return
        q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: tuple[str, Any]) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in gen:
                    if not put(("batch", batch)):
                        return
                put(("end", None))
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(("error", exc))
            finally:
                gen.close()

        thread = threading.Thread(target=produce, name="eo-contrast-batches", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = q.get()
                if kind == "batch":
                    yield send(value)
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            stop.set()
            thread.join()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._iterate(None)


def _resolve_device(device: Any) -> torch.device:
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a device; use None, 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return dev


# --------------------------------------------------------------------------------------------
# torch IterableDataset, created on first access
# --------------------------------------------------------------------------------------------


def _make_tile_dataset() -> type:
    from torch.utils.data import IterableDataset, get_worker_info

    class TileDataset(IterableDataset):
        """A :class:`TileStream` as a :class:`torch.utils.data.IterableDataset`.

        Items are whole batches (dicts of tensors), so use ``DataLoader(ds, batch_size=None)``.
        Prefer ``num_workers=0``: the stream already reads chunks in background threads, and
        worker processes forked after Dask has started its threads can deadlock. With
        ``num_workers > 0`` each worker takes every n-th chunk of the (seeded, common) chunk
        order; give the DataLoader ``multiprocessing_context="spawn"`` (or
        ``"forkserver"``) and call :meth:`set_epoch` before each epoch, since workers iterate
        copies of the dataset.

        Parameters
        ----------
        data
            A :class:`TileStream`, or what :class:`TileStream` takes (then ``**kwargs`` are
            its parameters).
        """

        def __init__(self, data: Any, **kwargs: Any) -> None:
            super().__init__()
            if isinstance(data, TileStream):
                if kwargs:
                    raise TypeError(
                        f"TileDataset got a TileStream and parameters {sorted(kwargs)}; give the "
                        "parameters to the TileStream instead"
                    )
                self.stream = data
            else:
                self.stream = TileStream(data, **kwargs)
            if self.stream.output != "torch":
                raise ValueError("TileDataset needs a TileStream with output='torch'")

        def set_epoch(self, epoch: int) -> None:
            """Set the epoch of the next iteration (its shuffle depends on it)."""
            self.stream.set_epoch(epoch)

        def __iter__(self) -> Iterator[dict[str, Any]]:
            info = get_worker_info()
            if info is None or info.num_workers <= 1:
                return iter(self.stream)
            return self.stream._iterate((int(info.id), int(info.num_workers)))

    TileDataset.__module__ = __name__
    TileDataset.__qualname__ = "TileDataset"  # picklable by reference (spawned workers)
    return TileDataset


def __getattr__(name: str) -> Any:
    if name == "TileDataset":
        cls = _make_tile_dataset()
        globals()["TileDataset"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> Iterable[str]:
    return sorted([*globals(), "TileDataset"])
