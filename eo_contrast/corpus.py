"""Pretraining corpora: co-registered S1/S2 chips cut from STAC scenes, sharded in Zarr, with Dask.

:func:`build_corpus` turns two STAC searches (Sentinel-1 and Sentinel-2 Items) and a sampling rule
into a Zarr (format 3) corpus of chip pairs; :func:`open_corpus` opens one; :func:`plan_corpus`
says which chips a build would cut, without reading a pixel.

How a build runs:

1. **Plan** (on the client, from STAC metadata only). Sentinel-1 Items are grouped into passes
   (slices of one datatake: same platform and orbit direction, consecutive times less than
   10 minutes apart); Sentinel-2 Items are scenes, grouped by location (MGRS tile, else CRS and
   grid). Candidate chips lie on a lattice of ``chip`` x ``chip`` pixels anchored at the CRS origin
   of each scene's grid (so the chips of every date of a tile coincide), inside the sampling
   geometries (or centred on sampling points), with at least ``1 - max_nan_fraction`` of their area
   inside the S2 footprint and the S1 footprint. Per chip position, S2 dates are matched to S1
   passes with :func:`eo_contrast.pairing.match_times` (nearest within ``max_dt``, an S1 pass
   serving at most one S2 date with ``one_to_one``). Chips are sorted by S2 time, S2 item, a coarse
   spatial block, then row and column: the order depends on the inputs only.
2. **Write** (a Dask graph, one task per shard of chips). Each task loads its windows with
   :func:`eo_contrast.load_stac`, puts S1 on the S2 grid with :func:`eo_contrast.pair` (bilinear
   reprojection through odc-geo), cuts the chips, measures their NaN and cloud fractions and
   writes its shard, its per-band statistics and a completion flag. Nothing but the task's own
   arguments is used, so the graph runs unchanged on threads, a LocalCluster or a multi-node
   cluster writing to object storage.
3. **Finish**: per-chip validity and fractions are written, per-band statistics are combined
   (count, mean and sum of squared deviations per shard, merged in shard order), the progress
   records are dropped and the store is marked complete.

Every planned chip has a place in the corpus. Chips that fail the NaN or cloud rule keep their
metadata and ``valid = False``, and their pixels are NaN (an inner chunk of rejected chips only
costs no bytes). The chip count is thus known before any pixel is read, which is what shards, region
writes and resumable runs need; the price is a ``valid`` mask to apply when reading (the tile
stream and :func:`eo_contrast.pretrain` apply it). A two-pass build (read everything to decide,
then read again to write) would double the reads; a staging copy compacted at the end would
double the writes.

Examples
--------
>>> from eo_contrast.corpus import CLOUD_CLASSES, CORPUS_FORMAT
>>> CORPUS_FORMAT, CLOUD_CLASSES
('eo-contrast.corpus', (3, 8, 9, 10))
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eo_contrast._io.remote import store_state
from eo_contrast._io.resumable import (
    PROGRESS_GROUP,
    STATUS_ATTR,
    check_target,
    create_flags,
    finish,
    progress_group,
    read_flags,
    record_path,
    run_tasks,
    set_flag,
)
from eo_contrast._io.urls import store_url, zarr_kw
from eo_contrast.cube import S1_BANDS, S2_BANDS, canonical_band_name
from eo_contrast.pairing import match_times, parse_max_dt
from eo_contrast.stac import band_recipes, footprint, nominal_datetime

__all__ = [
    "CLOUD_CLASSES",
    "CORPUS_FORMAT",
    "build_corpus",
    "open_corpus",
    "plan_corpus",
]

#: Value of the group attribute ``eo_contrast_format`` of a corpus store.
CORPUS_FORMAT = "eo-contrast.corpus"
_FORMAT_VERSION = 1
#: Sentinel-2 scene classification (SCL) classes counted as cloud: cloud shadow (3), cloud
#: medium (8) and high (9) probability, thin cirrus (10).
CLOUD_CLASSES: tuple[int, ...] = (3, 8, 9, 10)
#: Consecutive S1 slices less than this apart (same platform and orbit direction) are one pass.
_PASS_GAP = pd.Timedelta("10min")
#: Default uncompressed size of one shard (one work unit).
_SHARD_BYTES = 64 * 2**20
#: Target uncompressed size of one inner chunk (a few chips of the larger variable). Zarr
#: decodes each inner chunk on its own at a cost of about half a millisecond: with one chip per
#: inner chunk, reading a shard of 1170 chips of 32 px took 0.62 s, with 18 chips 0.12 s, and
#: one chip is still read in about 2 ms.
_CHUNK_BYTES = 2**20
#: Per-chip metadata is stored in chunks of about this many chips (a multiple of the shard).
_META_CHUNK = 65536
#: Dask chunk edge of the (lazily loaded, native-grid) S1 scenes windows are cut from.
_S1_CHUNK = 1024
#: Chips of one scene are read in blocks of about this many pixels (at least 8 chips) a side.
_BLOCK_PX = 1024
_PROGRESS_UNITS = "units"
_PROGRESS_CHIPS = "chips"
#: Per-chip coordinates written when the build finishes (placeholders until then).
_RESULT_COORDS = ("valid", "s1_nan_fraction", "s2_nan_fraction", "cloud_fraction")


# --------------------------------------------------------------------------------------------
# Scenes and passes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    """One Sentinel-2 Item: its time, footprint and pixel grid."""

    item: Any  # pystac.Item
    id: str
    time: pd.Timestamp
    footprint: Any  # shapely geometry, lon/lat
    epsg: int
    res: float
    origin: tuple[float, float] | None  # native grid's upper-left corner (x, y) or None
    location: str
    assets: tuple[str, ...]  # asset keys to read: the bands, then the cloud asset if any
    cloud_asset: str | None


@dataclass(frozen=True)
class _Pass:
    """Consecutive Sentinel-1 slices of one datatake, read as one mosaic."""

    items: tuple[Any, ...]
    ids: str
    time: pd.Timestamp
    footprint: Any


def _naive_utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("ns")


def _read_source(source: Any, name: str) -> list[Any]:
    """Items from anything :func:`~eo_contrast.stac.read_items` reads, or a pystac-client search."""
    from eo_contrast.stac import read_items

    if source is None:
        raise TypeError(f"{name} is None: pass STAC Items (a file, an ItemCollection or a search)")
    fetch = getattr(source, "item_collection", None)  # a pystac_client ItemSearch
    if callable(fetch) and not isinstance(source, Mapping | str | os.PathLike):
        source = fetch()
    items = read_items(source)
    if not items:
        raise ValueError(f"{name} holds no STAC Item: check the search or the file")
    return items


def _epsg_of(item: Any, asset: Mapping[str, Any]) -> int | None:
    for where in (asset, item.properties):
        epsg = where.get("proj:epsg")
        if epsg is not None:
            return int(epsg)
        code = where.get("proj:code")
        if isinstance(code, str) and code.upper().startswith("EPSG:"):
            return int(code.split(":", 1)[1])
    return None


def _asset_res(item: Any, asset: Mapping[str, Any]) -> float | None:
    transform = asset.get("proj:transform") or item.properties.get("proj:transform")
    if transform and len(transform) >= 6:
        return abs(float(transform[0]))
    if asset.get("gsd"):
        return float(asset["gsd"])
    for rb in asset.get("raster:bands") or []:
        if rb.get("spatial_resolution"):
            return float(rb["spatial_resolution"])
    return float(item.properties["gsd"]) if item.properties.get("gsd") else None


def _recipes(item: Any) -> dict[str, Any]:
    return band_recipes(item, None)[0]


def _s2_bands(items: list[Any], bands: Sequence[str] | None) -> list[str]:
    """The requested S2 bands (canonical names), or those every item has."""
    if bands is not None:
        if isinstance(bands, str):
            bands = [bands]
        names = [canonical_band_name(b) for b in bands]
        wrong = [b for b in names if b not in S2_BANDS]
        if wrong or not names:
            raise ValueError(
                f"s2_bands={list(bands)!r}: {wrong or 'none'} are not Sentinel-2 band names; "
                f"use names from {list(S2_BANDS)}"
            )
        return list(dict.fromkeys(names))
    common: set[str] | None = None
    for item in items:
        have = {b for b in _recipes(item) if b in S2_BANDS}
        common = have if common is None else common & have
    if not common:
        raise ValueError(
            "the S2 items share no Sentinel-2 band (B01..B12, B8A); check that s2_items holds "
            "Sentinel-2 Items, or pass s2_bands=[...]"
        )
    return [b for b in S2_BANDS if b in common]


def _scene(item: Any, bands: list[str], cloud_band: str | None) -> _Scene:
    recipes = _recipes(item)
    missing = [b for b in bands if b not in recipes]
    if missing:
        have = sorted(b for b in recipes if b in S2_BANDS)
        raise ValueError(
            f"S2 item {item.id!r} lacks bands {missing} (it has {have}); pass s2_bands=[...] "
            "that every S2 item has, or leave the item out"
        )
    epsg = res = None
    origin = None
    for b in bands:
        asset = recipes[b].asset
        e = _epsg_of(item, asset)
        r = _asset_res(item, asset)
        if e is None or r is None:
            continue
        if res is None or r < res:
            epsg, res = e, r
            t = asset.get("proj:transform") or item.properties.get("proj:transform")
            origin = (float(t[2]), float(t[5])) if t and len(t) >= 6 else None
    if epsg is None or res is None:
        raise ValueError(
            f"S2 item {item.id!r} has no projection metadata (proj:epsg or proj:code, and "
            "proj:transform or gsd) on its bands, so its pixel grid is unknown; corpora need "
            "Items with the STAC projection extension"
        )
    cloud_asset = None
    if cloud_band is not None:
        wanted = cloud_band.lower()
        cloud_asset = next((k for k in item.assets if k.lower() == wanted), None)
    keys = tuple(recipes[b].asset_key for b in bands)
    location = str(item.properties.get("s2:mgrs_tile") or "") or (
        f"{epsg}:{origin[0]:.0f}:{origin[1]:.0f}" if origin else f"{epsg}"
    )
    return _Scene(
        item=item,
        id=str(item.id),
        time=_naive_utc(nominal_datetime(item)),
        footprint=footprint(item),
        epsg=int(epsg),
        res=float(res),
        origin=origin,
        location=f"{epsg}/{location}",
        assets=keys + ((cloud_asset,) if cloud_asset else ()),
        cloud_asset=cloud_asset,
    )


def _passes(items: list[Any], bands: list[str]) -> list[_Pass]:
    """S1 Items grouped into passes: same platform and orbit direction, gaps < 10 min."""
    from shapely import union_all

    rows = []
    for item in items:
        recipes = _recipes(item)
        missing = [b for b in bands if b not in recipes]
        if missing:
            raise ValueError(
                f"S1 item {item.id!r} lacks bands {missing} (it has "
                f"{sorted(b for b in recipes if b in S1_BANDS)}); pass s1_bands=[...] that "
                "every S1 item has"
            )
        key = (
            str(item.properties.get("platform") or "").lower(),
            str(item.properties.get("sat:orbit_state") or "").lower(),
        )
        rows.append((key, _naive_utc(nominal_datetime(item)), str(item.id), item))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    groups: list[list[tuple[Any, ...]]] = []
    for row in rows:
        last = groups[-1][-1] if groups else None
        if last is not None and last[0] == row[0] and row[1] - last[1] <= _PASS_GAP:
            groups[-1].append(row)
        else:
            groups.append([row])
    passes = [
        _Pass(
            items=tuple(r[3] for r in g),
            ids=",".join(sorted(r[2] for r in g)),
            time=min(r[1] for r in g),
            footprint=union_all([footprint(r[3]) for r in g]),
        )
        for g in groups
    ]
    passes.sort(key=lambda p: (p.time, p.ids))
    return passes


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _geometry(obj: Any, what: str) -> Any:
    """A shapely geometry (lon/lat) from shapely, GeoJSON (geometry, Feature, collection)."""
    from shapely import union_all
    from shapely.geometry import box, shape
    from shapely.geometry.base import BaseGeometry

    if isinstance(obj, BaseGeometry):
        return obj
    if isinstance(obj, Mapping):
        kind = obj.get("type")
        if kind == "Feature":
            return _geometry(obj.get("geometry"), what)
        if kind == "FeatureCollection":
            return union_all([_geometry(f, what) for f in obj.get("features", [])])
        try:
            return shape(obj)
        except Exception as err:
            raise ValueError(f"{what} is not a GeoJSON geometry: {err}") from err
    if isinstance(obj, Sequence) and len(obj) == 4 and all(_is_number(v) for v in obj):
        x0, y0, x1, y1 = (float(v) for v in obj)
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"{what} {tuple(obj)} is not (min lon, min lat, max lon, max lat)")
        return box(x0, y0, x1, y1)
    raise TypeError(
        f"{what} must be a shapely geometry, a GeoJSON geometry/Feature/FeatureCollection or a "
        f"bbox (min lon, min lat, max lon, max lat), not {type(obj).__name__}"
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _sample_geometries(sample: Any) -> list[Any]:
    """Sampling points/geometries (lon/lat shapely objects), in input order."""
    from shapely.geometry import Point

    if isinstance(sample, str | os.PathLike):
        path = Path(sample)
        if not path.is_file():
            raise FileNotFoundError(f"sample file {str(sample)!r} not found (GeoJSON expected)")
        sample = json.loads(path.read_text())
    if isinstance(sample, Mapping):
        if sample.get("type") == "FeatureCollection":
            return [_geometry(f, "a sample feature") for f in sample.get("features", [])]
        return [_geometry(sample, "sample")]
    out = []
    for k, element in enumerate(sample):
        if (
            isinstance(element, Sequence)
            and not isinstance(element, str)
            and len(element) == 2
            and all(_is_number(v) for v in element)
        ):
            lon, lat = float(element[0]), float(element[1])
            if not (-180 <= lon <= 360 and -90 <= lat <= 90):
                raise ValueError(f"sample point {k} {tuple(element)} is not (lon, lat) in degrees")
            out.append(Point(lon, lat))
        else:
            out.append(_geometry(element, f"sample element {k}"))
    if not out:
        raise ValueError("sample is empty: give points or geometries, an int, 'grid' or None")
    return out


def _random_points(n: int, region: Any, seed: int) -> list[Any]:
    """``n`` points uniformly distributed over the sphere inside ``region`` (lon/lat)."""
    from shapely import contains_xy
    from shapely.geometry import Point

    if region.is_empty or region.area <= 0:
        raise ValueError("the region for random sampling has no area")
    x0, y0, x1, y1 = region.bounds
    rng = np.random.default_rng(seed)
    z0, z1 = math.sin(math.radians(y0)), math.sin(math.radians(y1))
    lon: list[float] = []
    lat: list[float] = []
    for _ in range(10_000):
        m = max(1024, 4 * (n - len(lon)))
        xs = rng.uniform(x0, x1, m)
        ys = np.degrees(np.arcsin(rng.uniform(z0, z1, m)))
        inside = contains_xy(region, xs, ys)
        lon.extend(xs[inside].tolist())
        lat.extend(ys[inside].tolist())
        if len(lon) >= n:
            break
    else:  # pragma: no cover - a sliver region
        raise ValueError("could not draw random points inside the region (is it a sliver?)")
    return [Point(a, b) for a, b in zip(lon[:n], lat[:n], strict=True)]


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    chips: pd.DataFrame  # one row per chip, in corpus order
    scenes: list[_Scene]
    passes: list[_Pass]
    s1_bands: list[str]
    s2_bands: list[str]
    settings: dict[str, Any]


def _to_crs(geom: Any, epsg: int) -> Any:
    """A lon/lat geometry in ``EPSG:epsg``, densified so that its edges bend as they should."""
    import shapely
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    dense = shapely.segmentize(geom, 0.01)
    out = shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return out if out.is_valid else out.buffer(0)


def _coverage(boxes: Any, tree: Any, geom: Any, need: float) -> np.ndarray:
    """Which boxes have at least ``need`` (and more than 0) of their area inside ``geom``."""
    import shapely

    ok = np.zeros(len(boxes), bool)
    if geom.is_empty:
        return ok
    idx = tree.query(geom, predicate="intersects")
    if not len(idx):
        return ok
    shapely.prepare(geom)
    inside = shapely.contains(geom, boxes[idx])
    ok[idx[inside]] = True
    rest = idx[~inside]
    if len(rest):
        area = shapely.area(boxes[rest[0]])
        frac = shapely.area(shapely.intersection(boxes[rest], geom)) / area
        ok[rest] = (frac >= need) & (frac > 0)
    return ok


def _lattice(area: Any, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left corners of the lattice cells (``step`` a side, anchored at 0) centred in area."""
    from shapely import contains_xy

    if area.is_empty:
        return np.zeros(0), np.zeros(0)
    x0, y0, x1, y1 = area.bounds
    kx = np.arange(math.floor(x0 / step), math.ceil(x1 / step) + 1)
    ky = np.arange(math.floor(y0 / step) + 1, math.ceil(y1 / step) + 2)
    mx, my = np.meshgrid(kx * step, ky * step)
    gx, gy = mx.ravel(), my.ravel()
    keep = contains_xy(area, gx + step / 2, gy - step / 2)
    return gx[keep], gy[keep]


