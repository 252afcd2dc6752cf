"""Where the real example data lives: one folder of datasets, each in its own subfolder.

The folder is ``$EO_CONTRAST_SHARED_DATA`` when that variable is set, else ``../shared/data``
next to the repository checkout. It holds one subfolder per dataset (``sen1floods11_spain``,
``sen1floods11_handlabeled``, ``bigearthnet_v2_subset``, ``eolearn_slovenia``, ...), each with a
``SOURCE.txt`` saying where the files come from.

Documentation examples that read this data get their paths from :func:`example_path`: the
test suite skips every example calling it, saying why, where the folder is absent.

Examples
--------
>>> from eo_contrast.datasets.shared_data import ENV_VAR
>>> ENV_VAR
'EO_CONTRAST_SHARED_DATA'
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "example_path", "shared_data_dir"]

#: The environment variable that names the shared data folder.
ENV_VAR = "EO_CONTRAST_SHARED_DATA"


def shared_data_dir() -> Path:
    """The real-data folder: ``$EO_CONTRAST_SHARED_DATA``, else ``<repository>/../shared/data``.

    The folder need not exist; callers check.

    Returns
    -------
    Path
        The folder holding one subfolder per example dataset.

    Examples
    --------
    >>> from pathlib import Path
    >>> from eo_contrast.datasets.shared_data import shared_data_dir
    >>> isinstance(shared_data_dir(), Path)
    True
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    # eo_contrast/datasets/shared_data.py -> the repository is parents[2]
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def example_path(name: str) -> Path:
    """The shared data folder's subfolder (or file) ``name``: ``shared_data_dir() / name``.

    Parameters
    ----------
    name
        A dataset folder of the shared data, e.g. ``"sen1floods11_handlabeled"``.

    Returns
    -------
    Path
        The path; it is not checked for existence. Examples in this package's docstrings that
        call this function are skipped by the test suite where the shared data is absent.
    """
    return shared_data_dir() / name
