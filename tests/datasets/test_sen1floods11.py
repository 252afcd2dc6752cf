"""read_sen1floods11 on the real chips, checked against the facts in their SOURCE.txt files."""

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
    return ec.read_sen1floods11(root, CHIP)


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
    lazy = ec.read_sen1floods11(root, CHIP, chunks={"x": 256, "y": 256})
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
    chip = ec.read_sen1floods11(tmp_path / "S1Hand" / "..", CHIP)
    assert chip.s1.shape == (1, 2, 512, 512) and (chip.label.values == 1).sum() == 70035


def test_missing_file_names_the_path(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere/Spain_7370579_S1Hand\.tif"):
        ec.read_sen1floods11(tmp_path / "nowhere", CHIP)
    with pytest.raises(FileNotFoundError, match=r"Spain_1_S1Hand\.tif"):
        ec.read_sen1floods11(root, "Spain_1")
    _link_chip(root, tmp_path, CHIP, metadata=False)
    with pytest.raises(FileNotFoundError, match=r"Sen1Floods11_Metadata\.geojson"):
        ec.read_sen1floods11(tmp_path, CHIP)


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
        ec.read_sen1floods11(tmp_path, CHIP)


# --- the dataset's own layout: six real chips of sen1floods11_handlabeled -----------------------

V11 = Path("v1.1")
HANDLABELED = V11 / "data" / "flood_events" / "HandLabeled"
SPLIT_DIR = V11 / "splits" / "flood_handlabeled"
ALL_CHIPS = [
    "Ghana_53713",
    "Mekong_333434",
    "Pakistan_849790",
    "Spain_7370579",
    "Sri-Lanka_534068",
    "USA_905409",
]
TEST_CHIPS = [c for c in ALL_CHIPS if c != CHIP]
# water / nodata fractions of the label among all its pixels, from SOURCE.txt
FRACTIONS = {
    "Spain_7370579": (0.267, 0.000),
    "Pakistan_849790": (0.656, 0.019),
    "USA_905409": (0.170, 0.000),
    "Sri-Lanka_534068": (0.981, 0.000),
    "Mekong_333434": (0.013, 0.225),
    "Ghana_53713": (0.000, 0.000),
}


@pytest.fixture(scope="module")
def dataset(shared_data: Path) -> Path:
    return shared_data / "sen1floods11_handlabeled"


@pytest.fixture(scope="module")
def all_chips(dataset: Path) -> list[ec.datasets.Sen1Floods11Chip]:
    return ec.read_sen1floods11(dataset)


def test_no_split_reads_every_chip_sorted(all_chips: list[ec.datasets.Sen1Floods11Chip]) -> None:
    assert [c.chip for c in all_chips] == ALL_CHIPS
    assert [c.event for c in all_chips] == [
        "Ghana",
        "Cambodia",  # the Mekong chips are the Cambodia event of the metadata
        "Pakistan",
        "Spain",
        "Sri-Lanka",
        "USA",
    ]
    assert str(all_chips[ALL_CHIPS.index(CHIP)].s1_time.date()) == "2019-09-17"


def test_test_split_has_the_five_chips_but_spain(dataset: Path) -> None:
    chips = ec.read_sen1floods11(dataset, split="test")
    assert [c.chip for c in chips] == TEST_CHIPS
    assert all(c.s2 is None for c in chips)


def test_every_chip_on_its_own_grid(all_chips: list[ec.datasets.Sen1Floods11Chip]) -> None:
    bounds = set()
    for c in all_chips:
        assert c.s1.rio.crs.to_epsg() == 4326 and c.label.rio.crs.to_epsg() == 4326
        assert c.s1.shape == (1, 2, 512, 512) and c.label.shape == (512, 512)
        xr.testing.assert_equal(c.label.x, c.s1.x)
        xr.testing.assert_equal(c.label.y, c.s1.y)
        bounds.add(tuple(round(b, 4) for b in c.s1.rio.bounds()))
    assert len(bounds) == len(all_chips)


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_water_and_nodata_fractions_of_source_txt(
    all_chips: list[ec.datasets.Sen1Floods11Chip], name: str
) -> None:
    label = all_chips[ALL_CHIPS.index(name)].label.values
    water, nodata = FRACTIONS[name]
    assert round(float((label == 1).mean()), 3) == water
    assert round(float((label == -1).mean()), 3) == nodata
    assert set(np.unique(label).tolist()) <= {-1, 0, 1}


def test_s2_only_where_the_chip_has_it(
    all_chips: list[ec.datasets.Sen1Floods11Chip], root: Path
) -> None:
    assert [c.chip for c in all_chips if c.s2 is not None] == [CHIP]
    spain = all_chips[ALL_CHIPS.index(CHIP)]
    flat = ec.read_sen1floods11(root, CHIP)
    assert spain.s2 is not None and flat.s2 is not None
    np.testing.assert_array_equal(spain.s2.values, flat.s2.values)
    np.testing.assert_array_equal(spain.label.values, flat.label.values)


def test_chip_name_in_attrs(all_chips: list[ec.datasets.Sen1Floods11Chip]) -> None:
    for c in all_chips:
        arrays = [c.s1, c.label] + ([] if c.s2 is None else [c.s2])
        for arr in arrays:
            assert arr.attrs["chip"] == c.chip
        assert c.s1.attrs["units"] == "dB" and c.label.attrs["nodata"] == -1


def test_sensors_select_and_require_s2(dataset: Path) -> None:
    assert ec.read_sen1floods11(dataset, CHIP, sensors=("s1",)).s2 is None
    assert ec.read_sen1floods11(dataset, CHIP, sensors=("s1", "s2")).s2 is not None
    assert ec.read_sen1floods11(dataset, CHIP, sensors="s2").s2 is not None
    only_s1 = ec.read_sen1floods11(dataset, sensors=("s1",))
    assert [c.s2 for c in only_s1] == [None] * 6
    for sensors in (("s1", "s2"), ("s2",)):
        with pytest.raises(
            FileNotFoundError, match=r"chip 'Ghana_53713' has no S2 file .*sensors=\('s1',\)"
        ):
            ec.read_sen1floods11(dataset, sensors=sensors)
    with pytest.raises(FileNotFoundError, match=r"'USA_905409' has no S2 file.*USA_905409_S2Hand"):
        ec.read_sen1floods11(dataset, "USA_905409", sensors=("s1", "s2"))
    for bad in (("s3",), (), ("s1", "S2")):
        with pytest.raises(ValueError, match=r"sensors=.*\('s1', 's2'\)"):
            ec.read_sen1floods11(dataset, CHIP, sensors=bad)


@pytest.mark.parametrize(
    "sub", [Path("."), V11, HANDLABELED], ids=["dataset root", "v1.1", "HandLabeled"]
)
def test_all_layouts_find_chips_split_and_metadata(dataset: Path, sub: Path) -> None:
    root = dataset / sub
    assert [c.chip for c in ec.read_sen1floods11(root, split="test", sensors="s1")] == TEST_CHIPS
    chip = ec.read_sen1floods11(root, CHIP)
    assert chip.s2 is not None and chip.metadata["ISO_CC"] == "ESP"


def test_flat_folder_lists_its_one_chip(root: Path) -> None:
    chips = ec.read_sen1floods11(root)
    assert [c.chip for c in chips] == [CHIP] and chips[0].s2 is not None


def test_lazy_list(dataset: Path) -> None:
    chips = ec.read_sen1floods11(dataset, split="test", chunks={"x": 256, "y": 256})
    assert all(isinstance(c.s1.data, da.Array) for c in chips)
    assert round(float((chips[2].label == 1).mean()), 3) == 0.656


def test_bad_split_and_chip_with_split(dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"split='val'.*\('train', 'valid', 'test', 'bolivia'\)"):
        ec.read_sen1floods11(dataset, split="val")
    with pytest.raises(ValueError, match=r"`chip` for one chip, or `split`"):
        ec.read_sen1floods11(dataset, CHIP, split="test")
    with pytest.raises(TypeError, match=r"one chip name"):
        ec.read_sen1floods11(dataset, [CHIP])  # type: ignore[call-overload]


def test_missing_split_file_names_path_and_lists_present(dataset: Path, tmp_path: Path) -> None:
    expected = dataset / SPLIT_DIR / "flood_train_data.csv"
    for root in (dataset, dataset / HANDLABELED / "S1Hand"):  # splits are found from below too
        with pytest.raises(FileNotFoundError) as err:
            ec.read_sen1floods11(root, split="train")
        assert str(expected) in str(err.value) and "['flood_test_data.csv']" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"flood_bolivia_data\.csv.*present: none"):
        ec.read_sen1floods11(tmp_path, split="bolivia")


