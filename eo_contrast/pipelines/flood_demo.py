"""A real flood map: Sen1Floods11 chip, train on the western half, map water on the eastern half.

The chip (``Spain_7370579``, 512 x 512 pixels of about 10 m, Segura river, September 2019) is
split along ``x`` into two halves that share no pixel: columns ``[0, W/2)`` (west) give the
training tiles and labels, columns ``[W/2, W)`` (east) are only predicted and scored. Three
segmentation models are fitted with :func:`eo_contrast.segmentation.fit_segmentation` on the
same encoder: S1 features only, S2 features only, and both (fused per pyramid level). Each is
scored by water intersection-over-union against the hand label on the eastern half (pixels
labelled -1 are left out). For reference, a VH threshold picked on the western half (the best
IoU there) is scored the same way.

Run it with ``python -m eo_contrast.pipelines.flood_demo --figure docs/img/flood_sen1floods11.png``.
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

from eo_contrast.metrics import water_iou

__all__ = ["FloodResult", "flood_experiment", "main", "vh_threshold_baseline", "water_iou"]

SETTINGS: dict[str, tuple[str, ...]] = {"s1": ("s1",), "s2": ("s2",), "s1+s2": ("s1", "s2")}


def vh_threshold_baseline(
    vh_train: np.ndarray, label_train: np.ndarray, vh_test: np.ndarray
) -> tuple[float, np.ndarray]:
    """Water where VH (dB) is below the threshold with the best water IoU on the training pixels.

    Examples
    --------
    >>> import numpy as np
    >>> vh = np.array([[-27.0, -26.0, -15.0, -14.0]])
    >>> thr, pred = vh_threshold_baseline(vh, np.array([[1, 1, 0, 0]]), vh)
    >>> pred.tolist()
    [[1, 1, 0, 0]]
    """
    candidates = np.arange(-30.0, -10.0, 0.25)
    scores = [water_iou((vh_train < c).astype(int), label_train) for c in candidates]
    best = float(candidates[int(np.nanargmax(scores))])
    pred = np.where(np.isfinite(vh_test), (vh_test < best).astype(np.int16), -1)
    return best, pred.astype(np.int16)


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
    from eo_contrast.datasets.sen1floods11 import _example_root, read_sen1floods11
    from eo_contrast.segmentation import fit_segmentation

    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        raise ValueError(f"settings {list(settings)!r}: choose among {list(SETTINGS)}")
    data = read_sen1floods11(_example_root() if root is None else root, chip)
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
    """Command line: run :func:`flood_experiment` and print the IoU table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", default=None, help="folder with the Sen1Floods11 chip")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--tiles-per-epoch", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--figure", default=None, help="PNG to write")
    args = parser.parse_args(argv)
    res = flood_experiment(
        args.root,
        epochs=args.epochs,
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
