"""ec.load_stac on real Planetary Computer STAC items, with small local rasters on their grids.

The items' hrefs point to the cloud; each test writes a small window (a few hundred pixels) of
each item's own ``proj:*`` grid as a local GeoTIFF with known DN values, maps the hrefs to it with
``href_map`` and loads a bbox inside that window.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.array as da
import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer
from rasterio.transform import Affine
from shapely.geometry import LineString, shape
from shapely.ops import nearest_points

import eo_contrast as ec
from eo_contrast.stac import BandNotFoundError, read_items

PC = Path("stac_items") / "planetary_computer"
S1_FILE = "sentinel-1-rtc_4items_stac-geoparquet.json"
S2_FILE = "sentinel-2-l2a_4items_stac-geoparquet.json"
S2_2019_FILE = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
WINDOW_M = 2560.0  # window edge in metres: 256 px at 10 m, 128 px at 20 m
NODATA_S1 = -32768.0


# ------------------------------------------------------------------------------------------
# helpers: local windows of the items' grids
# ------------------------------------------------------------------------------------------


def _json(shared_data: Path, name: str) -> Any:
    return json.loads((shared_data / PC / name).read_text())


def _grid(item: dict, key: str) -> tuple[int, Affine]:
    asset = item["assets"][key]
    t = asset.get("proj:transform") or item["properties"]["proj:transform"]
    return int(item["properties"]["proj:epsg"]), Affine(*t[:6])


def _snap_point(item: dict, key: str, lonlat_geom) -> tuple[float, float]:
    """A point inside ``lonlat_geom`` in the item's CRS, on a 60 m multiple of its grid."""
    epsg, t = _grid(item, key)
    p = lonlat_geom.representative_point()
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(p.x, p.y)
    x = t.c + math.floor((x - t.c) / 60.0) * 60.0
    y = t.f - math.floor((t.f - y) / 60.0) * 60.0
    return x, y


def _write(
    path: Path,
    epsg: int,
    x0: float,
    y0: float,
    res: float,
    data: np.ndarray,
    nodata: float | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "transform": Affine(res, 0, x0, 0, -res, y0),
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])


def _inner_bbox(epsg: int, x0: float, y0: float, frac: tuple[float, float] = (0.3, 0.7)):
    """lon/lat bbox of the middle of the window whose top-left corner is (x0, y0)."""
    a, b = frac
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs = [x0 + a * WINDOW_M, x0 + b * WINDOW_M]
    ys = [y0 - b * WINDOW_M, y0 - a * WINDOW_M]
    lon, lat = tr.transform([xs[0], xs[1], xs[0], xs[1]], [ys[0], ys[0], ys[1], ys[1]])
    return (min(lon), min(lat), max(lon), max(lat))


def _sample(window: np.ndarray, x0: float, y0: float, res: float, cube: xr.DataArray):
    """The window's values at the cube's pixel centres (nearest source pixel)."""
    cols = np.floor((cube.x.values - x0) / res).astype(int)
    rows = np.floor((y0 - cube.y.values) / res).astype(int)
    assert cols.min() >= 0 and rows.min() >= 0
    assert cols.max() < window.shape[1] and rows.max() < window.shape[0]
    return window[np.ix_(rows, cols)]


def _dn(n: int, seed: int) -> np.ndarray:
    dn = (np.arange(n * n, dtype=np.int64).reshape(n, n) * 37 + seed) % 9000 + 1
    dn = dn.astype(np.uint16)
    c = n // 2
    dn[c - 3 : c + 3, c - 3 : c + 3] = 0  # nodata block in the middle
    return dn


def _s2_expected(dn: np.ndarray, offset: float) -> np.ndarray:
    out = dn.astype(np.float32) * np.float32(1e-4) + np.float32(offset)
    return np.where(dn == 0, np.float32(np.nan), out)


