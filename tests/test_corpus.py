"""Corpora: build_corpus / plan_corpus / open_corpus, and pretraining streamed from a corpus.

Two catalogues:

* **real Planetary Computer Items** (``../shared/data/stac_items``): the four Sentinel-1 RTC
  slices of one datatake over Libya (2024-04-19 04:58-04:59 UTC, EPSG:32633) and the four
  Sentinel-2 L2A Items of the same day (09:55 UTC), which lie in the Arctic. The two sets do
  not overlap in space, so the tests check that error, then re-site one S2 Item (its projection
  metadata and footprint, nothing else) onto a 1.3 km window of the first S1 slice. Local GeoTIFFs
  are written on the Items' own grids (the S1 slice's 10 m UTM 33N grid; the re-sited S2 grid at
  10 m and 20 m) with known values: a bright feature seen by both sensors, a swath edge, nodata
  blocks and a cloud patch in the scene classification (SCL).
* **a synthetic catalogue of many scenes**: :func:`eo_contrast.synthetic_scene` written once, its
  Items repeated at later dates (time-shifted copies with their own ids): S1 on a grid offset by
  a fraction of a pixel, so S1 is reprojected onto the S2 grid; one S2 date has a nodata strip.

The builds run on Dask's threads, on a two-process LocalCluster, and in a child process that is
killed with SIGKILL mid-build and then resumed.
"""

from __future__ import annotations

import copy
import datetime
import importlib.util
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pystac
import pytest
import shapely
import xarray as xr
import zarr
from pyproj import Transformer
from shapely.geometry import Polygon, mapping

import eo_contrast as ec
from eo_contrast.corpus import CORPUS_FORMAT, build_corpus, open_corpus, plan_corpus
from eo_contrast.datasets.synthetic import S2_L2A_BANDS
from eo_contrast.store import PROGRESS_GROUP, STATUS_ATTR
from eo_contrast.tiling import TileStream


def _stac_test_helpers() -> Any:
    """tests/test_stac.py, for its helpers that write GeoTIFFs on the PC Items' grids."""
    spec = importlib.util.spec_from_file_location(
        "_stac_helpers", Path(__file__).with_name("test_stac.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H = _stac_test_helpers()

CHIP = 32
#: Days between the time-shifted copies of the synthetic scene.
SHIFT_DAYS = 40
COPIES = 2
#: The synthetic S2 grid (128 px, origin 680000, 4220000) holds 3 x 4 lattice chips of 320 m.
LATTICE_X = (680000.0, 680320.0, 680640.0, 680960.0)
LATTICE_Y = (4219840.0, 4219520.0, 4219200.0)
#: Settings of the synthetic builds: two shards per S2/S1 pair of dates (12 chips).
KW: dict[str, Any] = {"chip": CHIP, "chips_per_shard": 6, "one_to_one": False}


def _tree(path: Path) -> dict[str, bytes]:
    """Every file of a store, by relative path: byte-for-byte comparisons."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------------------------
# the synthetic catalogue
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    scene = ec.synthetic_scene(root / "scene", size=128)
    items: dict[str, list[pystac.Item]] = {"s1": [], "s2": []}
    for k in range(COPIES):
        for sensor, out in items.items():
            for item in scene.item_collection(sensor):
                item.id = f"{item.id}-{k}"
                item.datetime = item.datetime + datetime.timedelta(days=SHIFT_DAYS * k)
                out.append(item)
    files = {}
    for sensor, out in items.items():
        files[sensor] = root / f"{sensor}.json"
        pystac.ItemCollection(out).save_object(dest_href=str(files[sensor]))
    return SimpleNamespace(scene=scene, root=root, s1=items["s1"], s2=items["s2"], files=files)


@pytest.fixture(scope="module")
def reference(catalogue):
    """The corpus built on Dask's default (threaded) scheduler."""
    path = catalogue.root / "reference.zarr"
    build_corpus(catalogue.s1, catalogue.s2, path, **KW)
    return path


def test_plan_pairs_lattice_and_metadata(catalogue):
    plan = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, one_to_one=False)
    scene = catalogue.scene
    expected = {
        (s1 + pd.Timedelta(days=SHIFT_DAYS * k), s2 + pd.Timedelta(days=SHIFT_DAYS * k))
        for k in range(COPIES)
        for s1, s2 in scene.expected_pairs_many_to_one
    }
    pairs = plan.groupby(["s1_time", "s2_time"]).size()
    assert set(pairs.index) == expected
    assert (pairs == len(LATTICE_X) * len(LATTICE_Y)).all()
    assert len(plan) == COPIES * 5 * 12
    # corpus order: by S2 time, then north to south and west to east
    assert (np.diff(plan["s2_time"].to_numpy().astype(np.int64)) >= 0).all()
    first = plan[plan["s2_time"] == plan["s2_time"].iloc[0]]
    assert list(zip(first["y0"], first["x0"], strict=True)) == [
        (y, x) for y in LATTICE_Y for x in LATTICE_X
    ]
    assert set(plan["x0"]) == set(LATTICE_X) and set(plan["y0"]) == set(LATTICE_Y)
    np.testing.assert_array_equal(plan["row"], (4220000.0 - plan["y0"]) / 10)
    np.testing.assert_array_equal(plan["col"], (plan["x0"] - 680000.0) / 10)
    lon, lat = Transformer.from_crs(32630, 4326, always_xy=True).transform(
        plan["x0"] + 160, plan["y0"] - 160
    )
    np.testing.assert_allclose(plan["lon"], lon, atol=1e-9)
    np.testing.assert_allclose(plan["lat"], lat, atol=1e-9)
    assert set(plan["crs"]) == {"EPSG:32630"} and set(plan["sample"]) == {-1}
    assert (plan["dt"] == (plan["s2_time"] - plan["s1_time"]).abs()).all()
    by_id = {it.id: it for it in catalogue.s1}
    for ids, t in zip(plan["s1_items"], plan["s1_time"], strict=True):
        assert pd.Timestamp(by_id[ids].datetime).tz_convert(None) == t
    # with one_to_one an S1 pass serves one S2 date at a chip position: 4 pairs a copy
    assert len(plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP)) == COPIES * 4 * 12


