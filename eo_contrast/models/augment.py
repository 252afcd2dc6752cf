"""SimCLR augmentations on batches of normalised tiles ``(B, C, H, W)``, any band count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["SimCLRAugment"]


def _rand(n: int | tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    size = (n,) if isinstance(n, int) else n
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(size, generator=generator, device=device).cpu()


@dataclass(frozen=True)
class SimCLRAugment:
    """Random augmentations for the single-sensor SimCLR baseline.

    Applied independently to every tile of a batch, in this order:

    1. random resized crop: a window covering ``crop_scale`` of the tile area with aspect ratio
       in ``crop_ratio`` (log-uniform), resampled (bilinear) back to the tile size;
    2. horizontal and vertical flips, each with probability ``flip_p``;
    3. rotation by a random multiple of 90 degrees when ``rotate`` (180 only, for non-square
       tiles);
    4. additive Gaussian noise of standard deviation ``noise_std`` (in normalised units);
    5. band dropout: each band is set to 0 (the band mean, after normalisation) with probability
       ``band_drop_p``, always keeping at least one band.

    Steps 1-3 are a single :func:`torch.nn.functional.grid_sample`: with a full crop, the
    flips/rotations reproduce the pixels exactly. Inputs must already be normalised and free of
    NaN (see ``DualEncoder.normalize``). All randomness comes from ``generator`` (a
    :class:`torch.Generator`, on any device), so a seeded generator gives the same result.

    Parameters
    ----------
    crop_scale
        Range of the crop area as a fraction of the tile area, within (0, 1].
    crop_ratio
        Range of the crop aspect ratio (width / height).
    flip_p
        Probability of each flip.
    rotate
        Whether to rotate by multiples of 90 degrees.
    noise_std
        Standard deviation of the additive noise (0 disables it).
    band_drop_p
        Probability of dropping each band (0 disables it).

    Examples
    --------
    >>> import torch
    >>> aug = SimCLRAugment()
    >>> x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> a = aug(x, torch.Generator().manual_seed(1))
    >>> b = aug(x, torch.Generator().manual_seed(1))
    >>> a.shape, bool(torch.equal(a, b))
    (torch.Size([2, 3, 32, 32]), True)
    >>> v1, v2 = aug.views(x, torch.Generator().manual_seed(2))
    >>> bool(torch.equal(v1, v2))
    False
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    rotate: bool = True
    noise_std: float = 0.05
    band_drop_p: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        rlo, rhi = self.crop_ratio
        if not 0 < rlo <= rhi:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        for name in ("flip_p", "band_drop_p"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view of the batch ``x`` ``(B, C, H, W)`` (same shape and dtype)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"augment input must be a float tensor (B, C, H, W), got {shape}")
        b, c, h, w = x.shape
        if b == 0:
            return x.clone()
        theta = self._geometry(b, h, w, generator)
        grid = F.affine_grid(theta.to(x.device, x.dtype), [b, c, h, w], align_corners=False)
        out = F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        if self.noise_std > 0:
            device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn((b, c, h, w), generator=generator, device=device)
            out = out + self.noise_std * noise.to(out.device, out.dtype)
        if self.band_drop_p > 0 and c > 1:
            drop = _rand((b, c), generator) < self.band_drop_p
            keep = (_rand(b, generator) * c).long().clamp(max=c - 1)
            all_dropped = drop.all(dim=1)
            drop[all_dropped, keep[all_dropped]] = False
            out = out.masked_fill(drop.to(out.device)[:, :, None, None], 0.0)
        return out

    def views(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent augmented views of ``x`` (the SimCLR positive pair)."""
        return self(x, generator), self(x, generator)

    def _geometry(self, b: int, h: int, w: int, generator: torch.Generator | None) -> torch.Tensor:
        """Per-tile affine matrices ``(B, 2, 3)`` mapping output to input normalised coords."""
        lo, hi = self.crop_scale
        area = lo + (hi - lo) * _rand(b, generator)
        log_r = math.log(self.crop_ratio[0]) + (
            math.log(self.crop_ratio[1]) - math.log(self.crop_ratio[0])
        ) * _rand(b, generator)
        ratio = torch.exp(log_r)
        # fractions of the tile width / height covered by the crop
        sx = torch.sqrt(area * ratio).clamp(max=1.0)
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        tx = (1 - sx) * (2 * _rand(b, generator) - 1)
        ty = (1 - sy) * (2 * _rand(b, generator) - 1)
        fx = torch.where(_rand(b, generator) < self.flip_p, -1.0, 1.0)
        fy = torch.where(_rand(b, generator) < self.flip_p, -1.0, 1.0)
        k = (_rand(b, generator) * 4).long().clamp(max=3)
        if not self.rotate:
            k = torch.zeros_like(k)
        elif h != w:
            k = (k // 2) * 2  # 0 or 180 degrees keep a non-square grid
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
        # output coords -> rotate -> flip -> crop scale/shift -> input coords
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = sx * fx * cos
        theta[:, 0, 1] = -sx * fx * sin
        theta[:, 1, 0] = sy * fy * sin
        theta[:, 1, 1] = sy * fy * cos
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        return theta
