"""S1/S2 time-proximity pairing on one grid.

:func:`pair` matches each Sentinel-2 scene with the nearest Sentinel-1 scene in time, puts both
on the Sentinel-2 pixel grid and returns them side by side in one Dataset. The pure time matching
is :func:`match_times`, usable on its own (e.g. on STAC acquisition times before loading pixels).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eo_contrast.cube import as_cube, band_units, check_times, grids_equal, require_crs, sensor_of

__all__ = ["match_times", "pair", "parse_max_dt"]

#: Resampling used to put S1 on the S2 grid (GDAL semantics through odc-geo / rasterio).
S1_RESAMPLING = "bilinear"

_I64_MIN = np.iinfo(np.int64).min + 1  # NaT is the int64 minimum
_I64_MAX = np.iinfo(np.int64).max


def parse_max_dt(max_dt: Any) -> pd.Timedelta:
    """Parse a maximum time gap into a positive :class:`pandas.Timedelta`.

    Parameters
    ----------
    max_dt
        A pandas offset string (``"3D"``, ``"36h"``, ``"2 days 12:00:00"``), a
        :class:`numpy.timedelta64`, a :class:`pandas.Timedelta` or a :class:`datetime.timedelta`.
        Plain numbers are refused: their unit would be a guess.

    Raises
    ------
    TypeError
        When ``max_dt`` is a number or another type.
    ValueError
        When it cannot be parsed, is NaT, or is not positive.

    Examples
    --------
    >>> parse_max_dt("36h")
    Timedelta('1 days 12:00:00')
    >>> import datetime
    >>> parse_max_dt(datetime.timedelta(days=2))
    Timedelta('2 days 00:00:00')
    """
    if not isinstance(max_dt, np.timedelta64) and isinstance(
        max_dt, bool | int | float | np.integer | np.floating
    ):
        raise TypeError(
            f"max_dt={max_dt!r} is a plain number, whose unit is ambiguous: pass a duration such "
            "as '3D', '36h', numpy.timedelta64(3, 'D') or datetime.timedelta(days=3)"
        )
    if not isinstance(max_dt, str | np.timedelta64 | pd.Timedelta | _dt.timedelta):
        raise TypeError(
            f"max_dt must be a duration (str like '3D', numpy.timedelta64, pandas.Timedelta or "
            f"datetime.timedelta), not {type(max_dt).__name__}"
        )
    try:
        td = pd.Timedelta(max_dt)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"max_dt={max_dt!r} is not a duration pandas understands: use e.g. '3D', '36h' or "
            "'2 days 12:00:00'"
        ) from err
    if pd.isna(td):
        raise ValueError(
            f"max_dt={max_dt!r} is not a time (NaT): pass a positive duration like '3D'"
        )
    if td <= pd.Timedelta(0):
        raise ValueError(f"max_dt={max_dt!r} must be a positive duration, e.g. '3D'")
    return td


def _times_ns(times: Any, name: str) -> np.ndarray:
    """Times as int64 nanoseconds since the epoch, naive UTC; NaT refused."""
    values = times.values if isinstance(times, xr.DataArray | pd.Series) else times
    try:
        idx = pd.DatetimeIndex(np.asarray(values) if not isinstance(values, pd.Index) else values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} are not datetimes: {err}") from err
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    if idx.hasnans:
        raise ValueError(f"{name} contain NaT (missing times): drop those scenes first")
    return np.asarray(idx.as_unit("ns").asi8, dtype=np.int64)


def _candidates(t1: np.ndarray, t2: np.ndarray, max_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """All (s2 index, s1 index) with ``|t1 - t2| <= max_ns``, without an n1 x n2 matrix."""
    order = np.argsort(t1, kind="stable")
    t1s = t1[order]
    low = np.where(t2 < _I64_MIN + max_ns, _I64_MIN, t2 - max_ns)
    high = np.where(t2 > _I64_MAX - max_ns, _I64_MAX, t2 + max_ns)
    lo = np.searchsorted(t1s, low, side="left")
    hi = np.searchsorted(t1s, high, side="right")
    counts = hi - lo
    total = int(counts.sum())
    s2_idx = np.repeat(np.arange(t2.size), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.arange(total) - starts + np.repeat(lo, counts)
    return s2_idx, order[pos]


def match_times(
    s1_times: Any,
    s2_times: Any,
    max_dt: Any = "3D",
    one_to_one: bool = True,
) -> list[tuple[int, int]]:
    """Match Sentinel-2 times to Sentinel-1 times by proximity.

    Parameters
    ----------
    s1_times, s2_times
        Acquisition times (anything :class:`pandas.DatetimeIndex` accepts; tz-aware times are
        converted to UTC). They need not be sorted or unique.
    max_dt
        Largest accepted gap ``|s1_time - s2_time|`` (inclusive), see :func:`parse_max_dt`.
    one_to_one
        If True, each S1 time serves at most one S2 time: candidate pairs within ``max_dt`` are
        taken greedily, closest first (ties: earlier S2 time, then earlier S1 time, then lower
        index). If False, each S2 time takes its nearest S1 time within ``max_dt`` (ties: the
        earlier S1 time), and one S1 time may serve several S2 times.

    Returns
    -------
    list of (int, int)
        ``(s2_index, s1_index)`` pairs, ordered by S2 time (then S2 index). S2 times without an
        S1 time within ``max_dt`` are left out.

    Examples
    --------
    >>> s1 = ["2020-01-01", "2020-01-04", "2020-01-20"]
    >>> s2 = ["2020-01-02", "2020-01-03", "2020-01-10"]
    >>> match_times(s1, s2, "3D")
    [(0, 0), (1, 1)]
    >>> match_times(s1, s2, "3D", one_to_one=False)
    [(0, 0), (1, 1)]
    >>> match_times(["2020-01-02"], s2, "3D", one_to_one=False)
    [(0, 0), (1, 0)]
    """
    max_ns = int(parse_max_dt(max_dt).value)
    t1 = _times_ns(s1_times, "s1_times")
    t2 = _times_ns(s2_times, "s2_times")
    if t1.size == 0 or t2.size == 0:
        return []
    s2_idx, s1_idx = _candidates(t1, t2, max_ns)
    if s2_idx.size == 0:
        return []
    gap = np.abs(t2[s2_idx] - t1[s1_idx])
    # closest first; ties -> earlier S2 time, earlier S1 time, lower indices (deterministic)
    order = np.lexsort((s1_idx, s2_idx, t1[s1_idx], t2[s2_idx], gap))
    s2_idx, s1_idx = s2_idx[order], s1_idx[order]
    chosen: list[tuple[int, int]] = []
    if one_to_one:
        used1 = np.zeros(t1.size, dtype=bool)
        used2 = np.zeros(t2.size, dtype=bool)
        remaining = min(t1.size, t2.size)
        for j, i in zip(s2_idx.tolist(), s1_idx.tolist(), strict=True):
            if used1[i] or used2[j]:
                continue
            used1[i] = used2[j] = True
            chosen.append((j, i))
            remaining -= 1
            if remaining == 0:
                break
    else:
        _, first = np.unique(s2_idx, return_index=True)
        chosen = list(zip(s2_idx[first].tolist(), s1_idx[first].tolist(), strict=True))
    chosen.sort(key=lambda ji: (t2[ji[0]], ji[0]))
    return chosen


def _closest_gap(t1: np.ndarray, t2: np.ndarray) -> pd.Timedelta:
    """Smallest ``|t1 - t2|`` over all pairs (inputs non-empty, int64 ns)."""
    t1s = np.sort(t1)
    pos = np.searchsorted(t1s, t2)
    best = None
    for cand in (np.clip(pos - 1, 0, t1s.size - 1), np.clip(pos, 0, t1s.size - 1)):
        # python ints: no int64 overflow on far-apart times
        gaps = [abs(int(a) - int(b)) for a, b in zip(t1s[cand], t2, strict=True)]
        m = min(gaps)
        best = m if best is None or m < best else best
    return pd.Timedelta(int(best or 0), unit="ns")


def _check_sensors(s1: xr.DataArray, s2: xr.DataArray) -> None:
    sens1, sens2 = sensor_of(s1), sensor_of(s2)
    bands1, bands2 = [str(b) for b in s1["band"].values], [str(b) for b in s2["band"].values]
    if sens1 == "s2" and sens2 == "s1":
        raise ValueError(
            f"the arguments are swapped: s1 holds Sentinel-2 bands {bands1} and s2 holds "
            f"Sentinel-1 bands {bands2}; call ec.pair(s1, s2) with the Sentinel-1 cube first"
        )
    if sens1 != "s1":
        raise ValueError(
            f"s1 must hold Sentinel-1 bands ('vv', 'vh', ...), but its bands {bands1} are "
            "Sentinel-2 bands; pass the radar cube as s1"
        )
    if sens2 != "s2":
        raise ValueError(
            f"s2 must hold Sentinel-2 bands ('B02', ...), but its bands {bands2} are Sentinel-1 "
            "bands; pass the optical cube as s2"
        )


def _naive_times(cube: xr.DataArray, times: pd.DatetimeIndex) -> xr.DataArray:
    return cube.assign_coords(time=np.asarray(times.as_unit("ns").values, dtype="datetime64[ns]"))


def _check_regular(cube: xr.DataArray, name: str) -> None:
    """Refuse x/y coordinates that are not evenly spaced (no affine pixel grid)."""
    for dim in ("y", "x"):
        coord = np.asarray(cube[dim].values, dtype="float64")
        if coord.size < 3:
            continue
        step = np.diff(coord)
        if not np.allclose(step, step[0], rtol=0, atol=1e-5 * abs(step[0])) or step[0] == 0:
            raise ValueError(
                f"{name} has no regular pixel grid: its {dim!r} coordinates are not evenly "
                f"spaced (steps from {step.min():g} to {step.max():g}); resample it onto a "
                f"regular grid first (e.g. {name}.rio.reproject(...))"
            )


def _geobox(cube: xr.DataArray, name: str) -> Any:
    import odc.geo.xr  # noqa: F401  (registers .odc)

    gbox = cube.rio.write_crs(cube.rio.crs).odc.geobox
    if gbox is None or not hasattr(gbox, "extent"):
        raise ValueError(
            f"{name} has no affine pixel grid odc-geo can read: give it evenly spaced x/y "
            f"coordinates (e.g. {name}.rio.reproject(...))"
        )
    return gbox


def _check_geographic(cube: xr.DataArray, name: str) -> None:
    """Refuse a geographic CRS whose x/y coordinates cannot be longitudes/latitudes."""
    crs = cube.rio.crs
    if crs is None or not crs.is_geographic:
        return
    x = np.asarray(cube["x"].values, dtype="float64")
    y = np.asarray(cube["y"].values, dtype="float64")
    if x.size and y.size and (np.abs(y).max() > 90 or x.min() < -180 or x.max() > 360):
        raise ValueError(
            f"{name} has the geographic CRS {crs} (degrees), but its coordinates span x "
            f"{x.min():g}..{x.max():g} and y {y.min():g}..{y.max():g}, which are not "
            f"longitudes/latitudes: its CRS is probably wrong. Record the right one with "
            f"{name}.rio.write_crs('EPSG:XXXX')"
        )


def _check_transformable(s1: xr.DataArray, s2: xr.DataArray) -> None:
    """Refuse CRSs that PROJ cannot transform between (engineering, other planets, ...)."""
    from pyproj import Transformer
    from pyproj.exceptions import ProjError

    crs1, crs2 = s1.rio.crs, s2.rio.crs
    try:
        Transformer.from_crs(crs1, crs2, always_xy=True)
    except ProjError as err:
        raise ValueError(
            f"the CRS of s1 ({crs1}) cannot be transformed to the CRS of s2 ({crs2}), so s1 "
            f"cannot be put on the s2 grid ({str(err).rstrip('.')}). Give both cubes Earth "
            "CRSs (e.g. UTM or EPSG:4326) with .rio.write_crs, or reproject s1 yourself first"
        ) from err


def _check_overlap(gbox1: Any, gbox2: Any) -> None:
    ext2 = gbox2.extent
    try:
        ext1 = gbox1.extent.to_crs(gbox2.crs)
        inter = ext1.intersection(ext2)
        empty = inter.is_empty or inter.area <= 0
    except Exception:  # projection failures far outside the S2 CRS domain
        try:
            ext1 = gbox1.extent.to_crs("EPSG:4326")
            inter = ext1.intersection(ext2.to_crs("EPSG:4326"))
            empty = inter.is_empty or inter.area <= 0
        except Exception as err:
            raise ValueError(
                f"the s1 footprint (CRS {gbox1.crs}) cannot be projected to the s2 CRS "
                f"({gbox2.crs}) nor to longitudes/latitudes ({err}); check that the cubes' "
                "coordinates are in the units of their CRS"
            ) from err
    if empty:
        b1 = tuple(round(v, 6) for v in gbox1.extent.to_crs("EPSG:4326").boundingbox)
        b2 = tuple(round(v, 6) for v in ext2.to_crs("EPSG:4326").boundingbox)
        raise ValueError(
            f"the s1 and s2 footprints do not overlap: s1 covers lon/lat bounds {b1} and s2 "
            f"covers {b2}; pair cubes of the same area"
        )


def _s1_on_s2_grid(s1: xr.DataArray, s2: xr.DataArray) -> tuple[xr.DataArray, str]:
    """S1 (float32) on S2's grid: reprojected lazily (bilinear) when the grids differ."""
    s1 = s1.astype(np.float32)
    s1_spatial = (s1.chunks[-2], s1.chunks[-1]) if s1.chunks else None
    s2_chunks = s2.chunks
    if grids_equal(s1, s2):
        out = s1.assign_coords(y=s2["y"].values, x=s2["x"].values)
        if s2_chunks is not None and s1_spatial is not None:
            out = out.chunk({"y": s2_chunks[-2], "x": s2_chunks[-1]})
        return out, "none (same grid)"
    from odc.geo.xr import xr_reproject

    _check_transformable(s1, s2)
    gbox1, gbox2 = _geobox(s1, "s1"), _geobox(s2, "s2")
    _check_overlap(gbox1, gbox2)
    kw: dict[str, Any] = {}
    if s1_spatial is not None:
        if s2_chunks is not None:
            kw["chunks"] = (int(s2_chunks[-2][0]), int(s2_chunks[-1][0]))
        else:
            kw["chunks"] = (int(s1_spatial[0][0]), int(s1_spatial[1][0]))
    src = s1.rio.write_crs(s1.rio.crs)
    out = xr_reproject(
        src,
        gbox2,
        resampling=S1_RESAMPLING,
        src_nodata=np.nan,
        dst_nodata=np.nan,
        dtype="float32",
        always_yx=True,
        **kw,
    )
    out = out.assign_coords(y=s2["y"].values, x=s2["x"].values)
    return out, S1_RESAMPLING


