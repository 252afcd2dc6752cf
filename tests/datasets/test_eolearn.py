"""read_eolearn_slovenia on the real eo-learn patch, checked against the facts in its SOURCE.txt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import eo_contrast as ec
from eo_contrast.cube import check_times, sensor_of
from eo_contrast.datasets import EOLearnPatch, read_eolearn_slovenia


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    return shared_data / "eolearn_slovenia"


@pytest.fixture(scope="module")
def patch(root: Path) -> EOLearnPatch:
    return read_eolearn_slovenia(root)


def test_canonical_s2_cube(patch: EOLearnPatch) -> None:
    s2 = patch.s2
    assert s2.dims == ("time", "band", "y", "x") and s2.shape == (5, 13, 101, 100)
    assert s2.dtype == np.float32
    assert s2.band.values.tolist() == list(ec.S2_BANDS)
    assert sensor_of(s2) == "s2" and set(ec.band_units(s2).values()) == {"1"}
    # SOURCE.txt: TOA reflectance 0..0.53, no nodata in the reference scenes
    assert float(s2.min()) == pytest.approx(0.0005, abs=1e-4)
    assert float(s2.max()) == pytest.approx(0.5318, abs=1e-4)
    assert not bool(s2.isnull().any())


def test_grid_and_crs_from_bbox(patch: EOLearnPatch) -> None:
    for obj in (patch.s2, patch.lulc):
        assert obj.rio.crs.to_epsg() == 32633
    assert patch.s2.rio.bounds() == pytest.approx(
        (465181.05, 5079244.89, 466180.53, 5080254.63), abs=0.01
    )
    res_x, res_y = patch.s2.rio.resolution()
    assert res_x == pytest.approx(9.9948, abs=1e-4) and res_y == pytest.approx(-9.9974, abs=1e-4)
    # pixel centres: half a pixel inside the bbox
    assert float(patch.s2.x[0]) == pytest.approx(465181.05 + res_x / 2, abs=0.01)
    assert float(patch.s2.y[0]) == pytest.approx(5080254.63 + res_y / 2, abs=0.01)
    xr.testing.assert_equal(patch.lulc.x, patch.s2.x)
    xr.testing.assert_equal(patch.lulc.y, patch.s2.y)


def test_scene_dates_recovered_from_ndvi(patch: EOLearnPatch, root: Path) -> None:
    assert patch.times_recovered
    times = check_times(patch.s2)  # sorted, unique
    assert [str(t.date()) for t in times] == [
        "2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09",
    ]  # fmt: skip
    assert patch.s2.scene.values.tolist() == [4, 1, 0, 3, 2]
    raw = np.load(root / "REFERENCE_SCENES.npy")
    # scene 0 of the file is the third date; same values, bands moved to axis 0
    np.testing.assert_array_equal(patch.s2.isel(time=2).values, np.moveaxis(raw[0], -1, 0))
    # the NDVI of the matched scene equals the patch's NDVI layer at that time
    stamps = json.loads((root / "TestEOPatch" / "timestamps.json").read_text())
    ndvi = np.load(root / "TestEOPatch" / "data" / "NDVI.npy")[
        stamps.index("2015-08-20T10:07:28"), ..., 0
    ]
    b4, b8 = patch.s2.isel(time=2).sel(band="B04"), patch.s2.isel(time=2).sel(band="B08")
    np.testing.assert_allclose(((b8 - b4) / (b8 + b4)).values, ndvi, atol=1e-4)


def test_land_cover_counts_of_source_txt(patch: EOLearnPatch) -> None:
    lulc = patch.lulc
    assert lulc.dims == ("y", "x") and lulc.dtype == np.int16
    ids, counts = np.unique(lulc.values, return_counts=True)
    # SOURCE.txt: 0 nodata (155 px), 1 cultivated (11), 2 forest (7601), 3 grassland (1777),
    # 4 shrubland (358), 8 artificial (198); nodata is -1 here
    assert dict(zip(ids.tolist(), counts.tolist(), strict=True)) == {
        -1: 155, 1: 11, 2: 7601, 3: 1777, 4: 358, 8: 198,
    }  # fmt: skip
    assert patch.classes == {
        1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial surface",
    }  # fmt: skip
    assert lulc.attrs["flag_values"] == [1, 2, 3, 4, 8]


def test_encoded_labels_for_fit_segmentation(patch: EOLearnPatch) -> None:
    labels, names = patch.encoded_labels()
    assert names == ["cultivated land", "forest", "grassland", "shrubland", "artificial surface"]
    ids, counts = np.unique(labels.values, return_counts=True)
    assert ids.tolist() == [-1, 0, 1, 2, 3, 4]
    assert counts.tolist() == [155, 11, 7601, 1777, 358, 198]
    assert labels.rio.crs.to_epsg() == 32633 and labels.dims == ("y", "x")
    forest = patch.lulc.values == 2
    assert (labels.values[forest] == 1).all()


def test_encoded_labels_refuses_unknown_ids(patch: EOLearnPatch) -> None:
    partial = EOLearnPatch(s2=patch.s2, lulc=patch.lulc, classes={2: "forest"})
    with pytest.raises(ValueError, match=r"lulc holds ids \[1, 3, 4, 8\] that are not in classes"):
        partial.encoded_labels()


def test_without_ndvi_layer_times_are_left_unknown(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "eolearn"
    (copy / "TestEOPatch" / "mask_timeless").mkdir(parents=True)
    scenes = np.load(root / "REFERENCE_SCENES.npy")
    scenes[1, 0, 0, :] = 0  # Sentinel Hub's fill: every band 0 -> nodata
    np.save(copy / "REFERENCE_SCENES.npy", scenes)
    shutil.copy(root / "TestEOPatch" / "bbox.geojson", copy / "TestEOPatch")
    shutil.copy(
        root / "TestEOPatch" / "mask_timeless" / "LULC.npy", copy / "TestEOPatch" / "mask_timeless"
    )
    patch = read_eolearn_slovenia(copy)
    assert not patch.times_recovered
    assert "time" not in patch.s2.coords and patch.s2.scene.values.tolist() == [0, 1, 2, 3, 4]
    # names from eo-learn's class table when the polygon file is absent
    assert patch.classes[4] == "shrubland" and patch.classes[8] == "artificial surface"
    assert "unknown" in patch.s2.attrs["time_source"]
    assert bool(patch.s2.isel(time=1, y=0, x=0).isnull().all())
    assert int(patch.s2.isnull().sum()) == 13


def test_missing_files_are_named(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"REFERENCE_SCENES\.npy not found"):
        read_eolearn_slovenia(tmp_path)
    shutil.copy(root / "REFERENCE_SCENES.npy", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"eo-learn patch folder .*TestEOPatch not found"):
        read_eolearn_slovenia(tmp_path)
    (tmp_path / "TestEOPatch").mkdir()
    with pytest.raises(FileNotFoundError, match=r"land-cover raster .*LULC\.npy not found"):
        read_eolearn_slovenia(tmp_path)


def test_bad_scene_array_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "REFERENCE_SCENES.npy", np.zeros((2, 4, 4, 12), dtype="f4"))
    (tmp_path / "TestEOPatch").mkdir()
    with pytest.raises(ValueError, match=r"has shape \(2, 4, 4, 12\); expected .* 13\)"):
        read_eolearn_slovenia(tmp_path)
