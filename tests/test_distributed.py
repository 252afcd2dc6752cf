"""Runs on a Dask distributed cluster of worker processes: faults, resume, GPU resources, S3.

One ``LocalCluster`` of two single-threaded worker processes serves the module; each test makes
its client the current one (``client.as_current()``), as a command-line run with
``--scheduler`` closes a client of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

import eo_contrast as ec
from eo_contrast.models import DualEncoder
from eo_contrast.pipelines.cli import main
from eo_contrast.store import PROGRESS_GROUP, STATUS_ATTR

distributed = pytest.importorskip("distributed")

TILE = 16
BATCH = 64
CHUNK = 128
#: cube (time, band, y, x): 2 x 2 x 512 x 512 float32 in 128 px chunks -> 32 chunks, 2048 tiles
SHAPE = (2, 2, 512, 512)


def s1_cube() -> xr.DataArray:
    """A deterministic S1-like cube in dB (vv, vh), EPSG:32630, 10 m pixels."""
    rng = np.random.default_rng(7)
    nt, _, ny, nx = SHAPE
    yy, xx = np.mgrid[0:ny, 0:nx]
    water = (np.sin(yy / 37.0) + np.cos(xx / 53.0)) > 0.8
    data = np.empty(SHAPE, dtype=np.float32)
    for t in range(nt):
        data[t, 0] = np.where(water, -22.0, -9.0) + rng.normal(0, 2, (ny, nx))
        data[t, 1] = np.where(water, -28.0, -15.0) + rng.normal(0, 2, (ny, nx))
    cube = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(["2023-10-14", "2023-10-26"], dtype="datetime64[ns]"),
            "band": ["vv", "vh"],
            "units": ("band", ["dB", "dB"]),
            "y": 4_500_000.0 - 10.0 * np.arange(ny) - 5.0,
            "x": 500_000.0 + 10.0 * np.arange(nx) + 5.0,
        },
        name="cube",
    )
    return cube.rio.write_crs("EPSG:32630").chunk({"time": 1, "band": -1, "y": CHUNK, "x": CHUNK})


#: Run in each worker: load the model once and run it on one tile (the per-process cache)
WARM_UP = """
import numpy as np, xarray as xr, eo_contrast as ec
ec.embed(xr.DataArray(np.zeros((2, 16, 16), "float32"), dims=("band", "y", "x"),
                      coords={{"band": ["vv", "vh"], "y": np.arange(16.0), "x": np.arange(16.0)}}),
         {path!r}, tile=16, device="cpu").compute(scheduler="sync")
"""


@pytest.fixture(scope="module")
def client() -> Any:
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def data(client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cube on disk, a model file, and the embedding of an uninterrupted run on the cluster."""
    root = tmp_path_factory.mktemp("distributed")
    cube_store = root / "cube.zarr"
    with dask.config.set(scheduler="threads"):
        ec.to_zarr(s1_cube(), cube_store)
    model = DualEncoder({"s1": ["vv", "vh"]}, width=16, seed=3).save(root / "model.safetensors")
    client.run(exec, WARM_UP.format(path=str(model)))
    reference = root / "reference.zarr"
    with client.as_current():
        ec.to_zarr(_embedding(cube_store, model), reference)
    return {"cube": cube_store, "model": model, "reference": reference}


def _embedding(cube_store: Path, model: Path) -> xr.DataArray:
    cube = xr.open_zarr(cube_store)["cube"]
    emb = ec.embed(cube, model, tile=TILE, batch_size=BATCH, device="cpu")
    return emb.rename("embedding")


def assert_same_chunks(store: Any, reference: Path, name: str = "embedding") -> None:
    """The store's array equals the reference's, chunk for chunk (same chunk grid)."""
    got = zarr.open_array(store, path=name, mode="r")
    ref = zarr.open_array(reference, path=name, mode="r")
    assert got.shape == ref.shape and got.chunks == ref.chunks
    grid = [range(0, n, c) for n, c in zip(ref.shape, ref.chunks, strict=True)]
    checked = 0
    for starts in np.ndindex(*(len(g) for g in grid)):
        sl = tuple(slice(g[i], g[i] + c) for g, i, c in zip(grid, starts, ref.chunks, strict=True))
        a, b = np.asarray(got[sl]), np.asarray(ref[sl])
        assert np.array_equal(a, b, equal_nan=True), f"chunk {starts} differs"
        checked += 1
    assert checked == int(np.prod([len(g) for g in grid]))


