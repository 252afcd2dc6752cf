"""Distributed scaling: ``embed -> to_zarr`` on a Dask cluster of 1 and of 2 worker processes.

What is compared (same cube, model, tile, batch size and code; only the cluster differs):

* **1 worker** -- ``ec.to_zarr(ec.embed(cube, model, level="tile", ...), store)`` run on a
  ``distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True)``;
* **2 workers** -- the same on ``LocalCluster(n_workers=2, threads_per_worker=1,
  processes=True)``.

Each worker is one process with one Dask thread and one torch thread (``torch.set_num_threads(1)``
in every worker; the nanny also sets ``OMP_NUM_THREADS=1``), so the 2-worker cluster uses twice
the cores of the 1-worker one. The cube is opened lazily from a Zarr store on disk in the client
(``xr.open_zarr``); the workers read its chunks, run the encoder (the model is loaded once per
worker process, from its file) and write the embedding chunks to a new Zarr store on disk.
Throughput is tiles per second of the whole run (graph submission, reads, encoder, writes,
completion records); the ratio ``2 workers / 1 worker`` is the scaling (target: >= 1.7 on 2
cores). The CPU seconds the workers used per wall-clock second are printed too ("busy"): on a
machine where other processes take the cores, they fall well under 100 % and the ratio says
little. Both clusters are started first, and each worker loads the model and runs it once
before timing, as after the first chunk of a real run (this also applies
:func:`eo_contrast.runtime.tune_allocator` in the worker: Dask's nanny starts workers with
``MALLOC_TRIM_THRESHOLD_=65536``, which on its own halves the speed of a CPU forward pass). The
two sides alternate (1 first, then 2 first, ...) ``--repeats`` times; medians are reported. Both
stores are checked to hold the same vectors.

The cube is the synthetic Sentinel-1-like scene of ``embed_efficiency.py`` (``vv``/``vh`` in dB,
float32, EPSG:32630, 10 m pixels) of ``--size`` x ``--size`` pixels in ``--chunk`` x ``--chunk``
chunks, written once to ``--workdir``. The model is the packaged default
(:meth:`DualEncoder.default`) or a fresh ``DualEncoder`` of ``--width`` channels, saved to a file
the workers read.

What bounds the ratio on one machine: the client process (graph, scheduler) shares the cores
with the workers, and reading and writing Zarr go through the same disk. On a multi-node cluster
each worker brings its own cores (or GPU); the storage bandwidth and the chunk size (tasks of a
second or more keep the scheduler's overhead small) bound it there.

With the default model one single-threaded worker embeds about 1300 tiles/s on the 2-core
development machine: the default 8192 x 8192 cube (16,384 tiles of 64 px, 256 chunks) takes
about 12 s on 1 worker and 7 s on 2. Reading a chunk, the model and writing its vectors are one
fused Dask task per chunk (see :func:`eo_contrast.to_zarr`).

Run (about 2 minutes on 2 idle CPU cores with the defaults)::

    python benchmarks/distributed_scaling.py
    python benchmarks/distributed_scaling.py --size 4096 --repeats 1     # a short check
    python benchmarks/distributed_scaling.py --chunk 1024 --workdir /tmp/bench
"""

from __future__ import annotations

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
from embed_efficiency import make_model, write_cube

#: Run in each worker before timing: load the model and run it on one tile
WARM_UP = """
import numpy as np, xarray as xr, eo_contrast as ec
ec.embed(xr.DataArray(np.full((2, {tile}, {tile}), -15.0, "float32"), dims=("band", "y", "x"),
                      coords={{"band": ["vv", "vh"], "y": np.arange({tile}.0),
                               "x": np.arange({tile}.0)}}),
         {path!r}, tile={tile}, device="cpu").compute(scheduler="sync")
"""


def start_cluster(n_workers: int, model_path: Path, tile: int) -> tuple[Any, Any]:
    """A LocalCluster of ``n_workers`` single-threaded processes, warmed up; (cluster, client)."""
    import distributed
    import torch

    cluster = distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(n_workers)
    client.run(torch.set_num_threads, 1)
    client.run(exec, WARM_UP.format(path=str(model_path), tile=tile))
    return cluster, client


