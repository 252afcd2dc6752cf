"""Tile plans over Dask chunks and the tile stream (eo_contrast.tiling)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from eo_contrast.tiling import TilePlan, TileStream, plan_tiles

S2_BANDS_4 = ["B02", "B03", "B04", "B08"]


def make_pairs(
    n_pair: int = 3,
    ny: int = 64,
    nx: int = 96,
    chunks: dict | None = None,
    seed: int = 0,
) -> xr.Dataset:
    """A paired dataset shaped like ec.pair's output: S1 in dB, S2 reflectance, dask-backed."""
    rng = np.random.default_rng(seed)
    s1 = rng.normal(-12.0, 3.0, (n_pair, 2, ny, nx)).astype("float32")
    s2 = rng.uniform(0.0, 0.4, (n_pair, 4, ny, nx)).astype("float32")
    ds = xr.Dataset(
        {
            "s1": (("pair", "s1_band", "y", "x"), s1),
            "s2": (("pair", "s2_band", "y", "x"), s2),
        },
        coords={
            "s1_band": ["vv", "vh"],
            "s2_band": S2_BANDS_4,
            "y": 5_000_000.0 - 10.0 * np.arange(ny),
            "x": 300_000.0 + 10.0 * np.arange(nx),
        },
    )
    return ds.chunk(chunks or {"pair": 1, "y": 32, "x": 32})


def collect(stream) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v) for k, v in b.items()} for b in stream]


def stacked(batches, key):
    return np.concatenate([b[key] for b in batches], axis=0)


def assert_tiles_match(batches, raw: dict[str, np.ndarray], tile: int) -> None:
    """Every emitted tile equals the input at its (lead, y0, x0) index."""
    for b in batches:
        for k, (lead, y0, x0) in enumerate(b["index"]):
            for name, arr in raw.items():
                np.testing.assert_array_equal(
                    b[name][k], arr[lead, :, y0 : y0 + tile, x0 : x0 + tile]
                )


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0, 8])
@pytest.mark.parametrize("cover", [False, True])
def test_plan_tiles_stay_inside_chunks(overlap: int, cover: bool) -> None:
    y_chunks, x_chunks = (100, 60, 37), (50, 50)
    plan = plan_tiles({"y": y_chunks, "x": x_chunks}, 32, overlap=overlap, cover=cover)
    assert plan.shape == (197, 100) and plan.nchunks == (3, 2)
    painted = np.zeros(plan.shape, int)
    n = 0
    for i in range(3):
        for j in range(2):
            ys, xs = plan.chunk_slices(i, j)
            tiles = plan.chunk_tiles(i, j)
            assert len(tiles) > 0
            assert (tiles[:, 0] >= ys.start).all() and (tiles[:, 0] + 32 <= ys.stop).all()
            assert (tiles[:, 1] >= xs.start).all() and (tiles[:, 1] + 32 <= xs.stop).all()
            for y0, x0 in tiles:
                painted[y0 : y0 + 32, x0 : x0 + 32] += 1
            n += len(tiles)
            # regular stride inside the chunk, except the end-aligned tile of cover=True
            steps = np.diff(np.unique(tiles[:, 0]))
            assert (steps[: len(steps) - cover] == 32 - overlap).all()
    assert n == plan.n_tiles == len(plan.tiles())
    np.testing.assert_array_equal(painted, plan.coverage())
    if cover:
        assert painted.min() >= 1
    else:
        # without cover the remainders are left out: rows 96..99 of the first chunk (x: 32..49)
        assert painted[96:100].sum() == 0 and painted[:, 32:50].sum() == 0
        assert painted[:64, :32].min() == 1


def test_plan_tiles_known_offsets() -> None:
    plan = plan_tiles({"y": (100, 60, 37), "x": 64}, 32)
    assert [s.tolist() for s in plan.y_starts] == [[0, 32, 64], [100], [160]]
    assert [s.tolist() for s in plan.x_starts] == [[0, 32]]
    covered = plan_tiles({"y": (100, 60, 37), "x": 64}, 32, cover=True)
    assert [s.tolist() for s in covered.y_starts] == [[0, 32, 64, 68], [100, 128], [160, 165]]
    overlapped = plan_tiles({"y": 100, "x": 64}, 32, overlap=16)
    assert overlapped.stride == 16
    assert overlapped.y_starts[0].tolist() == [0, 16, 32, 48, 64]


