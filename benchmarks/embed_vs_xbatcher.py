"""Embedding a Zarr cube: ``eo_contrast.embed`` against xbatcher + a torch DataLoader.

What is compared (same model, cube, tile, batch size, device and torch threads, one process):

* **eo_contrast** -- ``ec.to_zarr(ec.embed(cube, model, level="tile", ...), store)``: the cube
  opened lazily from Zarr on disk, one vector per tile written to a new Zarr store on disk.
* **xbatcher** -- the way it is done today with `xbatcher <https://xbatcher.readthedocs.io>`_,
  following its documentation: ``xbatcher.BatchGenerator(cube, input_dims={"y": tile,
  "x": tile})`` over the same lazily opened cube, wrapped in xbatcher's torch
  ``MapDataset`` and a ``torch.utils.data.DataLoader(batch_size=..., num_workers=0)``; each batch
  is normalised with the model's ``normalize``, run through the encoder under
  ``torch.inference_mode``, and its vectors are written by index into a Zarr array created
  beforehand (one row per tile, in the generator's row-major tile order, chunked by one row of
  tiles). The cube is opened with ``xr.open_zarr(store, chunks=None)`` (lazy, no Dask: each
  patch reads only the Zarr chunks it needs), which is faster for per-patch reads than Dask
  chunks; ``--peer-dask`` opens it with Dask chunks instead.

Both write the same vectors (checked: the largest difference is printed). Before timing, each
side runs once on a small cut of the cube (model cache, torch kernels). The sides alternate
(ours first, then the peer first, ...) ``--repeats`` times; medians of tiles per second and
their ratio are printed (target: eo_contrast at least 3x faster).

The cube and model are those of ``embed_efficiency.py`` (synthetic S1-like ``vv``/``vh`` dB
scene in Zarr; the packaged default model, or a fresh one of ``--width`` channels).

xbatcher is a benchmark-only dependency: ``pip install xbatcher`` (0.4 was used).

Run (under 2 minutes on 2 idle CPU cores with the defaults)::

    python benchmarks/embed_vs_xbatcher.py
    python benchmarks/embed_vs_xbatcher.py --size 4096 --repeats 5 --width 8
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_options, machine, make_parser, work_folder
from embed_efficiency import make_model, run_embed, write_cube


def run_xbatcher(
    cube: xr.DataArray, model: Any, out: Path, tile: int, batch_size: int, device: str
) -> float:
    """Seconds for xbatcher + DataLoader + encoder + writing rows into a Zarr array."""
    import torch
    import xbatcher
    import zarr
    from xbatcher.loaders.torch import MapDataset

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    nty, ntx = cube.sizes["y"] // tile, cube.sizes["x"] // tile
    enc = model.encoder("s1")
    dim = model.feature_dim
    vectors = zarr.create_array(
        out, shape=(nty * ntx, dim), chunks=(ntx, dim), dtype="float32", fill_value=np.nan
    )
    gen = xbatcher.BatchGenerator(cube, input_dims={"y": tile, "x": tile})
    loader = torch.utils.data.DataLoader(
        MapDataset(gen), batch_size=batch_size, shuffle=False, num_workers=0
    )
    start = 0
    with torch.inference_mode():
        for x in loader:
            z = enc(model.normalize("s1", x, device=device))
            vectors[start : start + len(z)] = z.float().cpu().numpy()
            start += len(z)
    assert start == nty * ntx, (start, nty * ntx)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = make_parser(__doc__)
    add_options(parser, size=2048, chunk=512, tile=64, batch_size=64, width=None, device="cpu")
    add_options(parser, threads=os.cpu_count() or 1, repeats=3)
    parser.add_argument("--peer-dask", action="store_true", help="peer reads via Dask chunks")
    add_options(parser, workdir=None)
    args = parser.parse_args(argv)

    import torch

    from eo_contrast.models.device import resolve_device
    from eo_contrast.runtime import tune_allocator

    torch.set_num_threads(args.threads)
    tune_allocator()  # process-wide: the xbatcher side runs with it too
    model, model_name = make_model(args.width)
    model = model.to(resolve_device(args.device))
    with work_folder(args.workdir, "eo_contrast_bench_") as workdir:
        store = write_cube(workdir, args.size, args.chunk)
        ours_cube = xr.open_zarr(store)["s1"]
        peer_cube = xr.open_zarr(store, chunks={} if args.peer_dask else None)["s1"]
        n = (args.size // args.tile) ** 2
        print(f"machine: {machine(args.device)}")
        print(
            f"model: {model_name}; cube: {ours_cube.shape} float32 "
            f"({ours_cube.nbytes / 1e6:.0f} MB) in {args.chunk}x{args.chunk} chunks on disk; "
            f"tile {args.tile}, batch {args.batch_size}, {n} tiles; peer reads "
            f"{'via Dask chunks' if args.peer_dask else 'lazily without Dask'}"
        )
        kw = {"tile": args.tile, "batch_size": args.batch_size, "device": args.device}
        cut = {"y": slice(0, args.chunk), "x": slice(0, args.chunk)}
        run_embed(ours_cube.isel(cut), model, workdir / "warm-ours.zarr", **kw)
        run_xbatcher(peer_cube.isel(cut), model, workdir / "warm-peer.zarr", **kw)

        ours_s: list[float] = []
        peer_s: list[float] = []
        ours_out, peer_out = workdir / "ours.zarr", workdir / "peer.zarr"
        for r in range(args.repeats):
            order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
            for side in order:
                if side == "ours":
                    ours_s.append(run_embed(ours_cube, model, ours_out, **kw))
                else:
                    peer_s.append(run_xbatcher(peer_cube, model, peer_out, **kw))
            print(
                f"  repeat {r + 1}: eo_contrast {n / ours_s[-1]:7.1f} tiles/s, "
                f"xbatcher {n / peer_s[-1]:7.1f} tiles/s"
            )
        import zarr

        ours = xr.open_zarr(ours_out)["embedding_s1"].values  # (feature, y, x)
        peer = np.asarray(zarr.open_array(peer_out, mode="r")[:])  # (tile, feature)
        ours_rows = ours.transpose(1, 2, 0).reshape(-1, ours.shape[0])
        err = float(np.abs(ours_rows - peer).max())
        o_rate = n / statistics.median(ours_s)
        p_rate = n / statistics.median(peer_s)
        print(f"eo_contrast embed -> zarr:        {o_rate:8.1f} tiles/s (median of {args.repeats})")
        print(f"xbatcher + DataLoader -> zarr:    {p_rate:8.1f} tiles/s (median of {args.repeats})")
        print(f"ratio eo_contrast / xbatcher:     {o_rate / p_rate:8.2f}x (target >= 3)")
        print(f"max |difference| between the two outputs: {err:.2e}")
        return {"ours_tiles_per_s": o_rate, "peer_tiles_per_s": p_rate}


if __name__ == "__main__":
    main()