def _plan(
    s1_items: Any,
    s2_items: Any,
    *,
    chip: int,
    max_dt: Any,
    sample: Any,
    region: Any,
    seed: int,
    max_nan_fraction: float,
    one_to_one: bool,
    s1_bands: Sequence[str],
    s2_bands: Sequence[str] | None,
    cloud_band: str | None,
) -> _Plan:
    from shapely import union_all

    td = parse_max_dt(max_dt)
    chip, b1 = _check_plan_args(chip, max_nan_fraction, seed, s1_bands)
    s1_list = _read_source(s1_items, "s1_items")
    s2_list = _read_source(s2_items, "s2_items")
    b2 = _s2_bands(s2_list, s2_bands)
    scenes = sorted((_scene(it, b2, cloud_band) for it in s2_list), key=lambda s: (s.time, s.id))
    if len({s.id for s in scenes}) != len(scenes):
        raise ValueError("s2_items holds the same Item id twice: remove the duplicates")
    passes = _passes(s1_list, b1)

    region_geom = _geometry(region, "region") if region is not None else None
    s2_union = union_all([s.footprint for s in scenes])
    points, areas, description = _sampling(sample, region_geom, s2_union, seed)

    need = 1.0 - float(max_nan_fraction)
    by_location: dict[str, list[int]] = {}
    for j, s in enumerate(scenes):
        by_location.setdefault(s.location, []).append(j)
    t_pass = np.array([p.time.value for p in passes], dtype=np.int64)
    columns: dict[str, list[Any]] = {
        k: [] for k in ("scene", "pass", "x0", "y0", "sample", "location", "block")
    }
    for location in sorted(by_location):
        _location_chips(
            columns, location, by_location[location], scenes, passes, t_pass,
            td=td, areas=areas, points=points, chip=chip, need=need, one_to_one=one_to_one,
        )  # fmt: skip
    if not columns["scene"]:
        raise ValueError(_no_chip_message(scenes, passes, td, region_geom, points, areas))
    df = pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})
    df = _order_chips(df, scenes, points, areas)
    return _Plan(
        chips=_chip_table(df, scenes, passes, chip),
        scenes=scenes,
        passes=passes,
        s1_bands=b1,
        s2_bands=b2,
        settings={
            "chip": chip,
            "max_dt": str(td),
            "one_to_one": int(bool(one_to_one)),
            "max_nan_fraction": float(max_nan_fraction),
            "sampling": description,
            "seed": int(seed),
        },
    )


