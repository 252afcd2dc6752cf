"""The notebooks in notebooks/ run top to bottom without error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, shared_data: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("EO_CONTRAST_SHARED_DATA")
    os.environ["EO_CONTRAST_SHARED_DATA"] = str(shared_data)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("EO_CONTRAST_SHARED_DATA", None)
        else:
            os.environ["EO_CONTRAST_SHARED_DATA"] = env_before
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the notebook shows something: at least one figure
    assert any("image/png" in o.get("data", {}) for o in outputs)
