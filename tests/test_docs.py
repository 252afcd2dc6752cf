"""The documentation site builds in strict mode (no broken links, no missing API objects)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
    reason="mkdocs not installed (pip install -e '.[docs]')",
)
def test_docs_build_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    exe = str(mkdocs) if mkdocs.exists() else "mkdocs"
    proc = subprocess.run(
        [exe, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    assert "eo-contrast" in index
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    # the API page is generated from the docstrings: the contract's functions are there
    for name in ("load_stac", "pair", "to_zarr"):
        assert name in api
