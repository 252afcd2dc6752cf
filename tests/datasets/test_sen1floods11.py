"""read_sen1floods11 on the real Spain_7370579 chip, checked against the facts in its SOURCE.txt."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

import eo_contrast as ec
from eo_contrast.cube import grids_equal, sensor_of

CHIP = "Spain_7370579"
FILES = ("S1Hand", "S2Hand", "LabelHand")


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    return shared_data / "sen1floods11_spain"


@pytest.fixture(scope="module")
def chip(root: Path) -> ec.datasets.Sen1Floods11Chip:
    return ec.read_sen1floods11(root)


def test_layout_bands_units_and_times(chip: ec.datasets.Sen1Floods11Chip) -> None:
    assert chip.chip == CHIP and chip.event == "Spain"
    assert chip.s1.dims == ("time", "band", "y", "x") and chip.s1.shape == (1, 2, 512, 512)
    assert chip.s2.dims == ("time", "band", "y", "x") and chip.s2.shape == (1, 13, 512, 512)
    assert chip.s1.band.values.tolist() == ["vv", "vh"]
    assert chip.s2.band.values.tolist() == list(ec.S2_BANDS)  # B01..B12 with B8A and B10
    assert sensor_of(chip.s1) == "s1" and sensor_of(chip.s2) == "s2"
    assert ec.band_units(chip.s1) == {"vv": "dB", "vh": "dB"}
    assert set(ec.band_units(chip.s2).values()) == {"1"}
    assert chip.s1.dtype == np.float32 and chip.s2.dtype == np.float32
    assert chip.label.dtype == np.int16 and chip.label.dims == ("y", "x")
    assert chip.s1.time.values[0] == np.datetime64("2019-09-17T00:00:00", "ns")
    assert chip.s2.time.values[0] == np.datetime64("2019-09-18T00:00:00", "ns")
    assert str(chip.s1_time.date()) == "2019-09-17" and str(chip.s2_time.date()) == "2019-09-18"
    assert chip.metadata["ISO_CC"] == "ESP" and chip.metadata["VH_thresh"] == pytest.approx(-25.13)


def test_one_grid_in_epsg4326(chip: ec.datasets.Sen1Floods11Chip) -> None:
    for obj in (chip.s1, chip.s2, chip.label):
        assert obj.rio.crs.to_epsg() == 4326
    assert grids_equal(chip.s1, chip.s2)
    xr.testing.assert_equal(chip.label.x, chip.s1.x)
    xr.testing.assert_equal(chip.label.y, chip.s1.y)
    left, bottom, right, top = chip.s1.rio.bounds()
    assert (left, bottom, right, top) == pytest.approx(
        (-0.78189, 38.08282, -0.73590, 38.12881), abs=1e-5
    )


def test_facts_of_source_txt(chip: ec.datasets.Sen1Floods11Chip) -> None:
    label = chip.label.values
    assert (label == 1).sum() == 70035
    assert (label == -1).sum() == 99
    assert (label == 0).sum() == 192010
    vh = chip.s1.sel(band="vh").isel(time=0).values
    assert vh[label == 1].mean() == pytest.approx(-25.2, abs=0.05)
    assert vh[label == 0].mean() == pytest.approx(-16.9, abs=0.05)
    nir = chip.s2.sel(band="B08").isel(time=0).values
    assert np.nanmean(nir[label == 1]) == pytest.approx(0.0899, abs=5e-4)  # DN 899
    assert np.nanmean(nir[label == 0]) == pytest.approx(0.2246, abs=5e-4)  # DN 2246
    vv = chip.s1.sel(band="vv").values
    assert (float(vv.min()), float(vv.max())) == pytest.approx((-39.2, 25.7), abs=0.06)


def test_s2_is_dn_times_1e4_and_zero_is_nan(root: Path, chip: ec.datasets.Sen1Floods11Chip) -> None:
    with rasterio.open(root / f"{CHIP}_S2Hand.tif") as src:
        raw = src.read()
    s2 = chip.s2.isel(time=0).values
    valid = raw != 0
    np.testing.assert_allclose(s2[valid], raw[valid] * 1e-4, rtol=1e-6)
    assert np.array_equal(np.isnan(s2), ~valid)


def test_chunks_give_lazy_dask_with_same_values(
    root: Path, chip: ec.datasets.Sen1Floods11Chip
) -> None:
    lazy = ec.read_sen1floods11(root, chunks={"x": 256, "y": 256})
    for name in ("s1", "s2", "label"):
        arr = getattr(lazy, name)
        assert isinstance(arr.data, da.Array), name
        assert arr.data.chunksize[-2:] == (256, 256)
        xr.testing.assert_identical(arr.compute(), getattr(chip, name))


def _link_chip(
    src: Path, dst: Path, chip: str, *, subfolders: bool = False, metadata: bool = True
) -> None:
    for kind in FILES:
        folder = dst / kind if subfolders else dst
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{chip}_{kind}.tif").symlink_to(src / f"{CHIP}_{kind}.tif")
    if metadata:
        (dst / "Sen1Floods11_Metadata.geojson").symlink_to(src / "Sen1Floods11_Metadata.geojson")


def test_full_dataset_layout_with_subfolders(root: Path, tmp_path: Path) -> None:
    _link_chip(root, tmp_path, CHIP, subfolders=True)
    chip = ec.read_sen1floods11(tmp_path / "S1Hand" / "..")
    assert chip.s1.shape == (1, 2, 512, 512) and (chip.label.values == 1).sum() == 70035


def test_missing_file_names_the_path(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere/Spain_7370579_S1Hand\.tif"):
        ec.read_sen1floods11(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"Spain_1_S1Hand\.tif"):
        ec.read_sen1floods11(root, "Spain_1")
    _link_chip(root, tmp_path, CHIP, metadata=False)
    with pytest.raises(FileNotFoundError, match=r"Sen1Floods11_Metadata\.geojson"):
        ec.read_sen1floods11(tmp_path)


def test_unknown_event_lists_known_ones(root: Path, tmp_path: Path) -> None:
    _link_chip(root, tmp_path, "Atlantis_42")
    with pytest.raises(KeyError, match=r"'Atlantis'.*'Spain'"):
        ec.read_sen1floods11(tmp_path, "Atlantis_42")


def test_event_names_with_hyphen_and_nodata_in_a_small_chip(root: Path, tmp_path: Path) -> None:
    """A tiny chip in the Sen1Floods11 format: S2 zeros become NaN, Sri-Lanka's dates are read."""
    chip = "Sri-Lanka_1"
    transform = from_origin(80.0, 7.0, 9e-5, 9e-5)
    common = {
        "driver": "GTiff",
        "width": 4,
        "height": 3,
        "crs": "EPSG:4326",
        "transform": transform,
    }
    s1 = np.full((2, 3, 4), -12.5, np.float32)
    s1[1] = -19.0
    s2 = np.full((13, 3, 4), 1500, np.int16)
    s2[:, 0, 0] = 0  # nodata pixel
    label = np.array([[-1, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]], np.int16)
    for kind, arr, nodata, names in (
        ("S1Hand", s1, np.nan, ["VV", "VH"]),
        (
            "S2Hand",
            s2,
            0,
            ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"],
        ),
        ("LabelHand", label[None], None, None),
    ):
        with rasterio.open(
            tmp_path / f"{chip}_{kind}.tif",
            "w",
            count=arr.shape[0],
            dtype=arr.dtype.name,
            nodata=nodata,
            **common,
        ) as dst:
            dst.write(arr)
            for i, name in enumerate(names or []):
                dst.set_band_description(i + 1, name)
    (tmp_path / "Sen1Floods11_Metadata.geojson").symlink_to(root / "Sen1Floods11_Metadata.geojson")
    out = ec.read_sen1floods11(tmp_path, chip)
    assert out.event == "Sri-Lanka"
    assert str(out.s1_time.date()) == "2017-05-30" and str(out.s2_time.date()) == "2017-05-28"
    s2v = out.s2.isel(time=0).values
    assert np.isnan(s2v[:, 0, 0]).all() and np.isnan(s2v).sum() == 13
    assert s2v[3, 1, 1] == pytest.approx(0.15)
    assert out.s1.sel(band="vh").values.mean() == pytest.approx(-19.0)
    np.testing.assert_array_equal(out.label.values, label)


def test_wrong_band_names_are_refused(root: Path, tmp_path: Path) -> None:
    _link_chip(root, tmp_path, CHIP)
    (tmp_path / f"{CHIP}_S1Hand.tif").unlink()
    with rasterio.open(root / f"{CHIP}_S1Hand.tif") as src:
        profile, data = src.profile, src.read()
    with rasterio.open(tmp_path / f"{CHIP}_S1Hand.tif", "w", **profile) as dst:
        dst.write(data)
        dst.set_band_description(1, "HH")
        dst.set_band_description(2, "HV")
    with pytest.raises(ValueError, match=r"bands \['hh', 'hv'\]; expected \['vv', 'vh'\]"):
        ec.read_sen1floods11(tmp_path)
