"""Reader for Sen1Floods11 hand-labelled flood chips (S1 + S2 + water label, co-registered).

Sen1Floods11 (Bonafilia et al., 2020) ships each hand-labelled chip as three GeoTIFFs on one
512 x 512 EPSG:4326 grid (about 10 m pixels)::

    {chip}_S1Hand.tif     2 bands float32: VV, VH backscatter in dB, nodata NaN
    {chip}_S2Hand.tif     13 bands int16: Sentinel-2 L1C top-of-atmosphere reflectance x 10000,
                          B1..B12 with B8A and B10, nodata 0
    {chip}_LabelHand.tif  1 band int16: -1 nodata, 0 not water, 1 water

plus one ``Sen1Floods11_Metadata.geojson`` with, per flood event (``location``), the S1 and S2
acquisition dates. The chip name starts with the event (``"Spain_7370579"`` -> ``"Spain"``;
the ``Mekong`` chips belong to the event the metadata calls ``Cambodia``).

:func:`read_sen1floods11` finds the files in three layouts:

* a flat folder holding the chip's GeoTIFFs and the metadata side by side;
* a ``HandLabeled`` folder with ``S1Hand/``, ``S2Hand/`` and ``LabelHand/`` subfolders;
* the dataset's own layout (``gs://sen1floods11/v1.1/``), given its root (the folder holding
  ``v1.1/``) or ``v1.1/`` itself::

      v1.1/Sen1Floods11_Metadata.geojson
      v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}/{chip}_{kind}.tif
      v1.1/splits/flood_handlabeled/flood_{train,valid,test,bolivia}_data.csv

The split files list one chip a row, ``{chip}_S1Hand.tif,{chip}_LabelHand.tif``, without a
header. Given ``chip`` the reader returns that chip; without it, the list of chips of a split
(or of every chip in ``S1Hand/``), ready for :func:`eo_contrast.fit_segmentation`, which takes
one cube and one label per chip.

Examples
--------
>>> import eo_contrast as ec
>>> from eo_contrast.datasets.shared_data import example_path
>>> chips = ec.read_sen1floods11(example_path("sen1floods11_handlabeled"), split="test")
>>> [(c.chip, c.event, c.s2 is None) for c in chips]  # doctest: +NORMALIZE_WHITESPACE
[('Ghana_53713', 'Ghana', True), ('Mekong_333434', 'Cambodia', True),
 ('Pakistan_849790', 'Pakistan', True), ('Sri-Lanka_534068', 'Sri-Lanka', True),
 ('USA_905409', 'USA', True)]
>>> seg = ec.fit_segmentation([c.s1 for c in chips], [c.label for c in chips])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import xarray as xr

from eo_contrast.cube import S1_BANDS, S2_BANDS, canonical_band_names

__all__ = ["Sen1Floods11Chip", "read_sen1floods11"]

METADATA_NAME = "Sen1Floods11_Metadata.geojson"
#: The hand-labelled splits: ``flood_{split}_data.csv`` under ``v1.1/splits/flood_handlabeled/``.
SPLITS = ("train", "valid", "test", "bolivia")
SENSORS = ("s1", "s2")
_S1_BANDS = list(S1_BANDS[:2])  # vv, vh
_S2_BANDS = list(S2_BANDS)  # 13 L1C bands, B10 included
# Folder names of the full dataset layout (v1.1/data/flood_events/HandLabeled/<kind>/).
_KINDS = ("S1Hand", "S2Hand", "LabelHand")
_VERSION = "v1.1"
_HANDLABELED = Path("data") / "flood_events" / "HandLabeled"
_SPLIT_DIR = Path("splits") / "flood_handlabeled"
# Chip prefixes that differ from the event's ``location`` in the metadata.
_EVENT_ALIASES = {"mekong": "Cambodia"}


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
        top-of-atmosphere reflectance (0..1), NaN where the file has 0; ``None`` when the chip
        has no S2 file (many hand-labelled chips have none) or S2 was not asked for.
    label
        ``(y, x)`` int16 water label on the same grid: -1 nodata, 0 dry, 1 water.
    s1_time, s2_time
        Acquisition dates of the event (the metadata gives dates only, no time of day).
    metadata
        The event's properties from ``Sen1Floods11_Metadata.geojson``.

    ``s1``, ``s2`` and ``label`` carry the chip name in ``attrs["chip"]``.
    """

    chip: str
    event: str
    s1: xr.DataArray
    s2: xr.DataArray | None
    label: xr.DataArray
    s1_time: pd.Timestamp
    s2_time: pd.Timestamp
    metadata: Mapping[str, Any] = field(default_factory=dict)


_LAYOUT_HINT = (
    "root is the folder holding the chip's GeoTIFFs, a HandLabeled folder with S1Hand/, "
    "S2Hand/ and LabelHand/, or the dataset root holding v1.1/"
)


