"""The science comparison: multimodal contrastive vs SimCLR vs random initialisation.

Three encoders of one architecture (ResNet-18 layout, ``--width`` channels in the first stage,
ImageNet stem, 128-d projection) are pretrained on the same pairs with the same budget (updates,
batch size, tile size, optimiser, schedule) and then evaluated the same way:

(a) ``multimodal``: S1/S2 pairs as positives, symmetric InfoNCE (``pretrain(method="multimodal")``);
(b) ``simclr``: two augmented views of the S2 tile, NT-Xent (``pretrain(method="simclr")``, S2 only);
(c) ``random``: the same model, never trained (its weights are the others' starting point).

Pretraining data (as ``make default-weights``): the BigEarthNet v2 *train* patch pairs in their
8 flips/rotations plus synthetic S1/S2 scenes cut into 120 px patches
(:func:`eo_contrast.pipelines.default_weights.default_training_data`), or a paired Zarr store
given with ``--pairs`` (e.g. written by ``eo-contrast pair`` from STAC items).

Downstream tasks (the encoder frozen, or fine-tuned at 0.1 x the decoder's learning rate; the
decoder is ``fit_segmentation``'s light feature-pyramid head):

* ``flood``: the Sen1Floods11 chip Spain_7370579, trained on the western half, scored on the
  eastern half (``eo_contrast.pipelines.flood_demo``'s split): water IoU, mIoU (dry + water),
  overall accuracy. Input S2 for all three encoders; also S1 for (a) and (c) (SimCLR has no S1
  encoder). Label-fraction curve: 10 %, 50 %, 100 % of the labelled training pixels (a seeded
  random subset, the others set to -1; same number of updates at every fraction).
* ``lulc``: the eo-learn Slovenia patch (5 S2 L1C scenes, LULC raster), trained on the northern
  half (rows 0..49), scored on the southern half (rows 50..100) of every scene: mIoU and overall
  accuracy over 5 classes (mIoU over the classes present in the test labels or predictions).
  Unweighted cross-entropy here (the flood fits use ``fit_segmentation``'s balanced weights): one
  class has 11 training pixels, and balanced weights would multiply its loss by ~90. S2 only,
  so (a) uses its S2 branch.
* ``bigearthnet``: a linear probe (one-vs-rest logistic regression, L2 strength chosen on the
  validation split) on pooled tile embeddings (``embed(level="tile", tile=120)``: one vector per
  patch) of the 8 train patches, scored on the 8 test patches: macro and micro mean average
  precision over the 19 classes (macro: classes with a positive in the test split).
* ``retrieval``: held-out S1<->S2 retrieval (``retrieval_accuracy``) on the BigEarthNet
  validation + test patches, for the encoders with both sensors.

Every seed pretrains both methods anew and repeats every evaluation; tables give the mean and
the standard deviation over seeds.

Usage::

    python benchmarks/paper_comparison.py --out paper_out                  # CPU defaults
    python benchmarks/paper_comparison.py --quick --seeds 1 --out /tmp/pc   # smoke run, < 1 min
    python benchmarks/paper_comparison.py --device cuda --pairs s3://bucket/pairs.zarr \\
        --width 64 --batch-size 256 --pretrain-steps 20000 --seeds 5 --out paper_gpu

Writes ``results.json`` (configuration, environment, pretraining logs, every score, summary),
``results.csv`` (one row per score), ``summary.csv`` (mean, std, n per group) and PNG plots
(``results-overview.png``, ``results-label-fraction.png``, ``results-pretrain-loss.png``) into
``--out``, and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info

ENCODERS: tuple[str, ...] = ("multimodal", "simclr", "random")
FLOOD_CLASSES = ["dry", "water"]


@dataclass
class Config:
    """Settings of one comparison run (all recorded in ``results.json``)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    pretrain_steps: int = 210
    batch_size: int = 48
    tile: int = 40
    width: int = 16
    embed_dim: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    temperature: float = 0.07
    synthetic_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    dihedral: bool = True
    pairs: str | None = None
    epochs: int = 8
    tiles_per_epoch: int = 64
    seg_batch_size: int = 16
    flood_tile: int = 64
    lulc_tile: int = 32
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])
    s1: bool = True
    flood_rows: int | None = None
    probe_l2: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    device: str = "auto"
    threads: int | None = None
    data: str = ""
    quick: bool = False


