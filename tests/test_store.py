"""Tests of eo_contrast.store.to_zarr: round trips, CRS, chunks, modes, fsspec URLs, resume."""

from __future__ import annotations

import threading
import uuid
import warnings

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import zarr

import eo_contrast as ec
from eo_contrast.store import PROGRESS_GROUP, STATUS_ATTR, to_zarr

SHAPE = (2, 3, 16, 24)  # time, band, y, x
CHUNKS = (1, 3, 8, 8)


def make_cube(
    data: da.Array | np.ndarray | None = None, *, name: str | None = None
) -> xr.DataArray:
    """A realistic small S2-like cube: reflectance with NaN holes, UTM grid, time/band coords."""
    if data is None:
        rng = np.random.default_rng(42)
        values = rng.uniform(0, 0.6, SHAPE).astype("float32")
        values[0, :, 3:6, 10:14] = np.nan
        data = da.from_array(values, chunks=CHUNKS)
    cube = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(["2021-06-01T10:30", "2021-06-06T10:30"], "datetime64[ns]"),
            "band": ["B02", "B03", "B04"],
            "units": ("band", ["1", "1", "1"]),
            "y": 5_000_000.0 - 10.0 * (np.arange(SHAPE[2]) + 0.5),
            "x": 600_000.0 + 10.0 * (np.arange(SHAPE[3]) + 0.5),
        },
        attrs={"long_name": "Sentinel-2 reflectance", "processing": "L2A"},
    )
    cube.name = name  # not the dask array's name, which xarray would take
    return cube.rio.write_crs("EPSG:32632")


def assert_same_values(a: xr.DataArray, b: xr.DataArray) -> None:
    va, vb = np.asarray(a.values), np.asarray(b.values)
    assert va.dtype == vb.dtype and va.shape == vb.shape
    assert va.tobytes() == vb.tobytes()  # byte for byte, NaN included


# --------------------------------------------------------------------------- round trips


def test_dataarray_round_trip(tmp_path):
    cube = make_cube()
    store = tmp_path / "cube.zarr"
    out = to_zarr(cube, store)
    opened = xr.open_zarr(store)
    assert list(opened.data_vars) == ["cube"]
    back = opened["cube"]
    assert back.dims == cube.dims
    assert_same_values(back, cube)
    np.testing.assert_array_equal(back.time.values, cube.time.values)
    assert back.time.dtype == np.dtype("datetime64[ns]")
    assert [str(b) for b in back.band.values] == ["B02", "B03", "B04"]
    assert [str(u) for u in back.units.values] == ["1", "1", "1"]
    np.testing.assert_array_equal(back.x.values, cube.x.values)
    np.testing.assert_array_equal(back.y.values, cube.y.values)
    assert back.attrs["long_name"] == "Sentinel-2 reflectance"
    assert back.attrs["processing"] == "L2A"
    assert opened.rio.crs == cube.rio.crs
    assert back.rio.crs == cube.rio.crs
    assert back.rio.transform() == cube.rio.transform()
    assert back.encoding["chunks"] == CHUNKS
    assert back.chunks == cube.chunks
    assert opened.attrs[STATUS_ATTR] == "complete"
    # the returned object is the written array, opened lazily
    assert isinstance(out, xr.DataArray) and out.name == "cube"
    assert isinstance(out.data, da.Array)
    assert_same_values(out, cube)
    # the canonical cube reads back as a cube
    assert ec.sensor_of(ec.as_cube(back)) == "s2"


def test_zarr_v3_consolidated_and_no_progress_left(tmp_path):
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(name="refl"), store)
    group = zarr.open_group(store, mode="r")
    assert group.metadata.zarr_format == 3
    assert group.metadata.consolidated_metadata is not None
    assert PROGRESS_GROUP not in group
    assert not (store / PROGRESS_GROUP).exists()
    assert group.attrs[STATUS_ATTR] == "complete"
    assert "refl" in xr.open_zarr(store).data_vars