def test_corpus_layout_metadata_and_validity(reference, catalogue):
    corpus = open_corpus(reference)
    plan = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, one_to_one=False)
    assert dict(corpus.sizes) == {"chip": 120, "s1_band": 2, "y": 32, "x": 32, "s2_band": 12}
    assert corpus.attrs["eo_contrast_format"] == CORPUS_FORMAT
    assert corpus.attrs[STATUS_ATTR] == "complete" and corpus.attrs["n_chips"] == 120
    assert [str(b) for b in corpus.s2_band.values] == list(S2_L2A_BANDS)
    assert list(corpus.s1_units.values) == ["dB", "dB"] and set(corpus.s2_units.values) == {"1"}
    assert corpus.attrs["chips_per_chunk"] == 6  # 6 chips of 12 bands: well under 1 MiB
    for name in ("s1", "s2"):  # sharded: 6 chips a shard, in one inner chunk
        array = zarr.open_array(str(reference), path=name, mode="r")
        nb = corpus.sizes[f"{name}_band"]
        assert array.shards == (6, nb, 32, 32) and array.chunks == (6, nb, 32, 32)
        assert corpus[name].chunks[0] == (6,) * 20
        assert len(list((reference / name / "c").rglob("*"))) > 0
    assert not (reference / PROGRESS_GROUP).exists()
    for col in ("s2_item", "s1_items", "crs"):
        assert [str(v) for v in corpus[col].values] == list(plan[col])
    for col in ("s2_time", "s1_time", "dt", "x0", "y0", "row", "col", "lon", "lat", "sample"):
        np.testing.assert_array_equal(corpus[col].values, plan[col].to_numpy())
    # the S2 date with a nodata strip: chips over the strip are invalid and hold no pixels
    valid = corpus.valid.values
    nan2 = corpus.s2_nan_fraction.values
    assert int(valid.sum()) == corpus.attrs["n_valid"] == 114
    np.testing.assert_array_equal(valid, nan2 <= 0.1)
    strip = pd.DatetimeIndex(corpus.s2_time.values[~valid])
    assert set(strip.strftime("%m-%d")) <= {"10-26", "12-05"}  # 10-26 and its copy
    assert (nan2[~valid] > 0.5).all() and (corpus.s1_nan_fraction.values == 0).all()
    assert np.isnan(corpus.s2.values[~valid]).all()
    assert np.isnan(corpus.cloud_fraction.values).all()  # no scene classification: NaN rule only


