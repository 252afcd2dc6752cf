"""Pretraining throughput: the whole loop from Zarr on disk against tensors already in memory.

What is compared (same model, batch, optimizer, loss, schedule and step code, in one process):

* **zarr loop** -- :func:`eo_contrast.training.pretrain` on a paired Dataset opened lazily from
  a Zarr store on disk (``xr.open_zarr``): each epoch the :class:`~eo_contrast.tiling.TileStream`
  reads every chunk once (background threads), cuts and drops tiles, normalises them with the
  model's statistics, shuffles them into batches and hands them to the training step.
* **in-memory** -- the same training step as ``pretrain`` runs it (learning-rate schedule,
  forward of both encoders, float32 symmetric InfoNCE, ``zero_grad``/``backward``/AdamW step,
  temperature clamp, loss kept on the device), fed from a list of batches cut from the same
  data, normalised and placed on the device beforehand.

Timing: the zarr loop is timed from ``model.history``: ``pairs_per_s`` is measured over each
logging window (``log_every`` updates, one host sync per window), so the duration of a window is
``updates * batch_size / pairs_per_s``. The first ``--warmup`` updates (and the model and stream
set-up before them) are left out; the rest is the steady state, epoch boundaries (the stream
restarts, its first chunk is read without read-ahead) included, since those are part of the
loop. The in-memory run is timed with a wall clock over the same updates after the same warm-up.
Runs alternate (zarr then in-memory, in-memory then zarr, ...) ``--repeats`` times; the medians
are reported. The tile stream alone (no training) is timed once, as the input ceiling.

Run (96 updates in all with the defaults: a few minutes on 2 idle CPU cores)::

    python benchmarks/pretrain_throughput.py
    python benchmarks/pretrain_throughput.py --device cuda --steps 200 --size 1024
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_options, machine_info, make_parser, work_folder


def build_store(workdir: Path, size: int, chunk: int) -> xr.Dataset:
    """Synthetic scene -> STAC -> pairs -> Zarr on disk; the store opened lazily."""
    import eo_contrast as ec

    store = workdir / f"pairs-{size}-{chunk}.zarr"
    if not (store / "zarr.json").exists():
        scene = ec.synthetic_scene(workdir / f"scene-{size}", size=size, overwrite=True)
        s1 = ec.load_stac(scene.s1_items, chunks=chunk)
        s2 = ec.load_stac(scene.s2_items, chunks=chunk)
        ec.to_zarr(ec.pair(s1, s2), store, mode="w")
    return xr.open_zarr(store)


def _model_like(pairs: xr.Dataset, args: argparse.Namespace) -> Any:
    """A fresh model built as ``pretrain`` builds it (same bands, seed, layout)."""
    from eo_contrast.training import build_model

    return build_model(
        pairs, ("s1", "s2"), "multimodal", args.encoder, args.stem, args.seed, 0.07, 128
    )


def memory_batches(pairs: xr.Dataset, args: argparse.Namespace, device: Any) -> list[Any]:
    """Normalised tile pairs cut from the same data, as batches already on ``device``."""
    import torch

    model = _model_like(pairs, args)
    t = args.tile
    s1 = np.asarray(pairs["s1"].values, np.float32)
    s2 = np.asarray(pairs["s2"].values, np.float32)
    n, _, ny, nx = s2.shape
    tiles1, tiles2 = [], []
    for p in range(n):
        for y in range(0, ny - t + 1, t):
            for x in range(0, nx - t + 1, t):
                tiles1.append(s1[p, :, y : y + t, x : x + t])
                tiles2.append(s2[p, :, y : y + t, x : x + t])
    a = model.normalize("s1", np.stack(tiles1)).float()
    b = model.normalize("s2", np.stack(tiles2)).float()
    order = torch.randperm(len(a), generator=torch.Generator().manual_seed(args.seed))
    a, b = a[order], b[order]
    bs = args.batch_size
    return [
        (a[i : i + bs].to(device).contiguous(), b[i : i + bs].to(device).contiguous())
        for i in range(0, len(a) - bs + 1, bs)
    ]


def run_zarr(pairs: xr.Dataset, args: argparse.Namespace, epochs: int) -> dict[str, float]:
    """``pretrain`` on the Zarr-backed Dataset; steady-state pairs/s from its history."""
    from eo_contrast.training import pretrain

    t0 = time.perf_counter()
    model = pretrain(
        pairs,
        epochs=epochs,
        tile=args.tile,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        encoder=args.encoder,
        stem=args.stem,
        progress=False,
        log_every=args.log_every,
        prefetch=args.prefetch,
    )
    wall = time.perf_counter() - t0
    h = model.history
    h = h[h["step"] > args.warmup].head(args.steps)
    if len(h) < args.steps:
        raise SystemExit(f"pretrain ran {len(model.history)} updates, fewer than needed")
    seconds = float((args.batch_size / h["pairs_per_s"]).sum())
    return {"pairs_per_s": len(h) * args.batch_size / seconds, "wall_s": wall}


def run_stream(pairs: xr.Dataset, args: argparse.Namespace, epochs: int) -> dict[str, float]:
    """The tile stream alone, configured as ``pretrain`` configures it: the input ceiling."""
    from eo_contrast.tiling import TileStream

    stream = TileStream(
        pairs[["s1", "s2"]],
        tile=args.tile,
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        prefetch=args.prefetch,
        normalize=_model_like(pairs, args),
        drop_last=True,
        device=args.device,
        epochs=epochs,
    )
    n = 0
    t0 = time.perf_counter()
    for batch in stream:
        n += int(batch["s1"].shape[0])
    seconds = time.perf_counter() - t0
    return {"pairs_per_s": n / seconds}


def run_memory(
    model: Any, batches: list[Any], args: argparse.Namespace, device: Any, total: int
) -> dict[str, float]:
    """The step of ``pretrain``, fed from ``batches``; steady-state pairs/s by wall clock."""
    import torch

    from eo_contrast.training import lr_at, optimizer_for, train_step

    cuda = device.type == "cuda"
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    model.train()
    lr, warmup_steps = 1e-3, round(0.05 * total)
    optimizer = optimizer_for(model, lr, 0.05, fused=cuda)
    pending: list[Any] = []

    def step(i: int) -> None:
        a, b = batches[i % len(batches)]
        lr_now = lr_at(i, lr, warmup_steps, total)
        pending.append(train_step(model, optimizer, a, b, lr_now, cuda=cuda))
        if len(pending) >= args.log_every:
            torch.stack(pending).float().cpu().tolist()
            pending.clear()

    for i in range(args.warmup):
        step(i)
    if pending:
        torch.stack(pending).float().cpu().tolist()
        pending.clear()
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    if pending:
        torch.stack(pending).float().cpu().tolist()
    seconds = time.perf_counter() - t0
    return {"pairs_per_s": args.steps * args.batch_size / seconds}


def main(argv: list[str] | None = None) -> None:
    p = make_parser(__doc__)
    helps = {"size": "scene edge in pixels", "chunk": "Zarr/Dask chunk edge (pixels)"}
    add_options(p, helps, size=512, chunk=256, tile=64, batch_size=32)
    p.add_argument("--steps", type=int, default=12, help="timed updates per run")
    add_options(p, warmup=4, encoder="resnet18", stem="imagenet", device="auto", repeats=3)
    add_options(p, prefetch=2)
    p.add_argument("--log-every", type=int, default=1)
    add_options(p, {"workdir": "keep the store here"}, seed=0, workdir=None)
    args = p.parse_args(argv)

    from eo_contrast.models import resolve_device
    from eo_contrast.runtime import tune_allocator

    # process-wide and applied by pretrain() anyway: both sides run with it
    tune_allocator()
    device = resolve_device(args.device)
    args.device = str(device)
    info = machine_info(device)
    name = info["device_name"]

    with work_folder(args.workdir, "eo-contrast-bench-") as workdir:
        t0 = time.perf_counter()
        pairs = build_store(workdir, args.size, args.chunk)
        build_s = time.perf_counter() - t0
        per_epoch = (
            pairs.sizes["pair"]
            * (pairs.sizes["y"] // args.tile)
            * (pairs.sizes["x"] // args.tile)
            // args.batch_size
        )
        need = args.warmup + args.steps
        epochs = math.ceil(need / per_epoch)
        total = epochs * per_epoch
        batches = memory_batches(pairs, args, device)

        print("pretrain throughput: Zarr on disk -> tiles -> step vs. tensors in memory")
        print(
            f"machine: {info['cpus']} CPU(s), torch {info['torch']}, "
            f"{info['torch_threads']} torch threads, device {device} ({name})"
        )
        print(
            f"data: {dict(pairs.sizes)} Zarr chunks {args.chunk} px, built in {build_s:.1f} s; "
            f"{per_epoch} updates per epoch, {epochs} epoch(s) per zarr run"
        )
        print(
            f"settings: tile {args.tile}, batch {args.batch_size}, {args.encoder}/{args.stem}, "
            f"prefetch {args.prefetch}, log_every {args.log_every}; timed {args.steps} updates "
            f"after {args.warmup} warm-up updates, {args.repeats} repeat(s)"
        )
        s = run_stream(pairs, args, epochs)
        print(
            f"tile stream alone (Zarr -> normalised batches on {device}, no training): "
            f"{s['pairs_per_s']:.0f} pairs/s"
        )
        zarr_rates, mem_rates = [], []
        for r in range(args.repeats):
            # alternate the order (zarr first, then in-memory first, ...) so drift cancels
            if r % 2 == 0:
                z = run_zarr(pairs, args, epochs)
                m = run_memory(_model_like(pairs, args), batches, args, device, total)
            else:
                m = run_memory(_model_like(pairs, args), batches, args, device, total)
                z = run_zarr(pairs, args, epochs)
            zarr_rates.append(z["pairs_per_s"])
            mem_rates.append(m["pairs_per_s"])
            print(
                f"  repeat {r + 1}: zarr loop {z['pairs_per_s']:8.1f} pairs/s   "
                f"in-memory {m['pairs_per_s']:8.1f} pairs/s   "
                f"ratio {z['pairs_per_s'] / m['pairs_per_s']:.3f}"
            )
        ratios = [z / m for z, m in zip(zarr_rates, mem_rates, strict=True)]
        zm, mm = statistics.median(zarr_rates), statistics.median(mem_rates)
        print(
            f"median: zarr loop {zm:.1f} pairs/s, in-memory {mm:.1f} pairs/s, "
            f"ratio {statistics.median(ratios):.3f} (target >= 0.85) on {device} ({name})"
        )
        # if every second of input work were taken from the step (no overlap at all)
        bound = 1.0 / (1.0 + mm / s["pairs_per_s"])
        print(
            f"input work per update {1e3 * args.batch_size / s['pairs_per_s']:.0f} ms vs. "
            f"in-memory update {1e3 * args.batch_size / mm:.0f} ms: ratio >= {bound:.3f} even "
            "with no overlap of reading and training"
        )


if __name__ == "__main__":
    main()
