"""The allocator settings of :mod:`eo_contrast.runtime`, checked in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from eo_contrast import runtime

pytestmark = pytest.mark.skipif(runtime._glibc() is None, reason="glibc's mallopt only")

#: Allocate, touch and free a 4 MiB buffer many times; count the page faults before and after
#: tune_allocator() in the same process.
PROBE = """
import json, resource
import numpy as np
from eo_contrast.runtime import tune_allocator

def faults(n=200):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones(1 << 20, dtype=np.float32)  # 4 MiB, every page written
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

before = faults()
tuned = tune_allocator()
faults()  # the first round fills the heap once
after = faults()
print(json.dumps({"before": before, "tuned": tuned, "after": after, "again": tune_allocator()}))
"""


def _probe(**env: str) -> dict[str, object]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "EO_CONTRAST_M"))}
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dask_style_trim_threshold_makes_every_buffer_a_fresh_mapping_until_tuned() -> None:
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: each 4 MiB buffer is then
    # a new mmap, hundreds of page faults every time (1024 pages, fewer faults where the kernel
    # maps several at once); after tune_allocator() the heap reuses it
    res = _probe(MALLOC_TRIM_THRESHOLD_="65536")
    assert res["tuned"] is True and res["again"] is True
    assert res["before"] > 200 * 100
    assert res["after"] < 200 * 10


def test_left_alone_when_asked_or_when_the_environment_chose() -> None:
    res = _probe(MALLOC_TRIM_THRESHOLD_="65536", EO_CONTRAST_MALLOC="keep")
    assert res["tuned"] is False
    assert res["after"] > 200 * 100  # still a fresh mapping per buffer
    res = _probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert res["tuned"] is False


def test_embed_tunes_the_process_that_runs_the_model(tmp_path) -> None:
    code = (
        "import numpy as np, xarray as xr, eo_contrast as ec\n"
        "from eo_contrast import runtime\n"
        "assert not runtime.allocator_tuned()\n"
        "cube = xr.DataArray(np.full((2, 32, 32), -15.0, 'float32'), dims=('band', 'y', 'x'),\n"
        "    coords={'band': ['vv', 'vh'], 'y': np.arange(32.0), 'x': np.arange(32.0)})\n"
        "model = ec.DualEncoder({'s1': ['vv', 'vh']}, width=8, seed=0)\n"
        "ec.embed(cube, model, tile=32, device='cpu').compute(scheduler='sync')\n"
        "print(runtime.allocator_tuned())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "True"