def test_chips_are_the_pairs_of_the_whole_scene(reference, catalogue):
    """Each chip equals ``ec.pair`` on the whole scene, cut at the chip's pixels."""
    corpus = open_corpus(reference)
    s1 = ec.load_stac([it for it in catalogue.s1 if it.id.endswith("-0")])
    s2 = ec.load_stac([it for it in catalogue.s2 if it.id.endswith("-0")])
    pairs = ec.pair(s1, s2, one_to_one=False).compute()
    s2_time = corpus.s2_time.values
    rows, cols = corpus.row.values, corpus.col.values
    checked = 0
    for k in np.flatnonzero(corpus.valid.values & (s2_time < pairs.s2_time.values.max() + 1)):
        p = int(np.flatnonzero(pairs.s2_time.values == s2_time[k])[0])
        assert pairs.s1_time.values[p] == corpus.s1_time.values[k]
        window = {"y": slice(rows[k], rows[k] + CHIP), "x": slice(cols[k], cols[k] + CHIP)}
        np.testing.assert_array_equal(corpus.s2[k].values, pairs.s2[p].isel(window).values)
        np.testing.assert_allclose(
            corpus.s1[k].values, pairs.s1[p].isel(window).values, rtol=0, atol=1e-4
        )
        checked += 1
    assert checked == 57
    # alignment: water seen by S2 (dark NIR) and by S1 (dark VV) lands on the same pixels
    valid = corpus.valid.values
    water_s2 = corpus.s2.sel(s2_band="B08").values[valid] < 0.08
    water_s1 = corpus.s1.sel(s1_band="vv").values[valid] < -17

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    aligned = iou(water_s1, water_s2)
    assert aligned > 0.75
    assert aligned > iou(water_s1[:, 3:], water_s2[:, :-3]) + 0.1
    assert aligned > iou(water_s1[:, :, 3:], water_s2[:, :, :-3]) + 0.1


def test_band_statistics_equal_numpy_over_written_chips(reference):
    corpus = open_corpus(reference)
    valid = corpus.valid.values
    for name in ("s1", "s2"):
        values = corpus[name].values[valid].astype(np.float64)
        per_band = np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)
        np.testing.assert_allclose(corpus[name].attrs["mean"], np.nanmean(per_band, 1), rtol=1e-10)
        np.testing.assert_allclose(corpus[name].attrs["std"], np.nanstd(per_band, 1), rtol=1e-10)
        assert corpus[name].attrs["count"] == np.isfinite(per_band).sum(1).tolist()
    vv, vh = corpus.s1.attrs["mean"]  # dB
    assert -25 < vh < vv < -5


def test_localcluster_build_is_byte_identical(reference, catalogue, tmp_path):
    distributed = pytest.importorskip("distributed")
    path = tmp_path / "cluster.zarr"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        out = build_corpus(catalogue.s1, catalogue.s2, path, **KW)
    assert int(out.valid.sum()) == 114
    assert _tree(path) == _tree(reference)