def _make_s2(item: dict, folder: Path, bands=("B04", "B11"), seed: int = 0) -> SimpleNamespace:
    """Local windows for ``bands`` of an S2 item, and how to load them."""
    epsg, _ = _grid(item, bands[0])
    x0, y0 = _snap_point(item, bands[0], shape(item["geometry"]))
    href_map, windows = {}, {}
    for i, key in enumerate(bands):
        res = abs(_grid(item, key)[1].a)
        dn = _dn(int(WINDOW_M / res), seed + 1000 * i)
        path = folder / item["id"] / f"{key}.tif"
        _write(path, epsg, x0, y0, res, dn)
        href_map[item["assets"][key]["href"]] = str(path)
        windows[key] = (dn, res)
    return SimpleNamespace(
        item=item,
        href_map=href_map,
        windows=windows,
        x0=x0,
        y0=y0,
        bbox=_inner_bbox(epsg, x0, y0),
        epsg=epsg,
    )


@pytest.fixture(scope="module")
def s2(shared_data, tmp_path_factory):
    items = _json(shared_data, S2_FILE)
    return _make_s2(items[0], tmp_path_factory.mktemp("s2"))


@pytest.fixture(scope="module")
def s1(shared_data, tmp_path_factory):
    """Two consecutive slices of one S1 datatake, with windows across their seam."""
    items = _json(shared_data, S1_FILE)
    late, early = items[0], items[1]  # 04:59:10 and 04:58:51, same datatake, overlapping
    folder = tmp_path_factory.mktemp("s1")
    # the slices' footprints abut: centre the window on the seam, so it straddles both
    seam = LineString(nearest_points(shape(late["geometry"]), shape(early["geometry"])))
    x0, y0 = _snap_point(late, "vv", seam.interpolate(0.5, normalized=True))
    x0, y0 = x0 - WINDOW_M / 2, y0 + WINDOW_M / 2
    epsg = 32633
    rng = np.random.default_rng(0)
    prefix = "https://sentinel1euwestrtc.blob.core.windows.net/sentinel1-grd-rtc/"
    windows = {}
    for item in (late, early):
        for pol in ("vv", "vh"):
            lin = rng.uniform(0.001, 0.8, (256, 256)).astype(np.float32)
            if item is early:
                lin[100:140, 100:140] = NODATA_S1  # the later slice fills this hole
                lin[150:154, 150:154] = 0.0  # no dB value: filled from the later slice too
            if pol == "vh":
                lin[128, 120:124] = [0.0, -0.01, 0.0, -1.0]  # <= 0 -> NaN in dB
            href = item["assets"][pol]["href"]
            assert href.startswith(prefix)
            _write(folder / href[len(prefix) :], epsg, x0, y0, 10.0, lin, nodata=NODATA_S1)
            windows[item["id"], pol] = lin
    # the other two slices do not reach the window: their hrefs lead nowhere, so reading them
    # would fail
    href_map = {prefix: str(folder) + "/"}
    bbox = _inner_bbox(epsg, x0, y0, (0.3, 0.7))
    return SimpleNamespace(
        items=items,
        late=late,
        early=early,
        windows=windows,
        x0=x0,
        y0=y0,
        bbox=bbox,
        href_map=href_map,
    )


def _db(lin: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lin > 0, 10 * np.log10(lin.astype(np.float64)), np.nan)


def _assert_canonical(cube: xr.DataArray, bands: list[str], units: list[str], epsg: int):
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.dtype == np.float32
    assert isinstance(cube.data, da.Array)
    assert cube.band.values.tolist() == bands
    assert cube.units.dims == ("band",) and cube.units.values.tolist() == units
    assert cube.rio.crs.to_epsg() == epsg
    assert "spatial_ref" in cube.coords
    assert cube.time.dtype == np.dtype("datetime64[ns]")


def _assert_same(a: xr.DataArray, b: xr.DataArray):
    for name in ("time", "band", "units", "y", "x"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.rio.crs == b.rio.crs
    assert a.rio.transform() == b.rio.transform()
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-6, equal_nan=True)


