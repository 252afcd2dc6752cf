"""read_bigearthnet on the real BigEarthNet v2 subset (24 S1/S2 patch pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eo_contrast as ec
from eo_contrast.datasets.bigearthnet import (
    BIGEARTHNET_S2_BANDS,
    METADATA_NAMES,
    NPZ_NAME,
    _npz_object_strings,
)


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    return shared_data / "bigearthnet_v2_subset"


@pytest.fixture(scope="module")
def ds(root: Path):
    return ec.read_bigearthnet(root)


@pytest.fixture(scope="module")
def npz(root: Path) -> dict[str, np.ndarray]:
    keys = (
        "s1_vv_vh_db",
        "s2_10m_B02_B03_B04_B08",
        "s2_20m_B05_B06_B07_B8A_B11_B12",
        "s2_60m_B01_B09",
        "labels_multihot",
        "class_names",
    )
    with np.load(root / NPZ_NAME, allow_pickle=False) as z:
        return {k: z[k] for k in keys}


def _tables(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(root / n) for n in METADATA_NAMES], ignore_index=True)


def test_row_order_assumption_parquet_labels_equal_npz_multihot(root: Path, npz) -> None:
    """The npz rows are metadata.parquet's rows, then the snow/cloud table's, in file order."""
    meta = _tables(root)
    classes = npz["class_names"].tolist()
    multihot = np.zeros((len(meta), len(classes)), np.uint8)
    for row, names in enumerate(meta["labels"]):
        for name in names:
            multihot[row, classes.index(name)] = 1
    np.testing.assert_array_equal(multihot, npz["labels_multihot"])
    # The npz's own patch ids, read as text without unpickling, give the same order.
    assert _npz_object_strings(root / NPZ_NAME, "patch_id") == meta["patch_id"].tolist()


def test_object_arrays_are_never_unpickled(root: Path) -> None:
    with (
        np.load(root / NPZ_NAME, allow_pickle=False) as z,
        pytest.raises(ValueError, match="allow_pickle"),
    ):
        z["patch_id"]  # what the reader must avoid: it reads the parquet tables instead


def test_layout_dtypes_and_coords(ds, root: Path, npz) -> None:
    assert dict(ds.sizes) == {
        "pair": 24,
        "s1_band": 2,
        "y": 120,
        "x": 120,
        "s2_band": 12,
        "class": 19,
    }
    assert ds.s1.dims == ("pair", "s1_band", "y", "x") and ds.s1.dtype == np.float32
    assert ds.s2.dims == ("pair", "s2_band", "y", "x") and ds.s2.dtype == np.float32
    assert ds.labels.dims == ("pair", "class") and ds.labels.dtype == np.uint8
    assert ds.s1_band.values.tolist() == ["vv", "vh"]
    assert ds.s2_band.values.tolist() == list(BIGEARTHNET_S2_BANDS)
    assert ec.sensor_of(ds.s2_band.values.tolist()) == "s2"
    assert ds["class"].values.tolist() == npz["class_names"].tolist()
    assert ds.s1.attrs["units"] == "dB" and ds.s2.attrs["units"] == "1"
    np.testing.assert_array_equal(ds.labels.values, npz["labels_multihot"])
    np.testing.assert_array_equal(ds.s1.values, npz["s1_vv_vh_db"])
    meta = _tables(root)
    assert ds.patch_id.values.tolist() == meta["patch_id"].tolist()
    assert ds.country.values.tolist().count("Finland") == 3
    assert ds.contains_seasonal_snow.values.sum() == 3
    assert ds.contains_cloud_or_shadow.values.sum() == 3
    assert ds.rio.crs is None  # BigEarthNet stores no georeferencing


def test_s2_reflectance_and_nearest_upsampling(ds, npz) -> None:
    s2 = ds.s2
    ten = npz["s2_10m_B02_B03_B04_B08"]
    np.testing.assert_allclose(s2.sel(s2_band="B04").values, ten[:, 2] * 1e-4, rtol=1e-6)
    twenty = npz["s2_20m_B05_B06_B07_B8A_B11_B12"]
    b11 = s2.sel(s2_band="B11").values
    np.testing.assert_allclose(b11[:, 0::2, 1::2], twenty[:, 4] * 1e-4, rtol=1e-6)
    np.testing.assert_array_equal(b11[:, 0::2], b11[:, 1::2])  # each 20 m pixel -> 2 x 2
    sixty = npz["s2_60m_B01_B09"]
    b09 = s2.sel(s2_band="B09").values
    assert b09[7, 6:12, 18:24] == pytest.approx(np.full((6, 6), sixty[7, 1, 1, 3] * 1e-4))
    # Physically plausible L2A values: vegetation-dominated Austrian patches, bright NIR.
    assert float(np.nanmin(s2)) > 0.0 and float(np.nanmax(s2)) < 1.5
    assert float(np.median(s2.sel(s2_band="B08"))) == pytest.approx(0.3588, abs=0.01)
    assert float(np.median(ds.s1.sel(s1_band="vv"))) == pytest.approx(-10.6, abs=0.1)


def test_times_parsed_from_product_names(ds) -> None:
    first = ds.isel(pair=0)
    assert first.s1_time.values == np.datetime64("2017-06-12T16:58:09", "ns")
    assert first.s2_time.values == np.datetime64("2017-06-13T10:10:31", "ns")
    assert first.dt.values == np.timedelta64(17 * 3600 + 12 * 60 + 22, "s")
    finland = ds.isel(pair=np.flatnonzero(ds.country.values == "Finland"))
    assert (finland.s2_time.values == np.datetime64("2017-11-01T09:41:31", "ns")).all()
    assert finland.s1_time.values[0] == np.datetime64("2017-11-01T15:40:16", "ns")
    s1a = ds.isel(pair=np.flatnonzero(np.char.startswith(ds.s1_name.values.astype(str), "S1A")))
    assert s1a.sizes["pair"] == 1 and s1a.dt.values[0] == np.timedelta64(
        6 * 3600 + 40 * 60 + 12, "s"
    )
    assert (ds.dt.values >= np.timedelta64(0, "s")).all()
    assert ds.dt.values.max() < np.timedelta64(1, "D")


@pytest.mark.parametrize(("split", "n"), [("train", 8), ("validation", 8), ("test", 8)])
def test_split_filter(root: Path, split: str, n: int) -> None:
    sub = ec.read_bigearthnet(root, split=split)
    assert sub.sizes["pair"] == n
    assert set(sub.split.values.tolist()) == {split}


def test_bad_split_lists_valid_ones(root: Path) -> None:
    with pytest.raises(ValueError, match=r"split='val'.*'train', 'validation', 'test'"):
        ec.read_bigearthnet(root, split="val")


def test_missing_files(root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"benv2_mock_s1s2\.npz not found"):
        ec.read_bigearthnet(tmp_path)
    (tmp_path / NPZ_NAME).symlink_to(root / NPZ_NAME)
    (tmp_path / METADATA_NAMES[0]).symlink_to(root / METADATA_NAMES[0])
    with pytest.raises(FileNotFoundError, match="metadata_for_patches_with_snow"):
        ec.read_bigearthnet(tmp_path)


def test_reordered_tables_are_realigned_and_wrong_labels_refused(
    root: Path, tmp_path: Path
) -> None:
    (tmp_path / NPZ_NAME).symlink_to(root / NPZ_NAME)
    main = pd.read_parquet(root / METADATA_NAMES[0])
    main.iloc[::-1].to_parquet(tmp_path / METADATA_NAMES[0])
    (tmp_path / METADATA_NAMES[1]).symlink_to(root / METADATA_NAMES[1])
    realigned = ec.read_bigearthnet(tmp_path)
    assert realigned.patch_id.values.tolist() == _tables(root)["patch_id"].tolist()

    wrong = main.copy()
    labels = wrong["labels"].tolist()
    labels[0] = ["Urban fabric"]
    wrong["labels"] = labels
    (tmp_path / METADATA_NAMES[0]).unlink()
    wrong.to_parquet(tmp_path / METADATA_NAMES[0])
    with pytest.raises(ValueError, match="do not match labels_multihot"):
        ec.read_bigearthnet(tmp_path)
