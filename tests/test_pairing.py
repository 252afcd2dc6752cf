"""Tests of eo_contrast.pairing: time matching (property-based) and pairing on one grid."""

from __future__ import annotations

import datetime

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rioxarray
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from pyproj import Transformer

import eo_contrast as ec
from eo_contrast.pairing import match_times, pair, parse_max_dt

BASE = np.datetime64("2020-01-01T00:00", "ns")
HOUR = np.timedelta64(1, "h")


def hours(values: list[int]) -> np.ndarray:
    return BASE + np.asarray(values, dtype="int64") * HOUR


def cube(
    bands: list[str],
    times: list[str],
    *,
    data: np.ndarray | None = None,
    y0: float = 4_000_000.0,
    x0: float = 500_000.0,
    res: float = 10.0,
    shape: tuple[int, int] = (4, 5),
    crs: str | None = "EPSG:32631",
    chunks: dict[str, int] | None = None,
) -> xr.DataArray:
    """A small canonical cube; by default value = 100 * time index + band index."""
    ny, nx = shape
    if data is None:
        data = (
            100.0 * np.arange(len(times))[:, None, None, None]
            + np.arange(len(bands))[None, :, None, None]
            + np.zeros((1, 1, ny, nx))
        )
    arr = xr.DataArray(
        np.asarray(data, dtype="float32"),
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.to_datetime(times),
            "band": bands,
            "y": y0 - res * (np.arange(ny) + 0.5),
            "x": x0 + res * (np.arange(nx) + 0.5),
        },
    )
    if crs is not None:
        arr = arr.rio.write_crs(crs)
    if chunks:
        arr = arr.chunk(chunks)
    return arr


S1B = ["vv", "vh"]
S2B = ["B02", "B03", "B04"]


# --------------------------------------------------------------------------- match_times

times_st = st.lists(st.integers(min_value=0, max_value=400), min_size=0, max_size=14)
max_dt_st = st.integers(min_value=1, max_value=120)


def gaps(t1: list[int], t2: list[int]) -> np.ndarray:
    return np.abs(np.asarray(t2, dtype=int)[:, None] - np.asarray(t1, dtype=int)[None, :])


@given(times_st, times_st, max_dt_st, st.booleans())
def test_match_times_within_max_dt_and_sorted(t1, t2, max_h, one_to_one):
    out = match_times(hours(t1), hours(t2), np.timedelta64(max_h, "h"), one_to_one=one_to_one)
    for j, i in out:
        assert abs(t2[j] - t1[i]) <= max_h
    keys = [(t2[j], j) for j, _ in out]
    assert keys == sorted(keys)
    assert len({j for j, _ in out}) == len(out)  # an S2 time is used at most once


@given(times_st, times_st, max_dt_st)
def test_match_times_one_to_one_is_greedy_closest_first(t1, t2, max_h):
    out = match_times(hours(t1), hours(t2), f"{max_h}h", one_to_one=True)
    g = gaps(t1, t2)
    s1_used = {i: g[j, i] for j, i in out}
    s2_used = {j: g[j, i] for j, i in out}
    assert len(s1_used) == len(out)  # no S1 index twice
    assert len(s2_used) == len(out)  # no S2 index twice
    chosen = set(out)
    for j in range(len(t2)):
        for i in range(len(t1)):
            if (j, i) in chosen or g[j, i] > max_h:
                continue
            # an unchosen candidate: one of its ends must be taken by a pair at least as close
            blocked_by_s2 = j in s2_used and s2_used[j] <= g[j, i]
            blocked_by_s1 = i in s1_used and s1_used[i] <= g[j, i]
            assert blocked_by_s2 or blocked_by_s1, (j, i, out)
    for j, i in out:
        # no strictly closer candidate on either end, unless that other end was already used
        # by a closer (or equally close) pair
        for i2 in range(len(t1)):
            if g[j, i2] < g[j, i]:
                assert i2 in s1_used and s1_used[i2] <= g[j, i2]
        for j2 in range(len(t2)):
            if g[j2, i] < g[j, i]:
                assert j2 in s2_used and s2_used[j2] <= g[j2, i]


@given(times_st, times_st, max_dt_st)
def test_match_times_without_one_to_one_takes_nearest(t1, t2, max_h):
    out = dict(match_times(hours(t1), hours(t2), f"{max_h}h", one_to_one=False))
    g = gaps(t1, t2)
    for j in range(len(t2)):
        if len(t1) == 0 or g[j].min() > max_h:
            assert j not in out
        else:
            assert g[j, out[j]] == g[j].min()
            # ties go to the earlier S1 time
            ties = [i for i in range(len(t1)) if g[j, i] == g[j].min()]
            assert t1[out[j]] == min(t1[i] for i in ties)


