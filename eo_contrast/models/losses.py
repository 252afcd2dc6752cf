"""Contrastive losses: symmetric InfoNCE (CLIP) and NT-Xent (SimCLR).

Both normalise their inputs to unit length first, so raw projections or already normalised
embeddings can be passed. ``temperature`` may be a float or a 0-d tensor (e.g. a learnable
temperature such as ``DualEncoder.temperature``, through which gradients flow).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "nt_xent"]


def _check_pair(z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor) -> None:
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor):
        raise TypeError("z1 and z2 must be torch tensors of shape (B, D)")
    if z1.ndim != 2 or z1.shape != z2.shape or z1.shape[0] < 1:
        raise ValueError(
            f"z1 and z2 must both have shape (B, D) with B >= 1, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    if not isinstance(temperature, torch.Tensor) and not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor = 0.07
) -> torch.Tensor:
    """Symmetric InfoNCE loss (CLIP): row ``i`` of ``z1`` and ``z2`` are a positive pair.

    The cosine-similarity matrix ``z1 @ z2.T / temperature`` is scored with cross-entropy
    towards its diagonal in both directions (``z1 -> z2`` over rows and ``z2 -> z1`` over
    columns), and the two are averaged. With ``B`` pairs, each anchor has ``B - 1`` negatives:
    unrelated embeddings give about ``log(B)``; perfectly aligned, distinct embeddings at a low
    temperature give about 0.

    Parameters
    ----------
    z1, z2
        Embeddings ``(B, D)`` of the two modalities.
    temperature
        Softmax temperature (> 0), a float or a 0-d tensor.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Examples
    --------
    >>> import torch
    >>> z = torch.eye(4, 8)
    >>> round(float(info_nce(z, z, temperature=0.01)), 6)
    0.0
    >>> float(info_nce(z, torch.roll(z, 1, dims=0), temperature=0.01)) > 10
    True
    """
    _check_pair(z1, z2, temperature)
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float | torch.Tensor = 0.5
) -> torch.Tensor:
    """NT-Xent loss (SimCLR): ``z1[i]`` and ``z2[i]`` are two views of one sample.

    The ``2N`` embeddings are pooled; each one's positive is its other view and its negatives are
    the other ``2N - 2`` embeddings (both views of every other sample). The loss is the mean
    cross-entropy over all ``2N`` anchors. Unrelated embeddings give about ``log(2N - 1)``.

    Parameters
    ----------
    z1, z2
        Embeddings ``(N, D)`` of the two views.
    temperature
        Softmax temperature (> 0), a float or a 0-d tensor.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Examples
    --------
    >>> import torch
    >>> z = torch.eye(4, 8)
    >>> round(float(nt_xent(z, z, temperature=0.01)), 6)
    0.0
    """
    _check_pair(z1, z2, temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    target = torch.cat([idx + n, idx])
    return F.cross_entropy(sim, target)
