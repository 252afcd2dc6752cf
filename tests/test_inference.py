"""Lazy, chunked embedding and segmentation of cubes (eo_contrast.inference)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

import eo_contrast as ec
from eo_contrast.inference import _load_counts, embed, segment
from eo_contrast.models import DualEncoder
from eo_contrast.models.checkpoint import read_checkpoint, write_checkpoint
from eo_contrast.models.heads import SegmentationHead

torch.set_num_threads(1)

CRS = "EPSG:32630"
ATOL = 1e-4


def _field(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    """A smooth random field in 0..1 (sum of a few sinusoids)."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    out = np.zeros((ny, nx))
    for _ in range(4):
        fy, fx, ph = [*rng.uniform(0.02, 0.15, 2).tolist(), rng.uniform(0, 6.3)]
        out += np.sin(fy * yy + fx * xx + ph)
    return (out - out.min()) / (out.max() - out.min())


def s1_cube(ny: int = 96, nx: int = 80, *, times: int = 2, seed: int = 0) -> xr.DataArray:
    """S1-like cube in dB: water (-22/-28 dB) vs land (-8/-14 dB) plus speckle-like noise."""
    rng = np.random.default_rng(seed)
    water = _field(rng, ny, nx) > 0.6
    data = np.empty((times, 2, ny, nx), dtype=np.float32)
    for t in range(times):
        noise = rng.normal(0, 1.5, (2, ny, nx))
        data[t, 0] = np.where(water, -22.0, -8.0) + noise[0] + t
        data[t, 1] = np.where(water, -28.0, -14.0) + noise[1] + t
    cube = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(["2023-10-14", "2023-10-16"][:times], dtype="datetime64[ns]"),
            "band": ["vv", "vh"],
            "units": ("band", ["dB", "dB"]),
            "y": 4_500_000.0 - 10.0 * np.arange(ny) - 5.0,
            "x": 500_000.0 + 10.0 * np.arange(nx) + 5.0,
        },
    )
    return cube.rio.write_crs(CRS)


@pytest.fixture(scope="module")
def model() -> DualEncoder:
    return DualEncoder(width=8, seed=0).eval()


@pytest.fixture(scope="module")
def cube() -> xr.DataArray:
    return s1_cube()


def _chunked(cube: xr.DataArray, cy: int, cx: int) -> xr.DataArray:
    return cube.chunk({"time": 1, "band": -1, "y": cy, "x": cx})


# ----------------------------------------------------------------------------- embed: tiles


def test_embed_tile_values_match_the_encoder_and_ignore_chunking(model, cube):
    results = [
        embed(_chunked(cube, cy, cx), model, tile=16, device="cpu").compute()
        for cy, cx in ((96, 80), (32, 16), (48, 64))
    ]
    for r in results[1:]:
        np.testing.assert_allclose(r.values, results[0].values, atol=ATOL, rtol=1e-4)
    emb = results[0]
    assert emb.dims == ("time", "feature", "y", "x")
    assert emb.shape == (2, model.feature_dim, 6, 5)
    assert emb.dtype == np.float32
    # the vector of tile (1, 2) at time 1 is the encoder's output on those 16 x 16 pixels
    patch = cube.isel(time=1, y=slice(16, 32), x=slice(32, 48)).values[None]
    with torch.inference_mode():
        want = model.encoder("s1")(model.normalize("s1", patch))[0].numpy()
    np.testing.assert_allclose(emb.isel(time=1, y=1, x=2).values, want, atol=ATOL, rtol=1e-4)
    # water and land tiles differ
    assert float(emb.std(["y", "x"]).mean()) > 1e-3


def test_embed_rechunks_to_tile_multiples_and_trims_partial_tiles(model):
    cube = s1_cube(90, 70, times=1)  # 5 x 4 whole tiles of 16; the rest is not embedded
    ref = embed(cube, model, tile=16, device="cpu")
    odd = embed(cube.chunk({"y": 20, "x": 25}), model, tile=16, device="cpu")
    assert ref.shape == odd.shape == (1, model.feature_dim, 5, 4)
    # input chunks of 20 -> 16 pixels (one tile), 25 -> 32 pixels (two tiles)
    assert odd.data.chunks[2:] == ((1, 1, 1, 1, 1), (2, 2))
    np.testing.assert_allclose(odd.values, ref.values, atol=ATOL, rtol=1e-4)