def test_match_times_examples_and_ties():
    s1 = hours([0, 48])
    s2 = hours([24, 25])
    # s2[1] is closer to s1[1] (23 h) than s2[0] to either (24 h): closest first
    assert match_times(s1, s2, "1D") == [(0, 0), (1, 1)]
    # a tie for one S1: the earlier S2 time wins, deterministically
    assert match_times(hours([10]), hours([8, 12]), "3h") == [(0, 0)]
    assert match_times(hours([10]), hours([8, 12]), "3h", one_to_one=False) == [(0, 0), (1, 0)]
    # a tie for one S2: the earlier S1 time wins
    assert match_times(hours([8, 12]), hours([10]), "2h", one_to_one=False) == [(0, 0)]
    # greedy does not maximise the number of pairs: s1[0] goes to the closer s2[1]
    assert match_times(hours([10]), hours([8, 9]), "2h") == [(1, 0)]
    assert match_times([], hours([1]), "1D") == []
    # inclusive bound
    assert match_times(hours([0]), hours([72]), "3D") == [(0, 0)]
    assert match_times(hours([0]), hours([73]), "3D") == []


def test_match_times_unsorted_inputs_keep_indices():
    s1 = hours([100, 0, 50])
    s2 = hours([49, 1, 99])
    assert match_times(s1, s2, "2h") == [(1, 1), (0, 2), (2, 0)]


def test_match_times_tz_aware():
    s1 = pd.DatetimeIndex(["2020-01-01 23:30"], tz="Europe/Madrid")  # 22:30 UTC
    s2 = pd.DatetimeIndex(["2020-01-01 22:00"])  # naive = UTC
    assert match_times(s1, s2, "1h") == [(0, 0)]
    assert match_times(s1, s2, "29min") == []


def test_match_times_rejects_nat_and_non_times():
    with pytest.raises(ValueError, match="s1_times contain NaT"):
        match_times(np.array(["2020-01-01", "NaT"], "datetime64[ns]"), hours([0]), "1D")
    with pytest.raises(ValueError, match="s2_times are not datetimes"):
        match_times(hours([0]), ["not a time"], "1D")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3D", pd.Timedelta(days=3)),
        ("36h", pd.Timedelta(hours=36)),
        ("2 days 12:00:00", pd.Timedelta(hours=60)),
        (np.timedelta64(2, "D"), pd.Timedelta(days=2)),
        (pd.Timedelta("90min"), pd.Timedelta(minutes=90)),
        (datetime.timedelta(hours=5), pd.Timedelta(hours=5)),
    ],
)
def test_parse_max_dt_forms(value, expected):
    assert parse_max_dt(value) == expected


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("0D", ValueError, "must be a positive duration"),
        ("-1D", ValueError, "must be a positive duration"),
        (np.timedelta64(-3, "h"), ValueError, "must be a positive duration"),
        ("three days", ValueError, "not a duration pandas understands"),
        (np.timedelta64("NaT"), ValueError, "is not a time"),
        (3, TypeError, "plain number"),
        (2.5, TypeError, "plain number"),
        (None, TypeError, "must be a duration"),
    ],
)
def test_parse_max_dt_errors(value, error, match):
    with pytest.raises(error, match=match):
        parse_max_dt(value)
    with pytest.raises(error, match=match):
        pair(cube(S1B, ["2020-01-01"]), cube(S2B, ["2020-01-01"]), max_dt=value)


# --------------------------------------------------------------------------- pair


