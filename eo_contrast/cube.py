"""The canonical datacube: dims, band names, units, grid and CRS helpers.

A single-sensor cube is an :class:`xarray.DataArray` with dims ``("time", "band", "y", "x")``
(``time`` may be absent), a ``band`` coordinate of canonical band names, a ``units`` coordinate
along ``band``, float32 values in physical units (S1 backscatter in dB, S2 reflectance 0..1), NaN
where there is no data, and its CRS recorded the rioxarray/CF way (a ``spatial_ref`` coordinate).

Everything here is plain xarray/numpy: no torch, no dask scheduler, no accessor.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor used for CRS and transforms)
import xarray as xr

__all__ = [
    "S1_BANDS",
    "S2_BANDS",
    "SPATIAL_DIMS",
    "as_cube",
    "band_units",
    "canonical_band_name",
    "canonical_band_names",
    "check_dtype",
    "check_times",
    "db_to_linear",
    "grids_equal",
    "linear_to_db",
    "require_crs",
    "sensor_of",
]

#: Sentinel-1 polarisations, in canonical order.
S1_BANDS: tuple[str, ...] = ("vv", "vh", "hh", "hv")
#: Sentinel-2 MSI bands, in canonical (wavelength / product) order.
S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07",
    "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
SPATIAL_DIMS: tuple[str, str] = ("y", "x")

Sensor = Literal["s1", "s2"]

# Names used by common products for the same band: Sen1Floods11 ("B1", "VV"), STAC eo:bands
# common names, odc-stac aliases.
_ALIASES: dict[str, str] = {
    **{f"b{i}": f"B{i:02d}" for i in range(1, 13)},
    **{f"b{i:02d}": f"B{i:02d}" for i in range(1, 13)},
    "b8a": "B8A",
    "b08a": "B8A",
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    **{p: p for p in S1_BANDS},
}

_UNITS = {"s1": "dB", "s2": "1"}
#: dtype kinds a cube may hold: signed/unsigned integers and floats.
_NUMBER_KINDS = ("i", "u", "f")


def canonical_band_name(name: Hashable) -> str:
    """Return the canonical name of a band (``"B1"`` -> ``"B01"``, ``"VV"`` -> ``"vv"``).

    Names that are not recognised are returned unchanged, as strings.

    Examples
    --------
    >>> canonical_band_name("B8")
    'B08'
    >>> canonical_band_name("VH")
    'vh'
    >>> canonical_band_name("swir16")
    'B11'
    """
    text = str(name)
    return _ALIASES.get(text.lower(), text)


def canonical_band_names(names: Iterable[Hashable]) -> list[str]:
    """Canonical names of several bands, see :func:`canonical_band_name`."""
    return [canonical_band_name(n) for n in names]


def sensor_of(bands: xr.DataArray | Sequence[Hashable]) -> Sensor:
    """Which sensor a cube (or a list of band names) comes from: ``"s1"`` or ``"s2"``.

    Raises
    ------
    ValueError
        When the bands belong to neither sensor, or mix both.

    Examples
    --------
    >>> sensor_of(["vv", "vh"])
    's1'
    >>> sensor_of(["B04", "B03", "B02"])
    's2'
    """
    names = (
        [str(b) for b in bands["band"].values]
        if isinstance(bands, xr.DataArray)
        else canonical_band_names(bands)
    )
    if not names:
        raise ValueError("cannot tell the sensor of a cube with no bands")
    s1 = [b for b in names if b in S1_BANDS]
    s2 = [b for b in names if b in S2_BANDS]
    if len(s1) == len(names):
        return "s1"
    if len(s2) == len(names):
        return "s2"
    if s1 and s2:
        raise ValueError(
            f"bands {names} mix Sentinel-1 ({s1}) and Sentinel-2 ({s2}) bands; "
            "keep one sensor per cube and pair them with ec.pair(s1, s2)"
        )
    unknown = [b for b in names if b not in S1_BANDS and b not in S2_BANDS]
    raise ValueError(
        f"bands {unknown} are neither Sentinel-1 {list(S1_BANDS)} nor Sentinel-2 "
        f"{list(S2_BANDS)} band names; rename them (e.g. cube.assign_coords(band=[...]))"
    )


def as_cube(obj: xr.DataArray | xr.Dataset, *, name: str = "cube") -> xr.DataArray:
    """Convert ``obj`` to the canonical cube layout ``(time, band, y, x)``.

    Accepts a DataArray with a ``band`` dim, or a Dataset with one variable per band (odc-stac's
    form), converted with ``to_array("band")``. Geographic dims ``latitude``/``longitude`` are
    renamed to ``y``/``x``; band names are made canonical. Values are not rescaled.

    Parameters
    ----------
    obj
        The cube.
    name
        How to call ``obj`` in error messages.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"B04": (("y", "x"), np.zeros((2, 3))), "B8": (("y", "x"), np.ones((2, 3)))})
    >>> cube = as_cube(ds)
    >>> cube.dims, cube.band.values.tolist()
    (('band', 'y', 'x'), ['B04', 'B08'])
    """
    if isinstance(obj, xr.Dataset):
        if not obj.data_vars:
            raise ValueError(f"{name} is an empty Dataset: it has no band variables")
        crs_coord = obj.coords.get("spatial_ref")
        data_vars = [v for v in obj.data_vars if v != "spatial_ref"]
        da = obj[data_vars].to_array("band")
        if crs_coord is not None and "spatial_ref" not in da.coords:
            da = da.assign_coords(spatial_ref=crs_coord)
    elif isinstance(obj, xr.DataArray):
        da = obj
    else:
        raise TypeError(f"{name} must be an xarray DataArray or Dataset, not {type(obj).__name__}")
    rename = {
        k: v
        for k, v in (("latitude", "y"), ("longitude", "x"), ("lat", "y"), ("lon", "x"))
        if k in da.dims and v not in da.dims
    }
    if rename:
        da = da.rename(rename)
    missing = [d for d in ("band", "y", "x") if d not in da.dims]
    if missing:
        raise ValueError(
            f"{name} has dims {tuple(da.dims)} but a cube needs ('time', 'band', 'y', 'x') "
            f"(time optional); missing {missing}"
        )
    extra = [d for d in da.dims if d not in ("time", "band", "y", "x")]
    if extra:
        raise ValueError(
            f"{name} has unexpected dims {extra}; a cube has only ('time', 'band', 'y', 'x'). "
            "Select or stack them away first"
        )
    if 0 in da.shape:
        raise ValueError(
            f"{name} is empty: its shape is {dict(zip(da.dims, da.shape, strict=True))}; "
            "select a non-empty time range, band list and area"
        )
    check_dtype(da, name=name)
    order = [d for d in ("time", "band", "y", "x") if d in da.dims]
    da = da.transpose(*order)
    if "band" not in da.coords:
        raise ValueError(f"{name} has a 'band' dim but no 'band' coordinate naming the bands")
    da = da.assign_coords(band=canonical_band_names(da["band"].values))
    if len(set(da["band"].values.tolist())) != da.sizes["band"]:
        raise ValueError(f"{name} has duplicate band names: {[str(b) for b in da['band'].values]}")
    return da


def check_dtype(cube: xr.DataArray, *, name: str = "cube") -> None:
    """Raise a clear :class:`TypeError` when ``cube`` does not hold real numbers.

    A cube holds physical values (float32 after loading; integers are accepted and read as
    numbers). Complex, boolean, string, object and datetime data are refused with a hint on how
    to convert them. Only the dtype is looked at: nothing is computed.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> check_dtype(xr.DataArray(np.zeros(2, "float32")))
    >>> check_dtype(xr.DataArray(np.zeros(2, "complex64")), name="s1")
    Traceback (most recent call last):
    ...
    TypeError: s1 has dtype complex64, but a cube holds real numbers ...
    """
    dtype = np.dtype(cube.dtype)
    if dtype.kind in _NUMBER_KINDS:
        return
    hints = {
        "c": "for complex SAR data take the backscatter power (abs(x) ** 2) and convert it "
        "with eo_contrast.linear_to_db",
        "b": f"a boolean mask is not a cube: apply it with {name}.where(mask), or cast it "
        f"with {name}.astype('float32') if the values really are 0/1 data",
        "U": f"parse the strings into numbers first (e.g. {name}.astype('float32'))",
        "S": f"parse the bytes into numbers first (e.g. {name}.astype('float32'))",
        "O": f"convert the Python objects into numbers first (e.g. {name}.astype('float32'))",
        "M": "datetimes are coordinates, not band values: put them in a 'time' coordinate",
        "m": "durations are not band values: convert them to numbers first",
    }
    hint = hints.get(dtype.kind, f"convert it with {name}.astype('float32')")
    raise TypeError(
        f"{name} has dtype {dtype}, but a cube holds real numbers in physical units (float32: "
        f"Sentinel-1 in dB, Sentinel-2 reflectance 0..1); {hint}"
    )


def band_units(cube: xr.DataArray) -> dict[str, str]:
    """Units of each band: from the ``units`` coordinate if present, else the sensor default.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.zeros((2, 1, 1)), dims=("band", "y", "x"), coords={"band": ["vv", "vh"]})
    >>> band_units(da)
    {'vv': 'dB', 'vh': 'dB'}
    """
    bands = [str(b) for b in cube["band"].values]
    if "units" in cube.coords and cube.coords["units"].dims == ("band",):
        return dict(zip(bands, (str(u) for u in cube.coords["units"].values), strict=True))
    default = _UNITS[sensor_of(bands)]
    return dict.fromkeys(bands, default)


def require_crs(cube: xr.DataArray | xr.Dataset, *, name: str = "cube") -> None:
    """Raise a clear error when ``cube`` carries no CRS."""
    if cube.rio.crs is None:
        raise ValueError(
            f"{name} has no CRS: record one with {name}.rio.write_crs('EPSG:XXXX') "
            "(a 'spatial_ref' coordinate), or load it with ec.load_stac / rioxarray"
        )


def check_times(cube: xr.DataArray | xr.Dataset, *, name: str = "cube") -> pd.DatetimeIndex:
    """Return the time index of ``cube`` as naive UTC, checking it is sorted and unique."""
    if "time" not in cube.dims:
        raise ValueError(f"{name} has no 'time' dim; acquisition times are needed here")
    try:
        times = pd.DatetimeIndex(cube["time"].values)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} time coordinate holds {cube['time'].dtype} values that are not datetimes "
            f"({err}); give it datetime64 acquisition times"
        ) from err
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    if times.hasnans:
        missing = int(np.count_nonzero(times.isna()))
        raise ValueError(
            f"{name} has {missing} missing time(s) (NaT) in its time coordinate: drop those "
            f"scenes (e.g. {name}.sel(time={name}.time.notnull())) or give them their times"
        )
    dup = times[times.duplicated()].unique()
    if len(dup):
        raise ValueError(
            f"{name} has duplicate times {[str(t) for t in dup]}: merge those scenes first "
            f"(e.g. {name}.groupby('time').first())"
        )
    if not times.is_monotonic_increasing:
        raise ValueError(f"{name} times are not sorted: sort them with {name}.sortby('time')")
    return times


def grids_equal(a: xr.DataArray | xr.Dataset, b: xr.DataArray | xr.Dataset) -> bool:
    """True when two cubes share one pixel grid: same CRS, shape and transform."""
    if a.rio.crs != b.rio.crs:
        return False
    if (a.sizes["y"], a.sizes["x"]) != (b.sizes["y"], b.sizes["x"]):
        return False
    return bool(
        np.allclose(
            tuple(a.rio.transform())[:6],
            tuple(b.rio.transform())[:6],
            rtol=0,
            atol=1e-9 * max(1.0, abs(a.rio.transform().a)),
        )
    )


def linear_to_db(x: xr.DataArray | np.ndarray) -> xr.DataArray | np.ndarray:
    """Backscatter power (linear) to decibels; zero and negative values become NaN.

    Examples
    --------
    >>> import numpy as np
    >>> linear_to_db(np.array([1.0, 0.1, 0.0]))
    array([  0., -10.,  nan])
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(x, xr.DataArray):
            return xr.where(x > 0, 10.0 * np.log10(x.where(x > 0)), np.nan).astype(x.dtype)
        arr = np.asarray(x)
        return np.where(arr > 0, 10.0 * np.log10(np.where(arr > 0, arr, 1)), np.nan).astype(
            arr.dtype
        )


def db_to_linear(x: xr.DataArray | np.ndarray) -> xr.DataArray | np.ndarray:
    """Decibels to backscatter power (linear).

    Examples
    --------
    >>> import numpy as np
    >>> db_to_linear(np.array([0.0, -10.0]))
    array([1. , 0.1])
    """
    if isinstance(x, xr.DataArray):
        return (10.0 ** (x / 10.0)).astype(x.dtype)
    arr = np.asarray(x)
    return (10.0 ** (arr / 10.0)).astype(arr.dtype)