def test_embed_tile_overlap_adds_context_and_ignores_chunking(model, cube):
    runs = [
        embed(_chunked(cube, cy, cx), model, tile=16, overlap=8, device="cpu").compute()
        for cy, cx in ((96, 80), (32, 32), (16, 48))
    ]
    for r in runs[1:]:
        np.testing.assert_allclose(r.values, runs[0].values, atol=ATOL, rtol=1e-4)
    # an interior tile sees 32 x 32 pixels centred on it
    patch = cube.isel(time=0, y=slice(24, 56), x=slice(8, 40)).values[None]
    with torch.inference_mode():
        want = model.encoder("s1")(model.normalize("s1", patch))[0].numpy()
    np.testing.assert_allclose(runs[0].isel(time=0, y=2, x=1).values, want, atol=ATOL, rtol=1e-4)
    plain = embed(cube, model, tile=16, device="cpu").values
    assert not np.allclose(plain, runs[0].values, atol=1e-3)


def test_embed_tile_grid_coordinates_transform_and_crs(model, cube):
    emb = embed(cube, model, tile=16, device="cpu")
    t_in = cube.rio.transform()
    assert tuple(emb.rio.transform())[:6] == pytest.approx(
        (160.0, 0.0, t_in.c, 0.0, -160.0, t_in.f)
    )
    assert emb.rio.crs == cube.rio.crs
    assert "spatial_ref" in emb.coords
    np.testing.assert_allclose(emb.x.values, cube.x.values[:80].reshape(5, 16).mean(axis=1))
    assert emb.x.values[0] == pytest.approx(500_000.0 + 80.0)
    assert emb.y.values[0] == pytest.approx(4_500_000.0 - 80.0)
    assert emb.feature.values.tolist() == list(range(model.feature_dim))
    np.testing.assert_array_equal(emb.time.values, cube.time.values)


# ----------------------------------------------------------------------------- embed: pixels


def test_embed_pixel_is_dense_and_ignores_chunking(model):
    cube = s1_cube(88, 72)  # not a multiple of the tile: the last chunks are partial
    for overlap in (0, 4):
        runs = [
            embed(
                _chunked(cube, cy, cx), model, level="pixel", tile=16, overlap=overlap, device="cpu"
            ).compute()
            for cy, cx in ((88, 72), (32, 16), (48, 64))
        ]
        for r in runs[1:]:
            np.testing.assert_allclose(r.values, runs[0].values, atol=ATOL, rtol=1e-4)
    emb = runs[0]
    chans = model.encoder("s1").feature_channels
    assert emb.shape == (2, chans[1] + chans[2], 88, 72)
    assert bool(np.isfinite(emb.values).all())
    np.testing.assert_array_equal(emb.x.values, cube.x.values)
    assert emb.rio.crs == cube.rio.crs
    assert tuple(emb.rio.transform()) == pytest.approx(tuple(cube.rio.transform()))


def test_embed_pixel_values_match_upsampled_pyramid(model, cube):
    emb = embed(cube, model, level="pixel", tile=16, device="cpu")
    patch = cube.isel(time=0, y=slice(16, 32), x=slice(0, 16)).values[None]
    with torch.inference_mode():
        feats = model.features("s1", model.normalize("s1", patch))
        want = torch.cat(
            [
                torch.nn.functional.interpolate(
                    feats[i], size=(16, 16), mode="bilinear", align_corners=False
                )
                for i in (1, 2)
            ],
            dim=1,
        )[0].numpy()
    got = emb.isel(time=0, y=slice(16, 32), x=slice(0, 16)).values
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("level", ["tile", "pixel"])
def test_embedding_never_modifies_the_input(model, level):
    """Tiles are normalised in place: that must never reach the caller's (or dask's) arrays,
    whether the cube is numpy-backed or persisted, one tile per chunk or many."""
    for cube in (s1_cube(64, 64, times=1), s1_cube(128, 128, times=2)):
        before = cube.values.copy()
        embed(cube, model, level=level, tile=64, device="cpu").compute()
        np.testing.assert_array_equal(cube.values, before)
        persisted = cube.chunk({"y": 64, "x": 64}).persist()
        embed(persisted, model, level=level, tile=64, device="cpu").compute()
        np.testing.assert_array_equal(persisted.values, before)