def test_pair_same_grid_values_dims_coords():
    s1 = cube(S1B, ["2020-01-01", "2020-01-05", "2020-01-09"])
    s2 = cube(S2B, ["2020-01-02", "2020-01-07", "2020-01-20"]) * 0.001
    s2 = s2.rio.write_crs("EPSG:32631")
    pairs = pair(s1, s2, max_dt="3D")
    assert pairs["s1"].dims == ("pair", "s1_band", "y", "x")
    assert pairs["s2"].dims == ("pair", "s2_band", "y", "x")
    assert pairs["s1"].dtype == np.float32 and pairs["s2"].dtype == np.float32
    assert pairs.sizes == {"pair": 2, "s1_band": 2, "s2_band": 3, "y": 4, "x": 5}
    # 01-02 <- 01-01 (1 day); 01-07 <- 01-05 or 01-09 (2 days each): tie -> earlier S1
    np.testing.assert_array_equal(
        pairs.s1_time.values, np.array(["2020-01-01", "2020-01-05"], "datetime64[ns]")
    )
    np.testing.assert_array_equal(
        pairs.s2_time.values, np.array(["2020-01-02", "2020-01-07"], "datetime64[ns]")
    )
    np.testing.assert_array_equal(
        pairs.dt.values, np.array([1, 2], "timedelta64[D]").astype("timedelta64[ns]")
    )
    assert pairs.dt.dtype == np.dtype("timedelta64[ns]")
    assert pairs.s1_band.values.tolist() == ["vv", "vh"]
    assert pairs.s2_band.values.tolist() == ["B02", "B03", "B04"]
    assert pairs.s1_units.dims == ("s1_band",) and pairs.s1_units.values.tolist() == ["dB", "dB"]
    assert pairs.s2_units.values.tolist() == ["1", "1", "1"]
    # values: S1 scene index 0 then 1; S2 scene index 0 then 1
    np.testing.assert_array_equal(pairs.s1.values[:, :, 0, 0], [[0, 1], [100, 101]])
    np.testing.assert_allclose(
        pairs.s2.values[:, :, 2, 3], [[0, 0.001, 0.002], [0.1, 0.101, 0.102]]
    )
    np.testing.assert_array_equal(pairs.y.values, s2.y.values)
    np.testing.assert_array_equal(pairs.x.values, s2.x.values)
    assert pairs.rio.crs.to_epsg() == 32631
    assert pairs.attrs["max_dt"] == "3 days 00:00:00"
    assert pairs.attrs["one_to_one"] == 1
    assert pairs.attrs["s1_resampling"] == "none (same grid)"


def test_pair_one_to_one_and_many_to_one():
    s1 = cube(S1B, ["2020-01-03"])
    s2 = cube(S2B, ["2020-01-01", "2020-01-04"])
    one = pair(s1, s2)
    assert one.sizes["pair"] == 1
    assert one.s2_time.values[0] == np.datetime64("2020-01-04", "ns")
    many = pair(s1, s2, one_to_one=False)
    assert many.sizes["pair"] == 2
    np.testing.assert_array_equal(
        many.s1_time.values, np.repeat(np.datetime64("2020-01-03", "ns"), 2)
    )
    np.testing.assert_array_equal(
        many.dt.values, np.array([2, 1], "timedelta64[D]").astype("timedelta64[ns]")
    )
    assert many.attrs["one_to_one"] == 0


def test_pair_accepts_datasets_and_accessor_matches():
    s1 = cube(S1B, ["2020-01-01", "2020-01-10"], chunks={"y": 2, "x": 5})
    s2 = cube(["B4", "B3", "B2"], ["2020-01-02", "2020-01-11"], chunks={"y": 2, "x": 5})
    s1_ds = s1.to_dataset("band")  # odc-stac style: one variable per band
    s2_ds = s2.to_dataset("band")
    from_ds = ec.pair(s1_ds, s2_ds)
    from_da = s1.contrast.pair(s2)
    assert from_ds.s2_band.values.tolist() == ["B04", "B03", "B02"]
    xr.testing.assert_identical(from_ds, from_da)
    assert from_ds.sizes["pair"] == 2
    assert from_ds.rio.crs.to_epsg() == 32631
    xr.testing.assert_identical(s1_ds.contrast.pair(s2_ds), from_ds)


def test_pair_is_lazy():
    def boom(block):
        raise AssertionError("pair() computed the data")

    s1 = cube(S1B, ["2020-01-01"], chunks={"y": 2})
    s2 = cube(S2B, ["2020-01-02"], chunks={"y": 2}, x0=500_005.0)  # other grid: reprojection
    s1 = s1.copy(data=s1.data.map_blocks(boom, dtype="float32"))
    s2 = s2.copy(data=s2.data.map_blocks(boom, dtype="float32"))
    pairs = pair(s1, s2)
    assert isinstance(pairs.s1.data, da.Array) and isinstance(pairs.s2.data, da.Array)
    assert pairs.s1.chunks == ((1,), (2,), (2, 2), (5,))
    assert pairs.attrs["s1_resampling"] == "bilinear"


