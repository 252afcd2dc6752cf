"""Hooks for every test and doctest of the repository: examples that read the shared data.

Docstring and documentation examples that read real data get their paths from
:func:`eo_contrast.datasets.shared_data.example_path`. Where the folder it names is absent,
those examples are skipped, saying why, instead of failing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_EXAMPLE_PATH = re.compile(r"example_path\(\s*(?:(['\"])([^'\"]+)\1)?")


def _missing_data(sources: list[str], root: Path) -> Path | None:
    """The first shared-data path the examples need and that is absent, else ``None``."""
    for source in sources:
        for match in _EXAMPLE_PATH.finditer(source):
            path = root / match.group(2) if match.group(2) else root
            if not path.exists():
                return path
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the doctests calling ``example_path(...)`` whose shared data folder is absent."""
    from eo_contrast.datasets.shared_data import ENV_VAR, shared_data_dir

    root = shared_data_dir()
    for item in items:
        dtest = getattr(item, "dtest", None)  # a DoctestItem (module docstring or text file)
        if dtest is None:
            continue
        missing = _missing_data([ex.source for ex in dtest.examples], root)
        if missing is not None:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"needs the shared data folder: {missing} not found (set {ENV_VAR} "
                    "to the shared/data folder)"
                )
            )
