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