JOB = """
import sys

import dask
from dask.callbacks import Callback

from eo_contrast.corpus import build_corpus


class Report(Callback):
    def _posttask(self, key, result, dsk, state, worker_id):
        if "_run_unit" in str(key):
            print("unit", flush=True)


s1, s2, store = sys.argv[1:4]
with dask.config.set(scheduler="threads", num_workers=1), Report():
    build_corpus(s1, s2, store, chip=CHIP, chips_per_shard=6, one_to_one=False)
print("done", flush=True)
""".replace("CHIP", str(CHIP))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_resume_after_sigkill_equals_uninterrupted_build(reference, catalogue, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    store = tmp_path / "killed.zarr"
    files = catalogue.files
    child = subprocess.Popen(
        [sys.executable, str(script), str(files["s1"]), str(files["s2"]), str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        units = 0
        assert child.stdout is not None
        for line in child.stdout:
            units += line.strip() == "unit"
            if units == 2:
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    group = zarr.open_group(str(store), mode="r", use_consolidated=False)
    assert group.attrs[STATUS_ATTR] == "incomplete"
    flags = np.asarray(group[f"{PROGRESS_GROUP}/units"][...])
    assert 2 <= int(flags.sum()) < flags.size == 20
    with pytest.raises(ValueError, match=r"is incomplete .* resume=True"):
        open_corpus(store)
    with pytest.raises(FileExistsError, match="already exists: pass mode='w'"):
        build_corpus(catalogue.s1, catalogue.s2, store, **KW)
    with pytest.raises(ValueError, match="planned from other inputs or settings"):
        build_corpus(catalogue.s1, catalogue.s2, store, resume=True, **{**KW, "chip": 16})
    resumed = build_corpus(catalogue.s1, catalogue.s2, store, resume=True, **KW)
    assert int(resumed.valid.sum()) == 114
    assert _tree(store) == _tree(reference)
    # a complete store: resume returns it as it is
    again = build_corpus(catalogue.s1, catalogue.s2, store, resume=True, **KW)
    assert again.attrs["plan_fingerprint"] == resumed.attrs["plan_fingerprint"]


# ------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------

TRAIN = {
    "tile": CHIP,
    "batch_size": 8,
    "width": 8,
    "device": "cpu",
    "progress": False,
    "seed": 3,
    "log_every": 1,
    "prefetch": 1,
    "shuffle_buffer": 24,
}


def test_pretrain_streams_the_corpus_deterministically(reference):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    corpus = open_corpus(reference)
    a = ec.pretrain(str(reference), **TRAIN)
    b = ec.pretrain(str(reference), **TRAIN)
    c = ec.pretrain(corpus, **TRAIN)
    losses = a.history["loss"].tolist()
    assert len(losses) == 114 // 8  # valid chips only, one 32 px tile each
    assert np.isfinite(losses).all()
    assert b.history["loss"].tolist() == losses == c.history["loss"].tolist()
    for name in ("s1", "s2"):  # normalised with the corpus's statistics
        assert a.normalization[name]["mean"] == corpus[name].attrs["mean"]
        assert a.normalization[name]["std"] == corpus[name].attrs["std"]
    assert a.trained_on.startswith("114 corpus chip(s) of 32x32 px")
    assert a.info["tiles"] == "114 of 114 tiles kept"


def test_pretrain_verb_streams_a_corpus_store(reference, tmp_path):
    from click.testing import CliRunner

    from eo_contrast.pipelines.cli import main

    out = tmp_path / "m.safetensors"
    args = ["pretrain", str(reference), "--tile", "32", "--batch-size", "8", "--width", "8",
            "--device", "cpu", "--max-steps", "3", "--out", str(out), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("trained 3 steps")
    model = ec.DualEncoder.load(out)
    corpus = open_corpus(reference)
    assert model.normalization["s2"]["mean"] == corpus["s2"].attrs["mean"]
    assert model.trained_on.startswith("114 corpus chip(s) of 32x32 px")


def test_stream_memory_is_bounded_by_the_shuffle_buffer(reference):
    """Peak memory follows the shuffle buffer, not the amount of data streamed.

    numpy allocations are traced (tracemalloc): streaming every valid chip costs no more than
    streaming half of them with the same small buffer, while a buffer holding the whole corpus
    costs the corpus's size on top.
    """
    corpus = open_corpus(reference)
    valid = corpus.valid.values
    half = valid & (np.cumsum(valid) <= valid.sum() // 2)
    corpus_bytes = int(valid.sum()) * (2 + 12) * CHIP * CHIP * 4

    def stream(keep: np.ndarray, buffer: int) -> tuple[list[int], int]:
        tiles = TileStream(
            corpus, tile=16, batch_size=4, shuffle_buffer=buffer, prefetch=1, keep=keep,
            output="numpy", seed=0,
        )  # fmt: skip
        tracemalloc.start()
        try:
            seen = [i for batch in tiles for i in batch["index"][:, 0].tolist()]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return seen, peak

    stream(half, 8)  # warm-up: imports and caches are not the stream's memory
    seen, small = stream(valid, 8)
    seen_half, small_half = stream(half, 8)
    _, large = stream(valid, 4 * 114)
    # each valid chip once: four 16 px tiles a chip
    assert sorted(seen) == np.repeat(np.flatnonzero(valid), 4).tolist()
    assert sorted(seen_half) == np.repeat(np.flatnonzero(half), 4).tolist()
    assert small < 1.25 * small_half  # twice the data, the same memory
    assert large > corpus_bytes  # a buffer of the whole corpus holds the whole corpus
    assert small < 0.5 * corpus_bytes


# ------------------------------------------------------------------------------------------
# sampling rules (plans only)
# ------------------------------------------------------------------------------------------


def test_sampling_points_geometries_random_and_region(catalogue):
    to_ll = Transformer.from_crs(32630, 4326, always_xy=True)
    # two points off the lattice, one far away
    xy = [(680333.0, 4219471.0), (680900.0, 4219000.0)]
    points = [to_ll.transform(x, y) for x, y in xy] + [(10.0, 45.0)]
    plan = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, sample=points, one_to_one=False)
    assert sorted(set(plan["sample"])) == [0, 1]
    assert (plan.groupby("sample").size() == COPIES * 5).all()  # one chip per pair of dates
    for k, (x, y) in enumerate(xy):
        rows = plan[plan["sample"] == k]
        cx, cy = rows["x0"] + 160, rows["y0"] - 160
        assert (np.abs(cx - x) <= 5).all() and (np.abs(cy - y) <= 5).all()
    # a polygon: the lattice chips centred inside it
    corners = [(680000, 4219840), (680640, 4219840), (680640, 4219200), (680000, 4219200)]
    poly = Polygon([to_ll.transform(x, y) for x, y in corners])
    plan = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, sample=[mapping(poly)])
    assert set(plan["x0"]) == {680000.0, 680320.0} and set(plan["y0"]) == set(LATTICE_Y[:2])
    assert len(plan) == COPIES * 4 * 4 and set(plan["sample"]) == {0}
    # random points: seeded, inside the region
    region = (-0.945, 38.098, -0.932, 38.108)
    one = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, sample=20, region=region, seed=1)
    two = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, sample=20, region=region, seed=1)
    other = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, sample=20, region=region, seed=2)
    pd.testing.assert_frame_equal(one, two)
    assert not one[["x0", "y0"]].equals(other[["x0", "y0"]])
    assert set(one["sample"]) <= set(range(20)) and len(set(one["sample"])) > 10
    inside = shapely.contains_xy(shapely.box(*region).buffer(2e-4), one["lon"], one["lat"])
    assert inside.all()
    # a region limits the grid
    west = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP, region=(-1.0, 38.0, -0.9398, 38.2))
    assert set(west["x0"]) == {680000.0, 680320.0}


