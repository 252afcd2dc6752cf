"""The recipe of the package's default weights, and their held-out retrieval evaluation.

:func:`default_training_data` builds one paired Dataset of 120x120 px patch pairs: the real
BigEarthNet v2 *train* patches (see :func:`eo_contrast.read_bigearthnet`) followed by synthetic
scenes (:func:`eo_contrast.synthetic_scene`, loaded through STAC and paired in time, then cut into
120x120 px patches). :func:`train_default_weights` pretrains a small multimodal
:class:`~eo_contrast.models.DualEncoder` on it with :func:`eo_contrast.training.pretrain` and writes
a safetensors file. :func:`heldout_retrieval` measures cross-modal retrieval on the BigEarthNet
validation and test patches (never seen in training) for a model and for randomly initialised
models of the same architecture.

Reproduce the shipped file (a few minutes on 2 CPU cores)::

    python -m eo_contrast.pipelines.default_weights --out eo_contrast/weights/default.safetensors

Examples
--------
>>> from eo_contrast.pipelines.default_weights import DEFAULT_RECIPE
>>> DEFAULT_RECIPE["tile"], DEFAULT_RECIPE["width"], DEFAULT_RECIPE["method"]
(40, 16, 'multimodal')
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eo_contrast.datasets.shared_data import shared_data_dir

if TYPE_CHECKING:  # pragma: no cover
    from eo_contrast.models import DualEncoder

__all__ = [
    "DEFAULT_RECIPE",
    "PATCH",
    "bigearthnet_root",
    "default_training_data",
    "heldout_retrieval",
    "random_baseline",
    "train_default_weights",
]

#: Side of the patch pairs the training Dataset is made of (BigEarthNet's patch size).
PATCH = 120

#: The configuration of the shipped default weights (``eo_contrast/weights/default.safetensors``).
DEFAULT_RECIPE: dict[str, Any] = {
    "method": "multimodal",
    "encoder": "resnet18",
    "stem": "imagenet",
    "width": 16,
    "embed_dim": 128,
    "tile": 40,
    "batch_size": 48,
    "epochs": 10,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "temperature": 0.07,
    "seed": 0,
    "synthetic_seeds": [1, 2, 3],
    "synthetic_size": 240,
    "bigearthnet_split": "train",
    "bigearthnet_dihedral": True,
}


def bigearthnet_root(data: str | os.PathLike[str]) -> Path:
    root = Path(data)
    if (root / "bigearthnet_v2_subset").is_dir():
        root = root / "bigearthnet_v2_subset"
    if not root.is_dir():
        raise FileNotFoundError(
            f"BigEarthNet folder {str(data)!r} not found: pass the shared data folder (or its "
            "bigearthnet_v2_subset folder), or set EO_CONTRAST_SHARED_DATA"
        )
    return root


def _plain(
    s1: np.ndarray, s2: np.ndarray, s2_bands: Sequence[str], source: list[str]
) -> xr.Dataset:
    return xr.Dataset(
        {
            "s1": (("pair", "s1_band", "y", "x"), s1.astype("float32", copy=False)),
            "s2": (("pair", "s2_band", "y", "x"), s2.astype("float32", copy=False)),
        },
        coords={
            "s1_band": ["vv", "vh"],
            "s2_band": list(s2_bands),
            "source": ("pair", source),
        },
    )


def _patches(arr: np.ndarray) -> np.ndarray:
    """``(pair, band, y, x)`` -> ``(pair * ny * nx, band, PATCH, PATCH)``, remainder left out."""
    n, c, h, w = arr.shape
    ny, nx = h // PATCH, w // PATCH
    a = arr[:, :, : ny * PATCH, : nx * PATCH].reshape(n, c, ny, PATCH, nx, PATCH)
    return a.transpose(0, 2, 4, 1, 3, 5).reshape(n * ny * nx, c, PATCH, PATCH)


def default_training_data(
    data: str | os.PathLike[str] | None = None,
    *,
    synthetic_seeds: Sequence[int] = (1, 2, 3),
    synthetic_size: int = 240,
    bigearthnet_split: str = "train",
    bigearthnet_dihedral: bool = False,
    workdir: str | os.PathLike[str] | None = None,
) -> xr.Dataset:
    """The training pairs: BigEarthNet patches, then synthetic scenes cut into 120 px patches.

    Parameters
    ----------
    data
        The shared data folder (or its ``bigearthnet_v2_subset`` folder); ``None``:
        :func:`~eo_contrast.datasets.shared_data.shared_data_dir`.
    synthetic_seeds
        One synthetic scene per seed (each gives 4 time pairs).
    synthetic_size
        Side of each synthetic scene in pixels, a multiple of 120 (240: 4 patches per pair).
    bigearthnet_split
        BigEarthNet split used (``"train"``; the others are held out for evaluation).
    bigearthnet_dihedral
        Add the 7 other flips/rotations by 90 degrees of every BigEarthNet patch (the same for
        S1 and S2), so the few real patches weigh more against the synthetic ones.
    workdir
        Where the synthetic scenes are written (``None``: a temporary folder, removed after).

    Returns
    -------
    xarray.Dataset
        In-memory ``s1`` ``(pair, s1_band, 120, 120)`` dB and ``s2`` ``(pair, s2_band, 120,
        120)`` reflectance, the 12 Sentinel-2 L2A bands; ``source`` along ``pair`` says where
        each patch comes from (``"bigearthnet:<patch id>"`` or ``"synthetic:seed=<n>"``).

    Raises
    ------
    ValueError
        When ``synthetic_size`` is not a positive multiple of 120.
    FileNotFoundError
        When the BigEarthNet folder is missing.

    Examples
    --------
    >>> pairs = default_training_data(synthetic_seeds=[])  # doctest: +SKIP
    >>> pairs.sizes["pair"], pairs.sizes["y"]  # doctest: +SKIP
    (8, 120)
    """
    from eo_contrast.datasets import read_bigearthnet, synthetic_scene
    from eo_contrast.pairing import pair
    from eo_contrast.stac import load_stac

    if (
        isinstance(synthetic_size, bool)
        or not isinstance(synthetic_size, int)
        or synthetic_size < PATCH
        or synthetic_size % PATCH
    ):
        raise ValueError(
            f"synthetic_size must be a positive multiple of {PATCH} pixels, got {synthetic_size!r}"
        )
    ben = read_bigearthnet(bigearthnet_root(shared_data_dir() if data is None else data),
                           split=bigearthnet_split)  # fmt: skip
    bands = [str(b) for b in ben["s2_band"].values]
    s1_parts = [np.asarray(ben["s1"].values)]
    s2_parts = [np.asarray(ben["s2"].values)]
    source = [f"bigearthnet:{p}" for p in ben["patch_id"].values]
    if bigearthnet_dihedral:
        s1_0, s2_0, src_0 = s1_parts[0], s2_parts[0], list(source)
        for k in range(1, 8):
            a1, a2 = (s1_0[..., ::-1], s2_0[..., ::-1]) if k >= 4 else (s1_0, s2_0)
            s1_parts.append(np.rot90(a1, k % 4, axes=(-2, -1)))
            s2_parts.append(np.rot90(a2, k % 4, axes=(-2, -1)))
            source.extend(f"{p}:dihedral={k}" for p in src_0)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        for s in synthetic_seeds:
            scene = synthetic_scene(base / f"scene-{s}", size=synthetic_size, seed=int(s),
                                    overwrite=True)  # fmt: skip
            pairs = pair(load_stac(scene.s1_items), load_stac(scene.s2_items))
            pairs = pairs.sel(s1_band=["vv", "vh"], s2_band=bands).compute()
            p1, p2 = _patches(pairs["s1"].values), _patches(pairs["s2"].values)
            s1_parts.append(p1)
            s2_parts.append(p2)
            source.extend([f"synthetic:seed={s}"] * len(p1))
    return _plain(np.concatenate(s1_parts), np.concatenate(s2_parts), bands, source)


def train_default_weights(
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    recipe: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> DualEncoder:
    """Train the default weights with :data:`DEFAULT_RECIPE` (entries overridable) into ``out``.

    The model is a multimodal :class:`~eo_contrast.models.DualEncoder` (``width`` channels in
    the first ResNet stage, seeded) pretrained by :func:`eo_contrast.training.pretrain` on
    :func:`default_training_data` on the CPU (deterministic for a recipe). Its ``trained_on``
    names the data; ``info["recipe"]`` holds the full recipe, ``info["loss_curve"]`` the
    training loss per update, ``info["heldout_retrieval"]`` the scores of
    :func:`heldout_retrieval`.

    Parameters
    ----------
    out
        The ``.safetensors`` file to write (its folder is created).
    data
        The shared data folder; ``None``: :func:`~eo_contrast.datasets.shared_data.shared_data_dir`.
    recipe
        Entries replacing those of :data:`DEFAULT_RECIPE` (unknown keys are refused).
    progress
        Show a progress bar.

    Returns
    -------
    DualEncoder
        The trained model (eval mode, CPU); ``model.history`` is the training log.

    Raises
    ------
    KeyError
        For recipe keys that :data:`DEFAULT_RECIPE` does not have.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> model = train_default_weights(f"{tmp}/w.safetensors", recipe={  # doctest: +SKIP
    ...     "epochs": 1, "synthetic_seeds": [], "tile": 60, "batch_size": 16, "width": 8})
    """
    from eo_contrast.models import DualEncoder
    from eo_contrast.training import pretrain

    unknown = sorted(set(recipe or {}) - set(DEFAULT_RECIPE))
    if unknown:
        raise KeyError(f"unknown recipe key(s) {unknown}; the recipe has {sorted(DEFAULT_RECIPE)}")
    cfg = {**DEFAULT_RECIPE, **dict(recipe or {})}
    cfg["synthetic_seeds"] = [int(s) for s in cfg["synthetic_seeds"]]
    root = bigearthnet_root(shared_data_dir() if data is None else data)
    pairs = default_training_data(
        root,
        synthetic_seeds=cfg["synthetic_seeds"],
        synthetic_size=cfg["synthetic_size"],
        bigearthnet_split=cfg["bigearthnet_split"],
        bigearthnet_dihedral=bool(cfg["bigearthnet_dihedral"]),
    )
    n_ben = sum(str(s).startswith("bigearthnet:") for s in pairs["source"].values)
    n_syn = int(pairs.sizes["pair"]) - n_ben
    n_real = n_ben // 8 if cfg["bigearthnet_dihedral"] else n_ben
    trained_on = (
        f"BigEarthNet v2.0 (reBEN) {cfg['bigearthnet_split']} split: {n_real} real S1/S2 patch "
        f"pairs (120x120 px, Austria/Finland, 2017"
        + (", each in its 8 flips/rotations" if cfg["bigearthnet_dihedral"] else "")
        + f") + {n_syn} synthetic S1/S2 patch pairs "
        f"(eo_contrast.synthetic_scene seeds {cfg['synthetic_seeds']}, "
        f"{cfg['synthetic_size']} px scenes cut into 120 px patches); "
        f"{cfg['tile']} px tiles"
    )
    model = DualEncoder(
        {"s1": ["vv", "vh"], "s2": [str(b) for b in pairs["s2_band"].values]},
        arch=cfg["encoder"],
        stem=cfg["stem"],
        width=int(cfg["width"]),
        embed_dim=int(cfg["embed_dim"]),
        method=cfg["method"],
        temperature=float(cfg["temperature"]),
        seed=int(cfg["seed"]),
    )
    model = pretrain(
        pairs,
        method=cfg["method"],
        epochs=int(cfg["epochs"]),
        tile=int(cfg["tile"]),
        batch_size=int(cfg["batch_size"]),
        device="cpu",
        seed=int(cfg["seed"]),
        lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        temperature=float(cfg["temperature"]),
        model=model,
        progress=progress,
    )
    history = model.history
    model.trained_on = trained_on
    model.info = {
        **model.info,
        "recipe": cfg,
        "command": "python -m eo_contrast.pipelines.default_weights --out <file>",
        "loss_curve": [round(float(v), 5) for v in history["loss"]],
        "heldout_retrieval": heldout_retrieval(model, root, tile=int(cfg["tile"])),
    }
    model.save(out)
    model.history = history
    return model


def heldout_retrieval(
    model: DualEncoder,
    data: str | os.PathLike[str] | None = None,
    *,
    tile: int = 40,
    splits: Sequence[str] = ("validation", "test"),
) -> dict[str, float]:
    """Cross-modal retrieval of ``model`` on the held-out BigEarthNet patches.

    The patches of ``splits`` (16 pairs for validation + test) are cut into ``tile`` px tiles
    (9 per patch for 40 px) and scored by :func:`eo_contrast.training.retrieval_accuracy`
    (S1->S2 and S2->S1, top-1 and top-5; chance is ``k / n_tiles``).

    Examples
    --------
    >>> from eo_contrast.models import DualEncoder
    >>> scores = heldout_retrieval(DualEncoder(width=8, seed=0))  # doctest: +SKIP
    >>> scores["n_tiles"]  # doctest: +SKIP
    144
    """
    from eo_contrast.datasets import read_bigearthnet
    from eo_contrast.training import retrieval_accuracy

    root = bigearthnet_root(shared_data_dir() if data is None else data)
    held = xr.concat([read_bigearthnet(root, split=s)[["s1", "s2"]] for s in splits], dim="pair")
    return retrieval_accuracy(model, held, tile=tile, device="cpu", k=(1, 5))


def random_baseline(
    like: DualEncoder,
    data: str | os.PathLike[str] | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    tile: int = 40,
) -> dict[str, float]:
    """Mean held-out retrieval of randomly initialised models shaped like ``like``.

    Examples
    --------
    >>> from eo_contrast.models import DualEncoder
    >>> random_baseline(DualEncoder(width=8, seed=0), seeds=[0])["n_seeds"]  # doctest: +SKIP
    1
    """
    from eo_contrast.models import DualEncoder

    runs = []
    for s in seeds:
        meta = like.metadata
        fresh = DualEncoder(
            meta["bands"],
            arch=like.arch,
            stem=like.stem,
            width=like.width,
            embed_dim=like.embed_dim,
            normalization=like.normalization,
            seed=int(s),
        )
        runs.append(heldout_retrieval(fresh, data, tile=tile))
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    out["n_seeds"] = len(runs)
    return out


def _plot_loss(model: DualEncoder, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = model.history
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(h["step"], h["loss"], lw=0.8, color="0.6", label="per update")
    smooth = h["loss"].rolling(10, min_periods=1).mean()
    ax.plot(h["step"], smooth, lw=1.5, color="C0", label="mean of 10")
    ax.set_xlabel("update")
    ax.set_ylabel("symmetric InfoNCE loss")
    ax.set_title("default weights: training loss")
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train, write the weights, print held-out scores as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m eo_contrast.pipelines.default_weights",
        description="Train eo-contrast's default weights (DEFAULT_RECIPE) on the CPU.",
    )
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--data", default=None, help="shared data folder (default: "
                        "$EO_CONTRAST_SHARED_DATA or ../shared/data)")  # fmt: skip
    parser.add_argument("--figure", default=None, help="write the loss curve PNG here")
    parser.add_argument("--baseline-seeds", type=int, default=5,
                        help="random-init models to average for the baseline (0: none)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    recipe = {} if args.epochs is None else {"epochs": args.epochs}
    model = train_default_weights(args.out, data=args.data, recipe=recipe, progress=args.progress)
    report: dict[str, Any] = {
        "out": str(args.out),
        "bytes": Path(args.out).stat().st_size,
        "trained_on": model.trained_on,
        "final_loss": model.info.get("final_loss"),
        "default": model.info["heldout_retrieval"],
    }
    if args.baseline_seeds:
        report["random_init"] = random_baseline(
            model,
            args.data,
            seeds=range(args.baseline_seeds),
            tile=int(model.info["recipe"]["tile"]),
        )
    if args.figure:
        _plot_loss(model, Path(args.figure))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
