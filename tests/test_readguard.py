"""Read errors that name the store and the chunk: a damaged Zarr chunk, a damaged GeoTIFF."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import cloudpickle
import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray
import xarray as xr

import eo_contrast as ec
from eo_contrast.readguard import ChunkReadError, guard_reads

N = 64
CORRUPT = "c/1/0/1/1"  # time 1, all bands, y 32:64, x 32:64


def _cube() -> xr.DataArray:
    rng = np.random.default_rng(0)
    values = rng.normal(-12.0, 3.0, (2, 2, N, N)).astype("float32")
    return (
        xr.DataArray(
            values,
            dims=("time", "band", "y", "x"),
            coords={
                "time": pd.date_range("2024-03-01", periods=2, freq="12D"),
                "band": ["vv", "vh"],
                "y": 4_500_000.0 - 10 * np.arange(N),
                "x": 500_000.0 + 10 * np.arange(N),
            },
        )
        .rio.write_crs("EPSG:32630")
        .chunk({"time": 1, "y": 32, "x": 32})
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A Zarr store (zstd, the Zarr 3 default) of a 2 x 2 x 64 x 64 cube with one bad chunk."""
    path = tmp_path / "cube.zarr"
    ec.to_zarr(_cube(), path)
    chunk = path / "cube" / CORRUPT
    assert chunk.is_file()
    chunk.write_bytes(b"this is not a zstd frame" * 8)
    return path


def _open(path: Path) -> xr.Dataset:
    return xr.open_zarr(path)


def test_exported() -> None:
    assert ec.ChunkReadError is ChunkReadError and ec.guard_reads is guard_reads
    assert issubclass(ChunkReadError, OSError)
    assert {"ChunkReadError", "guard_reads"} <= set(ec.__all__)


def test_unguarded_error_names_nothing(store: Path) -> None:
    with pytest.raises(Exception) as info:  # whatever the codec raises
        _open(store).cube.compute()
    assert not isinstance(info.value, ChunkReadError)
    assert str(store) not in str(info.value)


def test_damaged_chunk_is_named_with_store_key_and_ranges(store: Path) -> None:
    guarded = guard_reads(_open(store))
    with pytest.raises(ChunkReadError) as info:
        guarded.compute()
    err = info.value
    msg = str(err)
    assert f"from Zarr store {store}:" in msg
    assert (
        f"chunk {CORRUPT} (time 1:2, band 0:2, y 32:64, x 32:64; file {store}/cube/{CORRUPT})"
        in msg
    )
    assert "of variable 'cube'" in msg
    assert err.store == str(store) and err.chunk == CORRUPT
    assert err.__cause__ is not None and type(err.__cause__).__name__ in msg
    # the DataArray, and anything computed from it, names it too
    with pytest.raises(ChunkReadError, match=re.escape(f"chunk {CORRUPT} (")):
        (guard_reads(_open(store).cube) * 2).mean().compute()


def test_intact_chunks_still_read(store: Path) -> None:
    cube = guard_reads(_open(store).cube)
    expected = _cube()
    first = cube.isel(time=0).compute()
    np.testing.assert_array_equal(first.values, expected.isel(time=0).values)
    left = cube.isel(time=1, x=slice(0, 32)).compute()
    np.testing.assert_array_equal(left.values, expected.isel(time=1, x=slice(0, 32)).values)


def test_guarding_keeps_laziness_chunks_and_names(store: Path) -> None:
    ds = _open(store)
    guarded = guard_reads(ds)
    assert guarded.cube.chunks == ds.cube.chunks
    assert guarded.cube.data.name == ds.cube.data.name  # deterministic: the same keys
    assert set(guarded.cube.data.dask.layers) == set(ds.cube.data.dask.layers)
    assert guarded.cube.encoding == ds.cube.encoding and guarded.attrs == ds.attrs
    assert guarded.rio.crs == ds.rio.crs
    again = guard_reads(guarded)  # already guarded: unchanged
    assert again is guarded
    cube = guarded.cube
    assert guard_reads(cube) is cube