def test_plan_tiles_from_xarray_chunks() -> None:
    pairs = make_pairs(chunks={"pair": 1, "y": 32, "x": 48})
    plan = plan_tiles(pairs, 16)
    assert isinstance(plan, TilePlan)
    assert plan.y_chunks == (32, 32) and plan.x_chunks == (48, 48)
    assert plan.n_tiles == 4 * 6
    in_memory = plan_tiles(pairs.load(), 16)
    assert in_memory.y_chunks == (64,) and in_memory.n_tiles == 4 * 6


def test_plan_tiles_errors() -> None:
    with pytest.raises(ValueError, match=r"tile=64 is larger than the cube: it has y=50 and x=40"):
        plan_tiles({"y": 50, "x": 40}, 64)
    with pytest.raises(ValueError, match=r"chunk 2 of 2 along 'y' has 8 pixels.*\(520,\)"):
        plan_tiles({"y": (512, 8), "x": 512}, 64, cover=True)
    with pytest.raises(ValueError, match=r"no chunk along 'x' holds a whole tile.*obj\.chunk"):
        plan_tiles({"y": 256, "x": (30, 30, 30)}, 64)
    with pytest.raises(ValueError, match="overlap must satisfy"):
        plan_tiles({"y": 256, "x": 256}, 64, overlap=64)
    with pytest.raises(ValueError, match="tile must be a positive"):
        plan_tiles({"y": 256, "x": 256}, 0)
    with pytest.raises(KeyError, match="needs 'y' and 'x'"):
        plan_tiles({"y": 256}, 16)


def test_stream_too_small_cube_error() -> None:
    pairs = make_pairs(ny=40, nx=40, chunks={"pair": 1, "y": 20, "x": 20})
    with pytest.raises(ValueError, match="tile=64 is larger than the cube"):
        TileStream(pairs, tile=64)
    with pytest.raises(ValueError, match=r"smaller than tile=32.*rechunk|Rechunk"):
        TileStream(pairs, tile=32)


# --------------------------------------------------------------------------------------------
# reading: once per chunk, deterministic
# --------------------------------------------------------------------------------------------


def counted(pairs: xr.Dataset, counter: Counter, lock: threading.Lock) -> xr.Dataset:
    def count(block, name, block_info=None):
        with lock:
            counter[(name, *block_info[0]["chunk-location"])] += 1
        return block

    out = pairs.copy()
    for name in ("s1", "s2"):
        data = pairs[name].data.map_blocks(count, name, dtype=pairs[name].dtype)
        out[name] = pairs[name].copy(data=data)
    return out


@pytest.mark.parametrize("prefetch", [0, 2])
def test_each_chunk_read_once_per_epoch(prefetch: int) -> None:
    counter: Counter = Counter()
    pairs = counted(make_pairs(), counter, threading.Lock())
    stream = TileStream(pairs, tile=16, batch_size=8, prefetch=prefetch, output="numpy")
    assert stream.n_chunks == 3 * 2 * 3
    batches = collect(stream)
    n_blocks = 3 * 2 * 3
    assert len(counter) == 2 * n_blocks and set(counter.values()) == {1}
    assert stream.stats.chunks == n_blocks and stream.stats.epochs == 1
    # every tile of the plan came out exactly once
    index = stacked(batches, "index")
    assert len(index) == stream.tiles_per_epoch == 3 * 4 * 6
    assert len({tuple(r) for r in index.tolist()}) == len(index)
    list(stream)  # second epoch
    assert set(counter.values()) == {2}


