"""The `.contrast` accessor: a thin shell that gives the same results as the plain functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import eo_contrast as ec


def test_accessor_registered_on_both_types() -> None:
    assert hasattr(xr.DataArray, "contrast")
    assert hasattr(xr.Dataset, "contrast")


def test_pair_on_real_sen1floods11_chip(shared_data: Path) -> None:
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain")
    pairs = chip.s1.contrast.pair(chip.s2, max_dt="3D")
    assert pairs.sizes["pair"] == 1
    assert pd.Timestamp(pairs.s1_time.values[0]) == pd.Timestamp("2019-09-17")
    assert pd.Timestamp(pairs.s2_time.values[0]) == pd.Timestamp("2019-09-18")
    assert pd.Timedelta(pairs.dt.values[0]) == pd.Timedelta("1D")
    # same grid: no reprojection, values untouched
    np.testing.assert_array_equal(pairs.s1.isel(pair=0).values, chip.s1.isel(time=0).values)
    assert pairs.rio.crs == chip.s2.rio.crs
    # the accessor is the plain function
    xr.testing.assert_identical(pairs, ec.pair(chip.s1, chip.s2, max_dt="3D"))
    # one day apart does not pair within 12 hours, and the error says the closest gap
    with pytest.raises(ValueError, match="1 days"):
        chip.s1.contrast.pair(chip.s2, max_dt="12h")


def test_pair_from_dataset_accessor(shared_data: Path) -> None:
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain")
    s1_ds = chip.s1.to_dataset("band")  # odc-stac's one-variable-per-band form
    pairs = s1_ds.contrast.pair(chip.s2)
    assert list(pairs.s1_band.values) == ["vv", "vh"]
    assert pairs.sizes["pair"] == 1


def test_to_zarr_accessor_round_trip(shared_data: Path, tmp_path: Path) -> None:
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain", chunks={"y": 256, "x": 256})
    chip.s1.contrast.to_zarr(tmp_path / "s1.zarr")
    back = xr.open_zarr(tmp_path / "s1.zarr")
    assert back.rio.crs == chip.s1.rio.crs
    var = next(iter(back.data_vars))
    np.testing.assert_array_equal(back[var].values, chip.s1.values)
    with pytest.raises(FileExistsError, match="mode='w'"):
        chip.s1.contrast.to_zarr(tmp_path / "s1.zarr")


def test_embed_and_segment_through_the_accessor(tmp_path: Path) -> None:
    """Fit a real segmentation model, then segment through `.contrast` in three chunkings."""
    import torch

    torch.set_num_threads(1)
    scene = ec.synthetic_scene(tmp_path / "scene", size=128, seed=3)
    s2 = ec.load_stac(scene.s2_items, chunks=64)
    label = xr.open_dataarray(scene.label, engine="rasterio", mask_and_scale=False)
    label = label.squeeze("band", drop=True)
    label = label.assign_coords(x=s2.x, y=s2.y).astype("int16")
    at_event = s2.sel(time=scene.event_time, method="nearest")
    encoder = ec.DualEncoder(width=8, seed=0)

    emb = at_event.contrast.embed(encoder, tile=32, batch_size=16, device="cpu")
    assert emb.dims == ("feature", "y", "x")
    assert emb.shape == (encoder.feature_dim, 4, 4)
    assert emb.rio.crs == s2.rio.crs

    seg = ec.fit_segmentation(
        at_event, label, encoder=encoder, classes=["dry", "water"], epochs=2, tile=32,
        batch_size=8, device="cpu", progress=False, seed=0,
    )  # fmt: skip
    preds = [
        at_event.chunk({"y": c, "x": c}).contrast.segment(seg, probabilities=True).values
        for c in (32, 64, 128)
    ]
    assert preds[0].shape == (2, 128, 128)
    for other in preds[1:]:
        np.testing.assert_allclose(other, preds[0], rtol=0, atol=1e-5)
    classes = at_event.contrast.segment(seg)
    assert classes.dtype == np.int16
    assert set(np.unique(classes.values)) <= {-1, 0, 1}
    assert classes.rio.crs == s2.rio.crs


def test_embed_with_the_packaged_default_weights(shared_data: Path) -> None:
    """`embed()` with no model uses the packaged weights, on the real Sen1Floods11 chip."""
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain", chunks={"y": 256, "x": 256})
    default = ec.DualEncoder.default()
    emb = chip.s1.contrast.embed(tile=64, device="cpu")
    assert emb.dims == ("time", "feature", "y", "x")
    assert emb.shape == (1, default.feature_dim, 8, 8)
    assert emb.rio.crs == chip.s1.rio.crs
    # coordinates at tile centres: the first one is 32 pixels in from the corner
    assert float(emb.x[0]) == pytest.approx(
        float(chip.s1.x[0] + 31.5 * (chip.s1.x[1] - chip.s1.x[0]))
    )
    values = emb.values
    assert np.isfinite(values).all()
    assert values.std(axis=(2, 3)).mean() > 0  # tiles differ
