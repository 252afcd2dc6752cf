"""Segmentation: fit a decoder on dense features, save/load, freezing, determinism, bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import torch
import xarray as xr

import eo_contrast as ec
from eo_contrast.metrics import water_iou
from eo_contrast.models import CheckpointError, DualEncoder, read_checkpoint, write_checkpoint
from eo_contrast.segmentation import SegmentationModel, fit_segmentation

torch.set_num_threads(1)

FAST = {"tile": 32, "batch_size": 8, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The synthetic flood scene: S2 and (dB) S1 on the S2 grid at the event, and its label."""
    scn = ec.synthetic_scene(tmp_path_factory.mktemp("scene"), size=128)
    s1 = ec.load_stac(scn.item_collection("s1"))
    s2 = ec.load_stac(scn.item_collection("s2"))
    pairs = ec.pair(s1, s2)  # load_stac gives S1 in dB
    event = scn.event_time.normalize()
    idx = int(np.flatnonzero(pairs["s2_time"].dt.floor("D").values == np.datetime64(event))[0])
    pair = pairs.isel(pair=idx).compute()
    label = rioxarray.open_rasterio(scn.label).squeeze("band", drop=True).astype("int16")
    s2_event = s2.sel(time=s2.time.dt.floor("D") == np.datetime64(event)).compute()
    return {"pair": pair, "s2": s2_event, "label": label, "s1": s1.isel(time=[0])}


@pytest.fixture(scope="module")
def encoder() -> DualEncoder:
    return DualEncoder(width=8, seed=0)


@pytest.fixture(scope="module")
def s2_model(scene: dict, encoder: DualEncoder) -> SegmentationModel:
    return fit_segmentation(
        scene["s2"],
        scene["label"],
        encoder=encoder,
        classes=["dry", "water"],
        epochs=4,
        class_weights="balanced",
        **FAST,
    )


def _accuracy(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    m = label >= 0
    majority = max(np.mean(label[m] == k) for k in np.unique(label[m]))
    return float(np.mean(pred[m] == label[m])), float(majority)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_s2_learns_water(s2_model: SegmentationModel, scene: dict) -> None:
    hist = s2_model.history
    assert list(hist.columns) == ["step", "epoch", "loss"]
    assert hist["step"].tolist() == list(range(len(hist)))
    by_epoch = hist.groupby("epoch")["loss"].mean()
    assert by_epoch.iloc[-1] < 0.8 * by_epoch.iloc[0]
    assert s2_model.sensors == ("s2",) and s2_model.classes == ["dry", "water"]
    assert s2_model.bands["s2"] == DualEncoder().bands["s2"]
    pred = s2_model.predict({"s2": scene["s2"].isel(time=0).values})
    acc, majority = _accuracy(pred, scene["label"].values)
    assert acc > majority + 0.05, (acc, majority)
    # predict gives probabilities that sum to one
    prob = s2_model.predict(
        {"s2": scene["s2"].isel(time=0).values[:, :40, :40]}, probabilities=True
    )
    assert prob.shape == (2, 40, 40)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, rtol=1e-5)
    # balanced weights: inverse class frequency, weighted mean 1 over labelled pixels
    info = s2_model.training_info
    counts, weights = np.array(info["class_pixels"]), np.array(info["class_weights"])
    assert weights[1] > weights[0]
    assert np.isclose((counts * weights).sum() / counts.sum(), 1.0)


def test_fit_s1_s2_fusion_from_pairs(scene: dict, encoder: DualEncoder) -> None:
    seg = fit_segmentation(
        scene["pair"], scene["label"], encoder=encoder, classes=["dry", "water"], epochs=3, **FAST
    )
    assert seg.sensors == ("s1", "s2")
    fused = [c1 + c2 for c1, c2 in zip(*(encoder.encoder(s).feature_channels for s in ["s1", "s2"]), strict=True)]  # fmt: skip
    assert list(seg.head.feature_channels) == fused
    by_epoch = seg.history.groupby("epoch")["loss"].mean()
    assert by_epoch.iloc[-1] < by_epoch.iloc[0]
    pair = scene["pair"]
    pred = seg.predict({"s1": pair["s1"].values, "s2": pair["s2"].values})
    acc, majority = _accuracy(pred, scene["label"].values)
    assert acc > majority, (acc, majority)
    # the same Dataset restricted to one sensor
    only_s1 = fit_segmentation(
        pair, scene["label"], encoder=encoder, sensors=["s1"], epochs=1, **FAST
    )
    assert only_s1.sensors == ("s1",) and only_s1.classes == ["class_0", "class_1"]