def pair(
    s1: xr.DataArray | xr.Dataset,
    s2: xr.DataArray | xr.Dataset,
    *,
    max_dt: str | np.timedelta64 | pd.Timedelta | _dt.timedelta = "3D",
    one_to_one: bool = True,
) -> xr.Dataset:
    """Pair a Sentinel-1 cube with a Sentinel-2 cube by acquisition time, on one grid.

    Each S2 time takes the nearest S1 time within ``max_dt`` (see :func:`match_times`); with
    ``one_to_one`` an S1 scene serves at most one S2 scene, closest pairs first. Both sensors end
    up on the S2 pixel grid: when the grids differ (CRS, resolution or origin), S1 is
    reprojected onto it lazily with bilinear resampling (GDAL semantics through odc-geo; NaN is
    nodata, pixels S1 does not cover are NaN).

    Parameters
    ----------
    s1
        Sentinel-1 cube (``vv``/``vh`` bands, dB), a canonical DataArray or an odc-stac style
        Dataset (one variable per band), with a ``time`` dim and a CRS.
    s2
        Sentinel-2 cube (``B01``..``B12``, ``B8A``; reflectance), same forms.
    max_dt
        Largest accepted ``|s1_time - s2_time|``: ``"3D"``, ``"36h"``, a
        :class:`numpy.timedelta64`, :class:`pandas.Timedelta` or :class:`datetime.timedelta`.
    one_to_one
        Whether an S1 scene may serve only one S2 scene.

    Returns
    -------
    xarray.Dataset
        Data variables ``s1`` ``(pair, s1_band, y, x)`` and ``s2`` ``(pair, s2_band, y, x)``,
        float32; coordinates ``s1_band``/``s2_band`` (band names), ``s1_units``/``s2_units``
        along them, ``s1_time``, ``s2_time`` and ``dt = |s1_time - s2_time|`` along ``pair``
        (ordered by S2 time), ``y``/``x`` and ``spatial_ref`` of S2 (``pairs.rio.crs`` works).
        Attributes ``max_dt``, ``one_to_one`` and ``s1_resampling`` record how it was made.
        Dask inputs give dask outputs: nothing is computed.

    Raises
    ------
    ValueError
        Bands of the wrong sensor (or the arguments swapped), missing/duplicate/unsorted times,
        no CRS, CRSs that cannot be transformed into each other (or a geographic CRS on
        coordinates that are not degrees), footprints that do not overlap, a bad ``max_dt``, or no pair within ``max_dt``
        (the message gives the closest gap found).

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> import rioxarray  # registers .rio
    >>> import eo_contrast as ec
    >>> def cube(bands, times, value):
    ...     data = np.full((len(times), len(bands), 2, 3), value, "float32")
    ...     return xr.DataArray(data, dims=("time", "band", "y", "x"), coords={
    ...         "time": pd.to_datetime(times), "band": bands,
    ...         "y": [15.0, 5.0], "x": [5.0, 15.0, 25.0]}).rio.write_crs("EPSG:32631")
    >>> s1 = cube(["vv", "vh"], ["2020-01-01", "2020-01-06", "2020-01-30"], -12.0)
    >>> s2 = cube(["B04", "B08"], ["2020-01-02", "2020-01-07", "2020-01-20"], 0.2)
    >>> pairs = ec.pair(s1, s2, max_dt="3D")
    >>> dict(pairs.sizes)
    {'pair': 2, 's1_band': 2, 'y': 2, 'x': 3, 's2_band': 2}
    >>> [str(t.date()) for t in pd.to_datetime(pairs.s1_time.values)]
    ['2020-01-01', '2020-01-06']
    >>> pairs.dt.values.astype("timedelta64[D]").tolist()
    [datetime.timedelta(days=1), datetime.timedelta(days=1)]
    >>> pairs.rio.crs.to_epsg()
    32631
    """
    import rioxarray  # noqa: F401  (registers .rio)

    s1c = as_cube(s1, name="s1")
    s2c = as_cube(s2, name="s2")
    _check_sensors(s1c, s2c)
    t1 = check_times(s1c, name="s1")
    t2 = check_times(s2c, name="s2")
    require_crs(s1c, name="s1")
    require_crs(s2c, name="s2")
    _check_geographic(s1c, "s1")
    _check_geographic(s2c, "s2")
    _check_regular(s1c, "s1")
    _check_regular(s2c, "s2")
    td = parse_max_dt(max_dt)

    matches = match_times(t1, t2, td, one_to_one=one_to_one)
    if not matches:
        gap = _closest_gap(np.asarray(t1.as_unit("ns").asi8), np.asarray(t2.as_unit("ns").asi8))
        days = int(np.ceil(gap / pd.Timedelta("1D")))
        raise ValueError(
            f"no S1/S2 pair within max_dt: the closest S1/S2 gap is {gap} > max_dt {td}; "
            f"raise max_dt (e.g. max_dt='{days}D') or pair cubes whose times overlap"
        )
    s2_idx = [j for j, _ in matches]
    s1_idx = [i for _, i in matches]

    s1c = _naive_times(s1c, t1).isel(time=s1_idx)
    s2c = _naive_times(s2c, t2).isel(time=s2_idx)
    s1_units = band_units(s1c)
    s2_units = band_units(s2c)
    s1_grid, resampling = _s1_on_s2_grid(s1c, s2c)

    s1_times = s1c["time"].values.astype("datetime64[ns]")
    s2_times = s2c["time"].values.astype("datetime64[ns]")
    dt = np.abs(s2_times - s1_times).astype("timedelta64[ns]")
    s1_bands = [str(b) for b in s1c["band"].values]
    s2_bands = [str(b) for b in s2c["band"].values]

    ds = xr.Dataset(
        {
            "s1": (("pair", "s1_band", "y", "x"), s1_grid.astype(np.float32).data),
            "s2": (("pair", "s2_band", "y", "x"), s2c.astype(np.float32).data),
        },
        coords={
            "s1_band": ("s1_band", s1_bands),
            "s2_band": ("s2_band", s2_bands),
            "s1_units": ("s1_band", [s1_units[b] for b in s1_bands]),
            "s2_units": ("s2_band", [s2_units[b] for b in s2_bands]),
            "s1_time": ("pair", s1_times),
            "s2_time": ("pair", s2_times),
            "dt": ("pair", dt),
            "y": s2c["y"].variable.to_base_variable(),
            "x": s2c["x"].variable.to_base_variable(),
        },
        attrs={
            "max_dt": str(td),
            "one_to_one": int(bool(one_to_one)),
            "s1_resampling": resampling,
        },
    )
    ds["s1"].attrs["long_name"] = "Sentinel-1 backscatter"
    ds["s2"].attrs["long_name"] = "Sentinel-2 reflectance"
    return ds.rio.write_crs(s2c.rio.crs)