# ------------------------------------------------------------------------------------------
# Sentinel-2 L2A
# ------------------------------------------------------------------------------------------


def test_s2_baseline_0510_physical_values(s2):
    assert s2.item["properties"]["s2:processing_baseline"] == "05.10"
    assert "raster:bands" not in s2.item["assets"]["B04"]  # the real items carry no scale/offset
    cube = ec.load_stac([s2.item], ["red", "swir16"], bbox=s2.bbox, href_map=s2.href_map)
    _assert_canonical(cube, ["B04", "B11"], ["1", "1"], s2.epsg)
    assert cube.sizes["time"] == 1 and cube.time.values[0] == np.datetime64(
        "2024-04-19T09:55:49.024", "ns"
    )
    # finest selected band (10 m) on the item's own grid alignment
    t = cube.rio.transform()
    assert (t.a, t.e) == (10.0, -10.0) and (t.c - s2.x0) % 10 == 0 and (s2.y0 - t.f) % 10 == 0
    values = cube.values
    for b, key in enumerate(("B04", "B11")):
        dn, res = s2.windows[key]
        expected = _s2_expected(_sample(dn, s2.x0, s2.y0, res, cube), -0.1)
        np.testing.assert_allclose(values[0, b], expected, rtol=0, atol=1e-6, equal_nan=True)
    assert np.isnan(values).any() and np.nanmin(values) >= -0.1  # DN 0 -> NaN, DN >= 1 kept


def test_s2_default_resolution_is_finest_selected_band(s2):
    cube = ec.load_stac(s2.item, "B11", bbox=s2.bbox, href_map=s2.href_map)
    assert cube.rio.resolution() == (20.0, -20.0)
    dn, res = s2.windows["B11"]
    expected = _s2_expected(_sample(dn, s2.x0, s2.y0, res, cube), -0.1)
    np.testing.assert_allclose(cube.values[0, 0], expected, rtol=0, atol=1e-6, equal_nan=True)


def test_s2_baseline_0212_has_no_offset(shared_data, tmp_path):
    item = _json(shared_data, S2_2019_FILE)
    assert item["properties"]["s2:processing_baseline"] == "02.12"
    w = _make_s2(item, tmp_path, bands=("B04",), seed=5)
    cube = ec.load_stac(item, ["B04"], bbox=w.bbox, href_map=lambda h: w.href_map.get(h, h))
    _assert_canonical(cube, ["B04"], ["1"], 32606)
    dn, res = w.windows["B04"]
    expected = _s2_expected(_sample(dn, w.x0, w.y0, res, cube), 0.0)
    np.testing.assert_allclose(cube.values[0, 0], expected, rtol=0, atol=1e-6, equal_nan=True)


def test_s2_baseline_from_product_name_and_l1c(s2):
    dn, res = s2.windows["B04"]
    l1c = copy.deepcopy(s2.item)
    l1c["collection"] = "sentinel-2-l1c"
    del l1c["properties"]["s2:processing_baseline"]  # found in s2:product_uri (N0510) instead
    l1c["properties"]["s2:product_type"] = "S2MSI1C"
    old = copy.deepcopy(l1c)
    old["properties"]["s2:product_uri"] = old["properties"]["s2:product_uri"].replace(
        "N0510", "N0309"
    )
    for it, offset in ((l1c, -0.1), (old, 0.0)):
        cube = ec.load_stac(it, "B04", bbox=s2.bbox, href_map=s2.href_map)
        np.testing.assert_allclose(
            cube.values[0, 0],
            _s2_expected(_sample(dn, s2.x0, s2.y0, res, cube), offset),
            rtol=0,
            atol=1e-6,
            equal_nan=True,
        )


def test_s2_engines_agree(s2):
    a = ec.load_stac(s2.item, ["B04", "B11"], bbox=s2.bbox, href_map=s2.href_map, engine="odc")
    b = ec.load_stac(
        s2.item, ["B04", "B11"], bbox=s2.bbox, href_map=s2.href_map, engine="stackstac"
    )
    _assert_canonical(b, ["B04", "B11"], ["1", "1"], s2.epsg)
    _assert_same(a, b)


