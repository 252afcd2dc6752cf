"""Properties (hypothesis): pairing invariants, chunking invariance, CRS/transform round trips
through Zarr, and normalisation with its inverse.

Complements the example-based tests: ``tests/test_pairing.py`` already checks that matches
are within ``max_dt``, greedy closest-first and nearest-first; here are the invariants it does
not cover. Example counts are kept small (each example embeds or writes a cube).
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import Affine

torch = pytest.importorskip("torch")

import eo_contrast as ec  # noqa: E402
from eo_contrast.models import BAND_STATS, DualEncoder  # noqa: E402
from eo_contrast.pairing import match_times  # noqa: E402

torch.set_num_threads(1)

BASE = np.datetime64("2024-01-01T00:00", "ns")
HOUR = np.timedelta64(1, "h")
TILE = 16
FAST = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=40, deadline=None)


def _hours(values: list[int]) -> np.ndarray:
    return BASE + np.asarray(values, dtype="int64") * HOUR


# ------------------------------------------------------------------------------------------
# pairing
# ------------------------------------------------------------------------------------------

times_st = st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=12)


@QUICK
@given(times_st, times_st, st.integers(1, 96), st.booleans(), st.randoms(use_true_random=False))
def test_matching_does_not_depend_on_input_order(t1, t2, max_h, one_to_one, rnd):
    """Shuffling the scenes changes indices, never which acquisition times are paired."""
    p1, p2 = list(range(len(t1))), list(range(len(t2)))
    rnd.shuffle(p1)
    rnd.shuffle(p2)
    s1, s2 = [t1[i] for i in p1], [t2[j] for j in p2]
    before = match_times(_hours(t1), _hours(t2), f"{max_h}h", one_to_one=one_to_one)
    after = match_times(_hours(s1), _hours(s2), f"{max_h}h", one_to_one=one_to_one)
    assert sorted((t2[j], t1[i]) for j, i in before) == sorted((s2[j], s1[i]) for j, i in after)


@QUICK
@given(times_st, times_st, st.integers(1, 48), st.integers(0, 96))
def test_a_larger_max_dt_keeps_every_nearest_pair(t1, t2, max_h, extra_h):
    """Without one_to_one, raising max_dt only adds pairs: existing ones stay as they are."""
    small = set(match_times(_hours(t1), _hours(t2), f"{max_h}h", one_to_one=False))
    large = set(match_times(_hours(t1), _hours(t2), f"{max_h + extra_h}h", one_to_one=False))
    assert small <= large
    # and one_to_one never pairs more scenes than the nearest-neighbour rule
    greedy = match_times(_hours(t1), _hours(t2), f"{max_h}h", one_to_one=True)
    assert len(greedy) <= len(small)
    assert {j for j, _ in greedy} <= {j for j, _ in small}


def _scene_cube(bands: list[str], hours: list[int], offset: float) -> xr.DataArray:
    """Values = offset + 10 * time index + band index: each scene and band is recognisable."""
    n_t, n_b = len(hours), len(bands)
    data = offset + 10.0 * np.arange(n_t)[:, None, None, None] + np.arange(n_b)[None, :, None, None]
    data = np.broadcast_to(data, (n_t, n_b, 3, 4)).astype(np.float32)
    cube = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": _hours(hours),
            "band": bands,
            "y": 4_000_000.0 - 10.0 * (np.arange(3) + 0.5),
            "x": 500_000.0 + 10.0 * (np.arange(4) + 0.5),
        },
    )
    return cube.rio.write_crs("EPSG:32631")


sorted_times_st = st.lists(st.integers(0, 300), min_size=1, max_size=8, unique=True).map(sorted)


@QUICK
@given(sorted_times_st, sorted_times_st, st.integers(1, 96), st.booleans())
def test_pair_carries_each_scene_with_its_own_times(t1, t2, max_h, one_to_one):
    """Every pair holds the S1 and S2 scenes its times name; dt is their gap, within max_dt."""
    s1 = _scene_cube(["vv", "vh"], t1, -30.0)
    s2 = _scene_cube(["B04", "B08"], t2, 1000.0)
    matches = match_times(s1.time.values, s2.time.values, f"{max_h}h", one_to_one=one_to_one)
    if not matches:
        with pytest.raises(ValueError, match="no S1/S2 pair within max_dt"):
            ec.pair(s1, s2, max_dt=f"{max_h}h", one_to_one=one_to_one)
        return
    pairs = ec.pair(s1, s2, max_dt=f"{max_h}h", one_to_one=one_to_one)
    assert pairs.sizes["pair"] == len(matches)
    s1_idx = [t1.index(int((t - BASE) / HOUR)) for t in pairs.s1_time.values]
    s2_idx = [t2.index(int((t - BASE) / HOUR)) for t in pairs.s2_time.values]
    assert list(zip(s2_idx, s1_idx, strict=True)) == matches
    np.testing.assert_array_equal(pairs.s1.values, s1.values[s1_idx])
    np.testing.assert_array_equal(pairs.s2.values, s2.values[s2_idx])
    dt = np.abs(pairs.s2_time.values - pairs.s1_time.values)
    np.testing.assert_array_equal(pairs.dt.values, dt)
    assert (dt <= np.timedelta64(max_h, "h")).all()
    assert (np.diff(pairs.s2_time.values) > np.timedelta64(0)).all()  # by S2 time, no repeat
    if one_to_one:
        assert len(set(s1_idx)) == len(s1_idx)


# ------------------------------------------------------------------------------------------
# outputs do not depend on the chunking
# ------------------------------------------------------------------------------------------

NY, NX = 64, 96


@pytest.fixture(scope="module")
def model() -> DualEncoder:
    return DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0).eval()


@pytest.fixture(scope="module")
def cube() -> xr.DataArray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:NY, 0:NX]
    water = (yy - 30) ** 2 + (xx - 50) ** 2 < 20**2
    values = np.stack([np.where(water, -22.0, -9.0), np.where(water, -28.0, -15.0)])
    values = values[None] + rng.normal(0, 1.5, (2, 2, NY, NX))
    values[:, :, :16, :16] = np.nan  # one all-NaN tile
    cube = xr.DataArray(
        values.astype(np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.to_datetime(["2024-03-01", "2024-03-13"]).values,
            "band": ["vv", "vh"],
            "y": 4_500_000.0 - 10.0 * (np.arange(NY) + 0.5),
            "x": 500_000.0 + 10.0 * (np.arange(NX) + 0.5),
        },
    )
    return cube.rio.write_crs("EPSG:32630")


@pytest.fixture(scope="module")
def reference(model: DualEncoder, cube: xr.DataArray) -> xr.DataArray:
    return ec.embed(cube, model, tile=TILE, device="cpu").compute()


def _chunks(n: int, step: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Chunk sizes along a dim of ``n`` pixels, every boundary on a multiple of ``step``."""
    k = n // step
    return st.sets(st.integers(1, k - 1), max_size=k - 1).map(
        lambda cuts: tuple(
            int(b - a) * step for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), k], strict=True)
        )
    )


