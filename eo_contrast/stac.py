"""STAC items -> canonical datacube, through odc-stac (default) or stackstac.

:func:`load_stac` turns STAC Items (pystac objects, dicts, JSON files, catalogs) into the canonical
cube ``(time, band, y, x)``: float32 physical units, NaN for nodata, canonical band names with a
``units`` coordinate, the CRS in a ``spatial_ref`` coordinate, lazy dask arrays.

How it works, for both engines alike:

1. Items are read (:func:`read_items`) and each item's usable raster assets are named
   canonically (asset key, ``eo:bands`` name or unique common name: ``"red"`` -> ``"B04"``,
   ``"VV"`` -> ``"vv"``).
2. Per item and band, the physical-unit recipe is resolved: ``raster:bands``
   scale/offset/nodata/unit (from the asset, else from the collection's ``item_assets``), the
   Sentinel-2 DN convention where those are absent, and linear -> dB for Sentinel-1 backscatter.
3. The output grid (an odc-geo ``GeoBox``) is computed once, the odc-stac way, and both engines read
   onto exactly that grid as float32.
4. Items of one group (``groupby="solar_day"``: one pass, e.g. consecutive slices of one datatake)
   are mosaicked: the first valid pixel in (time, id) order wins, as in odc-stac (for backscatter,
   values <= 0 are not valid: they have no dB value). With odc-stac,
   when the items of each group share one recipe (the usual case), odc-stac mosaics them itself
   and the recipe is applied once per time step. Otherwise, and always with stackstac, each item
   is read as its own slice, converted with its own recipe, and the slices are mosaicked after.
5. Nodata masking, scale/offset and dB conversion are lazy dask operations.

Examples
--------
>>> from eo_contrast.stac import read_items
>>> item = {"type": "Feature", "stac_version": "1.0.0", "id": "a", "bbox": [0, 0, 1, 1],
...         "geometry": None, "properties": {"datetime": "2024-04-19T04:59:10Z"},
...         "links": [], "assets": {}}
>>> [i.id for i in read_items([item])]
['a']
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urljoin

import numpy as np
import pandas as pd
import pystac
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from eo_contrast._io.urls import is_url
from eo_contrast.cube import S1_BANDS, S2_BANDS, canonical_band_name, linear_to_db

__all__ = [
    "DEFAULT_CHUNK",
    "AssetReadError",
    "BandNotFoundError",
    "BandRecipe",
    "band_recipes",
    "footprint",
    "load_stac",
    "nominal_datetime",
    "read_items",
]

#: Default spatial chunk edge (pixels) of loaded cubes: one chunk holds one time step, all bands
#: and 1024 x 1024 pixels (4 MiB per band in float32), a good unit for tile streaming.
DEFAULT_CHUNK = 1024

Engine = Literal["odc", "stackstac"]
Groupby = Literal["solar_day", "time"]
HrefMap = Mapping[str, str] | Callable[[str], str]

_ENGINES = ("odc", "stackstac")
_GROUPBY = ("solar_day", "time")
_KNOWN_BANDS = frozenset(S1_BANDS) | frozenset(S2_BANDS)
_PROJ_KEYS = (
    "proj:epsg",
    "proj:code",
    "proj:wkt2",
    "proj:projjson",
    "proj:shape",
    "proj:transform",
    "proj:bbox",
)
_RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_PROJ_EXT = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
_DB_UNITS = frozenset({"db", "decibel", "decibels"})
# Sentinel-2 products from processing baseline 04.00 (2022-01-25) store DN + 1000
# (BOA_ADD_OFFSET / RADIO_ADD_OFFSET = -1000), for L2A and L1C alike.
_S2_SCALE = 1e-4
_S2_OFFSET_FROM_BASELINE_4 = -0.1


class BandNotFoundError(KeyError):
    """A requested band is in none of the items; the message lists the bands that are."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AssetReadError(OSError):
    """Reading one asset of one STAC item failed: a missing, truncated, corrupt or unreachable file.

    Raised when the cube is computed (the loader is lazy); the message names the item id, the
    asset key and the href that was read.
    """


