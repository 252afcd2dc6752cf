"""Peak memory of embedding a cube larger than memory into Zarr.

A lazily generated float32 cube of at least ``--gib`` GiB (default 16) is embedded at tile level
(``eo_contrast.embed(..., level="tile")``) with a tiny encoder and written with
:func:`eo_contrast.to_zarr` to a temporary Zarr store. Nothing ever holds the cube: each Dask
chunk is generated, embedded and written in one task (Dask's threaded scheduler, one thread per
core), so peak memory is bounded by chunk size x threads, not by the cube size.

The cube is a deterministic synthetic scene built chunk by chunk with ``map_blocks`` (each
chunk depends only on its position): Sentinel-1-like ``vv``/``vh`` backscatter in dB
(``--sensor s1``, the default) or Sentinel-2-like reflectance in the 12 bands of the default S2
encoder (``--sensor s2``: six times fewer pixels for the same bytes, but a costlier stem; about
1.4x slower per byte on 2 CPU cores). Water and land follow smooth global patterns; the noise
is a fixed random patch, shifted per chunk (cheap to generate).

Memory is measured three ways: ``resource.getrusage`` peak RSS (``ru_maxrss``, of this process
and of waited-for children, if any), a psutil sampler (every 50 ms, this process and its
children), and the resident memory before the run (imports, torch). The elapsed time and tiles
per second (and input MB/s) are printed too. Target: peak RSS under 2 GB.

Run (about 3 minutes on 2 idle CPU cores with the defaults; it must stay under 8)::

    python benchmarks/embed_memory.py
    python benchmarks/embed_memory.py --gib 1 --chunk 512      # a quick check
    python benchmarks/embed_memory.py --sensor s2 --chunk 1024
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_options, machine_info, make_parser

#: Mean reflectance of (water, land) per S2 band of the default encoder (B01 .. B12)
S2_MEANS = {
    "B01": (0.06, 0.08),
    "B02": (0.05, 0.07),
    "B03": (0.05, 0.09),
    "B04": (0.03, 0.08),
    "B05": (0.03, 0.14),
    "B06": (0.02, 0.25),
    "B07": (0.02, 0.30),
    "B08": (0.02, 0.32),
    "B8A": (0.02, 0.33),
    "B09": (0.01, 0.10),
    "B11": (0.01, 0.22),
    "B12": (0.01, 0.14),
}
S1_MEANS = {"vv": (-22.0, -9.0), "vh": (-28.0, -15.0)}
NOISE = 512


@cache
def _noise(nbands: int, seed: int) -> np.ndarray:
    """A fixed ``(nbands, NOISE, NOISE)`` standard-normal patch (per process, made once)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nbands, NOISE, NOISE), dtype=np.float32)


def _block(
    block: np.ndarray,
    means: tuple[tuple[float, float], ...],
    scale: float,
    seed: int,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """One chunk of the scene; depends only on its global position and ``seed``."""
    assert block_info is not None
    (y0, y1), (x0, x1) = block_info[None]["array-location"][-2:]
    ys = np.arange(y0, y1, dtype=np.float32)
    xs = np.arange(x0, x1, dtype=np.float32)
    water = (np.cos(ys / 530.0)[:, None] + np.sin(xs / 610.0)[None, :]) > 1.2
    noise = _noise(len(means), seed)
    ry, rx = (y0 * 7 + x0 * 3) % NOISE, (x0 * 5 + y0) % NOISE
    reps = (1, math.ceil((y1 - y0) / NOISE) + 1, math.ceil((x1 - x0) / NOISE) + 1)
    tiled = np.tile(noise, reps)[:, ry : ry + y1 - y0, rx : rx + x1 - x0]
    out = np.empty(block.shape, dtype=np.float32)
    for b, (wm, lm) in enumerate(means):
        np.multiply(tiled[b], scale * (abs(lm) if scale < 1 else 1.0), out=out[b])
        out[b] += np.where(water, np.float32(wm), np.float32(lm))
    return out


def lazy_cube(sensor: str, size: int, chunk: int, *, seed: int = 0) -> xr.DataArray:
    """A lazy single-sensor cube ``(band, y, x)`` float32 of ``size`` x ``size`` pixels."""
    import rioxarray  # noqa: F401  (registers .rio)

    table = S2_MEANS if sensor == "s2" else S1_MEANS
    names = list(table)
    unit = "1" if sensor == "s2" else "dB"
    scale = 0.1 if sensor == "s2" else 2.0
    template = da.empty((len(names), size, size), chunks=(len(names), chunk, chunk), dtype="f4")
    data = template.map_blocks(
        _block,
        means=tuple(table.values()),
        scale=scale,
        seed=seed,
        dtype=np.float32,
        name=f"scene-{sensor}-{size}-{chunk}-{seed}",
    )
    y = 4_400_000.0 + (size - 0.5 - np.arange(size)) * 10.0
    x = 500_000.0 + (np.arange(size) + 0.5) * 10.0
    cube = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": names, "units": ("band", [unit] * len(names)), "y": y, "x": x},
        name=sensor,
    )
    return cube.rio.write_crs("EPSG:32630")