@dataclass
class Data:
    """Everything read once per run."""

    pairs: xr.Dataset
    pairs_description: str
    flood: Any
    lulc: Any
    ben: xr.Dataset
    ben_root: Path


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def load_data(cfg: Config) -> Data:
    """Pretraining pairs and the three evaluation datasets."""
    import eo_contrast as ec
    from eo_contrast.pipelines.default_weights import bigearthnet_root, default_training_data

    data_dir = Path(cfg.data)
    ben_root = bigearthnet_root(data_dir)
    if cfg.pairs:
        pairs = xr.open_zarr(cfg.pairs)[["s1", "s2"]]
        description = f"paired Zarr store {cfg.pairs} ({pairs.sizes['pair']} pairs)"
    else:
        pairs = default_training_data(
            ben_root,
            synthetic_seeds=cfg.synthetic_seeds,
            bigearthnet_dihedral=cfg.dihedral,
        )
        n_ben = sum(str(s).startswith("bigearthnet:") for s in pairs["source"].values)
        description = (
            f"BigEarthNet v2 train split: {n_ben // (8 if cfg.dihedral else 1)} real S1/S2 patch "
            f"pairs{' x 8 flips/rotations' if cfg.dihedral else ''} + "
            f"{pairs.sizes['pair'] - n_ben} synthetic patch pairs (seeds {cfg.synthetic_seeds})"
        )
    flood = ec.read_sen1floods11(data_dir / "sen1floods11_spain", "Spain_7370579")
    lulc = ec.datasets.read_eolearn_slovenia(data_dir / "eolearn_slovenia")
    ben = ec.read_bigearthnet(ben_root)
    return Data(pairs, description, flood, lulc, ben, ben_root)


# ------------------------------------------------------------------------------------------
# Pretraining
# ------------------------------------------------------------------------------------------


def _fresh_model(pairs: xr.Dataset, method: str, cfg: Config, seed: int) -> Any:
    from eo_contrast.models import DualEncoder

    s2 = [str(b) for b in pairs["s2_band"].values]
    bands = {"s1": [str(b) for b in pairs["s1_band"].values], "s2": s2}
    if method == "simclr":
        bands = {"s2": s2}
    return DualEncoder(
        bands,
        arch="resnet18",
        stem="imagenet",
        width=cfg.width,
        embed_dim=cfg.embed_dim,
        method="simclr" if method == "simclr" else "multimodal",
        temperature=cfg.temperature,
        seed=seed,
    )


