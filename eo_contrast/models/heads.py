"""Heads on top of an encoder: the contrastive projection MLP and segmentation decoders.

:class:`UNetHead` is the decoder of segmentation models (format version 2): skip connections down
to the normalised input. :class:`SegmentationHead` (a light feature-pyramid decoder) is kept to
read models of format version 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead", "SegmentationHead", "UNetHead"]


class ProjectionHead(nn.Module):
    """Two-layer MLP (Linear -> ReLU -> Linear) mapping encoder vectors to the contrastive space.

    As in SimCLR, the contrastive loss acts on this projection; downstream tasks use the encoder
    output before it. The output is *not* normalised here (see ``DualEncoder.embed``).

    Parameters
    ----------
    in_dim
        Length of the encoder vector.
    out_dim
        Length of the projection (128 by default).
    hidden_dim
        Width of the hidden layer; ``None`` means ``in_dim``.

    Examples
    --------
    >>> import torch
    >>> head = ProjectionHead(512, 128)
    >>> head(torch.zeros(4, 512)).shape
    torch.Size([4, 128])
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_dim, self.out_dim, self.hidden_dim = in_dim, out_dim, hidden
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``(B, in_dim)`` vectors to ``(B, out_dim)``."""
        return self.net(x)


def _pyramid_channels(feature_channels: Sequence[int], num_classes: int) -> list[int]:
    """The channels of a decoder's pyramid levels, after checking them and ``num_classes``."""
    channels = [int(c) for c in feature_channels]
    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"feature_channels must be positive integers, got {feature_channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return channels


class SegmentationHead(nn.Module):
    """Feature-pyramid decoder: per-pixel class logits from an encoder's feature maps.

    Each pyramid level goes through a 1x1 convolution to ``width`` channels, is upsampled
    (bilinear) to the finest level and summed; a 3x3 convolution + BatchNorm + ReLU and a 1x1
    classifier follow, and the logits are upsampled to the requested output size.

    Parameters
    ----------
    feature_channels
        Channels of each level, e.g. ``ResNetEncoder.feature_channels``.
    num_classes
        Number of classes (>= 1).
    width
        Channels of the fused map.

    Examples
    --------
    >>> import torch
    >>> from eo_contrast.models import ResNetEncoder
    >>> enc = ResNetEncoder("resnet18", in_chans=2).eval()
    >>> head = SegmentationHead(enc.feature_channels, num_classes=3).eval()
    >>> x = torch.zeros(2, 2, 32, 32)
    >>> head(enc.features(x), size=x.shape[-2:]).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self, feature_channels: Sequence[int], num_classes: int, *, width: int = 64
    ) -> None:
        super().__init__()
        channels = _pyramid_channels(feature_channels, num_classes)
        self.feature_channels = tuple(channels)
        self.num_classes = num_classes
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(
        self, features: Sequence[torch.Tensor], size: Sequence[int] | torch.Size
    ) -> torch.Tensor:
        """Logits ``(B, num_classes, *size)`` from the pyramid ``features`` (finest first)."""
        if len(features) != len(self.lateral):
            raise ValueError(
                f"expected {len(self.lateral)} feature maps (channels {self.feature_channels}), "
                f"got {len(features)}"
            )
        target = features[0].shape[-2:]
        fused = None
        for lateral, f in zip(self.lateral, features, strict=True):
            y = lateral(f)
            if y.shape[-2:] != target:
                y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused + y
        assert fused is not None
        logits = self.classifier(self.fuse(fused))
        out_size = (int(size[0]), int(size[1]))
        if logits.shape[-2:] != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNetHead(nn.Module):
    """UNet-like decoder with skip connections down to full resolution, the input included.

    Starting from the coarsest map of the encoder pyramid, each step upsamples the decoded map
    (bilinear) to the next finer level, concatenates that level's features and applies a 3x3
    convolution + BatchNorm + ReLU. The last step goes to the tile's own resolution and
    concatenates the **normalised input itself**, followed by two 3x3 convolution blocks and a
    1x1 classifier. Every output pixel therefore sees its own input values directly: whatever a
    per-pixel threshold on a band can separate, the decoder can learn, and the pyramid adds the
    context around it.

    Decoder channels grow with depth: level ``i`` of the pyramid (finest first) decodes to
    ``min(width, 16 * 2**i)`` channels, the full-resolution step to ``min(width, 16)``, which
    keeps the full-resolution convolutions cheap.

    Parameters
    ----------
    feature_channels
        Channels of each pyramid level, finest first (``ResNetEncoder.feature_channels``; the
        levels of several sensors concatenated).
    num_classes
        Number of classes (>= 1).
    in_chans
        Channels of the normalised input concatenated at full resolution (the bands of every
        sensor used); 0 leaves the input out.
    width
        Channels of the deepest decoder levels.

    Examples
    --------
    >>> import torch
    >>> from eo_contrast.models import ResNetEncoder
    >>> enc = ResNetEncoder("resnet18", in_chans=2, width=16).eval()
    >>> head = UNetHead(enc.feature_channels, num_classes=2, in_chans=2, width=32).eval()
    >>> x = torch.zeros(3, 2, 64, 64)
    >>> head(enc.features(x), x).shape
    torch.Size([3, 2, 64, 64])
    >>> head.level_channels, head.full_channels
    ((16, 32, 32, 32, 32), 16)
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        num_classes: int,
        *,
        in_chans: int,
        width: int = 64,
    ) -> None:
        super().__init__()
        channels = _pyramid_channels(feature_channels, num_classes)
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 0:
            raise ValueError(f"in_chans must be a non-negative integer, got {in_chans!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        self.feature_channels = tuple(channels)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.width = width
        n = len(channels)
        dec = tuple(min(width, 16 * 2**i) for i in range(n))
        self.level_channels: tuple[int, ...] = dec
        self.full_channels = min(width, 16)
        # deepest level: its own features only; each finer level: upsampled map + skip
        blocks = [_conv_bn_relu(channels[-1], dec[-1])]
        blocks.extend(_conv_bn_relu(dec[i + 1] + channels[i], dec[i]) for i in range(n - 2, -1, -1))
        self.up = nn.ModuleList(blocks)
        self.full = nn.Sequential(
            _conv_bn_relu(dec[0] + in_chans, self.full_channels),
            _conv_bn_relu(self.full_channels, self.full_channels),
        )
        self.classifier = nn.Conv2d(self.full_channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, H, W)`` from the pyramid (finest first) and input ``x``."""
        if len(features) != len(self.feature_channels):
            raise ValueError(
                f"expected {len(self.feature_channels)} feature maps (channels "
                f"{self.feature_channels}), got {len(features)}"
            )
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"the input must have shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        y = self.up[0](features[-1])
        for block, skip in zip(self.up[1:], reversed(features[:-1]), strict=True):
            if y.shape[-2:] != skip.shape[-2:]:
                y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.in_chans:
            y = torch.cat([y, x], dim=1)
        return self.classifier(self.full(y))