def test_save_load_round_trip(s2_model: SegmentationModel, scene: dict, tmp_path: Path) -> None:
    path = s2_model.save(tmp_path / "seg.safetensors")
    again = SegmentationModel.load(path)
    assert again.classes == s2_model.classes and again.sensors == s2_model.sensors
    assert again.tile == 32 and again.frozen and not again.training
    assert again.metadata["training"] == s2_model.metadata["training"]
    assert again.history.equals(s2_model.history)
    x = scene["s2"].isel(time=0).values
    np.testing.assert_array_equal(again.predict({"s2": x}), s2_model.predict({"s2": x}))
    inputs = {"s2": s2_model.normalize("s2", x[None, :, :32, :32])}
    with torch.no_grad():
        assert torch.equal(again(inputs), s2_model.eval()(inputs))
    # the file is safetensors with the JSON metadata, no pickle
    tensors, meta = read_checkpoint(path)
    assert meta["format"] == "eo-contrast.segmentation" and meta["classes"] == ["dry", "water"]
    assert meta["encoder"]["bands"]["s2"] == s2_model.bands["s2"]
    assert any(k.startswith("head.") for k in tensors)


def test_load_refuses_mismatches(
    s2_model: SegmentationModel, encoder: DualEncoder, tmp_path: Path
) -> None:
    enc_path = encoder.save(tmp_path / "enc.safetensors")
    with pytest.raises(CheckpointError, match=r"DualEncoder checkpoint.*DualEncoder.load"):
        SegmentationModel.load(enc_path)
    tensors, meta = read_checkpoint(s2_model.save(tmp_path / "seg.safetensors"))
    bad = write_checkpoint(
        tmp_path / "bad.safetensors", tensors, {**meta, "classes": ["a", "b", "c"]}
    )
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        SegmentationModel.load(bad)
    future = write_checkpoint(tmp_path / "f.safetensors", tensors, {**meta, "format_version": 99})
    with pytest.raises(CheckpointError, match="format_version 99"):
        SegmentationModel.load(future)
    torch.save(s2_model.state_dict(), tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        SegmentationModel.load(tmp_path / "pickle.pt")


def test_freeze_encoder(scene: dict, encoder: DualEncoder, s2_model: SegmentationModel) -> None:
    before = _state(encoder)
    assert _states_equal(_state(s2_model.encoder), before)  # frozen: encoder untouched
    assert all(not p.requires_grad for p in s2_model.encoder.parameters())
    crop = scene["s2"].isel(y=slice(0, 64), x=slice(0, 64))
    label = scene["label"].isel(y=slice(0, 64), x=slice(0, 64))
    tuned = fit_segmentation(crop, label, encoder=encoder, freeze_encoder=False, epochs=1, **FAST)
    changed = [k for k, v in _state(tuned.encoder).items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoders.s2.") for k in changed)
    assert not any(k.startswith("encoders.s1.") for k in changed)  # unused sensor: no change
    assert _states_equal(_state(encoder), before)  # the encoder passed in is never modified


def test_deterministic(scene: dict, encoder: DualEncoder) -> None:
    crop = scene["s2"].isel(y=slice(0, 64), x=slice(0, 64))
    label = scene["label"].isel(y=slice(0, 64), x=slice(0, 64))
    runs = [
        fit_segmentation(crop, label, encoder=encoder, epochs=2, seed=s, **FAST) for s in (3, 3, 4)
    ]
    assert _states_equal(_state(runs[0]), _state(runs[1]))
    assert runs[0].history.equals(runs[1].history)
    assert not _states_equal(_state(runs[0].head), _state(runs[2].head))


# ----------------------------------------------------------------------------- bad input
def test_labels_on_another_grid(scene: dict, encoder: DualEncoder) -> None:
    shifted = scene["label"].assign_coords(x=scene["label"].x + 10.0)
    with pytest.raises(ValueError, match=r"another grid than the cube: labels \(128 x 128.*cube"):
        fit_segmentation(scene["s2"], shifted, encoder=encoder, **FAST)
    with pytest.raises(ValueError, match="another grid"):
        fit_segmentation(scene["s2"], scene["label"].isel(x=slice(0, 100)), encoder=encoder, **FAST)
    other_crs = scene["label"].rio.write_crs("EPSG:4326")
    with pytest.raises(ValueError, match=r"another grid.*EPSG:4326"):
        fit_segmentation(scene["s2"], other_crs, encoder=encoder, **FAST)


def test_label_values_outside_classes(scene: dict, encoder: DualEncoder) -> None:
    label = scene["label"].copy()
    label[0, 0] = 2
    with pytest.raises(ValueError, match=r"values \[2\] outside the classes \['dry', 'water'\]"):
        fit_segmentation(scene["s2"], label, encoder=encoder, classes=["dry", "water"], **FAST)


def test_no_labelled_pixels(scene: dict, encoder: DualEncoder) -> None:
    empty = xr.full_like(scene["label"], -1)
    with pytest.raises(ValueError, match="no labelled pixel"):
        fit_segmentation(scene["s2"], empty, encoder=encoder, **FAST)
    with pytest.raises(ValueError, match="no labelled pixel with valid input"):
        fit_segmentation(
            xr.full_like(scene["s2"], np.nan),
            scene["label"],
            encoder=encoder,
            classes=["a", "b"],
            **FAST,
        )


def test_bands_match_neither_encoder(scene: dict, encoder: DualEncoder) -> None:
    partial = scene["s2"].sel(band=["B02", "B03", "B04"])
    with pytest.raises(
        ValueError,
        match=r"match neither encoder.*s1 encoder expects \['vv', 'vh'\].*s2 encoder expects",
    ):
        fit_segmentation(partial, scene["label"], encoder=encoder, **FAST)
    with pytest.raises(ValueError, match=r"sensors=\['s1'\] but the cube provides \['s2'\]"):
        fit_segmentation(scene["s2"], scene["label"], encoder=encoder, sensors=["s1"], **FAST)


def test_units_mismatch(scene: dict, encoder: DualEncoder) -> None:
    s1 = ec.db_to_linear(scene["s1"]).assign_coords(units=("band", ["linear", "linear"]))
    label = xr.zeros_like(s1.isel(time=0, band=0), dtype="int16")
    with pytest.raises(ValueError, match=r"expects 'dB'.*linear_to_db"):
        fit_segmentation(s1, label, encoder=encoder, **FAST)


def test_tile_larger_than_cube(scene: dict, encoder: DualEncoder) -> None:
    small = scene["s2"].isel(y=slice(0, 20), x=slice(0, 40))
    label = scene["label"].isel(y=slice(0, 20), x=slice(0, 40))
    with pytest.raises(ValueError, match=r"tile=32 is larger than the cube \(20 x 40 pixels\)"):
        fit_segmentation(small, label, encoder=encoder, **FAST)


# ----------------------------------------------------------------------------- real data
def test_flood_experiment_sen1floods11(shared_data: Path) -> None:
    """West half trains, east half scores: S1 features find the flood water on a real chip."""
    from eo_contrast.pipelines.flood_demo import flood_experiment, water_iou

    res = flood_experiment(
        shared_data / "sen1floods11_spain",
        encoder=DualEncoder(width=8, seed=0),
        settings=["s1"],
        epochs=1,  # one epoch: MIN_STEPS_PER_EPOCH updates
        tile=32,
        batch_size=16,
        device="cpu",
    )
    assert res.split == "train: x columns [0, 256) (west); test: x columns [256, 512) (east)"
    pred = res.predictions["s1"]
    assert pred.shape == (512, 256) and set(np.unique(pred)) <= {0, 1}
    label = ec.read_sen1floods11(shared_data / "sen1floods11_spain", "Spain_7370579").label
    assert res.iou["s1"] == water_iou(pred, label.values[:, 256:])
    assert res.iou["s1"] > 0.5  # water is ~27 % of the chip: an empty or random map scores < 0.3
    assert 0.5 < res.baseline_iou < 1 and -30 < res.baseline_threshold < -10


# ----------------------------------------------------------------------------- many chips
def _chip(cube: xr.DataArray, label: xr.DataArray, name: str) -> tuple[xr.DataArray, xr.DataArray]:
    cube, label = cube.copy(), label.copy()
    cube.attrs["chip"] = label.attrs["chip"] = name
    return cube, label


@pytest.fixture(scope="module")
def chips(scene: dict) -> list[tuple[xr.DataArray, xr.DataArray]]:
    """Three S1 chips of the flood scene, each on its own grid: two UTM windows, one in EPSG:4326."""
    from rasterio.enums import Resampling

    s1 = scene["pair"]["s1"].rename(s1_band="band", s1_units="units").compute()
    s1 = s1.rio.write_crs(scene["s2"].rio.crs)
    label = scene["label"]
    west = _chip(s1.isel(x=slice(0, 64)), label.isel(x=slice(0, 64)), "west")
    east = _chip(s1.isel(x=slice(64, None)), label.isel(x=slice(64, None)), "east")
    geo = s1.rio.reproject("EPSG:4326", nodata=np.nan)
    geo_label = label.rio.reproject_match(geo, resampling=Resampling.nearest, nodata=-1)
    return [west, east, _chip(geo, geo_label.astype("int16"), "geographic")]


def test_fit_on_a_list_of_chips_on_their_own_grids(chips: list, encoder: DualEncoder) -> None:
    cubes, labels = [c for c, _ in chips], [lab for _, lab in chips]
    assert len({str(c.rio.crs) for c in cubes}) == 2 and cubes[0].sizes != cubes[2].sizes
    seg = fit_segmentation(
        cubes, labels, encoder=encoder, classes=["dry", "water"], epochs=2, **FAST
    )
    info = seg.training_info
    assert info["chips"] == 3 and info["chip_names"] == ["west", "east", "geographic"]
    assert info["labelled_pixels"] == sum(int((lab.values >= 0).sum()) for lab in labels)
    assert len(info["grid"]) == 3 and info["grid"][2]["height"] == cubes[2].sizes["y"]
    assert info["chip_reads"] == 3 and info["peak_chips_in_memory"] == 3  # each chip read once
    for cube, lab in chips:  # water found on every chip, each on its own grid
        pred = seg.predict({"s1": cube.values})
        print(cube.attrs["chip"], water_iou(pred, lab.values))
        assert water_iou(pred, lab.values) > 0.6


def test_chips_in_memory_bounds_the_chips_held(chips: list, encoder: DualEncoder) -> None:
    cubes, labels = [c for c, _ in chips] * 2, [lab for _, lab in chips] * 2
    seg = fit_segmentation(cubes, labels, encoder=encoder, epochs=2, chips_in_memory=2, **FAST)
    info = seg.training_info
    assert info["chips"] == 6 and info["peak_chips_in_memory"] == 2
    # six chips read in the survey, then each chip at most once per epoch
    assert 6 < info["chip_reads"] <= 6 + 2 * 6


def test_tiles_are_drawn_in_proportion_to_usable_area() -> None:
    from eo_contrast.segmentation import _Chip, _plan_epoch

    big, small = _Chip(0, "big", None, None), _Chip(1, "small", None, None)
    big.n_positions, small.n_positions = 3000, 1000
    plan = _plan_epoch([big, small], 8000, 1, np.random.default_rng(0))
    share = np.mean([c == 0 for c, _ in plan])
    assert len(plan) == 8000 and abs(share - 0.75) < 0.02
    assert max(p for c, p in plan if c == 1) < 1000  # positions drawn within each chip
    # grouped by chip: with one chip in memory the plan switches chip once
    assert sum(a[0] != b[0] for a, b in itertools.pairwise(plan)) == 1


def test_an_epoch_is_at_least_min_steps(scene: dict, encoder: DualEncoder) -> None:
    from eo_contrast.segmentation import MIN_STEPS_PER_EPOCH

    crop = scene["s2"].isel(y=slice(0, 40), x=slice(0, 40))
    label = scene["label"].isel(y=slice(0, 40), x=slice(0, 40))
    seg = fit_segmentation(crop, label, encoder=encoder, epochs=2, **FAST)
    assert len(seg.history) == 2 * MIN_STEPS_PER_EPOCH
    assert seg.training_info["steps_per_epoch"] == MIN_STEPS_PER_EPOCH
    assert seg.training_info["tiles_per_epoch"] == MIN_STEPS_PER_EPOCH * FAST["batch_size"]


def test_a_short_fit_on_a_small_area_is_usable(scene: dict, encoder: DualEncoder) -> None:
    """Half the scene labelled (128 x 64 px) and three epochs: a usable flood map already."""
    s1 = scene["pair"]["s1"]
    half = scene["pair"][["s1"]].isel(x=slice(0, 64))
    vv = s1.sel(s1_band="vv").values
    label = scene["label"].values
    threshold = max(water_iou((vv < t).astype(int), label) for t in range(-25, -10))
    seg = fit_segmentation(
        half, scene["label"].isel(x=slice(0, 64)), encoder=encoder, epochs=3, **FAST
    )
    iou = water_iou(seg.predict({"s1": s1.values})[:, 64:], label[:, 64:])
    assert iou > 0.8 and iou > threshold - 0.1, (iou, threshold)


def test_the_decoder_keeps_full_resolution(encoder: DualEncoder) -> None:
    """One-pixel stripes of water: what a per-pixel threshold sees, the UNet decoder sees too."""
    rng = np.random.default_rng(0)
    water = np.zeros((64, 64), dtype="i2")
    water[:, ::3] = 1
    vv = np.where(water == 1, -22.0, -8.0) + rng.normal(0, 1, water.shape)
    cube = xr.DataArray(np.stack([vv, vv - 7]).astype("f4"), dims=("band", "y", "x"),
                        coords={"band": ["vv", "vh"], "y": np.arange(64), "x": np.arange(64)})  # fmt: skip
    labels = xr.DataArray(water, dims=("y", "x"), coords={"y": cube.y, "x": cube.x})
    ious = {}
    for decoder in ("unet", "fpn"):
        seg = fit_segmentation(cube, labels, encoder=encoder, decoder=decoder, epochs=2, **FAST)
        assert seg.decoder == decoder
        ious[decoder] = water_iou(seg.predict({"s1": cube.values}), water)
    assert ious["unet"] > 0.95 > ious["fpn"] + 0.2, ious


def test_format_version_1_models_still_load(encoder: DualEncoder, tmp_path: Path) -> None:
    from eo_contrast.segmentation import FORMAT_VERSION

    old = SegmentationModel(encoder, ["dry", "water"], sensors=["s1"], tile=32, decoder="fpn")
    tensors, meta = read_checkpoint(old.save(tmp_path / "v1.safetensors"))
    assert meta["format_version"] == 1 and FORMAT_VERSION == 2
    again = SegmentationModel.load(tmp_path / "v1.safetensors")
    assert again.decoder == "fpn" and type(again.head) is type(old.head)
    x = np.full((2, 32, 32), -12.0, "float32")
    np.testing.assert_array_equal(again.predict({"s1": x}), old.predict({"s1": x}))
    # a version-1 file written before the decoder had a name
    meta1 = {k: v for k, v in meta.items()}
    meta1["decoder"] = {k: v for k, v in meta["decoder"].items() if k != "name"}
    write_checkpoint(tmp_path / "v1-plain.safetensors", tensors, meta1)
    assert SegmentationModel.load(tmp_path / "v1-plain.safetensors").decoder == "fpn"
    # a UNet decoder claimed under version 1 is refused, naming the versions
    bad = {**meta, "decoder": {**meta["decoder"], "name": "unet"}}
    write_checkpoint(tmp_path / "bad.safetensors", tensors, bad)
    with pytest.raises(CheckpointError, match=r"format_version 1"):
        SegmentationModel.load(tmp_path / "bad.safetensors")


def test_chip_errors_name_the_chip(chips: list, encoder: DualEncoder) -> None:
    cubes, labels = [c for c, _ in chips], [lab for _, lab in chips]
    with pytest.raises(ValueError, match=r"unequal length \(3 cubes, 2 labels\)"):
        fit_segmentation(cubes, labels[:2], encoder=encoder, **FAST)
    with pytest.raises(ValueError, match=r"cube is a list but the other is not"):
        fit_segmentation(cubes, labels[0], encoder=encoder, **FAST)
    off = [labels[0], labels[0], labels[2]]  # the east chip gets the west chip's label
    with pytest.raises(ValueError, match=r"^chip 1 \(east\): labels are on another grid"):
        fit_segmentation(cubes, off, encoder=encoder, **FAST)
    small = [cubes[0], cubes[1].isel(y=slice(0, 20)), cubes[2]]
    small_labels = [labels[0], labels[1].isel(y=slice(0, 20)), labels[2]]
    with pytest.raises(ValueError, match=r"^chip 1 \(east\): tile=32 is larger than the cube "):
        fit_segmentation(small, small_labels, encoder=encoder, **FAST)
    linear = [cubes[0], cubes[1], ec.db_to_linear(cubes[2])]  # units coordinate still says dB
    with pytest.raises(ec.UnitsError, match=r"chip 2 \(geographic\).*linear_to_db"):
        fit_segmentation(linear, labels, encoder=encoder, **FAST)


def test_vh_threshold_fit_pools_chips_and_misses_nan_water() -> None:
    from eo_contrast.pipelines.flood_demo import (
        fit_vh_threshold,
        vh_threshold_baseline,
        vh_threshold_map,
    )

    # water with NaN VH stays in the union: the best threshold still takes both dark pixels
    vh, label = np.array([np.nan, -25.0, -12.0]), np.array([1, 1, 0])
    assert fit_vh_threshold([vh], [label]) == -24.75
    thr, pred = vh_threshold_baseline(vh, label, vh)
    assert thr == -24.75 and pred.tolist() == [-1, 1, 0]
    assert vh_threshold_map(vh, thr).dtype == np.int16
    # pooled over chips: one threshold for the summed counts, not the best of each chip
    chips = [np.array([-27.0, -22.0]), np.array([-21.0, -16.0])]
    labels = [np.array([1, 0]), np.array([1, 0])]
    assert fit_vh_threshold(chips, labels) == -20.75