def test_dataset_round_trip_pairs(tmp_path):
    cube = make_cube()
    s1 = xr.DataArray(
        np.full((2, 2, SHAPE[2], SHAPE[3]), -12.5, "float32"),
        dims=("time", "band", "y", "x"),
        coords={
            "time": cube.time.values - np.timedelta64(1, "D"),
            "band": ["vv", "vh"],
            "y": cube.y,
            "x": cube.x,
        },
    ).rio.write_crs("EPSG:32632")
    pairs = ec.pair(s1.chunk({"y": 8}), cube.chunk({"y": 8, "x": 12}))
    store = tmp_path / "pairs.zarr"
    out = to_zarr(pairs, store)
    assert isinstance(out, xr.Dataset)
    opened = xr.open_zarr(store)
    assert opened.rio.crs == pairs.rio.crs
    for name in ("s1", "s2"):
        assert opened[name].dims == pairs[name].dims
        assert_same_values(opened[name], pairs[name])
        assert opened[name].encoding["chunks"] == tuple(c[0] for c in pairs[name].chunks)
    np.testing.assert_array_equal(opened.dt.values, pairs.dt.values)
    assert opened.dt.dtype == np.dtype("timedelta64[ns]")
    np.testing.assert_array_equal(opened.s1_time.values, pairs.s1_time.values)
    assert [str(b) for b in opened.s1_band.values] == ["vv", "vh"]
    assert [str(u) for u in opened.s1_units.values] == ["dB", "dB"]
    for key, value in pairs.attrs.items():
        assert opened.attrs[key] == value
    assert opened.attrs[STATUS_ATTR] == "complete"


def test_dataset_with_int_and_bool_variables(tmp_path):
    cube = make_cube()
    labels = xr.DataArray(
        np.where(np.arange(SHAPE[2] * SHAPE[3]).reshape(SHAPE[2:]) % 5 == 0, -1, 1).astype("int16"),
        dims=("y", "x"),
        coords={"y": cube.y, "x": cube.x},
        attrs={"_FillValue": -1, "flag_meanings": "nodata water"},
    )
    ds = xr.Dataset({"labels": labels, "valid": labels != -1}).rio.write_crs("EPSG:32632")
    ds = ds.chunk({"y": 8, "x": 8})
    to_zarr(ds, tmp_path / "l.zarr")
    opened = xr.open_zarr(tmp_path / "l.zarr")
    assert_same_values(opened["labels"], ds["labels"])  # -1 kept as a value, not masked
    assert opened["valid"].dtype == bool
    np.testing.assert_array_equal(opened["valid"].values, ds["valid"].values)
    assert opened["labels"].attrs["flag_meanings"] == "nodata water"
    assert opened.rio.crs.to_epsg() == 32632


def test_numpy_and_irregular_chunks(tmp_path):
    values = make_cube().values
    eager = make_cube(values)
    to_zarr(eager, tmp_path / "np.zarr")
    back = xr.open_zarr(tmp_path / "np.zarr")["cube"]
    assert back.encoding["chunks"] == SHAPE  # small: one "auto" chunk
    assert_same_values(back, eager)

    irregular = make_cube(da.from_array(values, chunks=((1, 1), (3,), (5, 3, 8), (10, 14))))
    to_zarr(irregular, tmp_path / "irr.zarr")
    back = xr.open_zarr(tmp_path / "irr.zarr")["cube"]
    assert back.encoding["chunks"] == (1, 3, 5, 10)  # the first chunk size, made regular
    assert back.chunks == ((1, 1), (3,), (5, 5, 5, 1), (10, 10, 4))
    assert_same_values(back, irregular)


def test_strings_round_trip_without_warnings(tmp_path):
    cube = make_cube()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # third-party deprecations (affine's `*`) are not ours to fix here
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        to_zarr(cube, tmp_path / "s.zarr")
        back = xr.open_zarr(tmp_path / "s.zarr")
        bands = [str(b) for b in back.band.values]
    assert bands == ["B02", "B03", "B04"]
    assert back.sel(band="B03")["cube"].shape == (2, 16, 24)


