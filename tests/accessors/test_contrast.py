"""The `.contrast` accessor: a thin shell that gives the same results as the plain functions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import eo_contrast as ec


def test_accessor_registered_on_both_types() -> None:
    assert hasattr(xr.DataArray, "contrast")
    assert hasattr(xr.Dataset, "contrast")


def test_pair_on_real_sen1floods11_chip(shared_data: Path) -> None:
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain", "Spain_7370579")
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
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain", "Spain_7370579")
    s1_ds = chip.s1.to_dataset("band")  # odc-stac's one-variable-per-band form
    pairs = s1_ds.contrast.pair(chip.s2)
    assert list(pairs.s1_band.values) == ["vv", "vh"]
    assert pairs.sizes["pair"] == 1


def test_to_zarr_accessor_round_trip(shared_data: Path, tmp_path: Path) -> None:
    chip = ec.read_sen1floods11(
        shared_data / "sen1floods11_spain", "Spain_7370579", chunks={"y": 256, "x": 256}
    )
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
    chip = ec.read_sen1floods11(
        shared_data / "sen1floods11_spain", "Spain_7370579", chunks={"y": 256, "x": 256}
    )
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


# ----------------------------------------------------------------------------- every verb, every form
# A small synthetic scene in every form the accessors take: S1 and S2 cubes (DataArray), odc-stac's
# Dataset of bands for each sensor, the pairs Dataset of ec.pair and its single-sensor selections.

S2_BANDS = ["B04", "B08"]
TILE = 16
KW: dict[str, Any] = {"tile": TILE, "device": "cpu"}
PIXEL_DIM = 8 + 16  # pyramid levels 1 and 2 of a width-8 encoder


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    import odc.stac

    from eo_contrast.segmentation import SegmentationModel

    scene = ec.synthetic_scene(tmp_path_factory.mktemp("forms"), size=64, seed=0)
    s1_items, s2_items = scene.item_collection("s1"), scene.item_collection("s2")
    s1 = ec.load_stac(s1_items, chunks=32)  # dB, 66 x 66 pixels
    s2 = ec.load_stac(s2_items, bands=S2_BANDS, chunks=32)  # reflectance, 64 x 64
    chunks = {"x": 32, "y": 32}
    # odc-stac's form, converted to physical units the way a user does: S1 RTC linear power
    # (nodata -32768) to dB, S2 L2A digital numbers (nodata 0) to reflectance
    s1_odc = odc.stac.load(s1_items, bands=["vv", "vh"], chunks=chunks)
    s1_odc = s1_odc.map(lambda v: ec.linear_to_db(v.where(v != -32768)))
    s2_odc = odc.stac.load(s2_items, bands=S2_BANDS, chunks=chunks)
    s2_odc = (s2_odc.where(s2_odc != 0) * 1e-4 - 0.1).astype("float32")
    model = ec.DualEncoder({"s1": ["vv", "vh"], "s2": S2_BANDS}, width=8, seed=0)
    segs = {
        sensors: SegmentationModel(
            model, ["dry", "water"], sensors=sensors, tile=TILE, decoder_width=8, seed=0
        )
        for sensors in (("s1",), ("s2",), ("s1", "s2"))
    }
    # read (and reproject) once: each form stays Dask-backed, its chunks held in memory
    return SimpleNamespace(
        s1=s1.persist(),
        s2=s2.persist(),
        s1_odc=s1_odc.persist(),
        s2_odc=s2_odc.persist(),
        pairs=ec.pair(s1, s2, max_dt="3D").persist(),
        model=model,
        segs=segs,
    )


def _cube_of(pairs: xr.Dataset, sensor: str) -> xr.DataArray:
    """One sensor of the pairs as a plain cube ``(time, band, y, x)``."""
    return pairs[sensor].rename(
        {"pair": "time", f"{sensor}_band": "band", f"{sensor}_units": "units"}
    )


def _assert_zarr_round_trip(obj: xr.DataArray | xr.Dataset, path: Path) -> None:
    obj.contrast.to_zarr(path)
    back = xr.open_zarr(path)
    assert back.rio.crs == obj.rio.crs
    if isinstance(obj, xr.DataArray):
        np.testing.assert_array_equal(back[next(iter(back.data_vars))].values, obj.values)
    else:
        assert set(back.data_vars) == set(obj.data_vars)
        for var in obj.data_vars:
            np.testing.assert_array_equal(back[var].values, obj[var].values)
    with pytest.raises(FileExistsError, match="mode='w'"):
        obj.contrast.to_zarr(path)


def _assert_segment(obj: xr.DataArray | xr.Dataset, seg: Any, lead: str) -> xr.DataArray:
    """Class ids and probabilities through the accessor equal the plain function's."""
    classes = obj.contrast.segment(seg, device="cpu")
    assert classes.dims == (lead, "y", "x")
    assert classes.dtype == np.int16
    values = classes.values
    np.testing.assert_array_equal(values, ec.segment(obj, seg, device="cpu").values)
    assert set(np.unique(values)) <= {-1, 0, 1}
    probs = obj.contrast.segment(seg, probabilities=True, device="cpu")
    assert probs.dims == (lead, "class", "y", "x")
    assert probs.sizes["class"] == 2
    total = probs.sum("class").values
    np.testing.assert_allclose(total[values >= 0], 1.0, atol=1e-5)
    assert classes.rio.crs == obj.rio.crs
    return classes


