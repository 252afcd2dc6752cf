"""The models package stays pure torch and exports its public names."""

from __future__ import annotations

import ast
from pathlib import Path

import eo_contrast.models as models

PACKAGE = Path(models.__file__).parent


def test_models_never_import_xarray_or_dask():
    offending = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root in {"xarray", "dask", "distributed", "rioxarray"} or name in {
                    "eo_contrast.cube",
                    "eo_contrast.tiling",
                }:
                    offending.append(f"{path.name}: {name}")
    assert offending == []


def test_public_names_are_exported():
    assert len(models.__all__) >= 12
    for name in models.__all__:
        assert getattr(models, name) is not None, name
    assert models.FORMAT_VERSION == 1