class _Search:
    """The part of a ``pystac_client.ItemSearch`` the corpus uses: ``item_collection()``."""

    def __init__(self, items: list[pystac.Item]) -> None:
        self._items = items

    def item_collection(self) -> pystac.ItemCollection:
        return pystac.ItemCollection(self._items)


def test_items_from_searches_files_and_lists_plan_alike(catalogue):
    from_lists = plan_corpus(catalogue.s1, catalogue.s2, chip=CHIP)
    from_files = plan_corpus(catalogue.files["s1"], catalogue.files["s2"], chip=CHIP)
    from_search = plan_corpus(_Search(catalogue.s1), _Search(catalogue.s2), chip=CHIP)
    pd.testing.assert_frame_equal(from_lists, from_files)
    pd.testing.assert_frame_equal(from_lists, from_search)


# ------------------------------------------------------------------------------------------
# real Planetary Computer Items
# ------------------------------------------------------------------------------------------

S1_PREFIX = "https://sentinel1euwestrtc.blob.core.windows.net/sentinel1-grd-rtc/"
EPSG = 32633
#: Upper-left corner of the re-sited S2 grid: on the 320 m chip lattice, inside the first slice.
X0, Y0 = 516160.0, 3359680.0
SIZE = 128  # S2 window edge in 10 m pixels: 4 x 4 lattice chips
DATA_COLS = 96  # the S2 footprint (a swath edge) covers the western 3 chip columns
S2_BANDS = ["B02", "B03", "B04", "B08", "B11"]
FEATURE = (slice(10, 16), slice(20, 26))  # pixels of chip (0, 0) bright in S2 B08 and S1 VV
S2_NAN_CHIP = (3, 2)  # half nodata in S2
S1_NAN_CHIP = (3, 0)  # 7 rows of S1 nodata
CLOUD_CHIP = (1, 1)  # under cloud (SCL 9)
THIN_CLOUD_CHIP = (0, 2)  # 2 of 32 rows under cloud (SCL 8): valid