def test_pair_reprojects_a_shifted_grid():
    ny, nx = 6, 8
    pattern = (10.0 * np.arange(ny)[:, None] + np.arange(nx)[None, :])[None, None]
    data = np.concatenate([pattern, -pattern], axis=1)
    # S1 grid shifted by one pixel east and one pixel south of S2's
    s1 = cube(
        S1B,
        ["2020-01-01"],
        data=data,
        shape=(ny, nx),
        x0=500_010.0,
        y0=3_999_990.0,
        chunks={"y": 3, "x": 4},
    )
    s2 = cube(S2B, ["2020-01-01"], shape=(ny, nx), chunks={"y": 3, "x": 4})
    pairs = pair(s1, s2)
    out = pairs.s1.values[0, 0]
    # S2 pixel (r, c) sits on S1 pixel (r - 1, c - 1): value 10 (r - 1) + (c - 1)
    expected = np.full((ny, nx), np.nan)
    expected[1:, 1:] = pattern[0, 0, :-1, :-1]
    np.testing.assert_allclose(out[1:, 1:], expected[1:, 1:], atol=1e-4)
    assert np.isnan(out[0]).all() and np.isnan(out[:, 0]).all()  # outside S1: nodata
    np.testing.assert_allclose(pairs.s1.values[0, 1, 1:, 1:], -expected[1:, 1:], atol=1e-4)

    # half a pixel east: bilinear averages neighbours along x
    s1h = cube(S1B, ["2020-01-01"], data=data, shape=(ny, nx), x0=500_005.0)
    outh = pair(s1h, s2.compute()).s1.values[0, 0]
    np.testing.assert_allclose(outh[:, 1:-1], pattern[0, 0, :, :-2] + 0.5, atol=1e-4)


def test_pair_reprojects_epsg4326_onto_utm():
    # S1 in lon/lat, value a linear function of lon/lat; S2 on a UTM 31N grid inside it
    lon = 2.95 + 0.0002 * (np.arange(300) + 0.5)
    lat = 45.07 - 0.0002 * (np.arange(200) + 0.5)
    field = (1000.0 * (lon[None, :] - 3.0) + 500.0 * (lat[:, None] - 45.0)).astype("float32")
    s1 = (
        xr.DataArray(
            np.stack([field, field + 1.0])[None],
            dims=("time", "band", "latitude", "longitude"),
            coords={
                "time": pd.to_datetime(["2020-06-01T06:00"]),
                "band": ["VV", "VH"],
                "latitude": lat,
                "longitude": lon,
            },
        )
        .rio.set_spatial_dims(x_dim="longitude", y_dim="latitude")
        .rio.write_crs("EPSG:4326")
    )
    s1 = s1.chunk({"latitude": 100, "longitude": 150})
    x0, y0 = 498_000.0, 4_989_000.0
    s2 = cube(
        S2B, ["2020-06-01T10:30"], shape=(40, 60), x0=x0, y0=y0, res=20.0, chunks={"y": 20, "x": 30}
    )
    pairs = pair(s1, s2, max_dt="1D")
    assert isinstance(pairs.s1.data, da.Array)
    assert pairs.rio.crs.to_epsg() == 32631
    assert pairs.s1_band.values.tolist() == ["vv", "vh"]
    out = pairs.s1.values[0]
    assert not np.isnan(out).any()
    to_ll = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    xx, yy = np.meshgrid(s2.x.values, s2.y.values)
    plon, plat = to_ll.transform(xx, yy)
    expected = 1000.0 * (plon - 3.0) + 500.0 * (plat - 45.0)
    np.testing.assert_allclose(out[0], expected, atol=0.02)  # ~1/10 of one S1 pixel's step
    np.testing.assert_allclose(out[1], expected + 1.0, atol=0.02)
    assert pairs.dt.values[0] == np.timedelta64(270, "m")


def test_pair_tz_aware_times_become_naive_utc():
    s1 = cube(S1B, ["2020-01-01"])
    s1 = s1.assign_coords(time=pd.DatetimeIndex(["2020-01-01 23:30"], tz="Europe/Madrid"))
    s2 = cube(S2B, ["2020-01-01 22:00"])
    pairs = pair(s1, s2, max_dt="1h")
    assert pairs.s1_time.values[0] == np.datetime64("2020-01-01T22:30", "ns")
    assert pairs.dt.values[0] == np.timedelta64(30, "m")


def test_pair_no_pair_names_the_closest_gap():
    s1 = cube(S1B, ["2020-01-01", "2020-03-01"])
    s2 = cube(S2B, ["2020-01-06T02:00", "2020-02-01T00:00"])
    with pytest.raises(
        ValueError, match=r"closest S1/S2 gap is 5 days 02:00:00 > max_dt 3 days.*max_dt='6D'"
    ):
        pair(s1, s2, max_dt="3D")


