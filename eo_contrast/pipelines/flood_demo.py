"""Real flood maps on Sen1Floods11: leave-one-event-out over many chips, and one chip split in two.

Two experiments, both scored by water intersection-over-union against the hand labels (pixels
labelled -1 are left out):

* :func:`leave_one_event_out`: the chips of every flood event but one train an S1 water
  segmentation (:func:`eo_contrast.fit_segmentation` on a list of chips, each on its own
  grid), the held-out event's chips are mapped and scored; every event is held out in turn.
  Compared with a VH threshold fitted on the same training chips, with the default encoder
  frozen and fine-tuned.
* :func:`flood_experiment`: the S1+S2 chip ``Spain_7370579`` split into a western (training)
  and an eastern (test) half, for S1, S2 and S1+S2 features.

The chip (``Spain_7370579``, 512 x 512 pixels of about 10 m, Segura river, September 2019) is
split along ``x`` into two halves that share no pixel: columns ``[0, W/2)`` (west) give the
training tiles and labels, columns ``[W/2, W)`` (east) are only predicted and scored. Three
segmentation models are fitted with :func:`eo_contrast.segmentation.fit_segmentation` on the
same encoder: S1 features only, S2 features only, and both (fused per pyramid level). Each is
scored by water intersection-over-union against the hand label on the eastern half (pixels
labelled -1 are left out). For reference, a VH threshold picked on the western half (the best
IoU there) is scored the same way.

Run them with ``python -m eo_contrast.pipelines.flood_demo loeo --figure docs/img/flood_loeo.png``
and ``python -m eo_contrast.pipelines.flood_demo halves --figure docs/img/flood_sen1floods11.png``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eo_contrast.metrics import water_counts, water_iou

__all__ = [
    "FloodResult",
    "LeaveOneEventOut",
    "fit_vh_threshold",
    "flood_experiment",
    "leave_one_event_out",
    "main",
    "vh_threshold_baseline",
    "vh_threshold_map",
    "water_iou",
]

SETTINGS: dict[str, tuple[str, ...]] = {"s1": ("s1",), "s2": ("s2",), "s1+s2": ("s1", "s2")}


def vh_threshold_baseline(
    vh_train: np.ndarray, label_train: np.ndarray, vh_test: np.ndarray
) -> tuple[float, np.ndarray]:
    """Water where VH (dB) is below the threshold with the best water IoU on the training pixels.

    The threshold is :func:`fit_vh_threshold` of the training pixels, the map
    :func:`vh_threshold_map` of the test pixels.

    Examples
    --------
    >>> import numpy as np
    >>> vh = np.array([[-27.0, -26.0, -15.0, -14.0]])
    >>> thr, pred = vh_threshold_baseline(vh, np.array([[1, 1, 0, 0]]), vh)
    >>> pred.tolist()
    [[1, 1, 0, 0]]
    """
    best = fit_vh_threshold([vh_train], [label_train])
    return best, vh_threshold_map(vh_test, best)


def vh_threshold_map(vh: np.ndarray, threshold: float) -> np.ndarray:
    """int16 water map: 1 where ``vh < threshold``, 0 elsewhere, -1 where VH is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> vh_threshold_map(np.array([-25.0, -12.0, np.nan]), -20.0).tolist()
    [1, 0, -1]
    """
    vh = np.asarray(vh)
    return np.where(np.isfinite(vh), vh < threshold, -1).astype(np.int16)


#: Candidate VH thresholds (dB) of :func:`fit_vh_threshold`.
VH_CANDIDATES = np.arange(-30.0, -10.0, 0.25)


def fit_vh_threshold(
    vh: Sequence[np.ndarray], labels: Sequence[np.ndarray], candidates: np.ndarray = VH_CANDIDATES
) -> float:
    """The VH threshold (dB) with the best aggregated water IoU over all the given chips.

    Water is ``vh < threshold``; the IoU is summed over the chips (all intersections over all
    unions), counting labelled pixels only (NaN VH is "not water").

    Examples
    --------
    >>> import numpy as np
    >>> fit_vh_threshold([np.array([-27.0, -15.0]), np.array([-24.0, -19.0])],
    ...                  [np.array([1, 0]), np.array([1, 0])])
    -23.75
    """
    edges = np.append(np.asarray(candidates, dtype=np.float64), np.inf)
    below_water = np.zeros(len(edges) - 1)
    below_dry = np.zeros(len(edges) - 1)
    n_water = 0
    for v, lab in zip(vh, labels, strict=True):
        v, lab = np.asarray(v, dtype=np.float64).ravel(), np.asarray(lab).ravel()
        n_water += int((lab == 1).sum())  # water with NaN VH is missed: it stays in the union
        ok = np.isfinite(v) & (lab >= 0)
        for target, is_class in ((below_water, lab == 1), (below_dry, lab == 0)):
            # pixels below each candidate: the cumulative count up to it
            hist, _ = np.histogram(v[ok & is_class], bins=np.concatenate(([-np.inf], edges)))
            target += np.cumsum(hist)[:-1]
    union = n_water + below_dry
    # no water anywhere and none predicted: no IoU (NaN), never the best candidate
    iou = np.divide(below_water, union, out=np.full_like(union, np.nan), where=union > 0)
    return float(candidates[int(np.nanargmax(iou))])


@dataclass
class FloodResult:
    """Outcome of :func:`flood_experiment`."""

    iou: dict[str, float]
    """Water IoU on the eastern (test) half per setting (``"s1"``, ``"s2"``, ``"s1+s2"``)."""
    encoder: str
    """Which encoder the features came from."""
    split: str
    """How the chip was split."""
    baseline_iou: float
    """Water IoU on the test half of the VH threshold chosen on the training half."""
    baseline_threshold: float
    seconds: dict[str, float]
    """Training time per setting."""
    predictions: dict[str, np.ndarray] = field(repr=False)
    models: dict[str, Any] = field(repr=False)
    figure: Path | None = None

    def table(self) -> pd.DataFrame:
        """Water IoU per setting (and the VH threshold baseline), as a table."""
        rows = [
            {"features": k, "water_iou": v, "train_s": self.seconds.get(k)}
            for k, v in self.iou.items()
        ]
        rows.append(
            {
                "features": f"VH < {self.baseline_threshold:g} dB (baseline)",
                "water_iou": self.baseline_iou,
                "train_s": None,
            }
        )
        return pd.DataFrame(rows)


def _default_encoder() -> tuple[Any, str]:
    from eo_contrast.models import DualEncoder

    try:
        model = DualEncoder.default()
    except FileNotFoundError:
        return (
            DualEncoder(width=32, seed=0),
            "randomly initialised ResNet-18 (width 32, seed 0): no default weights installed",
        )
    return model, f"DualEncoder.default() ({model.trained_on})"


def flood_experiment(
    root: str | Path | None = None,
    *,
    chip: str = "Spain_7370579",
    encoder: Any = None,
    settings: Sequence[str] = ("s1", "s2", "s1+s2"),
    epochs: int = 4,
    tile: int = 64,
    batch_size: int = 16,
    tiles_per_epoch: int | None = None,
    freeze_encoder: bool = True,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    figure: str | Path | None = None,
) -> FloodResult:
    """Fit water segmentation on the western half of a Sen1Floods11 chip, score the eastern half.

    Parameters
    ----------
    root
        Folder with the chip's GeoTIFFs (``None``: the shared data folder's
        ``sen1floods11_spain``).
    chip
        Chip name.
    encoder
        A :class:`~eo_contrast.models.DualEncoder` with S1 and S2 encoders; ``None``:
        :meth:`DualEncoder.default` when installed, else a randomly initialised ResNet-18 of
        width 32 (``FloodResult.encoder`` says which).
    settings
        Feature sets to compare, among ``"s1"``, ``"s2"``, ``"s1+s2"``.
    epochs, tile, batch_size, tiles_per_epoch, freeze_encoder, seed, device, progress
        Passed to :func:`~eo_contrast.segmentation.fit_segmentation`.
    figure
        Where to save a PNG of the test half: S2 RGB, S1 VH, label, prediction of the last
        setting (``None``: no figure).

    Returns
    -------
    FloodResult
        Water IoU per setting on the test half, the VH threshold baseline, predictions.

    Examples
    --------
    Needs the chip's files and a few minutes of CPU (``tests/test_segmentation.py`` runs a small
    version):

    >>> res = flood_experiment(epochs=5, tiles_per_epoch=128)  # doctest: +SKIP
    >>> res.split  # doctest: +SKIP
    'train: x columns [0, 256) (west); test: x columns [256, 512) (east)'
    >>> res.table()  # doctest: +SKIP
    """
    from eo_contrast.datasets.sen1floods11 import read_sen1floods11
    from eo_contrast.datasets.shared_data import example_path
    from eo_contrast.segmentation import fit_segmentation

    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        raise ValueError(f"settings {list(settings)!r}: choose among {list(SETTINGS)}")
    if root is None:
        root = example_path("sen1floods11_spain")
    data = read_sen1floods11(root, chip, sensors=("s1", "s2"))
    assert data.s2 is not None  # sensors=("s1", "s2") requires the S2 file
    if encoder is None:
        encoder, description = _default_encoder()
    else:
        description = f"given encoder ({getattr(encoder, 'trained_on', 'unknown')})"
    width = data.label.sizes["x"]
    half = width // 2
    split = f"train: x columns [0, {half}) (west); test: x columns [{half}, {width}) (east)"
    west, east = slice(0, half), slice(half, width)
    # one grid and no time axis: S1 and S2 were acquired a day apart, and the S2 file's
    # coordinates differ from S1's by float rounding only
    s1_img = data.s1.isel(time=0, drop=True)
    s2_img = data.s2.isel(time=0, drop=True).assign_coords(x=s1_img.x, y=s1_img.y)
    cube = xr.Dataset(
        {
            "s1": s1_img.rename(band="s1_band", units="s1_units"),
            "s2": s2_img.rename(band="s2_band", units="s2_units"),
        }
    )
    train_cube = cube.isel(x=west)
    train_label = data.label.isel(x=west)
    test_label = np.asarray(data.label.isel(x=east).values)
    sensor_cubes = {"s1": data.s1, "s2": data.s2}
    test_inputs = {
        s: np.asarray(c.isel(time=0, x=east).sel(band=encoder.bands[s]).values)
        for s, c in sensor_cubes.items()
    }

    iou: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for setting in settings:
        t0 = time.perf_counter()
        seg = fit_segmentation(
            train_cube,
            train_label,
            encoder=encoder,
            classes=["dry", "water"],
            freeze_encoder=freeze_encoder,
            epochs=epochs,
            tile=tile,
            batch_size=batch_size,
            tiles_per_epoch=tiles_per_epoch,
            seed=seed,
            device=device,
            sensors=SETTINGS[setting],
            progress=progress,
        )
        seconds[setting] = time.perf_counter() - t0
        pred = seg.predict({s: test_inputs[s] for s in seg.sensors})
        preds[setting] = pred
        models[setting] = seg
        iou[setting] = water_iou(pred, test_label)

    vh = np.asarray(data.s1.sel(band="vh").isel(time=0).values)
    thr, base = vh_threshold_baseline(vh[:, west], np.asarray(train_label.values), vh[:, east])
    result = FloodResult(
        iou=iou,
        encoder=description,
        split=split,
        baseline_iou=water_iou(base, test_label),
        baseline_threshold=thr,
        seconds=seconds,
        predictions=preds,
        models=models,
    )
    if figure is not None:
        last = list(settings)[-1]
        result.figure = _figure(
            Path(figure),
            s2=np.asarray(data.s2.isel(time=0, x=east).sel(band=["B04", "B03", "B02"]).values),
            vh=vh[:, east],
            label=test_label,
            pred=preds[last],
            title=f"{last} features, water IoU {iou[last]:.2f}",
        )
    return result


#: The methods :func:`leave_one_event_out` compares, by name.
LOEO_METHODS: dict[str, str] = {
    "threshold": "VH threshold (fitted on the training chips)",
    "frozen": "S1 model, default encoder frozen",
    "finetuned": "S1 model, default encoder fine-tuned",
}


@dataclass
class LeaveOneEventOut:
    """Outcome of :func:`leave_one_event_out`."""

    scores: pd.DataFrame
    """One row per held-out event and method: ``event``, ``chips``, ``method``,
    ``intersection``, ``union`` (water pixel counts over the event's chips) and ``iou``."""
    thresholds: dict[str, float]
    """Held-out event -> the VH threshold (dB) fitted on the other events' chips."""
    encoder: str
    """Which encoder the models were built on."""
    settings: dict[str, Any]
    """How the models were trained (the :func:`~eo_contrast.fit_segmentation` arguments)."""
    seconds: dict[str, float]
    """Training time per method, all rotations together."""
    predictions: dict[str, dict[str, np.ndarray]] = field(repr=False)
    """Method -> chip -> water map ``(y, x)`` of the chip when its event was held out."""
    figure: Path | None = None

    def aggregated(self) -> pd.Series:
        """Water IoU per method over all held-out chips: summed intersections / summed unions."""
        sums = self.scores.groupby("method", sort=False)[["intersection", "union"]].sum()
        return (sums["intersection"] / sums["union"]).rename("aggregated water IoU")

    def table(self) -> pd.DataFrame:
        """Water IoU per held-out event (rows) and method (columns), then the aggregate.

        An event without water in its label and none predicted has no IoU (NaN); with false
        alarms its IoU is 0.
        """
        wide = self.scores.pivot(index="event", columns="method", values="iou")
        wide = wide[[m for m in self.scores["method"].unique()]]
        wide.loc["aggregated"] = self.aggregated()
        wide.columns.name = None
        return wide


def leave_one_event_out(
    root: str | Path | None = None,
    *,
    split: str | None = None,
    encoder: Any = None,
    methods: Sequence[str] = ("threshold", "frozen", "finetuned"),
    epochs: int = 5,
    tile: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    figure: str | Path | None = None,
    **fit_kwargs: Any,
) -> LeaveOneEventOut:
    """Leave-one-event-out water mapping from S1 on Sen1Floods11 hand-labelled chips.

    For every flood event in turn, the chips of all the other events train (each chip on its
    own grid, :func:`eo_contrast.fit_segmentation` on lists) and the held-out event's chips are
    mapped with :func:`eo_contrast.segment` and scored. Methods:

    * ``"threshold"``: water where VH < t, with t fitted on the training chips
      (:func:`fit_vh_threshold`, best aggregated IoU);
    * ``"frozen"``: the S1 segmentation model on the frozen encoder;
    * ``"finetuned"``: the same with the encoder fine-tuned.

    Parameters
    ----------
    root
        The Sen1Floods11 dataset root (or its ``HandLabeled`` folder); ``None``: the shared
        data folder's ``sen1floods11_handlabeled``.
    split
        Use the chips of this split only (``"train"``, ``"valid"``, ``"test"``, ``"bolivia"``);
        ``None``: every chip found.
    encoder
        A :class:`~eo_contrast.models.DualEncoder` with an S1 encoder; ``None``:
        :meth:`DualEncoder.default` when installed, else a randomly initialised ResNet-18.
    methods
        Among ``"threshold"``, ``"frozen"``, ``"finetuned"``.
    epochs, tile, batch_size, seed, device, progress, fit_kwargs
        Passed to :func:`~eo_contrast.fit_segmentation` (``lr``, ``class_weights``, ...).
    figure
        Where to save a PNG of every held-out event: VH, label and each method's map.

    Returns
    -------
    LeaveOneEventOut
        Per-event and aggregated water IoU (:meth:`LeaveOneEventOut.table`), thresholds and
        maps.

    Examples
    --------
    Needs the six shared chips and a few CPU minutes (``docs/flood.md`` has the figures):

    >>> res = leave_one_event_out()  # doctest: +SKIP
    >>> res.table().round(3)  # doctest: +SKIP
    """
    from eo_contrast.datasets.sen1floods11 import read_sen1floods11
    from eo_contrast.datasets.shared_data import example_path
    from eo_contrast.inference import segment
    from eo_contrast.segmentation import fit_segmentation

    unknown = [m for m in methods if m not in LOEO_METHODS]
    if unknown or not methods:
        raise ValueError(f"methods {list(methods)!r}: choose among {list(LOEO_METHODS)}")
    root = example_path("sen1floods11_handlabeled") if root is None else root
    chips = read_sen1floods11(root, split=split, sensors=("s1",))
    events = sorted({c.event for c in chips})
    if len(events) < 2:
        raise ValueError(
            f"leave-one-event-out needs chips of at least 2 flood events; {root} has "
            f"{len(chips)} chip(s) of {events}"
        )
    if encoder is None:
        encoder, description = _default_encoder()
    else:
        description = f"given encoder ({getattr(encoder, 'trained_on', 'unknown')})"
    settings: dict[str, Any] = {
        "epochs": epochs,
        "tile": tile,
        "batch_size": batch_size,
        "seed": seed,
    }
    settings.update(fit_kwargs)
    labels = {c.chip: np.asarray(c.label.values) for c in chips}
    vh = {c.chip: np.asarray(c.s1.sel(band="vh").isel(time=0).values) for c in chips}
    rows: list[dict[str, Any]] = []
    thresholds: dict[str, float] = {}
    preds: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for event in events:
        test = [c for c in chips if c.event == event]
        train = [c for c in chips if c.event != event]
        for method in methods:
            if method == "threshold":
                t0 = time.perf_counter()
                thr = fit_vh_threshold([vh[c.chip] for c in train], [labels[c.chip] for c in train])
                thresholds[event] = thr
                maps = {c.chip: vh_threshold_map(vh[c.chip], thr) for c in test}
            else:
                t0 = time.perf_counter()
                seg = fit_segmentation(
                    [c.s1 for c in train],
                    [c.label for c in train],
                    encoder=encoder,
                    classes=["dry", "water"],
                    freeze_encoder=method == "frozen",
                    device=device,
                    progress=progress,
                    **settings,
                )
                maps = {c.chip: segment(c.s1, seg).isel(time=0).values for c in test}
            seconds[method] += time.perf_counter() - t0
            preds[method].update(maps)
            counts = [water_counts(maps[c.chip], labels[c.chip]) for c in test]
            inter, union = (sum(v) for v in zip(*counts, strict=True))
            rows.append(
                {
                    "event": event,
                    "chips": len(test),
                    "method": method,
                    "intersection": inter,
                    "union": union,
                    "iou": inter / union if union else float("nan"),
                }
            )
    result = LeaveOneEventOut(
        scores=pd.DataFrame(rows),
        thresholds=thresholds,
        encoder=description,
        settings=settings,
        seconds=seconds,
        predictions=preds,
    )
    if figure is not None:
        first = {e: next(c for c in chips if c.event == e) for e in events}
        result.figure = _loeo_figure(Path(figure), result, first, vh, labels)
    return result


def _loeo_figure(
    path: Path,
    result: LeaveOneEventOut,
    first: dict[str, Any],
    vh: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#d9d9d9", "#c2a878", "#1f5fbf"])  # nodata, dry, water
    methods = list(result.predictions)
    iou = result.scores.set_index(["event", "method"])["iou"]
    events = list(first)
    fig, axes = plt.subplots(
        len(events), 2 + len(methods), figsize=(2.1 * (2 + len(methods)), 2.2 * len(events))
    )
    axes = np.atleast_2d(axes)
    for row, event in enumerate(events):
        chip = first[event].chip
        ax = axes[row]
        ax[0].imshow(vh[chip], cmap="gray", vmin=-30, vmax=-5)
        ax[0].set_ylabel(f"{event}\n{chip}", fontsize=8)
        ax[1].imshow(labels[chip] + 1, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        for j, method in enumerate(methods):
            pred = result.predictions[method][chip]
            ax[2 + j].imshow(pred + 1, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            value = iou[(event, method)]
            text = "no water" if np.isnan(value) else f"IoU {value:.2f}"
            if method == "threshold":
                text += f" (VH < {result.thresholds[event]:g})"
            ax[2 + j].set_title(text, fontsize=8)
        if row == 0:
            ax[0].set_title("S1 VH (dB)", fontsize=8)
            ax[1].set_title("hand label (water blue)", fontsize=8)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    agg = result.aggregated()
    heads = ", ".join(f"{m}: {agg[m]:.3f}" for m in methods)
    fig.suptitle(
        f"Sen1Floods11 leave-one-event-out (each row held out); aggregated water IoU: {heads}",
        fontsize=9,
    )
    for j, method in enumerate(methods):
        axes[-1][2 + j].set_xlabel(method, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _figure(
    path: Path, *, s2: np.ndarray, vh: np.ndarray, label: np.ndarray, pred: np.ndarray, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rgb = np.clip(np.nan_to_num(np.moveaxis(s2, 0, -1)) / 0.3, 0, 1)
    cmap = ListedColormap(["#d9d9d9", "#c2a878", "#1f5fbf"])  # nodata, dry, water
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
    axes[0].imshow(rgb)
    axes[0].set_title("S2 RGB (B04, B03, B02)")
    axes[1].imshow(vh, cmap="gray", vmin=-30, vmax=-5)
    axes[1].set_title("S1 VH (dB, -30..-5)")
    axes[2].imshow(label + 1, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
    axes[2].set_title("hand label (water blue)")
    axes[3].imshow(pred + 1, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
    axes[3].set_title(f"prediction: {title}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Sen1Floods11 Spain_7370579, eastern half (not seen in training)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run :func:`leave_one_event_out` (``loeo``) or :func:`flood_experiment`
    (``halves``) and print the IoU table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "experiment",
        nargs="?",
        choices=["loeo", "halves"],
        default="halves",
        help="loeo: leave-one-event-out over the hand-labelled chips; halves: the Spain chip "
        "split into a western (training) and an eastern (test) half (default)",
    )
    parser.add_argument("--root", default=None, help="Sen1Floods11 folder (dataset root or chip)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 5 (loeo), 4 (halves)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--tiles-per-epoch", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--figure", default=None, help="PNG to write")
    args = parser.parse_args(argv)
    if args.experiment == "loeo":
        loeo = leave_one_event_out(
            args.root,
            epochs=args.epochs or 5,
            tile=args.tile,
            tiles_per_epoch=args.tiles_per_epoch,
            device=args.device,
            progress=True,
            figure=args.figure,
        )
        print(f"encoder: {loeo.encoder}\nsettings: {loeo.settings}")
        print(f"VH thresholds (dB) per held-out event: {loeo.thresholds}")
        print(loeo.table().round(3).to_string())
        print(f"training seconds: { {k: round(v) for k, v in loeo.seconds.items()} }")
        return 0
    res = flood_experiment(
        args.root,
        epochs=args.epochs or 4,
        tile=args.tile,
        tiles_per_epoch=args.tiles_per_epoch,
        device=args.device,
        progress=True,
        figure=args.figure,
    )
    print(f"encoder: {res.encoder}\nsplit: {res.split}")
    print(res.table().to_string(index=False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
