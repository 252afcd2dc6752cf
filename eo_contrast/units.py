"""Check that a cube's values are plausible for its units: dB backscatter, reflectance 0..1.

A ``units`` coordinate says what a cube should hold, but nothing stops a cube of linear
backscatter power from being labelled ``"dB"``, or Sentinel-2 digital numbers from carrying the
right band names. :func:`check_values` looks at a small deterministic sample of the values and
raises :class:`UnitsError` when they are plainly inconsistent with the units, with the
statistics it saw and the conversion that fixes it.

Rules (on the finite, non-zero values of each band; exact zeros are left out because they are
usually fill values, and a band with fewer than :data:`MIN_VALUES` of them is not judged):

- Sentinel-1 in ``"dB"``: refused as *linear* power or amplitude when fewer than
  :data:`S1_MAX_NEGATIVE` of the values are negative and the median is below
  :data:`S1_LINEAR_MEDIAN` (backscatter in dB is mostly -25..0 dB and only bright urban areas
  reach +10 dB or more; a band of dB values with a median of 0..1.5 dB and nearly nothing below
  0 dB does not occur). Refused as implausible when the median lies outside
  :data:`S1_DB_RANGE` (uncalibrated digital numbers, unmasked fill values).
- Sentinel-2 in ``"1"``: refused as *digital numbers* (or percent) when the median exceeds
  :data:`S2_MAX_MEDIAN` or the 99th percentile exceeds :data:`S2_MAX_P99` (reflectance is
  0..1; clouds and snow reach about 1.5, and a median above 2 or a 99th percentile above 100
  does not occur), and as implausible when the median is below :data:`S2_MIN_MEDIAN`.

Other units (a model trained on other inputs) and other sensors are not checked.

Examples
--------
>>> import numpy as np
>>> from eo_contrast.units import check_values
>>> db = np.random.default_rng(0).normal(-12, 4, (2, 32, 32)).astype("float32")
>>> check_values(db, "s1", "dB", name="s1")
>>> check_values(10 ** (db / 10), "s1", "dB", name="s1")
Traceback (most recent call last):
...
eo_contrast.units.UnitsError: s1: Sentinel-1 values do not look like backscatter in dB ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_SAMPLE",
    "MIN_VALUES",
    "S1_DB_RANGE",
    "S1_LINEAR_MEDIAN",
    "S1_MAX_NEGATIVE",
    "S2_MAX_MEDIAN",
    "S2_MAX_P99",
    "S2_MIN_MEDIAN",
    "UnitsError",
    "block_location",
    "check_values",
]

#: Values looked at per call, at most (a strided sample, the same for the same array).
MAX_SAMPLE = 65_536
#: Bands with fewer finite non-zero sampled values than this are not judged.
MIN_VALUES = 100
#: Sentinel-1 "dB": at most this fraction of negative values ...
S1_MAX_NEGATIVE = 0.01
#: ... together with a median below this means linear power or amplitude.
S1_LINEAR_MEDIAN = 1.5
#: Sentinel-1 "dB": a median outside this range (dB) is not backscatter in dB.
S1_DB_RANGE = (-80.0, 60.0)
#: Sentinel-2 "1": a median above this means digital numbers (or percent) ...
S2_MAX_MEDIAN = 2.0
#: ... and so does a 99th percentile above this.
S2_MAX_P99 = 100.0
#: Sentinel-2 "1": a median below this is not reflectance.
S2_MIN_MEDIAN = -0.5

_S1_FIX = "convert with `ec.linear_to_db(cube)`"
_S2_FIX = (
    "apply the scale and offset (e.g. `cube * 1e-4` for L1C/L2A digital numbers, "
    "`(cube - 1000) * 1e-4` for L2A since processing baseline 04.00, or load with "
    "`ec.load_stac`, which applies raster:bands scale/offset)"
)


class UnitsError(ValueError):
    """The values of a cube are plainly inconsistent with its units (see :func:`check_values`).

    Examples
    --------
    >>> issubclass(UnitsError, ValueError)
    True
    """


def _is_db(unit: str) -> bool:
    return unit.strip().lower() == "db"


def _is_reflectance(unit: str) -> bool:
    return unit.strip() == "1"


def _strided(values: np.ndarray, budget: int) -> np.ndarray:
    """A deterministic strided view of ``values`` with at most ``budget`` elements."""
    steps = [1] * values.ndim
    counts = list(values.shape)
    while math.prod(counts) > budget:
        axis = int(np.argmax(counts))
        counts[axis] = math.ceil(counts[axis] / 2)
        steps[axis] = math.ceil(values.shape[axis] / counts[axis])
        counts[axis] = math.ceil(values.shape[axis] / steps[axis])
    return values[tuple(slice(None, None, s) for s in steps)]


def _band_units(units: str | Mapping[str, str], n_bands: int) -> list[tuple[str, str]]:
    """``(band label, unit)`` per band along the band axis."""
    if isinstance(units, str):
        if n_bands == 1:
            return [("", units)]
        return [(f"band {i}", units) for i in range(n_bands)]
    items = [(str(b), str(u)) for b, u in units.items()]
    if len(items) == n_bands:
        return [(f"band {b!r}", u) for b, u in items]
    distinct = {u for _, u in items}
    if len(distinct) == 1:
        return _band_units(distinct.pop(), n_bands)
    raise ValueError(
        f"units name {len(items)} bands ({[b for b, _ in items]}) but the values hold "
        f"{n_bands} along their band axis"
    )


def _stats(sample: np.ndarray) -> dict[str, float] | None:
    flat = np.asarray(sample, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat) & (flat != 0)]
    if flat.size < MIN_VALUES:
        return None
    p1, median, p99 = np.percentile(flat, [1, 50, 99])
    return {
        "n": float(flat.size),
        "median": float(median),
        "negative": float(np.count_nonzero(flat < 0)) / flat.size,
        "p1": float(p1),
        "p99": float(p99),
    }


def _verdict(sensor: str, unit: str, st: dict[str, float]) -> tuple[str, str, str] | None:
    """``(what they should be, what they look like, fix)``, or ``None`` for plausible values."""
    if sensor == "s1" and _is_db(unit):
        want = "backscatter in dB"
        if st["negative"] < S1_MAX_NEGATIVE and st["median"] < S1_LINEAR_MEDIAN:
            return want, "they look like linear backscatter power or amplitude", _S1_FIX
        low, high = S1_DB_RANGE
        if not low <= st["median"] <= high:
            return (
                want,
                f"the median is far outside the range of backscatter in dB ({low:g}..{high:g}): "
                "uncalibrated digital numbers or an unmasked fill value",
                f"mask fill values as NaN and, for linear power, {_S1_FIX}",
            )
        return None
    if sensor == "s2" and _is_reflectance(unit):
        want = "reflectance 0..1"
        if st["median"] > S2_MAX_MEDIAN or st["p99"] > S2_MAX_P99:
            return want, "they look like digital numbers (or percent)", _S2_FIX
        if st["median"] < S2_MIN_MEDIAN:
            return (
                want,
                "the median is far below any reflectance: an unmasked fill value or an offset "
                "applied without its scale",
                f"mask fill values as NaN and {_S2_FIX}",
            )
    return None


def check_values(
    values: np.ndarray,
    sensor: str,
    units: str | Mapping[str, str],
    *,
    name: str,
    where: str = "",
    band_axis: int | None = -3,
) -> None:
    """Raise :class:`UnitsError` when ``values`` are plainly inconsistent with ``units``.

    Only a strided sample of at most :data:`MAX_SAMPLE` values is looked at (deterministic:
    the same array always gives the same sample), band by band; exact zeros and non-finite
    values are left out, and a band with fewer than :data:`MIN_VALUES` remaining values
    passes. The rules and thresholds are listed in :mod:`eo_contrast.units`: Sentinel-1 in
    ``"dB"`` and Sentinel-2 in ``"1"`` are checked, other units and sensors pass.

    Parameters
    ----------
    values
        The values, e.g. a block ``(time, band, y, x)`` or ``(band, y, x)`` of a cube.
    sensor
        ``"s1"`` or ``"s2"``.
    units
        The units the values claim to be in: one string for all bands, or band name -> units
        in the order of the bands along ``band_axis``.
    name
        How to call the values in the message (``"cube"``, ``"cube['s1']"``, ...).
    where
        Which part of it they are (a chunk, a time step, a chip), for the message.
    band_axis
        The axis of the bands (default ``-3``, the canonical layouts); ``None``, or values with
        fewer dims than that needs, check all values together.

    Raises
    ------
    UnitsError
        With the band, the statistics seen (median, fraction negative, 99th percentile, how many
        values) and the conversion that fixes the cube.

    Examples
    --------
    >>> import numpy as np
    >>> refl = np.random.default_rng(1).uniform(0.02, 0.4, (3, 16, 16))
    >>> check_values(refl, "s2", "1", name="cube")
    >>> check_values(refl * 10_000, "s2", {"B04": "1", "B03": "1", "B02": "1"}, name="cube",
    ...              where="chunk (0, 0, 0)")
    Traceback (most recent call last):
    ...
    eo_contrast.units.UnitsError: cube (chunk (0, 0, 0)): Sentinel-2 values do not look like ...
    """
    arr = np.asarray(values)
    if arr.size == 0 or arr.dtype.kind not in "iuf":
        return
    if sensor not in ("s1", "s2"):
        return
    needs = -band_axis if band_axis is not None and band_axis < 0 else (band_axis or 0) + 1
    if band_axis is not None and arr.ndim >= needs:
        axis = band_axis % arr.ndim
        n_bands = arr.shape[axis]
    else:
        axis, n_bands = None, 1
    per_band = _band_units(units, n_bands)
    if not any(_verdict_possible(sensor, u) for _, u in per_band):
        return
    budget = max(MIN_VALUES * 10, MAX_SAMPLE // n_bands)
    for i, (label, unit) in enumerate(per_band):
        if not _verdict_possible(sensor, unit):
            continue
        band = arr if axis is None else arr[(slice(None),) * axis + (i,)]
        st = _stats(_strided(band, budget))
        if st is None:
            continue
        verdict = _verdict(sensor, unit, st)
        if verdict is None:
            continue
        want, looks, fix = verdict
        place = f"{name} ({where})" if where else name
        of_band = f" {label}" if label else ""
        sensor_name = "Sentinel-1" if sensor == "s1" else "Sentinel-2"
        raise UnitsError(
            f"{place}: {sensor_name} values do not look like {want} (units {unit!r}):"
            f"{of_band} median {st['median']:.4g}, {100 * st['negative']:.1f} % negative, "
            f"1st-99th percentile {st['p1']:.4g}..{st['p99']:.4g} "
            f"({int(st['n'])} finite non-zero values sampled); {looks}. Fix: {fix}"
        )


def _verdict_possible(sensor: str, unit: str) -> bool:
    return (sensor == "s1" and _is_db(unit)) or (sensor == "s2" and _is_reflectance(unit))


def block_location(
    block_info: Mapping[Any, Any] | None,
    dims: Sequence[str],
    *,
    depth: Mapping[int, int] | None = None,
) -> str:
    """Describe the chunk a Dask ``map_blocks`` task works on: index and pixel ranges.

    Parameters
    ----------
    block_info
        The ``block_info`` Dask passes to a block function (``None`` gives ``""``).
    dims
        The names of the input array's dims.
    depth
        Halo width per axis when the input went through :func:`dask.array.overlap.overlap`
        (with a boundary on every side): the ranges given are then those of the chunk's core in
        the array before the halo was added.

    Examples
    --------
    >>> info = {0: {"chunk-location": (0, 1, 2), "array-location": [(0, 2), (32, 64), (64, 96)]}}
    >>> block_location(info, ("band", "y", "x"), depth={1: 8, 2: 8})
    'chunk (0, 1, 2): band 0:2, y 16:32, x 32:48'
    """
    if not block_info or 0 not in block_info:
        return ""
    info = block_info[0]
    loc = tuple(int(i) for i in info["chunk-location"])
    depth = dict(depth or {})
    parts = []
    for ax, (start, stop) in enumerate(info["array-location"]):
        d = int(depth.get(ax, 0))
        lo = int(start) - 2 * d * loc[ax]
        hi = int(stop) - 2 * d * (loc[ax] + 1)
        label = dims[ax] if ax < len(dims) else f"axis {ax}"
        parts.append(f"{label} {lo}:{hi}")
    return f"chunk {loc}: " + ", ".join(parts)