def test_crs_round_trips_for_geographic_grid(tmp_path):
    lon = -0.78 + 9e-5 * (np.arange(20) + 0.5)
    lat = 38.13 - 9e-5 * (np.arange(10) + 0.5)
    cube = xr.DataArray(
        np.zeros((2, 10, 20), "float32"),
        dims=("band", "y", "x"),
        coords={"band": ["vv", "vh"], "y": lat, "x": lon},
    ).rio.write_crs("EPSG:4326")
    ds = to_zarr(cube.to_dataset(name="s1"), tmp_path / "g.zarr")
    assert xr.open_zarr(tmp_path / "g.zarr").rio.crs == cube.rio.crs
    assert ds["s1"].rio.crs.to_epsg() == 4326


# --------------------------------------------------------------------------- modes and errors


def test_mode_w_minus_refuses_and_w_overwrites(tmp_path):
    store = tmp_path / "cube.zarr"
    to_zarr(make_cube(), store)
    with pytest.raises(FileExistsError, match=r"already exists: pass mode='w' to overwrite"):
        to_zarr(make_cube(), store)
    doubled = make_cube() * 2
    doubled = doubled.rio.write_crs("EPSG:32632")
    out = to_zarr(doubled, store, mode="w")
    assert_same_values(out, doubled)
    assert_same_values(xr.open_zarr(store)["cube"], doubled)


def test_mode_and_argument_errors(tmp_path):
    cube = make_cube()
    with pytest.raises(ValueError, match="mode='a' is not supported"):
        to_zarr(cube, tmp_path / "a.zarr", mode="a")
    with pytest.raises(ValueError, match=r"resume=True .* mode='w' overwrites"):
        to_zarr(cube, tmp_path / "a.zarr", mode="w", resume=True)
    with pytest.raises(TypeError, match="store must be a local path"):
        to_zarr(cube, 42)
    with pytest.raises(TypeError, match="obj must be an xarray DataArray or Dataset"):
        to_zarr(cube.values, tmp_path / "a.zarr")
    with pytest.raises(ValueError, match="storage_options are only used with fsspec URLs"):
        to_zarr(cube, tmp_path / "a.zarr", storage_options={"anon": True})
    with pytest.raises(ValueError, match="named 'band' like one of its coordinates"):
        to_zarr(cube.rename("band"), tmp_path / "a.zarr")
    with pytest.raises(ValueError, match="has no data variables"):
        to_zarr(xr.Dataset(coords={"x": [1, 2]}), tmp_path / "a.zarr")
    not_zarr = tmp_path / "folder"
    not_zarr.mkdir()
    (not_zarr / "notes.txt").write_text("keep me")
    for mode in ("w-", "w"):
        with pytest.raises(ValueError, match="exists and is not a Zarr store"):
            to_zarr(cube, not_zarr, mode=mode)
    assert (not_zarr / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "a.zarr").exists()
    # an existing empty folder is fine
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    to_zarr(cube, empty)
    assert_same_values(xr.open_zarr(empty)["cube"], cube)


# --------------------------------------------------------------------------- fsspec URLs


def test_memory_and_file_urls(tmp_path):
    cube = make_cube()
    url = f"memory://eo-contrast-tests/{uuid.uuid4().hex}/cube.zarr"
    out = to_zarr(cube, url)
    assert_same_values(out, cube)
    opened = xr.open_zarr(url)
    assert opened.rio.crs == cube.rio.crs
    assert zarr.open_group(url, mode="r").metadata.zarr_format == 3
    with pytest.raises(FileExistsError, match="already exists"):
        to_zarr(cube, url)

    file_url = (tmp_path / "f.zarr").as_uri()
    assert file_url.startswith("file://")
    to_zarr(cube, file_url)
    assert_same_values(xr.open_zarr(tmp_path / "f.zarr")["cube"], cube)


@pytest.mark.network_server
def test_s3_url_with_storage_options(s3_server):
    s3_server.make_bucket("eo-bucket")
    options = s3_server.storage_options
    cube = make_cube().isel(time=[0]).chunk({"y": 16, "x": 12})
    out = to_zarr(cube, "s3://eo-bucket/cube.zarr", storage_options=options)
    assert_same_values(out, cube)
    opened = xr.open_zarr("s3://eo-bucket/cube.zarr", storage_options=options)
    assert opened.rio.crs == cube.rio.crs
    assert opened.attrs[STATUS_ATTR] == "complete"
    # resume on a complete store: nothing to do
    again = to_zarr(cube, "s3://eo-bucket/cube.zarr", resume=True, storage_options=options)
    assert_same_values(again, cube)


