"""The offline demo: the sample scene, from STAC to paired S1/S2 cubes in a local Zarr store."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from eo_contrast.datasets import synthetic_scene
from eo_contrast.pairing import pair
from eo_contrast.stac import load_stac
from eo_contrast.store import to_zarr


@dataclass
class DemoResult:
    """What the demo wrote, and where."""

    out: Path
    scene_root: Path
    pairs_store: Path
    pairs: xr.Dataset
    model_path: Path | None = None
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A human-readable account of what was written."""
        return "\n".join(self.lines)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_demo(
    out: str | Path = "demo-output",
    *,
    size: int = 256,
    seed: int = 0,
    tile: int = 64,
    max_dt: str = "3D",
    overwrite: bool = False,
    progress: bool = True,
    pretrain_epochs: int = 2,
    batch_size: int = 16,
    width: int = 32,
    segment_epochs: int = 2,
) -> DemoResult:
    """Run the main job offline on the embedded sample scene.

    Builds the synthetic S1/S2 flood scene (COGs and a STAC catalogue) under ``out/scene``, loads
    both sensors from their STAC items with :func:`eo_contrast.load_stac`, pairs them in time with
    :func:`eo_contrast.pair`, writes the pairs to ``out/pairs.zarr`` with
    :func:`eo_contrast.to_zarr`, then pretrains a dual encoder briefly on the pairs read back
    from that store (:func:`eo_contrast.pretrain`) and saves it to ``out/model.safetensors``.
    With that encoder it embeds the pairs, each sensor by its own encoder
    (``out/embeddings.zarr``: variables ``s1`` and ``s2``, ``(pair, feature, y, x)``), fits a
    flood segmentation on the S1+S2 pair nearest the flood peak against the scene's water label
    (:func:`eo_contrast.fit_segmentation`), segments every pair (``out/flood.zarr``) and draws a
    preview (``out/preview.png``: S2 true colour, PCA-RGB of the embeddings, S1 VH, flood map).

    Parameters
    ----------
    out
        Output folder.
    size
        Edge of the sample scene in 10 m pixels.
    seed
        Seed of the sample scene.
    tile
        Tile edge in pixels; chunks are aligned to it.
    max_dt
        Largest S1/S2 time gap of a pair.
    overwrite
        Replace outputs of an earlier run; otherwise an existing output is an error.
    progress
        Show progress bars while writing and training.
    pretrain_epochs
        Epochs of the brief pretraining; 0 skips it.
    batch_size
        Tiles per training batch.
    width
        Width of the ResNet-18 encoders (32: a quarter of the standard model's parameters).
    segment_epochs
        Epochs of the flood segmentation fit; 0 skips embedding and segmentation.
    """
    out = Path(out)
    store_path = out / "pairs.zarr"
    if store_path.exists() and not overwrite:
        raise FileExistsError(
            f"{store_path} already exists: pass overwrite=True (CLI: --overwrite) to replace it"
        )
    out.mkdir(parents=True, exist_ok=True)
    scene = synthetic_scene(out / "scene", size=size, seed=seed, overwrite=overwrite)
    chunk = tile * max(1, size // tile // 2)  # a few chunks per scene, each whole tiles
    s1 = load_stac(scene.s1_items, chunks=chunk)
    s2 = load_stac(scene.s2_items, chunks=chunk)
    pairs = pair(s1, s2, max_dt=max_dt)
    if store_path.exists():
        shutil.rmtree(store_path)
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=0.5):
            to_zarr(pairs, store_path, mode="w")
    else:
        to_zarr(pairs, store_path, mode="w")

    written = xr.open_zarr(store_path)
    lines = [
        f"sample scene: {scene.root} ({size}x{size} px, seed {seed})",
        f"S1 cube: {dict(s1.sizes)} bands {list(map(str, s1.band.values))} units dB, CRS {s1.rio.crs}",
        f"S2 cube: {dict(s2.sizes)} bands {list(map(str, s2.band.values))} reflectance, CRS {s2.rio.crs}",
        f"pairs (max_dt={max_dt}): {written.sizes['pair']}",
    ]
    for s1t, s2t, dt in zip(
        written.s1_time.values, written.s2_time.values, written.dt.values, strict=True
    ):
        lines.append(
            f"  S2 {pd.Timestamp(s2t):%Y-%m-%d %H:%M} <- S1 {pd.Timestamp(s1t):%Y-%m-%d %H:%M}"
            f"  dt {pd.Timedelta(dt)}"
        )
    lines.append(
        f"wrote {store_path} (Zarr v3, {_dir_size(store_path) / 1e6:.1f} MB): "
        + ", ".join(f"{k} {tuple(v.dims)} {tuple(v.shape)}" for k, v in written.data_vars.items())
        + f"; CRS {written.rio.crs}"
    )
    model_path = None
    if pretrain_epochs > 0:
        from eo_contrast.training import pretrain

        model = pretrain(
            written,
            epochs=pretrain_epochs,
            tile=tile,
            batch_size=batch_size,
            seed=seed,
            width=width,
            progress=progress,
        )
        model_path = model.save(out / "model.safetensors")
        hist = model.history
        lines.append(
            f"pretrained {model.arch} dual encoder ({model.method}): {len(hist)} steps of "
            f"{batch_size} tile pairs ({tile} px), loss {hist['loss'].iloc[0]:.3f} -> "
            f"{hist['loss'].iloc[-1]:.3f}, temperature {float(model.temperature.detach()):.3f}"
        )
        lines.append(
            f"wrote {model_path} ({model_path.stat().st_size / 1e6:.1f} MB, safetensors with "
            "bands, units and normalisation in its metadata)"
        )
    if model_path is not None and segment_epochs > 0:
        lines.extend(
            _embed_and_segment(
                written,
                scene,
                model,
                out,
                tile=tile,
                epochs=segment_epochs,
                seed=seed,
                progress=progress,
            )
        )
    return DemoResult(
        out=out,
        scene_root=Path(scene.root),
        pairs_store=store_path,
        pairs=written,
        model_path=model_path,
        lines=lines,
    )