def test_raster_bands_scale_offset_win_over_convention(s2):
    it = copy.deepcopy(s2.item)
    it["assets"]["B04"]["raster:bands"] = [{"nodata": 7, "scale": 2.0, "offset": 1.0}]
    cube = ec.load_stac(it, "B04", bbox=s2.bbox, href_map=s2.href_map)
    dn = _sample(s2.windows["B04"][0], s2.x0, s2.y0, 10.0, cube).astype(np.float32)
    expected = np.where(dn == 7, np.nan, dn * 2 + 1)
    np.testing.assert_allclose(cube.values[0, 0], expected, rtol=0, atol=0, equal_nan=True)
    assert (dn == 7).any() and (dn == 0).any()  # 0 is data here: raster:bands says nodata=7


# ------------------------------------------------------------------------------------------
# Sentinel-1 RTC
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["odc", "stackstac"])
@pytest.mark.parametrize("same_recipe", [True, False])
def test_s1_rtc_db_and_solar_day_mosaic(s1, engine, same_recipe):
    assert s1.late["assets"]["vv"]["raster:bands"][0]["nodata"] == NODATA_S1
    items = copy.deepcopy(s1.items)
    if not same_recipe:  # slices of one step with different metadata: mosaicked per item
        for pol in ("vv", "vh"):
            items[0]["assets"][pol]["raster:bands"][0]["nodata"] = -9999.0
    cube = ec.load_stac(items, ["VV", "vh"], bbox=s1.bbox, href_map=s1.href_map, engine=engine)
    _assert_canonical(cube, ["vv", "vh"], ["dB", "dB"], 32633)
    # the 4 slices of one datatake are one time step, stamped with the earliest slice
    assert cube.sizes["time"] == 1
    assert cube.time.values[0] == np.datetime64("2024-04-19T04:58:01.720055", "ns")
    values = cube.values
    for b, pol in enumerate(("vv", "vh")):
        first = _sample(s1.windows[s1.early["id"], pol], s1.x0, s1.y0, 10.0, cube)
        second = _sample(s1.windows[s1.late["id"], pol], s1.x0, s1.y0, 10.0, cube)
        assert (first == NODATA_S1).any() and (first == 0).any()
        expected = _db(np.where(first > 0, first, second))  # earlier slice first
        np.testing.assert_allclose(values[0, b], expected, rtol=0, atol=1e-4, equal_nan=True)
    assert np.isnan(values[0, 1]).sum() == 4 and not np.isnan(values[0, 0]).any()


def test_s1_groupby_time_keeps_each_slice(s1):
    cube = ec.load_stac(
        [s1.late, s1.early], "vv", bbox=s1.bbox, href_map=s1.href_map, groupby="time"
    )
    assert list(cube.time.values) == [
        np.datetime64("2024-04-19T04:58:51.719834", "ns"),
        np.datetime64("2024-04-19T04:59:10.436706", "ns"),
    ]
    for t, it in enumerate((s1.early, s1.late)):
        lin = _sample(s1.windows[it["id"], "vv"], s1.x0, s1.y0, 10.0, cube)
        expected = _db(np.where(lin == NODATA_S1, np.nan, lin))
        np.testing.assert_allclose(cube.values[t, 0], expected, rtol=0, atol=1e-4, equal_nan=True)
    assert np.isnan(cube.values[0, 0]).sum() > 0 and not np.isnan(cube.values[1, 0]).any()