def _check_plan_args(
    chip: Any, max_nan_fraction: Any, seed: Any, s1_bands: Sequence[str]
) -> tuple[int, list[str]]:
    """The chip size as an int and the canonical S1 band names; ValueError for bad settings."""
    if isinstance(chip, bool) or not isinstance(chip, int | np.integer) or chip < 8:
        raise ValueError(f"chip must be an int >= 8 (pixels a side), got {chip!r}")
    if not (_is_number(max_nan_fraction) and 0 <= max_nan_fraction <= 1):
        raise ValueError(f"max_nan_fraction must be in [0, 1], got {max_nan_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    chip = int(chip)
    b1 = [canonical_band_name(b) for b in ([s1_bands] if isinstance(s1_bands, str) else s1_bands)]
    wrong = [b for b in b1 if b not in S1_BANDS]
    if wrong or not b1:
        raise ValueError(
            f"s1_bands={list(s1_bands)!r}: {wrong or 'none'} are not Sentinel-1 polarisations; "
            f"use names from {list(S1_BANDS)}"
        )
    return chip, b1


def _sampling(
    sample: Any, region_geom: Any, s2_union: Any, seed: int
) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]], str]:
    """The sampling points and areas (numbered by sample, inside ``region_geom``) and its name."""
    points: list[tuple[int, Any]] = []
    areas: list[tuple[int, Any]] = []
    if sample is None or (isinstance(sample, str) and sample == "grid"):
        description = "grid"
        areas = [(-1, region_geom if region_geom is not None else s2_union)]
    elif isinstance(sample, int | np.integer) and not isinstance(sample, bool):
        if sample < 1:
            raise ValueError(f"sample={sample!r}: a number of random points must be >= 1")
        where = region_geom if region_geom is not None else s2_union
        points = list(enumerate(_random_points(int(sample), where, int(seed))))
        description = f"random {int(sample)} seed {int(seed)}"
    elif isinstance(sample, str) and not Path(sample).suffix:
        raise ValueError(
            f"sample={sample!r} is not understood: use None or 'grid', an int (random points), "
            "a list of (lon, lat) points or geometries, or a GeoJSON file"
        )
    else:
        for k, g in enumerate(_sample_geometries(sample)):
            (points if g.geom_type == "Point" else areas).append((k, g))
        description = f"geometries {len(points)} points {len(areas)} areas"
    if region_geom is not None:
        points = [(k, p) for k, p in points if region_geom.covers(p)]
        areas = [(k, a.intersection(region_geom)) for k, a in areas]
    return points, areas, description


