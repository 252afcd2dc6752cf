"""Corpus build throughput with 1 and 2 Dask worker processes; pretraining streamed from a corpus.

Part 1 -- **build**. A synthetic catalogue: :func:`eo_contrast.synthetic_scene` (``--size`` px, 12
S2 L2A bands as uint16 COGs, S1 VV/VH on a grid offset by a fraction of a pixel) written once,
its Items repeated ``--copies`` times at later dates with their own ids (the same files: the OS
page cache serves repeated reads, so this measures the corpus machinery -- planning, STAC
loading, S1 reprojection, chip checks, sharded writes -- rather than a disk or network).
:func:`eo_contrast.corpus.build_corpus` runs on a ``distributed.LocalCluster`` of 1, then 2,
worker processes (one thread each; workers warmed up by importing the libraries first). Timed:
the whole call (plan, graph, reads, writes, statistics, finish). Reported: chips/s and
megapixels/s (chip pixels on the S2 grid, all bands of both sensors).

Part 2 -- **pretraining from the corpus**. In a fresh process, :func:`eo_contrast.pretrain` is
given the corpus path (at least 20,000 chips with the defaults) and trains one epoch, streaming
shards in the background (``log_every=1``: every update is timed from ``model.history``); its
peak resident memory (``ru_maxrss``) is reported. In another fresh process the same training
step (:func:`eo_contrast.training.train_step`, same model, batch, optimizer and schedule) runs
on batches already normalised in memory, as many updates as the streamed run timed (with the
allocator settings ``pretrain`` applies, :func:`eo_contrast.runtime.tune_allocator`). The first
``--warmup`` updates of each are left out. Runs alternate ``--repeats`` times; medians reported;
target ratio >= 0.85.

Run (defaults: 22 copies of a 512 px scene, 32 px chips -> 21,120 chips; about half an hour on
2 idle CPU cores, most of it the two builds and one epoch of each pretraining run)::

    python benchmarks/corpus_build.py
    python benchmarks/corpus_build.py --copies 2 --size 256 --warmup 2   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_options, machine_info, make_parser, work_folder


def catalogue(workdir: Path, size: int, copies: int) -> tuple[list[Any], list[Any]]:
    """The synthetic scene's Items, repeated ``copies`` times 40 days apart, own ids."""
    import pystac

    import eo_contrast as ec

    root = workdir / f"scene-{size}"
    if not (root / "catalog.json").exists():
        ec.synthetic_scene(root, size=size)
    s1, s2 = [], []
    for sensor, out in (("s1", s1), ("s2", s2)):
        path = root / f"{sensor}_items.json"
        for k in range(copies):
            items = pystac.ItemCollection.from_file(str(path))
            for item in items:
                for asset in item.assets.values():
                    asset.href = str((root / asset.href).resolve())
                item.id = f"{item.id}-{k}"
                item.datetime = item.datetime + datetime.timedelta(days=40 * k)
                out.append(item)
    return s1, s2


def _warm() -> None:
    import odc.stac  # noqa: F401
    import rasterio  # noqa: F401

    import eo_contrast.corpus  # noqa: F401


def build(s1: list[Any], s2: list[Any], store: Path, workers: int, chip: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from eo_contrast.corpus import build_corpus

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm)
        t0 = time.perf_counter()
        corpus = build_corpus(s1, s2, store, chip=chip, mode="w")
        seconds = time.perf_counter() - t0
    n = int(corpus.sizes["chip"])
    bands = int(corpus.sizes["s1_band"] + corpus.sizes["s2_band"])
    return {
        "chips": n,
        "valid": int(corpus.attrs["n_valid"]),
        "seconds": seconds,
        "chips_per_s": n / seconds,
        "mpx_per_s": n * chip * chip * bands / seconds / 1e6,
        "shard": int(corpus.attrs["chips_per_shard"]),
        "bytes": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()),
    }


# ------------------------------------------------------------------------------ child processes


def _model(store: str, args: argparse.Namespace) -> Any:
    """A model built as ``pretrain`` builds one from a corpus (bands, statistics, seed)."""
    from eo_contrast.corpus import open_corpus
    from eo_contrast.training import build_model, corpus_input

    ds, _, stats = corpus_input(open_corpus(store), None)
    return build_model(
        ds, ("s1", "s2"), "multimodal", args.encoder, args.stem, args.seed, 0.07, 128,
        args.width, stats=stats,
    )  # fmt: skip


def child_stream(store: str, args: argparse.Namespace) -> dict[str, Any]:
    from eo_contrast.training import pretrain

    t0 = time.perf_counter()
    model = pretrain(
        store,
        epochs=1,
        tile=args.tile,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        encoder=args.encoder,
        stem=args.stem,
        width=args.width,
        progress=False,
        log_every=1,
        prefetch=args.prefetch,
    )
    wall = time.perf_counter() - t0
    h = model.history[model.history["step"] > args.warmup]
    seconds = float((args.batch_size / h["pairs_per_s"]).sum())
    return {
        "pairs_per_s": len(h) * args.batch_size / seconds,
        "steps": len(h),
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tiles": model.info["tiles"],
    }


