"""Faults: processes killed (SIGKILL) at random points lose nothing.

* ``embed -> to_zarr`` is killed :data:`KILLS_EMBED` times at seeded random points of its task
  graph (each run resumes the previous one); ``to_zarr(..., resume=True)`` then finishes it and
  the store is byte-for-byte the store of an uninterrupted run.
* ``pretrain`` with checkpoints is killed :data:`KILLS_PRETRAIN` times at seeded random moments;
  every checkpoint left in the folder loads, and resuming from the folder gives the same loss
  curve and weights as an uninterrupted run (CPU).

The kills run in child processes (a helper script written to the test's folder), so what is
killed is a real process with threads, open files and half-written chunks.
:data:`KILLS_SURVIVED` is the figure quoted by ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

torch = pytest.importorskip("torch")

import eo_contrast as ec  # noqa: E402
from eo_contrast.models import DualEncoder, read_checkpoint  # noqa: E402
from eo_contrast.store import STATUS_ATTR  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
#: Seed of the kill points.
SEED = 20240301
#: SIGKILLs delivered to ``embed -> to_zarr`` runs.
KILLS_EMBED = 3
#: SIGKILLs delivered to ``pretrain`` runs.
KILLS_PRETRAIN = 2
#: Kills survived with nothing lost (quoted in docs/reliability.md).
KILLS_SURVIVED = KILLS_EMBED + KILLS_PRETRAIN
TILE = 16
TRAIN = {
    "tile": TILE,
    "batch_size": 8,
    "epochs": 2,
    "device": "cpu",
    "progress": False,
    "seed": 3,
    "width": 8,
    "log_every": 1,
}

JOB = '''
"""A job the test kills: embed -> to_zarr, or pretrain with checkpoints."""
import sys

import dask
import torch
import xarray as xr
from dask.callbacks import Callback

torch.set_num_threads(1)

import eo_contrast as ec


class Report(Callback):
    """Says how many tasks each computation has, then one line per finished task."""

    def _start(self, dsk):
        print(f"tasks {len(dsk)}", flush=True)

    def _posttask(self, key, result, dsk, state, worker_id):
        print("task", flush=True)


mode = sys.argv[1]
if mode == "embed":
    source, model, store = sys.argv[2:5]
    emb = ec.embed(xr.open_zarr(source)["cube"], model, tile=TILE, device="cpu")
    with dask.config.set(scheduler="threads", num_workers=2), Report():
        ec.to_zarr(emb, store, resume=True)
elif mode == "pretrain":
    import json
    from pathlib import Path

    source, folder = sys.argv[2:4]
    kwargs = json.loads(sys.argv[4])
    resume = folder if any(Path(folder).glob("step-*.safetensors")) else None
    print("ready", flush=True)
    ec.pretrain(
        xr.open_zarr(source), checkpoint_dir=folder, checkpoint_every=1, keep_checkpoints=3,
        resume=resume, **kwargs,
    )
print("done", flush=True)
'''.replace("TILE", str(TILE))


def _script(tmp: Path) -> Path:
    path = tmp / "job.py"
    path.write_text(JOB)
    return path


def _start(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(_script(tmp)), *args],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _killed(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == -signal.SIGKILL, f"the job was not killed mid-run:\n{err[-3000:]}"


# ------------------------------------------------------------------------------------------
# embed -> to_zarr
# ------------------------------------------------------------------------------------------


def _s1(n: int = 96) -> xr.DataArray:
    rng = np.random.default_rng(0)
    values = rng.normal(-14.0, 4.0, (2, 2, n, n)).astype(np.float32)
    cube = xr.DataArray(
        values,
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.to_datetime(["2024-03-01", "2024-03-13"]).values,
            "band": ["vv", "vh"],
            "units": ("band", ["dB", "dB"]),
            "y": 4_500_000.0 - 10.0 * (np.arange(n) + 0.5),
            "x": 500_000.0 + 10.0 * (np.arange(n) + 0.5),
        },
    )
    cube[:, :, :32, 64:] = np.nan  # an all-NaN chunk: NaN embeddings are data too
    return cube.rio.write_crs("EPSG:32630").chunk({"time": 1, "y": 32, "x": 32})


def _files(store: Path) -> dict[str, bytes]:
    """Every file of a store, by relative path (zarr's own ``*.partial`` temporaries aside)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and not p.name.endswith(".partial")
    }