def test_variables_chunked_differently_are_read_once() -> None:
    # s2 is also chunked along bands, s1 more finely along y: a chunk of the stream is the
    # smallest region made of whole blocks of both, read in one go
    counter: Counter = Counter()
    pairs = make_pairs()
    pairs["s2"] = pairs["s2"].chunk({"s2_band": 2})
    pairs["s1"] = pairs["s1"].chunk({"y": 16})
    pairs = counted(pairs, counter, threading.Lock())
    stream = TileStream(pairs, tile=16, batch_size=16, output="numpy")
    assert stream.n_chunks == 3 * 2 * 3 and stream.plan.y_chunks == (32, 32)
    batches = collect(stream)
    assert set(counter.values()) == {1}
    assert sum(k[0] == "s1" for k in counter) == 3 * 4 * 3
    assert sum(k[0] == "s2" for k in counter) == 3 * 2 * 2 * 3
    assert_tiles_match(batches, {k: make_pairs()[k].values for k in ("s1", "s2")}, 16)


def test_same_seed_same_batches_whatever_prefetch() -> None:
    pairs = make_pairs()
    runs = [
        collect(TileStream(pairs, tile=16, batch_size=5, seed=7, prefetch=p, output="numpy"))
        for p in (0, 1, 3)
    ]
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other, strict=True):
            for key in ("s1", "s2", "valid", "index"):
                np.testing.assert_array_equal(a[key], b[key])
    other_seed = collect(TileStream(pairs, tile=16, batch_size=5, seed=8, output="numpy"))
    assert not np.array_equal(stacked(runs[0], "index"), stacked(other_seed, "index"))
    # same tiles, another order
    assert sorted(map(tuple, stacked(runs[0], "index").tolist())) == sorted(
        map(tuple, stacked(other_seed, "index").tolist())
    )
    assert_tiles_match(runs[0], {k: pairs[k].values for k in ("s1", "s2")}, 16)


def test_epochs_reshuffle_and_set_epoch_replays() -> None:
    stream = TileStream(make_pairs(), tile=16, batch_size=8, seed=3, output="numpy")
    first = stacked(collect(stream), "index")
    second = stacked(collect(stream), "index")
    assert stream.epoch == 2 and stream.stats.epochs == 2
    assert not np.array_equal(first, second)
    stream.set_epoch(0)
    np.testing.assert_array_equal(stacked(collect(stream), "index"), first)
    two = TileStream(make_pairs(), tile=16, batch_size=8, seed=3, epochs=2, output="numpy")
    np.testing.assert_array_equal(stacked(collect(two), "index"), np.concatenate([first, second]))


def test_shuffle_buffer_mixes_chunks_and_small_buffer_still_yields_each_tile_once() -> None:
    pairs = make_pairs(n_pair=4, ny=64, nx=64, chunks={"pair": 1, "y": 64, "x": 64})
    ordered = collect(TileStream(pairs, tile=8, batch_size=16, shuffle=False, output="numpy"))
    index = stacked(ordered, "index")
    # shuffle=False: plan order, chunk by chunk (pair, then y, then x)
    expected = [(p, y, x) for p in range(4) for y in range(0, 64, 8) for x in range(0, 64, 8)]
    assert [tuple(r) for r in index.tolist()] == expected
    mixed = collect(TileStream(pairs, tile=8, batch_size=16, seed=1, output="numpy"))
    assert len(set(mixed[0]["index"][:, 0].tolist())) > 1  # tiles of several chunks in a batch
    # a buffer barely larger than a batch: chunks of 64 tiles drain through it piecemeal
    small = collect(
        TileStream(pairs, tile=8, batch_size=16, seed=2, shuffle_buffer=20, output="numpy")
    )
    got = stacked(small, "index")
    assert sorted(map(tuple, got.tolist())) == expected
    assert_tiles_match(small, {k: pairs[k].values for k in ("s1", "s2")}, 8)


def test_drop_last_and_batch_sizes() -> None:
    pairs = make_pairs(n_pair=1, ny=32, nx=80, chunks={"pair": 1, "y": 32, "x": 80})  # 10 tiles
    sizes = [len(b["index"]) for b in TileStream(pairs, tile=16, batch_size=4, output="numpy")]
    assert sizes == [4, 4, 2]
    stream = TileStream(pairs, tile=16, batch_size=4, drop_last=True, output="numpy")
    assert [len(b["index"]) for b in stream] == [4, 4]
    too_big = TileStream(pairs, tile=16, batch_size=32, drop_last=True, output="numpy")
    with pytest.raises(ValueError, match=r"yielded no batch: 10 of 10 tiles kept.*batch_size=32"):
        list(too_big)