def _flags_written(store: Path, name: str = "embedding") -> int:
    folder = store / PROGRESS_GROUP / name / "c"
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _wait_idle(client: Any, timeout: float = 60.0) -> None:
    """Until no task of the cluster is processing (late tasks of a failed run included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.processing().values()):
            return
        time.sleep(0.1)
    raise AssertionError("the cluster did not become idle")


# ----------------------------------------------------------------------------- worker faults


def _pause_before_chunk(victim: int, store: Path, paused: Path) -> Any:
    """A worker plugin that stops worker process ``victim`` for good at a known point.

    When a chunk's task (``to_zarr-...``: model and write of one chunk) is about to run there
    and at least two chunks of ``store`` are written, it writes ``paused`` and blocks the
    worker until the process is killed: that chunk stays unwritten, and no other worker takes
    it while this one holds it. The class is defined here (pickled by value, self-contained)
    because the worker processes cannot import the test module.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class PauseBeforeChunk(WorkerPlugin):
        def __init__(self, victim: int, store: str, paused: str) -> None:
            self.victim, self.store, self.paused = victim, store, paused

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            import os
            import time
            from pathlib import Path

            from eo_contrast.store import PROGRESS_GROUP

            name = str(key[0] if isinstance(key, tuple) else key)
            if finish != "executing" or os.getpid() != self.victim:
                return
            if not name.startswith("to_zarr-"):
                return
            flags = Path(self.store) / PROGRESS_GROUP / "embedding" / "c"
            written = sum(1 for p in flags.rglob("*") if p.is_file()) if flags.is_dir() else 0
            if written < 2:
                return
            Path(self.paused).write_text(f"{name}: {written} chunks written\n")
            while True:  # until SIGKILL
                time.sleep(1.0)

    return PauseBeforeChunk(victim, str(store), str(paused))


def test_worker_killed_mid_run_output_equals_an_uninterrupted_run(client, data, tmp_path):
    store = tmp_path / "emb.zarr"
    n_chunks = SHAPE[0] * (SHAPE[2] // CHUNK) * (SHAPE[3] // CHUNK)
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        with client.as_current():
            try:
                ec.to_zarr(_embedding(data["cube"], data["model"]), store)
                outcome["error"] = None
            except BaseException as err:  # KilledWorker when retries are exhausted
                outcome["error"] = err

    before = client.run(os.getpid)
    victim = sorted(before.values())[0]
    paused = tmp_path / "paused"
    plugin = "pause-before-chunk"
    # the victim stops at a known point: about to run a chunk's task, two chunks written
    client.register_plugin(_pause_before_chunk(victim, store, paused), name=plugin)
    try:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while not paused.exists() and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.02)
        written_at_kill = _flags_written(store)
        os.kill(victim, signal.SIGKILL)  # one worker process dies mid-run
        thread.join(timeout=300)
    finally:
        client.unregister_worker_plugin(plugin)
    assert not thread.is_alive()
    # the kill happened mid-run: some chunks were written, not all
    assert 2 <= written_at_kill < n_chunks, written_at_kill

    error = outcome["error"]
    if error is not None:  # the run failed: a rerun with resume=True finishes it
        assert any("resume=True" in n for n in getattr(error, "__notes__", [])), error
        assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"
        with client.as_current():
            ec.to_zarr(_embedding(data["cube"], data["model"]), store, resume=True)
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "complete"
    assert_same_chunks(store, data["reference"])

    # the nanny replaced the killed worker process
    client.wait_for_workers(2, timeout=120)
    after = set(client.run(os.getpid).values())
    assert victim not in after and len(after) == 2