def child_memory(store: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    import torch

    from eo_contrast.corpus import open_corpus
    from eo_contrast.models import resolve_device
    from eo_contrast.runtime import tune_allocator
    from eo_contrast.training import lr_at, optimizer_for, train_step

    tune_allocator()  # the allocator settings pretrain() uses, so only the data source differs
    device = resolve_device(args.device)
    model = _model(store, args)
    corpus = open_corpus(store)
    idx = np.flatnonzero(corpus.valid.values)[: 64 * args.batch_size]
    s1 = np.asarray(corpus.s1.isel(chip=idx).values, np.float32)
    s2 = np.asarray(corpus.s2.isel(chip=idx).values, np.float32)
    t = args.tile
    a = model.normalize("s1", s1[..., :t, :t]).float()
    b = model.normalize("s2", s2[..., :t, :t]).float()
    bs = args.batch_size
    batches = [
        (a[i : i + bs].to(device).contiguous(), b[i : i + bs].to(device).contiguous())
        for i in range(0, len(a) - bs + 1, bs)
    ]
    cuda = device.type == "cuda"
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    model.train()
    total = args.warmup + steps
    optimizer = optimizer_for(model, 1e-3, 0.05, fused=cuda)
    losses = []

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        lr = lr_at(i, 1e-3, round(0.05 * total), total)
        losses.append(train_step(model, optimizer, x, y, lr, cuda=cuda))
        torch.stack(losses[-1:]).float().cpu().tolist()  # one sync per update, as log_every=1

    for i in range(args.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.warmup, total):
        step(i)
    seconds = time.perf_counter() - t0
    return {"pairs_per_s": steps * bs / seconds, "steps": steps}


def _child(mode: str, store: Path, args: argparse.Namespace, steps: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--store", str(store), "--steps", str(steps)]
    for key in ("tile", "batch_size", "encoder", "stem", "width", "device", "seed", "warmup",
                "prefetch"):  # fmt: skip
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__)
    add_options(parser, {"size": "synthetic scene edge (px)"}, size=512)
    parser.add_argument("--copies", type=int, default=22, help="dated copies of the scene")
    parser.add_argument("--chip", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="worker processes to time, e.g. 1,2")
    add_options(parser, tile=32, batch_size=64, encoder="resnet18", stem="imagenet")
    add_options(parser, {"width": None}, width=64)
    add_options(parser, device="auto", seed=0, warmup=5, prefetch=2, repeats=1)
    add_options(parser, {"workdir": "keep the stores here"}, workdir=None)
    parser.add_argument(
        "--skip-build", action="store_true", help="reuse the last corpus in --workdir (no timing)"
    )
    parser.add_argument("--skip-pretrain", action="store_true", help="time the builds only")
    parser.add_argument("--child", choices=("stream", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        result = (
            child_stream(args.store, args)
            if args.child == "stream"
            else child_memory(args.store, args, args.steps)
        )
        print(json.dumps(result))
        return

    with work_folder(args.workdir, "eo-contrast-corpus-bench-") as workdir:
        info = machine_info()
        print("corpus build (LocalCluster) and pretraining streamed from the corpus")
        print(f"machine: {info['cpus']} CPU(s), {info['cpu']}, torch {info['torch']}")
        t0 = time.perf_counter()
        s1, s2 = catalogue(workdir, args.size, args.copies)
        print(
            f"catalogue: {len(s1)} S1 + {len(s2)} S2 Items ({args.copies} dated copies of a "
            f"{args.size} px scene), written in {time.perf_counter() - t0:.1f} s"
        )
        store = None
        for w in [int(v) for v in args.workers.split(",")]:
            store = workdir / f"corpus-{w}w.zarr"
            if args.skip_build:
                continue
            r = build(s1, s2, store, w, args.chip)
            print(
                f"build, {w} worker process(es): {r['chips']} chips of {args.chip} px "
                f"({r['valid']} valid, {r['shard']} a shard, {r['bytes'] / 2**20:.0f} MiB) in "
                f"{r['seconds']:.1f} s: {r['chips_per_s']:.0f} chips/s, "
                f"{r['mpx_per_s']:.1f} Mpx/s"
            )
        assert store is not None
        if args.skip_pretrain:
            return
        print(
            f"pretraining: tile {args.tile}, batch {args.batch_size}, {args.encoder}/{args.stem} "
            f"width {args.width}, prefetch {args.prefetch}, one epoch, first {args.warmup} "
            "updates untimed"
        )
        stream_rates, mem_rates, peaks = [], [], []
        for r in range(args.repeats):
            if r % 2 == 0:
                z = _child("stream", store, args)
                m = _child("memory", store, args, z["steps"])
            else:
                m = _child("memory", store, args, z["steps"])
                z = _child("stream", store, args)
            stream_rates.append(z["pairs_per_s"])
            mem_rates.append(m["pairs_per_s"])
            peaks.append(z["peak_rss_mb"])
            print(
                f"  repeat {r + 1}: corpus stream {z['pairs_per_s']:7.1f} pairs/s "
                f"({z['steps']} timed updates, {z['tiles']}; peak RSS {z['peak_rss_mb']:.0f} MB)"
                f"   in-memory {m['pairs_per_s']:7.1f} pairs/s   ratio "
                f"{z['pairs_per_s'] / m['pairs_per_s']:.3f}"
            )
        zs, ms = statistics.median(stream_rates), statistics.median(mem_rates)
        print(
            f"median: corpus stream {zs:.1f} pairs/s, in-memory {ms:.1f} pairs/s, ratio "
            f"{zs / ms:.3f} (target >= 0.85); peak RSS of the streamed run {max(peaks):.0f} MB "
            "(target < 3 GB)"
        )


if __name__ == "__main__":
    main()