def _error_text(err: BaseException) -> str:
    """The messages of ``err`` and of the exceptions that caused it, without repeats."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = str(current).strip().rstrip(".") or type(current).__name__
        if text not in parts and "See previous exception" not in text:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return "; ".join(parts)


#: href -> ((item id, asset key), ...): which assets a file read belongs to
_Sources = dict[str, tuple[tuple[str, str], ...]]


def _describe_source(sources: _Sources, href: str) -> str:
    owners = sources.get(href, ())
    if not owners:
        return f"asset file {href}"
    named = "; ".join(f"asset {key!r} of STAC item {item!r}" for item, key in owners)
    return f"{named} ({href})"


class _NamedReader:
    """A reader (odc-loader or stackstac) whose read errors name the STAC item and asset."""

    def __init__(self, inner: Any, sources: _Sources, href: str) -> None:
        self._inner = inner
        self._sources = sources
        self._href = href

    def read(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._inner.read(*args, **kwargs)
        except Exception as err:
            raise AssetReadError(
                f"cannot read {_describe_source(self._sources, self._href)}: "
                f"{_error_text(err)}. The file is missing, truncated, corrupt or unreachable: "
                "re-download or repair it, point href_map at a good copy, or leave that item "
                "out of the items"
            ) from err

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _NamedDriver:
    """odc-loader reader driver: rasterio reads (odc's ``RioDriver``) with named errors.

    odc-stac parses the items with its own STAC metadata parser (``md_parser`` is None).
    """

    def __init__(self, sources: _Sources) -> None:
        from odc.loader import RioDriver

        self._inner = RioDriver()
        self._sources = sources

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, sorted(self._sources.items()))

    def new_load(self, geobox: Any, *, chunks: Any = None) -> Any:
        return self._inner.new_load(geobox, chunks=chunks)

    def finalise_load(self, load_state: Any) -> Any:
        return self._inner.finalise_load(load_state)

    def capture_env(self) -> dict[str, Any]:
        return self._inner.capture_env()

    def restore_env(self, env: dict[str, Any], load_state: Any) -> Any:
        return self._inner.restore_env(env, load_state)

    def open(self, src: Any, ctx: Any) -> _NamedReader:
        return _NamedReader(self._inner.open(src, ctx), self._sources, str(src.uri))

    @property
    def md_parser(self) -> Any:
        return None

    @property
    def dask_reader(self) -> Any:
        return None

    @property
    def aux_reader(self) -> Any:
        return None


class _StackstacReaders:
    """A stackstac ``reader``: builds its rasterio reader per asset, with named errors."""

    def __init__(self, sources: _Sources) -> None:
        self._sources = sources

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, sorted(self._sources.items()))

    def __call__(self, *, url: str, **kwargs: Any) -> _NamedReader:
        from stackstac.rio_reader import AutoParallelRioReader

        return _NamedReader(AutoParallelRioReader(url=url, **kwargs), self._sources, url)


@dataclass(frozen=True)
class BandRecipe:
    """How to read one band of one item and bring it to physical units.

    Attributes
    ----------
    asset_key
        Key of the item's asset holding the band.
    asset
        The asset as loaded: absolute href (before ``href_map``), projection and raster fields.
    nodata
        Nodata value of the stored numbers, or None.
    scale, offset
        Physical value = stored value x ``scale`` + ``offset``.
    to_db
        Whether the physical values are linear backscatter, converted to dB.
    units
        Units of the band in the cube (``"dB"``, ``"1"``, ...).
    data_type
        ``raster:bands`` data type of the stored numbers, or None.
    """

    asset_key: str
    asset: dict[str, Any]  # the asset as loaded: absolute href (before href_map), proj, raster
    nodata: float | None
    scale: float
    offset: float
    to_db: bool
    units: str
    data_type: str | None


# --------------------------------------------------------------------------------------------
# Reading items
# --------------------------------------------------------------------------------------------


def read_items(source: Any) -> list[pystac.Item]:
    """Read STAC Items from any of the usual containers.

    Parameters
    ----------
    source
        A :class:`pystac.Item`, an iterable of Items or Item dicts, a
        :class:`pystac.ItemCollection`, a :class:`pystac.Catalog` / :class:`pystac.Collection`
        (walked recursively), a GeoJSON dict (``Feature`` / ``FeatureCollection``), or a path / URL
        to a JSON file holding an Item, a FeatureCollection, a plain JSON list of Items, or a
        Catalog / Collection. Relative asset hrefs of items read from a FeatureCollection or list
        file are resolved against that file's folder.

    Returns
    -------
    list of pystac.Item
        The items, in input order. The objects passed in are returned as they are (not copied);
        :func:`load_stac` never modifies them.

    Raises
    ------
    TypeError
        When ``source`` (or one of its elements) is not one of the above.
    FileNotFoundError
        When a path does not exist.

    Examples
    --------
    >>> feature = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
    ...            "geometry": None, "properties": {"datetime": "2020-01-01T00:00:00Z"},
    ...            "links": [], "assets": {}}
    >>> items = read_items({"type": "FeatureCollection", "features": [feature, feature]})
    >>> len(items), items[0].id
    (2, 'x')
    """
    if isinstance(source, pystac.Item):
        return [source]
    if isinstance(source, pystac.ItemCollection):
        return list(source.items)
    if isinstance(source, pystac.Catalog):  # Collections are Catalogs too
        return list(source.get_items(recursive=True))
    if isinstance(source, str | os.PathLike):
        return _read_href(os.fspath(source))
    if isinstance(source, Mapping):
        return _items_from_json(dict(source), base=None, what="items")
    if isinstance(source, Iterable) and not isinstance(source, bytes):
        out: list[pystac.Item] = []
        for element in source:
            if isinstance(element, pystac.Item):
                out.append(element)
            elif isinstance(
                element, Mapping | str | os.PathLike | pystac.Catalog | pystac.ItemCollection
            ):
                out.extend(read_items(element))
            else:
                raise TypeError(
                    f"items contains a {type(element).__name__}; expected pystac Items, Item "
                    "dicts or paths to STAC JSON files"
                )
        return out
    raise TypeError(
        f"items must be pystac Item(s), an ItemCollection, a Catalog/Collection, Item dicts or a "
        f"path to STAC JSON, not {type(source).__name__}"
    )


def _read_href(href: str) -> list[pystac.Item]:
    if not is_url(href):
        path = Path(href).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"STAC file {href!r} not found: pass an existing Item, FeatureCollection, "
                "list-of-Items, Catalog or Collection JSON file"
            )
        href = str(path.resolve())
        text = path.read_text()
    else:
        text = pystac.StacIO.default().read_text(href)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{href!r} is not valid JSON ({err}); expected a STAC JSON file") from err
    if isinstance(obj, Mapping) and obj.get("type") in ("Catalog", "Collection"):
        catalog: Any = pystac.read_file(href)
        return list(catalog.get_items(recursive=True))
    if isinstance(obj, Mapping) and obj.get("type") == "Feature":
        return [pystac.Item.from_file(href)]
    return _items_from_json(obj, base=href, what=repr(href))


def _items_from_json(obj: Any, *, base: str | None, what: str) -> list[pystac.Item]:
    if isinstance(obj, Mapping):
        kind = obj.get("type")
        if kind == "Feature":
            features: list[Any] = [obj]
        elif kind == "FeatureCollection":
            features = list(obj.get("features", []))
        elif kind in ("Catalog", "Collection"):
            catalog: Any = pystac.read_dict(dict(obj))
            return list(catalog.get_items(recursive=True))
        else:
            raise TypeError(
                f"{what} is a JSON object of type {kind!r}; expected a STAC Item ('Feature'), "
                "a 'FeatureCollection', a Catalog or a Collection"
            )
    elif isinstance(obj, list):
        features = obj
    else:
        raise TypeError(f"{what} holds a JSON {type(obj).__name__}; expected STAC Items")
    items = []
    for feature in features:
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            raise TypeError(f"{what} contains an element that is not a STAC Item ('Feature')")
        item = pystac.Item.from_dict(dict(feature), preserve_dict=True)
        if base is not None:
            for asset in item.assets.values():
                if not is_url(asset.href) and not os.path.isabs(asset.href):
                    asset.href = (
                        urljoin(base, asset.href)
                        if is_url(base)
                        else str((Path(base).parent / asset.href).resolve())
                    )
        items.append(item)
    return items


def _collection_item_assets(collections: Any) -> dict[str, dict[str, Any]]:
    """``{collection id: item_assets dict}`` from Collections, dicts or paths."""
    if collections is None:
        return {}
    if isinstance(collections, pystac.Collection | Mapping | str | os.PathLike):
        collections = [collections]
    out: dict[str, dict[str, Any]] = {}
    for coll in collections:
        if isinstance(coll, str | os.PathLike):
            coll = pystac.Collection.from_file(os.fspath(coll))
        if isinstance(coll, pystac.Collection):
            coll = coll.to_dict(include_self_link=False, transform_hrefs=False)
        if not isinstance(coll, Mapping) or coll.get("type") != "Collection":
            raise TypeError(
                "collections must be pystac Collections, Collection dicts or paths to Collection "
                f"JSON, got {type(coll).__name__}"
            )
        out[str(coll["id"])] = dict(coll.get("item_assets") or {})
    return out


def _linked_item_assets(item: pystac.Item) -> dict[str, Any] | None:
    """``item_assets`` of the item's collection, only when that needs no network access."""
    link = item.get_single_link(pystac.RelType.COLLECTION)
    if link is None:
        return None
    if not link.is_resolved():
        href = link.get_absolute_href()
        if href is None or is_url(href) or not Path(href.removeprefix("file://")).is_file():
            return None
    try:
        coll = item.get_collection()
    except Exception:  # a broken local link: fall back to the item's own metadata
        return None
    if coll is None:
        return None
    return dict(
        coll.to_dict(include_self_link=False, transform_hrefs=False).get("item_assets") or {}
    )