# ----------------------------------------------------------------------------- GPU resources


def _ran_on(stream: list[dict[str, Any]], prefix: str | tuple[str, ...]) -> Counter[str]:
    """Worker address -> number of tasks whose key starts with ``prefix``."""
    out: Counter[str] = Counter()
    for t in stream:
        key = t["key"][0] if isinstance(t["key"], tuple) else t["key"]
        if str(key).startswith(prefix):
            out[t["worker"]] += 1
    return out


SCHEDULER = {"dashboard": False, "dashboard_address": ":0"}
#: Keys of the tasks running the model: alone, or fused with their chunk's write by to_zarr
MODEL_TASKS = ("embed-", "to_zarr-")


def test_model_tasks_take_a_gpu_resource_where_workers_declare_one(data, tmp_path):
    """In-process workers: one declares GPU=1, one does not. Model tasks go to the first."""
    from distributed import Scheduler, SpecCluster, Worker

    specs = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Worker, "options": {"nthreads": 1}},
    }
    cube = xr.open_zarr(data["cube"])["cube"].isel(y=slice(0, 256), x=slice(0, 256))
    expected = ec.embed(cube, data["model"], tile=TILE, device="cpu").compute(scheduler="sync")
    with (
        SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": SCHEDULER})
        as cluster,
        distributed.Client(cluster) as c,
        c.as_current(),
    ):  # fmt: skip
        info = c.scheduler_info(n_workers=-1)["workers"]
        gpu = next(a for a, w in info.items() if w.get("resources", {}).get("GPU"))
        cpu = next(a for a in info if a != gpu)

        # device "auto" (resolved on each worker): model tasks ask for one GPU each
        emb = ec.embed(cube, data["model"], tile=TILE, device="auto")
        layer = emb.data.dask.layers[emb.data.name]
        assert layer.annotations == {"resources": {"GPU": 1}}
        with distributed.get_task_stream() as ts:
            out = ec.to_zarr(emb, tmp_path / "auto.zarr")
        ran = _ran_on(ts.data, MODEL_TASKS)
        assert sum(ran.values()) == 8 and set(ran) == {gpu}, ran
        np.testing.assert_allclose(out.values, expected.values, atol=1e-5)

        # an explicit CPU device asks for nothing
        emb = ec.embed(cube, data["model"], tile=TILE, device="cpu")
        assert emb.data.dask.layers[emb.data.name].annotations is None

        # ... unless asked with dask.annotate, which to_zarr keeps too
        with dask.annotate(resources={"GPU": 1}):
            emb = ec.embed(cube, data["model"], tile=TILE, device="cpu")
        with distributed.get_task_stream() as ts:
            ec.to_zarr(emb, tmp_path / "asked.zarr")
        ran = _ran_on(ts.data, MODEL_TASKS)
        assert set(ran) == {gpu} and ran[gpu] == 8, ran
        assert cpu not in ran


def test_no_gpu_resource_on_workers_without_one(client, data):
    cube = xr.open_zarr(data["cube"])["cube"]
    with client.as_current():
        emb = ec.embed(cube, data["model"], tile=TILE, device="auto")
    assert emb.data.dask.layers[emb.data.name].annotations is None


# ----------------------------------------------------------------------------- resume


