"""Contrastive losses against a plain reference computation and known limits."""

from __future__ import annotations

import math

import pytest
import torch

from eo_contrast.models import info_nce, nt_xent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _ref_info_nce(z1, z2, t):
    a, b = _unit(z1.double()), _unit(z2.double())
    n = len(a)
    total = 0.0
    for i in range(n):
        row = [float(a[i] @ b[j]) / t for j in range(n)]
        col = [float(b[i] @ a[j]) / t for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -col[i] + math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


def _ref_nt_xent(z1, z2, t):
    z = _unit(torch.cat([z1, z2]).double())
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        others = [float(z[i] @ z[k]) / t for k in range(n2) if k != i]
        total += -float(z[i] @ z[pos]) / t + math.log(sum(math.exp(v) for v in others))
    return total / n2


@pytest.mark.parametrize("t", [0.07, 0.5, 1.0])
def test_info_nce_matches_reference(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    assert float(info_nce(z1, z2, t)) == pytest.approx(_ref_info_nce(z1, z2, t), rel=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nt_xent_matches_reference(t):
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(_ref_nt_xent(z1, z2, t), rel=1e-5)


def test_aligned_embeddings_give_near_zero_loss():
    z = torch.eye(8, 32) * 3.0  # distinct, orthogonal; scale is removed by normalisation
    assert float(info_nce(z, z, 0.01)) < 1e-6
    assert float(nt_xent(z, z, 0.01)) < 1e-6
    # misaligned pairs are heavily penalised
    assert float(info_nce(z, torch.roll(z, 1, 0), 0.01)) > 50


def test_random_embeddings_give_log_batch():
    g = torch.Generator().manual_seed(2)
    b, d = 64, 4096  # random high-dimensional vectors are nearly orthogonal
    z1, z2 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    assert float(info_nce(z1, z2, 1.0)) == pytest.approx(math.log(b), abs=0.02)
    assert float(nt_xent(z1, z2, 1.0)) == pytest.approx(math.log(2 * b - 1), abs=0.02)


def test_loss_is_symmetric_and_gradients_reach_temperature():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    torch.testing.assert_close(info_nce(z1, z2), info_nce(z2, z1))
    torch.testing.assert_close(nt_xent(z1, z2), nt_xent(z2, z1))
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = info_nce(z1, z2, 1 / log_scale.exp())
    loss.backward()
    assert log_scale.grad is not None and float(log_scale.grad) != 0


def test_loss_input_errors():
    with pytest.raises(ValueError, match=r"shape \(B, D\).*\(4, 8\) and \(3, 8\)"):
        info_nce(torch.zeros(4, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"temperature must be > 0"):
        nt_xent(torch.ones(2, 3), torch.ones(2, 3), temperature=0.0)
    with pytest.raises(TypeError, match=r"torch tensors"):
        info_nce([[1.0]], [[1.0]])