# --------------------------------------------------------------------------------------------
# Per-item band recipes
# --------------------------------------------------------------------------------------------


def _is_data_asset(asset: Mapping[str, Any]) -> bool:
    roles = asset.get("roles")
    if roles and "data" not in roles:
        return False
    media = asset.get("type")
    if media is None:
        return True
    media = str(media).lower()
    return "tiff" in media or "jp2" in media


def _multi(asset: Mapping[str, Any], key: str) -> list[Any]:
    value = asset.get(key)
    return list(value) if isinstance(value, list) else []


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _is_sentinel2(item: pystac.Item) -> bool:
    props = item.properties
    text = " ".join(
        str(v) for v in (item.collection_id, props.get("platform"), props.get("constellation")) if v
    ).lower()
    return (
        "sentinel-2" in text
        or "sentinel2" in text
        or "sentinel 2" in text
        or any(k.startswith("s2:") for k in props)
    )


def _s2_baseline(item: pystac.Item) -> float | None:
    props = item.properties
    value = props.get("s2:processing_baseline")
    if value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    for key in ("s2:product_uri", "s2:granule_id", "s2:datatake_id"):
        text = str(props.get(key) or "")
        match = re.search(r"_N(\d{2})\.?(\d{2})(?:_|\.|$)", text)
        if match:
            return float(f"{match.group(1)}.{match.group(2)}")
    return None


def band_recipes(
    item: pystac.Item, item_assets: Mapping[str, Any] | None
) -> tuple[dict[str, BandRecipe], dict[str, str], list[str]]:
    """Usable single-band raster assets of ``item``, keyed by canonical band name.

    Parameters
    ----------
    item
        A STAC Item.
    item_assets
        The ``item_assets`` of its collection (fields an asset lacks are taken from there), or
        None.

    Returns
    -------
    tuple
        The recipes (:class:`BandRecipe` by canonical band name), aliases (asset key /
        ``eo:bands`` names -> canonical name) and the keys of multi-band assets (not loadable
        as one band).

    Examples
    --------
    >>> item = read_items([{"type": "Feature", "stac_version": "1.0.0", "id": "a",
    ...     "bbox": [0, 0, 1, 1], "geometry": None, "links": [],
    ...     "properties": {"datetime": "2024-04-19T04:59:10Z"},
    ...     "assets": {"VV": {"href": "vv.tif", "type": "image/tiff",
    ...                       "raster:bands": [{"unit": "dB"}]}}}])[0]
    >>> recipes, aliases, multiband = band_recipes(item, None)
    >>> list(recipes), recipes["vv"].asset_key, recipes["vv"].units, multiband
    (['vv'], 'VV', 'dB', [])
    """
    item_assets = item_assets or {}
    candidates: list[tuple[str, dict[str, Any]]] = []
    multiband: list[str] = []
    for key, asset in item.assets.items():
        fields = asset.to_dict()
        template = item_assets.get(key) or {}
        for k in ("raster:bands", "eo:bands", "type", "roles"):
            if k not in fields and k in template:
                fields[k] = copy.deepcopy(template[k])
        if not _is_data_asset(fields):
            continue
        if len(_multi(fields, "raster:bands")) > 1 or len(_multi(fields, "eo:bands")) > 1:
            multiband.append(key)
            continue
        fields["href"] = asset.get_absolute_href() or asset.href
        candidates.append((key, fields))
    # Cloud-optimised GeoTIFFs first, so that e.g. "red" wins over "red-jp2".
    candidates.sort(key=lambda kv: "tiff" not in str(kv[1].get("type", "tiff")).lower())

    names: dict[str, str] = {}  # asset key -> canonical band name
    taken: set[str] = set()
    for key, _ in candidates:
        canon = canonical_band_name(key)
        if canon in _KNOWN_BANDS and canon not in taken:
            names[key] = canon
            taken.add(canon)
    common_count: dict[str, int] = {}
    for _, fields in candidates:
        for eo in _multi(fields, "eo:bands"):
            if eo.get("common_name"):
                cn = str(eo["common_name"]).lower()
                common_count[cn] = common_count.get(cn, 0) + 1
    for key, fields in candidates:
        if key in names:
            continue
        eo = (_multi(fields, "eo:bands") or [{}])[0]
        options = [eo.get("name")]
        if eo.get("common_name") and common_count.get(str(eo["common_name"]).lower()) == 1:
            options.append(eo.get("common_name"))
        found = [canonical_band_name(o) for o in options if o]
        canon = next((c for c in found if c in _KNOWN_BANDS and c not in taken), key)
        if canon in taken:
            continue
        names[key] = canon
        taken.add(canon)

    is_s2 = _is_sentinel2(item)
    recipes: dict[str, BandRecipe] = {}
    aliases: dict[str, str] = {}
    for key, fields in candidates:
        if key not in names:
            continue
        band = names[key]
        raster = (_multi(fields, "raster:bands") or [{}])[0]
        scale = _float_or_none(raster.get("scale"))
        offset = _float_or_none(raster.get("offset"))
        nodata = _float_or_none(raster.get("nodata"))
        unit = raster.get("unit")
        data_type = raster.get("data_type")
        to_db = False
        if band in S2_BANDS and is_s2:
            if scale is None and offset is None:
                baseline = _s2_baseline(item)
                if baseline is None:
                    raise ValueError(
                        f"item {item.id!r}: Sentinel-2 asset {key!r} has no raster:bands "
                        "scale/offset and the item has no 's2:processing_baseline', so the DN "
                        "offset (-1000 from baseline 04.00) is unknown; add raster:bands "
                        "scale/offset or s2:processing_baseline to the item"
                    )
                scale = _S2_SCALE
                offset = _S2_OFFSET_FROM_BASELINE_4 if baseline >= 4.0 else 0.0
            if nodata is None:
                nodata = 0.0
            data_type = data_type or "uint16"
            units = "1"
        elif band in S1_BANDS:
            to_db = str(unit or "").strip().lower() not in _DB_UNITS
            units = "dB"
        else:
            units = str(unit) if unit else "1"
        asset_out: dict[str, Any] = {"href": str(fields["href"]), "roles": ["data"]}
        if fields.get("type"):
            asset_out["type"] = fields["type"]
        asset_out.update({k: fields[k] for k in _PROJ_KEYS if k in fields})
        rb: dict[str, Any] = {}
        if nodata is not None:
            rb["nodata"] = nodata
        if data_type:
            rb["data_type"] = data_type
        if rb:
            asset_out["raster:bands"] = [rb]
        recipes[band] = BandRecipe(
            asset_key=key,
            asset=asset_out,
            nodata=nodata,
            scale=1.0 if scale is None else scale,
            offset=0.0 if offset is None else offset,
            to_db=to_db,
            units=units,
            data_type=data_type,
        )
        aliases[key] = band
        aliases[key.lower()] = band
        for eo in _multi(fields, "eo:bands"):
            if eo.get("name"):
                aliases.setdefault(str(eo["name"]), band)
    return recipes, aliases, multiband