def test_pair_sensor_errors():
    s1 = cube(S1B, ["2020-01-01"])
    s2 = cube(S2B, ["2020-01-01"])
    with pytest.raises(ValueError, match="arguments are swapped"):
        pair(s2, s1)
    with pytest.raises(ValueError, match="s1 must hold Sentinel-1 bands"):
        pair(s2, s2)
    with pytest.raises(ValueError, match="s2 must hold Sentinel-2 bands"):
        pair(s1, s1)
    with pytest.raises(ValueError, match="mix Sentinel-1"):
        pair(cube(["vv", "B02"], ["2020-01-01"]), s2)
    with pytest.raises(TypeError, match="s2 must be an xarray DataArray or Dataset"):
        pair(s1, np.zeros((1, 3, 4, 5)))


def test_pair_time_and_crs_errors():
    s1 = cube(S1B, ["2020-01-01", "2020-01-02"])
    s2 = cube(S2B, ["2020-01-01"])
    with pytest.raises(ValueError, match="s1 has no 'time' dim"):
        pair(s1.isel(time=0), s2)
    with pytest.raises(ValueError, match="s2 has duplicate times"):
        pair(s1, cube(S2B, ["2020-01-01", "2020-01-01"]))
    with pytest.raises(ValueError, match="s1 times are not sorted"):
        pair(s1.isel(time=[1, 0]), s2)
    with pytest.raises(ValueError, match="s2 has no CRS"):
        pair(s1, cube(S2B, ["2020-01-01"], crs=None))


def test_pair_footprints_must_overlap():
    s1 = cube(S1B, ["2020-01-01"], x0=600_000.0)
    s2 = cube(S2B, ["2020-01-01"])
    with pytest.raises(ValueError, match="footprints do not overlap"):
        pair(s1, s2)


def test_pair_irregular_grid_is_refused():
    s1 = cube(S1B, ["2020-01-01"])
    s1 = s1.assign_coords(x=s1.x.values + np.array([0.0, 0.0, 3.0, 0.0, 0.0]))
    s2 = cube(S2B, ["2020-01-01"])
    with pytest.raises(ValueError, match="s1 has no regular pixel grid"):
        pair(s1, s2)


def test_pair_sen1floods11_chip(shared_data):
    folder = shared_data / "sen1floods11_spain"
    s1_raw = rioxarray.open_rasterio(
        folder / "Spain_7370579_S1Hand.tif", chunks={"x": 256, "y": 256}
    )
    s2_raw = rioxarray.open_rasterio(
        folder / "Spain_7370579_S2Hand.tif", chunks={"x": 256, "y": 256}
    )
    s1 = s1_raw.assign_coords(band=list(s1_raw.attrs["long_name"]))
    s1 = s1.expand_dims(time=pd.to_datetime(["2019-09-17"]))
    s2 = s2_raw.assign_coords(band=list(s2_raw.attrs["long_name"]))
    s2 = (s2.where(s2 != 0) * 1e-4).astype("float32")  # L1C x10000, nodata 0
    s2 = ec.as_cube(s2.expand_dims(time=pd.to_datetime(["2019-09-18"])))
    assert s2.band.values.tolist()[:2] == ["B01", "B02"]

    pairs = pair(s1, s2)
    assert pairs.sizes == {"pair": 1, "s1_band": 2, "s2_band": 13, "y": 512, "x": 512}
    assert pairs.dt.values.tolist() == [np.timedelta64(1, "D").astype("timedelta64[ns]").item()]
    assert pairs.s1_band.values.tolist() == ["vv", "vh"]
    assert pairs.rio.crs.to_epsg() == 4326
    assert pairs.attrs["s1_resampling"] == "none (same grid)"
    assert isinstance(pairs.s1.data, da.Array)
    vv = pairs.s1.sel(s1_band="vv").values[0]
    np.testing.assert_array_equal(vv, s1_raw.values[0])
    assert -13.0 < float(np.nanmean(vv)) < -10.0  # SOURCE.txt: VV mean -11.4 dB
    nir = pairs.s2.sel(s2_band="B08").values[0]
    np.testing.assert_allclose(
        nir, np.where(s2_raw.values[7] == 0, np.nan, s2_raw.values[7] * 1e-4), rtol=1e-6
    )
    # one day later the S1 scene is out of a 12 h window
    with pytest.raises(ValueError, match="closest S1/S2 gap is 1 days 00:00:00 > max_dt 0 days 12"):
        pair(s1, s2, max_dt="12h")
