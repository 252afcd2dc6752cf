"""SimCLR augmentations: determinism, geometry, noise, band dropout."""

from __future__ import annotations

import pytest
import torch

from eo_contrast.models import SimCLRAugment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(b=4, c=3, h=32, w=32, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _dihedral(x):
    """All 8 flips/rotations of a (C, H, W) tile."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, torch.flip(r, dims=(-1,))]
    return out


def test_same_seed_same_result_other_seed_differs():
    aug = SimCLRAugment()
    x = _batch()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.isfinite(a).all()
    # the input is left untouched
    assert torch.equal(x, _batch())


def test_views_are_two_different_draws():
    aug = SimCLRAugment()
    x = _batch()
    g = torch.Generator().manual_seed(3)
    v1, v2 = aug.views(x, g)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(v1, aug(x, g))
    assert torch.equal(v2, aug(x, g))
    assert not torch.allclose(v1, v2)


def test_full_crop_gives_exact_flips_and_rotations():
    aug = SimCLRAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), noise_std=0.0, band_drop_p=0.0
    )
    x = _batch(b=16, c=2, h=16, w=16)
    out = aug(x, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(len(x)):
        matches = [j for j, d in enumerate(_dihedral(x[i])) if torch.allclose(out[i], d, atol=1e-5)]
        assert matches, f"tile {i} is not a flip/rotation of its input"
        seen.add(matches[0])
    assert len(seen) >= 4  # several different transforms were drawn


def test_non_square_tiles_only_rotate_by_180():
    aug = SimCLRAugment(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), noise_std=0.0, band_drop_p=0.0
    )
    x = _batch(b=8, c=1, h=8, w=12)
    out = aug(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    for i in range(len(x)):
        cands = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        assert any(torch.allclose(out[i], c, atol=1e-5) for c in cands)


def test_crop_zooms_into_part_of_the_tile():
    # a horizontal ramp from 0 to 1: a crop of a quarter of the area spans about half the range
    ramp = torch.linspace(0, 1, 64).expand(8, 1, 64, 64).contiguous()
    aug = SimCLRAugment(
        crop_scale=(0.25, 0.25),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        rotate=False,
        noise_std=0.0,
        band_drop_p=0.0,
    )
    out = aug(ramp, torch.Generator().manual_seed(0))
    span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    torch.testing.assert_close(span, torch.full((8,), 0.5), atol=0.03, rtol=0)
    # still a monotone ramp along x, resampled back to 64 columns
    assert (out[:, 0, 0, 1:] - out[:, 0, 0, :-1] >= 0).all()


def test_noise_has_the_requested_std():
    x = torch.zeros(4, 2, 32, 32)
    aug = SimCLRAugment(noise_std=0.3, band_drop_p=0.0)
    out = aug(x, torch.Generator().manual_seed(0))
    assert float(out.std()) == pytest.approx(0.3, rel=0.05)
    assert abs(float(out.mean())) < 0.02


def test_band_dropout_zeroes_whole_bands_and_keeps_one():
    x = torch.ones(200, 3, 8, 8)
    aug = SimCLRAugment(
        crop_scale=(1.0, 1.0), flip_p=0.0, rotate=False, noise_std=0.0, band_drop_p=0.5
    )
    out = aug(x, torch.Generator().manual_seed(0))
    per_band = out.flatten(2)
    dropped = (per_band == 0).all(dim=2)
    kept = (per_band == 1).all(dim=2)
    assert (dropped | kept).all()  # whole bands, nothing in between
    assert kept.any(dim=1).all()  # at least one band survives in every tile
    assert 0.35 < float(dropped.float().mean()) < 0.55
    # a single band is never dropped
    one = aug(torch.ones(50, 1, 8, 8), torch.Generator().manual_seed(0))
    assert torch.equal(one, torch.ones(50, 1, 8, 8))


def test_parameter_and_input_errors():
    with pytest.raises(ValueError, match=r"crop_scale must satisfy"):
        SimCLRAugment(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"crop_ratio must satisfy"):
        SimCLRAugment(crop_ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"band_drop_p must be a probability"):
        SimCLRAugment(band_drop_p=1.5)
    with pytest.raises(ValueError, match=r"noise_std must be >= 0"):
        SimCLRAugment(noise_std=-1.0)
    with pytest.raises(ValueError, match=r"float tensor \(B, C, H, W\), got \(3, 8, 8\)"):
        SimCLRAugment()(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"float tensor"):
        SimCLRAugment()(torch.zeros(1, 3, 8, 8, dtype=torch.int64))