def _lonlat_polygon(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    ring = shapely.segmentize(shapely.box(x0, y1, x1, y0), 20.0)
    tr = Transformer.from_crs(EPSG, 4326, always_xy=True)
    return shapely.transform(ring, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _resite(item: dict, folder: Path, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """The S2 Item moved onto the S1 window (projection and footprint), with local rasters."""
    item = copy.deepcopy(item)
    item["properties"]["proj:epsg"] = EPSG
    extent = SIZE * 10.0
    for asset in item["assets"].values():
        if "proj:transform" in asset:
            res = asset["proj:transform"][0]
            asset["proj:transform"] = [res, 0.0, X0, 0.0, -res, Y0]
            asset["proj:shape"] = [int(extent / res)] * 2
            asset["proj:bbox"] = [X0, Y0 - extent, X0 + extent, Y0]
    footprint = _lonlat_polygon(X0, Y0, X0 + DATA_COLS * 10.0, Y0 - extent)
    item["geometry"] = mapping(footprint)
    item["bbox"] = list(footprint.bounds)
    href_map, dn = {}, {}
    for key in [*S2_BANDS, "SCL"]:
        res = item["assets"][key]["proj:transform"][0]
        n, f = int(extent / res), int(10 / res * 32)  # pixels a side, pixels a chip
        if key == "SCL":
            data = np.full((n, n), 4, np.uint8)  # vegetation
            r, c = CLOUD_CHIP
            data[r * f : (r + 1) * f, c * f : (c + 1) * f] = 9  # cloud, high probability
            r, c = THIN_CLOUD_CHIP
            data[r * f, c * f : (c + 1) * f] = 8  # one 20 m row: 2 of 32 rows of 10 m
        else:
            data = rng.integers(1100, 4000, (n, n)).astype(np.uint16)
            if key == "B08":
                data[FEATURE] = 9000
            if res == 10:
                r, c = S2_NAN_CHIP
                data[r * 32 :, c * 32 : c * 32 + 16] = 0  # half the chip
                data[64 + 8 : 64 + 16, 8:16] = 0  # 64 px of chip (2, 0): valid
        data[:, int(DATA_COLS * 10 / res) :] = 0  # beyond the swath edge
        path = folder / "s2" / f"{key}.tif"
        H._write(path, EPSG, X0, Y0, res, data)
        href_map[item["assets"][key]["href"]] = str(path)
        dn[key] = data
    return item, href_map, dn


@pytest.fixture(scope="module")
def pc(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pc")
    s1_items = H._json(shared_data, H.S1_FILE)
    s2_items = H._json(shared_data, H.S2_FILE)
    rng = np.random.default_rng(7)
    moved, href_map, dn = _resite(s2_items[0], folder, rng)
    # S1: the first slice's own grid (10 m, UTM 33N), a window 32 px wider on every side
    first = s1_items[0]
    lin = {}
    for pol in ("vv", "vh"):
        data = rng.uniform(0.001, 0.8, (SIZE + 64, SIZE + 64)).astype(np.float32)
        if pol == "vv":
            data[32 + FEATURE[0].start : 32 + FEATURE[0].stop, 32 + 20 : 32 + 26] = 1.0  # 0 dB
        r, c = S1_NAN_CHIP
        data[32 + r * 32 : 32 + r * 32 + 7, 32 + c * 32 : 32 + (c + 1) * 32] = H.NODATA_S1
        href = first["assets"][pol]["href"]
        assert href.startswith(S1_PREFIX)
        H._write(folder / "s1" / href[len(S1_PREFIX) :], EPSG, X0 - 320, Y0 + 320, 10.0, data,
                 nodata=H.NODATA_S1)  # fmt: skip
        lin[pol] = data[32 : 32 + SIZE, 32 : 32 + SIZE]
    href_map[S1_PREFIX] = str(folder / "s1") + "/"
    corpus = build_corpus(
        s1_items,
        [moved, *s2_items[1:]],  # the other three stay in the Arctic: no S1 there
        folder / "corpus.zarr",
        chip=CHIP,
        s2_bands=S2_BANDS,
        href_map=href_map,
        chips_per_shard=5,
    )
    return SimpleNamespace(
        corpus=corpus, s1=s1_items, s2=s2_items, moved=moved, dn=dn, lin=lin, folder=folder
    )


def _chip(corpus: xr.Dataset, r: int, c: int) -> int:
    where = (corpus.row.values == r * 32) & (corpus.col.values == c * 32)
    assert where.sum() == 1
    return int(np.flatnonzero(where)[0])


def test_real_items_plan_and_metadata(pc):
    corpus = pc.corpus
    assert corpus.sizes["chip"] == 12  # 4 rows x the 3 chip columns inside the footprint
    assert sorted(zip(corpus.row.values, corpus.col.values, strict=True)) == [
        (r * 32, c * 32) for r in range(4) for c in range(3)
    ]
    assert set(corpus.s2_item.values) == {pc.moved["id"]}
    assert set(corpus.s1_items.values) == {pc.s1[0]["id"]}  # the slice covering the window
    s1_time = pd.Timestamp(pc.s1[0]["properties"]["datetime"]).tz_localize(None)
    s2_time = pd.Timestamp(pc.moved["properties"]["datetime"]).tz_localize(None)
    assert (corpus.s1_time.values == s1_time.to_datetime64()).all()
    assert (corpus.s2_time.values == s2_time.to_datetime64()).all()
    assert (corpus.dt.values == (s2_time - s1_time).to_timedelta64()).all()
    assert str(pd.Timedelta(corpus.dt.values[0])) == "0 days 04:56:38.587294"
    assert set(corpus.crs.values) == {"EPSG:32633"} and set(corpus.res.values) == {10.0}
    np.testing.assert_array_equal(corpus.x0.values, X0 + corpus.col.values * 10.0)
    np.testing.assert_array_equal(corpus.y0.values, Y0 - corpus.row.values * 10.0)
    lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(
        corpus.x0.values + 160, corpus.y0.values - 160
    )
    np.testing.assert_allclose(corpus.lon.values, lon, atol=1e-9)
    np.testing.assert_allclose(corpus.lat.values, lat, atol=1e-9)
    assert 15.1 < lon.min() < lon.max() < 15.25 and 30.3 < lat.min() < lat.max() < 30.4
    assert [str(b) for b in corpus.s2_band.values] == S2_BANDS


def test_real_items_nan_and_cloud_rules(pc):
    corpus = pc.corpus
    assert int(corpus.valid.sum()) == corpus.attrs["n_valid"] == 9
    cloud = _chip(corpus, *CLOUD_CHIP)
    assert not corpus.valid.values[cloud] and corpus.cloud_fraction.values[cloud] == 1.0
    thin = _chip(corpus, *THIN_CLOUD_CHIP)
    assert corpus.valid.values[thin] and corpus.cloud_fraction.values[thin] == 2 / 32
    s2_nan = _chip(corpus, *S2_NAN_CHIP)
    assert not corpus.valid.values[s2_nan] and corpus.s2_nan_fraction.values[s2_nan] == 0.5
    s1_nan = _chip(corpus, *S1_NAN_CHIP)
    assert not corpus.valid.values[s1_nan]
    assert 7 / 32 <= corpus.s1_nan_fraction.values[s1_nan] <= 9 / 32  # bilinear: +1 row at most
    small = _chip(corpus, 2, 0)
    assert corpus.valid.values[small] and corpus.s2_nan_fraction.values[small] == 64 / 1024
    others = np.ones(12, bool)
    others[[cloud, thin]] = False
    assert (corpus.cloud_fraction.values[others] == 0).all()
    assert np.isnan(corpus.s1.values[~corpus.valid.values]).all()


def test_real_items_values_and_alignment(pc):
    corpus = pc.corpus
    k = _chip(corpus, 0, 0)
    dn = pc.dn["B04"][:32, :32].astype(np.float32)
    expected = np.where(dn == 0, np.nan, dn * np.float32(1e-4) - np.float32(0.1))  # baseline 05.10
    np.testing.assert_allclose(corpus.s2.sel(s2_band="B04")[k].values, expected, rtol=1e-6)
    b11 = pc.dn["B11"][:16, :16].astype(np.float32) * np.float32(1e-4) - np.float32(0.1)
    np.testing.assert_allclose(  # 20 m band on the 10 m grid, nearest neighbour
        corpus.s2.sel(s2_band="B11")[k].values, np.kron(b11, np.ones((2, 2))), rtol=1e-6
    )
    for pol in ("vv", "vh"):
        np.testing.assert_allclose(
            corpus.s1.sel(s1_band=pol)[k].values,
            10 * np.log10(pc.lin[pol][:32, :32].astype(np.float64)),
            rtol=0, atol=1e-4,
        )  # fmt: skip
    # the feature both sensors see is on the same chip pixels
    bright_s2 = corpus.s2.sel(s2_band="B08")[k].values > 0.75  # DN 9000: 0.8
    bright_s1 = np.abs(corpus.s1.sel(s1_band="vv")[k].values) < 1e-5
    assert bright_s2.sum() == 36
    np.testing.assert_array_equal(bright_s1, bright_s2)
    np.testing.assert_array_equal(np.argwhere(bright_s2).min(0), [10, 20])


def test_real_items_that_do_not_overlap(pc):
    with pytest.raises(ValueError, match="no S1 footprint overlaps an S2 footprint"):
        plan_corpus(pc.s1, pc.s2, chip=CHIP)
    with pytest.raises(ValueError, match="no S1 pass is within max_dt=0 days 01:00:00"):
        plan_corpus(pc.s1, [pc.moved], chip=CHIP, max_dt="1h")


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chip": 4}, ValueError, "chip must be an int >= 8"),
        ({"max_nan_fraction": 1.5}, ValueError, "max_nan_fraction must be"),
        ({"max_cloud_fraction": -0.1}, ValueError, "max_cloud_fraction must be a fraction"),
        ({"s1_bands": ["B04"]}, ValueError, "are not Sentinel-1 polarisations"),
        ({"s2_bands": ["vv"]}, ValueError, "are not Sentinel-2 band names"),
        ({"max_dt": 3}, TypeError, "plain number"),
        ({"max_dt": "1h"}, ValueError, "no S1 pass is within max_dt"),
        ({"sample": "everywhere"}, ValueError, "is not understood"),
        ({"sample": 0}, ValueError, "must be >= 1"),
        ({"sample": [(500.0, 1.0)]}, ValueError, r"is not \(lon, lat\) in degrees"),
        ({"region": "x"}, TypeError, "region must be a shapely geometry"),
        ({"region": (1.0, 1.0, 0.0, 0.0)}, ValueError, "is not \\(min lon"),
        ({"mode": "a"}, ValueError, "mode='a'"),
        ({"mode": "w", "resume": True}, ValueError, "pass one"),
        ({"chips_per_shard": 0}, ValueError, "chips_per_shard must be an int >= 1"),
    ],
)
def test_bad_arguments(catalogue, tmp_path, kwargs, error, match):
    store = tmp_path / "bad.zarr"
    with pytest.raises(error, match=match):
        build_corpus(catalogue.s1, catalogue.s2, store, **{"chip": CHIP, **kwargs})
    assert not store.exists()


def test_bad_inputs(catalogue, reference, tmp_path):
    with pytest.raises(ValueError, match=r"S1 item .* lacks bands \[.vv., .vh.\]"):
        plan_corpus(catalogue.s2, catalogue.s2, chip=CHIP)  # S2 given as S1
    with pytest.raises(ValueError, match="holds no STAC Item"):
        plan_corpus([], catalogue.s2)
    with pytest.raises(ValueError, match="same Item id twice"):
        plan_corpus(catalogue.s1, catalogue.s2 + catalogue.s2[:1])
    cube = ec.load_stac(catalogue.s1[:1]).isel(time=0)
    ec.to_zarr(cube.rename("vv"), tmp_path / "cube.zarr")
    with pytest.raises(ValueError, match="not a corpus"):
        open_corpus(tmp_path / "cube.zarr")
    with pytest.raises(ValueError, match="not a corpus written by build_corpus"):
        build_corpus(catalogue.s1, catalogue.s2, tmp_path / "cube.zarr", resume=True, **KW)
    with pytest.raises(FileNotFoundError, match="no corpus at"):
        open_corpus(tmp_path / "missing.zarr")
    corpus = open_corpus(reference)
    with pytest.raises(ValueError, match="keep must be booleans, one per index of 'chip'"):
        TileStream(corpus, tile=CHIP, keep=np.ones(3, bool), output="numpy")
    with pytest.raises(KeyError, match="keep='nope' names no coordinate"):
        TileStream(corpus, tile=CHIP, keep="nope", output="numpy")
    with pytest.raises(ValueError, match="storage_options are for a corpus given as a path"):
        ec.pretrain(corpus, storage_options={"anon": True}, **TRAIN)


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------


def test_cli_corpus(catalogue, reference, tmp_path):
    from click.testing import CliRunner

    from eo_contrast.pipelines.cli.common import OneLineErrors
    from eo_contrast.pipelines.cli.corpus import corpus_cmd

    group = OneLineErrors(commands={"corpus": corpus_cmd})
    s1, s2 = str(catalogue.files["s1"]), str(catalogue.files["s2"])
    runner = CliRunner()
    result = runner.invoke(group, ["corpus", s1, s2, "--chip", "32", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        result.output.strip()
        == f"would write {COPIES * 4 * 12} chips from {COPIES * 4} S2 scene(s)"
    )
    result = runner.invoke(group, ["corpus", s1, s2, "--out", str(reference), "--chip", "32"])
    assert result.exit_code == 2 and "already exists: pass --overwrite" in result.output
    result = runner.invoke(group, ["corpus", s1, s2, "--out", "x.zarr", "--grid", "--random", "3"])
    assert (
        result.exit_code == 2 and "give one sampling rule, not --grid and --random" in result.output
    )
    # one lattice chip, given as a CSV point: one chip per pair of dates
    to_ll = Transformer.from_crs(32630, 4326, always_xy=True)
    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n{},{}\n".format(*to_ll.transform(680480.0, 4219680.0)))
    out = tmp_path / "cli.zarr"
    args = ["corpus", s1, s2, "--out", str(out), "--chip", "32", "--points", str(points),
            "--chips-per-shard", "4", "--no-progress"]  # fmt: skip
    result = runner.invoke(group, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {COPIES * 4} chips ({COPIES * 4} valid)")
    built = open_corpus(out)
    assert set(built.x0.values) == {680320.0} and set(built.y0.values) == {4219840.0}
    assert set(built["sample"].values) == {0}
    result = runner.invoke(group, [*args, "--resume"])  # complete already: nothing to do
    assert result.exit_code == 0 and "wrote 8 chips" in result.output


@pytest.mark.parametrize(
    ("chips_per_shard", "chip", "n", "shard", "inner"),
    [
        (None, 32, 21120, 1155, 21),  # 64 MiB of 14 bands, a multiple of 21 chips of 12 bands
        (None, 256, 10_000, 18, 1),  # one 3 MiB chip per inner chunk
        (None, 32, 12, 12, 12),  # a small corpus: one shard, one inner chunk
        (1170, 32, 21120, 1170, 18),  # the largest divisor of 1170 within 21
        (97, 32, 21120, 97, 1),  # a prime shard: one chip per inner chunk
    ],
)
def test_inner_chunks_are_a_few_chips_and_divide_the_shard(
    chips_per_shard: int | None, chip: int, n: int, shard: int, inner: int
) -> None:
    from eo_contrast.corpus import _chunk_chips, _shard_chips

    got = _shard_chips(chips_per_shard, chip, 14, n, 12)
    assert got == shard
    assert _chunk_chips(got, chip, 12) == inner
    assert got % inner == 0
    assert inner * 12 * chip * chip * 4 <= 2**20 or inner == 1