@FAST
@given(
    _chunks(NY, TILE),
    _chunks(NX, TILE),
    st.sampled_from([1, 2]),
    st.sampled_from([1, 7, 64]),
)
def test_tile_embeddings_do_not_depend_on_chunks_or_batches(
    model, cube, reference, ys, xs, t_chunk, batch_size
):
    chunked = cube.chunk({"time": t_chunk, "band": -1, "y": ys, "x": xs})
    emb = ec.embed(chunked, model, tile=TILE, batch_size=batch_size, device="cpu")
    assert emb.data.chunks[2:] == (tuple(c // TILE for c in ys), tuple(c // TILE for c in xs))
    out = emb.compute()
    np.testing.assert_allclose(out.values, reference.values, rtol=1e-5, atol=1e-5)
    assert np.isnan(out.values[:, :, 0, 0]).all()  # the NaN tile, wherever its chunk falls
    for name in ("y", "x", "time", "feature"):
        np.testing.assert_array_equal(out[name].values, reference[name].values)
    assert out.rio.transform() == reference.rio.transform()


@FAST
@given(
    st.lists(st.integers(8, 40), min_size=1, max_size=4),
    st.lists(st.integers(8, 40), min_size=1, max_size=4),
)
def test_segmentation_does_not_depend_on_chunks(model, cube, ys, xs):
    from eo_contrast.segmentation import SegmentationModel

    seg = SegmentationModel(model, ["dry", "water"], sensors=("s1",), tile=TILE, seed=0).eval()
    ys_t = _fill(ys, NY)
    xs_t = _fill(xs, NX)
    ref = ec.segment(cube, seg, probabilities=True, device="cpu").values
    got = ec.segment(cube.chunk({"y": ys_t, "x": xs_t}), seg, probabilities=True, device="cpu")
    np.testing.assert_allclose(got.values, ref, rtol=1e-5, atol=1e-6)


def _fill(sizes: list[int], n: int) -> tuple[int, ...]:
    """Chunk sizes from ``sizes`` (any, not tile multiples) covering ``n`` pixels exactly."""
    out, total = [], 0
    for s in sizes:
        if total + s >= n:
            break
        out.append(s)
        total += s
    out.append(n - total)
    return tuple(out)


# ------------------------------------------------------------------------------------------
# CRS and transform round-trip through Zarr
# ------------------------------------------------------------------------------------------

EPSGS = [4326, 32630, 32633, 32755, 3035, 3857]


@st.composite
def grids(draw: st.DrawFn) -> tuple[int, Affine, int, int]:
    epsg = draw(st.sampled_from(EPSGS))
    degrees = epsg == 4326
    res = draw(st.sampled_from([1e-4, 8.983e-5, 2.5e-4] if degrees else [10.0, 20.0, 60.0, 0.5]))
    yres = res * draw(st.sampled_from([1.0, 1.5]))
    if degrees:
        x0 = draw(st.floats(-179.0, 170.0))
        y0 = draw(st.floats(-80.0, 85.0))
    else:
        x0 = float(draw(st.integers(100_000, 800_000))) + draw(st.sampled_from([0.0, 0.25, 5.0]))
        y0 = float(draw(st.integers(1_000_000, 9_000_000)))
    ny, nx = draw(st.integers(2, 9)), draw(st.integers(2, 9))
    return epsg, Affine(res, 0.0, x0, 0.0, -yres, y0), ny, nx


@settings(max_examples=15, deadline=None)
@given(grids(), st.sampled_from(["float32", "int16", "bool"]))
def test_crs_and_transform_round_trip_through_zarr(grid, dtype):
    epsg, transform, ny, nx = grid
    x = transform.c + transform.a * (np.arange(nx) + 0.5)
    y = transform.f + transform.e * (np.arange(ny) + 0.5)
    values = np.arange(ny * nx).reshape(1, ny, nx).astype(dtype)
    arr = xr.DataArray(
        values, dims=("band", "y", "x"), coords={"band": ["vv"], "y": y, "x": x}
    ).rio.write_crs(f"EPSG:{epsg}")
    back = ec.to_zarr(arr.chunk({"y": 2}), f"memory://props/{uuid.uuid4().hex}.zarr")
    assert back.rio.crs == arr.rio.crs
    assert back.rio.crs.to_epsg() == epsg
    got, want = tuple(back.rio.transform())[:6], tuple(transform)[:6]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9 * abs(transform.a))
    np.testing.assert_array_equal(back.values, values)


# ------------------------------------------------------------------------------------------
# normalisation and its inverse
# ------------------------------------------------------------------------------------------

stats_st = st.tuples(
    st.floats(-30.0, 30.0, allow_nan=False),
    st.floats(0.05, 20.0, allow_nan=False),
)


@QUICK
@given(
    st.lists(stats_st, min_size=2, max_size=2),
    st.integers(0, 2**32 - 1),
    st.sampled_from([(1, 2, 3, 5), (2, 4, 4), (3, 2, 1, 1)]),
)
def test_normalize_then_denormalize_is_the_identity(stats, seed, shape):
    mean = [m for m, _ in stats]
    std = [s for _, s in stats]
    model = DualEncoder(
        {"s1": ["vv", "vh"]}, width=8, normalization={"s1": {"mean": mean, "std": std}}
    )
    shape = (*shape[:-3], 2, *shape[-2:]) if len(shape) == 4 else (2, *shape[-2:])
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, shape) * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    x = x.astype(np.float32)
    z = model.normalize("s1", x)
    back = model.denormalize("s1", z).numpy()
    tol = 1e-5 * (np.abs(np.asarray(mean)) + 10 * np.asarray(std))[:, None, None]
    assert (np.abs(back - x) <= tol).all()
    np.testing.assert_allclose(model.normalize("s1", back).numpy(), z.numpy(), atol=1e-4)
    # NaN (nodata) is not invertible: it normalises to 0 and comes back as the band mean
    holed = x.copy()
    holed[..., 0, 0, 0] = np.nan
    again = model.denormalize("s1", model.normalize("s1", holed)).numpy()
    np.testing.assert_allclose(again[..., 0, 0, 0], mean[0], rtol=1e-6, atol=1e-5)


@QUICK
@given(st.sampled_from(sorted(BAND_STATS)), st.floats(-0.5, 1.5, allow_nan=False))
def test_default_statistics_invert_for_every_band(band, value):
    sensor = "s1" if band in ("vv", "vh") else "s2"
    units_value = value * 40 - 30 if sensor == "s1" else value  # dB or reflectance
    model = DualEncoder({sensor: [band]}, width=8)
    x = np.full((1, 2, 2), units_value, dtype=np.float32)
    back = model.denormalize(sensor, model.normalize(sensor, x)).numpy()
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)


@QUICK
@given(st.floats(1e-6, 1e3, allow_nan=False))
def test_linear_and_db_invert(power):
    x = np.array([power], dtype=np.float64)
    np.testing.assert_allclose(ec.db_to_linear(ec.linear_to_db(x)), x, rtol=1e-12)