def test_normalize_in_place_only_when_asked(model):
    x = np.full((2, 2, 8, 8), -12.0, dtype="float32")
    x[0, 0, 0, 0] = np.nan
    kept = model.normalize("s1", x)
    assert np.isnan(x[0, 0, 0, 0]) and x[1, 1, 1, 1] == -12.0
    inplace = model.normalize("s1", x, copy=False)
    torch.testing.assert_close(inplace, kept)
    assert np.shares_memory(inplace.numpy(), x) and x[0, 0, 0, 0] == 0.0


def test_embed_float16_output(model, cube):
    emb = embed(cube, model, tile=32, device="cpu", dtype="float16")
    assert emb.dtype == np.float16
    ref = embed(cube, model, tile=32, device="cpu").values
    np.testing.assert_allclose(emb.values.astype(np.float32), ref, rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- nodata


def test_all_nan_chunk_gives_nan_and_partial_nan_tiles_are_filled(model, cube):
    holed = cube.copy(data=cube.values.copy())
    holed[:, :, :32, :32] = np.nan  # one whole chunk
    holed[:, :, 40:44, 50:60] = np.nan  # part of tile (2, 3)
    holed[:, 1, 70:80, 0:10] = np.nan  # one band only
    ch = _chunked(holed, 32, 32)
    emb = embed(ch, model, tile=16, device="cpu").values
    assert np.isnan(emb[:, :, :2, :2]).all()
    assert np.isfinite(emb[:, :, 2:, :]).all() and np.isfinite(emb[:, :, :, 2:]).all()
    pix = embed(ch, model, level="pixel", tile=16, device="cpu").values
    assert np.isnan(pix[:, :, :32, :32]).all()
    hole = np.zeros((96, 80), dtype=bool)
    hole[:32, :32] = hole[40:44, 50:60] = True
    assert np.isnan(pix[:, :, hole]).all()  # pixels with no band at all
    assert np.isfinite(pix[:, :, ~hole]).all()  # the rest of a partly NaN tile is filled
    assert np.isfinite(pix[:, :, 70:80, 0:10]).all()  # one band missing: filled


# ----------------------------------------------------------------------------- bands, units


def test_bands_are_matched_and_reordered_by_name(model, cube):
    a = embed(cube, model, tile=32, device="cpu").values
    swapped = cube.isel(band=[1, 0])
    assert swapped.band.values.tolist() == ["vh", "vv"]
    b = embed(swapped, model, tile=32, device="cpu").values
    np.testing.assert_allclose(a, b, atol=1e-6)
    upper = cube.assign_coords(band=["VV", "VH"])
    np.testing.assert_allclose(embed(upper, model, tile=32, device="cpu").values, a, atol=1e-6)


def test_s2_cube_uses_the_s2_encoder(model):
    bands = model.bands["s2"]
    rng = np.random.default_rng(1)
    data = rng.uniform(0.02, 0.4, (len(bands), 32, 32)).astype(np.float32)
    cube = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": bands[::-1]})
    emb = embed(cube, model, tile=16, device="cpu")
    assert emb.dims == ("feature", "y", "x") and emb.shape == (model.feature_dim, 2, 2)
    assert emb.attrs["sensor"] == "s2"
    patch = data[::-1, :16, :16][None]
    with torch.inference_mode():
        want = model.encoder("s2")(model.normalize("s2", patch.copy()))[0].numpy()
    np.testing.assert_allclose(emb.values[:, 0, 0], want, atol=ATOL, rtol=1e-4)


def test_bands_matching_neither_encoder_list_both(model):
    cube = xr.DataArray(
        np.zeros((3, 32, 32), dtype=np.float32),
        dims=("band", "y", "x"),
        coords={"band": ["B04", "B03", "B02"]},
    )
    with pytest.raises(ValueError, match=r"match none.*s1 encoder: \['vv', 'vh'\].*s2 encoder"):
        embed(cube, model, tile=16)


def test_linear_s1_into_a_db_model_is_refused(model, cube):
    linear = ec.db_to_linear(cube).assign_coords(units=("band", ["linear", "linear"]))
    with pytest.raises(ValueError, match=r"expects 'dB'.*linear_to_db"):
        embed(linear, model, tile=16)


def test_bad_arguments_are_refused(model, cube):
    with pytest.raises(ValueError, match="larger than the cube"):
        embed(cube, model, tile=128)
    with pytest.raises(ValueError, match="level="):
        embed(cube, model, level="patch")
    with pytest.raises(ValueError, match="overlap=40 must not exceed tile=16"):
        embed(cube, model, tile=16, overlap=40)
    with pytest.raises(ValueError, match="dtype="):
        embed(cube, model, tile=16, dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        embed(cube, model, tile=16, batch_size=0)
    with pytest.raises(TypeError, match="model must be"):
        embed(cube, object(), tile=16)


# ----------------------------------------------------------------------------- graph, store


def _task_sizes(arr: Any) -> list[int]:
    """Pickled size of each task of the array's own (last) graph layer."""
    layer = arr.data.dask.layers[arr.data.name]
    return [len(pickle.dumps(v)) for v in dict(layer).values()]


def test_lazy_small_graph_and_one_load_per_process(cube, tmp_path):
    fresh = DualEncoder(width=8, seed=1)  # weights no other test has loaded
    path = fresh.save(tmp_path / "model.safetensors")
    emb = embed(_chunked(cube, 32, 32), path, tile=16, device="cpu")
    assert emb.chunks is not None  # lazy: nothing computed yet
    sha = emb.attrs["model"]
    assert _load_counts().get(sha, 0) == 0
    sizes = _task_sizes(emb)
    assert len(sizes) == 2 * 3 * 3
    assert max(sizes) < 5_000, max(sizes)  # a reference, not the weights (1.5 MB here)
    emb.compute()
    embed(_chunked(cube, 48, 16), path, tile=16, device="cpu").compute()
    assert _load_counts()[sha] == 1


def test_in_memory_model_is_shared_by_reference(model, cube):
    emb = embed(cube, model, tile=16, device="cpu")
    again = embed(cube, model, tile=16, device="cpu")
    assert emb.attrs["model"] == again.attrs["model"]
    assert max(_task_sizes(emb)) < 5_000


def test_temporary_model_files_are_pruned(monkeypatch, cube, tmp_path):
    import os
    import time

    import eo_contrast.inference as inference

    monkeypatch.setattr(inference, "_model_folder", lambda: tmp_path / "models")
    monkeypatch.setattr(inference, "KEEP_MODEL_FILES", 3)

    def written(m: Any) -> Path:
        sha = embed(cube, m, tile=16, device="cpu").attrs["model"]
        return tmp_path / "models" / f"{sha}.safetensors"

    # four models, each written once: all recent, so none is pruned
    paths = [written(DualEncoder({"s1": ["vv", "vh"]}, width=4, seed=seed)) for seed in range(4)]
    assert all(p.is_file() for p in paths)
    day = time.time() - 86_400
    for age, path in enumerate(paths):  # now a day old, model 3 the newest of them
        os.utime(path, (day + age, day + age))
    embed(cube, DualEncoder({"s1": ["vv", "vh"]}, width=4, seed=0), tile=16, device="cpu")
    assert time.time() - paths[0].stat().st_mtime < 60  # model 0 used again: touched
    new = written(DualEncoder({"s1": ["vv", "vh"]}, width=4, seed=99))
    left = sorted(p.name for p in (tmp_path / "models").glob("*.safetensors"))
    # kept: the new file, model 0 (recently used) and the newest old one (model 3)
    assert left == sorted([new.name, paths[0].name, paths[3].name])


def test_embedding_writes_to_zarr_with_its_crs(model, cube, tmp_path):
    emb = embed(_chunked(cube, 32, 32), model, tile=16, device="cpu")
    store = tmp_path / "emb.zarr"
    ec.to_zarr(emb, store)
    back = xr.open_zarr(store)[emb.name]
    assert back.rio.crs == cube.rio.crs
    assert tuple(back.rio.transform())[:6] == pytest.approx(tuple(emb.rio.transform())[:6])
    np.testing.assert_allclose(back.values, emb.values, atol=1e-6)


@pytest.mark.slow  # ~45 s on 2 cores: two fresh worker processes import torch and the package
def test_distributed_processes_match_and_load_once_per_worker(model, cube, tmp_path):
    distributed = pytest.importorskip("distributed")
    path = model.save(tmp_path / "model.safetensors")
    ch = _chunked(cube, 32, 32)
    local = embed(ch, path, tile=16, device="cpu").compute(scheduler="threads")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        emb = embed(ch, path, tile=16, device="cpu")
        remote = emb.compute()
        counts = client.run(_load_counts)
    np.testing.assert_allclose(remote.values, local.values, atol=1e-6)
    sha = emb.attrs["model"]
    per_worker = [c.get(sha, 0) for c in counts.values()]
    assert sum(per_worker) >= 1 and max(per_worker) == 1, counts


# ----------------------------------------------------------------------------- segment


class TinySeg(torch.nn.Module):
    """A minimal segmentation model with the SegmentationModel interface."""

    def __init__(self, encoder: DualEncoder, classes: list[str], sensors=("s1",), tile=32):
        super().__init__()
        self.encoder = encoder
        self.classes = list(classes)
        self.sensors = tuple(sensors)
        self.tile = tile
        self.heads = torch.nn.ModuleDict(
            {
                s: SegmentationHead(encoder.encoder(s).feature_channels, len(classes), width=8)
                for s in self.sensors
            }
        )
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.heads.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    @property
    def bands(self) -> dict[str, list[str]]:
        return {s: self.encoder.bands[s] for s in self.sensors}

    @property
    def units(self) -> dict[str, str]:
        return {s: self.encoder.units[s] for s in self.sensors}

    def normalize(self, sensor: str, x: Any, **kw: Any) -> torch.Tensor:
        return self.encoder.normalize(sensor, x, **kw)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = 0
        for s in self.sensors:
            x = inputs[s]
            out = out + self.heads[s](self.encoder.features(s, x), size=x.shape[-2:])
        return out

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.metadata,
            "classes": self.classes,
            "sensors": list(self.sensors),
            "tile": self.tile,
        }

    def save(self, path: Any) -> Path:
        return write_checkpoint(path, self.state_dict(), self.metadata)

    @classmethod
    def load(cls, path: Any) -> TinySeg:
        tensors, meta = read_checkpoint(path)
        enc = DualEncoder.from_metadata(meta["encoder"])
        model = cls(enc, meta["classes"], tuple(meta["sensors"]), meta["tile"])
        model.load_state_dict(tensors)
        return model.eval()


@pytest.fixture(scope="module")
def seg(model) -> TinySeg:
    return TinySeg(model, ["land", "water", "other"]).eval()


def test_segment_ignores_chunking_and_covers_the_grid(seg, cube):
    holed = cube.copy(data=cube.values.copy())
    holed[:, :, :32, :32] = np.nan  # an all-NaN chunk
    holed[:, 0, 60:62, 70:75] = np.nan  # one band only: still data
    holed[:, :, 80:82, 10:12] = np.nan  # no data
    runs = [
        segment(_chunked(holed, cy, cx), seg, probabilities=True, device="cpu").compute()
        for cy, cx in ((96, 80), (32, 32), (40, 48))
    ]
    for r in runs[1:]:
        np.testing.assert_allclose(r.values, runs[0].values, atol=1e-5)
    prob = runs[0]
    assert prob.dims == ("time", "class", "y", "x")
    assert prob.shape == (2, 3, 96, 80)
    assert prob["class"].values.tolist() == ["land", "water", "other"]
    assert np.isnan(prob.values[:, :, :32, :32]).all()
    assert np.isnan(prob.values[:, :, 80:82, 10:12]).all()
    valid = np.ones((96, 80), dtype=bool)
    valid[:32, :32] = valid[80:82, 10:12] = False
    np.testing.assert_allclose(prob.values[:, :, valid].sum(axis=1), 1.0, atol=1e-5)
    assert np.isfinite(prob.values[:, :, 60:62, 70:75]).all()
    ids = segment(_chunked(holed, 32, 48), seg, device="cpu")
    assert ids.dims == ("time", "y", "x") and ids.dtype == np.int16
    ids = ids.compute()
    assert (ids.values[:, ~valid] == -1).all()
    np.testing.assert_array_equal(ids.values[:, valid], prob.values[:, :, valid].argmax(axis=1))
    assert len(np.unique(ids.values[:, valid])) >= 2
    assert ids.rio.crs == cube.rio.crs
    assert tuple(ids.rio.transform()) == pytest.approx(tuple(cube.rio.transform()))


def test_segment_blends_overlapping_tiles_without_seams(seg, cube):
    # a single tile's prediction is the softmax of the model on it; blending changes interior
    # values only where tiles overlap, and never jumps at tile borders
    prob = segment(cube.isel(time=0), seg, probabilities=True, overlap=16, device="cpu").values
    patch = cube.isel(time=0, y=slice(0, 32), x=slice(0, 32)).values[None]
    with torch.inference_mode():
        p0 = torch.softmax(seg({"s1": seg.normalize("s1", patch)}), dim=1)[0].numpy()
    # pixels (0..15, 0..15) are covered by tile (0, 0) only
    np.testing.assert_allclose(prob[:, :16, :16], p0[:, :16, :16], atol=1e-5)
    hard = segment(cube.isel(time=0), seg, probabilities=True, overlap=0, device="cpu").values
    # without overlap there are seams at the tile borders (x = 31 | 32); blended is smoother
    jump_hard = np.abs(hard[:, :, 32] - hard[:, :, 31]).mean()
    jump_blend = np.abs(prob[:, :, 32] - prob[:, :, 31]).mean()
    assert jump_blend < jump_hard


def test_segment_two_sensor_dataset(model, cube):
    seg2 = TinySeg(model, ["dry", "wet"], sensors=("s1", "s2"), tile=16).eval()
    rng = np.random.default_rng(2)
    s2b = model.bands["s2"]
    s2 = rng.uniform(0.02, 0.4, (2, len(s2b), 96, 80)).astype(np.float32)
    ds = xr.Dataset(
        {
            "s1": (("pair", "s1_band", "y", "x"), cube.values),
            "s2": (("pair", "s2_band", "y", "x"), s2),
        },
        coords={
            "s1_band": ["vv", "vh"],
            "s2_band": s2b,
            "s1_units": ("s1_band", ["dB", "dB"]),
            "y": cube.y.values,
            "x": cube.x.values,
        },
    ).rio.write_crs(CRS)
    ds["s1"][:, :, :16, :] = np.nan
    ds["s2"][:, :, :16, :] = np.nan
    runs = [
        segment(ds.chunk({"pair": 1, "y": cy, "x": cx}), seg2, device="cpu").compute()
        for cy, cx in ((96, 80), (32, 16), (48, 40))
    ]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.values, runs[0].values)
    assert runs[0].dims == ("pair", "y", "x")
    assert (runs[0].values[:, :16] == -1).all() and (runs[0].values[:, 16:] >= 0).all()
    assert runs[0].rio.crs == cube.rio.crs
    with pytest.raises(ValueError, match=r"variable\(s\) \['s1', 's2'\]"):
        segment(cube, seg2)


def test_segment_bad_input(seg, cube):
    with pytest.raises(ValueError, match="larger than the cube"):
        segment(cube.isel(y=slice(0, 20)), seg)
    with pytest.raises(ValueError, match="overlap=32 must be smaller than tile=32"):
        segment(cube, seg, overlap=32)
    linear = ec.db_to_linear(cube).assign_coords(units=("band", ["linear", "linear"]))
    with pytest.raises(ValueError, match="linear_to_db"):
        segment(linear, seg)
    with pytest.raises(TypeError, match="segmentation model"):
        segment(cube, object())