# --------------------------------------------------------------------------------------------
# invalid data
# --------------------------------------------------------------------------------------------


def nan_pairs() -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """One pair, 32 x 64, one chunk, tiles of 16 (8 tiles) with known NaN fractions."""
    pairs = make_pairs(n_pair=1, ny=32, nx=64, chunks={"pair": 1, "y": 32, "x": 64}).load()
    s1, s2 = pairs["s1"].values.copy(), pairs["s2"].values.copy()
    s1[0, :, 0:16, 0:16] = np.nan  # tile (0, 0): all NaN in S1
    s1[0, 1, 0:4, 16:32] = np.nan  # tile (0, 16): 25% NaN in S1 (one band is enough)
    s2[0, 0, 0:12, 32:48] = np.nan  # tile (0, 32): 75% NaN in S2
    s2[0, 2, 16, 48] = np.nan  # tile (16, 48): one NaN pixel
    pairs["s1"].values[:] = s1
    pairs["s2"].values[:] = s2
    return pairs.chunk({"pair": 1}), {"s1": s1, "s2": s2}


def test_nan_policy_drops_counts_fills_and_masks() -> None:
    pairs, raw = nan_pairs()
    stream = TileStream(pairs, tile=16, batch_size=3, fill_value=-99.0, output="numpy")
    batches = collect(stream)
    index = stacked(batches, "index")
    kept = {(int(y), int(x)) for _, y, x in index}
    assert (0, 0) not in kept and (0, 32) not in kept
    assert (0, 16) in kept and (16, 48) in kept and len(kept) == 6
    stats = stream.stats
    assert (stats.tiles_seen, stats.tiles_kept, stats.tiles_dropped) == (8, 6, 2)
    assert stats.dropped_by == {"s1": 1, "s2": 1}
    assert stats.summary() == "6 of 8 tiles kept; 2 dropped with > 50% NaN pixels (s1: 1, s2: 1)"
    for b in batches:
        for k, (_, y0, x0) in enumerate(b["index"]):
            win = (0, slice(None), slice(y0, y0 + 16), slice(x0, x0 + 16))
            nan1, nan2 = np.isnan(raw["s1"][win]), np.isnan(raw["s2"][win])
            np.testing.assert_array_equal(b["valid"][k], ~(nan1.any(0) | nan2.any(0)))
            np.testing.assert_array_equal(b["s1"][k][nan1], -99.0)
            np.testing.assert_array_equal(b["s1"][k][~nan1], raw["s1"][win][~nan1])
            np.testing.assert_array_equal(b["s2"][k][nan2], -99.0)
            assert not np.isnan(b["s1"][k]).any() and not np.isnan(b["s2"][k]).any()
    strict = TileStream(pairs, tile=16, batch_size=3, max_nan_fraction=0.2, output="numpy")
    collect(strict)
    assert strict.stats.tiles_kept == 5 and strict.stats.dropped_by == {"s1": 2, "s2": 1}
    keep_all = TileStream(pairs, tile=16, batch_size=3, max_nan_fraction=1.0, output="numpy")
    collect(keep_all)
    assert keep_all.stats.tiles_kept == 8


def test_fill_with_tile_band_mean() -> None:
    pairs, raw = nan_pairs()
    batches = collect(TileStream(pairs, tile=16, batch_size=8, fill_value="mean", output="numpy"))
    (b,) = batches
    k = [tuple(r) for r in b["index"].tolist()].index((0, 0, 16))
    tile = raw["s1"][0, :, 0:16, 16:32]
    band_mean = np.nanmean(tile[1])
    np.testing.assert_allclose(b["s1"][k][1][0:4], band_mean, rtol=1e-6)
    np.testing.assert_array_equal(b["s1"][k][0], tile[0])