def test_s1_engines_agree(s1):
    a = ec.load_stac(s1.items, None, bbox=s1.bbox, href_map=s1.href_map, engine="odc")
    b = ec.load_stac(s1.items, None, bbox=s1.bbox, href_map=s1.href_map, engine="stackstac")
    assert a.band.values.tolist() == ["vv", "vh"]
    _assert_same(a, b)
    a = ec.load_stac(s1.items, "vv", bbox=s1.bbox, href_map=s1.href_map, groupby="time")
    b = ec.load_stac(
        s1.items, "vv", bbox=s1.bbox, href_map=s1.href_map, groupby="time", engine="stackstac"
    )
    assert a.sizes["time"] == 4  # the two far slices are all NaN here
    _assert_same(a, b)


def test_s1_geographic_crs(s1):
    cube = ec.load_stac(
        s1.early, "vv", crs="EPSG:4326", resolution=1e-4, bbox=s1.bbox, href_map=s1.href_map
    )
    _assert_canonical(cube, ["vv"], ["dB"], 4326)
    assert cube.rio.resolution() == pytest.approx((1e-4, -1e-4))
    assert s1.bbox[0] - 1e-4 <= cube.x.values.min() and cube.x.values.max() <= s1.bbox[2] + 1e-4
    values = cube.values[0, 0]
    lin = s1.windows[s1.early["id"], "vv"]
    allowed = _db(np.where(lin == NODATA_S1, np.nan, lin)).astype(np.float32)
    finite = values[np.isfinite(values)]
    assert finite.size > 0.8 * values.size
    allowed = np.sort(allowed[np.isfinite(allowed)])
    nearest = allowed[np.clip(np.searchsorted(allowed, finite), 0, allowed.size - 1)]
    below = allowed[np.clip(np.searchsorted(allowed, finite) - 1, 0, allowed.size - 1)]
    gap = np.minimum(np.abs(nearest - finite), np.abs(below - finite))
    assert gap.max() < 1e-4  # nearest neighbour: only source values
    other = ec.load_stac(
        s1.early,
        "vv",
        crs="EPSG:4326",
        resolution=1e-4,
        bbox=s1.bbox,
        href_map=s1.href_map,
        engine="stackstac",
    )
    np.testing.assert_array_equal(other.x.values, cube.x.values)
    same = (other.values[0, 0] == values) | (np.isnan(other.values[0, 0]) & np.isnan(values))
    assert same.mean() > 0.99  # two warpers, nearest neighbour: the odd tie may differ


def test_lazy_never_reads(s1, tmp_path):
    for engine in ("odc", "stackstac"):
        cube = ec.load_stac(
            s1.items, bbox=s1.bbox, engine=engine, href_map=lambda h: str(tmp_path / "missing.tif")
        )
        assert isinstance(cube.data, da.Array)
        with pytest.raises(Exception, match=r"missing\.tif"):
            cube.compute()


def test_chunks(s1):
    cube = ec.load_stac(s1.items, bbox=s1.bbox, href_map=s1.href_map)
    assert cube.chunks[0] == (1,) and cube.chunks[1] == (2,)
    assert max(cube.chunks[2]) <= 1024 and max(cube.chunks[3]) <= 1024
    cube = ec.load_stac(s1.items, bbox=s1.bbox, href_map=s1.href_map, chunks=32)
    assert max(cube.chunks[2]) == 32 and max(cube.chunks[3]) == 32
    cube = ec.load_stac(s1.items, bbox=s1.bbox, href_map=s1.href_map, chunks={"band": 1, "y": 16})
    assert cube.chunks[1] == (1, 1) and max(cube.chunks[2]) == 16


def test_items_not_modified(s1):
    objs = [pystac.Item.from_dict(copy.deepcopy(it)) for it in s1.items]
    before = [o.to_dict(transform_hrefs=False) for o in objs]
    ec.load_stac(objs, bbox=s1.bbox, href_map=s1.href_map, engine="stackstac").compute()
    ec.load_stac(objs, bbox=s1.bbox, href_map=s1.href_map).compute()
    assert [o.to_dict(transform_hrefs=False) for o in objs] == before
    assert objs[0].assets["vv"].href.startswith("https://")


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------


