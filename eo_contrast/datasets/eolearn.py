"""Reader for the eo-learn example patch of Slovenia: Sentinel-2 scenes and a land-cover raster.

eo-learn's ``example_data`` (see the data folder's ``SOURCE.txt``) holds a 1 km x 1 km area of
interest near Ljubljana (EPSG:32633, 101 rows x 100 columns at about 10 m) as plain ``.npy``
arrays in ``(time, height, width, channel)`` layout::

    REFERENCE_SCENES.npy                     (5, 101, 100, 13) float32  S2 L1C TOA reflectance,
                                                                        B01..B08, B8A, B09..B12
    TestEOPatch/bbox.geojson                 the area's polygon and CRS
    TestEOPatch/timestamps.json              68 acquisition times of the patch's time series
    TestEOPatch/data/NDVI.npy                (68, 101, 100, 1) float32 NDVI at those times
    TestEOPatch/mask_timeless/LULC.npy       (101, 100, 1) uint16 land-cover ids, 0 = nodata
    TestEOPatch/vector_timeless/LULC.gpkg    the land-cover polygons (LULC_ID, LULC_NAME)

The 5 reference scenes come without dates. Each of them is one of the patch's 68 acquisitions:
the NDVI computed from its B04 and B08 equals the patch's NDVI layer at exactly one time (to
float32 rounding), which gives its date. :func:`read_eolearn_slovenia` recovers the dates that
way and sorts the scenes by time, keeping the position in ``REFERENCE_SCENES.npy`` in a
``scene`` coordinate.

Examples
--------
>>> from eo_contrast.datasets.eolearn import EOLEARN_LULC_CLASSES
>>> EOLEARN_LULC_CLASSES[2], EOLEARN_LULC_CLASSES[8]
('forest', 'artificial surface')
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eo_contrast.cube import S2_BANDS
from eo_contrast.datasets.shared_data import example_path

__all__ = ["EOLEARN_LULC_CLASSES", "EOLearnPatch", "read_eolearn_slovenia"]

#: Land-cover classes of eo-learn's examples (``LULC_ID`` -> name); 0 is "no data".
EOLEARN_LULC_CLASSES: dict[int, str] = {
    1: "cultivated land",
    2: "forest",
    3: "grassland",
    4: "shrubland",
    5: "water",
    6: "wetland",
    7: "tundra",
    8: "artificial surface",
    9: "bareland",
    10: "snow and ice",
}
#: Band order of ``REFERENCE_SCENES.npy`` (the canonical Sentinel-2 order, B10 included).
REFERENCE_SCENE_BANDS: tuple[str, ...] = S2_BANDS
_SCENES = "REFERENCE_SCENES.npy"
_PATCH = "TestEOPatch"
# Spellings of the polygon file that differ from the class table.
_SPELLING = {"schrubland": "shrubland"}
# Largest |NDVI(scene) - NDVI(time)| accepted as "the same acquisition" (float32 rounding).
_NDVI_TOL = 1e-4


@dataclass(frozen=True)
class EOLearnPatch:
    """The eo-learn Slovenia patch, read by :func:`read_eolearn_slovenia`.

    Attributes
    ----------
    s2
        Canonical cube ``(time=5, band=13, y=101, x=100)``, float32 Sentinel-2 L1C
        top-of-atmosphere reflectance (0..1), bands in canonical order (B01..B08, B8A, B09, B10,
        B11, B12), a ``units`` coordinate ("1"), EPSG:32633. ``time`` holds the acquisition
        times (recovered, see the module notes); ``scene`` (along ``time``) the index of each
        scene in ``REFERENCE_SCENES.npy``.
    lulc
        ``(y, x)`` int16 land-cover ids on the same grid: eo-learn's ``LULC_ID`` (1 cultivated
        land, 2 forest, 3 grassland, 4 shrubland, 8 artificial surface, ...), -1 for nodata
        (0 in the file).
    classes
        ``LULC_ID`` -> class name for the ids present in ``lulc``, in id order.
    times_recovered
        Whether every scene's date was found (else ``time`` has no coordinate values).
    """

    s2: xr.DataArray
    lulc: xr.DataArray
    classes: dict[int, str]
    times_recovered: bool = True
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def encoded_labels(self) -> tuple[xr.DataArray, list[str]]:
        """The land cover as contiguous class ids ``0..K-1`` (for ``fit_segmentation``).

        Returns
        -------
        labels, names
            ``labels``: int16 ``(y, x)``, class ``i`` = ``names[i]``, -1 nodata; ``names``: the
            class names in the id order of :attr:`classes`.

        Examples
        --------
        >>> import numpy as np, xarray as xr
        >>> lulc = xr.DataArray(np.array([[2, 8], [-1, 2]], dtype="i2"), dims=("y", "x"))
        >>> patch = EOLearnPatch(s2=lulc, lulc=lulc, classes={2: "forest", 8: "artificial surface"})
        >>> labels, names = patch.encoded_labels()
        >>> labels.values.tolist(), names
        ([[0, 1], [-1, 0]], ['forest', 'artificial surface'])
        """
        ids = sorted(self.classes)
        lookup = np.full(max(ids) + 2, -1, dtype=np.int16)
        lookup[np.asarray(ids)] = np.arange(len(ids), dtype=np.int16)
        raw = np.asarray(self.lulc.values).astype(np.int64)
        unknown = np.unique(raw[(raw >= 0) & ~np.isin(raw, ids)])
        if unknown.size:
            raise ValueError(
                f"lulc holds ids {unknown.tolist()} that are not in classes {self.classes}"
            )
        encoded = np.where(raw >= 0, lookup[np.clip(raw, 0, None)], -1).astype(np.int16)
        labels = self.lulc.copy(data=encoded)
        labels.attrs = {
            "long_name": "land cover class",
            "flag_values": list(range(len(ids))),
            "flag_meanings": " ".join(self.classes[i].replace(" ", "_") for i in ids),
            "nodata": -1,
        }
        return labels, [self.classes[i] for i in ids]


def _patch_dir(root: Path) -> Path:
    folder = root / _PATCH
    if not folder.is_dir():
        raise FileNotFoundError(
            f"eo-learn patch folder {folder} not found; `root` must be the folder holding "
            f"{_SCENES} and {_PATCH}/ (eo-learn's example_data)"
        )
    return folder


def _crs_and_bounds(path: Path) -> tuple[str, tuple[float, float, float, float]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the patch's bbox (polygon and CRS) is needed")
    doc = json.loads(path.read_text(encoding="utf-8"))
    try:
        crs = str(doc["crs"]["properties"]["name"])
        ring = np.asarray(doc["coordinates"][0], dtype=np.float64)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path} is not a GeoJSON polygon with a named 'crs' member (eo-learn's bbox format)"
        ) from err
    return crs, (
        float(ring[:, 0].min()),
        float(ring[:, 1].min()),
        float(ring[:, 0].max()),
        float(ring[:, 1].max()),
    )


def _scene_times(folder: Path, scenes: np.ndarray) -> list[np.datetime64] | None:
    """Each scene's acquisition time, by matching its NDVI to the patch's NDVI series."""
    ndvi_path, times_path = folder / "data" / "NDVI.npy", folder / "timestamps.json"
    if not (ndvi_path.is_file() and times_path.is_file()):
        return None
    series = np.load(ndvi_path, allow_pickle=False)[..., 0]
    stamps = json.loads(times_path.read_text(encoding="utf-8"))
    if series.shape[0] != len(stamps) or series.shape[1:] != scenes.shape[1:3]:
        return None
    b04 = scenes[..., S2_BANDS.index("B04")].astype(np.float64)
    b08 = scenes[..., S2_BANDS.index("B08")].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (b08 - b04) / (b08 + b04)
    out: list[np.datetime64] = []
    for i in range(len(scenes)):
        err = np.nanmax(np.abs(series - ndvi[i][None]), axis=(1, 2))
        hits = np.flatnonzero(err < _NDVI_TOL)
        if len(hits) != 1:
            return None
        out.append(np.datetime64(pd.Timestamp(stamps[int(hits[0])]).to_datetime64(), "ns"))
    if len(set(out)) != len(out):
        return None
    return out


def _class_names(folder: Path, ids: list[int]) -> dict[int, str]:
    """Names of ``ids`` from the polygon file's (LULC_ID, LULC_NAME), else the eo-learn table."""
    names: dict[int, str] = {}
    gpkg = folder / "vector_timeless" / "LULC.gpkg"
    if gpkg.is_file():
        try:
            with sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True) as con:
                table = con.execute(
                    "select table_name from gpkg_contents where data_type = 'features'"
                ).fetchone()
                if table is not None:
                    rows = con.execute(
                        f'select distinct LULC_ID, LULC_NAME from "{table[0]}"'
                    ).fetchall()
                    for lulc_id, name in rows:
                        if lulc_id is not None and name:
                            text = str(name).strip().lower()
                            names[int(lulc_id)] = _SPELLING.get(text, text)
        except sqlite3.Error:
            names = {}
    out = {}
    for i in ids:
        name = names.get(i, EOLEARN_LULC_CLASSES.get(i))
        out[i] = name if name is not None else f"class {i}"
    return out