def run_on(
    client: Any, cube: xr.DataArray, model_path: Path, out: Path, tile: int, batch_size: int
) -> tuple[float, float, float]:
    """Seconds for embed -> to_zarr of ``cube`` into ``out`` on ``client``'s cluster, the CPU
    seconds its worker processes used meanwhile, and those of this (client and scheduler)
    process."""
    import eo_contrast as ec

    if out.exists():
        shutil.rmtree(out)
    cpu0 = client.run(time.process_time)
    own0 = time.process_time()
    with client.as_current():
        t0 = time.perf_counter()
        emb = ec.embed(cube, model_path, level="tile", tile=tile, batch_size=batch_size,
                       device="cpu")  # fmt: skip
        ec.to_zarr(emb, out, mode="w")
        wall = time.perf_counter() - t0
    own = time.process_time() - own0
    cpu1 = client.run(time.process_time)
    return wall, sum(cpu1[w] - cpu0[w] for w in cpu1 if w in cpu0), own


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = make_parser(__doc__)
    add_options(parser, size=8192, chunk=512, tile=64, batch_size=64, width=None, repeats=3)
    add_options(parser, workdir=None)
    args = parser.parse_args(argv)

    import logging

    import distributed  # noqa: F401  (sets up its loggers, quietened here)

    from eo_contrast.runtime import allocator_tuned

    logging.getLogger("distributed").setLevel(logging.ERROR)
    clusters: dict[int, tuple[Any, Any]] = {}
    with work_folder(args.workdir, "eo_contrast_bench_") as workdir:
        try:
            store = write_cube(workdir, args.size, args.chunk)
            model, model_name = make_model(args.width)
            model_path = model.save(workdir / "model.safetensors")
            cube = xr.open_zarr(store)["s1"]
            n_tiles = (args.size // args.tile) ** 2
            print(
                f"machine: {machine('cpu')} (client process); workers: 1 Dask thread, 1 torch thread"
            )
            print(
                f"model: {model_name}; cube: {cube.shape} float32 ({cube.nbytes / 1e6:.0f} MB) in "
                f"{args.chunk}x{args.chunk} chunks on disk ({cube.data.npartitions} chunks); "
                f"tile {args.tile}, batch {args.batch_size}, {n_tiles} tiles"
            )
            for n in (1, 2):
                t0 = time.perf_counter()
                clusters[n] = start_cluster(n, model_path, args.tile)
                tuned = clusters[n][1].run(allocator_tuned)
                print(f"  cluster of {n} worker(s) started and warmed up in "
                      f"{time.perf_counter() - t0:.1f} s; allocator thresholds raised in the "
                      f"workers: {sorted(set(tuned.values()))}")  # fmt: skip

            seconds: dict[int, list[float]] = {1: [], 2: []}
            busy: dict[int, list[float]] = {1: [], 2: []}
            client_cpu: dict[int, list[float]] = {1: [], 2: []}
            for r in range(args.repeats):
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    out = workdir / f"embedding-{n}.zarr"
                    wall, cpu, own = run_on(
                        clusters[n][1], cube, model_path, out, args.tile, args.batch_size
                    )
                    seconds[n].append(wall)
                    busy[n].append(cpu / (wall * n))
                    client_cpu[n].append(own / wall)
                print(
                    f"  repeat {r + 1}: 1 worker {n_tiles / seconds[1][-1]:7.1f} tiles/s "
                    f"({seconds[1][-1]:.1f} s, busy {busy[1][-1]:.0%}), 2 workers "
                    f"{n_tiles / seconds[2][-1]:7.1f} tiles/s ({seconds[2][-1]:.1f} s, busy "
                    f"{busy[2][-1]:.0%}); client and scheduler process CPU {client_cpu[1][-1]:.0%} "
                    f"and {client_cpu[2][-1]:.0%} of a core"
                )
            one = xr.open_zarr(workdir / "embedding-1.zarr")["embedding_s1"].values
            two = xr.open_zarr(workdir / "embedding-2.zarr")["embedding_s1"].values
            same = bool(np.array_equal(one, two, equal_nan=True))
            rate1 = n_tiles / statistics.median(seconds[1])
            rate2 = n_tiles / statistics.median(seconds[2])
            print(f"1 worker process:      {rate1:8.1f} tiles/s (median of {args.repeats})")
            print(f"2 worker processes:    {rate2:8.1f} tiles/s (median of {args.repeats})")
            print(f"scaling:               {rate2 / rate1:8.3f} (target >= 1.7)")
            print(
                f"worker CPU use (CPU seconds / wall seconds per worker, median): 1 worker "
                f"{statistics.median(busy[1]):.0%}, 2 workers {statistics.median(busy[2]):.0%}; "
                "well under 100 % means the workers waited for a core (a busy machine) or for data"
            )
            print(f"same vectors from both clusters: {same}")
            return {"tiles_per_s_1": rate1, "tiles_per_s_2": rate2, "ratio": rate2 / rate1}
        finally:
            for cluster, client in clusters.values():
                client.close()
                cluster.close()


if __name__ == "__main__":
    main()