def _folders(root: Path, kind: str) -> list[Path]:
    """Where the files of ``kind`` (``S1Hand``, ...) may be, flat layout first."""
    return [root, root / kind, root / _VERSION / _HANDLABELED / kind, root / _HANDLABELED / kind]


def _locate(root: Path, name: str, kind: str) -> tuple[Path | None, list[Path]]:
    candidates = [folder / name for folder in _folders(root, kind)]
    for path in candidates:
        if path.is_file():
            return path, candidates
    return None, candidates


def _find(root: Path, name: str, kind: str) -> Path:
    path, candidates = _locate(root, name, kind)
    if path is None:
        also = ", ".join(str(c) for c in candidates[1:])
        raise FileNotFoundError(
            f"Sen1Floods11 file {candidates[0]} not found (also looked for {also}); "
            f"check `root` and `chip` ({_LAYOUT_HINT})"
        )
    return path


def _find_metadata(root: Path) -> Path:
    tried = []
    for folder in [root, root / _VERSION, *list(root.resolve().parents)[:4]]:
        path = folder / METADATA_NAME
        tried.append(path)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"Sen1Floods11 metadata {tried[0]} not found (also looked for {tried[1]} and in the 4 "
        f"parent folders); put {METADATA_NAME} (it gives the acquisition dates of each event) "
        "next to the chip"
    )


def _event_metadata(path: Path, chip: str) -> tuple[str, dict[str, Any]]:
    event = chip.rsplit("_", 1)[0]
    location = _EVENT_ALIASES.get(event.lower(), event)
    with path.open(encoding="utf-8") as f:
        doc = json.load(f)
    features = doc.get("features", []) if isinstance(doc, dict) else []
    props = [f.get("properties") or {} for f in features]
    for p in props:
        if str(p.get("location", "")).lower() == location.lower():
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


def _need_s2(sensors: str | Sequence[str] | None) -> bool | None:
    """``None``: S2 where present; ``True``: S2 required; ``False``: S2 not read."""
    if sensors is None:
        return None
    names = (sensors,) if isinstance(sensors, str) else tuple(sensors)
    bad = [s for s in names if s not in SENSORS]
    if bad or not names:
        raise ValueError(
            f"sensors={sensors!r}: give a non-empty subset of {SENSORS} or None (S1 and the "
            "label are always read; 's2' requires the S2 file)"
        )
    return "s2" in names


def _split_dirs(root: Path) -> list[Path]:
    """Where split CSVs may be: `root`, then `[v1.1/]splits/flood_handlabeled/` at or above it."""
    folders = [root]
    for folder in [root, *list(root.resolve().parents)[:4]]:
        folders += [folder / _VERSION / _SPLIT_DIR, folder / _SPLIT_DIR]
    return folders


def _split_chips(root: Path, split: str) -> list[str]:
    name = f"flood_{split}_data.csv"
    folders = _split_dirs(root)
    present_dirs = [f for f in folders if f.is_dir() and any(f.glob("flood_*_data.csv"))]
    for folder in folders:
        path = folder / name
        if path.is_file():
            break
    else:
        expected = (present_dirs[0] if present_dirs else root / _VERSION / _SPLIT_DIR) / name
        present = sorted({p.name for f in present_dirs for p in f.glob("flood_*_data.csv")})
        raise FileNotFoundError(
            f"Sen1Floods11 split file {expected} not found (split {split!r}; also looked in "
            f"{_VERSION}/{_SPLIT_DIR.as_posix()}/ and {_SPLIT_DIR.as_posix()}/ under `root` and "
            f"its 4 parent folders); split files present: {present or 'none'}"
        )
    chips: list[str] = []
    suffix = "_S1Hand.tif"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        first = line.split(",", 1)[0].strip()
        if not first:
            continue
        if not first.endswith(suffix) or first == suffix:
            raise ValueError(
                f"{path}, line {n}: {line!r} does not start with '<chip>{suffix}' "
                f"(rows are '<chip>{suffix},<chip>_LabelHand.tif', without a header)"
            )
        chip = Path(first).name[: -len(suffix)]
        if chip not in chips:
            chips.append(chip)
    return sorted(chips)


def _all_chips(root: Path) -> list[str]:
    suffix = "_S1Hand.tif"
    folders = _folders(root, "S1Hand")
    chips = {p.name[: -len(suffix)] for f in folders for p in f.glob(f"*{suffix}") if p.is_file()}
    if not chips:
        raise FileNotFoundError(
            f"no Sen1Floods11 chip (*{suffix}) in {root} (also looked in "
            f"{', '.join(str(f) for f in folders[1:])}); {_LAYOUT_HINT}"
        )
    return sorted(chips)