@pytest.mark.network_server
def test_s3_missing_bucket_and_credentials_are_named(s3_server, monkeypatch):
    cube = make_cube().isel(time=[0])
    endpoint = {"endpoint_url": s3_server.endpoint, "region_name": s3_server.region}
    with pytest.raises(
        FileNotFoundError,
        match=r"bucket 'no-such-bucket' of 's3://no-such-bucket/c.zarr' does not exist",
    ):
        to_zarr(cube, "s3://no-such-bucket/c.zarr", storage_options=s3_server.storage_options)

    bucket = s3_server.make_bucket("eo-credentials")
    with pytest.raises(PermissionError, match=r"incomplete credentials .*AWS_ACCESS_KEY_ID"):
        to_zarr(
            cube,
            f"{bucket}/c.zarr",
            storage_options={"secret": "only-a-secret", "client_kwargs": endpoint},
        )
    with pytest.raises(ValueError, match=r"does not take one of the storage_options .*colour"):
        to_zarr(
            cube, f"{bucket}/c.zarr", storage_options={**s3_server.storage_options, "colour": 1}
        )

    # no credentials anywhere: environment variables, files, instance metadata
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(
        PermissionError, match=r"no credentials found for 's3://eo-credentials/c.zarr': set AWS_"
    ):
        to_zarr(
            cube,
            f"{bucket}/c.zarr",
            storage_options={"client_kwargs": endpoint, "skip_instance_cache": True},
        )