def _location_chips(
    columns: dict[str, list[Any]],
    location: str,
    members: list[int],
    scenes: list[_Scene],
    passes: list[_Pass],
    t_pass: np.ndarray,
    *,
    td: pd.Timedelta,
    areas: list[tuple[int, Any]],
    points: list[tuple[int, Any]],
    chip: int,
    need: float,
    one_to_one: bool,
) -> None:
    """Append to ``columns`` the chips of the S2 scenes of one location and their S1 matches."""
    import shapely
    from pyproj import Transformer
    from shapely import union_all

    epsg, res = scenes[members[0]].epsg, scenes[members[0]].res
    members = [j for j in members if (scenes[j].epsg, scenes[j].res) == (epsg, res)]
    step = chip * res
    loc_union = union_all([scenes[j].footprint for j in members])
    t_scenes = np.array([scenes[j].time.value for j in members], dtype=np.int64)
    near = np.flatnonzero(
        (t_pass >= t_scenes.min() - td.value) & (t_pass <= t_scenes.max() + td.value)
    )
    near = np.array([i for i in near if passes[i].footprint.intersects(loc_union)], int)
    if not len(near):
        return
    loc_proj = _to_crs(loc_union, epsg)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ks: list[np.ndarray] = []
    for k, area in areas:
        gx, gy = _lattice(_to_crs(area, epsg).intersection(loc_proj), step)
        xs.append(gx)
        ys.append(gy)
        ks.append(np.full(len(gx), k))
    if points:
        tr = Transformer.from_crs(4326, epsg, always_xy=True)
        lon = np.array([p.x for _, p in points])
        lat = np.array([p.y for _, p in points])
        px, py = tr.transform(lon, lat)
        inside = shapely.contains_xy(loc_proj, px, py)
        half = chip * res / 2
        xs.append(np.round((px[inside] - half) / res) * res)
        ys.append(np.round((py[inside] + half) / res) * res)
        ks.append(np.array([k for k, _ in points])[inside])
    if not xs:
        return
    x0 = np.concatenate(xs)
    y0 = np.concatenate(ys)
    kk = np.concatenate(ks).astype(np.int64)
    if not len(x0):
        return
    boxes = shapely.box(x0, y0 - step, x0 + step, y0)
    tree = shapely.STRtree(boxes)
    cov2 = np.stack(
        [_coverage(boxes, tree, _to_crs(scenes[j].footprint, epsg), need) for j in members],
        axis=1,
    )
    cov1 = np.stack(
        [_coverage(boxes, tree, _to_crs(passes[i].footprint, epsg), need) for i in near],
        axis=1,
    )
    # one S2 scene per acquisition time at a chip position (overlapping tiles of one pass)
    _, first = np.unique(t_scenes, return_index=True)
    dup = np.ones(len(members), bool)
    dup[first] = False
    cov2[:, dup] = False  # members are sorted by (time, id): the first id of a time wins
    has = cov2.any(axis=1) & cov1.any(axis=1)
    if not has.any():
        return
    rows = np.flatnonzero(has)
    signature = np.concatenate([np.packbits(cov2[rows], 1), np.packbits(cov1[rows], 1)], 1)
    uniq, inverse = np.unique(signature, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for u in range(len(uniq)):
        sel = rows[inverse == u]
        jj = np.flatnonzero(cov2[sel[0]])
        ii = np.flatnonzero(cov1[sel[0]])
        matches = match_times(t_pass[near[ii]], t_scenes[jj], td, one_to_one=one_to_one)
        for j_local, i_local in matches:
            n = len(sel)
            columns["scene"].append(np.full(n, members[jj[j_local]]))
            columns["pass"].append(np.full(n, near[ii[i_local]]))
            columns["x0"].append(x0[sel])
            columns["y0"].append(y0[sel])
            columns["sample"].append(kk[sel])
            columns["location"].append(np.full(n, location, dtype=object))
            # coarse blocks of chips, north to south, then west to east: read together
            block = max(_BLOCK_PX, 8 * chip) * res
            columns["block"].append(np.floor(x0[sel] / block) - 1e9 * np.floor(y0[sel] / block))


def _order_chips(
    df: pd.DataFrame,
    scenes: list[_Scene],
    points: list[tuple[int, Any]],
    areas: list[tuple[int, Any]],
) -> pd.DataFrame:
    """The chips once each, in the corpus's order (S2 time, S2 item, block, row, column)."""
    df["s2_time"] = np.array([scenes[j].time.value for j in df["scene"]], "datetime64[ns]")
    df["s2_item"] = [scenes[j].id for j in df["scene"]]
    # overlapping tiles of one pass, areas that overlap, points seen by two CRSs: once each
    if points and not areas:
        df = df.sort_values(["sample", "s2_time", "location"], kind="stable")
        df = df.drop_duplicates(["sample", "s2_time"])
    df["epsg"] = [scenes[j].epsg for j in df["scene"]]
    df = df.sort_values(["epsg", "x0", "y0", "s2_time", "sample", "location"], kind="stable")
    df = df.drop_duplicates(["epsg", "x0", "y0", "s2_time", "sample"])
    df = df.sort_values(
        ["s2_time", "s2_item", "block", "y0", "x0", "sample"],
        ascending=[True, True, True, False, True, True],
        kind="stable",
    ).reset_index(drop=True)
    return df


def _no_chip_message(
    scenes: list[_Scene],
    passes: list[_Pass],
    td: pd.Timedelta,
    region: Any,
    points: list[Any],
    areas: list[Any],
) -> str:
    t1 = np.array([p.time.value for p in passes], np.int64)
    t2 = np.array([s.time.value for s in scenes], np.int64)
    in_time = match_times(t1, t2, td, one_to_one=False)
    spatial = [
        (j, i)
        for j in range(len(scenes))
        for i in range(len(passes))
        if scenes[j].footprint.intersects(passes[i].footprint)
    ]
    if not in_time:
        gap = min(abs(int(a) - int(b)) for a in t1 for b in t2)
        return (
            f"no S1/S2 pair: no S1 pass is within max_dt={td} of any of the {len(scenes)} S2 "
            f"scenes (closest gap {pd.Timedelta(gap, unit='ns')}); raise max_dt or search S1 "
            "over the S2 dates"
        )
    if not spatial:
        return (
            f"no S1/S2 pair: {len(in_time)} S2 scene(s) have an S1 pass within max_dt={td}, but "
            f"no S1 footprint overlaps an S2 footprint (S1 covers {_bounds(passes)}, S2 covers "
            f"{_bounds(scenes)}); search both sensors over the same area"
        )
    where = "" if region is None else " inside the region"
    return (
        f"no chip to cut: S1 and S2 overlap in time and space, but no chip position "
        f"({len(points)} point(s), {len(areas)} area(s)){where} has enough of its area inside "
        "both footprints of a pair within max_dt; move the sampling, enlarge the region, lower "
        "chip or raise max_nan_fraction"
    )


def _bounds(things: Sequence[Any]) -> tuple[float, ...]:
    from shapely import union_all

    b = union_all([t.footprint for t in things]).bounds
    return tuple(round(v, 3) for v in b)


def _chip_table(df: pd.DataFrame, scenes: list[_Scene], passes: list[_Pass], chip: int) -> Any:
    from pyproj import Transformer

    res = np.array([scenes[j].res for j in df["scene"]])
    epsg = df["epsg"].to_numpy()
    x0 = df["x0"].to_numpy(float)
    y0 = df["y0"].to_numpy(float)
    lon = np.empty(len(df))
    lat = np.empty(len(df))
    for e in np.unique(epsg):
        m = epsg == e
        tr = Transformer.from_crs(int(e), 4326, always_xy=True)
        lon[m], lat[m] = tr.transform(x0[m] + chip * res[m] / 2, y0[m] - chip * res[m] / 2)
    row = np.full(len(df), -1, np.int64)
    col = np.full(len(df), -1, np.int64)
    for k, j in enumerate(df["scene"].to_numpy()):
        origin = scenes[j].origin
        if origin is not None:
            row[k] = round((origin[1] - y0[k]) / res[k])
            col[k] = round((x0[k] - origin[0]) / res[k])
    s1_ids, s1_time = _s1_sources(df, passes, lon, lat, chip * res)
    s2_time = df["s2_time"].to_numpy("datetime64[ns]")
    return pd.DataFrame(
        {
            "s2_item": df["s2_item"].to_numpy(object),
            "s1_items": s1_ids,
            "s2_time": s2_time,
            "s1_time": s1_time,
            "dt": np.abs(s2_time - s1_time).astype("timedelta64[ns]"),
            "crs": np.array([f"EPSG:{int(e)}" for e in epsg], dtype=object),
            "x0": x0,
            "y0": y0,
            "res": res,
            "row": row,
            "col": col,
            "lon": lon,
            "lat": lat,
            "sample": df["sample"].to_numpy(np.int64),
            "scene": df["scene"].to_numpy(np.int64),
            "pass": df["pass"].to_numpy(np.int64),
            "block": df["block"].to_numpy(float),
        }
    )


def _s1_sources(
    df: pd.DataFrame, passes: list[_Pass], lon: np.ndarray, lat: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per chip: the ids of its pass's slices that cover it, and the earliest of their times."""
    import shapely

    ids = np.empty(len(df), dtype=object)
    times = np.empty(len(df), dtype="datetime64[ns]")
    # chip boxes in lon/lat, a little larger than the chip (metres -> degrees, roughly)
    half = size / 2 / 111_000 * 1.5
    boxes = shapely.box(
        lon - half / np.cos(np.radians(lat)), lat - half, lon + half / np.cos(np.radians(lat)),
        lat + half,
    )  # fmt: skip
    pass_of = df["pass"].to_numpy()
    for i in np.unique(pass_of):
        rows = np.flatnonzero(pass_of == i)
        items = sorted(passes[i].items, key=lambda it: str(it.id))
        t = np.array([_naive_utc(nominal_datetime(it)).value for it in items], np.int64)
        cover = np.stack([shapely.intersects(boxes[rows], footprint(it)) for it in items], 1)
        cover[~cover.any(axis=1)] = True  # footprints that only touch: all slices of the pass
        for key in np.unique(cover, axis=0):
            sel = rows[(cover == key).all(axis=1)]
            ids[sel] = ",".join(str(items[k].id) for k in np.flatnonzero(key))
            times[sel] = np.datetime64(int(t[key].min()), "ns")
    return ids, times


#: Columns of the plan that are not written to the store.
_INTERNAL = ("scene", "pass", "block")


def plan_corpus(
    s1_items: Any,
    s2_items: Any,
    *,
    chip: int = 256,
    max_dt: str | np.timedelta64 | pd.Timedelta | _dt.timedelta = "3D",
    sample: Any = None,
    region: Any = None,
    seed: int = 0,
    max_nan_fraction: float = 0.1,
    one_to_one: bool = True,
    s1_bands: Sequence[str] = ("vv", "vh"),
    s2_bands: Sequence[str] | None = None,
    cloud_band: str | None = "SCL",
) -> pd.DataFrame:
    """The chips :func:`build_corpus` would cut, from STAC metadata alone (no pixel is read).

    Parameters are those of :func:`build_corpus`.

    Returns
    -------
    pandas.DataFrame
        One row per chip, in corpus order, with the per-chip metadata the corpus stores:
        ``s2_item``, ``s1_items`` (the ids of the S1 pass's slices, comma-separated),
        ``s2_time``, ``s1_time``, ``dt``, ``crs`` (``"EPSG:326xx"``), ``x0``/``y0`` (the chip's
        upper-left corner in CRS units), ``res``, ``row``/``col`` (its upper-left pixel on the S2
        item's native grid; -1 when the item gives no ``proj:transform``), ``lon``/``lat`` (its
        centre) and ``sample`` (index of the sampling point or geometry; -1 for a plain grid),
        plus the internal columns ``scene``, ``pass`` and ``block``.

    Raises
    ------
    ValueError
        When no chip can be cut; the message says whether time (``max_dt``), space (the
        footprints) or the sampling is the reason.

    Examples
    --------
    >>> from eo_contrast.corpus import plan_corpus
    >>> def item(iid, when, bands, bbox):
    ...     x0, y0, x1, y1 = bbox
    ...     ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    ...     proj = {"proj:epsg": 32631, "proj:transform": [10, 0, 499980, 0, -10, 4400040]}
    ...     return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "links": [],
    ...             "bbox": list(bbox), "geometry": {"type": "Polygon", "coordinates": [ring]},
    ...             "properties": {"datetime": when, **proj},
    ...             "assets": {b: {"href": f"{b}.tif", "type": "image/tiff"} for b in bands}}
    >>> s2 = [item("s2a", "2021-05-02T10:50:00Z", ["B04", "B08"], (3.0, 39.5, 3.1, 39.6))]
    >>> s1 = [item("s1a", "2021-05-01T06:00:00Z", ["vv", "vh"], (2.9, 39.4, 3.2, 39.7))]
    >>> plan = plan_corpus(s1, s2, chip=256)
    >>> len(plan), plan["crs"][0], str(plan["dt"][0])
    (8, 'EPSG:32631', '1 days 04:50:00')
    >>> plan_corpus(s1, s2, max_dt="1D")
    Traceback (most recent call last):
    ...
    ValueError: no S1/S2 pair: no S1 pass is within max_dt=1 days 00:00:00 of any ...
    """
    return _plan(
        s1_items,
        s2_items,
        chip=chip,
        max_dt=max_dt,
        sample=sample,
        region=region,
        seed=seed,
        max_nan_fraction=max_nan_fraction,
        one_to_one=one_to_one,
        s1_bands=s1_bands,
        s2_bands=s2_bands,
        cloud_band=cloud_band,
    ).chips


# --------------------------------------------------------------------------------------------
# Work units (run on workers)
# --------------------------------------------------------------------------------------------


def _item_dict(item: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The item as a small dict: only the assets ``keys`` (absolute hrefs), no links."""
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = []
    assets = {}
    for k in keys:
        a = dict(d["assets"][k])
        a["href"] = item.assets[k].get_absolute_href() or item.assets[k].href
        assets[k] = a
    d["assets"] = assets
    return d


def _lonlat_box(epsg: int, x0: float, y0: float, w: float, h: float, pad: float) -> tuple:
    from pyproj import CRS, Transformer

    crs = CRS.from_epsg(epsg)
    xs = np.linspace(x0 - pad, x0 + w + pad, 9)
    ys = np.linspace(y0 + pad, y0 - h - pad, 9)
    gx, gy = np.meshgrid(xs, ys)
    if crs.is_geographic:
        lon, lat = gx.ravel(), gy.ravel()
    else:
        lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(gx.ravel(), gy.ravel())
    return (
        max(-180.0, float(np.min(lon))),
        max(-90.0, float(np.min(lat))),
        min(180.0, float(np.max(lon))),
        min(90.0, float(np.max(lat))),
    )


def _s1_window(
    s1: xr.DataArray, epsg: int, x0: float, y0: float, w: float, h: float, pad: float
) -> xr.DataArray | None:
    """The part of ``s1`` (its own grid) under the S2 window ``(x0, y0, w, h)`` plus ``pad``."""
    from pyproj import Transformer

    xs = np.linspace(x0 - pad, x0 + w + pad, 9)
    ys = np.linspace(y0 + pad, y0 - h - pad, 9)
    gx, gy = np.meshgrid(xs, ys)
    tr = Transformer.from_crs(epsg, s1.rio.crs, always_xy=True)
    px, py = tr.transform(gx.ravel(), gy.ravel())
    step = float(abs(s1["x"].values[1] - s1["x"].values[0])) if s1.sizes["x"] > 1 else 0.0
    x = s1["x"].values
    y = s1["y"].values
    cols = np.flatnonzero((x >= np.min(px) - step) & (x <= np.max(px) + step))
    rows = np.flatnonzero((y >= np.min(py) - step) & (y <= np.max(py) + step))
    if len(cols) < 2 or len(rows) < 2:
        return None
    return s1.isel(x=slice(cols[0], cols[-1] + 1), y=slice(rows[0], rows[-1] + 1))


def _read_window(
    s2_item: dict[str, Any],
    s1_items: list[dict[str, Any]],
    window: tuple[int, float, float, float, int, int],
    cfg: dict[str, Any],
    s1_cache: dict[tuple[str, ...], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """S1 (on the S2 grid), S2 and the cloud classes of one window: (bands, h, w) arrays.

    ``s1_cache`` keeps the lazily loaded (native-grid) S1 cubes of the slices read so far, so
    that the windows of one work unit build each one once.
    """
    import dask
    from shapely.geometry import box, shape

    from eo_contrast.pairing import pair
    from eo_contrast.stac import load_stac

    epsg, res, x0, y0, h, w = window
    bbox = _lonlat_box(epsg, x0, y0, w * res, h * res, res / 2)
    s2_keys = [*cfg["s2_bands"]]
    cloud = cfg["cloud_assets"].get(str(s2_item["id"]))
    if cloud is not None:
        s2_keys.append(cloud)
    s2 = load_stac(
        [s2_item],
        s2_keys,
        crs=f"EPSG:{epsg}",
        resolution=res,
        bbox=bbox,
        chunks={"y": -1, "x": -1},
        href_map=cfg["href_map"],
        collections=cfg["collections"],
    )
    xs, ys = s2["x"].values, s2["y"].values
    ix = round((x0 + res / 2 - xs[0]) / res)
    iy = round((ys[0] - (y0 - res / 2)) / res)
    if (
        ix < 0
        or iy < 0
        or ix + w > len(xs)
        or iy + h > len(ys)
        or abs(xs[ix] - (x0 + res / 2)) > 1e-3 * res
        or abs(ys[iy] - (y0 - res / 2)) > 1e-3 * res
    ):  # pragma: no cover - an invariant of load_stac's grids
        raise RuntimeError(f"the S2 grid of {s2_item['id']!r} misses the planned window")
    s2 = s2.isel(x=slice(ix, ix + w), y=slice(iy, iy + h))
    s2_bands = s2.isel(band=slice(0, len(cfg["s2_bands"])))
    nb1 = len(cfg["s1_bands"])
    s1_nan = np.full((nb1, h, w), np.nan, np.float32)
    wanted = box(*_lonlat_box(epsg, x0, y0, w * res, h * res, 4 * res))
    touching = [
        d for d in s1_items if d.get("geometry") is None or shape(d["geometry"]).intersects(wanted)
    ]
    s1_grid: Any = None
    if touching:
        # S1 on its native grid (a bbox would snap it to another one), the window cut lazily
        key = tuple(sorted(str(d["id"]) for d in touching))
        native = None if s1_cache is None else s1_cache.get(key)
        if native is None:
            native = load_stac(
                touching,
                cfg["s1_bands"],
                chunks=_S1_CHUNK,
                href_map=cfg["href_map"],
                collections=cfg["collections"],
            )
            if s1_cache is not None:
                s1_cache[key] = native
        s1 = _s1_window(native, epsg, x0, y0, w * res, h * res, 4 * res)
        if s1 is not None and s1.sizes["time"] > 1:  # a pass across a solar-day boundary
            fused = s1.isel(time=0)
            for t in range(1, s1.sizes["time"]):
                fused = fused.fillna(s1.isel(time=t))
            s1 = fused.expand_dims(time=s1["time"].values[:1])
        if s1 is not None:
            try:
                s1_grid = pair(s1, s2_bands, max_dt=cfg["max_dt"])["s1"]
            except ValueError as err:
                if "do not overlap" not in str(err):
                    raise
    parts = [s2_bands.data[0]]
    if s1_grid is not None:
        parts.append(s1_grid.data[0])
    if cloud is not None:
        parts.append(s2.isel(band=-1).data[0])
    values = dask.compute(*parts, scheduler="synchronous")
    s2_values = np.asarray(values[0], np.float32)
    s1_values = np.asarray(values[1], np.float32) if s1_grid is not None else s1_nan
    cloud_values = np.asarray(values[-1]) if cloud is not None else None
    return s1_values, s2_values, cloud_values


def _windows(chips: pd.DataFrame, chip: int) -> list[tuple[Any, np.ndarray]]:
    """Read windows for the chips of one unit: (key, chip positions in the unit) per window."""
    out = []
    keys = chips[["scene", "pass", "block"]].to_numpy()
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    for g in np.argsort(first):
        members = np.flatnonzero(inverse.ravel() == g)
        sub = chips.iloc[members]
        res = float(sub["res"].iloc[0])
        x0, x1 = float(sub["x0"].min()), float(sub["x0"].max()) + chip * res
        y1, y0 = float(sub["y0"].max()), float(sub["y0"].min()) - chip * res
        area = (x1 - x0) * (y1 - y0)
        if area <= 4 * len(sub) * (chip * res) ** 2:
            out.append(((x0, y1, round((y1 - y0) / res), round((x1 - x0) / res)), members))
        else:  # sparse chips (random points): one window each
            for m in members:
                r = chips.iloc[m]
                out.append(((float(r["x0"]), float(r["y0"]), chip, chip), np.array([m])))
    return out


def _fraction_stats(values: np.ndarray) -> np.ndarray:
    """Per band ``(count, mean, M2)`` of the finite values of ``values`` (n, band, y, x)."""
    nb = values.shape[1]
    out = np.zeros((nb, 3), np.float64)
    for b in range(nb):
        v = values[:, b].ravel()
        v = v[np.isfinite(v)].astype(np.float64)
        if v.size:
            mean = float(v.mean())
            out[b] = (v.size, mean, float(np.sum((v - mean) ** 2)))
    return out


def _merge_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chan et al.'s exact merge of two ``(count, mean, M2)`` per-band tables."""
    na, nb = a[:, 0], b[:, 0]
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = b[:, 1] - a[:, 1]
        mean = np.where(n > 0, a[:, 1] + delta * np.where(n > 0, nb / n, 0), 0.0)
        m2 = a[:, 2] + b[:, 2] + np.where(n > 0, delta**2 * na * nb / n, 0.0)
    return np.stack([n, mean, m2], axis=1)


def _run_unit(
    unit: int,
    start: int,
    chips: pd.DataFrame,
    s2_items: dict[int, dict[str, Any]],
    s1_items: dict[int, list[dict[str, Any]]],
    url: str,
    zkw: dict[str, Any],
    cfg: dict[str, Any],
) -> int:
    """Read, cut, check and write the chips of one shard, then record its completion."""
    import zarr

    from eo_contrast.runtime import tune_allocator

    tune_allocator()

    c = int(cfg["chip"])
    n = len(chips)
    nb1, nb2 = len(cfg["s1_bands"]), len(cfg["s2_bands"])
    out1 = np.full((n, nb1, c, c), np.nan, np.float32)
    out2 = np.full((n, nb2, c, c), np.nan, np.float32)
    record = np.full((n, 4), np.nan, np.float32)  # valid, s1 NaN, s2 NaN, cloud fractions
    classes = np.asarray(cfg["cloud_classes"], np.float32)
    s1_cache: dict[tuple[str, ...], Any] = {}
    for (wx0, wy0, h, w), members in _windows(chips, c):
        first = chips.iloc[members[0]]
        j, i = int(first["scene"]), int(first["pass"])
        res = float(first["res"])
        epsg = int(str(first["crs"]).split(":")[1])
        s1v, s2v, cloud = _read_window(
            s2_items[j], s1_items[i], (epsg, res, wx0, wy0, h, w), cfg, s1_cache
        )
        for m in members:
            r = chips.iloc[m]
            oy = round((wy0 - float(r["y0"])) / res)
            ox = round((float(r["x0"]) - wx0) / res)
            a = s1v[:, oy : oy + c, ox : ox + c]
            b = s2v[:, oy : oy + c, ox : ox + c]
            f1 = float(np.isnan(a).any(axis=0).mean())
            f2 = float(np.isnan(b).any(axis=0).mean())
            fc = np.nan
            if cloud is not None:
                fc = float(np.isin(cloud[oy : oy + c, ox : ox + c], classes).mean())
            ok = f1 <= cfg["max_nan_fraction"] and f2 <= cfg["max_nan_fraction"]
            ok = ok and (math.isnan(fc) or fc <= cfg["max_cloud_fraction"])
            record[m] = (float(ok), f1, f2, fc)
            if ok:
                out1[m] = a
                out2[m] = b
    valid = record[:, 0] == 1
    stop = start + n
    zarr.open_array(url, path="s1", mode="r+", zarr_format=3, **zkw)[start:stop] = out1
    zarr.open_array(url, path="s2", mode="r+", zarr_format=3, **zkw)[start:stop] = out2
    zarr.open_array(url, path=record_path(_PROGRESS_CHIPS), mode="r+", zarr_format=3, **zkw)[
        start:stop
    ] = record
    for name, values in (("s1", out1), ("s2", out2)):
        stats = zarr.open_array(
            url, path=record_path(f"{name}_stats"), mode="r+", zarr_format=3, **zkw
        )
        stats[unit] = _fraction_stats(values[valid])
    set_flag(url, zkw, _PROGRESS_UNITS, unit)
    return int(valid.sum())


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def _chunk_target(chip: int, nb_max: int) -> int:
    """Chips of ``nb_max`` bands in about :data:`_CHUNK_BYTES` (at least 1)."""
    return max(1, _CHUNK_BYTES // (nb_max * chip * chip * 4))


def _chunk_chips(shard: int, chip: int, nb_max: int) -> int:
    """Chips per inner chunk: the largest divisor of ``shard`` within :func:`_chunk_target`."""
    target = min(shard, _chunk_target(chip, nb_max))
    return max(d for d in range(1, target + 1) if shard % d == 0)


def _shard_chips(chips_per_shard: int | None, chip: int, nb: int, n: int, nb_max: int) -> int:
    if chips_per_shard is None:
        per_chip = nb * chip * chip * 4
        shard = max(1, min(n, _SHARD_BYTES // per_chip, 4096))
        inner = _chunk_target(chip, nb_max)
        # a whole number of inner chunks of the target size
        return shard // inner * inner if shard > inner else shard
    if (
        isinstance(chips_per_shard, bool)
        or not isinstance(chips_per_shard, int | np.integer)
        or chips_per_shard < 1
    ):
        raise ValueError(f"chips_per_shard must be an int >= 1, got {chips_per_shard!r}")
    return int(min(chips_per_shard, n))


def _plan_hash(plan: _Plan, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(json.dumps([plan.s1_bands, plan.s2_bands]).encode())
    for col in plan.chips.columns:
        values = plan.chips[col].to_numpy()
        if values.dtype == object:
            h.update("\0".join(map(str, values)).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _template(
    plan: _Plan, shard: int, inner: int, attrs: dict[str, Any]
) -> tuple[xr.Dataset, dict]:
    import dask.array as da

    chips = plan.chips
    n = len(chips)
    c = int(plan.settings["chip"])
    nb1, nb2 = len(plan.s1_bands), len(plan.s2_bands)
    meta_chunk = min(n, max(shard, _META_CHUNK // shard * shard))
    coords: dict[str, Any] = {
        "s1_band": ("s1_band", np.array(plan.s1_bands, dtype=object)),
        "s2_band": ("s2_band", np.array(plan.s2_bands, dtype=object)),
        "s1_units": ("s1_band", np.array(["dB"] * nb1, dtype=object)),
        "s2_units": ("s2_band", np.array(["1"] * nb2, dtype=object)),
    }
    for col in chips.columns:
        if col not in _INTERNAL:
            coords[col] = ("chip", chips[col].to_numpy())
    coords["valid"] = ("chip", np.zeros(n, bool))
    for name in _RESULT_COORDS[1:]:
        coords[name] = ("chip", np.full(n, np.nan, np.float32))
    ds = xr.Dataset(
        {
            "s1": (
                ("chip", "s1_band", "y", "x"),
                da.zeros((n, nb1, c, c), chunks=(shard, nb1, c, c), dtype=np.float32),
                {"long_name": "Sentinel-1 backscatter on the Sentinel-2 grid"},
            ),
            "s2": (
                ("chip", "s2_band", "y", "x"),
                da.zeros((n, nb2, c, c), chunks=(shard, nb2, c, c), dtype=np.float32),
                {"long_name": "Sentinel-2 reflectance"},
            ),
        },
        coords=coords,
        attrs=attrs,
    )
    encoding: dict[str, Any] = {
        "s1": {"chunks": (inner, nb1, c, c), "shards": (shard, nb1, c, c), "fill_value": np.nan},
        "s2": {"chunks": (inner, nb2, c, c), "shards": (shard, nb2, c, c), "fill_value": np.nan},
    }
    for col in ds.coords:
        if ds[col].dims == ("chip",):
            encoding[str(col)] = {"chunks": (meta_chunk,)}
    return ds, encoding


def _create_progress(url: str, zkw: dict[str, Any], n: int, shard: int, nb: tuple) -> None:
    prog = progress_group(url, zkw)
    units = math.ceil(n / shard)
    create_flags(prog, _PROGRESS_UNITS, (units,))
    prog.create_array(
        _PROGRESS_CHIPS,
        shape=(n, 4),
        chunks=(shard, 4),
        dtype="float32",
        fill_value=np.nan,
        overwrite=True,
    )
    for name, k in zip(("s1", "s2"), nb, strict=True):
        prog.create_array(
            f"{name}_stats",
            shape=(units, k, 3),
            chunks=(1, k, 3),
            dtype="float64",
            fill_value=0.0,
            overwrite=True,
        )


def _finish_corpus(url: str, zkw: dict[str, Any], n_units: int) -> None:
    """Per-chip results and band statistics from the progress records; store complete."""
    import zarr

    group: Any = zarr.open_group(url, mode="r+", use_consolidated=False, zarr_format=3, **zkw)
    prog = group[PROGRESS_GROUP]
    record = np.asarray(prog[_PROGRESS_CHIPS][...])
    valid = record[:, 0] == 1
    group["valid"][...] = valid
    for k, name in enumerate(_RESULT_COORDS[1:], start=1):
        group[name][...] = record[:, k]
    for sensor in ("s1", "s2"):
        parts = np.asarray(prog[f"{sensor}_stats"][...])
        total = np.zeros(parts.shape[1:], np.float64)
        for u in range(n_units):  # in shard order: the same figures whatever ran first
            total = _merge_stats(total, parts[u])
        count, mean, m2 = total[:, 0], total[:, 1], total[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.where(count > 0, m2 / count, np.nan))
        mean = np.where(count > 0, mean, np.nan)
        group[sensor].attrs.update(
            {
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
                "count": [int(v) for v in count],
            }
        )
    group.attrs.update({"n_valid": int(valid.sum())})
    finish(url, zkw)


def _check_fraction(name: str, value: Any) -> float:
    if not (_is_number(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def build_corpus(
    s1_items: Any,
    s2_items: Any,
    store: str | os.PathLike[str],
    *,
    chip: int = 256,
    max_dt: str | np.timedelta64 | pd.Timedelta | _dt.timedelta = "3D",
    sample: Any = None,
    region: Any = None,
    seed: int = 0,
    max_nan_fraction: float = 0.1,
    max_cloud_fraction: float = 0.1,
    cloud_band: str | None = "SCL",
    cloud_classes: Sequence[int] = CLOUD_CLASSES,
    one_to_one: bool = True,
    s1_bands: Sequence[str] = ("vv", "vh"),
    s2_bands: Sequence[str] | None = None,
    chips_per_shard: int | None = None,
    href_map: Mapping[str, str] | Callable[[str], str] | None = None,
    collections: Any = None,
    mode: str = "w-",
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Build a sharded Zarr corpus of co-registered S1/S2 chip pairs from STAC Items, with Dask.

    The chips are planned from the Items' metadata (see the module documentation and
    :func:`plan_corpus`), then read, checked and written one shard per Dask task by the current
    scheduler (threads, processes, or a ``distributed`` client: a LocalCluster or a multi-node
    cluster; each task needs only its arguments, the STAC hrefs and the store). The same inputs
    give the same corpus, chip for chip and byte for byte, whatever the scheduler and however
    the tasks interleave.

    Parameters
    ----------
    s1_items, s2_items
        Sentinel-1 (e.g. Planetary Computer ``sentinel-1-rtc``) and Sentinel-2 (e.g.
        ``sentinel-2-l2a``) Items: anything :func:`eo_contrast.stac.read_items` reads (a JSON
        file, an ItemCollection, a list of Items or dicts), or a ``pystac_client`` search (its
        ``item_collection()`` is used). Their assets need the STAC projection extension.
    store
        Local path or fsspec URL of the Zarr store to write (``"s3://bucket/corpus.zarr"``).
    chip
        Chip edge in pixels of the S2 grid (10 m for the 10 m bands).
    max_dt
        Largest ``|s1_time - s2_time|`` of a pair (see :func:`eo_contrast.pairing.parse_max_dt`).
    sample
        Where chips are cut. ``None`` or ``"grid"``: every lattice position (chips of ``chip``
        pixels, edges at multiples of ``chip`` pixels from the CRS origin) inside ``region``
        (or everywhere the S1 and S2 footprints allow). An int ``N``: ``N`` random points,
        uniform on the sphere inside ``region`` (default: the union of the S2 footprints),
        drawn with ``seed``; a chip is centred on each. A sequence of ``(lon, lat)`` points
        and/or geometries (shapely or GeoJSON; a FeatureCollection or a GeoJSON file too):
        a chip centred on each point, lattice chips centred inside each polygon.
    region
        Limits the sampling to an area: a bbox ``(min lon, min lat, max lon, max lat)``, a
        shapely geometry or GeoJSON (lon/lat).
    seed
        Seed of the random points.
    max_nan_fraction
        A chip is valid only if at most this fraction of its pixels is NaN (nodata in any band)
        in S1 and in S2. Planning also skips chips with less than ``1 - max_nan_fraction`` of
        their area inside the footprints.
    max_cloud_fraction
        A chip is valid only if at most this fraction of its pixels is cloud or cloud shadow in
        the S2 scene classification (``cloud_band``); S2 Items without that asset are judged
        by NaN only.
    cloud_band, cloud_classes
        Asset key of the scene classification (matched case-insensitively; ``None``: no cloud
        rule) and the classes counted as cloud (:data:`CLOUD_CLASSES`).
    one_to_one
        At each chip position an S1 pass serves at most one S2 date (see
        :func:`eo_contrast.pairing.match_times`).
    s1_bands, s2_bands
        Bands to keep (``s2_bands=None``: every Sentinel-2 band all S2 Items have).
    chips_per_shard
        Chips per shard, which is also the work of one task. Default: about 64 MiB of
        uncompressed pixels per shard, a whole number of inner chunks of about 1 MiB.
    href_map, collections
        Passed to :func:`eo_contrast.load_stac` (local mirrors, signing; ``item_assets``).
        Must be picklable to run on a distributed cluster.
    mode
        ``"w-"`` (refuse an existing store) or ``"w"`` (overwrite it).
    resume
        Finish an interrupted build: only the shards without a completion record are written.
        The inputs and settings must be those of the interrupted run (the plan's fingerprint is
        checked). A complete store is returned as it is.
    storage_options
        fsspec options for a URL store (credentials, endpoint); they travel with the tasks and
        are never written to the store.
    progress
        Show Dask's progress bar.

    Returns
    -------
    xarray.Dataset
        The corpus, opened with :func:`open_corpus`: ``s1`` ``(chip, s1_band, y, x)`` in dB and
        ``s2`` ``(chip, s2_band, y, x)`` reflectance, float32 on each chip's S2 grid, stored in
        shards of ``chips_per_shard`` chips, in inner chunks of ``chips_per_chunk`` chips (the
        largest divisor of the shard size within about 1 MiB of pixels; Dask chunks: one per
        shard). Coordinates along ``chip``: those of :func:`plan_corpus` (but ``scene``,
        ``pass`` and ``block``), ``valid``, ``s1_nan_fraction``, ``s2_nan_fraction`` and
        ``cloud_fraction`` (NaN without a scene classification). Invalid chips hold NaN (an inner
        chunk of invalid chips only is not stored). The attributes ``mean``, ``std``
        (population) and ``count`` of ``s1`` and ``s2`` are per-band statistics over the finite pixels of the valid chips; group
        attributes record the settings, ``n_chips`` and ``n_valid``.

    Raises
    ------
    ValueError
        Bad settings; no chip to cut (the message says why); ``resume`` on a store planned
        from other inputs or settings.
    FileExistsError
        The store exists and neither ``mode="w"`` nor ``resume`` was given.
    FileNotFoundError, PermissionError
        A missing bucket, or no credentials for an object store (as :func:`eo_contrast.to_zarr`).

    Examples
    --------
    >>> import tempfile, numpy as np, rasterio
    >>> from rasterio.transform import from_origin
    >>> from eo_contrast.corpus import build_corpus
    >>> folder = tempfile.mkdtemp()
    >>> def item(iid, when, bands, values):  # one 32 x 32 px GeoTIFF per band
    ...     for b, v in zip(bands, values):
    ...         with rasterio.open(f"{folder}/{iid}_{b}.tif", "w", driver="GTiff", width=32,
    ...                            height=32, count=1, dtype="float32", crs="EPSG:32631",
    ...                            transform=from_origin(499840, 4400000, 10, 10)) as dst:
    ...             dst.write(np.full((1, 32, 32), v, "float32"))
    ...     x0, y0, x1, y1 = 2.998132, 39.747024, 3.001868, 39.749908  # its corners in lon/lat
    ...     ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    ...     return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "links": [],
    ...             "bbox": [x0, y0, x1, y1], "properties": {
    ...                 "datetime": when, "proj:epsg": 32631, "proj:shape": [32, 32],
    ...                 "proj:transform": [10, 0, 499840, 0, -10, 4400000]},
    ...             "geometry": {"type": "Polygon", "coordinates": [ring]},
    ...             "assets": {b: {"href": f"{folder}/{iid}_{b}.tif", "type": "image/tiff",
    ...                            "raster:bands": [{"unit": "dB"}] if b[0] == "v" else []}
    ...                        for b in bands}}
    >>> s1 = [item("s1", "2021-05-01T06:00:00Z", ["vv", "vh"], [-9.0, -15.0])]
    >>> s2 = [item("s2", "2021-05-02T10:50:00Z", ["B04", "B08"], [0.1, 0.3])]
    >>> corpus = build_corpus(s1, s2, f"{folder}/corpus.zarr", chip=16)
    >>> dict(corpus.sizes), int(corpus.valid.sum()), corpus.crs.values[0]
    ({'chip': 4, 's1_band': 2, 'y': 16, 'x': 16, 's2_band': 2}, 4, 'EPSG:32631')
    >>> corpus.s1.attrs["mean"], corpus.s2.attrs["mean"]
    ([-9.0, -15.0], [0.1, 0.3])
    """
    if mode not in ("w-", "w"):
        raise ValueError(f"mode={mode!r}: use 'w-' (refuse an existing store) or 'w' (overwrite)")
    if resume and mode == "w":
        raise ValueError(
            "resume=True finishes an interrupted build and mode='w' overwrites: pass one"
        )
    max_nan = _check_fraction("max_nan_fraction", max_nan_fraction)
    max_cloud = _check_fraction("max_cloud_fraction", max_cloud_fraction)
    classes = [int(c) for c in cloud_classes]
    url = store_url(store)
    zkw = zarr_kw(url, storage_options)

    plan = _plan(
        s1_items,
        s2_items,
        chip=chip,
        max_dt=max_dt,
        sample=sample,
        region=region,
        seed=seed,
        max_nan_fraction=max_nan,
        one_to_one=one_to_one,
        s1_bands=s1_bands,
        s2_bands=s2_bands,
        cloud_band=cloud_band,
    )
    n = len(plan.chips)
    shard, inner, settings = _build_settings(
        plan, chips_per_shard, max_cloud=max_cloud, cloud_band=cloud_band, classes=classes
    )
    n_units = math.ceil(n / shard)
    fingerprint = _plan_hash(plan, settings)
    attrs = {
        "eo_contrast_format": CORPUS_FORMAT,
        "eo_contrast_format_version": _FORMAT_VERSION,
        **settings,
        "s1_resampling": "bilinear",
        "n_chips": n,
        "plan_fingerprint": fingerprint,
        STATUS_ATTR: "incomplete",
    }

    done = np.zeros(n_units, bool)
    init = True
    if check_target(url, storage_options, mode=mode, resume=resume, job="build"):
        if _check_resumable(url, zkw, fingerprint):
            return open_corpus(url, storage_options=storage_options)
        flags = read_flags(url, zkw, _PROGRESS_UNITS)
        if flags is not None:  # None: killed before the records existed
            init, done = False, flags
    if init:
        _write_template(url, zkw, plan, shard, inner, attrs)

    cfg = {
        "chip": int(plan.settings["chip"]),
        "s1_bands": plan.s1_bands,
        "s2_bands": plan.s2_bands,
        "max_dt": plan.settings["max_dt"],
        "max_nan_fraction": max_nan,
        "max_cloud_fraction": max_cloud,
        "cloud_classes": classes,
        "cloud_assets": {s.id: s.cloud_asset for s in plan.scenes if s.cloud_asset},
        "href_map": href_map,
        "collections": collections,
    }
    run_tasks(
        _unit_tasks(plan, shard, done, url, zkw, cfg),
        progress=progress,
        note=(
            f"eo_contrast.build_corpus: {url!r} is left incomplete; call build_corpus(..., "
            "resume=True) with the same arguments to write the shards still missing"
        ),
    )
    _finish_corpus(url, zkw, n_units)
    return open_corpus(url, storage_options=storage_options)


def _build_settings(
    plan: _Plan,
    chips_per_shard: int | None,
    *,
    max_cloud: float,
    cloud_band: str | None,
    classes: list[int],
) -> tuple[int, int, dict[str, Any]]:
    """Chips per shard and per inner chunk, and the settings recorded in the store."""
    c = int(plan.settings["chip"])
    nb_max = max(len(plan.s1_bands), len(plan.s2_bands))
    nb = len(plan.s1_bands) + len(plan.s2_bands)
    shard = _shard_chips(chips_per_shard, c, nb, len(plan.chips), nb_max)
    inner = _chunk_chips(shard, c, nb_max)
    settings = {
        **plan.settings,
        "max_cloud_fraction": max_cloud,
        "cloud_band": cloud_band or "",
        "cloud_classes": classes,
        "chips_per_shard": shard,
        "chips_per_chunk": inner,
    }
    return shard, inner, settings


def _check_resumable(url: str, zkw: dict[str, Any], fingerprint: str) -> bool:
    """Whether the corpus at ``url`` is complete; ValueError when this build cannot resume it."""
    import zarr

    group: Any = zarr.open_group(url, mode="r", use_consolidated=False, **zkw)
    old = dict(group.attrs)
    if old.get("eo_contrast_format") != CORPUS_FORMAT:
        raise ValueError(
            f"cannot resume {url!r}: it is not a corpus written by build_corpus; pass "
            "mode='w' to overwrite it"
        )
    if old.get("plan_fingerprint") != fingerprint:
        raise ValueError(
            f"cannot resume {url!r}: it was planned from other inputs or settings (its "
            "chips differ from this call's); resume with the same items and settings, or "
            "pass mode='w' to overwrite it"
        )
    return bool(old.get(STATUS_ATTR) == "complete")


def _write_template(
    url: str, zkw: dict[str, Any], plan: _Plan, shard: int, inner: int, attrs: dict[str, Any]
) -> None:
    """Write the corpus's metadata and coordinates (no pixels) and its empty progress records."""
    ds, encoding = _template(plan, shard, inner, attrs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds.to_zarr(
            url,
            mode="w",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encoding,
            **zkw,
        )
    _create_progress(url, zkw, len(plan.chips), shard, (len(plan.s1_bands), len(plan.s2_bands)))


def _unit_tasks(
    plan: _Plan,
    shard: int,
    done: np.ndarray,
    url: str,
    zkw: dict[str, Any],
    cfg: dict[str, Any],
) -> list[Any]:
    """One delayed :func:`_run_unit` per shard not recorded as written.

    The Items of each scene and pass are delayed once, so a graph holds each of them once.
    """
    import dask

    chips = plan.chips
    s2_refs: dict[int, Any] = {}
    s1_refs: dict[int, Any] = {}
    tasks = []
    run = dask.delayed(_run_unit, pure=False)
    for u in np.flatnonzero(~done).tolist():
        start = u * shard
        sub = chips.iloc[start : start + shard]
        scenes_u = sorted(set(sub["scene"].tolist()))
        passes_u = sorted(set(sub["pass"].tolist()))
        for j in scenes_u:
            if j not in s2_refs:
                s = plan.scenes[j]
                s2_refs[j] = dask.delayed(_item_dict(s.item, s.assets), pure=True)
        for i in passes_u:
            if i not in s1_refs:
                keys = [_recipes(it) for it in plan.passes[i].items]
                dicts = [
                    _item_dict(it, [rec[b].asset_key for b in plan.s1_bands])
                    for it, rec in zip(plan.passes[i].items, keys, strict=True)
                ]
                s1_refs[i] = dask.delayed(dicts, pure=True)
        tasks.append(
            run(
                u,
                start,
                sub,
                {j: s2_refs[j] for j in scenes_u},
                {i: s1_refs[i] for i in passes_u},
                url,
                zkw,
                cfg,
            )
        )
    return tasks


def open_corpus(
    store: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> xr.Dataset:
    """Open a corpus written by :func:`build_corpus`, lazily, one Dask chunk per shard.

    Parameters
    ----------
    store
        Local path or fsspec URL.
    storage_options
        fsspec options for a URL (credentials, endpoint).

    Returns
    -------
    xarray.Dataset
        ``s1`` and ``s2`` (Dask chunks of one shard along ``chip``) with their per-chip
        coordinates (see :func:`build_corpus`); ``valid`` says which chips to use.

    Raises
    ------
    FileNotFoundError
        When there is no Zarr store at ``store``.
    ValueError
        When the store is not a corpus, or its build did not finish (the message says how to
        resume it).

    Examples
    --------
    >>> from eo_contrast.corpus import open_corpus
    >>> open_corpus("memory://no/such/corpus.zarr")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no corpus at 'memory://no/such/corpus.zarr': ...
    """
    import zarr

    url = store_url(store)
    zkw = zarr_kw(url, storage_options)
    if store_state(url, storage_options) != "zarr":
        raise FileNotFoundError(
            f"no corpus at {url!r}: build one with build_corpus(...) or check the path"
        )
    attrs: dict[str, Any] = dict(
        zarr.open_group(url, mode="r", use_consolidated=False, **zkw).attrs
    )
    if attrs.get("eo_contrast_format") != CORPUS_FORMAT:
        raise ValueError(
            f"{url!r} is a Zarr store but not a corpus (no eo_contrast_format="
            f"{CORPUS_FORMAT!r}); open it with xarray.open_zarr"
        )
    if attrs.get(STATUS_ATTR) != "complete":
        raise ValueError(
            f"the corpus {url!r} is incomplete (its build was interrupted): finish it with "
            "build_corpus(..., resume=True) and the same arguments"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds = xr.open_zarr(url, chunks=None, consolidated=True, **zkw)
    # one Dask chunk per shard: a read fetches a shard whole (its chips are inner chunks)
    shard = int(attrs.get("chips_per_shard") or ds.sizes["chip"])
    for name in ("s1", "s2"):
        ds[name] = ds[name].chunk({"chip": shard, "y": -1, "x": -1})
    return ds