def test_read_items_forms(shared_data):
    folder = shared_data / PC
    raw = _json(shared_data, S1_FILE)
    assert [i.id for i in read_items(folder / S1_FILE)] == [it["id"] for it in raw]
    assert len(read_items(str(folder / "site2-2020_jun_jul-35MNM.geojson"))) == 13
    assert [i.id for i in read_items(folder / S2_2019_FILE)] == [
        "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531"
    ]
    collection = pystac.ItemCollection.from_file(
        str(folder / "site1-20200606-tall-strip-africa.geojson")
    )
    assert len(read_items(collection)) == 9
    assert len(read_items(raw)) == 4
    assert len(read_items([pystac.Item.from_dict(raw[0]), raw[1]])) == 2


def test_local_catalog_with_item_assets(shared_data, tmp_path):
    """Catalog -> Collection -> Item with relative hrefs; scale/unit from item_assets."""
    raw = copy.deepcopy(_json(shared_data, S1_FILE)[0])
    for key in list(raw["assets"]):
        if key != "vv":
            del raw["assets"][key]
    del raw["assets"]["vv"]["raster:bands"]
    raw["links"] = []
    raw["collection"] = "s1-db-demo"
    item = pystac.Item.from_dict(raw)
    collection = pystac.Collection(
        "s1-db-demo",
        "backscatter stored as int16 centi-dB",
        pystac.Extent.from_items([item]),
    )
    collection.item_assets = {
        "vv": pystac.ItemAssetDefinition.create(
            title="vv",
            description=None,
            media_type="image/tiff; application=geotiff",
            roles=["data"],
            extra_fields={
                "raster:bands": [
                    {"nodata": -32768, "scale": 0.01, "unit": "dB", "data_type": "int16"}
                ]
            },
        )
    }
    collection.add_item(item)
    catalog = pystac.Catalog("root", "root catalog")
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    x0, y0 = _snap_point(raw, "vv", shape(raw["geometry"]))
    centi_db = (np.arange(256 * 256).reshape(256, 256) % 3000 - 2500).astype(np.int16)
    centi_db[0:130, 0:130] = -32768
    tif = Path(item.get_self_href()).parent / "vv.tif"
    _write(tif, 32633, x0, y0, 10.0, centi_db)
    item.assets["vv"].href = str(tif)
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    on_disk = json.loads(Path(item.get_self_href()).read_text())
    assert on_disk["assets"]["vv"]["href"] == "./vv.tif"
    bbox = _inner_bbox(32633, x0, y0)
    cubes = [
        ec.load_stac(tmp_path / "catalog" / "catalog.json", bbox=bbox, engine=e)
        for e in ("odc", "stackstac")
    ]
    cube = cubes[0]
    _assert_canonical(cube, ["vv"], ["dB"], 32633)
    dn = _sample(centi_db, x0, y0, 10.0, cube).astype(np.float32)
    expected = np.where(dn == -32768, np.nan, dn * np.float32(0.01))  # already dB: no log
    np.testing.assert_allclose(cube.values[0, 0], expected, rtol=0, atol=1e-6, equal_nan=True)
    assert np.isnan(cube.values).any() and (cube.values[np.isfinite(cube.values)] < 0).any()
    _assert_same(*cubes)


def test_collection_argument_supplies_item_assets(s2, shared_data):
    it = copy.deepcopy(s2.item)
    it["assets"]["B04"]["eo:bands"] = [{"name": "B04"}]
    coll = _json(shared_data, "sentinel-2-l2a.collection.json")
    coll["item_assets"]["B04"]["raster:bands"] = [{"nodata": 7, "data_type": "uint16"}]
    cube = ec.load_stac(it, "B04", bbox=s2.bbox, href_map=s2.href_map, collections=coll)
    dn = _sample(s2.windows["B04"][0], s2.x0, s2.y0, 10.0, cube)
    expected = np.where(dn == 7, np.nan, dn.astype(np.float32) * np.float32(1e-4) - np.float32(0.1))
    np.testing.assert_allclose(cube.values[0, 0], expected, rtol=0, atol=1e-6, equal_nan=True)


