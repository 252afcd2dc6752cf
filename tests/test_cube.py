"""The cube layout and its checks: band names, sensors, dims, dtypes, units, CRS, times, grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eo_contrast.cube import (
    S1_BANDS,
    S2_BANDS,
    as_cube,
    band_units,
    canonical_band_name,
    canonical_band_names,
    check_dtype,
    check_times,
    db_to_linear,
    grids_equal,
    linear_to_db,
    require_crs,
    sensor_of,
)


def _grid(ny: int = 4, nx: int = 5, *, x0: float = 500_000.0, pixel: float = 10.0):
    y = 4_400_000.0 - pixel * (np.arange(ny) + 0.5)
    x = x0 + pixel * (np.arange(nx) + 0.5)
    return y, x


def _cube(bands=("vv", "vh"), ny=4, nx=5, *, crs="EPSG:32630", x0=500_000.0, pixel=10.0):
    y, x = _grid(ny, nx, x0=x0, pixel=pixel)
    da = xr.DataArray(
        np.zeros((len(bands), ny, nx), "float32"),
        dims=("band", "y", "x"),
        coords={"band": list(bands), "y": y, "x": x},
    )
    return da.rio.write_crs(crs) if crs else da


def _timed(times) -> xr.DataArray:
    return xr.DataArray(np.zeros((len(times), 1)), dims=("time", "band"), coords={"time": times})


# ----------------------------------------------------------------------------- band names


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("B1", "B01"),
        ("b01", "B01"),
        ("B8", "B08"),
        ("B8A", "B8A"),
        ("b08a", "B8A"),
        ("B12", "B12"),
        ("coastal", "B01"),
        ("blue", "B02"),
        ("Green", "B03"),
        ("RED", "B04"),
        ("rededge1", "B05"),
        ("rededge3", "B07"),
        ("nir", "B08"),
        ("nir08", "B8A"),
        ("nir09", "B09"),
        ("cirrus", "B10"),
        ("swir16", "B11"),
        ("swir22", "B12"),
        ("VV", "vv"),
        ("Vh", "vh"),
        ("HH", "hh"),
        ("hv", "hv"),
        ("B13", "B13"),  # unknown: unchanged
        ("ndvi", "ndvi"),
        (7, "7"),  # not a string: as a string
    ],
)
def test_canonical_band_name(name, canonical):
    assert canonical_band_name(name) == canonical


def test_canonical_band_names_keeps_order_and_length():
    assert canonical_band_names(["B4", "B3", "B2", "VV", "x"]) == ["B04", "B03", "B02", "vv", "x"]
    assert canonical_band_names(np.array(["B8", "B8A"])) == ["B08", "B8A"]
    assert canonical_band_names([]) == []


def test_every_canonical_name_maps_to_itself():
    for band in (*S1_BANDS, *S2_BANDS):
        assert canonical_band_name(band) == band


# ----------------------------------------------------------------------------- sensors


def test_sensor_of_band_lists_and_cubes():
    assert sensor_of(["vv", "vh"]) == "s1"
    assert sensor_of(["VV"]) == "s1"  # lists are made canonical first
    assert sensor_of(["B04", "B03", "B02"]) == "s2"
    assert sensor_of(["red", "nir"]) == "s2"
    assert sensor_of(list(S2_BANDS)) == "s2"
    assert sensor_of(_cube(("vv", "vh"))) == "s1"
    assert sensor_of(_cube(("B02", "B8A"))) == "s2"


def test_sensor_of_no_bands():
    with pytest.raises(ValueError, match="cannot tell the sensor of a cube with no bands"):
        sensor_of([])


def test_sensor_of_mixed_bands():
    with pytest.raises(
        ValueError, match=r"mix Sentinel-1 \(\['vv'\]\) and Sentinel-2 \(\['B04'\]\)"
    ):
        sensor_of(["vv", "B04"])


def test_sensor_of_unknown_bands_are_named():
    with pytest.raises(ValueError, match=r"bands \['ndvi'\] are neither Sentinel-1"):
        sensor_of(["B04", "ndvi"])


def test_sensor_of_a_cube_does_not_rename_its_bands():
    with pytest.raises(ValueError, match=r"bands \['VV'\] are neither"):
        sensor_of(_cube(("VV",)))


# ----------------------------------------------------------------------------- as_cube


def test_as_cube_orders_dims_and_makes_band_names_canonical():
    da = xr.DataArray(
        np.arange(2 * 3 * 2 * 2, dtype="float32").reshape(3, 2, 2, 2).transpose(1, 2, 3, 0),
        dims=("band", "y", "x", "time"),
        coords={"band": ["B4", "nir"], "time": pd.date_range("2024-01-01", periods=3)},
    )
    cube = as_cube(da)
    assert cube.dims == ("time", "band", "y", "x")
    assert cube["band"].values.tolist() == ["B04", "B08"]
    np.testing.assert_array_equal(cube.values, da.transpose("time", "band", "y", "x").values)
    assert cube.dtype == np.float32  # values are not rescaled or cast


def test_as_cube_keeps_a_canonical_cube_as_it_is():
    cube = _cube(("vv", "vh"))
    out = as_cube(cube)
    xr.testing.assert_identical(out, cube)


def test_as_cube_renames_geographic_dims():
    da = xr.DataArray(
        np.ones((1, 2, 3)),
        dims=("band", "latitude", "longitude"),
        coords={"band": ["B02"], "latitude": [1.0, 0.0], "longitude": [0.0, 1.0, 2.0]},
    )
    cube = as_cube(da)
    assert cube.dims == ("band", "y", "x")
    assert cube["y"].values.tolist() == [1.0, 0.0]
    short = da.rename(latitude="lat", longitude="lon")
    assert as_cube(short).dims == ("band", "y", "x")


def test_as_cube_of_a_dataset_with_one_variable_per_band():
    cube = _cube(("vv", "vh"))
    ds = xr.Dataset(
        {
            "VV": (("y", "x"), np.full((4, 5), -10.0, "float32")),
            "VH": (("y", "x"), np.full((4, 5), -17.0, "float32")),
        },
        coords={"y": cube.y, "x": cube.x},
    ).rio.write_crs("EPSG:32630")
    out = as_cube(ds)
    assert out.dims == ("band", "y", "x")
    assert out["band"].values.tolist() == ["vv", "vh"]
    assert out.sel(band="vv").values.tolist() == [[-10.0] * 5] * 4
    assert out.sel(band="vh").values.mean() == -17.0
    assert "spatial_ref" in out.coords and out.rio.crs.to_epsg() == 32630


def test_as_cube_of_a_dataset_with_time():
    times = pd.date_range("2024-01-01", periods=2)
    ds = xr.Dataset(
        {b: (("time", "y", "x"), np.ones((2, 3, 3))) for b in ("B02", "B03")},
        coords={"time": times},
    )
    out = as_cube(ds)
    assert out.dims == ("time", "band", "y", "x") and out.shape == (2, 2, 3, 3)


def test_as_cube_of_an_empty_dataset():
    with pytest.raises(ValueError, match="s2 is an empty Dataset: it has no band variables"):
        as_cube(xr.Dataset(), name="s2")


def test_as_cube_of_another_type():
    with pytest.raises(TypeError, match="cube must be an xarray DataArray or Dataset, not ndarray"):
        as_cube(np.zeros((2, 3, 3)))  # type: ignore[arg-type]


def test_as_cube_missing_dims_are_named():
    da = xr.DataArray(np.zeros((3, 3)), dims=("y", "x"))
    with pytest.raises(ValueError, match=r"img has dims \('y', 'x'\) .* missing \['band'\]"):
        as_cube(da, name="img")


def test_as_cube_extra_dims_are_named():
    da = xr.DataArray(np.zeros((1, 2, 3, 3)), dims=("member", "band", "y", "x"))
    with pytest.raises(ValueError, match=r"unexpected dims \['member'\]"):
        as_cube(da)


def test_as_cube_of_an_empty_cube():
    da = xr.DataArray(
        np.zeros((0, 3, 3)), dims=("band", "y", "x"), coords={"band": np.array([], str)}
    )
    with pytest.raises(
        ValueError, match=r"cube is empty: its shape is \{'band': 0, 'y': 3, 'x': 3\}"
    ):
        as_cube(da)


def test_as_cube_checks_the_dtype():
    da = xr.DataArray(np.zeros((1, 2, 2), bool), dims=("band", "y", "x"), coords={"band": ["vv"]})
    with pytest.raises(TypeError, match="s1 has dtype bool"):
        as_cube(da, name="s1")


def test_as_cube_needs_band_names():
    da = xr.DataArray(np.zeros((2, 2, 2)), dims=("band", "y", "x"))
    with pytest.raises(ValueError, match="has a 'band' dim but no 'band' coordinate"):
        as_cube(da)


def test_as_cube_refuses_duplicate_band_names_after_renaming():
    da = xr.DataArray(np.zeros((2, 2, 2)), dims=("band", "y", "x"), coords={"band": ["B4", "red"]})
    with pytest.raises(ValueError, match="cube has duplicate band names") as info:
        as_cube(da)
    assert str(info.value).count("B04") == 2


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int16", "uint16", "uint8"])
def test_check_dtype_accepts_real_numbers(dtype):
    assert check_dtype(xr.DataArray(np.zeros(2, dtype))) is None


@pytest.mark.parametrize(
    ("values", "hint"),
    [
        (np.zeros(2, "complex64"), "abs(x) ** 2"),
        (np.zeros(2, bool), "s2.where(mask)"),
        (np.array(["a", "b"]), "parse the strings into numbers"),
        (np.array([b"a", b"b"]), "parse the bytes into numbers"),
        (np.array([1, "a"], dtype=object), "convert the Python objects into numbers"),
        (np.array(["2024-01-01"], dtype="datetime64[ns]"), "put them in a 'time' coordinate"),
        (np.array([1], dtype="timedelta64[s]"), "durations are not band values"),
    ],
)
def test_check_dtype_refuses_other_data_with_a_hint(values, hint):
    with pytest.raises(TypeError) as info:
        check_dtype(xr.DataArray(values), name="s2")
    message = str(info.value)
    assert message.startswith(f"s2 has dtype {values.dtype}, but a cube holds real numbers")
    assert hint in message


# ----------------------------------------------------------------------------- units


def test_band_units_from_the_units_coordinate():
    cube = _cube(("vv", "vh")).assign_coords(units=("band", ["dB", "linear"]))
    assert band_units(cube) == {"vv": "dB", "vh": "linear"}


def test_band_units_default_to_the_sensor():
    assert band_units(_cube(("vv", "vh"))) == {"vv": "dB", "vh": "dB"}
    assert band_units(_cube(("B02", "B03", "B04"))) == {"B02": "1", "B03": "1", "B04": "1"}


def test_band_units_ignore_a_scalar_units_coordinate():
    cube = _cube(("B02",)).assign_coords(units="DN")
    assert band_units(cube) == {"B02": "1"}


def test_band_units_of_unknown_bands():
    with pytest.raises(ValueError, match="are neither Sentinel-1"):
        band_units(_cube(("ndvi",)))


# ----------------------------------------------------------------------------- CRS and grids


def test_require_crs():
    assert require_crs(_cube()) is None
    assert require_crs(_cube().to_dataset(name="v")) is None
    with pytest.raises(ValueError, match=r"s1 has no CRS: record one with s1\.rio\.write_crs"):
        require_crs(_cube(crs=None), name="s1")


def test_grids_equal_on_the_same_grid():
    assert grids_equal(_cube(("vv",)), _cube(("B02", "B03")))
    assert grids_equal(_cube(), _cube().to_dataset(name="v"))


def test_grids_differ_in_crs_shape_origin_or_pixel():
    a = _cube()
    assert not grids_equal(a, _cube(crs="EPSG:32631"))
    assert not grids_equal(a, _cube(crs=None))
    assert not grids_equal(a, _cube(ny=5))
    assert not grids_equal(a, _cube(nx=4))
    assert not grids_equal(a, _cube(x0=500_010.0))
    assert not grids_equal(a, _cube(pixel=20.0))


# ----------------------------------------------------------------------------- times


def test_check_times_returns_the_index():
    times = pd.to_datetime(["2024-01-01", "2024-01-13", "2024-02-01"])
    got = check_times(_timed(times.values))
    assert isinstance(got, pd.DatetimeIndex)
    assert got.equals(pd.DatetimeIndex(times))
    assert got.tz is None


def test_check_times_converts_aware_times_to_naive_utc():
    aware = pd.DatetimeIndex(["2024-01-01 01:00", "2024-01-02 01:00"]).tz_localize("Europe/Paris")
    da = xr.DataArray(np.zeros(2), dims="time", coords={"time": aware})
    got = check_times(da)
    assert got.tz is None
    assert got.equals(pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-02 00:00"]))


def test_check_times_needs_a_time_dim():
    with pytest.raises(ValueError, match="s2 has no 'time' dim"):
        check_times(_cube(), name="s2")


def test_check_times_refuses_values_that_are_not_datetimes():
    da = _timed([object(), object()])
    with pytest.raises(ValueError, match="time coordinate holds object values that are not"):
        check_times(da)


def test_check_times_refuses_missing_times():
    times = np.array(["2024-01-01", "NaT", "NaT"], dtype="datetime64[ns]")
    with pytest.raises(ValueError, match=r"cube has 2 missing time\(s\) \(NaT\)"):
        check_times(_timed(times))


def test_check_times_refuses_duplicates():
    times = np.array(["2024-01-01", "2024-01-01", "2024-01-02"], dtype="datetime64[ns]")
    with pytest.raises(ValueError, match=r"duplicate times \['2024-01-01 00:00:00'\]"):
        check_times(_timed(times))


def test_check_times_refuses_unsorted_times():
    times = np.array(["2024-01-02", "2024-01-01"], dtype="datetime64[ns]")
    with pytest.raises(ValueError, match=r"s1 times are not sorted: sort them with s1\.sortby"):
        check_times(_timed(times), name="s1")


# ----------------------------------------------------------------------------- decibels


def test_linear_to_db_values():
    got = linear_to_db(np.array([1.0, 10.0, 0.01, 0.0, -1.0]))
    np.testing.assert_allclose(got, [0.0, 10.0, -20.0, np.nan, np.nan])


def test_db_to_linear_values():
    np.testing.assert_allclose(db_to_linear(np.array([0.0, 10.0, -20.0])), [1.0, 10.0, 0.01])


def test_decibel_round_trip_numpy_keeps_dtype():
    x = np.array([1e-4, 0.003, 0.05, 0.5, 1.0, 7.5], dtype="float32")
    db = linear_to_db(x)
    assert db.dtype == np.float32
    back = db_to_linear(db)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1e-5)


def test_decibel_round_trip_dataarray_keeps_coords_and_dtype():
    cube = _cube(("vv", "vh"), ny=2, nx=2)
    lin = cube.copy(data=np.array([[[1.0, 0.1], [0.01, 0.0]], [[2.0, 0.5], [-1.0, 1e-3]]], "f4"))
    db = linear_to_db(lin)
    assert isinstance(db, xr.DataArray) and db.dtype == np.float32
    assert db["band"].values.tolist() == ["vv", "vh"]
    np.testing.assert_allclose(db.sel(band="vv").values, [[0.0, -10.0], [-20.0, np.nan]], atol=1e-5)
    assert np.isnan(db.sel(band="vh").values[1, 0])
    back = db_to_linear(db)
    assert isinstance(back, xr.DataArray) and back.dtype == np.float32
    valid = lin.values > 0
    np.testing.assert_allclose(back.values[valid], lin.values[valid], rtol=1e-5)
    assert np.isnan(back.values[~valid]).all()