def _link_dataset(dataset: Path, dst: Path, chips: list[str]) -> None:
    """A dataset-root copy made of symlinks to the real files of ``chips``."""
    for kind in FILES:
        (dst / HANDLABELED / kind).mkdir(parents=True)
        for chip in chips:
            src = dataset / HANDLABELED / kind / f"{chip}_{kind}.tif"
            if src.is_file():
                (dst / HANDLABELED / kind / src.name).symlink_to(src)
    (dst / SPLIT_DIR).mkdir(parents=True)
    meta = "Sen1Floods11_Metadata.geojson"
    (dst / V11 / meta).symlink_to(dataset / V11 / meta)


def test_split_chip_with_a_missing_file(dataset: Path, tmp_path: Path) -> None:
    _link_dataset(dataset, tmp_path, ["USA_905409", "Ghana_53713"])
    (tmp_path / HANDLABELED / "LabelHand" / "Ghana_53713_LabelHand.tif").unlink()
    (tmp_path / SPLIT_DIR / "flood_valid_data.csv").write_text(
        "USA_905409_S1Hand.tif,USA_905409_LabelHand.tif\n"
        "Ghana_53713_S1Hand.tif,Ghana_53713_LabelHand.tif\n\n"
    )
    with pytest.raises(
        FileNotFoundError,
        match=r"chip 'Ghana_53713' of split 'valid'.*LabelHand/Ghana_53713_LabelHand\.tif",
    ):
        ec.read_sen1floods11(tmp_path, split="valid")
    (tmp_path / SPLIT_DIR / "flood_train_data.csv").write_text(
        "USA_905409_S1Hand.tif,USA_905409_LabelHand.tif\n"
    )
    chips = ec.read_sen1floods11(tmp_path, split="train")
    assert [c.chip for c in chips] == ["USA_905409"] and chips[0].s2 is None
    with pytest.raises(FileNotFoundError, match=r"flood_test_data\.csv.*\['flood_train_data\.csv"):
        ec.read_sen1floods11(tmp_path, split="test")
    (tmp_path / SPLIT_DIR / "flood_bolivia_data.csv").write_text("chip,label\n")
    with pytest.raises(ValueError, match=r"line 1: 'chip,label' does not start with"):
        ec.read_sen1floods11(tmp_path, split="bolivia")


def test_no_chips_in_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no Sen1Floods11 chip \(\*_S1Hand\.tif\)"):
        ec.read_sen1floods11(tmp_path)