def _read_chip(
    root: Path, chip: str, need_s2: bool | None, chunks: Any, meta_path: Path | None = None
) -> Sen1Floods11Chip:
    s1_path = _find(root, f"{chip}_S1Hand.tif", "S1Hand")
    s2_path: Path | None = None
    if need_s2 is not False:
        s2_path, tried = _locate(root, f"{chip}_S2Hand.tif", "S2Hand")
        if s2_path is None and need_s2:
            raise FileNotFoundError(
                f"Sen1Floods11 chip {chip!r} has no S2 file ({tried[0]} not found, nor "
                f"{', '.join(str(t) for t in tried[1:])}); pass sensors=('s1',) to read its "
                "S1 image and label only"
            )
    label_path = _find(root, f"{chip}_LabelHand.tif", "LabelHand")
    meta_path = _find_metadata(root) if meta_path is None else meta_path
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
    s1.attrs = {
        "long_name": "Sentinel-1 GRD backscatter",
        "units": "dB",
        "source": str(s1_path),
        "chip": chip,
    }

    on_grid: list[tuple[xr.DataArray, Path]] = []
    s2: xr.DataArray | None = None
    if s2_path is not None:
        s2_raw = _open(s2_path, chunks)
        s2_names = _band_names(s2_raw, _S2_BANDS, s2_path)
        s2_nodata = s2_raw.rio.nodata
        invalid = s2_raw == (0 if s2_nodata is None else s2_nodata)
        s2_vals = (s2_raw.astype(np.float32) * np.float32(1e-4)).where(~invalid)
        s2 = _finish(s2_vals.astype(np.float32), s2_names, "1", s2_time, "s2")
        s2.attrs = {
            "long_name": "Sentinel-2 L1C top-of-atmosphere reflectance",
            "units": "1",
            "processing_level": "L1C",
            "source": str(s2_path),
            "chip": chip,
        }
        on_grid.append((s2_raw, s2_path))

    lab_raw = _open(label_path, chunks)
    if lab_raw.sizes["band"] != 1:
        raise ValueError(f"{label_path} has {lab_raw.sizes['band']} bands; a label has 1")
    on_grid.append((lab_raw, label_path))
    for other, path in on_grid:
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
        "chip": chip,
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


@overload
def read_sen1floods11(
    root: str | Path,
    chip: str,
    *,
    split: None = None,
    sensors: str | Sequence[str] | None = None,
    chunks: Any = None,
) -> Sen1Floods11Chip: ...


@overload
def read_sen1floods11(
    root: str | Path,
    chip: None = None,
    *,
    split: str | None = None,
    sensors: str | Sequence[str] | None = None,
    chunks: Any = None,
) -> list[Sen1Floods11Chip]: ...


