"""`ec.embed` on every form of input: a cube, odc-stac's Dataset of bands, a pairs Dataset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xarray as xr

import eo_contrast as ec

S2_BANDS = ["B04", "B08"]


def _odc_s1(ds: xr.Dataset) -> xr.Dataset:
    """odc-stac's S1 RTC bands (linear power, nodata -32768) in dB, as a user converts them."""
    return ds.map(lambda v: ec.linear_to_db(v.where(v != -32768)))


def _odc_s2(ds: xr.Dataset) -> xr.Dataset:
    """odc-stac's S2 L2A digital numbers (nodata 0) as reflectance, scale 1e-4, offset -0.1."""
    return (ds.where(ds != 0) * 1e-4 - 0.1).astype("float32")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A small synthetic scene: S1/S2 cubes, odc-stac Datasets of them, their pairs, a model."""
    import odc.stac

    sc = ec.synthetic_scene(tmp_path_factory.mktemp("scene"), size=64, seed=0)
    s1_items, s2_items = sc.item_collection("s1"), sc.item_collection("s2")
    s1 = ec.load_stac(s1_items, chunks=32)
    s2 = ec.load_stac(s2_items, bands=S2_BANDS, chunks=32)
    chunks = {"x": 32, "y": 32}
    # read (and reproject) once: each form stays Dask-backed, its chunks held in memory
    return SimpleNamespace(
        s1=s1.persist(),
        s2=s2.persist(),
        s1_odc=_odc_s1(odc.stac.load(s1_items, bands=["vv", "vh"], chunks=chunks)).persist(),
        s2_odc=_odc_s2(odc.stac.load(s2_items, bands=S2_BANDS, chunks=chunks)).persist(),
        pairs=ec.pair(s1, s2, max_dt="3D").persist(),
        model=ec.DualEncoder({"s1": ["vv", "vh"], "s2": S2_BANDS}, width=8, seed=0),
    )


def _cube_of(pairs: xr.Dataset, sensor: str) -> xr.DataArray:
    """``pairs[sensor]`` as a plain cube ``(time, band, y, x)``, the way a user would write it."""
    return pairs[sensor].rename(
        {"pair": "time", f"{sensor}_band": "band", f"{sensor}_units": "units"}
    )


@pytest.mark.parametrize("sensor", ["s1", "s2"])
@pytest.mark.parametrize("level", ["tile", "pixel"])
def test_odc_stac_dataset_embeds_as_its_to_array(
    scene: SimpleNamespace, sensor: str, level: str
) -> None:
    ds = scene.s1_odc if sensor == "s1" else scene.s2_odc
    assert isinstance(ds, xr.Dataset) and "band" not in ds.dims
    kw: dict[str, Any] = {"level": level, "tile": 16, "device": "cpu"}
    got = ec.embed(ds, scene.model, **kw)
    want = ec.embed(ds.to_array("band"), scene.model, **kw)
    assert isinstance(got, xr.DataArray)
    assert got.attrs["sensor"] == sensor
    got_v, want_v = got.compute(), want.compute()
    np.testing.assert_array_equal(got_v.values, want_v.values)
    xr.testing.assert_identical(got_v, want_v)
    assert got.rio.crs == ds.rio.crs


@pytest.mark.parametrize("level", ["tile", "pixel"])
def test_pairs_dataset_gives_one_variable_per_sensor(scene: SimpleNamespace, level: str) -> None:
    pairs = scene.pairs
    kw: dict[str, Any] = {"level": level, "tile": 16, "device": "cpu"}
    out = ec.embed(pairs, scene.model, **kw)
    assert isinstance(out, xr.Dataset)
    assert list(out.data_vars) == ["s1", "s2"]
    dim = scene.model.feature_dim if level == "tile" else 8 + 16  # pyramid levels 1 and 2
    n_pairs = pairs.sizes["pair"]
    grid = (4, 4) if level == "tile" else (pairs.sizes["y"], pairs.sizes["x"])
    for sensor in ("s1", "s2"):
        var = out[sensor]
        assert var.dims == ("pair", "feature", "y", "x")
        assert var.shape == (n_pairs, dim, *grid)
        assert var.attrs["sensor"] == sensor
        # each variable is the embedding of that sensor's cube by that sensor's encoder
        alone = ec.embed(_cube_of(pairs, sensor), scene.model, **kw)
        assert isinstance(alone, xr.DataArray) and alone.attrs["sensor"] == sensor
        np.testing.assert_array_equal(var.values, alone.values)
        for c in ("y", "x", "feature"):
            np.testing.assert_array_equal(var[c].values, alone[c].values)
    # computed together in one graph, each variable keeps its own values
    together = out.compute()
    for sensor in ("s1", "s2"):
        np.testing.assert_array_equal(together[sensor].values, out[sensor].values)
    assert not np.allclose(together.s1.values, together.s2.values)
    # one grid: the tile grid (or the input grid at pixel level) of the pairs
    np.testing.assert_array_equal(out.s1.x.values, out.s2.x.values)
    np.testing.assert_array_equal(out.s1.y.values, out.s2.y.values)
    if level == "pixel":
        np.testing.assert_array_equal(out.x.values, pairs.x.values)
        np.testing.assert_array_equal(out.y.values, pairs.y.values)
    # the pair coordinates stay; no pair index appears where the input had none
    for c in ("s1_time", "s2_time", "dt"):
        np.testing.assert_array_equal(out[c].values, pairs[c].values)
        assert out[c].dims == ("pair",)
    assert "pair" not in out.coords
    assert out.rio.crs == pairs.rio.crs
    assert out.attrs["level"] == level and out.attrs["tile"] == 16


def test_embeddings_of_two_cubes_computed_together(scene: SimpleNamespace) -> None:
    """One model, two cubes, one graph: the task keys name the input, so results never mix."""
    import dask

    kw: dict[str, Any] = {"tile": 16, "device": "cpu"}
    a = ec.embed(scene.s1, scene.model, **kw)
    b = ec.embed(scene.s1 - 3.0, scene.model, **kw)
    assert a.data.name != b.data.name
    got_a, got_b = dask.compute(a, b)
    np.testing.assert_array_equal(got_a.values, a.values)
    np.testing.assert_array_equal(got_b.values, b.values)
    assert not np.allclose(got_a.values, got_b.values)


def test_single_sensor_pairs_dataset(scene: SimpleNamespace) -> None:
    both = ec.embed(scene.pairs, scene.model, tile=16, device="cpu")
    assert isinstance(both, xr.Dataset)
    for sensor in ("s1", "s2"):
        one = ec.embed(scene.pairs[[sensor]], scene.model, tile=16, device="cpu")
        assert isinstance(one, xr.Dataset)
        assert list(one.data_vars) == [sensor]
        xr.testing.assert_identical(one[sensor].compute(), both[sensor].compute())
    # a model with only the sensor present is enough
    s1_only = ec.DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0)
    one = ec.embed(scene.pairs[["s1"]], s1_only, tile=16, device="cpu")
    assert isinstance(one, xr.Dataset) and list(one.data_vars) == ["s1"]


def test_pairs_without_a_pair_dim_keep_their_pair_coordinates(scene: SimpleNamespace) -> None:
    first = scene.pairs.isel(pair=0)
    out = ec.embed(first, scene.model, tile=16, device="cpu")
    full = ec.embed(scene.pairs, scene.model, tile=16, device="cpu")
    assert isinstance(out, xr.Dataset) and isinstance(full, xr.Dataset)
    assert out.s1.dims == ("feature", "y", "x")
    np.testing.assert_array_equal(out.s2.values, full.s2.isel(pair=0).values)
    assert out.s1_time.values == first.s1_time.values
    assert out.dt.values == first.dt.values


def test_pairs_need_an_encoder_for_each_sensor(scene: SimpleNamespace) -> None:
    s1_only = ec.DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0)
    with pytest.raises(
        ValueError, match=r"variable 's2' but the model has no s2 encoder.*\['s1'\]"
    ):
        ec.embed(scene.pairs, s1_only, tile=16, device="cpu")


def test_pairs_from_a_checkpoint_path(scene: SimpleNamespace, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    scene.model.save(path)
    got = ec.embed(scene.pairs[["s2"]], str(path), level="pixel", tile=16, device="cpu")
    want = ec.embed(scene.pairs[["s2"]], scene.model, level="pixel", tile=16, device="cpu")
    assert isinstance(got, xr.Dataset) and isinstance(want, xr.Dataset)
    np.testing.assert_array_equal(got.s2.values, want.s2.values)


def test_pairs_tile_larger_than_the_grid(scene: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="larger than the cube"):
        ec.embed(scene.pairs, scene.model, tile=128, device="cpu")


def test_feature_dims_are_named_per_sensor_when_they_differ(scene: SimpleNamespace) -> None:
    """Encoders with different pyramid widths cannot share one ``feature`` dim."""

    class WiderS2(ec.DualEncoder):
        def encoder(self, sensor: str) -> Any:
            enc = super().encoder(sensor)
            if sensor != "s2":
                return enc
            return SimpleNamespace(feature_channels=tuple(2 * c for c in enc.feature_channels))

    model = WiderS2({"s1": ["vv", "vh"], "s2": S2_BANDS}, width=8, seed=0)
    out = ec.embed(scene.pairs, model, level="pixel", tile=16, device="cpu")  # lazy: not computed
    assert isinstance(out, xr.Dataset)
    assert out.s1.dims == ("pair", "s1_feature", "y", "x")
    assert out.s2.dims == ("pair", "s2_feature", "y", "x")
    assert (out.sizes["s1_feature"], out.sizes["s2_feature"]) == (24, 48)


def test_dir_lists_the_lazy_names() -> None:
    from eo_contrast import _LAZY

    names = dir(ec)
    assert set(_LAZY) <= set(names)
    assert set(ec.__all__) <= set(names)
    assert names == sorted(names)
