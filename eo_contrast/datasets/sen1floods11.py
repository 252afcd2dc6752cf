"""Reader for Sen1Floods11 hand-labelled flood chips (S1 + S2 + water label, co-registered).

Sen1Floods11 (Bonafilia et al., 2020) ships each hand-labelled chip as three GeoTIFFs on one
512 x 512 EPSG:4326 grid (about 10 m pixels)::

    {chip}_S1Hand.tif     2 bands float32: VV, VH backscatter in dB, nodata NaN
    {chip}_S2Hand.tif     13 bands int16: Sentinel-2 L1C top-of-atmosphere reflectance x 10000,
                          B1..B12 with B8A and B10, nodata 0
    {chip}_LabelHand.tif  1 band int16: -1 nodata, 0 not water, 1 water

plus one ``Sen1Floods11_Metadata.geojson`` with, per flood event (``location``), the S1 and S2
acquisition dates. The chip name starts with the event (``"Spain_7370579"`` -> ``"Spain"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eo_contrast.cube import S1_BANDS, S2_BANDS, canonical_band_names

__all__ = ["Sen1Floods11Chip", "read_sen1floods11"]

METADATA_NAME = "Sen1Floods11_Metadata.geojson"
_S1_BANDS = list(S1_BANDS[:2])  # vv, vh
_S2_BANDS = list(S2_BANDS)  # 13 L1C bands, B10 included
# Folder names of the full dataset layout (v1.1/data/flood_events/HandLabeled/<kind>/).
_KINDS = ("S1Hand", "S2Hand", "LabelHand")


@dataclass(frozen=True)
class Sen1Floods11Chip:
    """One Sen1Floods11 hand-labelled chip, read by :func:`read_sen1floods11`.

    Attributes
    ----------
    chip
        The chip name, e.g. ``"Spain_7370579"``.
    event
        The flood event (``location`` in the metadata), e.g. ``"Spain"``.
    s1
        Canonical cube ``(time=1, band=[vv, vh], y, x)``, float32 backscatter in dB.
    s2
        Canonical cube ``(time=1, band=B01..B12 incl. B8A and B10, y, x)``, float32 L1C
        top-of-atmosphere reflectance (0..1), NaN where the file has 0.
    label
        ``(y, x)`` int16 water label on the same grid: -1 nodata, 0 dry, 1 water.
    s1_time, s2_time
        Acquisition dates of the event (the metadata gives dates only, no time of day).
    metadata
        The event's properties from ``Sen1Floods11_Metadata.geojson``.
    """

    chip: str
    event: str
    s1: xr.DataArray
    s2: xr.DataArray
    label: xr.DataArray
    s1_time: pd.Timestamp
    s2_time: pd.Timestamp
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _find(root: Path, name: str, kind: str) -> Path:
    candidates = [root / name, root / kind / name]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Sen1Floods11 file {candidates[0]} not found (also looked for {candidates[1]}); "
        "check `root` and `chip` (root is the folder holding the chip's GeoTIFFs)"
    )


def _find_metadata(root: Path) -> Path:
    tried = []
    for folder in [root, *list(root.resolve().parents)[:4]]:
        path = folder / METADATA_NAME
        tried.append(path)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Sen1Floods11 metadata {tried[0]} not found (also looked in the 4 parent folders); "
        f"put {METADATA_NAME} (it gives the acquisition dates of each event) next to the chip"
    )


def _event_metadata(path: Path, chip: str) -> tuple[str, dict[str, Any]]:
    event = chip.rsplit("_", 1)[0]
    with path.open(encoding="utf-8") as f:
        doc = json.load(f)
    features = doc.get("features", []) if isinstance(doc, dict) else []
    props = [f.get("properties") or {} for f in features]
    for p in props:
        if str(p.get("location", "")).lower() == event.lower():
            return str(p["location"]), dict(p)
    known = sorted(str(p.get("location")) for p in props)
    raise KeyError(
        f"chip {chip!r} names event {event!r}, which is not in {path}; "
        f"known events (chip prefixes): {known}"
    )


def _date(props: Mapping[str, Any], key: str, path: Path) -> pd.Timestamp:
    value = props.get(key)
    try:
        return pd.Timestamp(str(value).replace("/", "-"))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: event field {key!r} = {value!r} is not a date") from err


def _open(path: Path, chunks: Any) -> xr.DataArray:
    import rioxarray

    da = rioxarray.open_rasterio(path, chunks=chunks, masked=False, cache=False)
    assert isinstance(da, xr.DataArray)
    if chunks is None:
        da = da.load()
        da.close()
    return da


def _band_names(da: xr.DataArray, expected: list[str], path: Path) -> list[str]:
    described = da.attrs.get("long_name")
    if isinstance(described, str):
        described = (described,)
    if described is not None and len(described) == da.sizes["band"]:
        names = canonical_band_names(described)
    else:
        names = list(expected)
    if names != expected:
        raise ValueError(f"{path} has bands {names}; expected {expected}")
    return names


def _finish(
    da: xr.DataArray, bands: list[str], units: str, time: pd.Timestamp, name: str
) -> xr.DataArray:
    crs = da.rio.crs
    da = da.assign_coords(band=bands, units=("band", [units] * len(bands)))
    da = da.expand_dims(time=[np.datetime64(time.to_datetime64(), "ns")])
    da = da.rio.write_crs(crs)
    da.name = name
    return da


def read_sen1floods11(
    root: str | Path, chip: str = "Spain_7370579", *, chunks: Any = None
) -> Sen1Floods11Chip:
    """Read a Sen1Floods11 hand-labelled chip: S1, S2 and the water label on one grid.

    Looks for ``{chip}_S1Hand.tif``, ``{chip}_S2Hand.tif`` and ``{chip}_LabelHand.tif`` in
    ``root`` (or in ``root/S1Hand``, ``root/S2Hand``, ``root/LabelHand`` as in the full
    dataset), and for ``Sen1Floods11_Metadata.geojson`` in ``root`` or up to 4 parent folders.
    The chip's prefix (``"Spain"`` in ``"Spain_7370579"``) names its event in the metadata,
    which gives the S1 and S2 acquisition dates (dates only; time of day is not recorded).

    Parameters
    ----------
    root
        Folder holding the chip's files.
    chip
        Chip name, ``{event}_{id}``.
    chunks
        Passed to :func:`rioxarray.open_rasterio`: ``None`` reads the (small) chip eagerly
        into memory; anything else (``True``, ``{"x": 256, "y": 256}``, ...) gives lazy dask
        arrays.

    Returns
    -------
    Sen1Floods11Chip
        ``s1``: cube ``(time=1, band=[vv, vh], y, x)`` float32 dB; ``s2``: cube ``(time=1,
        band=13, y, x)`` float32 reflectance = DN * 1e-4 (L1C top of atmosphere; DN 0 -> NaN);
        ``label``: ``(y, x)`` int16 (-1 nodata, 0 dry, 1 water). All three share the chip's
        grid and CRS (EPSG:4326) and carry a ``spatial_ref`` coordinate; the cubes carry a
        ``units`` coordinate along ``band`` ("dB", "1").

    Raises
    ------
    FileNotFoundError
        When a file is missing (the message names the path).
    KeyError
        When the chip's event is not in the metadata.

    Examples
    --------
    >>> import eo_contrast as ec
    >>> from eo_contrast.datasets.sen1floods11 import _example_root
    >>> chip = ec.read_sen1floods11(_example_root())
    >>> chip.event, str(chip.s1_time.date()), str(chip.s2_time.date())
    ('Spain', '2019-09-17', '2019-09-18')
    >>> chip.s1.band.values.tolist(), chip.s2.sizes["band"], chip.label.shape, chip.s1.rio.crs.to_epsg()
    (['vv', 'vh'], 13, (512, 512), 4326)
    >>> ec.read_sen1floods11("no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Sen1Floods11 file no/such/folder/Spain_7370579_S1Hand.tif not found ...
    """
    root = Path(root)
    s1_path = _find(root, f"{chip}_S1Hand.tif", "S1Hand")
    s2_path = _find(root, f"{chip}_S2Hand.tif", "S2Hand")
    label_path = _find(root, f"{chip}_LabelHand.tif", "LabelHand")
    meta_path = _find_metadata(root)
    event, props = _event_metadata(meta_path, chip)
    s1_time = _date(props, "s1_date", meta_path)
    s2_time = _date(props, "s2_date", meta_path)

    s1_raw = _open(s1_path, chunks)
    s1_names = _band_names(s1_raw, _S1_BANDS, s1_path)
    nodata = s1_raw.rio.nodata
    s1_vals = s1_raw.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        s1_vals = s1_vals.where(s1_raw != nodata)
    s1 = _finish(s1_vals.astype(np.float32), s1_names, "dB", s1_time, "s1")
    s1.attrs = {"long_name": "Sentinel-1 GRD backscatter", "units": "dB", "source": str(s1_path)}

    s2_raw = _open(s2_path, chunks)
    s2_names = _band_names(s2_raw, _S2_BANDS, s2_path)
    s2_nodata = s2_raw.rio.nodata
    invalid = s2_raw == (0 if s2_nodata is None else s2_nodata)
    s2_vals = (s2_raw.astype(np.float32) * np.float32(1e-4)).where(~invalid).astype(np.float32)
    s2 = _finish(s2_vals, s2_names, "1", s2_time, "s2")
    s2.attrs = {
        "long_name": "Sentinel-2 L1C top-of-atmosphere reflectance",
        "units": "1",
        "processing_level": "L1C",
        "source": str(s2_path),
    }

    lab_raw = _open(label_path, chunks)
    if lab_raw.sizes["band"] != 1:
        raise ValueError(f"{label_path} has {lab_raw.sizes['band']} bands; a label has 1")
    for other, path in ((s2_raw, s2_path), (lab_raw, label_path)):
        if (
            other.rio.crs != s1_raw.rio.crs
            or other.rio.shape != s1_raw.rio.shape
            or not np.allclose(
                tuple(other.rio.transform())[:6],
                tuple(s1_raw.rio.transform())[:6],
                rtol=1e-9,
                atol=1e-12,
            )
        ):
            raise ValueError(
                f"{path} is not on the grid of {s1_path}; Sen1Floods11 chips share one grid"
            )
    # The label's transform differs from the images' by float rounding only: give it their grid.
    label = lab_raw.isel(band=0, drop=True).astype(np.int16)
    label = label.assign_coords(x=s1.x, y=s1.y).rio.write_crs(s1.rio.crs)
    label.name = "label"
    label.attrs = {
        "long_name": "water label",
        "flag_values": [-1, 0, 1],
        "flag_meanings": "nodata dry water",
        "nodata": -1,
        "source": str(label_path),
    }
    return Sen1Floods11Chip(
        chip=chip,
        event=event,
        s1=s1,
        s2=s2,
        label=label,
        s1_time=s1_time,
        s2_time=s2_time,
        metadata=props,
    )


def _shared_data_dir() -> Path:
    """The project's real-data folder: ``$EO_CONTRAST_SHARED_DATA`` or ``../shared/data``."""
    import os

    env = os.environ.get("EO_CONTRAST_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def _example_root() -> Path:
    """The shared data folder's Sen1Floods11 chip (for documentation examples)."""
    return _shared_data_dir() / "sen1floods11_spain"
