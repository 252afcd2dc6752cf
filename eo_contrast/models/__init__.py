"""Pure-torch models: ResNet encoders, the dual encoder, heads, losses, augmentations, checkpoints.

Nothing here imports xarray or dask: these modules work on tensors and numpy arrays only.

Examples
--------
>>> import torch
>>> from eo_contrast.models import DualEncoder, info_nce
>>> model = DualEncoder(seed=0).eval()
>>> with torch.no_grad():
...     z1, z2 = model(torch.zeros(2, 2, 32, 32), torch.zeros(2, 12, 32, 32))
>>> z1.shape, z2.shape
(torch.Size([2, 128]), torch.Size([2, 128]))
>>> float(info_nce(z1, z2)) >= 0
True
"""

from __future__ import annotations

from eo_contrast.models.augment import SimCLRAugment
from eo_contrast.models.checkpoint import (
    CheckpointError,
    read_checkpoint,
    read_metadata,
    write_checkpoint,
)
from eo_contrast.models.device import resolve_device
from eo_contrast.models.dual import (
    BAND_STATS,
    DEFAULT_BANDS,
    DEFAULT_UNITS,
    FORMAT_VERSION,
    DualEncoder,
)
from eo_contrast.models.encoders import ResNetEncoder
from eo_contrast.models.heads import ProjectionHead, SegmentationHead, UNetHead
from eo_contrast.models.losses import info_nce, nt_xent

__all__ = [
    "BAND_STATS",
    "DEFAULT_BANDS",
    "DEFAULT_UNITS",
    "FORMAT_VERSION",
    "CheckpointError",
    "DualEncoder",
    "ProjectionHead",
    "ResNetEncoder",
    "SegmentationHead",
    "SimCLRAugment",
    "UNetHead",
    "info_nce",
    "nt_xent",
    "read_checkpoint",
    "read_metadata",
    "resolve_device",
    "write_checkpoint",
]