def test_annotations_of_the_graph_reach_the_scheduler(tmp_path):
    """Resources asked with dask.annotate (e.g. a GPU per model task) survive to_zarr."""
    distributed = pytest.importorskip("distributed")
    specs = {
        "a": {"cls": distributed.Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "b": {"cls": distributed.Worker, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": ":0"}}
    cube = make_cube()
    with dask.annotate(resources={"GPU": 1}):
        marked = cube.copy(data=cube.data.map_blocks(np.negative, name="marked"))
    with (
        distributed.SpecCluster(workers=specs, scheduler=scheduler) as cluster,
        distributed.Client(cluster) as client,
        client.as_current(),
        distributed.get_task_stream() as stream,
    ):
        gpu = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"])
        out = to_zarr(marked, tmp_path / "marked.zarr")
    # the marked blocks run alone, or fused with their writes into "to_zarr-..." tasks
    keys = [str(t["key"][0]) for t in stream.data]
    assert any(k.startswith(("marked", "to_zarr")) for k in keys)
    workers = {
        t["worker"] for t in stream.data if str(t["key"][0]).startswith(("marked", "to_zarr"))
    }
    assert workers == {gpu}
    assert_same_values(out, -cube)


# --------------------------------------------------------------------------- resume


class Counted:
    """A cube whose chunks count their computations; the ``fail_on``-th computation fails."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.computed: list[tuple[int, ...]] = []
        self.failed_at: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def _block(self, block: np.ndarray, block_info=None) -> np.ndarray:
        loc = tuple(block_info[0]["chunk-location"])
        with self._lock:
            self.computed.append(loc)
            fail = len(self.computed) == self.fail_on
            if fail:
                self.failed_at = loc
        if fail:
            raise RuntimeError(f"simulated failure at chunk {loc}")
        return block

    def cube(self) -> xr.DataArray:
        base = make_cube()
        return make_cube(base.data.map_blocks(self._block, dtype="float32"))


def flags(store) -> np.ndarray:
    return np.asarray(zarr.open_array(store, path=f"{PROGRESS_GROUP}/cube", mode="r")[...]) == 1


N_CHUNKS = 2 * 1 * 2 * 3


def test_resume_writes_only_missing_chunks(tmp_path):
    reference = tmp_path / "reference.zarr"
    to_zarr(make_cube(), reference)

    store = tmp_path / "cube.zarr"
    broken = Counted(fail_on=5)  # chunks run one by one: 4 are written, the 5th fails
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="simulated"):
        to_zarr(broken.cube(), store)
    # an interrupted store never looks complete
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"
    assert xr.open_zarr(store).attrs[STATUS_ATTR] == "incomplete"
    written = flags(store)
    assert written.shape == (2, 1, 2, 3)
    n_written = int(written.sum())
    assert 0 < n_written < N_CHUNKS
    assert broken.failed_at is not None and not written[broken.failed_at]
    with pytest.raises(FileExistsError, match="resume=True to finish an interrupted write"):
        to_zarr(make_cube(), store)

    good = Counted()
    out = to_zarr(good.cube(), store, resume=True)
    missing = {tuple(int(i) for i in idx) for idx in np.argwhere(~written)}
    assert len(good.computed) == N_CHUNKS - n_written
    assert set(good.computed) == missing
    assert_same_values(out, xr.open_zarr(reference)["cube"])
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "complete"
    assert PROGRESS_GROUP not in zarr.open_group(store, mode="r")

    # resuming a complete store computes nothing
    idle = Counted()
    to_zarr(idle.cube(), store, resume=True)
    assert idle.computed == []


def test_resume_with_threads_and_on_missing_store(tmp_path):
    store = tmp_path / "cube.zarr"
    broken = Counted(fail_on=6)
    with pytest.raises(RuntimeError, match="simulated") as info:
        to_zarr(broken.cube(), store)
    assert any("resume=True" in note for note in getattr(info.value, "__notes__", []))
    written = flags(store)
    # with threads, chunks already running when the failure surfaced may still finish (and be
    # flagged) after to_zarr raised: resume never recomputes a chunk flagged before it started
    good = Counted()
    out = to_zarr(good.cube(), store, resume=True)
    flagged = {tuple(int(i) for i in idx) for idx in np.argwhere(written)}
    assert not flagged & set(good.computed)
    assert len(good.computed) <= N_CHUNKS - len(flagged)
    assert_same_values(out, make_cube())

    fresh = Counted()
    to_zarr(fresh.cube(), tmp_path / "new.zarr", resume=True)  # missing store: a normal write
    assert len(fresh.computed) == N_CHUNKS
    assert_same_values(xr.open_zarr(tmp_path / "new.zarr")["cube"], make_cube())


def test_incomplete_store_without_flags_is_rewritten_entirely(tmp_path):
    store = tmp_path / "cube.zarr"
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError):
        to_zarr(Counted(fail_on=3).cube(), store)
    group = zarr.open_group(store, mode="r+")
    del group[PROGRESS_GROUP]  # completion records lost
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"
    good = Counted()
    out = to_zarr(good.cube(), store, resume=True)
    assert len(good.computed) == N_CHUNKS
    assert_same_values(out, make_cube())


def test_resume_refuses_other_layouts_and_foreign_stores(tmp_path):
    store = tmp_path / "cube.zarr"
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError):
        to_zarr(Counted(fail_on=2).cube(), store)
    with pytest.raises(ValueError, match=r"another layout \(variable 'cube' has chunks"):
        to_zarr(make_cube().chunk({"x": 12}), store, resume=True)
    with pytest.raises(ValueError, match=r"another layout .*coordinate 'time'"):
        shifted = make_cube()
        to_zarr(
            shifted.assign_coords(time=shifted.time + np.timedelta64(1, "D")), store, resume=True
        )
    with pytest.raises(ValueError, match=r"another layout .*data variables"):
        to_zarr(make_cube(name="other"), store, resume=True)
    with pytest.raises(ValueError, match=r"another layout .*shape"):
        to_zarr(make_cube().isel(x=slice(0, 16)), store, resume=True)
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"

    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"cube": (("y", "x"), np.zeros((2, 3), "float32"))}).to_zarr(
        foreign, zarr_format=3, consolidated=False
    )
    with pytest.raises(ValueError, match=r"not written by eo_contrast.to_zarr"):
        to_zarr(make_cube(), foreign, resume=True)


def test_accessor_and_distributed_scheduler(tmp_path):
    distributed = pytest.importorskip("distributed")
    cube = make_cube()
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ):
        out = cube.contrast.to_zarr(tmp_path / "d.zarr")
    assert_same_values(xr.open_zarr(tmp_path / "d.zarr")["cube"], cube)
    assert out.rio.crs == cube.rio.crs
    assert pd.Index(out.time.values).equals(pd.Index(cube.time.values))