def pretrain_epochs(pairs: xr.Dataset, cfg: Config) -> tuple[int, int]:
    """Epochs giving at least ``cfg.pretrain_steps`` updates, and the planned updates/epoch."""
    per_pair = (pairs.sizes["y"] // cfg.tile) * (pairs.sizes["x"] // cfg.tile)
    per_epoch = max(1, pairs.sizes["pair"] * per_pair // cfg.batch_size)
    return max(1, math.ceil(cfg.pretrain_steps / per_epoch)), per_epoch


def pretrain_encoders(data: Data, cfg: Config, seed: int) -> tuple[dict[str, Any], list[dict]]:
    """The three encoders of one seed, and a log row per pretrained one."""
    from eo_contrast.training import pretrain

    epochs, _ = pretrain_epochs(data.pairs, cfg)
    models: dict[str, Any] = {}
    log: list[dict] = []
    for method in ("multimodal", "simclr"):
        t0 = time.perf_counter()
        model = pretrain(
            data.pairs,
            method=method,
            epochs=epochs,
            tile=cfg.tile,
            batch_size=cfg.batch_size,
            device=cfg.device,
            seed=seed,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            temperature=cfg.temperature,
            sensor="s2",
            model=_fresh_model(data.pairs, method, cfg, seed),
            progress=False,
        )
        seconds = time.perf_counter() - t0
        hist = model.history
        models[method] = model
        log.append(
            {
                "seed": seed,
                "encoder": method,
                "epochs": epochs,
                "steps": len(hist),
                "tiles_seen": len(hist) * cfg.batch_size,
                "batch_size": cfg.batch_size,
                "seconds": round(seconds, 1),
                "first_loss": float(hist["loss"].iloc[0]),
                "final_loss": float(hist["loss"].tail(5).mean()),
                "loss": [round(float(v), 4) for v in hist["loss"]],
            }
        )
        print(
            f"  pretrained {method:10s} seed {seed}: {len(hist)} updates in {seconds:.0f} s, "
            f"loss {hist['loss'].iloc[0]:.3f} -> {hist['loss'].tail(5).mean():.3f}",
            flush=True,
        )
    models["random"] = _fresh_model(data.pairs, "multimodal", cfg, seed).eval()
    return models, log


# ------------------------------------------------------------------------------------------
# Evaluations
# ------------------------------------------------------------------------------------------


def _record(
    seed: int,
    encoder: str,
    task: str,
    inp: str,
    mode: str,
    fraction: float,
    scores: dict[str, float],
) -> list[dict]:
    return [
        {
            "seed": seed,
            "encoder": encoder,
            "task": task,
            "input": inp,
            "mode": mode,
            "fraction": fraction,
            "metric": k,
            "value": float(v),
        }
        for k, v in scores.items()
    ]


def subsample_labels(
    label: xr.DataArray, fraction: float, seed: int, block: int = 32
) -> xr.DataArray:
    """Keep the labels of a seeded random ``fraction`` of ``block`` x ``block`` px blocks.

    The training area is cut into blocks (the last row/column of blocks may be smaller); the
    blocks holding labelled pixels are drawn without replacement (at least one) and every
    label outside them becomes -1. Whole blocks, not scattered pixels: a label budget buys
    fewer places, which is what limits a segmentation model (scattered pixels at 10 % still
    sample every part of the scene).
    """
    if fraction >= 1:
        return label
    values = np.asarray(label.values)
    h, w = values.shape
    by, bx = np.meshgrid(np.arange(h) // block, np.arange(w) // block, indexing="ij")
    block_id = by * (-(-w // block)) + bx
    candidates = np.unique(block_id[values >= 0])
    rng = np.random.default_rng([seed, 7919])
    n = max(1, round(fraction * candidates.size))
    keep = rng.choice(candidates, size=n, replace=False)
    out = np.where(np.isin(block_id, keep), values, -1).astype(values.dtype)
    return label.copy(data=out)


def _fit_and_segment(
    train_cube: xr.DataArray,
    train_label: xr.DataArray,
    test_cube: xr.DataArray,
    model: Any,
    classes: list[str],
    *,
    frozen: bool,
    tile: int,
    fraction: float,
    seed: int,
    cfg: Config,
    class_weights: str | None = "balanced",
) -> np.ndarray:
    from eo_contrast.inference import segment
    from eo_contrast.segmentation import fit_segmentation

    seg = fit_segmentation(
        train_cube,
        train_label,
        encoder=model,
        classes=classes,
        freeze_encoder=frozen,
        epochs=cfg.epochs,
        tile=tile,
        batch_size=cfg.seg_batch_size,
        tiles_per_epoch=cfg.tiles_per_epoch,
        max_nan_fraction=min(0.95, 1 - 0.5 * fraction),
        class_weights=class_weights,
        seed=seed,
        device=cfg.device,
        progress=False,
    )
    return np.asarray(segment(test_cube, seg, device=cfg.device).compute().values)


def eval_flood(models: dict[str, Any], data: Data, cfg: Config, seed: int) -> list[dict]:
    """Water segmentation on the Sen1Floods11 chip: west half trains, east half scores."""
    from eo_contrast.metrics import miou, overall_accuracy, water_iou

    chip = data.flood
    rows = slice(0, cfg.flood_rows)
    width = chip.label.sizes["x"]
    west, east = slice(0, width // 2), slice(width // 2, width)
    label = chip.label.isel(y=rows)
    test_label = np.asarray(label.isel(x=east).values)
    cubes = {s: getattr(chip, s).isel(time=0, y=rows) for s in ("s1", "s2")}
    subsets = {f: subsample_labels(label.isel(x=west), f, seed) for f in cfg.fractions}
    out: list[dict] = []
    for name, model in models.items():
        inputs = [s for s in ("s2", "s1") if s in model.sensors and (s == "s2" or cfg.s1)]
        for inp in inputs:
            fractions = cfg.fractions if inp == "s2" else [1.0]
            for mode in ("frozen", "finetuned"):
                for frac in fractions:
                    pred = _fit_and_segment(
                        cubes[inp].isel(x=west),
                        subsets.get(frac, label.isel(x=west)),
                        cubes[inp].isel(x=east),
                        model,
                        FLOOD_CLASSES,
                        frozen=mode == "frozen",
                        tile=cfg.flood_tile,
                        fraction=frac,
                        seed=seed,
                        cfg=cfg,
                    )
                    scores = {
                        "water_iou": water_iou(pred, test_label),
                        "miou": miou(pred, test_label, num_classes=2),
                        "overall_accuracy": overall_accuracy(pred, test_label),
                    }
                    out += _record(seed, name, "flood", inp, mode, frac, scores)
    return out


def label_subsets(data: Data, cfg: Config, seed: int) -> list[dict]:
    """What each flood label fraction keeps: labelled pixels and their share of water."""
    label = data.flood.label.isel(y=slice(0, cfg.flood_rows))
    west = label.isel(x=slice(0, label.sizes["x"] // 2))
    rows = []
    for frac in cfg.fractions:
        v = np.asarray(subsample_labels(west, frac, seed).values)
        n = int((v >= 0).sum())
        rows.append({"seed": seed, "fraction": frac, "labelled_pixels": n,
                     "water_share": float((v == 1).sum() / max(1, n))})  # fmt: skip
    return rows


def references(data: Data, cfg: Config) -> list[dict]:
    """Scores without any encoder, on the same splits: what the tasks give for free.

    ``flood``: water where VH is below the threshold with the best water IoU on the western
    half (``flood_demo.vh_threshold_baseline``); ``lulc``: the majority class of the northern
    half everywhere; ``bigearthnet``: every test patch scored with the train prevalence of each
    class (ties everywhere: AP = the class's test prevalence).
    """
    from eo_contrast.metrics import mean_average_precision, miou, overall_accuracy, water_iou
    from eo_contrast.pipelines.flood_demo import vh_threshold_baseline

    out: list[dict] = []
    chip = data.flood
    label = np.asarray(chip.label.isel(y=slice(0, cfg.flood_rows)).values)
    vh = np.asarray(chip.s1.sel(band="vh").isel(time=0, y=slice(0, cfg.flood_rows)).values)
    half = label.shape[1] // 2
    thr, pred = vh_threshold_baseline(vh[:, :half], label[:, :half], vh[:, half:])
    test = label[:, half:]
    what = f"VH < {thr:g} dB (threshold with the best water IoU on the western half)"
    for metric, value in (("water_iou", water_iou(pred, test)),
                          ("miou", miou(pred, test, num_classes=2)),
                          ("overall_accuracy", overall_accuracy(pred, test))):  # fmt: skip
        out.append({"task": "flood", "input": "s1", "metric": metric, "value": value,
                    "reference": what})  # fmt: skip

    labels, names = data.lulc.encoded_labels()
    v = np.asarray(labels.values)
    h = v.shape[0] // 2
    counts = np.bincount(v[:h][v[:h] >= 0], minlength=len(names))
    major = int(np.argmax(counts))
    test = v[h:]
    pred = np.where(test >= 0, major, -1)
    what = f"majority class of the northern half ({names[major]}) everywhere"
    for metric, value in (("miou", miou(pred, test, num_classes=len(names))),
                          ("overall_accuracy", overall_accuracy(pred, test))):  # fmt: skip
        out.append({"task": "lulc", "input": "s2", "metric": metric, "value": value,
                    "reference": what})  # fmt: skip

    ben = data.ben
    split = ben["split"].values
    y = np.asarray(ben["labels"].values)
    prior = np.broadcast_to(y[split == "train"].mean(0), y[split == "test"].shape)
    what = "train prevalence of each class as the score of every test patch"
    for average in ("macro", "micro"):
        value = mean_average_precision(prior, y[split == "test"], average=average)
        out.append({"task": "bigearthnet", "input": "s2", "metric": f"map_{average}",
                    "value": value, "reference": what})  # fmt: skip
    return out


def eval_lulc(models: dict[str, Any], data: Data, cfg: Config, seed: int) -> list[dict]:
    """Land cover on the eo-learn Slovenia patch: north half trains, south half scores."""
    from eo_contrast.metrics import miou, overall_accuracy

    patch = data.lulc
    labels, names = patch.encoded_labels()
    height = labels.sizes["y"]
    north, south = slice(0, height // 2), slice(height // 2, height)
    test_label = np.broadcast_to(
        np.asarray(labels.isel(y=south).values),
        (patch.s2.sizes["time"], height - height // 2, labels.sizes["x"]),
    )
    out: list[dict] = []
    for name, model in models.items():
        for mode in ("frozen", "finetuned"):
            pred = _fit_and_segment(
                patch.s2.isel(y=north),
                labels.isel(y=north),
                patch.s2.isel(y=south),
                model,
                names,
                frozen=mode == "frozen",
                tile=cfg.lulc_tile,
                fraction=1.0,
                seed=seed,
                cfg=cfg,
                class_weights=None,
            )
            scores = {
                "miou": miou(pred, test_label, num_classes=len(names)),
                "overall_accuracy": overall_accuracy(pred, test_label),
            }
            out += _record(seed, name, "lulc", "s2", mode, 1.0, scores)
    return out


def pooled_embeddings(model: Any, ben: xr.Dataset, sensor: str, device: str) -> np.ndarray:
    """One pooled encoder vector per BigEarthNet patch: ``embed(level="tile", tile=120)``."""
    from eo_contrast.inference import embed

    var = ben[sensor].rename(pair="time", **{f"{sensor}_band": "band"})
    size = int(min(var.sizes["y"], var.sizes["x"]))
    emb = embed(var, model, level="tile", tile=size, device=device).compute()
    return np.asarray(emb.values).reshape(emb.sizes["time"], emb.sizes["feature"], -1).mean(-1)


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    l2: float,
    seed: int = 0,
    iters: int = 200,
) -> np.ndarray:
    """One-vs-rest logistic regression (L-BFGS, L2 on the weights); scores of ``x_test``."""
    import torch

    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.from_numpy(((x_train - mean) / std).astype(np.float64))
    yt = torch.from_numpy(y_train.astype(np.float64))
    gen = torch.Generator().manual_seed(seed)
    w = 0.01 * torch.randn(xt.shape[1], yt.shape[1], generator=gen, dtype=torch.float64)
    w.requires_grad_(True)
    b = torch.zeros(yt.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt)
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        xs = torch.from_numpy(((x_test - mean) / std).astype(np.float64))
        return torch.sigmoid(xs @ w + b).numpy()


def eval_bigearthnet(models: dict[str, Any], data: Data, cfg: Config, seed: int) -> list[dict]:
    """Linear probe on pooled embeddings, BigEarthNet's train/validation/test split."""
    from eo_contrast.metrics import mean_average_precision

    ben = data.ben
    split = ben["split"].values
    y = np.asarray(ben["labels"].values)
    tr, va, te = (split == "train"), (split == "validation"), (split == "test")
    out: list[dict] = []
    for name, model in models.items():
        inputs = [s for s in ("s2", "s1") if s in model.sensors and (s == "s2" or cfg.s1)]
        for inp in inputs:
            feats = pooled_embeddings(model, ben, inp, cfg.device)
            val_scores = []
            for l2 in cfg.probe_l2:
                s = linear_probe(feats[tr], y[tr], feats[va], l2=l2, seed=seed)
                val_scores.append(mean_average_precision(s, y[va]))
            best = (
                cfg.probe_l2[int(np.nanargmax(val_scores))]
                if np.isfinite(val_scores).any()
                else cfg.probe_l2[-1]
            )
            s = linear_probe(feats[tr], y[tr], feats[te], l2=best, seed=seed)
            scores = {
                "map_macro": mean_average_precision(s, y[te], average="macro"),
                "map_micro": mean_average_precision(s, y[te], average="micro"),
                "probe_l2": best,
            }
            out += _record(seed, name, "bigearthnet", inp, "linear_probe", 1.0, scores)
    return out


def eval_retrieval(models: dict[str, Any], data: Data, cfg: Config, seed: int) -> list[dict]:
    """Held-out S1<->S2 retrieval (BigEarthNet validation + test) for two-sensor encoders."""
    from eo_contrast.pipelines.default_weights import heldout_retrieval

    out: list[dict] = []
    for name, model in models.items():
        if not {"s1", "s2"} <= set(model.sensors):
            continue
        r = heldout_retrieval(model, data.ben_root, tile=cfg.tile)
        scores = {
            k: r[k]
            for k in (
                "s1_to_s2_top1",
                "s2_to_s1_top1",
                "s1_to_s2_top5",
                "s2_to_s1_top5",
                "chance_top1",
                "chance_top5",
            )
        }
        out += _record(seed, name, "retrieval", "s1+s2", "frozen", 1.0, scores)
    return out


# ------------------------------------------------------------------------------------------
# Summary, tables, plots
# ------------------------------------------------------------------------------------------

KEYS = ["task", "input", "mode", "fraction", "metric", "encoder"]


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; 0 for one seed) and count over seeds per group."""
    g = records.groupby(KEYS, sort=False)["value"]
    summary = g.agg(["mean", "std", "count"]).reset_index()
    summary["std"] = summary["std"].fillna(0.0)
    return summary.rename(columns={"count": "n"})


def table(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Encoders as columns, ``mean ± std`` cells, one row per task/input/mode/fraction/metric."""
    s = summary if metrics is None else summary[summary["metric"].isin(metrics)]
    s = s.assign(cell=[f"{m:.3f} ± {d:.3f}" for m, d in zip(s["mean"], s["std"], strict=True)])
    wide = s.pivot_table(
        index=KEYS[:-1], columns="encoder", values="cell", aggfunc="first", sort=False
    )
    cols = [e for e in ENCODERS if e in wide.columns]
    return wide[cols].fillna("-").reset_index()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {"multimodal": "#1b6ca8", "simclr": "#e08a1e", "random": "#8c8c8c"}


def plot_overview(summary: pd.DataFrame, path: Path, refs: Sequence[dict[str, Any]] = ()) -> None:
    """Bars: the headline metric of each task, frozen and fine-tuned, mean ± std.

    Dashed line: the task's reference without an encoder (see :func:`references`).
    """
    plt = _plt()
    panels = [
        ("flood", "s2", "water_iou", "flood, S2: water IoU"),
        ("flood", "s1", "water_iou", "flood, S1: water IoU"),
        ("lulc", "s2", "miou", "land cover (Slovenia): mIoU"),
        ("bigearthnet", "s2", "map_macro", "BigEarthNet probe, S2: mAP"),
    ]
    panels = [p for p in panels if ((summary.task == p[0]) & (summary.input == p[1])).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), dpi=80)
    axes = np.atleast_1d(axes)
    for ax, (task, inp, metric, title) in zip(axes, panels, strict=True):
        s = summary[
            (summary.task == task)
            & (summary.input == inp)
            & (summary.metric == metric)
            & (summary.fraction == 1.0)
        ]
        modes = list(dict.fromkeys(s["mode"]))
        for j, enc in enumerate(ENCODERS):
            e = s[s.encoder == enc].set_index("mode").reindex(modes)
            if e["mean"].isna().all():
                continue
            xs = np.arange(len(modes)) + (j - 1) * 0.27
            ax.bar(xs, e["mean"], 0.25, yerr=e["std"], color=COLORS[enc], label=enc, capsize=2)
        for r in refs:
            if (r["task"], r["metric"]) == (task, metric) and math.isfinite(r["value"]):
                ax.axhline(r["value"], color="k", lw=0.8, ls="--", label="no encoder")
        ax.set_xticks(np.arange(len(modes)))
        ax.set_xticklabels([m.replace("_", " ") for m in modes], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles),
               fontsize=7, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path)
    plt.close(fig)


def plot_fractions(summary: pd.DataFrame, path: Path) -> None:
    """Lines: flood water IoU (S2) against the fraction of labelled training pixels."""
    plt = _plt()
    s = summary[
        (summary.task == "flood") & (summary.input == "s2") & (summary.metric == "water_iou")
    ]
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.8), dpi=80, sharey=True)
    for ax, mode in zip(axes, ("frozen", "finetuned"), strict=True):
        for enc in ENCODERS:
            e = s[(s.encoder == enc) & (s["mode"] == mode)].sort_values("fraction")
            if e.empty:
                continue
            x = 100 * e["fraction"].to_numpy()
            ax.errorbar(
                x,
                e["mean"],
                yerr=e["std"],
                marker="o",
                ms=3,
                capsize=2,
                color=COLORS[enc],
                label=enc,
            )
        ax.set_xscale("log")
        ax.set_xticks([10, 50, 100])
        ax.set_xticklabels(["10 %", "50 %", "100 %"])
        ax.set_xlabel("labelled training pixels", fontsize=8)
        ax.set_title(f"flood, S2, encoder {mode.replace('finetuned', 'fine-tuned')}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("water IoU (east half)", fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_losses(pretraining: list[dict], path: Path) -> None:
    """Pretraining loss per update, one line per method and seed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 2.8), dpi=80)
    seen = set()
    for row in pretraining:
        enc = row["encoder"]
        ax.plot(
            np.arange(1, len(row["loss"]) + 1),
            row["loss"],
            lw=0.8,
            alpha=0.8,
            color=COLORS[enc],
            label=None if enc in seen else enc,
        )
        seen.add(enc)
    ax.set_xlabel("update", fontsize=8)
    ax.set_ylabel("contrastive loss", fontsize=8)
    batch = max(2, int(pretraining[0].get("batch_size", 48))) if pretraining else 48
    for level, enc in ((math.log(batch), "multimodal"), (math.log(2 * batch - 1), "simclr")):
        ax.axhline(level, color=COLORS[enc], lw=0.8, ls=":")
    ax.set_title(
        f"pretraining loss (dotted: chance, log {batch} InfoNCE / log {2 * batch - 1} NT-Xent)",
        fontsize=7,
    )
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _seeds(text: str) -> list[int]:
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) == 1:
        n = int(parts[0])
        if n < 1:
            raise argparse.ArgumentTypeError(f"--seeds {text!r}: give a count >= 1 or a list")
        return list(range(n))
    return [int(p) for p in parts]


def _fractions(text: str) -> list[float]:
    values = sorted({float(p) for p in text.split(",") if p.strip()})
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"--fractions {text!r}: values in (0, 1], e.g. 0.1,0.5,1")
    return values


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, Path]:
    """Command-line options -> (Config, output folder)."""
    from eo_contrast.datasets.shared_data import shared_data_dir

    p = argparse.ArgumentParser(
        prog="python benchmarks/paper_comparison.py",
        description="Multimodal contrastive vs SimCLR vs random init, same architecture, data "
        "and budget; flood segmentation, land cover, BigEarthNet linear probe.",
    )
    p.add_argument("--out", required=True, help="output folder (results.json, CSV, PNG)")
    p.add_argument(
        "--data",
        default=None,
        help="shared data folder (default: $EO_CONTRAST_SHARED_DATA or ../shared/data)",
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="number of seeds (0..n-1) or a comma list (default 3)",
    )
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help="pretraining updates per method (rounded up to whole epochs)",
    )
    p.add_argument("--epochs", type=int, default=None, help="segmentation epochs per fit")
    p.add_argument("--tiles-per-epoch", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="pretraining batch size")
    p.add_argument("--tile", type=int, default=None, help="pretraining tile (px)")
    p.add_argument("--width", type=int, default=None, help="encoder width (16: default weights)")
    p.add_argument(
        "--fractions", type=_fractions, default=None, help="flood label fractions, e.g. 0.1,0.5,1"
    )
    p.add_argument(
        "--pairs",
        default=None,
        help="paired Zarr store (path or fsspec URL) to "
        "pretrain on instead of BigEarthNet + synthetic pairs",
    )
    p.add_argument(
        "--s1",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also evaluate the S1 encoders (default: yes; --quick: no)",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda, ... (default auto)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 on a CPU shared with other jobs, "
        "where OpenMP spin-waiting makes 2 threads many times slower)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test settings: a few updates, no synthetic scenes, small fits",
    )
    a = p.parse_args(argv)
    cfg = Config()
    if a.quick:
        cfg = Config(
            seeds=[0],
            pretrain_steps=2,
            batch_size=16,
            tile=60,
            width=8,
            synthetic_seeds=[],
            dihedral=False,
            epochs=1,
            tiles_per_epoch=16,
            seg_batch_size=8,
            flood_rows=192,
            fractions=[0.1, 1.0],
            probe_l2=[1e-2],
            s1=False,
            quick=True,
        )
    for name in (
        "seeds",
        "pretrain_steps",
        "epochs",
        "tiles_per_epoch",
        "batch_size",
        "tile",
        "width",
        "fractions",
        "pairs",
        "device",
        "threads",
    ):
        value = getattr(a, name)
        if value is not None:
            setattr(cfg, name, value)
    if a.s1 is not None:
        cfg.s1 = a.s1
    for name in ("pretrain_steps", "epochs", "tiles_per_epoch", "batch_size", "tile", "width"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.threads is not None and cfg.threads < 1:
        p.error(f"--threads must be >= 1, got {cfg.threads}")
    cfg.data = str(Path(a.data) if a.data else shared_data_dir())
    if not Path(cfg.data, "sen1floods11_spain").is_dir():
        p.error(f"--data {cfg.data!r} lacks sen1floods11_spain/: pass the shared data folder")
    return cfg, Path(a.out)


def _environment() -> dict[str, Any]:
    info = machine_info()
    return {k: info[k] for k in ("python", "torch", "machine", "cpus", "torch_threads", "cuda")}


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and NumPy scalars -> Python, so ``results.json`` is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(cfg: Config, out: Path) -> dict[str, Any]:
    """Run the whole comparison; write and return the results."""
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    data = load_data(cfg)
    epochs, per_epoch = pretrain_epochs(data.pairs, cfg)
    print(
        f"pretraining data: {data.pairs_description}; {epochs} epoch(s) of ~{per_epoch} "
        f"updates (batch {cfg.batch_size}, tile {cfg.tile})",
        flush=True,
    )
    refs = references(data, cfg)
    records: list[dict] = []
    pretraining: list[dict] = []
    subsets: list[dict] = []
    timings: dict[str, float] = {}
    for seed in cfg.seeds:
        print(f"seed {seed}", flush=True)
        subsets += label_subsets(data, cfg, seed)
        t0 = time.perf_counter()
        models, log = pretrain_encoders(data, cfg, seed)
        pretraining += log
        timings[f"seed{seed}_pretrain_s"] = time.perf_counter() - t0
        for task, fn in (
            ("retrieval", eval_retrieval),
            ("bigearthnet", eval_bigearthnet),
            ("lulc", eval_lulc),
            ("flood", eval_flood),
        ):
            t0 = time.perf_counter()
            rows = fn(models, data, cfg, seed)
            records += rows
            timings[f"seed{seed}_{task}_s"] = time.perf_counter() - t0
            print(
                f"  {task}: {len(rows)} scores in {timings[f'seed{seed}_{task}_s']:.0f} s",
                flush=True,
            )
    frame = pd.DataFrame(records)
    summary = summarize(frame)
    total = time.perf_counter() - t_start
    result = {
        "config": asdict(cfg),
        "environment": _environment(),
        "pretraining_data": data.pairs_description,
        "pretraining": pretraining,
        "references": refs,
        "label_subsets": subsets,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(total, 1),
        "records": records,
        "summary": summary.to_dict(orient="records"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
    }
    (out / "results.json").write_text(json.dumps(_json_safe(result), indent=1) + "\n")
    frame.to_csv(out / "results.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    plot_overview(summary, out / "results-overview.png", refs)
    plot_fractions(summary, out / "results-label-fraction.png")
    plot_losses(pretraining, out / "results-pretrain-loss.png")
    with pd.option_context(
        "display.width", 200, "display.max_rows", 500, "display.max_columns", 20
    ):
        print("\nmean ± std over seeds", cfg.seeds)
        for task in ("flood", "lulc", "bigearthnet", "retrieval"):
            t = table(summary[summary.task == task])
            if not t.empty:
                print(f"\n[{task}]")
                print(t.drop(columns="task").to_string(index=False))
        print("\n[references, no encoder]")
        print(pd.DataFrame(refs).to_string(index=False))
        print("\n[flood label subsets]")
        print(pd.DataFrame(subsets).to_string(index=False))
    print(f"\ntotal {total / 60:.1f} min; results in {out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    cfg, out = parse_args(argv)
    run(cfg, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
