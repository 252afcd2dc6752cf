"""The offline demo: the sample scene, from STAC to paired S1/S2 cubes in a local Zarr store."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

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
) -> DemoResult:
    """Run the main job offline on the embedded sample scene.

    Builds the synthetic S1/S2 flood scene (COGs and a STAC catalogue) under ``out/scene``, loads
    both sensors from their STAC items with :func:`eo_contrast.load_stac`, pairs them in time with
    :func:`eo_contrast.pair`, writes the pairs to ``out/pairs.zarr`` with
    :func:`eo_contrast.to_zarr`, then pretrains a dual encoder briefly on the pairs read back
    from that store (:func:`eo_contrast.pretrain`) and saves it to ``out/model.safetensors``.

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
    return DemoResult(
        out=out,
        scene_root=Path(scene.root),
        pairs_store=store_path,
        pairs=written,
        model_path=model_path,
        lines=lines,
    )
