"""A synthetic, physically plausible Sentinel-1 / Sentinel-2 flood scene, written like real data.

:func:`synthetic_scene` draws a land-cover map (water, vegetation, urban, bare soil) with a
meandering river, towns and fields, floods it (water extent grows after the event, then
recedes), renders Sentinel-2 L2A-like reflectance (textbook per-class spectra, texture, clouds, a
nodata strip) and Sentinel-1 RTC-like backscatter (per-class means, gamma speckle) on two
different grids, and writes everything as Cloud-Optimised GeoTIFFs with a local STAC catalogue.
Demos and tests then go through the same STAC -> odc-stac path as real data.

Files written under ``path``::

    catalog.json                                 self-contained STAC catalogue, 2 collections
    sentinel-1-rtc/collection.json
    sentinel-1-rtc/<item id>/<item id>.json      one Item per S1 date; assets vv.tif, vh.tif
    sentinel-2-l2a/collection.json
    sentinel-2-l2a/<item id>/<item id>.json      one Item per S2 date; assets B01.tif .. B12.tif
    s1_items.json, s2_items.json                 the same Items as GeoJSON FeatureCollections
                                                 (asset hrefs relative to ``path``)
    label.tif                                    int16 water label at the event: -1, 0, 1
    landcover.tif                                uint8 pre-event land cover (CLASS_NAMES codes)

Everything is drawn from ``seed``: the same seed (and size) gives byte-identical files on one
platform.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "CLASS_NAMES",
    "EXPECTED_PAIRS",
    "EXPECTED_PAIRS_MANY_TO_ONE",
    "S1_TIMES",
    "S2_L2A_BANDS",
    "S2_TIMES",
    "SyntheticScene",
    "synthetic_scene",
]

#: Land-cover classes; the index is the code in ``landcover.tif``.
CLASS_NAMES: tuple[str, ...] = ("water", "vegetation", "urban", "bare_soil")
WATER, VEGETATION, URBAN, BARE_SOIL = range(4)

#: The 12 Sentinel-2 L2A bands written (L2A has no B10), canonical order.
S2_L2A_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)  # fmt: skip

CRS = "EPSG:32630"
_EPSG = 32630
_RES = 10.0
_X0, _Y0 = 680_000.0, 4_220_000.0  # S2 grid's upper-left corner (UTM 30N, south-east Spain)
# S1 grid: origin shifted by a fraction of a pixel and 2 pixels wider and taller (so it covers
# S2's grid): pairing has to reproject S1 onto S2's grid.
_S1_DX, _S1_DY = -6.3, 5.9

#: Acquisition times (naive UTC). S1: two ascending tracks (~18:00), two descending (~06:00).
S1_TIMES: tuple[pd.Timestamp, ...] = tuple(
    pd.Timestamp(t)
    for t in (
        "2023-10-04T18:05:12",
        "2023-10-11T06:10:41",
        "2023-10-16T18:05:12",
        "2023-10-17T06:02:33",
        "2023-10-23T17:57:40",
    )
)
#: S2 every 5 days at 10:50:31.
S2_TIMES: tuple[pd.Timestamp, ...] = tuple(
    pd.Timestamp(t)
    for t in (
        "2023-10-06T10:50:31",
        "2023-10-11T10:50:31",
        "2023-10-16T10:50:31",
        "2023-10-21T10:50:31",
        "2023-10-26T10:50:31",
    )
)
_RAIN_START = pd.Timestamp("2023-10-14")  # the flood starts rising on this day
EVENT_TIME = pd.Timestamp("2023-10-16")  # peak extent; the day the label describes
_DAY = pd.Timedelta(days=1)

#: ``(s1_time, s2_time)`` pairs that nearest-in-time pairing with ``max_dt="3D"`` and
#: ``one_to_one=True`` must find (each S2 time takes its nearest S1 time within 3 days; an S1
#: time serves at most one S2 time, closest first). S2 2023-10-26 stays unpaired: its only S1
#: time within 3 days (10-23, 2 d 16 h 53 min away) serves S2 10-21 (2 d 7 h 7 min away); S1
#: 10-17 is unused (S2 10-16 has S1 10-16, 7 h 15 min away).
EXPECTED_PAIRS: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = (
    (S1_TIMES[0], S2_TIMES[0]),  # 1 d 16 h 45 min
    (S1_TIMES[1], S2_TIMES[1]),  # 4 h 40 min
    (S1_TIMES[2], S2_TIMES[2]),  # 7 h 15 min
    (S1_TIMES[4], S2_TIMES[3]),  # 2 d 7 h 7 min
)
#: The same with ``one_to_one=False``: S1 2023-10-23 also serves S2 2023-10-26.
EXPECTED_PAIRS_MANY_TO_ONE: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = (
    *EXPECTED_PAIRS,
    (S1_TIMES[4], S2_TIMES[4]),  # 2 d 16 h 53 min
)

# Per S2 date: cloud cover fraction, and whether a nodata strip (swath edge) cuts the image.
_S2_CLOUD = (0.0, 0.35, 0.06, 0.15, 0.0)
_S2_STRIP = (False, False, False, False, True)
_S2_PLATFORM = ("sentinel-2b", "sentinel-2a", "sentinel-2b", "sentinel-2a", "sentinel-2b")
# S1 tracks: (orbit state, relative orbit) per date.
_S1_TRACK = (
    ("ascending", 103),
    ("descending", 8),
    ("ascending", 103),
    ("descending", 81),
    ("ascending", 30),
)

# --- Band metadata (Sentinel-2A MSI): common name, centre wavelength, FWHM (micrometres) ---
_S2_META = {
    "B01": ("coastal", 0.443, 0.027, "Coastal aerosol"),
    "B02": ("blue", 0.490, 0.098, "Blue"),
    "B03": ("green", 0.560, 0.045, "Green"),
    "B04": ("red", 0.665, 0.038, "Red"),
    "B05": ("rededge", 0.704, 0.019, "Vegetation red edge 1"),
    "B06": ("rededge", 0.740, 0.018, "Vegetation red edge 2"),
    "B07": ("rededge", 0.783, 0.028, "Vegetation red edge 3"),
    "B08": ("nir", 0.842, 0.145, "NIR"),
    "B8A": ("nir08", 0.865, 0.033, "Narrow NIR"),
    "B09": ("nir09", 0.945, 0.026, "Water vapour"),
    "B11": ("swir16", 1.610, 0.143, "SWIR 1.6"),
    "B12": ("swir22", 2.190, 0.242, "SWIR 2.2"),
}

# --- Surface reflectance spectra (BOA, 0..1), S2_L2A_BANDS order; textbook shapes ---
#            B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B11    B12
_SPECTRA = np.array(
    [
        [
            0.060,
            0.058,
            0.055,
            0.038,
            0.026,
            0.016,
            0.013,
            0.011,
            0.009,
            0.006,
            0.004,
            0.003,
        ],  # river
        [
            0.030,
            0.040,
            0.080,
            0.040,
            0.110,
            0.260,
            0.340,
            0.380,
            0.400,
            0.300,
            0.200,
            0.100,
        ],  # veg.
        [
            0.100,
            0.110,
            0.130,
            0.150,
            0.160,
            0.170,
            0.180,
            0.190,
            0.200,
            0.190,
            0.220,
            0.200,
        ],  # urban
        [
            0.080,
            0.100,
            0.140,
            0.190,
            0.220,
            0.240,
            0.260,
            0.280,
            0.290,
            0.270,
            0.350,
            0.300,
        ],  # soil
    ]
)
_FLOOD_WATER = np.array(  # turbid, sediment-laden flood water: brighter in the visible
    [0.070, 0.072, 0.085, 0.075, 0.055, 0.032, 0.026, 0.021, 0.018, 0.010, 0.007, 0.005]
)
_CLOUD = np.array(
    [0.520, 0.530, 0.540, 0.550, 0.560, 0.560, 0.570, 0.570, 0.570, 0.450, 0.400, 0.300]
)
_S2_LUT = np.vstack([_SPECTRA, _FLOOD_WATER])  # code len(CLASS_NAMES) = flood water

# --- Sentinel-1 gamma0 means in dB (VV, VH) per class ---
_S1_DB = np.array([[-22.0, -28.0], [-8.0, -14.0], [0.0, -8.0], [-13.0, -20.0]])
_LOOKS = 4.4  # equivalent number of looks of the speckle (Planetary Computer RTC: 4.4)

S1_NODATA = -32768.0
S2_NODATA = 0


@dataclass(frozen=True)
class SyntheticScene:
    """What :func:`synthetic_scene` wrote, and the facts a test or demo can check against.

    Attributes
    ----------
    root
        The folder written.
    catalog
        ``catalog.json``: self-contained STAC catalogue (collections ``sentinel-1-rtc``,
        ``sentinel-2-l2a``; relative links and hrefs).
    s1_items, s2_items
        GeoJSON FeatureCollections of the S1 / S2 Items; asset hrefs are relative to ``root``.
    label
        int16 GeoTIFF on the S2 grid: water at ``event_time`` (1), dry (0), nodata under thick
        cloud in the S2 image of that day (-1).
    landcover
        uint8 GeoTIFF on the S2 grid: pre-event land cover, codes index ``class_names``.
    crs
        CRS of both grids (``"EPSG:32630"``).
    s2_shape, s1_shape
        ``(height, width)`` of the grids.
    s2_transform, s1_transform
        Affine transforms ``(a, b, c, d, e, f)``. S1's grid is 2 pixels wider and taller and
        its origin is offset by (-6.3 m, +5.9 m) from S2's: it covers S2's grid, off by a
        fraction of a pixel.
    s1_times, s2_times
        Acquisition times (naive UTC), sorted.
    event_time
        The day of peak flood extent, which ``label`` describes.
    expected_pairs
        ``(s1_time, s2_time)`` pairs of nearest-in-time pairing, ``max_dt="3D"``,
        ``one_to_one=True``.
    expected_pairs_many_to_one
        The same with ``one_to_one=False``.
    class_names
        Land-cover class names by code.
    s2_cloud_cover
        Percentage of cloudy pixels per S2 time (also ``eo:cloud_cover`` of the Items).
    """

    root: Path
    catalog: Path
    s1_items: Path
    s2_items: Path
    label: Path
    landcover: Path
    crs: str
    s2_shape: tuple[int, int]
    s1_shape: tuple[int, int]
    s2_transform: tuple[float, float, float, float, float, float]
    s1_transform: tuple[float, float, float, float, float, float]
    s1_times: tuple[pd.Timestamp, ...]
    s2_times: tuple[pd.Timestamp, ...]
    event_time: pd.Timestamp
    expected_pairs: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
    expected_pairs_many_to_one: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]
    class_names: tuple[str, ...]
    s2_cloud_cover: tuple[float, ...]

    def item_collection(self, sensor: Literal["s1", "s2"]) -> Any:
        """The Items of one sensor as a :class:`pystac.ItemCollection` with absolute hrefs.

        Examples
        --------
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> scene = synthetic_scene(tmp.name, size=32)
        >>> items = scene.item_collection("s1")
        >>> len(items), Path(items.items[0].assets["vv"].href).is_file()
        (5, True)
        >>> tmp.cleanup()
        """
        import pystac

        if sensor not in ("s1", "s2"):
            raise ValueError(f"sensor={sensor!r}: use 's1' or 's2'")
        path = self.s1_items if sensor == "s1" else self.s2_items
        items = pystac.ItemCollection.from_file(str(path))
        base = path.parent.resolve()
        for item in items:
            for asset in item.assets.values():
                asset.href = str((base / asset.href).resolve())
        return items


# ------------------------------------------------------------------------------------------
# Smooth random fields, evaluated at arbitrary pixel centres (so both grids see one landscape)
# ------------------------------------------------------------------------------------------
class _Field:
    """Sum of random plane waves: a smooth, stationary field of about unit variance."""

    def __init__(self, rng: np.random.Generator, kmin: float, kmax: float, n: int = 24) -> None:
        k = rng.uniform(kmin, kmax, n)
        theta = rng.uniform(0.0, 2.0 * np.pi, n)
        self.kx = 2.0 * np.pi * k * np.cos(theta)
        self.ky = 2.0 * np.pi * k * np.sin(theta)
        self.phase = rng.uniform(0.0, 2.0 * np.pi, n)
        amp = 1.0 / k
        self.amp = amp / np.sqrt(np.sum(amp**2) / 2.0)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        # cos(kx u + ky v + p) = cos(kx u) cos(ky v + p) - sin(kx u) sin(ky v + p): on a regular
        # grid (u along x, v along y) the sum over waves is one matrix product.
        ax = np.outer(self.kx, u)  # (wave, x)
        ay = np.outer(v, self.ky) + self.phase  # (y, wave)
        left = np.concatenate([np.cos(ay) * self.amp, np.sin(ay) * self.amp], axis=1)
        right = np.concatenate([np.cos(ax), -np.sin(ax)], axis=0)
        return left @ right


@dataclass(frozen=True)
class _Grid:
    x0: float
    y0: float
    height: int
    width: int

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        return (_RES, 0.0, self.x0, 0.0, -_RES, self.y0)


class _Landscape:
    """The scene's geometry, drawn once from the seed, evaluated on any grid."""

    def __init__(self, seed: int, size: int) -> None:
        def rng(stream: int) -> np.random.Generator:
            return np.random.default_rng(np.random.SeedSequence([seed, stream]))

        self.size = size
        r = rng(1)
        self.river = (
            r.uniform(0.08, 0.12),
            r.uniform(0.8, 1.3),
            r.uniform(0, 2 * np.pi),
            r.uniform(0.03, 0.05),
            r.uniform(2.0, 3.0),
            r.uniform(0, 2 * np.pi),
            r.uniform(0.4, 0.6),
        )
        self.half_width = max(2.5 / size, 0.012)
        self.relief = _Field(rng(2), 1.0, 4.0)
        self.relief_detail = _Field(rng(8), 4.0, 12.0, n=48)
        self.soil = _Field(rng(3), 2.0, 7.0, n=48)
        self.urban_edge = _Field(rng(4), 8.0, 16.0, n=48)
        self.vigour = _Field(rng(5), 4.0, 12.0, n=64)
        self.texture = _Field(rng(6), 12.0, 30.0, n=96)
        r = rng(7)
        towns: list[tuple[float, float, float]] = []
        for _ in range(200):
            if len(towns) == 3:
                break
            cu, cv = r.uniform(0.1, 0.9, 2)
            if self._distance(np.array([cu]), np.array([cv]))[0, 0] > 0.22 and all(
                math.hypot(cu - tu, cv - tv) > 0.25 for tu, tv, _ in towns
            ):
                towns.append((cu, cv, r.uniform(0.04, 0.07)))
        self.towns = towns
        self.clouds = [_Field(rng(100 + i), 2.0, 9.0) for i in range(len(S2_TIMES))]

    def _distance(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a1, f1, p1, a2, f2, p2, v0 = self.river
        centre = v0 + a1 * np.sin(2 * np.pi * f1 * u + p1) + a2 * np.sin(2 * np.pi * f2 * u + p2)
        slope = a1 * 2 * np.pi * f1 * np.cos(
            2 * np.pi * f1 * u + p1
        ) + a2 * 2 * np.pi * f2 * np.cos(2 * np.pi * f2 * u + p2)
        return np.abs(v[:, None] - centre[None, :]) / np.sqrt(1.0 + slope[None, :] ** 2)

    def coords(self, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
        extent = self.size * _RES
        u = (grid.x0 + (np.arange(grid.width) + 0.5) * _RES - _X0) / extent
        v = (_Y0 - (grid.y0 - (np.arange(grid.height) + 0.5) * _RES)) / extent
        return u, v

    def evaluate(self, grid: _Grid) -> dict[str, np.ndarray]:
        u, v = self.coords(grid)
        dist = self._distance(u, v)
        # metres above the river: a valley around it, rolling relief, small hollows
        height = 25.0 * dist + 2.0 * self.relief(u, v) + 0.8 * self.relief_detail(u, v)
        blob = np.zeros((v.size, u.size))
        for cu, cv, sigma in self.towns:
            gx = np.exp(-((u - cu) ** 2) / (2 * sigma**2))
            gy = np.exp(-((v - cv) ** 2) / (2 * sigma**2))
            blob = np.maximum(blob, np.outer(gy, gx))
        urban = blob + 0.15 * self.urban_edge(u, v) > 0.5
        soil = self.soil(u, v) > 0.55
        cover = np.full(dist.shape, VEGETATION, dtype=np.uint8)
        cover[soil] = BARE_SOIL
        cover[urban] = URBAN
        cover[dist < self.half_width] = WATER
        return {
            "u": u,
            "v": v,
            "height": height,
            "cover": cover,
            "vigour": self.vigour(u, v),
            "texture": self.texture(u, v),
        }


def _flood_fraction(time: pd.Timestamp) -> float:
    """Fraction of the scene newly under water on a given day (peak on EVENT_TIME)."""
    days = (time.normalize() - _RAIN_START).days
    if days < 0:
        return 0.0
    peak = (EVENT_TIME - _RAIN_START).days
    return 0.22 * math.exp(-max(0, days - peak) / 6.0)


def _water_levels(s2: dict[str, np.ndarray]) -> dict[pd.Timestamp, float]:
    """Water level (m) per day, chosen on the S2 grid so the flood covers the target fraction."""
    floodable = (s2["cover"] != WATER) & (s2["cover"] != URBAN)
    heights = np.sort(s2["height"][floodable])
    levels = {}
    for t in sorted({t.normalize() for t in (*S1_TIMES, *S2_TIMES, EVENT_TIME)}):
        n = round(_flood_fraction(t) * s2["cover"].size)
        levels[t] = -np.inf if n == 0 else float(heights[min(n, heights.size) - 1]) + 1e-9
    return levels


def _water(land: dict[str, np.ndarray], level: float) -> tuple[np.ndarray, np.ndarray]:
    """(permanent or flood water, flood water only) masks for one water level."""
    floodable = (land["cover"] != WATER) & (land["cover"] != URBAN)
    flood = floodable & (land["height"] <= level)
    return (land["cover"] == WATER) | flood, flood


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------
def _render_s2(
    land: dict[str, Any],
    level: float,
    peak_level: float,
    after_peak: bool,
    cloud_field: np.ndarray | None,
    cloud_fraction: float,
    rng: np.random.Generator,
    static: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (y, x, band) and cloud opacity (y, x) of one S2 date.

    ``static`` is per-pixel white noise of unit variance, the same on every date (the texture
    of the surface); sensor noise is drawn from ``rng`` for each date.
    """
    cover = land["cover"]
    water, flood = _water(land, level)
    _, peak_flood = _water(land, peak_level)
    damp = peak_flood & ~water & after_peak
    code = np.where(flood, len(CLASS_NAMES), cover)
    refl = _S2_LUT[code]  # (y, x, band)
    veg = code == VEGETATION
    fc = np.clip(0.85 + 0.1 * land["vigour"][veg], 0.6, 1.0)[:, None]  # fractional cover
    refl[veg] = fc * _SPECTRA[VEGETATION] + (1 - fc) * _SPECTRA[BARE_SOIL]
    brightness = 1.0 + 0.05 * land["texture"] + 0.04 * static
    brightness = np.where(cover == URBAN, brightness + 0.08 * static, brightness)
    refl *= np.where(water, 1.0 + 0.012 * static, brightness)[..., None]
    # Damp soil left by the receding flood: darker, most in the SWIR (water absorption).
    refl[damp] *= np.array([0.8] * 9 + [0.7, 0.55, 0.5])
    alpha = np.zeros(cover.shape)
    if cloud_field is not None and cloud_fraction > 0:
        threshold = np.quantile(cloud_field, 1.0 - cloud_fraction)
        alpha = np.clip((cloud_field - threshold) / 0.6 + 0.15, 0.0, 1.0)
        alpha = np.where(cloud_field > threshold, alpha, 0.0)
        refl = (1 - alpha)[..., None] * refl + alpha[..., None] * _CLOUD
    refl += rng.normal(0.0, 0.003, refl.shape)  # sensor noise
    return refl, alpha


def _render_s1(
    land: dict[str, Any],
    level: float,
    peak_level: float,
    after_peak: bool,
    rng: np.random.Generator,
    static: np.ndarray,
) -> np.ndarray:
    """Linear gamma0 (pol, y, x) of one S1 date (``static`` as in :func:`_render_s2`)."""
    cover = land["cover"]
    water, _ = _water(land, level)
    _, peak_flood = _water(land, peak_level)
    damp = peak_flood & ~water & after_peak
    db = _S1_DB[cover].transpose(2, 0, 1)  # (pol, y, x)
    db = db + (1.0 * land["texture"] + 1.5 * static)[None]
    db = np.where((cover == URBAN)[None], db + 3.0 * static[None], db)
    calm = _S1_DB[WATER][:, None, None] + 0.5 * (land["texture"] + static)[None]
    db = np.where(water[None], calm, db)
    db = np.where(damp[None], db + 1.5, db)  # wet soil: higher dielectric constant
    speckle = rng.gamma(_LOOKS, 1.0 / _LOOKS, db.shape)
    return (10.0 ** (db / 10.0)) * speckle


def _write_cog(
    path: Path,
    data: np.ndarray,
    *,
    grid: _Grid,
    nodata: float | int | None,
    description: str,
    resampling: str = "average",
) -> None:
    import rasterio
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": data.dtype.name,
        "crs": CRS,
        "transform": Affine(*grid.transform),
        "nodata": nodata,
        "compress": "DEFLATE",
        "predictor": "YES",
        "blocksize": 256,
        # Overviews only where they help (they cost most of the writing time)
        "overviews": "AUTO" if max(grid.height, grid.width) > 512 else "NONE",
        "overview_resampling": resampling,
        "bigtiff": "NO",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, description)


# ------------------------------------------------------------------------------------------
# STAC
# ------------------------------------------------------------------------------------------
_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
}
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"


def _footprint(grid: _Grid) -> tuple[dict[str, Any], list[float]]:
    from rasterio.warp import transform

    x1 = grid.x0 + grid.width * _RES
    y1 = grid.y0 - grid.height * _RES
    xs = [grid.x0, x1, x1, grid.x0, grid.x0]
    ys = [grid.y0, grid.y0, y1, y1, grid.y0]
    lon, lat = transform(CRS, "EPSG:4326", xs, ys)
    ring = [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    return {"type": "Polygon", "coordinates": [ring]}, [round(b, 7) for b in bbox]


def _proj(grid: _Grid) -> dict[str, Any]:
    return {
        "proj:epsg": _EPSG,
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform),
        "proj:bbox": [grid.x0, grid.y0 - grid.height * _RES, grid.x0 + grid.width * _RES, grid.y0],
    }


def _utc(t: pd.Timestamp) -> Any:
    return t.tz_localize("UTC").to_pydatetime()


def _s2_item(index: int, grid: _Grid, folder: Path, cloud: float, nodata_pct: float) -> Any:
    import pystac

    t = S2_TIMES[index]
    platform = _S2_PLATFORM[index]
    item_id = (
        f"S2{platform[-1].upper()}_MSIL2A_{t:%Y%m%dT%H%M%S}_R051_T30SXH_"
        f"{t + pd.Timedelta(hours=4, minutes=12, seconds=7):%Y%m%dT%H%M%S}"
    )
    geometry, bbox = _footprint(grid)
    props = {
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": cloud,
        "s2:mgrs_tile": "30SXH",
        "s2:processing_baseline": "05.10",
        "s2:product_type": "S2MSI2A",
        "s2:nodata_pixel_percentage": nodata_pct,
        "sat:orbit_state": "descending",
        "sat:relative_orbit": 51,
        **_proj(grid),
    }
    item = pystac.Item(
        item_id,
        geometry,
        bbox,
        _utc(t),
        props,
        stac_extensions=[_EXT[k] for k in ("eo", "proj", "raster", "sat")],
    )
    for band in S2_L2A_BANDS:
        common, centre, fwhm, title = _S2_META[band]
        item.add_asset(
            band,
            pystac.Asset(
                str(folder / item_id / f"{band}.tif"),
                title=f"Band {band} - {title} - 10m",
                media_type=_COG,
                roles=["data", "reflectance"],
                extra_fields={
                    "gsd": _RES,
                    "eo:bands": [
                        {
                            "name": band,
                            "common_name": common,
                            "description": title,
                            "center_wavelength": centre,
                            "full_width_half_max": fwhm,
                        }
                    ],
                    "raster:bands": [
                        {
                            "nodata": S2_NODATA,
                            "data_type": "uint16",
                            "spatial_resolution": _RES,
                            "scale": 0.0001,
                            "offset": -0.1,
                        }
                    ],
                },
            ),
        )
    return item


def _s1_item(index: int, grid: _Grid, folder: Path) -> Any:
    import pystac

    t = S1_TIMES[index]
    state, rel_orbit = _S1_TRACK[index]
    abs_orbit = 50_612 + round((t - S1_TIMES[0]).total_seconds() / 86_400 * 175 / 12)
    end = t + pd.Timedelta(seconds=25)
    item_id = (
        f"S1A_IW_GRDH_1SDV_{t:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}_{abs_orbit:06d}_"
        f"{(abs_orbit * 2654435761) % 0xFFFFFF:06X}_rtc"
    )
    geometry, bbox = _footprint(grid)
    props = {
        "platform": "SENTINEL-1A",
        "constellation": "Sentinel-1",
        "s1:resolution": "high",
        "sar:polarizations": ["VV", "VH"],
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:product_type": "GRD",
        "sar:looks_equivalent_number": _LOOKS,
        "sat:orbit_state": state,
        "sat:relative_orbit": rel_orbit,
        "sat:absolute_orbit": abs_orbit,
        **_proj(grid),
    }
    item = pystac.Item(
        item_id,
        geometry,
        bbox,
        _utc(t),
        props,
        stac_extensions=[_EXT[k] for k in ("sar", "sat", "proj", "raster")],
    )
    for pol in ("vv", "vh"):
        item.add_asset(
            pol,
            pystac.Asset(
                str(folder / item_id / f"{pol}.tif"),
                title=f"{pol.upper()}: vertical transmit, "
                f"{'vertical' if pol == 'vv' else 'horizontal'} receive",
                description="Terrain-corrected gamma naught (linear power), synthetic",
                media_type=_COG,
                roles=["data"],
                extra_fields={
                    "raster:bands": [
                        {"nodata": S1_NODATA, "data_type": "float32", "spatial_resolution": _RES}
                    ]
                },
            ),
        )
    return item


def _collection(collection_id: str, title: str, items: list[Any]) -> Any:
    import pystac

    times = [i.datetime for i in items]
    boxes = np.array([i.bbox for i in items])
    bbox = [*boxes[:, :2].min(axis=0).tolist(), *boxes[:, 2:].max(axis=0).tolist()]
    coll = pystac.Collection(
        collection_id,
        description=f"{title}: synthetic flood scene written by eo_contrast.synthetic_scene",
        extent=pystac.Extent(
            pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(times), max(times)]])
        ),
        title=title,
        license="CC0-1.0",
        keywords=["synthetic", "flood"],
    )
    for item in items:
        coll.add_item(item)
    return coll


def _feature_collection(items: list[Any], root: Path) -> dict[str, Any]:
    features = []
    for item in items:
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        for asset in d["assets"].values():
            asset["href"] = Path(asset["href"]).relative_to(root).as_posix()
        features.append(d)
    return {"type": "FeatureCollection", "features": features}


_OUTPUTS = (
    "catalog.json",
    "sentinel-1-rtc",
    "sentinel-2-l2a",
    "s1_items.json",
    "s2_items.json",
    "label.tif",
    "landcover.tif",
)


def synthetic_scene(
    path: str | Path, *, size: int = 256, seed: int = 0, overwrite: bool = False
) -> SyntheticScene:
    """Write a deterministic S1/S2 flood scene (COGs + a local STAC catalogue) to ``path``.

    The landscape (UTM 30N, 10 m pixels, ``size`` x ``size`` on the S2 grid) has a meandering
    river, towns, fields of vegetation and bare soil drawn from smooth random fields. A flood
    starts on 2023-10-14, peaks on 2023-10-16 (about 22 % of the scene newly under water,
    never in towns) and recedes, leaving damp soil.

    * Sentinel-2 L2A-like, 5 dates (``S2_TIMES``), 12 bands, one COG per band: uint16
      ``DN = (reflectance + 0.1) * 1e4`` (processing baseline 05.10; ``raster:bands`` scale
      1e-4, offset -0.1, nodata 0). Textbook spectra (water dark and falling into the NIR and
      SWIR; vegetation with a red-edge jump to NIR 0.3-0.45; urban flat 0.1-0.2; soil rising
      0.1-0.35), texture, sensor noise; clouds (bright, smooth, valid data) on 2023-10-11
      (35 %), 10-16 (6 %) and 10-21 (15 %); a nodata strip (swath edge) on 10-26.
    * Sentinel-1 RTC-like ("sentinel-1-rtc" as on Planetary Computer), 5 dates
      (``S1_TIMES``): VV and VH float32 *linear* gamma0, nodata -32768, class means in dB
      (water -22/-28, vegetation -8/-14, urban 0/-8, bare soil -13/-20), gamma speckle of 4.4
      looks. Its grid is 2 pixels larger and its origin is offset by (-6.3 m, +5.9 m) from
      S2's, so pairing must reproject.
    * ``label.tif`` (int16, S2 grid): water on 2023-10-16 = 1, dry = 0, -1 under the thick
      clouds of that day's S2 image; ``landcover.tif`` (uint8): pre-event classes.
    * Nearest-in-time pairing within 3 days finds 4 pairs with ``one_to_one=True``
      (``EXPECTED_PAIRS``): S2 2023-10-26 stays unpaired because its only S1 time within 3
      days (10-23) is closer to S2 10-21; with ``one_to_one=False`` it pairs too (5 pairs).
    * STAC: ``catalog.json`` (self-contained, relative links) and ``s1_items.json`` /
      ``s2_items.json`` FeatureCollections whose asset hrefs are relative to ``path``: resolve
      them against the file's folder (:meth:`SyntheticScene.item_collection` does).

    Parameters
    ----------
    path
        Folder to write (created if needed).
    size
        Width and height of the S2 grid in pixels (at least 32).
    seed
        Random seed: the same seed and size give byte-identical files (on one platform).
    overwrite
        Replace a scene already written in ``path``. Without it, an existing scene is an error.

    Returns
    -------
    SyntheticScene
        Paths, grids, dates, the expected S1/S2 pairs and the class names.

    Raises
    ------
    FileExistsError
        When ``path`` already holds a scene and ``overwrite`` is False.
    ValueError
        When ``size`` is too small.

    Examples
    --------
    >>> import tempfile
    >>> import eo_contrast as ec
    >>> tmp = tempfile.TemporaryDirectory()
    >>> scene = ec.synthetic_scene(tmp.name, size=32, seed=1)
    >>> scene.catalog.name, len(scene.s1_times), len(scene.s2_times), scene.crs
    ('catalog.json', 5, 5, 'EPSG:32630')
    >>> [(str(s1), str(s2)) for s1, s2 in scene.expected_pairs][2]
    ('2023-10-16 18:05:12', '2023-10-16 10:50:31')
    >>> ec.synthetic_scene(scene.root, size=32)
    Traceback (most recent call last):
    ...
    FileExistsError: ... already holds a synthetic scene (catalog.json, ...); pass overwrite=True ...
    >>> tmp.cleanup()
    """
    import pystac

    if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 32:
        raise ValueError(f"size={size!r}: use an integer of at least 32 pixels")
    root = Path(path)
    present = [name for name in _OUTPUTS if (root / name).exists()]
    if present:
        if not overwrite:
            raise FileExistsError(
                f"{root} already holds a synthetic scene ({', '.join(present)}); pass "
                "overwrite=True to replace it, or choose another folder"
            )
        for name in present:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)
    root_abs = root.resolve()

    size = int(size)
    s2_grid = _Grid(_X0, _Y0, size, size)
    s1_grid = _Grid(_X0 + _S1_DX, _Y0 + _S1_DY, size + 2, size + 2)
    scene = _Landscape(seed, size)
    s2_land: dict[str, Any] = scene.evaluate(s2_grid)
    s1_land: dict[str, Any] = scene.evaluate(s1_grid)
    levels = _water_levels(s2_land)
    peak = levels[EVENT_TIME]

    def rng(stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([seed, stream]))

    s2_static = rng(20).standard_normal((s2_grid.height, s2_grid.width))
    s1_static = rng(21).standard_normal((s1_grid.height, s1_grid.width))

    s2_dir, s1_dir = root_abs / "sentinel-2-l2a", root_abs / "sentinel-1-rtc"
    s2_items, s1_items, clouds, event_alpha = [], [], [], None
    for i, t in enumerate(S2_TIMES):
        cloud_field = scene.clouds[i](s2_land["u"], s2_land["v"]) if _S2_CLOUD[i] else None
        refl, alpha = _render_s2(
            s2_land,
            levels[t.normalize()],
            peak,
            t > EVENT_TIME + _DAY,
            cloud_field,
            _S2_CLOUD[i],
            rng(200 + i),
            s2_static,
        )
        dn = np.clip(np.rint((refl + 0.1) * 1e4), 1, 65535).astype(np.uint16)
        if _S2_STRIP[i]:
            strip = s2_land["u"][None, :] < 0.12 + 0.08 * s2_land["v"][:, None]
            dn[strip] = S2_NODATA
            nodata_pct = round(100.0 * float(strip.mean()), 4)
        else:
            nodata_pct = 0.0
        if t.normalize() == EVENT_TIME:
            event_alpha = alpha
        cloud = round(100.0 * float((alpha > 0.1).mean()), 4)
        clouds.append(cloud)
        item = _s2_item(i, s2_grid, s2_dir, cloud, nodata_pct)
        for b, band in enumerate(S2_L2A_BANDS):
            _write_cog(
                Path(item.assets[band].href),
                np.ascontiguousarray(dn[..., b]),
                grid=s2_grid,
                nodata=S2_NODATA,
                description=band,
            )
        s2_items.append(item)

    for i, t in enumerate(S1_TIMES):
        gamma0 = _render_s1(
            s1_land, levels[t.normalize()], peak, t > EVENT_TIME + _DAY, rng(300 + i), s1_static
        ).astype(np.float32)
        item = _s1_item(i, s1_grid, s1_dir)
        for p, pol in enumerate(("vv", "vh")):
            _write_cog(
                Path(item.assets[pol].href),
                gamma0[p],
                grid=s1_grid,
                nodata=S1_NODATA,
                description=pol.upper(),
            )
        s1_items.append(item)

    water, _ = _water(s2_land, peak)
    label = water.astype(np.int16)
    if event_alpha is not None:
        label[event_alpha > 0.5] = -1
    _write_cog(
        root_abs / "label.tif",
        label,
        grid=s2_grid,
        nodata=-1,
        description="water at 2023-10-16: -1 nodata, 0 dry, 1 water",
        resampling="nearest",
    )
    _write_cog(
        root_abs / "landcover.tif",
        s2_land["cover"],
        grid=s2_grid,
        nodata=None,
        description="land cover: " + ", ".join(f"{i} {c}" for i, c in enumerate(CLASS_NAMES)),
        resampling="nearest",
    )

    catalog = pystac.Catalog(
        "eo-contrast-synthetic-flood",
        "Synthetic Sentinel-1 RTC / Sentinel-2 L2A flood scene (eo_contrast.synthetic_scene)",
        title="Synthetic flood scene",
    )
    catalog.add_child(_collection("sentinel-1-rtc", "Synthetic Sentinel-1 RTC", s1_items))
    catalog.add_child(_collection("sentinel-2-l2a", "Synthetic Sentinel-2 L2A", s2_items))
    for name, items in (("s1_items.json", s1_items), ("s2_items.json", s2_items)):
        text = json.dumps(_feature_collection(items, root_abs), indent=2)
        (root_abs / name).write_text(text + "\n", encoding="utf-8")
    catalog.normalize_hrefs(str(root_abs))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)

    return SyntheticScene(
        root=root,
        catalog=root / "catalog.json",
        s1_items=root / "s1_items.json",
        s2_items=root / "s2_items.json",
        label=root / "label.tif",
        landcover=root / "landcover.tif",
        crs=CRS,
        s2_shape=(s2_grid.height, s2_grid.width),
        s1_shape=(s1_grid.height, s1_grid.width),
        s2_transform=s2_grid.transform,
        s1_transform=s1_grid.transform,
        s1_times=S1_TIMES,
        s2_times=S2_TIMES,
        event_time=EVENT_TIME,
        expected_pairs=EXPECTED_PAIRS,
        expected_pairs_many_to_one=EXPECTED_PAIRS_MANY_TO_ONE,
        class_names=CLASS_NAMES,
        s2_cloud_cover=tuple(clouds),
    )