def _embed_and_segment(
    pairs: xr.Dataset,
    scene: Any,
    model: Any,
    out: Path,
    *,
    tile: int,
    epochs: int,
    seed: int,
    progress: bool,
) -> list[str]:
    """Embed the pairs (S1 and S2), fit and apply a flood segmentation, write both, preview."""
    import numpy as np

    from eo_contrast.inference import embed, segment
    from eo_contrast.pipelines.flood_demo import water_iou
    from eo_contrast.segmentation import fit_segmentation

    lines = []
    # the pairs Dataset as it is: s1 and s2, each (pair, feature, y, x), by its own encoder
    emb = embed(pairs, model, level="tile", tile=tile)
    assert isinstance(emb, xr.Dataset)  # a pairs Dataset gives one variable per sensor
    emb_store = out / "embeddings.zarr"
    _write(emb, emb_store, progress)
    sizes = dict(emb["s2"].sizes)
    lines.append(
        f"wrote {emb_store}: s1 and s2 embeddings {sizes} (one {sizes['feature']}-d vector "
        f"per {tile} px tile, each sensor by its own encoder), CRS {emb.rio.crs}"
    )

    label = xr.open_dataarray(scene.label, engine="rasterio", mask_and_scale=False)
    label = label.squeeze("band", drop=True).astype("int16")
    label = label.assign_coords(y=pairs.y.values, x=pairs.x.values)
    event = int(np.argmin(np.abs(pairs.s2_time.values - np.datetime64(scene.event_time))))
    seg = fit_segmentation(
        pairs.isel(pair=[event]),
        label,
        encoder=model,
        classes=["dry", "water"],
        epochs=epochs,
        tile=tile,
        seed=seed,
        progress=progress,
    )
    seg_path = seg.save(out / "flood_model.safetensors")
    flood = segment(pairs, seg)
    flood_store = out / "flood.zarr"
    _write(flood.rename("flood"), flood_store, progress)
    written = xr.open_zarr(flood_store)["flood"]
    iou = water_iou(written.isel(pair=event).values, label.values)
    lines.append(
        f"wrote {seg_path} and {flood_store}: flood {dict(written.sizes)} class ids "
        f"(0 dry, 1 water, -1 nodata); water IoU against the scene's label at the flood peak "
        f"{iou:.2f} (fitted on that pair: a demo, not an evaluation)"
    )
    preview = _preview(pairs, emb, written, label, event, out / "preview.png")
    if preview is not None:
        lines.append(f"wrote {preview}")
    return lines


def _write(obj: xr.DataArray | xr.Dataset, store: Path, progress: bool) -> None:
    from eo_contrast.store import to_zarr

    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=0.5):
            to_zarr(obj, store, mode="w")
    else:
        to_zarr(obj, store, mode="w")


def pca_rgb(emb: xr.DataArray) -> Any:
    """First three principal components of a ``(feature, y, x)`` embedding, scaled to 0..1."""
    import numpy as np

    arr = np.asarray(emb.transpose("feature", "y", "x").values, dtype="float64")
    flat = arr.reshape(arr.shape[0], -1).T
    ok = np.isfinite(flat).all(axis=1)
    rgb = np.zeros((flat.shape[0], 3))
    if ok.sum() >= 3:
        x = flat[ok] - flat[ok].mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        comp = x @ vt[:3].T
        lo, hi = np.percentile(comp, 2, axis=0), np.percentile(comp, 98, axis=0)
        rgb[ok] = np.clip((comp - lo) / np.where(hi > lo, hi - lo, 1), 0, 1)
    return rgb.reshape(arr.shape[1], arr.shape[2], 3)


def _preview(
    pairs: xr.Dataset,
    emb: xr.Dataset,
    flood: xr.DataArray,
    label: xr.DataArray,
    event: int,
    path: Path,
) -> Path | None:
    """S2 true colour, PCA-RGB of the embeddings, S1 VH and the flood map of the event pair."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot extra is not installed
        return None
    import numpy as np

    p = pairs.isel(pair=event)
    rgb = np.stack([p.s2.sel(s2_band=b).values for b in ("B04", "B03", "B02")], axis=-1)
    fig, ax = plt.subplots(1, 4, figsize=(16, 4.4), constrained_layout=True)
    ax[0].imshow(np.clip(np.nan_to_num(rgb) * 3.5, 0, 1))
    ax[0].set_title(f"S2 true colour {str(p.s2_time.values)[:10]}")
    ax[1].imshow(pca_rgb(emb["s2"].isel(pair=event)), interpolation="nearest")
    ax[1].set_title("S2 embeddings (PCA-RGB, one per tile)")
    ax[2].imshow(p.s1.sel(s1_band="vh").values, cmap="gray", vmin=-30, vmax=-5)
    ax[2].set_title(f"S1 VH (dB) {str(p.s1_time.values)[:10]}")
    fl = flood.isel(pair=event).values.astype("float32")
    fl[fl < 0] = np.nan
    ax[3].imshow(fl, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax[3].contour(label.values == 1, levels=[0.5], colors="orange", linewidths=0.6)
    ax[3].set_title("flood map (blue), label outline (orange)")
    for a in ax:
        a.set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