class RssSampler:
    """Samples the resident memory of this process and its children in a background thread."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that just ended
                total += child.memory_info().rss
        return int(total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = make_parser(__doc__)
    parser.add_argument("--gib", type=float, default=16.0, help="cube size (GiB, at least)")
    parser.add_argument("--sensor", choices=("s1", "s2"), default="s1")
    helps = {"chunk": "Dask chunk side (pixels)", "width": "encoder width (tiny)"}
    add_options(parser, helps, chunk=1024, tile=256, batch_size=16, width=4, device="cpu")
    add_options(parser, threads=os.cpu_count() or 1)
    parser.add_argument("--limit-gb", type=float, default=2.0, help="target peak RSS (GB)")
    args = parser.parse_args(argv)

    import psutil
    import torch

    import eo_contrast as ec
    from eo_contrast.models import DualEncoder
    from eo_contrast.runtime import tune_allocator

    torch.set_num_threads(args.threads)
    # embed() applies it on its first model load; here first, so the peak below includes it
    tuned = tune_allocator()
    nbands = len(S2_MEANS if args.sensor == "s2" else S1_MEANS)
    side = math.sqrt(args.gib * 2**30 / (4 * nbands))
    size = math.ceil(side / args.tile) * args.tile
    cube = lazy_cube(args.sensor, size, args.chunk)
    model = DualEncoder({args.sensor: list(cube.band.values)}, width=args.width, seed=0).eval()
    ntiles = (size // args.tile) ** 2
    info = machine_info()
    print(
        f"machine: {info['machine']}, {info['cpus']} cores, "
        f"{psutil.virtual_memory().total / 1e9:.1f} GB RAM, torch {info['torch']} with "
        f"{info['torch_threads']} threads, device {args.device}, allocator thresholds "
        f"raised: {tuned}"
    )
    print(
        f"cube: {cube.shape} float32 {args.sensor} = {cube.nbytes / 1e9:.2f} GB "
        f"({cube.nbytes / 2**30:.2f} GiB), lazy, {args.chunk}x{args.chunk} chunks "
        f"({cube.data.npartitions} chunks of {nbands * args.chunk**2 * 4 / 1e6:.0f} MB)"
    )
    print(
        f"model: DualEncoder({{{args.sensor!r}: {nbands} bands}}, width={args.width}), "
        f"tile {args.tile}, batch {args.batch_size}, {ntiles} tiles"
    )
    before = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory(prefix="eo_contrast_mem_") as tmp:
        store = Path(tmp) / "embedding.zarr"
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            emb = ec.embed(
                cube,
                model,
                level="tile",
                tile=args.tile,
                batch_size=args.batch_size,
                device=args.device,
            )
            out = ec.to_zarr(emb, store, mode="w")
            elapsed = time.perf_counter() - t0
        vals = out.values
        finite = float(np.isfinite(vals).mean())
        out_mb = vals.nbytes / 1e6
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    peak = max(self_peak + child_peak, sampler.peak)
    print(f"output: {tuple(vals.shape)} float32 ({out_mb:.1f} MB), finite fraction {finite:.3f}")
    print(
        f"elapsed: {elapsed:.1f} s, {ntiles / elapsed:.1f} tiles/s, "
        f"{cube.nbytes / 1e6 / elapsed:.1f} MB/s of input"
    )
    print(f"RSS before the run: {before / 1e9:.2f} GB")
    print(
        f"peak RSS: {peak / 1e9:.2f} GB (getrusage: process {self_peak / 1e9:.2f} GB, "
        f"children {child_peak / 1e9:.2f} GB; sampled {sampler.peak / 1e9:.2f} GB) for a "
        f"{cube.nbytes / 1e9:.2f} GB cube; target < {args.limit_gb:g} GB: "
        f"{'met' if peak < args.limit_gb * 1e9 else 'NOT met'}"
    )
    return {"peak_rss_bytes": float(peak), "cube_bytes": float(cube.nbytes), "seconds": elapsed}


if __name__ == "__main__":
    main()