def test_all_invalid_raises_clear_error() -> None:
    pairs = make_pairs(n_pair=2, ny=32, nx=32, chunks={"pair": 1, "y": 32, "x": 32})
    pairs["s2"] = pairs["s2"].where(False)
    stream = TileStream(pairs, tile=16, batch_size=4, output="numpy")
    with pytest.raises(
        ValueError,
        match=r"yielded no tile: all 8 tiles were dropped .*50%.*s1: 0, s2: 8.*max_nan_fraction",
    ):
        list(stream)
    assert stream.stats.tiles_dropped == 8


def test_errors_in_reads_reach_the_caller() -> None:
    pairs = make_pairs()

    def broken(block):
        raise OSError("the object store refused the read")

    pairs["s1"] = pairs["s1"].copy(data=pairs["s1"].data.map_blocks(broken, dtype="float32"))
    with pytest.raises(OSError, match="refused the read"):
        list(TileStream(pairs, tile=16, prefetch=2, output="numpy"))


def test_breaking_out_early_stops_background_threads() -> None:
    stream = TileStream(make_pairs(), tile=16, batch_size=2, prefetch=2, output="numpy")
    it = iter(stream)
    next(it)
    it.close()
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith("eo-contrast") for n in names), names


# --------------------------------------------------------------------------------------------
# normalisation, bands, outputs
# --------------------------------------------------------------------------------------------