def _kill_embed_at_random_task(
    source: Path, model: Path, store: Path, tmp: Path, rng: random.Random
) -> int:
    """Run the embed job and SIGKILL it after a random number of its write's tasks."""
    proc = _start(["embed", str(source), str(model), str(store)], tmp)
    assert proc.stdout is not None
    target, done = None, 0
    for line in proc.stdout:
        if line.startswith("tasks") and target is None and int(line.split()[1]) > 2:
            # the chunk-by-chunk write: kill somewhere in its first half (the pool's threads
            # run ahead of these reports, so a later point may land after the write finished)
            target = rng.randint(1, max(1, int(line.split()[1]) // 2))
        elif line.startswith("task") and target is not None:
            done += 1
            if done >= target:
                break
    time.sleep(rng.uniform(0.0, 0.02))
    _killed(proc)
    return done


def test_sigkill_during_embed_to_zarr_then_resume_is_bit_for_bit(tmp_path: Path) -> None:
    source = tmp_path / "s1.zarr"
    ec.to_zarr(_s1(), source)
    model = DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0).save(tmp_path / "m.safetensors")

    def embedding() -> xr.DataArray:
        return ec.embed(xr.open_zarr(source)["cube"], model, tile=TILE, device="cpu")

    reference = tmp_path / "reference.zarr"
    ec.to_zarr(embedding(), reference)  # uninterrupted

    store = tmp_path / "killed.zarr"
    rng = random.Random(SEED)
    kills = 0
    for _ in range(KILLS_EMBED):
        _kill_embed_at_random_task(source, model, store, tmp_path, rng)
        kills += 1
        # killed mid-write: nothing looks complete
        assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"
    assert kills == KILLS_EMBED

    out = ec.to_zarr(embedding(), store, resume=True)
    assert out.attrs.get(STATUS_ATTR, "complete") == "complete"
    assert xr.open_zarr(store).attrs[STATUS_ATTR] == "complete"
    want, got = _files(reference), _files(store)
    assert sorted(got) == sorted(want)  # same arrays, chunks and metadata documents
    different = [name for name in want if got[name] != want[name]]
    assert not different, f"files differ from the uninterrupted run: {different[:5]}"
    values = xr.open_zarr(store)["embedding_s1"].values
    assert np.isnan(values[:, :, :2, 4:]).all() and np.isfinite(values[:, :, 2:, :]).all()


# ------------------------------------------------------------------------------------------
# pretraining
# ------------------------------------------------------------------------------------------


def _pairs(n: int = 64) -> xr.Dataset:
    rng = np.random.default_rng(1)
    coords = {
        "y": 4_500_000.0 - 10.0 * (np.arange(n) + 0.5),
        "x": 500_000.0 + 10.0 * (np.arange(n) + 0.5),
    }
    land = rng.uniform(0, 1, (2, 1, n, n)) > 0.5
    s1 = xr.DataArray(
        np.where(land, -9.0, -21.0) + rng.normal(0, 1.5, (2, 2, n, n)),
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.to_datetime(["2024-03-01", "2024-03-13"]).values,
            "band": ["vv", "vh"],
            **coords,
        },
    ).astype(np.float32)
    bands = ["B02", "B03", "B04", "B08"]
    s2 = xr.DataArray(
        np.where(land, 0.25, 0.03) + rng.normal(0, 0.02, (2, 4, n, n)),
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.to_datetime(["2024-03-02", "2024-03-14"]).values,
            "band": bands,
            **coords,
        },
    ).astype(np.float32)
    crs = "EPSG:32630"
    return ec.pair(s1.rio.write_crs(crs), s2.rio.write_crs(crs))


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*.safetensors"))


def _kill_pretrain_after_random_wait(
    source: Path, folder: Path, tmp: Path, rng: random.Random
) -> None:
    """Run the pretrain job; SIGKILL it once it wrote a random number of new checkpoints."""
    import json

    before = {p.name for p in _checkpoints(folder)}
    want = rng.randint(1, 2)
    proc = _start(["pretrain", str(source), str(folder), json.dumps(TRAIN)], tmp)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        new = {p.name for p in _checkpoints(folder)} - before
        if len(new) >= want:
            break
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.05))  # into the next update or the next checkpoint write
    _killed(proc)


def test_sigkill_during_pretrain_keeps_loadable_checkpoints_and_the_loss_curve(
    tmp_path: Path,
) -> None:
    source = tmp_path / "pairs.zarr"
    ec.to_zarr(_pairs(), source)
    pairs = xr.open_zarr(source)
    reference = ec.pretrain(pairs, **TRAIN)  # uninterrupted, no checkpoints

    folder = tmp_path / "ckpt"
    folder.mkdir()
    rng = random.Random(SEED + 1)
    kills = 0
    for _ in range(KILLS_PRETRAIN):
        _kill_pretrain_after_random_wait(source, folder, tmp_path, rng)
        kills += 1
        found = _checkpoints(folder)
        assert found, "the job was killed before its first checkpoint"
        for path in found:  # never a truncated checkpoint: every one loads
            tensors, meta = read_checkpoint(path)
            assert meta["state"]["step"] == int(path.stem.split("-")[1]) and tensors
        leftovers = [p.name for p in folder.iterdir() if p not in found]
        assert all(n.startswith(".step-") and n.endswith(".tmp") for n in leftovers), leftovers
    assert kills == KILLS_PRETRAIN

    resumed = ec.pretrain(pairs, checkpoint_dir=folder, checkpoint_every=1, resume=folder, **TRAIN)
    cols = ["step", "epoch", "loss", "lr", "temperature"]
    pd.testing.assert_frame_equal(resumed.history[cols], reference.history[cols])
    ref_state, got_state = reference.state_dict(), resumed.state_dict()
    assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # cleaned up


# ------------------------------------------------------------------------------------------
# states a kill can leave inside to_zarr's metadata step
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["group without status", "status without arrays"])
def test_kill_inside_the_metadata_step_resumes(state: str, tmp_path: Path) -> None:
    """The two states a SIGKILL at the very start of to_zarr leaves (seen with real kills)."""
    cube = _s1(64)
    store = tmp_path / "early.zarr"
    attrs = {} if state == "group without status" else {STATUS_ATTR: "incomplete"}
    zarr.create_group(store, zarr_format=3, attributes=attrs)
    out = ec.to_zarr(cube, store, resume=True)
    assert xr.open_zarr(store).attrs[STATUS_ATTR] == "complete"
    assert out.values.tobytes() == cube.values.tobytes()


def test_reliability_page_quotes_the_kills() -> None:
    page = (REPO / "docs" / "reliability.md").read_text()
    assert f"{KILLS_SURVIVED} kills" in page
    assert f"{KILLS_EMBED} during `embed -> to_zarr`" in page
    assert f"{KILLS_PRETRAIN} during `pretrain`" in page
    assert os.path.basename(__file__) in page