def read_eolearn_slovenia(root: str | Path | None = None) -> EOLearnPatch:
    """Read eo-learn's Slovenia example patch: 5 Sentinel-2 scenes and the land-cover raster.

    Parameters
    ----------
    root
        The folder holding ``REFERENCE_SCENES.npy`` and ``TestEOPatch/`` (eo-learn's
        ``example_data``); ``None``: the shared data folder's ``eolearn_slovenia``.

    Returns
    -------
    EOLearnPatch
        ``s2``: canonical cube ``(time=5, band=13, y=101, x=100)`` float32 L1C reflectance,
        pixels where every band is 0 set to NaN; ``lulc``: ``(y, x)`` int16 ``LULC_ID`` with
        -1 for nodata; ``classes``: ``LULC_ID`` -> name (from ``LULC.gpkg``, else eo-learn's
        table) for the ids present. Both carry the patch's CRS (EPSG:32633) in
        ``spatial_ref`` and pixel-centre ``x``/``y`` coordinates.

    Notes
    -----
    Grid: the bbox (``TestEOPatch/bbox.geojson``) divided into 101 rows x 100 columns, as
    Sentinel Hub rendered it: pixels of 9.9948 m x 9.9974 m (the bbox is not a whole number
    of 10 m pixels).

    Dates: the scenes' dates are not stored with them. Each scene's NDVI (B04, B08) is compared
    with the patch's 68-date NDVI layer; the single time where they agree to 1e-4 everywhere
    is its date (for the shipped data: 2015-07-11, 07-31, 08-20, 08-30 and 09-09). The cube is
    sorted by time; ``scene`` says where each scene was in the file. When the NDVI layer or the
    timestamps are absent, or a scene matches no single time, ``time`` is left without
    coordinate values, in file order, and ``times_recovered`` is ``False``.

    Raises
    ------
    FileNotFoundError
        When a required file is missing (the message names it).
    ValueError
        When the arrays do not have the expected shapes.

    Examples
    --------
    >>> import eo_contrast as ec
    >>> from eo_contrast.datasets.shared_data import example_path
    >>> patch = ec.datasets.read_eolearn_slovenia(example_path("eolearn_slovenia"))
    >>> patch.s2.shape, patch.s2.rio.crs.to_epsg(), str(patch.s2.time.values[0])[:10]
    ((5, 13, 101, 100), 32633, '2015-07-11')
    >>> patch.classes
    {1: 'cultivated land', 2: 'forest', 3: 'grassland', 4: 'shrubland', 8: 'artificial surface'}
    >>> ec.datasets.read_eolearn_slovenia("no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: eo-learn reference scenes no/such/folder/REFERENCE_SCENES.npy not found; ...
    """
    root = Path(example_path("eolearn_slovenia") if root is None else root)
    scenes_path = root / _SCENES
    if not scenes_path.is_file():
        raise FileNotFoundError(
            f"eo-learn reference scenes {scenes_path} not found; `root` must be the folder "
            f"holding {_SCENES} and {_PATCH}/ (eo-learn's example_data)"
        )
    folder = _patch_dir(root)
    scenes = np.load(scenes_path, allow_pickle=False)
    if scenes.ndim != 4 or scenes.shape[-1] != len(REFERENCE_SCENE_BANDS):
        raise ValueError(
            f"{scenes_path} has shape {scenes.shape}; expected (scene, height, width, "
            f"{len(REFERENCE_SCENE_BANDS)}) with bands {list(REFERENCE_SCENE_BANDS)}"
        )
    lulc_path = folder / "mask_timeless" / "LULC.npy"
    if not lulc_path.is_file():
        raise FileNotFoundError(f"land-cover raster {lulc_path} not found")
    lulc_raw = np.load(lulc_path, allow_pickle=False)
    if lulc_raw.ndim == 3:
        lulc_raw = lulc_raw[..., 0]
    n, height, width, _ = scenes.shape
    if lulc_raw.shape != (height, width):
        raise ValueError(
            f"{lulc_path} has shape {lulc_raw.shape}; the scenes are {height} x {width} pixels"
        )
    crs, (left, bottom, right, top) = _crs_and_bounds(folder / "bbox.geojson")
    res_x, res_y = (right - left) / width, (top - bottom) / height
    x = left + (np.arange(width) + 0.5) * res_x
    y = top - (np.arange(height) + 0.5) * res_y

    data = np.moveaxis(scenes.astype(np.float32, copy=False), -1, 1)  # (scene, band, y, x)
    empty = (data == 0).all(axis=1)
    data = np.where(empty[:, None], np.float32(np.nan), data).astype(np.float32)
    times = _scene_times(folder, scenes)
    order = np.arange(n) if times is None else np.argsort(np.asarray(times))
    coords: dict[str, Any] = {
        "band": list(REFERENCE_SCENE_BANDS),
        "units": ("band", ["1"] * len(REFERENCE_SCENE_BANDS)),
        "y": y,
        "x": x,
        "scene": ("time", order.astype(np.int64)),
    }
    if times is not None:
        coords["time"] = np.asarray(times, dtype="datetime64[ns]")[order]
    s2 = xr.DataArray(data[order], dims=("time", "band", "y", "x"), coords=coords, name="s2")
    s2 = s2.rio.write_crs(crs)
    s2.attrs = {
        "long_name": "Sentinel-2 L1C top-of-atmosphere reflectance",
        "units": "1",
        "processing_level": "L1C",
        "source": str(scenes_path),
        "time_source": (
            "recovered: the scene's NDVI equals the patch's NDVI layer at this time"
            if times is not None
            else "unknown: REFERENCE_SCENES.npy records no dates"
        ),
    }

    present = sorted(int(v) for v in np.unique(lulc_raw) if v != 0)
    classes = _class_names(folder, present)
    lulc = xr.DataArray(
        np.where(lulc_raw == 0, -1, lulc_raw.astype(np.int64)).astype(np.int16),
        dims=("y", "x"),
        coords={"y": y, "x": x},
        name="lulc",
    ).rio.write_crs(crs)
    lulc.attrs = {
        "long_name": "land cover (eo-learn LULC_ID)",
        "flag_values": present,
        "flag_meanings": " ".join(classes[i].replace(" ", "_") for i in present),
        "nodata": -1,
        "source": str(lulc_path),
    }
    return EOLearnPatch(
        s2=s2,
        lulc=lulc,
        classes=classes,
        times_recovered=times is not None,
        metadata={"bbox": (left, bottom, right, top), "crs": str(s2.rio.crs)},
    )
