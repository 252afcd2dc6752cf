"""The shipped default weights and the recipe that produces them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import eo_contrast as ec
from eo_contrast.models import DEFAULT_BANDS, DualEncoder
from eo_contrast.models.dual import DEFAULT_WEIGHTS
from eo_contrast.pipelines.default_weights import (
    DEFAULT_RECIPE,
    default_training_data,
    heldout_retrieval,
    main,
    train_default_weights,
)


@pytest.fixture(scope="module")
def default_model() -> DualEncoder:
    return DualEncoder.default()


def test_default_loads_with_metadata(default_model: DualEncoder) -> None:
    m = default_model
    assert not m.training
    assert m.method == "multimodal"
    assert m.bands == {s: list(b) for s, b in DEFAULT_BANDS.items()}
    assert m.units == {"s1": "dB", "s2": "1"}
    assert (m.arch, m.stem, m.width) == ("resnet18", "imagenet", DEFAULT_RECIPE["width"])
    assert "BigEarthNet" in m.trained_on and "synthetic" in m.trained_on
    assert "train split" in m.trained_on
    assert m.info["recipe"] == DEFAULT_RECIPE
    assert m.info["pretrain"]["steps"] == len(m.info["loss_curve"]) > 0
    # the loss went down: mean of the last 20 updates below the first 10
    curve = m.info["loss_curve"]
    assert np.mean(curve[-20:]) < np.mean(curve[:10]) - 0.2


def test_default_file_is_small() -> None:
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    assert sorted(p.name for p in DEFAULT_WEIGHTS.parent.iterdir() if p.is_file()) == [
        "default.safetensors"
    ]


def test_default_embeds_heldout_patches_to_unit_vectors(
    default_model: DualEncoder, shared_data
) -> None:
    held = ec.read_bigearthnet(shared_data / "bigearthnet_v2_subset", split="test")
    x1 = default_model.normalize("s1", held["s1"].values[:4, :, :40, :40], units="dB")
    x2 = default_model.normalize("s2", held["s2"].values[:4, :, :40, :40], units="1")
    with torch.no_grad():
        z1, z2 = default_model.embed("s1", x1), default_model.embed("s2", x2)
    assert z1.shape == z2.shape == (4, 128)
    assert torch.allclose(z1.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(z2.norm(dim=1), torch.ones(4), atol=1e-5)
    # not collapsed: embeddings of different places differ
    assert float((z1 @ z1.T).fill_diagonal_(0).max()) < 0.999


def test_default_beats_random_init_on_heldout_retrieval(
    default_model: DualEncoder, shared_data
) -> None:
    tile = DEFAULT_RECIPE["tile"]
    trained = heldout_retrieval(default_model, shared_data, tile=tile)
    assert trained["n_tiles"] == 16 * (120 // tile) ** 2
    # the scores recorded at training time are reproduced (up to a tie broken otherwise by
    # floating-point differences between machines)
    recorded = default_model.info["heldout_retrieval"]
    for key in ("s1_to_s2_top1", "s2_to_s1_top1", "s1_to_s2_top5", "s2_to_s1_top5"):
        assert trained[key] == pytest.approx(recorded[key], abs=2.5 / trained["n_tiles"])
    random = [
        heldout_retrieval(DualEncoder(width=default_model.width, seed=s), shared_data, tile=tile)
        for s in (0, 1)
    ]
    for key in ("s1_to_s2_top5", "s2_to_s1_top5"):
        base = float(np.mean([r[key] for r in random]))
        assert trained[key] >= base + 0.02, (key, trained[key], base)
    top1 = trained["s1_to_s2_top1"] + trained["s2_to_s1_top1"]
    base1 = float(np.mean([r["s1_to_s2_top1"] + r["s2_to_s1_top1"] for r in random]))
    assert top1 >= base1


def test_training_data_weighs_real_patches_with_dihedral_copies(shared_data) -> None:
    pairs = default_training_data(shared_data, synthetic_seeds=[], bigearthnet_dihedral=True)
    source = [str(s) for s in pairs["source"].values]
    assert len(source) == 8 * 8 and all(s.startswith("bigearthnet:") for s in source)
    assert pairs["s2_band"].values.tolist() == list(DEFAULT_BANDS["s2"])
    assert pairs.sizes["y"] == pairs.sizes["x"] == 120
    # copy k=1 of a patch is the patch rotated by 90 degrees, S1 and S2 alike; k=4 is flipped
    real, rot, flip = pairs.isel(pair=0), pairs.isel(pair=8), pairs.isel(pair=32)
    for v in ("s1", "s2"):
        np.testing.assert_array_equal(rot[v].values, np.rot90(real[v].values, 1, axes=(-2, -1)))
        np.testing.assert_array_equal(flip[v].values, real[v].values[..., ::-1])


def test_recipe_end_to_end_tiny_through_cli(shared_data, tmp_path, capsys, monkeypatch) -> None:
    # tiny budget: 8 real + 4 synthetic patches (one 120 px scene, 4 time pairs), 60 px tiles
    # (4 per patch): 48 tiles -> 3 updates of 16, one epoch
    for key, value in {
        "synthetic_seeds": [7],
        "synthetic_size": 120,
        "tile": 60,
        "batch_size": 16,
        "width": 8,
        "bigearthnet_dihedral": False,
    }.items():
        monkeypatch.setitem(DEFAULT_RECIPE, key, value)  # fmt: skip
    out = tmp_path / "w" / "tiny.safetensors"
    figure = tmp_path / "img" / "loss.png"
    code = main(["--out", str(out), "--data", str(shared_data), "--epochs", "1",
                 "--baseline-seeds", "1", "--figure", str(figure)])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == out.stat().st_size
    assert report["random_init"]["n_seeds"] == 1
    assert report["default"]["n_tiles"] == report["random_init"]["n_tiles"] == 16 * 4
    assert figure.stat().st_size > 1000
    model = DualEncoder.load(out)
    assert model.width == 8 and model.info["recipe"]["synthetic_seeds"] == [7]
    assert model.info["recipe"]["epochs"] == 1
    assert model.info["pretrain"]["steps"] == len(model.info["loss_curve"]) == 3
    assert "8 real S1/S2 patch pairs" in model.trained_on
    assert "4 synthetic S1/S2 patch pairs" in model.trained_on
    assert model.info["heldout_retrieval"] == report["default"]


def test_recipe_refuses_unknown_keys(tmp_path) -> None:
    with pytest.raises(KeyError, match="unknown recipe key"):
        train_default_weights(tmp_path / "x.safetensors", recipe={"epoch": 3})


def test_training_data_refuses_bad_size(shared_data) -> None:
    with pytest.raises(ValueError, match="multiple of 120"):
        default_training_data(shared_data, synthetic_size=100)


def test_missing_bigearthnet_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="BigEarthNet folder"):
        heldout_retrieval(DualEncoder(width=8, seed=0), tmp_path / "nowhere")


def test_default_says_what_to_do_when_the_file_is_missing(tmp_path, monkeypatch) -> None:
    import eo_contrast.models.dual as dual

    monkeypatch.setattr(dual, "DEFAULT_WEIGHTS", tmp_path / "weights" / "default.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing from this installation.*default_weights"):
        DualEncoder.default()
