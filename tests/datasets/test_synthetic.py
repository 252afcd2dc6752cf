"""synthetic_scene: deterministic files, valid COGs and STAC, physically plausible values."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import rioxarray
import xarray as xr
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension

import eo_contrast as ec
from eo_contrast.datasets.synthetic import CLASS_NAMES, S2_L2A_BANDS, SyntheticScene

SIZE = 128
WATER, VEGETATION, URBAN, BARE_SOIL = range(4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    return ec.synthetic_scene(tmp_path_factory.mktemp("scene"), size=SIZE, seed=0)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _asset(scene: SyntheticScene, sensor: str, time: pd.Timestamp, band: str) -> Path:
    items = scene.item_collection(sensor)
    (item,) = [i for i in items if pd.Timestamp(i.datetime).tz_localize(None) == time]
    return Path(item.assets[band].href)


def _s2(scene: SyntheticScene, time: pd.Timestamp, band: str) -> np.ndarray:
    dn = _read(_asset(scene, "s2", time, band)).astype(np.float64)
    return np.where(dn == 0, np.nan, dn * 1e-4 - 0.1)  # raster:bands scale / offset


def _s1_db_on_s2_grid(scene: SyntheticScene, time: pd.Timestamp, pol: str) -> np.ndarray:
    s1 = rioxarray.open_rasterio(_asset(scene, "s1", time, pol), masked=True).squeeze("band")
    target = rioxarray.open_rasterio(scene.landcover).squeeze("band")
    on_s2 = s1.rio.reproject_match(target, resampling=rasterio.enums.Resampling.nearest)
    return 10 * np.log10(on_s2.values)


def test_result_describes_what_was_written(scene: SyntheticScene) -> None:
    for path in (scene.catalog, scene.s1_items, scene.s2_items, scene.label, scene.landcover):
        assert path.is_file() and path.parent == scene.root
    assert scene.crs == "EPSG:32630" and scene.class_names == CLASS_NAMES
    assert scene.s2_shape == (SIZE, SIZE) and scene.s1_shape == (SIZE + 2, SIZE + 2)
    assert len(scene.s1_times) == len(scene.s2_times) == 5
    assert list(scene.s1_times) == sorted(scene.s1_times)
    assert scene.s2_cloud_cover[0] == 0.0 and scene.s2_cloud_cover[1] > 30.0


def _nearest_pairs(s1: list[pd.Timestamp], s2: list[pd.Timestamp], one_to_one: bool):
    """Reference pairing: closest candidate pairs first, within 3 days."""
    candidates = sorted(
        (abs(a - b), i, j)
        for i, a in enumerate(s1)
        for j, b in enumerate(s2)
        if abs(a - b) <= pd.Timedelta("3D")
    )
    used_s1, pairs = set(), {}
    for _, i, j in candidates:
        if j in pairs or (one_to_one and i in used_s1):
            continue
        pairs[j] = i
        used_s1.add(i)
    return tuple((s1[pairs[j]], s2[j]) for j in sorted(pairs))


def test_expected_pairs_follow_nearest_in_time_within_3_days(scene: SyntheticScene) -> None:
    s1, s2 = list(scene.s1_times), list(scene.s2_times)
    assert scene.expected_pairs == _nearest_pairs(s1, s2, one_to_one=True)
    assert scene.expected_pairs_many_to_one == _nearest_pairs(s1, s2, one_to_one=False)
    assert len(scene.expected_pairs) == 4 and len(scene.expected_pairs_many_to_one) == 5
    assert scene.s2_times[4] not in {b for _, b in scene.expected_pairs}  # unpaired S2 date
    assert all(abs(a - b) <= pd.Timedelta("3D") for a, b in scene.expected_pairs_many_to_one)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = ec.synthetic_scene(tmp_path / "a", size=48, seed=7)
    b = ec.synthetic_scene(tmp_path / "b", size=48, seed=7)
    c = ec.synthetic_scene(tmp_path / "c", size=48, seed=8)
    da, db, dc = _digests(a.root), _digests(b.root), _digests(c.root)
    assert len(da) == 5 * 12 + 5 * 2 + 10 + 2 + 3 + 2  # COGs, Items, labels, catalogue
    assert da == db
    assert da["landcover.tif"] != dc["landcover.tif"]


def test_existing_scene_needs_overwrite(tmp_path: Path) -> None:
    first = ec.synthetic_scene(tmp_path, size=32, seed=1)
    (tmp_path / "notes.txt").write_text("keep me")
    before = _digests(tmp_path)
    with pytest.raises(FileExistsError, match=r"already holds a synthetic scene.*overwrite=True"):
        ec.synthetic_scene(tmp_path, size=32, seed=2)
    assert _digests(tmp_path) == before
    again = ec.synthetic_scene(tmp_path, size=32, seed=1, overwrite=True)
    assert _digests(tmp_path) == before and again == first
    ec.synthetic_scene(tmp_path, size=40, seed=2, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert _read(tmp_path / "landcover.tif").shape == (40, 40)


@pytest.mark.parametrize("size", [16, 31.5, True])
def test_bad_size(tmp_path: Path, size: object) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        ec.synthetic_scene(tmp_path, size=size)  # type: ignore[arg-type]


def test_files_are_cogs_readable_with_rioxarray(scene: SyntheticScene) -> None:
    s1_grid, s2_grid = rasterio.Affine(*scene.s1_transform), rasterio.Affine(*scene.s2_transform)
    expected = {  # path -> (dtype, nodata, transform)
        **{
            Path(a.href): ("uint16", 0, s2_grid)
            for i in scene.item_collection("s2")
            for a in i.assets.values()
        },
        **{
            Path(a.href): ("float32", -32768, s1_grid)
            for i in scene.item_collection("s1")
            for a in i.assets.values()
        },
        scene.label: ("int16", -1, s2_grid),
        scene.landcover: ("uint8", None, s2_grid),
    }
    assert len(expected) == 5 * 12 + 5 * 2 + 2
    for path, (dtype, nodata, transform) in expected.items():
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
            assert src.profile["tiled"] and src.profile["compress"] == "deflate"
            assert src.crs.to_epsg() == 32630 and src.transform == transform
            assert src.dtypes[0] == dtype and src.nodata == nodata
        arr = rioxarray.open_rasterio(path)
        assert arr.rio.crs.to_epsg() == 32630 and arr.dtype == np.dtype(dtype)
    label = rioxarray.open_rasterio(scene.label)
    assert label.shape == (1, SIZE, SIZE)
    assert set(np.unique(label.values).tolist()) == {-1, 0, 1}
    cover = rioxarray.open_rasterio(scene.landcover)
    assert set(np.unique(cover.values).tolist()) == {0, 1, 2, 3}


def test_s1_grid_is_offset_by_a_fraction_of_a_pixel_and_covers_s2(scene: SyntheticScene) -> None:
    s1, s2 = rasterio.Affine(*scene.s1_transform), rasterio.Affine(*scene.s2_transform)
    assert s1.a == s2.a == 10 and s1.e == s2.e == -10
    dx, dy = (s1.c - s2.c) / 10, (s1.f - s2.f) / 10
    assert 0 < abs(dx) % 1 < 1 and 0 < abs(dy) % 1 < 1
    assert s1.c <= s2.c and s1.f >= s2.f
    assert s1.c + 10 * scene.s1_shape[1] >= s2.c + 10 * SIZE
    assert s1.f - 10 * scene.s1_shape[0] <= s2.f - 10 * SIZE


def test_landcover_is_spatially_coherent(scene: SyntheticScene) -> None:
    cover = _read(scene.landcover)
    fractions = np.bincount(cover.ravel(), minlength=4) / cover.size
    assert fractions[VEGETATION] > 0.4 and fractions[BARE_SOIL] > 0.1
    assert 0.01 < fractions[WATER] < 0.1 and 0.01 < fractions[URBAN] < 0.15
    same_as_right = (cover[:, 1:] == cover[:, :-1]).mean()
    assert same_as_right > 0.95  # smooth patches, not salt and pepper


def test_s2_spectra_are_physically_plausible(scene: SyntheticScene) -> None:
    clear = scene.s2_times[0]
    assert scene.s2_cloud_cover[0] == 0
    cover = _read(scene.landcover)
    refl = {b: _s2(scene, clear, b) for b in S2_L2A_BANDS}
    med = {c: np.array([np.median(refl[b][cover == c]) for b in S2_L2A_BANDS]) for c in range(4)}
    nir = S2_L2A_BANDS.index("B08")
    assert med[WATER][nir] < 0.05 < 0.3 < med[VEGETATION][nir] < 0.45
    assert np.all(np.diff(med[WATER][3:]) <= 0.002)  # water falls from red into NIR and SWIR
    red_edge = med[VEGETATION][S2_L2A_BANDS.index("B07")] - med[VEGETATION][3]
    assert red_edge > 0.2
    assert np.ptp(med[URBAN]) < 0.15 and 0.08 < med[URBAN].mean() < 0.25
    assert med[BARE_SOIL][S2_L2A_BANDS.index("B11")] > med[BARE_SOIL][3] > med[BARE_SOIL][1]
    ndvi = (refl["B08"] - refl["B04"]) / (refl["B08"] + refl["B04"])
    assert np.median(ndvi[cover == VEGETATION]) > 0.6
    assert np.mean(ndvi[cover == VEGETATION] > 0.5) > 0.97
    assert np.median(ndvi[cover == URBAN]) < 0.3
    texture = refl["B08"][cover == VEGETATION]
    assert 0.01 < texture.std() < 0.08  # textured, not flat


def test_s1_backscatter_is_physically_plausible(scene: SyntheticScene) -> None:
    cover = _read(scene.landcover)
    pre = scene.s1_times[0]
    vv, vh = _s1_db_on_s2_grid(scene, pre, "vv"), _s1_db_on_s2_grid(scene, pre, "vh")
    expected = {WATER: (-22, -28), VEGETATION: (-8, -14), URBAN: (0, -8), BARE_SOIL: (-13, -20)}
    for cls, (e_vv, e_vh) in expected.items():
        inner = cover == cls
        assert np.nanmedian(vv[inner]) == pytest.approx(e_vv, abs=2.0), CLASS_NAMES[cls]
        assert np.nanmedian(vh[inner]) == pytest.approx(e_vh, abs=2.0), CLASS_NAMES[cls]
    assert np.nanmedian(vh[cover == WATER]) < np.nanmedian(vh[cover == VEGETATION]) - 8
    # Speckle: the linear values of a homogeneous area scatter like a gamma of a few looks.
    with rasterio.open(_asset(scene, "s1", pre, "vh")) as src:
        linear = src.read(1)
    assert src.nodata == -32768 and (linear > 0).all()
    assert 2.0 < np.nanstd(vh[cover == VEGETATION]) < 4.0  # speckle + texture, in dB


def test_flood_grows_after_the_event(scene: SyntheticScene) -> None:
    cover = _read(scene.landcover)
    label = _read(scene.label)
    pre_water = (cover == WATER).mean()
    event_water = (label == 1).mean()
    assert event_water > pre_water + 0.1
    assert (label[cover == WATER] != 0).all()  # the river stays water
    assert (label[cover == URBAN] != 1).all()  # towns are not flooded
    # The label matches what both sensors see on the event day.
    s1_event = _s1_db_on_s2_grid(scene, pd.Timestamp("2023-10-16T18:05:12"), "vh")
    s1_pre = _s1_db_on_s2_grid(scene, scene.s1_times[0], "vh")
    assert (s1_event < -24).mean() > (s1_pre < -24).mean() + 0.1
    assert np.nanmedian(s1_event[label == 1]) < -25 < -18 < np.nanmedian(s1_event[label == 0])
    event = scene.s2_times[2]
    nir, green = _s2(scene, event, "B08"), _s2(scene, event, "B03")
    ndwi = (green - nir) / (green + nir)
    assert np.median(ndwi[label == 1]) > 0.3 and np.median(ndwi[label == 0]) < -0.3
    assert (label == -1).mean() > 0.005  # nodata under the thick clouds of the event day
    assert np.median(nir[label == -1]) > 0.4
    # Then it recedes.
    later = _s1_db_on_s2_grid(scene, scene.s1_times[4], "vh")
    assert (s1_pre < -24).mean() < (later < -24).mean() < (s1_event < -24).mean()


def test_clouds_are_bright_valid_pixels_and_one_date_has_a_nodata_strip(
    scene: SyntheticScene,
) -> None:
    clear = _s2(scene, scene.s2_times[0], "B02")
    for time, cover in zip(scene.s2_times, scene.s2_cloud_cover, strict=True):
        brighter = _s2(scene, time, "B02") - clear > 0.05
        assert brighter.mean() * 100 == pytest.approx(cover, abs=2.0)
    strip = _read(_asset(scene, "s2", scene.s2_times[4], "B04")) == 0
    assert 0.05 < strip.mean() < 0.3 and strip[:, 0].all() and not strip[:, -1].any()
    for time in scene.s2_times[:4]:
        assert (_read(_asset(scene, "s2", time, "B04")) > 0).all()


def test_stac_catalogue_round_trips_from_another_directory(
    scene: SyntheticScene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    catalog = pystac.Catalog.from_file(str(scene.catalog.resolve()))
    assert sorted(c.id for c in catalog.get_children()) == ["sentinel-1-rtc", "sentinel-2-l2a"]
    items = list(catalog.get_items(recursive=True))
    assert len(items) == 10
    for item in items:
        proj = ProjectionExtension.ext(item)
        assert proj.epsg == 32630 and proj.transform is not None and proj.shape is not None
        for asset in item.assets.values():
            href = asset.get_absolute_href()
            assert href is not None and Path(href).is_file(), href
    s2 = [i for i in items if i.collection_id == "sentinel-2-l2a"]
    assert sorted(pd.Timestamp(i.datetime).tz_localize(None) for i in s2) == list(scene.s2_times)
    b04 = s2[0].assets["B04"]
    assert EOExtension.ext(b04).bands[0].name == "B04"
    assert b04.extra_fields["raster:bands"][0] == {
        "nodata": 0,
        "data_type": "uint16",
        "spatial_resolution": 10.0,
        "scale": 0.0001,
        "offset": -0.1,
    }
    assert s2[0].properties["s2:processing_baseline"] == "05.10"


@pytest.mark.parametrize("name", ["s1_items.json", "s2_items.json"])
def test_item_collection_files(scene: SyntheticScene, name: str) -> None:
    doc = json.loads((scene.root / name).read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 5
    for feature in doc["features"]:
        assert feature["properties"]["proj:epsg"] == 32630
        item = pystac.Item.from_dict(feature)
        again = item.to_dict(include_self_link=False)
        assert again["id"] == feature["id"] and again["bbox"] == feature["bbox"]
        assert again["properties"]["datetime"] == feature["properties"]["datetime"]
        assert again["assets"].keys() == feature["assets"].keys()
        for asset in feature["assets"].values():
            assert not Path(asset["href"]).is_absolute()
            assert (scene.root / asset["href"]).is_file()
    if name == "s1_items.json":
        props = doc["features"][0]["properties"]
        assert doc["features"][0]["collection"] == "sentinel-1-rtc"
        assert props["sar:polarizations"] == ["VV", "VH"]
        vv = doc["features"][0]["assets"]["vv"]["raster:bands"][0]
        assert vv == {"nodata": -32768.0, "data_type": "float32", "spatial_resolution": 10.0}
    else:
        assert doc["features"][0]["collection"] == "sentinel-2-l2a"
        assert list(doc["features"][0]["assets"]) == list(S2_L2A_BANDS)


def test_item_collection_helper(scene: SyntheticScene) -> None:
    items = scene.item_collection("s2")
    assert [pd.Timestamp(i.datetime).tz_localize(None) for i in items] == list(scene.s2_times)
    assert all(Path(a.href).is_absolute() for i in items for a in i.assets.values())
    with pytest.raises(ValueError, match="use 's1' or 's2'"):
        scene.item_collection("s3")  # type: ignore[arg-type]


def test_odc_stac_loads_the_items_onto_the_s2_grid(scene: SyntheticScene) -> None:
    import odc.stac

    ds = odc.stac.load(scene.item_collection("s2"), bands=["B04", "B08"], chunks={})
    assert ds.sizes == {"time": 5, "y": SIZE, "x": SIZE}
    assert ds.odc.geobox.crs.epsg == 32630
    assert tuple(ds.odc.geobox.affine)[:6] == scene.s2_transform
    np.testing.assert_array_equal(
        ds.B08.isel(time=2).values, _read(_asset(scene, "s2", scene.s2_times[2], "B08"))
    )
    assert ds.B04.attrs["nodata"] == 0
    s1 = odc.stac.load(scene.item_collection("s1"), bands=["vv", "vh"], chunks={})
    assert s1.sizes["time"] == 5 and s1.vh.dtype == np.float32
    assert float(np.median(s1.vh.isel(time=0).values)) == pytest.approx(10**-1.4, rel=0.5)
    assert isinstance(s1, xr.Dataset)
