"""ResNet encoders in plain torch, for any number of input bands.

Two layouts, as in He et al. (2016): ``"resnet18"`` (basic blocks, ``[2, 2, 2, 2]``, 512-d pooled
vector) and ``"resnet50"`` (bottleneck blocks, ``[3, 4, 6, 3]``, 2048-d pooled vector; stride on
the 3x3 convolution, "v1.5").

Two stems:

``"imagenet"``
    7x7 convolution with stride 2, then a 3x3 max-pool with stride 2. Feature pyramid strides
    ``(2, 4, 8, 16, 32)``: a 64x64 tile ends as a 2x2 map. Cheapest; fine for tile embeddings.
``"small"``
    3x3 convolution with stride 1 and no max-pool (the variant used for 32x32 images by
    SimCLR). Feature pyramid strides ``(1, 1, 2, 4, 8)``: a 64x64 tile ends as an 8x8 map, which
    keeps detail for segmentation of small tiles. About 16x the compute of ``"imagenet"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "STEMS", "BasicBlock", "Bottleneck", "ResNetEncoder"]

Stem = Literal["imagenet", "small"]
STEMS: tuple[str, ...] = ("imagenet", "small")


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """A bias-free convolution whose weight is left for ``ResNetEncoder._init_weights``.

    Allocating without torch's default (uniform) initialisation halves construction time.
    """
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False, device="meta")
    return conv.to_empty(device=torch.empty(()).device)  # the current default device


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv(in_channels, planes, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions with a residual connection (ResNet-50 block)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv(in_channels, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, out, 1)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.downsample(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        _conv(in_channels, out_channels, 1, stride=stride),
        nn.BatchNorm2d(out_channels),
    )


#: Known layouts: name -> (block class, blocks per stage).
ARCHITECTURES: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetEncoder(nn.Module):
    """A ResNet trunk that gives a pooled tile vector and a dense feature pyramid.

    Parameters
    ----------
    arch
        ``"resnet18"`` or ``"resnet50"``.
    in_chans
        Number of input bands (any positive count).
    stem
        ``"imagenet"`` (7x7/2 convolution + max-pool; pyramid strides 2, 4, 8, 16, 32) or
        ``"small"`` (3x3/1 convolution, no max-pool; strides 1, 1, 2, 4, 8), for small tiles
        such as 64x64. See the module docstring.
    width
        Channels of the stem and the first stage (64 in the standard layouts); the stages have
        ``width x (1, 2, 4, 8)`` channels. Smaller widths make lighter models (parameters scale
        with ``width**2``).

    Attributes
    ----------
    out_dim : int
        Length of the pooled vector (512 for resnet18, 2048 for resnet50).
    feature_channels : tuple of int
        Channels of each map returned by :meth:`features` (stem, then stages 1-4).
    feature_strides : tuple of int
        Downsampling factor of each map returned by :meth:`features`.

    Notes
    -----
    Weights are initialised as in torchvision (Kaiming-normal convolutions, unit BatchNorm), and
    the last BatchNorm of every residual block starts at zero, so each block starts as the
    identity (Goyal et al., 2017), which helps training from scratch.

    Examples
    --------
    >>> import torch
    >>> enc = ResNetEncoder("resnet18", in_chans=2).eval()
    >>> x = torch.zeros(2, 2, 32, 32)
    >>> enc(x).shape
    torch.Size([2, 512])
    >>> [tuple(f.shape[-2:]) for f in enc.features(x)]
    [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    >>> enc.feature_strides, enc.feature_channels
    ((2, 4, 8, 16, 32), (64, 64, 128, 256, 512))
    """

    def __init__(
        self, arch: str = "resnet18", in_chans: int = 3, *, stem: str = "imagenet", width: int = 64
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown encoder architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}"
            )
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {list(STEMS)}")
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        block, layers = ARCHITECTURES[arch]
        self.width = width
        self.arch = arch
        self.stem_kind = stem
        self.in_chans = in_chans
        if stem == "imagenet":
            conv = _conv(in_chans, width, 7, stride=2, padding=3)
            self.pool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
            strides: tuple[int, ...] = (2, 4, 8, 16, 32)
        else:
            conv = _conv(in_chans, width, 3, stride=1, padding=1)
            self.pool = nn.Identity()
            strides = (1, 1, 2, 4, 8)
        self.stem = nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        channels = width
        planes_per_stage = (width, 2 * width, 4 * width, 8 * width)
        stages = []
        for i, (planes, blocks) in enumerate(zip(planes_per_stage, layers, strict=True)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(blocks):
                stage.append(block(channels, planes, stride if j == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_dim = channels
        self.feature_channels: tuple[int, ...] = (
            width,
            *(p * block.expansion for p in planes_per_stage),
        )
        self.feature_strides = strides
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                nn.init.zeros_(m.last_bn.weight)

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"encoder input must be a torch.Tensor, got {type(x).__name__}; "
                "normalise arrays first (DualEncoder.normalize)"
            )
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"encoder input must have shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Dense feature maps: the stem output, then each of the four stages.

        Parameters
        ----------
        x
            Normalised input, shape ``(B, in_chans, H, W)``.

        Returns
        -------
        list of torch.Tensor
            Five maps ``(B, feature_channels[i], ~H / feature_strides[i], ~W / feature_strides[i])``.
        """
        self._check(x)
        f0 = self.stem(x)
        f1 = self.layer1(self.pool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled tile embeddings ``(B, out_dim)``: the global mean of the last stage."""
        return self.features(x)[-1].mean(dim=(-2, -1))


def count_parameters(module: nn.Module, names: Sequence[str] | None = None) -> int:
    """Number of parameters of ``module`` (optionally only those whose name starts with ``names``).

    Examples
    --------
    >>> count_parameters(ResNetEncoder("resnet18", in_chans=3))
    11176512
    """
    return sum(
        p.numel()
        for n, p in module.named_parameters()
        if names is None or any(n.startswith(k) for k in names)
    )
