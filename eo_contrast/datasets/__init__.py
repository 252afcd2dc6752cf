"""Readers for real Earth-observation formats, and a synthetic scene maker.

* :func:`read_sen1floods11`: Sen1Floods11 hand-labelled chips (one, a split, or all) -> S1 and
  S2 cubes + water label, in the dataset's own folder layout or a flat folder.
* :func:`read_eolearn_slovenia`: eo-learn's Slovenia example patch -> 5 S2 scenes + a
  land-cover raster.
* :func:`read_bigearthnet`: BigEarthNet v2 S1/S2 patch pairs -> a paired dataset with
  multi-labels (the layout of ``ec.pair``'s output).
* :func:`synthetic_scene`: a deterministic S1/S2 flood scene written as COGs with a local STAC
  catalogue, for demos and tests that go through the real STAC loading path.
* :mod:`eo_contrast.datasets.shared_data`: where the real example data lives
  (``shared_data_dir()``, ``example_path(name)``).
"""

from __future__ import annotations

from eo_contrast.datasets.bigearthnet import BIGEARTHNET_S2_BANDS, read_bigearthnet
from eo_contrast.datasets.eolearn import (
    EOLEARN_LULC_CLASSES,
    EOLearnPatch,
    read_eolearn_slovenia,
)
from eo_contrast.datasets.sen1floods11 import Sen1Floods11Chip, read_sen1floods11
from eo_contrast.datasets.synthetic import SyntheticScene, synthetic_scene

__all__ = [
    "BIGEARTHNET_S2_BANDS",
    "EOLEARN_LULC_CLASSES",
    "EOLearnPatch",
    "Sen1Floods11Chip",
    "SyntheticScene",
    "read_bigearthnet",
    "read_eolearn_slovenia",
    "read_sen1floods11",
    "synthetic_scene",
]
