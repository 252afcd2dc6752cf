"""Values checked against their units: linear S1 and S2 digital numbers are refused, with the fix."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

torch = pytest.importorskip("torch")

import eo_contrast as ec  # noqa: E402
from eo_contrast.models import DualEncoder  # noqa: E402
from eo_contrast.segmentation import SegmentationModel  # noqa: E402
from eo_contrast.units import MAX_SAMPLE, UnitsError, block_location, check_values  # noqa: E402

torch.set_num_threads(1)

N = 64
S2_BANDS = ["B04", "B03", "B02"]


def _cube(values: np.ndarray, bands: list[str], units: str) -> xr.DataArray:
    """A small cube ``(time, band, y, x)`` on a UTM grid, chunked 32 x 32."""
    nt, _, ny, nx = values.shape
    times = pd.date_range("2024-03-01", periods=nt, freq="12D")
    return (
        xr.DataArray(
            values.astype("float32"),
            dims=("time", "band", "y", "x"),
            coords={
                "time": times,
                "band": bands,
                "units": ("band", [units] * len(bands)),
                "y": 4_500_000.0 - 10 * np.arange(ny),
                "x": 500_000.0 + 10 * np.arange(nx),
            },
        )
        .rio.write_crs("EPSG:32630")
        .chunk({"time": 1, "y": 32, "x": 32})
    )


def _db(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    water = rng.uniform(0, 1, (N, N)) > 0.7
    vv = np.where(water, -21.0, -9.0) + rng.normal(0, 1.5, (2, N, N))
    vh = vv - 7.0 + rng.normal(0, 1.0, (2, N, N))
    return np.stack([vv, vh], axis=1)


def _reflectance(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.02, 0.4, (2, len(S2_BANDS), N, N))


@pytest.fixture(scope="module")
def s1_model() -> DualEncoder:
    return DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0).eval()


@pytest.fixture(scope="module")
def s2_model() -> DualEncoder:
    return DualEncoder({"s2": S2_BANDS}, width=8, seed=0).eval()


# --------------------------------------------------------------------------------------------
# check_values
# --------------------------------------------------------------------------------------------


def test_exported() -> None:
    assert ec.UnitsError is UnitsError and ec.check_values is check_values
    assert issubclass(UnitsError, ValueError)
    assert {"UnitsError", "check_values"} <= set(ec.__all__)


def test_genuine_db_and_reflectance_pass() -> None:
    rng = np.random.default_rng(1)
    check_values(_db(), "s1", "dB", name="s1")
    urban = rng.uniform(-3.0, 10.0, (2, 2, N, N))  # bright urban backscatter, up to +10 dB
    check_values(urban, "s1", "dB", name="urban")
    very_urban = rng.uniform(0.5, 12.0, (1, 2, N, N))  # all positive, median ~6 dB
    check_values(very_urban, "s1", {"vv": "dB", "vh": "dB"}, name="city")
    check_values(_reflectance(), "s2", "1", name="s2")
    clouds = rng.uniform(0.9, 1.5, (1, 3, N, N))  # bright clouds and snow
    check_values(clouds, "s2", "1", name="clouds")
    slightly_negative = rng.normal(0.01, 0.02, (1, 3, N, N))  # dark water after the BOA offset
    check_values(slightly_negative, "s2", "1", name="water")


def test_linear_power_and_amplitude_refused_with_statistics_and_fix() -> None:
    power = 10 ** (_db() / 10)
    with pytest.raises(UnitsError) as info:
        check_values(power, "s1", {"vv": "dB", "vh": "dB"}, name="cube", where="time 3")
    msg = str(info.value)
    assert msg.startswith("cube (time 3): Sentinel-1 values do not look like backscatter in dB")
    assert "band 'vv'" in msg and "0.0 % negative" in msg
    median = float(np.median(power[:, 0]))
    assert f"median {median:.4g}" in msg
    assert "linear backscatter power or amplitude" in msg
    assert "convert with `ec.linear_to_db(cube)`" in msg
    with pytest.raises(UnitsError, match="linear backscatter power or amplitude"):
        check_values(np.sqrt(power), "s1", "dB", name="amplitude")


def test_s2_digital_numbers_refused_with_the_scale_fix() -> None:
    dn = np.round(_reflectance() * 10_000)
    with pytest.raises(UnitsError) as info:
        check_values(dn, "s2", dict.fromkeys(S2_BANDS, "1"), name="cube")
    msg = str(info.value)
    assert "Sentinel-2 values do not look like reflectance 0..1 (units '1')" in msg
    assert "band 'B04'" in msg and "digital numbers" in msg
    assert "`cube * 1e-4`" in msg and "`ec.load_stac`" in msg and "scale/offset" in msg
    with pytest.raises(UnitsError, match="digital numbers"):
        check_values(_reflectance() * 100, "s2", "1", name="percent")
    # mostly fill (zeros are left out) and a few bright digital numbers still give it away
    sparse = np.zeros((1, 1, N, N))
    sparse[..., :4, :] = 3_000.0
    with pytest.raises(UnitsError, match="digital numbers"):
        check_values(sparse, "s2", "1", name="sparse")


def test_implausible_medians_refused() -> None:
    with pytest.raises(UnitsError, match=r"far outside the range of backscatter in dB"):
        check_values(np.full((1, 2, N, N), -9999.0), "s1", "dB", name="fill")
    with pytest.raises(UnitsError, match=r"far outside the range"):
        check_values(np.full((1, 2, N, N), 250.0), "s1", "dB", name="dn")
    with pytest.raises(UnitsError, match="far below any reflectance"):
        check_values(np.full((1, 1, N, N), -0.9), "s2", "1", name="offset")


def test_what_is_not_judged_passes() -> None:
    power = 10 ** (_db() / 10)
    check_values(np.full((2, 2, N, N), np.nan), "s1", "dB", name="nan")
    check_values(power[..., :7, :7], "s1", "dB", name="tiny")  # 49 values per band
    check_values(np.zeros((2, 2, N, N)), "s1", "dB", name="zeros")  # fill only
    check_values(power, "s1", "linear", name="other units")
    check_values(np.round(_reflectance() * 10_000), "s2", "DN", name="other units")
    check_values(power, "s3", "dB", name="other sensor")
    check_values(np.empty((0, 2, 4, 4)), "s1", "dB", name="empty")
    check_values(np.zeros((2, 2), dtype=bool), "s1", "dB", name="bool")


def test_a_single_linear_band_among_db_bands_is_named() -> None:
    values = _db()
    values[:, 1] = 10 ** (values[:, 1] / 10)
    check_values(values[:, :1], "s1", "dB", name="vv only")
    with pytest.raises(UnitsError, match="band 'vh' median"):
        check_values(values, "s1", {"vv": "dB", "vh": "dB"}, name="cube")


def test_sample_is_bounded_and_deterministic() -> None:
    big = np.random.default_rng(2).normal(-12, 4, (1, 1, 1500, 1700)).astype("float32")
    check_values(big, "s1", "dB", name="big")
    lin = 10 ** (big / 10)
    msgs = set()
    for _ in range(2):
        with pytest.raises(UnitsError) as info:
            check_values(lin, "s1", "dB", name="big")
        msgs.add(str(info.value))
    assert len(msgs) == 1
    found = re.search(r"\((\d+) finite non-zero values sampled\)", next(iter(msgs)))
    assert found is not None
    n = int(found.group(1))
    assert 100 <= n <= MAX_SAMPLE


def test_units_mapping_must_fit_the_bands() -> None:
    with pytest.raises(ValueError, match=r"units name 3 bands"):
        check_values(_db(), "s1", {"vv": "dB", "vh": "dB", "hh": "linear"}, name="cube")
    # the same units for all: the count does not matter
    check_values(_db(), "s1", {"vv": "dB", "vh": "dB", "hh": "dB"}, name="cube")


def test_block_location_of_an_overlapped_chunk() -> None:
    info = {
        0: {"chunk-location": (1, 0, 2, 1), "array-location": [(1, 2), (0, 2), (96, 144), (48, 96)]}
    }
    where = block_location(info, ("time", "band", "y", "x"), depth={2: 8, 3: 8})
    assert where == "chunk (1, 0, 2, 1): time 1:2, band 0:2, y 64:96, x 32:64"
    assert block_location(None, ("y", "x")) == ""


# --------------------------------------------------------------------------------------------
# where the check is applied
# --------------------------------------------------------------------------------------------


def test_embed_refuses_linear_s1_at_compute_time(s1_model: DualEncoder) -> None:
    linear = _cube(10 ** (_db() / 10), ["vv", "vh"], "dB")
    out = ec.embed(linear, s1_model, tile=16, device="cpu")  # lazy: nothing read yet
    with pytest.raises(UnitsError) as info:
        out.compute()
    msg = str(info.value)
    assert msg.startswith("cube (chunk (")
    assert "time " in msg and "y " in msg and "x " in msg
    assert "Sentinel-1 values do not look like backscatter in dB" in msg
    assert "`ec.linear_to_db(cube)`" in msg
    fixed = ec.embed(ec.linear_to_db(linear), s1_model, tile=16, device="cpu").compute()
    assert fixed.shape == (2, s1_model.feature_dim, N // 16, N // 16)
    assert bool(np.isfinite(fixed).all())


def test_embed_names_the_chunk_with_a_halo(s1_model: DualEncoder) -> None:
    values = _db()
    values[1, :, 32:, 32:] = 10 ** (values[1, :, 32:, 32:] / 10)  # one linear chunk
    cube = _cube(values, ["vv", "vh"], "dB")
    for level, overlap in (("tile", 8), ("pixel", 0)):
        out = ec.embed(cube, s1_model, tile=16, overlap=overlap, level=level, device="cpu")
        with pytest.raises(UnitsError) as info:
            out.compute()
        assert "cube (chunk (1, 0, 1, 1): time 1:2, band 0:2, y 32:64, x 32:64)" in str(info.value)
        ok = out.isel(time=0).compute()
        assert bool(np.isfinite(ok).all())


def test_embed_refuses_s2_digital_numbers(s2_model: DualEncoder) -> None:
    dn = _cube(np.round(_reflectance() * 10_000), S2_BANDS, "1")
    with pytest.raises(UnitsError) as info:
        ec.embed(dn, s2_model, tile=16, device="cpu").compute()
    msg = str(info.value)
    assert "Sentinel-2 values do not look like reflectance 0..1" in msg
    assert "`cube * 1e-4`" in msg and "`ec.load_stac`" in msg
    fixed = ec.embed(dn * 1e-4, s2_model, tile=16, device="cpu").compute()
    assert bool(np.isfinite(fixed).all())


def test_embed_accepts_bright_clouds_and_urban_backscatter(
    s1_model: DualEncoder, s2_model: DualEncoder
) -> None:
    rng = np.random.default_rng(5)
    clouds = rng.uniform(0.9, 1.3, (2, len(S2_BANDS), N, N))
    out = ec.embed(_cube(clouds, S2_BANDS, "1"), s2_model, tile=16, device="cpu").compute()
    assert bool(np.isfinite(out).all())
    urban = rng.uniform(-2.0, 10.0, (2, 2, N, N))
    out = ec.embed(_cube(urban, ["vv", "vh"], "dB"), s1_model, tile=16, device="cpu").compute()
    assert bool(np.isfinite(out).all())


def test_segment_refuses_linear_s1(s1_model: DualEncoder) -> None:
    seg = SegmentationModel(s1_model, ["dry", "water"], sensors=("s1",), tile=16, seed=0).eval()
    linear = _cube(10 ** (_db() / 10), ["vv", "vh"], "dB")
    with pytest.raises(UnitsError) as info:
        ec.segment(linear, seg, device="cpu").compute()
    msg = str(info.value)
    assert msg.startswith("cube (chunk (")
    assert "`ec.linear_to_db(cube)`" in msg
    pred = ec.segment(ec.linear_to_db(linear), seg, device="cpu").compute()
    assert pred.shape == (2, N, N) and set(np.unique(pred.values)) <= {0, 1}


def test_segment_names_the_sensor_of_a_pair() -> None:
    model = DualEncoder({"s1": ["vv", "vh"], "s2": S2_BANDS}, width=8, seed=0).eval()
    seg = SegmentationModel(model, ["dry", "water"], sensors=("s1", "s2"), tile=16, seed=0)
    pairs = ec.pair(
        _cube(_db(), ["vv", "vh"], "dB"),
        _cube(np.round(_reflectance() * 10_000), S2_BANDS, "1"),
    )
    with pytest.raises(
        UnitsError, match=r"^cube\['s2'\] \(chunk \(\d, 0, \d, \d\): pair \d:\d, band 0:3, "
    ):
        ec.segment(pairs, seg.eval(), device="cpu").compute()


def _pairs(s1: np.ndarray) -> xr.Dataset:
    return ec.pair(_cube(s1, ["vv", "vh"], "dB"), _cube(_reflectance(), S2_BANDS, "1"))


def test_pretrain_refuses_linear_s1_before_training() -> None:
    pairs = _pairs(10 ** (_db() / 10))
    opts = {"tile": 16, "batch_size": 4, "epochs": 1, "device": "cpu", "progress": False}
    with pytest.raises(UnitsError) as info:
        ec.pretrain(pairs, **opts)  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith("pairs['s1'] (pair [0, 1], sampled before training): Sentinel-1")
    assert "`ec.linear_to_db(cube)`" in msg
    with pytest.raises(UnitsError, match=r"pairs\['s1'\]"):
        ec.pretrain(pairs, method="simclr", sensor="s1", **opts)  # type: ignore[arg-type]
    model = ec.pretrain(_pairs(_db()), **opts)  # type: ignore[arg-type]
    assert len(model.history) == 8
