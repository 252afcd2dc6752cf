"""ResNet encoders and heads: layouts, shapes, pyramids, input checks."""

from __future__ import annotations

import pytest
import torch

from eo_contrast.models import ProjectionHead, ResNetEncoder, SegmentationHead
from eo_contrast.models.encoders import count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("arch", "n_params", "out_dim", "channels"),
    [
        # torchvision's resnet18 / resnet50 without the 1000-class fc layer
        ("resnet18", 11_689_512 - (512 * 1000 + 1000), 512, (64, 64, 128, 256, 512)),
        ("resnet50", 25_557_032 - (2048 * 1000 + 1000), 2048, (64, 256, 512, 1024, 2048)),
    ],
)
def test_layouts_match_reference_resnets(arch, n_params, out_dim, channels):
    enc = ResNetEncoder(arch, in_chans=3)
    assert count_parameters(enc) == n_params
    assert enc.out_dim == out_dim
    assert enc.feature_channels == channels
    enc.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = enc.features(x)
        pooled = enc(x)
    assert [f.shape[1] for f in feats] == list(channels)
    assert [32 // f.shape[-1] for f in feats] == list(enc.feature_strides)
    assert pooled.shape == (2, out_dim)
    torch.testing.assert_close(pooled, feats[-1].mean(dim=(-2, -1)))


@pytest.mark.parametrize("in_chans", [1, 2, 13])
def test_any_band_count_and_small_stem(in_chans):
    enc = ResNetEncoder("resnet18", in_chans=in_chans, stem="small").eval()
    assert enc.feature_strides == (1, 1, 2, 4, 8)
    x = torch.randn(2, in_chans, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = enc.features(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 32), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert enc.stem[0].weight.shape == (64, in_chans, 3, 3)
    assert all(torch.isfinite(f).all() for f in feats)


def test_residual_blocks_start_as_identity_branch():
    enc = ResNetEncoder("resnet18", in_chans=2)
    assert all(float(b.last_bn.weight.detach().abs().sum()) == 0 for b in enc.layer1)
    assert float(enc.stem[1].weight.detach().sum()) == 64


def test_encoder_input_errors():
    enc = ResNetEncoder("resnet18", in_chans=2)
    with pytest.raises(ValueError, match=r"shape \(B, 2, H, W\), got \(1, 3, 32, 32\)"):
        enc(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"got \(2, 32, 32\)"):
        enc(torch.zeros(2, 32, 32))
    with pytest.raises(TypeError, match=r"must be a torch.Tensor"):
        enc([[0.0]])
    with pytest.raises(ValueError, match=r"unknown encoder architecture 'resnet34'"):
        ResNetEncoder("resnet34", 2)
    with pytest.raises(ValueError, match=r"unknown stem 'tiny'"):
        ResNetEncoder("resnet18", 2, stem="tiny")
    with pytest.raises(ValueError, match=r"in_chans must be a positive integer"):
        ResNetEncoder("resnet18", 0)


def test_segmentation_head_outputs_logits_on_the_input_grid():
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet18", in_chans=4).eval()
    head = SegmentationHead(enc.feature_channels, num_classes=3, width=16).eval()
    x = torch.randn(2, 4, 48, 40)
    with torch.no_grad():
        logits = head(enc.features(x), size=x.shape[-2:])
    assert logits.shape == (2, 3, 48, 40)
    assert torch.isfinite(logits).all()
    # the decoder learns: a few steps fit a constant target
    head.train()
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    target = torch.ones(2, 48, 40, dtype=torch.long)
    feats = [f.detach() for f in enc.features(x)]
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(head(feats, size=(48, 40)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_head_errors():
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer"):
        SegmentationHead((64, 128), num_classes=0)
    head = SegmentationHead((8, 16), num_classes=2)
    with pytest.raises(ValueError, match=r"expected 2 feature maps"):
        head([torch.zeros(1, 8, 4, 4)], size=(8, 8))
    with pytest.raises(ValueError, match=r"out_dim must be a positive integer"):
        ProjectionHead(512, 0)
    assert ProjectionHead(16, 4)(torch.zeros(3, 16)).shape == (3, 4)