def test_resume_on_the_cluster_after_a_failed_chunk(client, data, tmp_path):
    """A run whose input has an unreadable chunk stops (exit 1, one line); --resume on the
    cluster then writes only the chunks still missing."""
    cube_store = tmp_path / "cube.zarr"
    shutil.copytree(data["cube"], cube_store)
    chunk_files = sorted(p for p in (cube_store / "cube" / "c").rglob("*") if p.is_file())
    broken = chunk_files[-1]
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"not a zstd frame" * 8)  # a transient read error on one input chunk

    out = tmp_path / "emb.zarr"
    args = ["embed", str(cube_store), "--out", str(out), "--model", str(data["model"]),
            "--tile", str(TILE), "--batch-size", str(BATCH), "--device", "cpu",
            "--scheduler", client.scheduler.address, "--no-progress"]  # fmt: skip
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 1, failed.output
    message = failed.output.strip()
    assert len(message.splitlines()) == 1
    assert "Zstd decompression error" in message and "--resume" in message
    _wait_idle(client)
    assert zarr.open_group(out, mode="r").attrs[STATUS_ATTR] == "incomplete"
    flags = np.asarray(zarr.open_array(out, path=f"{PROGRESS_GROUP}/embedding", mode="r")[...])
    done = {tuple(int(i) for i in idx) for idx in np.argwhere(flags == 1)}
    assert 0 < len(done) < flags.size
    # the Zarr chunk file of each output chunk already written, with its modification time
    stamps = {
        idx: (out / "embedding" / "c" / "/".join(map(str, idx))).stat().st_mtime_ns for idx in done
    }

    # without --resume (or --overwrite) the incomplete store is refused
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already exists" in again.output

    broken.write_bytes(good_bytes)
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert zarr.open_group(out, mode="r").attrs[STATUS_ATTR] == "complete"
    assert_same_chunks(out, data["reference"])
    for idx, stamp in stamps.items():  # chunks written before were not written again
        path = out / "embedding" / "c" / "/".join(map(str, idx))
        assert path.stat().st_mtime_ns == stamp, idx


# ----------------------------------------------------------------------------- S3 via the CLI


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzS3cr3tPr0be"
ACCESS_KEY = "AKIAPROBE7EXAMPLEKEY"


def _s3_objects(s3_server: Any, root: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    return {path: fs.cat_file(path) for path in fs.find(root)}


@pytest.mark.network_server
def test_cli_on_the_cluster_reads_and_writes_s3_and_keeps_credentials_secret(
    client, data, s3_server
):
    bucket = s3_server.make_bucket("eo-distributed")
    options = s3_server.storage_options
    # the top-left quarter of the first scene: 4 chunks (each chunk is a few S3 requests)
    part = {"time": [0], "y": slice(0, 2 * CHUNK), "x": slice(0, 2 * CHUNK)}
    cube = xr.open_zarr(data["cube"])["cube"].isel(part)
    with dask.config.set(scheduler="threads"):
        ec.to_zarr(cube, f"{bucket}/cube.zarr", storage_options=options)
    secret_options = {
        "key": ACCESS_KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
    }
    out = f"{bucket}/emb.zarr"
    env = {k: None for k in s3_server.env}  # credentials only from --storage-options
    run = CliRunner().invoke(
        main,
        ["embed", f"{bucket}/cube.zarr", "--out", out, "--model", str(data["model"]),
         "--tile", str(TILE), "--batch-size", str(BATCH), "--device", "cpu",
         "--scheduler", client.scheduler.address,
         "--storage-options", json.dumps(secret_options)],
        env=env,
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "100% Completed" in run.output  # distributed.progress, shown by default
    assert run.output.strip().splitlines()[-1].startswith("wrote embedding")

    ref = xr.open_zarr(data["reference"])["embedding"].isel(
        time=[0], y=slice(0, 2 * CHUNK // TILE), x=slice(0, 2 * CHUNK // TILE)
    )
    got = xr.open_zarr(out, storage_options=options)
    np.testing.assert_array_equal(got["embedding"].values, ref.values)
    assert got["embedding"].rio.crs == ref.rio.crs

    # the credentials appear nowhere: output, cluster logs, store objects, attributes
    logs = json.dumps([client.get_worker_logs(), client.get_scheduler_logs()], default=str)
    objects = _s3_objects(s3_server, "eo-distributed/emb.zarr")
    assert any(p.endswith("zarr.json") for p in objects) and len(objects) > 4
    attrs = json.dumps([got.attrs, *(v.attrs for v in got.variables.values())], default=str)
    for secret in (SECRET, ACCESS_KEY):
        assert secret not in run.output
        assert secret not in logs
        assert secret not in attrs
        for path, blob in objects.items():
            assert secret.encode() not in blob, path