def read_sen1floods11(
    root: str | Path,
    chip: str | None = None,
    *,
    split: str | None = None,
    sensors: str | Sequence[str] | None = None,
    chunks: Any = None,
) -> Sen1Floods11Chip | list[Sen1Floods11Chip]:
    """Read Sen1Floods11 hand-labelled chips: S1, S2 and the water label on each chip's grid.

    Looks for ``{chip}_S1Hand.tif``, ``{chip}_S2Hand.tif`` and ``{chip}_LabelHand.tif`` in
    ``root`` (flat folder), in ``root/S1Hand``, ``root/S2Hand``, ``root/LabelHand`` (a
    ``HandLabeled`` folder), or in ``v1.1/data/flood_events/HandLabeled/<kind>/`` under
    ``root`` (the dataset root, or ``v1.1/`` itself). ``Sen1Floods11_Metadata.geojson`` is
    looked for in ``root``, ``root/v1.1`` and up to 4 parent folders. The chip's prefix
    (``"Spain"`` in ``"Spain_7370579"``) names its event in the metadata, which gives the S1
    and S2 acquisition dates (dates only; time of day is not recorded).

    Parameters
    ----------
    root
        The flat folder holding the chips' files, a ``HandLabeled`` folder, or the dataset root.
    chip
        Chip name, ``{event}_{id}``: read that chip. ``None``: read a list of chips, those of
        ``split``, or every chip with an ``S1Hand`` file when ``split`` is ``None``.
    split
        With ``chip=None`` only: ``"train"``, ``"valid"``, ``"test"`` or ``"bolivia"``, the
        chips listed in ``flood_{split}_data.csv`` of ``v1.1/splits/flood_handlabeled/``.
    sensors
        ``None``: S1 and the label, and S2 where the chip has an S2 file (``s2`` is ``None``
        otherwise). ``("s1",)``: S2 is not read. ``("s1", "s2")`` or ``("s2",)``: S2 is
        required. S1 and the label are always read (S1 gives the chip's grid).
    chunks
        Passed to :func:`rioxarray.open_rasterio`: ``None`` reads the (small) chips eagerly
        into memory; anything else (``True``, ``{"x": 256, "y": 256}``, ...) gives lazy dask
        arrays.

    Returns
    -------
    Sen1Floods11Chip or list of Sen1Floods11Chip
        One chip when ``chip`` is given, else the chips sorted by name. Per chip: ``s1``: cube
        ``(time=1, band=[vv, vh], y, x)`` float32 dB; ``s2``: cube ``(time=1, band=13, y, x)``
        float32 reflectance = DN * 1e-4 (L1C top of atmosphere; DN 0 -> NaN), or ``None``;
        ``label``: ``(y, x)`` int16 (-1 nodata, 0 dry, 1 water). All share the chip's grid
        and CRS (EPSG:4326; every chip has its own grid) and carry a ``spatial_ref``
        coordinate and ``attrs["chip"]``; the cubes carry a ``units`` coordinate along
        ``band`` ("dB", "1").

    Raises
    ------
    FileNotFoundError
        When a file is missing (the message names the path, and the chip for a split's chip or
        a required S2 file), or the split's CSV is (the message lists the split files present).
    KeyError
        When the chip's event is not in the metadata.
    ValueError
        For an unknown ``split`` or sensor, or ``chip`` and ``split`` given together.

    Notes
    -----
    :func:`eo_contrast.fit_segmentation` takes one cube and one label per chip, so a split
    trains in one call: ``seg = ec.fit_segmentation([c.s1 for c in chips], [c.label for c in
    chips])``; errors about a chip name it from ``attrs["chip"]``.

    Examples
    --------
    >>> import eo_contrast as ec
    >>> from eo_contrast.datasets.shared_data import example_path
    >>> root = example_path("sen1floods11_handlabeled")  # the dataset's own layout
    >>> chip = ec.read_sen1floods11(root, "Spain_7370579")
    >>> chip.event, str(chip.s1_time.date()), str(chip.s2_time.date())
    ('Spain', '2019-09-17', '2019-09-18')
    >>> chip.s1.band.values.tolist(), chip.s2.sizes["band"], chip.label.shape, chip.s1.rio.crs.to_epsg()
    (['vv', 'vh'], 13, (512, 512), 4326)
    >>> flat = ec.read_sen1floods11(example_path("sen1floods11_spain"), "Spain_7370579")
    >>> bool((flat.label == chip.label).all()), flat.label.attrs["chip"]
    (True, 'Spain_7370579')

    All chips, or those of a split (sorted by name); only Spain_7370579 has an S2 file here:

    >>> [(c.chip, c.s2 is not None) for c in ec.read_sen1floods11(root)]  # doctest: +NORMALIZE_WHITESPACE
    [('Ghana_53713', False), ('Mekong_333434', False), ('Pakistan_849790', False),
     ('Spain_7370579', True), ('Sri-Lanka_534068', False), ('USA_905409', False)]
    >>> test = ec.read_sen1floods11(root, split="test", sensors=("s1",))
    >>> len(test), [round(float((c.label == 1).mean()), 3) for c in test]
    (5, [0.0, 0.013, 0.656, 0.981, 0.17])
    >>> seg = ec.fit_segmentation([c.s1 for c in test], [c.label for c in test])  # doctest: +SKIP
    >>> ec.read_sen1floods11(root, split="test", sensors=("s1", "s2"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: Sen1Floods11 chip 'Ghana_53713' has no S2 file ...
    >>> ec.read_sen1floods11("no/such/folder", "Spain_7370579")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Sen1Floods11 file no/such/folder/Spain_7370579_S1Hand.tif not found ...
    """
    if split is not None and split not in SPLITS:
        raise ValueError(
            f"split={split!r} is not a Sen1Floods11 hand-labelled split; use one of {SPLITS} "
            "or None"
        )
    if chip is not None and not isinstance(chip, str):
        raise TypeError(f"chip={chip!r}: give one chip name (a str), or None for a list")
    if chip is not None and split is not None:
        raise ValueError(
            f"chip={chip!r} and split={split!r}: give `chip` for one chip, or `split` (with "
            "chip=None) for the list of its chips"
        )
    need_s2 = _need_s2(sensors)
    root = Path(root)
    if chip is not None:
        return _read_chip(root, chip, need_s2, chunks)

    names = _all_chips(root) if split is None else _split_chips(root, split)
    meta_path = _find_metadata(root)
    chips = []
    for name in names:
        try:
            chips.append(_read_chip(root, name, need_s2, chunks, meta_path))
        except FileNotFoundError as err:
            if split is None or f"{name!r}" in str(err):
                raise
            raise FileNotFoundError(
                f"Sen1Floods11 chip {name!r} of split {split!r}: {err}"
            ) from err
    return chips