def test_normalise_with_statistics() -> None:
    pairs = make_pairs()
    mean, std = np.array([-10.0, -17.0]), np.array([2.0, 4.0])
    stream = TileStream(pairs, tile=16, batch_size=4, normalize={"s1": (mean, std)}, output="numpy")
    b = next(iter(stream))
    _lead, y0, x0 = b["index"][0]
    raw = pairs["s1"].values[_lead, :, y0 : y0 + 16, x0 : x0 + 16]
    expected = (raw - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(b["s1"][0], expected, rtol=1e-5, atol=1e-5)
    raw2 = pairs["s2"].values[_lead, :, y0 : y0 + 16, x0 : x0 + 16]
    np.testing.assert_array_equal(b["s2"][0], raw2)  # no statistics for s2: unchanged
    with pytest.raises(KeyError, match=r"statistics for 's3'"):
        TileStream(pairs, tile=16, normalize={"s3": (0, 1)})
    with pytest.raises(
        ValueError, match=r"one mean and one std per band \(2 bands: \['vv', 'vh'\]"
    ):
        TileStream(pairs, tile=16, normalize={"s1": ([0, 0, 0], [1, 1, 1])})
    with pytest.raises(ValueError, match="std for 's1' must be positive"):
        TileStream(pairs, tile=16, normalize={"s1": {"mean": [0, 0], "std": [1, 0]}})


class BandStats:
    """An object with a model's metadata interface: band order and ``normalize(sensor, x)``."""

    def __init__(self) -> None:
        self.bands = {"s1": ["vh", "vv"], "s2": ["B04", "B03", "B02"]}
        self.mean = {"s1": np.array([-17.0, -10.0]), "s2": np.array([0.1, 0.1, 0.1])}
        self.std = {"s1": np.array([4.0, 2.0]), "s2": np.array([0.05, 0.05, 0.05])}

    def normalize(self, sensor: str, x: np.ndarray) -> np.ndarray:
        m, s = self.mean[sensor][:, None, None], self.std[sensor][:, None, None]
        return np.nan_to_num((x - m) / s, nan=0.0)


def test_normalise_from_model_metadata_selects_and_orders_bands() -> None:
    pairs = make_pairs()
    stats = BandStats()
    stream = TileStream(pairs, tile=16, batch_size=4, normalize=stats, output="numpy")
    assert stream.bands == {"s1": ["vh", "vv"], "s2": ["B04", "B03", "B02"]}
    b = next(iter(stream))
    lead, y0, x0 = b["index"][0]
    raw = pairs.isel(pair=lead, y=slice(y0, y0 + 16), x=slice(x0, x0 + 16))
    vh = raw["s1"].sel(s1_band="vh").values
    np.testing.assert_allclose(b["s1"][0, 0], (vh + 17.0) / 4.0, rtol=1e-5, atol=1e-5)
    b04 = raw["s2"].sel(s2_band="B04").values
    np.testing.assert_allclose(b["s2"][0, 0], (b04 - 0.1) / 0.05, rtol=1e-5, atol=1e-4)
    assert b["s2"].shape[1] == 3
    missing = pairs.drop_sel(s2_band="B04")
    with pytest.raises(ValueError, match=r"variable 's2' lacks bands \['B04'\]"):
        TileStream(missing, tile=16, normalize=stats)


def test_a_dual_encoder_normalises_in_numpy_exactly_as_its_own_normalize() -> None:
    """With a DualEncoder the stream applies its statistics in numpy: same values as
    ``model.normalize`` (the torch path), NaN filled with 0 (the band mean)."""
    from eo_contrast.models import DualEncoder

    pairs = make_pairs()
    s2 = pairs["s2"].values.copy()
    s2[0, :, :5, :5] = np.nan
    pairs["s2"] = (pairs["s2"].dims, s2)
    pairs = pairs.chunk({"y": 32, "x": 32})
    model = DualEncoder({"s1": ["vh", "vv"], "s2": ["B04", "B03", "B02"]}, width=4, seed=0)
    fast = TileStream(pairs, tile=16, batch_size=4, normalize=model, output="numpy")
    slow = TileStream(
        pairs,
        tile=16,
        batch_size=4,
        output="numpy",
        normalize=lambda s, x: model.normalize(s, x).numpy(),
        bands=model.bands,
    )
    assert fast._model_stats and not slow._model_stats
    for a, b in zip(fast, slow, strict=True):
        for key in ("s1", "s2", "valid", "index"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)
        assert np.isfinite(a["s2"]).all()


def test_callable_normaliser_and_its_shape_check() -> None:
    pairs = make_pairs()
    b = next(iter(TileStream(pairs, tile=16, normalize=lambda s, x: x * 2, output="numpy")))
    lead, y0, x0 = b["index"][0]
    np.testing.assert_allclose(
        b["s2"][0], 2 * pairs["s2"].values[lead, :, y0 : y0 + 16, x0 : x0 + 16]
    )
    bad = TileStream(pairs, tile=16, normalize=lambda s, x: x[:, :1], output="numpy")
    with pytest.raises(ValueError, match="must keep the shape"):
        list(bad)


def test_parameter_errors() -> None:
    pairs = make_pairs()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        TileStream(pairs, batch_size=0)
    with pytest.raises(ValueError, match="max_nan_fraction must be a fraction"):
        TileStream(pairs, max_nan_fraction=1.5)
    with pytest.raises(ValueError, match="fill_value must be a number or 'mean'"):
        TileStream(pairs, fill_value="median")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="normalize must be None"):
        TileStream(pairs, normalize=3)
    with pytest.raises(ValueError, match="called 'valid'"):
        TileStream(pairs.rename({"s2": "valid"}), tile=16)
    with pytest.raises(TypeError, match="not ndarray"):
        TileStream(np.zeros((4, 4)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'names' has dims \('k',\); a variable needs 'y'"):
        TileStream(pairs.assign(names=("k", np.arange(3))), tile=16)
    with pytest.raises(ValueError, match=r"'s2' has dims .* one band dim"):
        TileStream(pairs.assign(s2=pairs["s2"].expand_dims(extra=2)), tile=16)


def test_torch_tensors_dtypes_and_labels() -> None:
    torch = pytest.importorskip("torch")
    pairs = make_pairs()
    labels = xr.DataArray(
        (np.arange(64 * 96).reshape(64, 96) % 3).astype("int16"), dims=("y", "x")
    ).chunk({"y": 32, "x": 32})
    data = pairs.assign(label=labels)
    stream = TileStream(data, tile=16, batch_size=6, device="cpu")
    b = next(iter(stream))
    assert set(b) == {"s1", "s2", "label", "valid", "index"}
    assert b["s1"].dtype == torch.float32 and tuple(b["s1"].shape) == (6, 2, 16, 16)
    assert b["s2"].dtype == torch.float32 and tuple(b["s2"].shape) == (6, 4, 16, 16)
    assert b["label"].dtype == torch.int64 and tuple(b["label"].shape) == (6, 1, 16, 16)
    assert b["valid"].dtype == torch.bool and tuple(b["valid"].shape) == (6, 16, 16)
    assert b["index"].dtype == torch.int64 and tuple(b["index"].shape) == (6, 3)
    _lead, y0, x0 = b["index"][0].tolist()
    # labels have no pair dim: the same label tile goes with every pair
    np.testing.assert_array_equal(
        b["label"][0, 0].numpy(), labels.values[y0 : y0 + 16, x0 : x0 + 16]
    )
    with pytest.raises(ValueError, match=r"device='gpu0' is not a device"):
        TileStream(pairs, tile=16, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda' requested but CUDA is not available"):
            TileStream(pairs, tile=16, device="cuda")


def test_cuda_batches_match_cpu_batches() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: batches in pinned memory, non-blocking copies")

    pairs = make_pairs()
    on_cpu = list(TileStream(pairs, tile=16, batch_size=8, seed=1))
    on_gpu = list(TileStream(pairs, tile=16, batch_size=8, seed=1, device="cuda"))
    assert len(on_cpu) == len(on_gpu)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        for key in a:
            assert b[key].device.type == "cuda"
            assert torch.equal(a[key], b[key].cpu())


def test_iterable_dataset_in_a_dataloader() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, IterableDataset

    from eo_contrast.tiling import TileDataset

    pairs = make_pairs()
    ds = TileDataset(pairs, tile=16, batch_size=8, seed=5)
    assert isinstance(ds, IterableDataset)
    loader = DataLoader(ds, batch_size=None, num_workers=0)
    got = list(loader)
    direct = list(TileStream(pairs, tile=16, batch_size=8, seed=5))
    assert len(got) == len(direct) == 9
    for a, b in zip(got, direct, strict=True):
        assert torch.equal(a["s2"], b["s2"]) and torch.equal(a["index"], b["index"])
    ds.set_epoch(0)
    assert torch.equal(next(iter(loader))["index"], direct[0]["index"])
    with pytest.raises(TypeError, match="give the parameters to the TileStream"):
        TileDataset(TileStream(pairs, tile=16), tile=8)


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, eo_contrast.tiling; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------------------------
# single cubes (embedding) and BigEarthNet-style patches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_time", [True, False])
def test_cube_tiles_put_back_reconstruct_the_cube(with_time: bool) -> None:
    rng = np.random.default_rng(4)
    values = rng.uniform(0, 1, (2, 3, 70, 50)).astype("float32")
    values[1, 2, 10, 20] = np.nan
    cube = xr.DataArray(
        values, dims=("time", "band", "y", "x"), coords={"band": ["B04", "B03", "B02"]}
    )
    if not with_time:
        cube = cube.isel(time=1)
    cube = cube.chunk({"y": 35, "x": 25})
    stream = TileStream(
        cube, tile=16, batch_size=7, cover=True, shuffle=False, max_nan_fraction=1.0,
        fill_value=np.nan, output="numpy",
    )  # fmt: skip
    assert stream.names == ["s2"] and stream.lead_dim == ("time" if with_time else None)
    batches = collect(stream)
    src = values if with_time else values[1:]
    out = np.full(src.shape, -1.0, "float32")
    valid = np.zeros((src.shape[0], 70, 50), bool)
    for b in batches:
        for k, (t, y0, x0) in enumerate(b["index"]):
            out[t, :, y0 : y0 + 16, x0 : x0 + 16] = b["s2"][k]
            valid[t, y0 : y0 + 16, x0 : x0 + 16] = b["valid"][k]
    np.testing.assert_array_equal(out, src)  # NaN compares equal in assert_array_equal
    np.testing.assert_array_equal(valid, ~np.isnan(src).any(axis=1))


def test_bigearthnet_patches(shared_data: Path) -> None:
    npz = np.load(shared_data / "bigearthnet_v2_subset" / "benv2_mock_s1s2.npz")
    s1 = npz["s1_vv_vh_db"]
    s2 = npz["s2_10m_B02_B03_B04_B08"].astype("float32") / 10_000
    labels = npz["labels_multihot"]
    pairs = xr.Dataset(
        {
            "s1": (("pair", "s1_band", "y", "x"), s1),
            "s2": (("pair", "s2_band", "y", "x"), s2),
            "labels": (("pair", "class"), labels),
        },
        coords={"s1_band": ["vv", "vh"], "s2_band": S2_BANDS_4},
    ).chunk({"pair": 4})
    # a tile per patch corner, covering each 120 x 120 patch
    stream = TileStream(pairs, tile=64, batch_size=32, cover=True, seed=0, output="numpy")
    assert stream.n_chunks == 6 and stream.tiles_per_epoch == 24 * 4
    batches = collect(stream)
    index = stacked(batches, "index")
    assert sorted(map(tuple, index.tolist())) == [
        (p, y, x) for p in range(24) for y in (0, 56) for x in (0, 56)
    ]
    assert_tiles_match(batches, {"s1": s1, "s2": s2}, 64)
    # per-pair multi-labels come along with each tile
    np.testing.assert_array_equal(stacked(batches, "labels"), labels[index[:, 0]])
    assert stacked(batches, "labels").dtype == np.int64
    assert -35 < float(stacked(batches, "s1").mean()) < 0  # dB, as given
    # tile == patch size: one tile per pair
    whole = collect(TileStream(pairs, tile=120, batch_size=10, shuffle=False, output="numpy"))
    np.testing.assert_array_equal(stacked(whole, "s2"), s2)


def test_reads_go_through_the_current_distributed_client() -> None:
    distributed = pytest.importorskip("distributed")
    pairs = make_pairs()
    expected = collect(TileStream(pairs, tile=16, batch_size=8, seed=2, output="numpy"))
    with (
        distributed.Client(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ) as client,
        distributed.get_task_stream(client) as tasks,
    ):
        got = collect(TileStream(pairs, tile=16, batch_size=8, seed=2, output="numpy"))
    assert len(tasks.data) >= 2 * 18  # the blocks of s1 and s2 ran on the cluster
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a["s2"], b["s2"])
        np.testing.assert_array_equal(a["index"], b["index"])


def test_model_normaliser_leaves_other_variables_alone() -> None:
    pairs = make_pairs()
    labels = xr.DataArray(np.full((64, 96), 0.5, "float32"), dims=("y", "x"))
    stream = TileStream(
        pairs.assign(weight=labels), tile=16, batch_size=4, normalize=BandStats(), output="numpy"
    )
    b = next(iter(stream))
    np.testing.assert_array_equal(b["weight"], 0.5)
    with pytest.raises(ValueError, match=r"none of the variables \['a'\].*\['s1', 's2'\]"):
        TileStream(pairs[["s1"]].rename({"s1": "a"}), tile=16, normalize=BandStats())


@pytest.mark.slow
def test_dataloader_workers_split_chunks() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from eo_contrast.tiling import TileDataset

    pairs = make_pairs()
    ds = TileDataset(pairs, tile=16, batch_size=8, seed=5)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    index = torch.cat([b["index"] for b in loader]).tolist()
    assert sorted(map(tuple, index)) == sorted(
        (p, y, x) for p in range(3) for y in range(0, 64, 16) for x in range(0, 96, 16)
    )


def test_the_block_names_of_an_earlier_release_still_work_and_warn() -> None:
    plan = plan_tiles({"y": (100, 60, 37), "x": (50, 50)}, 32)
    with pytest.warns(
        DeprecationWarning, match=r"TilePlan.nblocks is deprecated: use TilePlan.nchunks"
    ):
        assert plan.nblocks == plan.nchunks == (3, 2)
    with pytest.warns(DeprecationWarning, match="use TilePlan.chunk_slices"):
        assert plan.block_slices(1, 1) == plan.chunk_slices(1, 1)
    with pytest.warns(DeprecationWarning, match="use TilePlan.chunk_tiles"):
        np.testing.assert_array_equal(plan.block_tiles(2, 0), plan.chunk_tiles(2, 0))
    with pytest.warns(DeprecationWarning, match="use TilePlan.max_chunk_tiles"):
        assert plan.max_block_tiles == plan.max_chunk_tiles
