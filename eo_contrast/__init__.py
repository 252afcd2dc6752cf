"""eo-contrast: xarray-native multimodal contrastive learning on Earth-observation datacubes.

Importing the package registers the ``.contrast`` accessor on :class:`xarray.DataArray` and
:class:`xarray.Dataset`.

Examples
--------
>>> import eo_contrast as ec
>>> import xarray as xr
>>> hasattr(xr.DataArray, "contrast") and hasattr(xr.Dataset, "contrast")
True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from eo_contrast import accessors as _accessors  # noqa: F401  (registers `.contrast`)
from eo_contrast.corpus import build_corpus, open_corpus, plan_corpus
from eo_contrast.cube import (
    S1_BANDS,
    S2_BANDS,
    as_cube,
    band_units,
    canonical_band_name,
    db_to_linear,
    linear_to_db,
    sensor_of,
)
from eo_contrast.datasets import (
    read_bigearthnet,
    read_eolearn_slovenia,
    read_sen1floods11,
    synthetic_scene,
)
from eo_contrast.inference import embed, segment
from eo_contrast.pairing import pair
from eo_contrast.readguard import ChunkReadError, guard_reads
from eo_contrast.stac import AssetReadError, BandNotFoundError, load_stac
from eo_contrast.store import to_zarr
from eo_contrast.training import pretrain, retrieval_accuracy
from eo_contrast.units import UnitsError, check_values

_LAZY = {
    "DualEncoder": "eo_contrast.models",
    "resolve_device": "eo_contrast.models",
    "SegmentationModel": "eo_contrast.segmentation",
    "fit_segmentation": "eo_contrast.segmentation",
}


def __getattr__(name: str) -> object:
    """Import torch-backed names on first use, so ``import eo_contrast`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eo_contrast' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included (for tab completion)."""
    return sorted(set(globals()) | set(_LAZY))


try:
    __version__ = version("eo-contrast")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "S1_BANDS",
    "S2_BANDS",
    "AssetReadError",
    "BandNotFoundError",
    "ChunkReadError",
    "DualEncoder",
    "SegmentationModel",
    "UnitsError",
    "__version__",
    "as_cube",
    "band_units",
    "build_corpus",
    "canonical_band_name",
    "check_values",
    "db_to_linear",
    "embed",
    "fit_segmentation",
    "guard_reads",
    "linear_to_db",
    "load_stac",
    "open_corpus",
    "pair",
    "plan_corpus",
    "pretrain",
    "read_bigearthnet",
    "read_eolearn_slovenia",
    "read_sen1floods11",
    "resolve_device",
    "retrieval_accuracy",
    "segment",
    "sensor_of",
    "synthetic_scene",
    "to_zarr",
]