def test_numpy_backed_is_a_no_op() -> None:
    cube = _cube().compute()
    assert guard_reads(cube) is cube
    ds = cube.to_dataset(name="cube")
    assert guard_reads(ds) is ds
    lazy = _cube()  # dask, but not read from a store
    assert guard_reads(lazy) is lazy
    with pytest.raises(TypeError, match="DataArray or Dataset"):
        guard_reads(np.zeros(3))  # type: ignore[call-overload]


def test_guarded_graph_pickles_for_process_workers(store: Path) -> None:
    cube = guard_reads(_open(store).cube)
    again = pickle.loads(pickle.dumps(cube))
    with pytest.raises(ChunkReadError, match=re.escape(CORRUPT)):
        again.compute()
    graph = dict(cube.data.__dask_graph__())
    restored = cloudpickle.loads(cloudpickle.dumps(graph))
    assert restored.keys() == graph.keys()
    with pytest.raises(ChunkReadError, match=re.escape(CORRUPT)):
        dask.compute(cube, scheduler="processes", num_workers=1)
    err = ChunkReadError("could not read", store="s3://b/c.zarr", chunk="c/0/1")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.store, back.chunk) == ("could not read", "s3://b/c.zarr", "c/0/1")


def test_segment_names_the_damaged_chunk(store: Path) -> None:
    pytest.importorskip("torch")
    from eo_contrast.models import DualEncoder
    from eo_contrast.segmentation import SegmentationModel

    model = DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0)
    seg = SegmentationModel(model, ["dry", "water"], sensors=("s1",), tile=16, seed=0).eval()
    out = ec.segment(_open(store).cube, seg, device="cpu")
    with pytest.raises(ChunkReadError, match=re.escape(f"chunk {CORRUPT} (")) as info:
        out.compute()
    assert str(store) in str(info.value)
    assert out.isel(time=0).compute().shape == (N, N)


def test_embed_of_a_guarded_cube_names_the_damaged_chunk(store: Path) -> None:
    pytest.importorskip("torch")
    from eo_contrast.models import DualEncoder

    model = DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0)
    out = ec.embed(guard_reads(_open(store).cube), model, tile=16, device="cpu")
    with pytest.raises(ChunkReadError, match=re.escape(f"{store}/cube/{CORRUPT}")):
        out.compute()


def test_pretrain_names_the_damaged_chunk(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    cube = _cube()
    s2 = (
        xr.DataArray(
            np.random.default_rng(1).uniform(0.02, 0.4, (2, 3, N, N)).astype("float32"),
            dims=cube.dims,
            coords={**cube.coords, "band": ["B04", "B03", "B02"]},
        )
        .rio.write_crs("EPSG:32630")
        .chunk({"time": 1, "y": 32, "x": 32})
    )
    path = tmp_path / "pairs.zarr"
    ec.to_zarr(ec.pair(cube, s2), path)
    chunks = sorted((path / "s1" / "c").rglob("*"))
    bad = [c for c in chunks if c.is_file()][-1]
    bad.write_bytes(b"not zstd" * 16)
    pairs = xr.open_zarr(path)
    with pytest.raises(ChunkReadError) as info:
        ec.pretrain(pairs, tile=16, batch_size=4, device="cpu", progress=False)
    key = bad.relative_to(path / "s1").as_posix()
    assert f"chunk {key} (" in str(info.value) and str(path) in str(info.value)


def test_damaged_geotiff_names_the_file_and_window(tmp_path: Path) -> None:
    path = tmp_path / "s1.tif"
    _cube().isel(time=0).compute().rio.to_raster(
        path, tiled=True, blockxsize=32, blockysize=32, compress="deflate"
    )
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 4096] = bytes(len(raw[middle : middle + 4096]))
    path.write_bytes(bytes(raw))
    opened = rioxarray.open_rasterio(path, chunks={"band": 2, "y": 32, "x": 32})
    assert isinstance(opened, xr.DataArray)
    with pytest.raises(ChunkReadError) as info:
        guard_reads(opened).compute()
    msg = str(info.value)
    assert f"from file {path}:" in msg
    assert re.search(r"the chunk \(band 0:2, y \d+:\d+, x \d+:\d+\)", msg)
