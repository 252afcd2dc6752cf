"""Contrastive pretraining: learning, determinism, resumable checkpoints, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

import eo_contrast as ec  # noqa: E402
from eo_contrast.models import BAND_STATS, DualEncoder, read_checkpoint  # noqa: E402
from eo_contrast.training import STATE_FORMAT, pretrain, retrieval_accuracy  # noqa: E402

torch.set_num_threads(1)  # stable speed on small CI machines

COLUMNS = ["step", "epoch", "loss", "lr", "temperature", "pairs_per_s"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """The synthetic flood scene, paired through the STAC path (lazy, 4 pairs, 256 x 256)."""
    root = tmp_path_factory.mktemp("scene")
    ec.synthetic_scene(root, size=256)
    s1 = ec.load_stac(root / "s1_items.json")
    s2 = ec.load_stac(root / "s2_items.json")
    return ec.pair(s1, s2)


@pytest.fixture(scope="module")
def small(scene: xr.Dataset) -> xr.Dataset:
    """Two pairs of 64 x 48 pixels, in memory: 24 tiles of 16 px, 3 batches of 8 per epoch."""
    return scene.isel(pair=[0, 1], y=slice(0, 64), x=slice(0, 48)).load()


def _weights(model: DualEncoder) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _same_weights(a: DualEncoder, b: DualEncoder) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _run(data: xr.Dataset, **kwargs: object) -> DualEncoder:
    opts: dict[str, object] = {
        "tile": 16,
        "batch_size": 8,
        "epochs": 2,
        "device": "cpu",
        "progress": False,
        "seed": 3,
        "log_every": 2,
    }
    opts.update(kwargs)
    return pretrain(data, **opts)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# It learns
# --------------------------------------------------------------------------------------------


def test_pretrain_learns_cross_modal_retrieval(scene: xr.Dataset) -> None:
    # train on the western 160 columns, evaluate on the eastern 96 (never seen), one date
    train = scene.isel(x=slice(0, 160))
    held_out = scene.isel(x=slice(160, 256), pair=[2])
    before = retrieval_accuracy(DualEncoder(seed=0), held_out, tile=32, device="cpu")
    model = pretrain(train, tile=32, batch_size=16, epochs=4, device="cpu", progress=False)
    after = retrieval_accuracy(model, held_out, tile=32, device="cpu")

    hist = model.history
    assert list(hist.columns) == COLUMNS
    assert hist["step"].tolist() == list(range(1, 41))  # 4 pairs x 8 x 5 tiles / 16, 4 epochs
    assert hist["epoch"].tolist() == [e for e in range(4) for _ in range(10)]
    first, last = hist["loss"].iloc[:5].mean(), hist["loss"].iloc[-5:].mean()
    assert first > 2.4  # about log(16) = 2.77 at the start
    assert last < 0.7 * first
    assert hist["temperature"].iloc[0] == pytest.approx(0.07, rel=1e-3)
    assert (hist["pairs_per_s"] > 0).all()

    assert after["n_tiles"] == 24 and after["chance_top1"] == pytest.approx(1 / 24)
    assert after["s1_to_s2_top1"] >= 4 * after["chance_top1"]
    assert after["s1_to_s2_top5"] >= 0.5
    assert after["s2_to_s1_top5"] >= 0.5
    assert after["s1_to_s2_top5"] > before["s1_to_s2_top5"]

    assert model.method == "multimodal" and not model.training
    assert model.bands["s1"] == ["vv", "vh"] and len(model.bands["s2"]) == 12
    assert model.trained_on.startswith("4 pair(s) of 256x160 px")
    assert "EPSG:32630" in model.trained_on
    info = model.info["pretrain"]
    assert info["method"] == "multimodal" and info["steps"] == 40 and info["tile"] == 32
    assert model.info["tiles"] == "640 of 640 tiles kept"


# --------------------------------------------------------------------------------------------
# Schedule, log, continuing a model
# --------------------------------------------------------------------------------------------


def test_history_schedule_and_continue_from_model(small: xr.Dataset) -> None:
    model = _run(small, epochs=2, warmup_steps=2, lr=1e-3)
    hist = model.history
    assert hist["step"].tolist() == list(range(1, 7))
    assert hist["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    lrs = hist["lr"].to_numpy()
    np.testing.assert_allclose(lrs[:2], [5e-4, 1e-3])  # linear warm-up over 2 updates
    expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(lrs[2:], expected, rtol=1e-12)  # cosine towards 0 at step 6
    assert np.isfinite(hist["loss"]).all()
    assert model.info["pretrain"]["planned_steps"] == 6

    before = _weights(model)
    again = _run(small, epochs=1, model=model)
    assert again is model and len(again.history) == 3
    assert again.trained_on.count("2 pair(s) of 64x48 px") == 2  # first run; then this one
    assert not torch.equal(before["logit_scale"], _weights(again)["logit_scale"])
    with pytest.raises(ValueError, match="model was built for method='multimodal'"):
        _run(small, method="simclr", model=model)


def test_max_steps_stops_inside_an_epoch_and_plans_the_schedule_over_it(
    small: xr.Dataset, tmp_path: Path
) -> None:
    # 3 batches per epoch, 2 epochs planned: max_steps=4 stops after the first batch of epoch 1
    ckpt = tmp_path / "capped"
    model = _run(small, max_steps=4, warmup_steps=1, checkpoint_dir=ckpt)
    hist = model.history
    assert hist["step"].tolist() == [1, 2, 3, 4]
    assert hist["epoch"].tolist() == [0, 0, 0, 1]
    assert model.info["pretrain"]["planned_steps"] == 4
    assert model.info["pretrain"]["steps"] == 4
    expected = [1e-3] + [1e-3 * 0.5 * (1 + np.cos(np.pi * k / 3)) for k in range(3)]
    np.testing.assert_allclose(hist["lr"].to_numpy(), expected, rtol=1e-12)
    # a checkpoint where it stopped (end of epoch 0, then 1 batch of epoch 1), and resuming it
    # with the same budget changes nothing
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == ["step-00000003.safetensors", "step-00000004.safetensors"]
    _, meta = read_checkpoint(ckpt / "step-00000004.safetensors")
    assert meta["state"] == {"step": 4, "epoch": 1, "batch_in_epoch": 1}
    same = _run(small, max_steps=4, warmup_steps=1, resume=ckpt)
    assert same.history["step"].tolist() == [1, 2, 3, 4] and _same_weights(same, model)

    # a budget larger than the epochs: the epochs decide
    assert len(_run(small, epochs=1, max_steps=50).history) == 3
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        _run(small, max_steps=0)


def test_resume_inside_a_capped_run_reproduces_it(small: xr.Dataset, tmp_path: Path) -> None:
    cols = ["step", "epoch", "loss", "lr", "temperature"]
    full = _run(small, max_steps=5, checkpoint_dir=tmp_path, checkpoint_every=2)
    resumed = _run(small, max_steps=5, resume=tmp_path / "step-00000002.safetensors")
    assert resumed.history[cols].equals(full.history[cols])
    assert _same_weights(resumed, full)


# --------------------------------------------------------------------------------------------
# Determinism, checkpoints, resume
# --------------------------------------------------------------------------------------------


def test_deterministic_checkpoints_and_resume_multimodal(small: xr.Dataset, tmp_path: Path) -> None:
    ckpt = tmp_path / "run"
    full = _run(small, checkpoint_dir=ckpt, checkpoint_every=3, keep_checkpoints=None)
    again = _run(small)
    cols = ["step", "epoch", "loss", "lr", "temperature"]
    assert full.history[cols].equals(again.history[cols])
    assert _same_weights(full, again)

    files = sorted(p.name for p in ckpt.iterdir())  # no temporary file left behind
    assert files == [f"step-0000000{k}.safetensors" for k in (3, 6)]

    # resume after the last update of epoch 0: goes on as if never stopped (mid-epoch: simclr)
    resumed = _run(small, resume=ckpt / "step-00000003.safetensors")
    assert resumed.history[cols].equals(full.history[cols])
    assert _same_weights(resumed, full)

    # the checkpoint: safetensors (no pickle) with the optimizer state, JSON for the rest
    raw = (ckpt / "step-00000003.safetensors").read_bytes()
    assert raw[:2] != b"PK" and raw[8:9] == b"{"
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    assert "optim/0/exp_avg" in header and "optim/0/exp_avg_sq" in header
    tensors, meta = read_checkpoint(ckpt / "step-00000003.safetensors")
    assert meta["format"] == STATE_FORMAT
    assert meta["state"] == {"step": 3, "epoch": 0, "batch_in_epoch": 3}
    assert meta["config"]["tile"] == 16 and meta["model"]["method"] == "multimodal"
    assert meta["history"]["step"] == [1, 2, 3]
    assert meta["history"]["loss"] == full.history["loss"].iloc[:3].tolist()
    assert float(tensors["optim/0/step"]) == 3.0
    assert any(k.startswith("model/encoders.s1.") for k in tensors)

    # refusals
    with pytest.raises(ValueError, match=r"different configuration \(tile: checkpoint 16 vs now"):
        _run(small, tile=32, resume=ckpt)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        _run(small, resume=tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="folder without training checkpoints"):
        _run(small, resume=tmp_path)
    model_file = DualEncoder({"s1": ["vv", "vh"]}, seed=0).save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        _run(small, resume=model_file)


def test_deterministic_and_resume_simclr(small: xr.Dataset, tmp_path: Path) -> None:
    full = _run(small, method="simclr", epochs=1, checkpoint_dir=tmp_path, checkpoint_every=2)
    again = _run(small, method="simclr", epochs=1)
    cols = ["step", "epoch", "loss", "lr", "temperature"]
    assert full.history[cols].equals(again.history[cols])
    assert _same_weights(full, again)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000002.safetensors",
        "step-00000003.safetensors",
    ]
    # mid-epoch (update 2 of 3); the augmentation generator's state is restored too
    resumed = _run(small, method="simclr", epochs=1, resume=tmp_path / "step-00000002.safetensors")
    assert resumed.history[cols].equals(full.history[cols])
    assert _same_weights(resumed, full)
    other_seed = _run(small, method="simclr", epochs=1, seed=4)
    assert not other_seed.history["loss"].equals(full.history["loss"])


# --------------------------------------------------------------------------------------------
# Bands and statistics
# --------------------------------------------------------------------------------------------


def test_simclr_single_sensor_and_sampled_statistics(small: xr.Dataset) -> None:
    # only S2 is needed; one band renamed to a name without default statistics
    s2 = small[["s2"]].isel(s2_band=[3, 2, 1])
    s2 = s2.assign_coords(s2_band=["B04", "B03", "custom"])
    model = _run(s2, method="simclr", epochs=1, progress=True)
    assert model.method == "simclr" and model.sensors == ("s2",)
    assert model.bands == {"s2": ["B04", "B03", "custom"]}
    norm = model.normalization["s2"]
    assert norm["mean"][0] == pytest.approx(BAND_STATS["B04"][0])
    values = small["s2"].sel(s2_band="B02").values
    assert norm["mean"][2] == pytest.approx(float(np.nanmean(values)), rel=1e-4)
    assert norm["std"][2] == pytest.approx(float(np.nanstd(values)), rel=1e-4)
    assert len(model.history) == 3 and np.isfinite(model.history["loss"]).all()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_variables_are_named(small: xr.Dataset) -> None:
    with pytest.raises(ValueError, match=r"lacks variable\(s\) \['s1'\] needed by method='multi"):
        _run(small[["s2"]])
    with pytest.raises(ValueError, match=r"lacks variable\(s\) \['s1'\] needed by method='simclr'"):
        _run(small[["s2"]], method="simclr", sensor="s1")
    with pytest.raises(TypeError, match=r"needs a paired xarray\.Dataset"):
        _run(small["s1"])


def test_tile_larger_than_cube(small: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="tile=128 is larger than the cube: it has y=64 and x=48"):
        _run(small, tile=128)


def test_all_tiles_invalid(small: xr.Dataset) -> None:
    bad = small.copy()
    bad["s2"] = bad["s2"].where(bad["x"] >= bad["x"][44])  # only the last 4 columns valid
    with pytest.raises(
        ValueError, match=r"all 24 tiles were dropped because more than 50%.*s2: 24"
    ):
        _run(bad)


def test_unknown_method_encoder_units(small: xr.Dataset) -> None:
    with pytest.raises(ValueError, match=r"unknown method 'byol'; choose one of \['multimodal'"):
        _run(small, method="byol")
    with pytest.raises(ValueError, match=r"unknown encoder 'vit'; choose one of \['resnet18'"):
        _run(small, encoder="vit")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2"):
        _run(small, batch_size=1)
    linear = small.assign_coords(s1_units=("s1_band", ["linear", "linear"]))
    with pytest.raises(ValueError, match=r"s1 is in units 'linear'.*linear_to_db"):
        _run(linear)


def test_retrieval_needs_two_sensors(small: xr.Dataset) -> None:
    with pytest.raises(ValueError, match=r"no encoder for \['s1'\]"):
        retrieval_accuracy(DualEncoder({"s2": ["B04"]}, seed=0), small, tile=16, device="cpu")
