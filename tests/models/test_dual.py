"""DualEncoder: metadata, normalisation, embeddings, single-sensor models, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eo_contrast.models import BAND_STATS, DEFAULT_BANDS, DualEncoder, ResNetEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


S2_L2A = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


@pytest.fixture(scope="module")
def model() -> DualEncoder:
    return DualEncoder(seed=0).eval()


def test_default_metadata(model):
    assert model.bands == {"s1": ["vv", "vh"], "s2": S2_L2A}
    assert model.units == {"s1": "dB", "s2": "1"}
    assert model.sensors == ("s1", "s2")
    assert model.method == "multimodal"
    norm = model.normalization
    assert norm["s1"]["mean"] == pytest.approx([-12.548473, -20.192371])
    assert norm["s1"]["std"] == pytest.approx([5.256977, 5.911509])
    # S2 reflectance statistics are in 0..1 units
    assert all(0 < m < 0.3 for m in norm["s2"]["mean"])
    assert all(0.1 < s < 0.2 for s in norm["s2"]["std"])
    meta = model.metadata
    assert meta["architecture"] == {
        "name": "resnet18",
        "stem": "imagenet",
        "width": 64,
        "feature_dim": 512,
        "embed_dim": 128,
        "proj_hidden": 512,
    }
    assert meta["format"] == "eo-contrast.dual-encoder" and meta["format_version"] == 1
    assert meta["trained_on"] == "untrained" and isinstance(meta["version"], str)
    # copies: editing them does not change the model
    model.bands["s1"].append("hh")
    assert model.bands["s1"] == ["vv", "vh"]


def test_normalize_numpy_and_torch(model):
    x = np.full((3, 2, 2, 4, 4), -12.548473, dtype=np.float32)  # (time, batch, C, H, W)
    x[:, :, 1] = -20.192371 + 5.911509  # one std above the VH mean
    x[0, 0, 0, 0, 0] = np.nan
    x[0, 0, 1, 0, 0] = -np.inf  # e.g. 10*log10(0)
    out = model.normalize("s1", x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.isfinite(out).all()
    assert float(out[0, 0, 0, 0, 0]) == 0.0 and float(out[0, 0, 1, 0, 0]) == 0.0
    torch.testing.assert_close(out[1, :, 0], torch.zeros(2, 4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 1], torch.ones(2, 4, 4), atol=1e-5, rtol=0)
    same = model.normalize("s1", torch.from_numpy(x).double())
    torch.testing.assert_close(same, out)
    # an unbatched tile (C, H, W) works too
    assert model.normalize("s2", np.zeros((12, 5, 6))).shape == (12, 5, 6)


def test_normalize_errors(model):
    with pytest.raises(
        ValueError, match=r"\(\.\.\., 2, H, W\) for bands \['vv', 'vh'\], got \(1, 3, 4, 4\)"
    ):
        model.normalize("s1", np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"in 'linear' but this model expects 'dB'.*linear_to_db"):
        model.normalize("s1", np.zeros((2, 4, 4)), units="linear")
    model.normalize("s1", np.zeros((2, 4, 4)), units="dB")
    with pytest.raises(KeyError, match=r"no 's3' encoder; its sensors are"):
        model.normalize("s3", np.zeros((2, 4, 4)))
    with pytest.raises(KeyError, match=r"no 's1' encoder"):
        DualEncoder({"s2": ["B02"]}, seed=0).encoder("s1")


def test_embed_features_forward(model):
    g = torch.Generator().manual_seed(0)
    s1 = torch.randn(2, 2, 32, 32, generator=g)
    s2 = torch.randn(2, 12, 32, 32, generator=g)
    with torch.no_grad():
        z1, z2 = model(s1, s2)
        e1 = model.embed("s1", s1)
        feats = model.features("s2", s2)
        pooled = model.encoder("s2")(s2)
    assert z1.shape == z2.shape == (2, 128)
    torch.testing.assert_close(z1.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(z1, e1)
    assert isinstance(model.encoder("s1"), ResNetEncoder)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]
    assert pooled.shape == (2, 512)
    # separate weights per sensor
    w1 = model.encoder("s1").layer1[0].conv1.weight
    w2 = model.encoder("s2").layer1[0].conv1.weight
    assert not torch.equal(w1, w2)
    with pytest.raises(ValueError, match=r"forward needs two inputs"):
        model(s1)


def test_logit_scale_and_loss_gradients():
    model = DualEncoder({"s1": ["vv", "vh"], "s2": ["B04", "B08"]}, seed=1)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    assert float(model.temperature.detach()) == pytest.approx(0.07)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) > 100: clamped
    assert float(model.temperature.detach()) == pytest.approx(0.01)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
    g = torch.Generator().manual_seed(0)
    z1, z2 = model(torch.randn(4, 2, 16, 16, generator=g), torch.randn(4, 2, 16, 16, generator=g))
    loss = model.contrastive_loss(z1, z2)
    loss.backward()
    assert model.logit_scale.grad is not None
    assert model.encoder("s1").stem[0].weight.grad is not None
    assert model.encoder("s2").stem[0].weight.grad is not None


def test_single_sensor_simclr_model():
    model = DualEncoder({"s2": ["B02", "B03", "B04", "B08"]}, stem="small", seed=0, temperature=0.5)
    assert model.method == "simclr" and model.sensors == ("s2",)
    assert model.encoder("s2").feature_strides == (1, 1, 2, 4, 8)
    assert set(model.metadata["bands"]) == {"s2"}
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(3, 4, 16, 16, generator=g), torch.randn(3, 4, 16, 16, generator=g)
    z1, z2 = model(v1, v2)
    assert z1.shape == (3, 128)
    loss = model.contrastive_loss(z1, z2)
    assert float(loss.detach()) > 0
    assert not any(k.startswith(("encoders.s1", "projectors.s1")) for k in model.state_dict())


def test_seeded_construction_is_deterministic_and_isolated():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = DualEncoder({"s1": ["vv", "vh"]}, seed=5).eval()
    after = torch.rand(1)
    assert torch.equal(before, after)  # the global random state was not consumed
    b = DualEncoder({"s1": ["vv", "vh"]}, seed=5).eval()
    c = DualEncoder({"s1": ["vv", "vh"]}, seed=6).eval()
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoders.s1.stem.0.weight"], sc["encoders.s1.stem.0.weight"])
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.embed("s1", x), b.embed("s1", x))


def test_one_training_step_is_deterministic_on_cpu():
    def step() -> torch.Tensor:
        model = DualEncoder({"s1": ["vv", "vh"], "s2": ["B04"]}, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(0)
        s1, s2 = torch.randn(3, 2, 16, 16, generator=g), torch.randn(3, 1, 16, 16, generator=g)
        loss = model.contrastive_loss(*model(s1, s2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return model.encoder("s1").stem[0].weight.detach().clone()

    assert torch.equal(step(), step())


def test_custom_normalization_and_constructor_errors():
    m = DualEncoder(
        {"s1": ["hh", "hv"]},
        normalization={"s1": {"mean": [-10.0, -18.0], "std": [4.0, 5.0]}},
        seed=0,
    )
    torch.testing.assert_close(
        m.normalize("s1", np.array([[[-6.0]], [[-23.0]]])), torch.tensor([[[1.0]], [[-1.0]]])
    )
    with pytest.raises(
        ValueError, match=r"no default normalisation statistics for s1 band\(s\) \['hh'\]"
    ):
        DualEncoder({"s1": ["hh"]})
    with pytest.raises(ValueError, match=r"needs 2 mean and std values"):
        DualEncoder({"s1": ["vv", "vh"]}, normalization={"s1": {"mean": [0.0], "std": [1.0]}})
    with pytest.raises(ValueError, match=r"positive finite std"):
        DualEncoder({"s1": ["vv"]}, normalization={"s1": {"mean": [0.0], "std": [0.0]}})
    with pytest.raises(ValueError, match=r"unknown sensor\(s\) \['s3'\]"):
        DualEncoder({"s3": ["x"]})
    with pytest.raises(ValueError, match=r"duplicate names"):
        DualEncoder({"s1": ["vv", "vv"]})
    with pytest.raises(ValueError, match=r"method='multimodal' needs bands for both"):
        DualEncoder({"s1": ["vv"]}, method="multimodal")
    with pytest.raises(ValueError, match=r"unknown method 'byol'"):
        DualEncoder(method="byol")
    with pytest.raises(ValueError, match=r"temperature must be a positive number"):
        DualEncoder({"s1": ["vv"]}, temperature=0.0)
    with pytest.raises(ValueError, match=r"unknown encoder architecture"):
        DualEncoder({"s1": ["vv"]}, arch="vit")


def test_default_statistics_fit_real_bigearthnet_patches(shared_data):
    """Real S1 (dB) / S2 L2A patches normalise to roughly zero mean, unit spread."""
    data = np.load(shared_data / "bigearthnet_v2_subset" / "benv2_mock_s1s2.npz")
    s1 = data["s1_vv_vh_db"].astype(np.float32)  # (24, 2, 120, 120) dB
    s2 = data["s2_10m_B02_B03_B04_B08"].astype(np.float32) / 10000  # reflectance
    model = DualEncoder({"s1": ["vv", "vh"], "s2": ["B02", "B03", "B04", "B08"]}, seed=0)
    for sensor, x in (("s1", s1), ("s2", s2)):
        z = model.normalize(sensor, x)
        assert torch.isfinite(z).all()
        per_band_mean = z.mean(dim=(0, 2, 3))
        per_band_std = z.std(dim=(0, 2, 3))
        assert (per_band_mean.abs() < 1.5).all(), (sensor, per_band_mean)
        assert ((per_band_std > 0.1) & (per_band_std < 3)).all(), (sensor, per_band_std)
    assert set(DEFAULT_BANDS["s2"]) <= set(BAND_STATS)


def test_contrastive_steps_on_real_pairs_reduce_the_loss(shared_data):
    data = np.load(shared_data / "bigearthnet_v2_subset" / "benv2_mock_s1s2.npz")
    s1 = data["s1_vv_vh_db"][:, :, 52:68, 52:68]  # 16x16 centre of each 120x120 patch
    s2 = data["s2_10m_B02_B03_B04_B08"][:, :, 52:68, 52:68].astype(np.float32) / 10000
    model = DualEncoder({"s1": ["vv", "vh"], "s2": ["B02", "B03", "B04", "B08"]}, seed=0)
    x1, x2 = model.normalize("s1", s1), model.normalize("s2", s2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = model.contrastive_loss(*model(x1, x2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(math.log(24), abs=1.0)
    assert losses[-1] < 0.3 * losses[0]


def test_width_makes_lighter_models_and_round_trips(tmp_path) -> None:
    model = DualEncoder(width=16, stem="small", seed=0).eval()
    assert model.feature_dim == 128
    assert model.encoder("s1").feature_channels == (16, 16, 32, 64, 128)
    path = model.save(tmp_path / "w16.safetensors")
    back = DualEncoder.load(path)
    assert back.width == 16 and back.metadata["architecture"]["width"] == 16
    x = model.normalize("s1", np.full((2, 2, 32, 32), -12.0, dtype="float32"))
    with torch.no_grad():
        torch.testing.assert_close(back.embed("s1", x), model.embed("s1", x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        DualEncoder(width=0)