@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_dataarray_accessor_every_verb(forms: SimpleNamespace, sensor: str, tmp_path: Path) -> None:
    cube = forms.s1 if sensor == "s1" else forms.s2
    assert cube.contrast.sensor == sensor
    # pair: an S1 cube pairs with an S2 cube; an S2 cube first is refused
    if sensor == "s1":
        pairs = cube.contrast.pair(forms.s2, max_dt="3D")
        xr.testing.assert_identical(pairs, forms.pairs)
    else:
        with pytest.raises(ValueError, match="swapped"):
            cube.contrast.pair(forms.s1, max_dt="3D")
    # embed, both levels: the plain function's result
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    for level, grid in (("tile", (ny // TILE, nx // TILE)), ("pixel", (ny, nx))):
        emb = cube.contrast.embed(forms.model, level=level, **KW)
        assert isinstance(emb, xr.DataArray)
        assert emb.dims == ("time", "feature", "y", "x")
        dim = forms.model.feature_dim if level == "tile" else PIXEL_DIM
        assert emb.shape == (cube.sizes["time"], dim, *grid)
        assert emb.attrs["sensor"] == sensor
        xr.testing.assert_identical(
            emb.compute(), ec.embed(cube, forms.model, level=level, **KW).compute()
        )
    # segment with a single-sensor model
    _assert_segment(cube, forms.segs[(sensor,)], "time")
    # to_zarr: the cube and its embedding
    _assert_zarr_round_trip(cube, tmp_path / "cube.zarr")
    _assert_zarr_round_trip(emb, tmp_path / "emb.zarr")


@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_dataset_accessor_every_verb_on_an_odc_stac_dataset(
    forms: SimpleNamespace, sensor: str, tmp_path: Path
) -> None:
    ds = forms.s1_odc if sensor == "s1" else forms.s2_odc
    assert isinstance(ds, xr.Dataset)
    as_array = ds.to_array("band")
    # pair: the same pairs as from the cube it stands for
    if sensor == "s1":
        pairs = ds.contrast.pair(forms.s2, max_dt="3D")
        xr.testing.assert_identical(pairs, ec.pair(as_array, forms.s2, max_dt="3D"))
        assert pairs.sizes["pair"] == forms.pairs.sizes["pair"]
    else:
        with pytest.raises(ValueError, match="swapped"):
            ds.contrast.pair(forms.s1, max_dt="3D")
    # embed: the same as its to_array("band"), values and coordinates
    for level in ("tile", "pixel"):
        emb = ds.contrast.embed(forms.model, level=level, **KW)
        assert isinstance(emb, xr.DataArray)
        assert emb.dims == ("time", "feature", "y", "x")
        got = emb.compute()
        want = ec.embed(as_array, forms.model, level=level, **KW).compute()
        np.testing.assert_array_equal(got.values, want.values)
        xr.testing.assert_identical(got, want)
        assert emb.rio.crs == ds.rio.crs
    if sensor == "s2":
        np.testing.assert_array_equal(
            got.values, forms.s2.contrast.embed(forms.model, level="pixel", **KW).values
        )
    # segment: the same as its to_array("band")
    classes = _assert_segment(ds, forms.segs[(sensor,)], "time")
    np.testing.assert_array_equal(
        classes.values, ec.segment(as_array, forms.segs[(sensor,)], device="cpu").values
    )
    # pretrain takes pairs, not a Dataset of bands
    with pytest.raises(ValueError, match=r"ec\.pair"):
        ds.contrast.pretrain(tile=TILE, batch_size=4, device="cpu", progress=False, max_steps=1)
    _assert_zarr_round_trip(ds, tmp_path / "bands.zarr")


def test_dataset_accessor_every_verb_on_pairs(forms: SimpleNamespace, tmp_path: Path) -> None:
    pairs = forms.pairs
    n = pairs.sizes["pair"]
    for level, grid in (("tile", (4, 4)), ("pixel", (pairs.sizes["y"], pairs.sizes["x"]))):
        out = pairs.contrast.embed(forms.model, level=level, **KW)
        assert isinstance(out, xr.Dataset)
        assert list(out.data_vars) == ["s1", "s2"]
        dim = forms.model.feature_dim if level == "tile" else PIXEL_DIM
        for sensor in ("s1", "s2"):
            var = out[sensor]
            assert var.dims == ("pair", "feature", "y", "x")
            assert var.shape == (n, dim, *grid)
            assert var.attrs["sensor"] == sensor  # that sensor's encoder
            alone = ec.embed(_cube_of(pairs, sensor), forms.model, level=level, **KW)
            np.testing.assert_array_equal(var.values, alone.values)
        # one tile grid (the input grid at pixel level) for both sensors
        np.testing.assert_array_equal(out.s1.x.values, out.s2.x.values)
        np.testing.assert_array_equal(out.s1.y.values, out.s2.y.values)
        if level == "pixel":
            np.testing.assert_array_equal(out.x.values, pairs.x.values)
            np.testing.assert_array_equal(out.y.values, pairs.y.values)
        for c in ("s1_time", "s2_time", "dt"):
            np.testing.assert_array_equal(out[c].values, pairs[c].values)
        assert out.rio.crs == pairs.rio.crs
        xr.testing.assert_identical(
            out.compute(), ec.embed(pairs, forms.model, level=level, **KW).compute()
        )
    # segment with an S1+S2 model
    _assert_segment(pairs, forms.segs[("s1", "s2")], "pair")
    # pretrain: multimodal, a couple of updates; the model embeds the pairs again
    trained = pairs.contrast.pretrain(
        tile=TILE, batch_size=4, device="cpu", progress=False, max_steps=2, width=8
    )
    assert trained.sensors == ("s1", "s2")
    assert len(trained.history) == 2
    again = pairs.contrast.embed(trained, **KW)
    assert isinstance(again, xr.Dataset)
    assert np.isfinite(again.s2.values).all()
    # to_zarr: the pairs and their embedding
    _assert_zarr_round_trip(pairs, tmp_path / "pairs.zarr")
    _assert_zarr_round_trip(out, tmp_path / "emb.zarr")


@pytest.mark.parametrize("sensor", ["s1", "s2"])
def test_dataset_accessor_every_verb_on_single_sensor_pairs(
    forms: SimpleNamespace, sensor: str, tmp_path: Path
) -> None:
    one = forms.pairs[[sensor]]
    full = forms.pairs.contrast.embed(forms.model, level="pixel", **KW)
    assert isinstance(full, xr.Dataset)
    for level in ("tile", "pixel"):
        out = one.contrast.embed(forms.model, level=level, **KW)
        assert isinstance(out, xr.Dataset)
        assert list(out.data_vars) == [sensor]
        assert out[sensor].dims == ("pair", "feature", "y", "x")
    np.testing.assert_array_equal(out[sensor].values, full[sensor].values)
    # a model of that sensor alone is enough; one of the other sensor is refused
    other = "s2" if sensor == "s1" else "s1"
    classes = _assert_segment(one, forms.segs[(sensor,)], "pair")
    np.testing.assert_array_equal(
        classes.values,
        ec.segment(_cube_of(forms.pairs, sensor), forms.segs[(sensor,)], device="cpu").values,
    )
    wrong = ec.DualEncoder({other: forms.model.bands[other]}, width=8, seed=0)
    with pytest.raises(ValueError, match=f"no {sensor} encoder"):
        one.contrast.embed(wrong, **KW)
    # pretrain: SimCLR on that sensor
    trained = one.contrast.pretrain(
        method="simclr", sensor=sensor, tile=TILE, batch_size=4, device="cpu",
        progress=False, max_steps=1, width=8,
    )  # fmt: skip
    assert trained.sensors == (sensor,)
    _assert_zarr_round_trip(one, tmp_path / "one.zarr")