def _href_function(href_map: HrefMap | None) -> Callable[[str], str]:
    if href_map is None:
        return lambda href: href
    if callable(href_map):
        fn = href_map

        def _call(href: str) -> str:
            new = fn(href)
            if not isinstance(new, str | os.PathLike):
                raise TypeError(
                    f"href_map returned {type(new).__name__} for {href!r}; it must return the "
                    "new href as a string"
                )
            return os.fspath(new)

        return _call
    if isinstance(href_map, Mapping):
        table = {str(k): os.fspath(v) for k, v in href_map.items()}
        prefixes = sorted(table, key=len, reverse=True)

        def _lookup(href: str) -> str:
            if href in table:
                return table[href]
            for old in prefixes:
                if href.startswith(old):
                    return table[old] + href[len(old) :]
            return href

        return _lookup
    raise TypeError(
        f"href_map must be a dict {{old: new}} or a callable(href) -> href, not "
        f"{type(href_map).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Band selection
# --------------------------------------------------------------------------------------------


def _default_order(bands: Iterable[str]) -> list[str]:
    order = {b: i for i, b in enumerate((*S1_BANDS, *S2_BANDS))}
    return sorted(set(bands), key=lambda b: (order.get(b, len(order)), b))


def _select_bands(
    items: list[pystac.Item],
    recipes: list[dict[str, BandRecipe]],
    aliases: list[dict[str, str]],
    multiband: list[list[str]],
    bands: str | Sequence[str] | None,
) -> tuple[list[str], list[int]]:
    """Canonical band names to load and the indices of the items to load them from."""
    by_collection: dict[str, set[str]] = {}
    for item, rec in zip(items, recipes, strict=True):
        by_collection.setdefault(str(item.collection_id), set()).update(rec)

    def _available() -> str:
        return "; ".join(f"{coll}: {_default_order(b)}" for coll, b in by_collection.items())

    if bands is None:
        defaults = [{b for b in rec if b in _KNOWN_BANDS} or set(rec) for rec in recipes]
        per_coll: dict[str, set[str]] = {}
        for item, d in zip(items, defaults, strict=True):
            coll = str(item.collection_id)
            per_coll[coll] = per_coll[coll] & d if coll in per_coll else set(d)
        if len({frozenset(v) for v in per_coll.values()}) > 1:
            listing = "; ".join(f"{c}: {_default_order(v)}" for c, v in per_coll.items())
            raise ValueError(
                f"items come from {len(per_coll)} collections with different bands ({listing}); "
                "pass bands=[...] to choose the bands (and so the items) to load, e.g. one "
                "sensor per cube"
            )
        common = set.intersection(*defaults)
        if not common:
            raise ValueError(
                f"the items share no band ({_available()}); pass bands=[...] explicitly"
            )
        return _default_order(common), list(range(len(items)))

    requested = [bands] if isinstance(bands, str) else list(bands)
    if not requested:
        raise ValueError("bands is empty: pass None for the default bands or a list of names")
    if not all(isinstance(b, str) for b in requested):
        raise TypeError(f"bands must be band names (strings), got {requested!r}")
    resolved: list[str] = []
    for name in requested:
        canon: str | None = None
        for rec, alias in zip(recipes, aliases, strict=True):
            for candidate in (name, canonical_band_name(name), name.lower()):
                if candidate in rec:
                    canon = candidate
                elif candidate in alias:
                    canon = alias[candidate]
                if canon is not None:
                    break
            if canon is not None:
                break
        if canon is None:
            hint = ""
            if any(name in mb for mb in multiband):
                hint = f" ({name!r} is a multi-band asset, which is not loaded as one band)"
            raise BandNotFoundError(
                f"band {name!r} is in none of the {len(items)} items{hint}; available bands by "
                f"collection: {_available()}"
            )
        if canon not in resolved:
            resolved.append(canon)
    keep = [i for i, rec in enumerate(recipes) if all(b in rec for b in resolved)]
    partial = [
        (items[i].id, [b for b in resolved if b not in rec])
        for i, rec in enumerate(recipes)
        if i not in keep and any(b in rec for b in resolved)
    ]
    if partial:
        listing = "; ".join(f"{iid} lacks {missing}" for iid, missing in partial[:5])
        raise ValueError(
            f"{len(partial)} item(s) have only some of the requested bands {resolved}: "
            f"{listing}{' ...' if len(partial) > 5 else ''}. Request the bands all items share, "
            "or drop those items"
        )
    if not keep:
        raise BandNotFoundError(
            f"no item has all the requested bands {resolved}; available bands by collection: "
            f"{_available()}"
        )
    return resolved, keep


# --------------------------------------------------------------------------------------------
# Time groups and footprints
# --------------------------------------------------------------------------------------------


def nominal_datetime(item: pystac.Item) -> datetime:
    """The time of ``item`` in UTC: its ``datetime``, else its ``start_datetime``.

    Parameters
    ----------
    item
        A STAC Item.

    Returns
    -------
    datetime.datetime
        Timezone-aware, in UTC (a naive time is taken as UTC).

    Raises
    ------
    ValueError
        The item has neither ``datetime`` nor ``start_datetime``.

    Examples
    --------
    >>> item = read_items([{"type": "Feature", "stac_version": "1.0.0", "id": "a",
    ...     "bbox": [0, 0, 1, 1], "geometry": None, "links": [], "assets": {},
    ...     "properties": {"datetime": "2024-04-19T04:59:10Z"}}])[0]
    >>> nominal_datetime(item).isoformat()
    '2024-04-19T04:59:10+00:00'
    """
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise ValueError(f"item {item.id!r} has neither 'datetime' nor 'start_datetime'")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def footprint(item: pystac.Item) -> Any:
    """The footprint of ``item`` in lon/lat: its geometry (made valid), else its bbox.

    Parameters
    ----------
    item
        A STAC Item.

    Returns
    -------
    shapely.Geometry
        The footprint.

    Raises
    ------
    ValueError
        The item has neither a geometry nor a bbox.

    Examples
    --------
    >>> item = read_items([{"type": "Feature", "stac_version": "1.0.0", "id": "a",
    ...     "bbox": [0, 0, 1, 2], "geometry": None, "links": [], "assets": {},
    ...     "properties": {"datetime": "2024-04-19T04:59:10Z"}}])[0]
    >>> footprint(item).bounds
    (0.0, 0.0, 1.0, 2.0)
    """
    from shapely.geometry import box, shape

    if item.geometry:
        geom = shape(item.geometry)
        if not geom.is_valid:
            geom = geom.buffer(0)
        return geom
    if item.bbox and len(item.bbox) >= 4:
        b = item.bbox
        return box(b[0], b[1], b[-2], b[-1]) if len(b) == 4 else box(b[0], b[1], b[3], b[4])
    raise ValueError(
        f"item {item.id!r} has no geometry and no bbox, so its footprint is unknown; add one"
    )


def _group_items(items: list[pystac.Item], groupby: str, mid_lon: float) -> list[list[int]]:
    """Indices of the items in each output time step, sorted by time; (time, id) within."""
    times = [nominal_datetime(it) for it in items]

    def key(i: int) -> Any:
        if groupby == "time":
            return times[i]
        return (times[i] + timedelta(hours=mid_lon / 15.0)).date()

    order = sorted(range(len(items)), key=lambda i: (key(i), times[i], items[i].id))
    groups: list[list[int]] = []
    last: Any = object()
    for i in order:
        k = key(i)
        if not groups or k != last:
            groups.append([])
            last = k
        groups[-1].append(i)
    return groups


def _check_footprints(
    items: list[pystac.Item],
    groups: list[list[int]],
    footprints: list[Any],
    bbox: tuple[float, float, float, float] | None,
) -> None:
    from shapely import intersection_all, union_all
    from shapely.geometry import box

    union = union_all(footprints)
    if bbox is not None:
        if box(*bbox).intersection(union).area <= 0:
            bounds = tuple(round(v, 4) for v in union.bounds)
            raise ValueError(
                f"bbox {tuple(bbox)} does not intersect the items' footprints (lon/lat bounds "
                f"{bounds}); pass a bbox (min lon, min lat, max lon, max lat) inside them"
            )
        return
    if len(groups) < 2:
        return
    group_geoms = [union_all([footprints[i] for i in g]) for g in groups]
    if intersection_all(group_geoms).area > 0:
        return
    lines = []
    for g, geom in zip(groups[:8], group_geoms[:8], strict=False):
        when = nominal_datetime(items[g[0]]).strftime("%Y-%m-%dT%H:%M:%S")
        ids = [items[i].id for i in g]
        lines.append(f"{when} {ids} lon/lat bounds {tuple(round(v, 3) for v in geom.bounds)}")
    more = f" (+{len(groups) - 8} more)" if len(groups) > 8 else ""
    raise ValueError(
        f"the items' {len(groups)} time steps share no common area: "
        + "; ".join(lines)
        + more
        + ". Loading them on one grid would be mostly empty; pass bbox=(min lon, min lat, "
        "max lon, max lat) for the area you want, group slices of one pass together "
        "(groupby='solar_day'), or load each place separately"
    )


# --------------------------------------------------------------------------------------------
# Grid and engines
# --------------------------------------------------------------------------------------------


def _clone(
    index: int,
    item: pystac.Item,
    recipes: dict[str, BandRecipe],
    bands: list[str],
    href_fn: Callable[[str], str],
) -> pystac.Item:
    """A new Item holding only the selected assets, keyed by canonical band name.

    Hrefs are rewritten by ``href_fn`` (only those of the selected assets). The id is prefixed
    with ``index`` so that loaders' outputs can be matched to the input items.
    """
    assets = {}
    for b in bands:
        asset = copy.deepcopy(recipes[b].asset)
        asset["href"] = href_fn(asset["href"])
        assets[b] = asset
    props = copy.deepcopy(item.properties)
    code = str(props.get("proj:code") or "")
    if "proj:epsg" not in props and code.upper().startswith("EPSG:"):
        props["proj:epsg"] = int(code.split(":")[1])
    extensions = list(item.stac_extensions)
    if not any("/raster/" in e for e in extensions):
        extensions.append(_RASTER_EXT)
    has_proj = any(k.startswith("proj:") for k in props) or any(
        k.startswith("proj:") for b in bands for k in recipes[b].asset
    )
    if has_proj and not any("/projection/" in e for e in extensions):
        extensions.append(_PROJ_EXT)
    d = {
        "type": "Feature",
        "stac_version": pystac.get_stac_version(),
        "stac_extensions": extensions,
        "id": f"{index:06d}:{item.id}",
        "geometry": copy.deepcopy(item.geometry),
        "bbox": list(item.bbox) if item.bbox else None,
        "properties": props,
        "links": [],
        "assets": assets,
    }
    if item.collection_id:
        d["collection"] = item.collection_id
    return pystac.Item.from_dict(d, preserve_dict=False)


_STAC_CFG: dict[str, Any] = {"*": {"warnings": "ignore"}}


def _geobox(
    clones: list[pystac.Item], bands: list[str], crs: Any, resolution: Any, bbox: Any
) -> Any:
    import odc.stac
    from odc.geo import resxy_

    if isinstance(resolution, Sequence) and not isinstance(resolution, str):
        if len(resolution) != 2:
            raise ValueError(f"resolution must be a number or (x, y), got {resolution!r}")
        resolution = resxy_(abs(float(resolution[0])), -abs(float(resolution[1])))
    parsed = list(odc.stac.parse_items(clones, cfg=_STAC_CFG))
    gbox = odc.stac.output_geobox(
        parsed,
        bands=bands,
        crs=crs,
        resolution=resolution,
        bbox=tuple(bbox) if bbox is not None else None,
    )
    if gbox is None:
        raise ValueError(
            "cannot tell the output CRS/resolution from the items (no proj:* metadata on the "
            f"bands {bands}); pass crs= and resolution="
        )
    if gbox.shape.x == 0 or gbox.shape.y == 0:
        raise ValueError(f"the output grid is empty ({gbox.shape}); enlarge bbox or resolution")
    if resolution is None and crs is not None:
        native = [g[0].crs for g in (p.geoboxes(bands) for p in parsed) if g]
        out_crs = gbox.crs
        if (
            native
            and native[0] is not None
            and out_crs is not None
            and native[0].geographic != out_crs.geographic
        ):
            raise ValueError(
                f"crs={crs!r} has other units than the items' native CRS {native[0]}, so their "
                "native resolution cannot be used: pass resolution= in the units of crs (e.g. "
                "resolution=1e-4 degrees for EPSG:4326)"
            )
    return gbox


def _first_positive_fuser(dst: np.ndarray, src: np.ndarray) -> None:
    """odc-stac fuser for backscatter power: values <= 0 (no dB) count as missing too."""
    np.copyto(dst, src, where=np.isnan(dst) | (dst <= 0))


def _load_odc(
    clones: list[pystac.Item],
    bands: list[str],
    gbox: Any,
    chunks: dict[str, int],
    group_of: list[int],
    sources: _Sources,
    positive_only: Sequence[str] = (),
) -> xr.DataArray:
    """float32 slices ``(item, band, y, x)`` on ``gbox``: one per distinct ``group_of`` key.

    Items sharing a key are mosaicked by odc-stac in input order; for ``positive_only`` bands
    (linear power, to become dB) values <= 0 are filled from later items like nodata. Read
    errors name the item and asset (``sources``).
    """
    import odc.stac

    fuser = f"{__name__}._first_positive_fuser"
    ds = odc.stac.load(
        clones,
        bands=bands,
        geobox=gbox,
        groupby=lambda _item, _parsed, idx: group_of[idx],
        preserve_original_order=True,
        chunks={"time": 1, "y": chunks["y"], "x": chunks["x"]},
        dtype="float32",
        resampling="nearest",
        stac_cfg=_STAC_CFG,
        fail_on_error=True,
        fuse_func={b: (fuser if b in positive_only else None) for b in bands},
        driver=_NamedDriver(sources),
    )
    ydim, xdim = gbox.dimensions
    da = ds[bands].to_array("band").transpose("time", "band", ydim, xdim)
    return da.drop_vars(list(da.coords)).rename({"time": "item", ydim: "y", xdim: "x"})


def _stackstac_dict(clone: pystac.Item) -> dict[str, Any]:
    """The item as stackstac reads it: ``proj:epsg`` (which it needs to place each asset from
    ``proj:transform``/``proj:shape``) restored where pystac migrated it to ``proj:code``, and
    the ``bbox`` kept also for items without a geometry."""
    d = clone.to_dict(include_self_link=False, transform_hrefs=False)
    code = str(d["properties"].get("proj:code") or "")
    if "proj:epsg" not in d["properties"] and code.upper().startswith("EPSG:"):
        d["properties"]["proj:epsg"] = int(code.split(":")[1])
    for asset in d["assets"].values():
        code = str(asset.get("proj:code") or "")
        if "proj:epsg" not in asset and code.upper().startswith("EPSG:"):
            asset["proj:epsg"] = int(code.split(":")[1])
    if "bbox" not in d and clone.bbox:
        d["bbox"] = list(clone.bbox)
    return d


def _load_stackstac(
    clones: list[pystac.Item],
    bands: list[str],
    gbox: Any,
    chunks: dict[str, int],
    sources: _Sources,
) -> xr.DataArray:
    """float32 slices ``(item, band, y, x)`` on ``gbox``, one per item (named read errors)."""
    import stackstac
    from rasterio.enums import Resampling

    epsg = gbox.crs.epsg
    if epsg is None:
        raise ValueError(
            f"engine='stackstac' needs an output CRS with an EPSG code, got {gbox.crs}; pass "
            "crs='EPSG:XXXX' or use engine='odc'"
        )
    if not gbox.axis_aligned:
        raise ValueError("engine='stackstac' needs an axis-aligned output grid; use engine='odc'")
    res = gbox.resolution
    left, bottom, right, top = gbox.boundingbox
    da = stackstac.stack(
        [_stackstac_dict(c) for c in clones],
        assets=bands,
        epsg=int(epsg),
        resolution=(abs(res.x), abs(res.y)),
        bounds=(left, bottom, right, top),
        snap_bounds=False,
        resampling=Resampling.nearest,
        chunksize=(1, 1, chunks["y"], chunks["x"]),
        dtype=np.dtype("float32"),
        fill_value=np.float32(np.nan),
        rescale=False,
        sortby_date=False,
        xy_coords="center",
        properties=False,
        band_coords=False,
        reader=cast(Any, _StackstacReaders(sources)),
    )
    ny, nx = gbox.shape.y, gbox.shape.x
    if (da.sizes["y"], da.sizes["x"]) != (ny, nx):
        raise RuntimeError(
            f"stackstac built a {da.sizes['y']}x{da.sizes['x']} grid where {ny}x{nx} was asked"
        )
    ydim, xdim = gbox.dimensions
    want_y = np.asarray(gbox.coords[ydim].values)
    want_x = np.asarray(gbox.coords[xdim].values)
    tol = 1e-3 * min(abs(res.x), abs(res.y))
    if np.abs(da["y"].values - want_y).max() > tol or np.abs(da["x"].values - want_x).max() > tol:
        raise RuntimeError("stackstac's pixel grid does not match the requested grid")
    # stackstac leaves out items whose assets miss the grid: put them back as all-NaN slices.
    position = [int(str(i).split(":", 1)[0]) for i in da["id"].values]
    da = da.transpose("time", "band", "y", "x")
    da = da.drop_vars(list(da.coords)).rename({"time": "item"})
    da = da.assign_coords(item=position)
    if position != list(range(len(clones))):
        da = da.reindex(item=list(range(len(clones))), fill_value=np.float32(np.nan))
    return da.drop_vars("item")


def _recipe_key(r: BandRecipe) -> tuple[Any, ...]:
    return (r.nodata, r.scale, r.offset, r.to_db)


def _to_physical(
    raw: xr.DataArray, recipes: list[dict[str, BandRecipe]], bands: list[str]
) -> xr.DataArray:
    """Nodata -> NaN, scale/offset, linear -> dB, per slice along ``item`` and band, lazily."""

    def table(values: list[list[Any]], dtype: Any) -> xr.DataArray:
        return xr.DataArray(np.asarray(values, dtype=dtype), dims=("item", "band"))

    nodata = table(
        [[np.nan if r[b].nodata is None else r[b].nodata for b in bands] for r in recipes],
        "float32",
    )
    scale = table([[r[b].scale for b in bands] for r in recipes], "float32")
    offset = table([[r[b].offset for b in bands] for r in recipes], "float32")
    to_db = np.asarray([[r[b].to_db for b in bands] for r in recipes], dtype=bool)

    phys = raw.where(raw != nodata)
    if not (np.all(scale.values == 1) and np.all(offset.values == 0)):
        phys = phys * scale + offset
    if to_db.any():
        in_db = cast(xr.DataArray, linear_to_db(phys))
        phys = (
            in_db
            if to_db.all()
            else xr.where(xr.DataArray(to_db, dims=("item", "band")), in_db, phys)
        )
    return phys.astype("float32")


def _normalise_chunks(chunks: int | Mapping[str, int] | None) -> dict[str, int]:
    out = {"time": 1, "band": -1, "y": DEFAULT_CHUNK, "x": DEFAULT_CHUNK}
    if chunks is None:
        return out
    if isinstance(chunks, bool) or not isinstance(chunks, int | Mapping):
        raise TypeError(
            f"chunks must be an int (spatial chunk edge) or a dict over time/band/y/x, not "
            f"{type(chunks).__name__}"
        )
    if isinstance(chunks, int):
        chunks = {"y": chunks, "x": chunks}
    unknown = [k for k in chunks if k not in out]
    if unknown:
        raise ValueError(f"chunks has unknown dims {unknown}; use 'time', 'band', 'y', 'x'")
    for k, v in chunks.items():
        if isinstance(v, bool) or not isinstance(v, int) or (v <= 0 and v != -1):
            raise ValueError(f"chunks[{k!r}] must be a positive int or -1, got {v!r}")
        out[str(k)] = int(v)
    return out


def _check_bbox(bbox: Any) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4:
        raise ValueError(f"bbox must be (min lon, min lat, max lon, max lat), got {bbox!r}")
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1 and x0 >= -180 and x1 <= 180 and y0 >= -90 and y1 <= 90):
        raise ValueError(
            f"bbox {values} is not (min lon, min lat, max lon, max lat) in degrees with min < max"
        )
    return values


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def load_stac(
    items: Any,
    bands: str | Sequence[str] | None = None,
    *,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    bbox: Sequence[float] | None = None,
    chunks: int | Mapping[str, int] | None = None,
    engine: Engine = "odc",
    href_map: HrefMap | None = None,
    groupby: Groupby = "solar_day",
    collections: Any = None,
) -> xr.DataArray:
    """Load STAC Items as the canonical cube ``(time, band, y, x)`` in physical units, lazily.

    Parameters
    ----------
    items
        Anything :func:`read_items` reads: pystac Item(s), an ItemCollection, Item dicts, a
        Catalog/Collection (walked recursively) or a path to Item / FeatureCollection /
        list-of-Items / Catalog / Collection JSON.
    bands
        Band names: asset keys (``"B04"``, ``"vv"``), canonical or common names (``"red"``,
        ``"VV"``, ``"B4"``). ``None`` loads the Sentinel-1/2 bands every item has (or all
        single-band data assets for other products). Items that have none of the requested
        bands (e.g. Sentinel-2 items in a ``bands=["vv", "vh"]`` request) are left out; items
        with only some of them are an error.
    crs
        Output CRS (anything odc-geo understands: ``"EPSG:32633"``, ``4326``, ``"utm"``).
        Default: the items' native CRS (the most common one, as odc-stac picks it).
    resolution
        Output pixel size in CRS units, a number or ``(x, y)``. Default: the native resolution of
        the finest selected band (odc-stac's choice given ``resolution=None``), e.g. 20 m for
        ``bands=["B11", "B12"]`` and 10 m once ``"B04"`` is added.
    bbox
        ``(min lon, min lat, max lon, max lat)`` in degrees to load; the grid snaps outwards to
        whole pixels. Default: the union of the items' footprints.
    chunks
        An int: the spatial chunk edge in pixels. A dict over ``time``/``band``/``y``/``x``
        (-1 = whole dim). Default ``time=1``, all bands in one chunk, ``y=x=1024``
        (:data:`DEFAULT_CHUNK`): one chunk is one time step of a 1024 x 1024 tile.
    engine
        ``"odc"`` (odc-stac) or ``"stackstac"``. Both read onto the same grid and give the same
        values; the loading of each band in each item is the only part that differs.
    href_map
        Rewrites asset hrefs before reading, for both engines (local mirrors, signing): a callable
        ``href -> href``, or a dict ``{old: new}`` matched on the whole href first, else on the
        longest matching prefix. Applied to absolute hrefs. The input items are not modified.
    groupby
        ``"solar_day"`` (default, odc-stac semantics): items acquired on the same local solar
        day, e.g. the consecutive slices of one Sentinel-1 datatake or adjacent Sentinel-2 tiles
        of one pass, are mosaicked into one time step. ``"time"``: one time step per distinct
        acquisition time. Within a step the first valid pixel in (time, id) order wins; the step's
        time is its earliest item's.
    collections
        Collection(s) (pystac, dicts or paths) whose ``item_assets`` supply ``raster:bands`` /
        ``eo:bands`` that the items' assets lack. Collections that items link to locally (e.g. in
        a local catalog) are used without being named here; remote links are never fetched.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "band", "y", "x")`` (also for geographic CRSs), float32, dask-backed,
        coords ``time`` (naive UTC), ``band`` (canonical names), ``units`` along band (``"dB"``
        for Sentinel-1, ``"1"`` for Sentinel-2 reflectance), ``y``/``x`` (pixel centres) and
        ``spatial_ref`` (``cube.rio.crs``).

    Notes
    -----
    Physical units, per item and band: DN equal to ``raster:bands`` ``nodata`` -> NaN, then
    ``DN * scale + offset`` from ``raster:bands`` (asset, else collection ``item_assets``).
    Sentinel-2 assets without scale/offset get the ESA convention: ``DN * 1e-4``, minus 0.1 from
    processing baseline 04.00 (``s2:processing_baseline``, else the ``_Nxxxx`` of the product
    name), for L2A and L1C alike; their nodata defaults to DN 0. Sentinel-1 polarisation bands
    (vv, vh, hh, hv) are backscatter power and become dB (``10 log10``, values <= 0 -> NaN)
    unless their ``raster:bands`` unit already says dB. Resampling is nearest-neighbour.
    Nothing is computed here.

    Raises
    ------
    ValueError
        Empty ``items``; an item with no usable raster asset; collections with different bands
        and ``bands=None``; items with only some of the requested bands; a ``bbox`` outside the
        items; time steps with no common area (and no ``bbox``); an unknown ``engine`` or
        ``groupby``.
    BandNotFoundError
        (a ``KeyError``) A requested band no item has; the message lists the available bands.
    AssetReadError
        (an ``OSError``, when the cube is computed) A file that cannot be read: missing,
        truncated, corrupt or unreachable; the message names the item id, asset key and href.

    Examples
    --------
    >>> import tempfile, numpy as np, rasterio
    >>> from rasterio.transform import from_origin
    >>> folder = tempfile.mkdtemp()
    >>> with rasterio.open(f"{folder}/vv.tif", "w", driver="GTiff", width=4, height=4, count=1,
    ...                    dtype="float32", crs="EPSG:32633",
    ...                    transform=from_origin(500000, 4000040, 10, 10)) as dst:
    ...     dst.write(np.full((1, 4, 4), 0.1, "float32"))
    >>> item = {"type": "Feature", "stac_version": "1.0.0", "id": "s1", "links": [],
    ...         "bbox": [15.0, 36.13, 15.001, 36.131], "geometry": None,
    ...         "properties": {"datetime": "2024-04-19T04:59:10Z", "proj:epsg": 32633,
    ...                        "proj:shape": [4, 4],
    ...                        "proj:transform": [10, 0, 500000, 0, -10, 4000040]},
    ...         "assets": {"vv": {"href": "vv.tif", "type": "image/tiff",
    ...                           "raster:bands": [{"nodata": -32768}]}}}
    >>> cube = load_stac([item], href_map=lambda href: f"{folder}/{href}")
    >>> cube.dims, cube.dtype, cube.band.values.tolist(), cube.units.values.tolist()
    (('time', 'band', 'y', 'x'), dtype('float32'), ['vv'], ['dB'])
    >>> float(cube[0, 0, 0, 0])  # 10 * log10(0.1)
    -10.0
    """
    if engine not in _ENGINES:
        raise ValueError(f"engine must be one of {list(_ENGINES)}, got {engine!r}")
    if groupby not in _GROUPBY:
        raise ValueError(f"groupby must be one of {list(_GROUPBY)}, got {groupby!r}")
    chunk_map = _normalise_chunks(chunks)
    box = _check_bbox(bbox)
    href_fn = _href_function(href_map)

    all_items = read_items(items)
    if not all_items:
        raise ValueError(
            "items is empty: there is no STAC Item to load (check the search or the file)"
        )
    extra_assets = _collection_item_assets(collections)
    recipes, aliases, multiband = [], [], []
    for item in all_items:
        item_assets = extra_assets.get(str(item.collection_id))
        if item_assets is None:
            item_assets = _linked_item_assets(item)
        rec, alias, multi = band_recipes(item, item_assets)
        if not rec:
            listing = {k: a.media_type for k, a in item.assets.items()}
            raise ValueError(
                f"item {item.id!r} has no usable raster asset (single-band GeoTIFF/JP2 data "
                f"asset); its assets are {listing}. Remove it or fix its assets"
            )
        recipes.append(rec)
        aliases.append(alias)
        multiband.append(multi)

    band_names, keep = _select_bands(all_items, recipes, aliases, multiband, bands)
    sel_items = [all_items[i] for i in keep]
    footprints = [footprint(it) for it in sel_items]
    if box is not None:
        mid_lon = (box[0] + box[2]) / 2
    else:
        from shapely import union_all

        mid_lon = float(union_all(footprints).centroid.x)
    groups = _group_items(sel_items, groupby, mid_lon)
    _check_footprints(sel_items, groups, footprints, box)

    # From here on items are in mosaic order: by group, then (time, id) within a group.
    order = [keep[i] for g in groups for i in g]
    sel_items = [all_items[i] for i in order]
    sel_recipes = [recipes[i] for i in order]
    starts = itertools.accumulate([0] + [len(g) for g in groups])
    groups = [list(range(a, b)) for a, b in itertools.pairwise(starts)]

    clones = [
        _clone(i, it, rec, band_names, href_fn)
        for i, (it, rec) in enumerate(zip(sel_items, sel_recipes, strict=True))
    ]
    owners: dict[str, list[tuple[str, str]]] = {}
    for clone, item, rec in zip(clones, sel_items, sel_recipes, strict=True):
        for b in band_names:
            href = str(clone.assets[b].href)
            entry = (str(item.id), rec[b].asset_key)
            if entry not in owners.setdefault(href, []):
                owners[href].append(entry)
    sources: _Sources = {href: tuple(v) for href, v in owners.items()}
    gbox = _geobox(clones, band_names, crs, resolution, box)
    # odc-stac can mosaic a group itself when its items share one recipe, and (as the fuser is
    # chosen per band) every item agrees on which bands are linear power.
    uniform = all(
        len({tuple(_recipe_key(sel_recipes[i][b]) for b in band_names) for i in g}) == 1
        for g in groups
    ) and all(len({r[b].to_db for r in sel_recipes}) == 1 for b in band_names)
    if engine == "odc" and uniform:
        # Items of a group share one recipe: odc-stac mosaics them (first valid pixel in
        # (time, id) order, nodata-aware), then the recipe is applied once per time step.
        group_of = [k for k, g in enumerate(groups) for _ in g]
        linear = [b for b in band_names if sel_recipes[0][b].to_db]
        raw = _load_odc(clones, band_names, gbox, chunk_map, group_of, sources, linear)
        cube = _to_physical(raw, [sel_recipes[g[0]] for g in groups], band_names)
        cube = cube.rename(item="time")
    else:
        raw = (
            _load_odc(clones, band_names, gbox, chunk_map, list(range(len(clones))), sources)
            if engine == "odc"
            else _load_stackstac(clones, band_names, gbox, chunk_map, sources)
        )
        phys = _to_physical(raw, sel_recipes, band_names)
        steps = []
        for group in groups:
            fused = phys.isel(item=group[0])
            for i in group[1:]:
                fused = fused.fillna(phys.isel(item=i))
            steps.append(fused)
        cube = xr.concat(steps, dim="time") if len(steps) > 1 else steps[0].expand_dims("time")

    times = pd.DatetimeIndex([nominal_datetime(sel_items[g[0]]) for g in groups])
    times = times.tz_convert("UTC").tz_localize(None).astype("datetime64[ns]")
    units = [sel_recipes[0][b].units for b in band_names]
    ydim, xdim = gbox.dimensions
    cube = cube.assign_coords(
        time=times.values,
        band=band_names,
        units=("band", units),
        y=np.asarray(gbox.coords[ydim].values),
        x=np.asarray(gbox.coords[xdim].values),
    )
    cube = cube.transpose("time", "band", "y", "x").chunk(chunk_map)
    cube.name = None
    epsg = gbox.crs.epsg
    return cube.rio.write_crs(f"EPSG:{epsg}" if epsg is not None else gbox.crs.to_wkt())