def test_mixed_collections_pick_items_by_band(s1, s2):
    cube = ec.load_stac([s2.item, s1.early], ["vv"], bbox=s1.bbox, href_map=s1.href_map)
    assert cube.band.values.tolist() == ["vv"] and cube.sizes["time"] == 1
    with pytest.raises(ValueError, match=r"different bands.*sentinel-1-rtc.*sentinel-2-l2a"):
        ec.load_stac([s1.early, s2.item], bbox=s1.bbox, href_map=s1.href_map)


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_error_empty():
    with pytest.raises(ValueError, match="items is empty"):
        ec.load_stac([])


def test_error_unknown_band_lists_available(s1):
    with pytest.raises(BandNotFoundError, match=r"'B04'.*sentinel-1-rtc: \['vv', 'vh'\]"):
        ec.load_stac(s1.items, ["vv", "B04"])
    with pytest.raises(KeyError, match="available bands"):
        ec.load_stac(s1.items, "hh")


def test_error_bbox_outside(s1):
    with pytest.raises(ValueError, match=r"does not intersect the items' footprints"):
        ec.load_stac(s1.items, bbox=(0.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"bbox .* min < max"):
        ec.load_stac(s1.items, bbox=(14.0, 31.0, 13.0, 32.0))


def test_error_no_common_area(s1, shared_data):
    with pytest.raises(ValueError, match=r"share no common area.*053498_067DF2_rtc.*bbox="):
        ec.load_stac(s1.items, groupby="time")
    s2_2024 = _json(shared_data, S2_FILE)[0]
    s2_2019 = _json(shared_data, S2_2019_FILE)
    pattern = rf"share no common area.*{s2_2019['id']}.*{s2_2024['id']}"
    with pytest.raises(ValueError, match=pattern):
        ec.load_stac([s2_2024, s2_2019], "B04")


def test_error_unknown_engine_and_groupby(s1):
    with pytest.raises(ValueError, match=r"engine must be one of \['odc', 'stackstac'\]"):
        ec.load_stac(s1.items, engine="gdal")
    with pytest.raises(ValueError, match="groupby must be one of"):
        ec.load_stac(s1.items, groupby="month")


def test_error_item_without_usable_assets(s1):
    item = copy.deepcopy(s1.items[1])
    item["assets"] = {
        k: v for k, v in item["assets"].items() if k in ("tilejson", "rendered_preview")
    }
    with pytest.raises(ValueError, match=rf"item '{item['id']}' has no usable raster asset"):
        ec.load_stac([s1.items[2], item])


def test_error_items_with_some_bands(s1):
    items = copy.deepcopy(s1.items)
    del items[2]["assets"]["vh"]
    with pytest.raises(ValueError, match=rf"only some of the requested bands.*{items[2]['id']}"):
        ec.load_stac(items, ["vv", "vh"])


def test_error_s2_without_baseline(s2):
    item = copy.deepcopy(s2.item)
    for key in ("s2:processing_baseline", "s2:product_uri", "s2:granule_id", "s2:datatake_id"):
        item["properties"].pop(key)
    with pytest.raises(ValueError, match="s2:processing_baseline"):
        ec.load_stac(item, "B04")


def test_error_geographic_crs_without_resolution(s1):
    with pytest.raises(ValueError, match=r"pass resolution= in the units of crs"):
        ec.load_stac(s1.early, crs="EPSG:4326", bbox=s1.bbox)


def test_error_bad_arguments(s1, tmp_path):
    with pytest.raises(TypeError, match="href_map must be"):
        ec.load_stac(s1.items, href_map=42)
    with pytest.raises(ValueError, match="chunks has unknown dims"):
        ec.load_stac(s1.items, chunks={"lat": 10})
    with pytest.raises(TypeError, match="items must be"):
        ec.load_stac(42)
    with pytest.raises(FileNotFoundError, match="not found"):
        ec.load_stac(tmp_path / "nope.json")
