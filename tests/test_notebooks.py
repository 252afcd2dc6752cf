"""The notebooks in notebooks/ run top to bottom (quick settings) and show what they claim.

Each notebook runs in a fresh kernel with ``EO_CONTRAST_NB_FAST=1`` (small training budgets), in a
temporary working directory, with the real data folder passed as ``EO_CONTRAST_SHARED_DATA``.
The assertions read the executed notebook's outputs: the numbers a reader sees.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = {p.name: p for p in sorted((REPO / "notebooks").glob("*.ipynb"))}
TESTED = {
    "01_pairing.ipynb",
    "02_pretrain_and_embed.ipynb",
    "03_flood_mapping.ipynb",
    "04_land_cover.ipynb",
    "05_pangeo_object_storage.ipynb",
}


def _run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    """Execute notebook ``name`` in a fresh kernel; return the executed notebook."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("EO_CONTRAST_NB_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS[name], as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors, errors
    return nb


def _outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _text(nb: dict) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for o in _outputs(nb):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            parts.append(o["text"])
        elif "text/plain" in o.get("data", {}):
            parts.append(o["data"]["text/plain"])
    return "\n".join(parts)


def _figures(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _scores(text: str, prefix: str) -> dict[str, str]:
    """Lines ``{prefix} | {name}: {rest}`` as ``{name: rest}``."""
    return dict(re.findall(rf"^{re.escape(prefix)} \| (.+?): (.+)$", text, flags=re.M))


# ----------------------------------------------------------------------------- the files


def test_every_notebook_is_tested() -> None:
    assert set(NOTEBOOKS) == TESTED


@pytest.mark.parametrize("name", sorted(TESTED))
def test_notebook_is_stored_without_outputs(name: str) -> None:
    """Committed notebooks carry no outputs: small diffs, and no stale numbers or paths."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS[name], as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"


# ----------------------------------------------------------------------------- execution


def test_01_pairing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    nb = _run("01_pairing.ipynb", tmp_path, monkeypatch, EO_CONTRAST_SHARED_DATA=str(shared_data))
    text = _text(nb)
    # the real chip: one pair, S1 a day before S2; water is dark in VH and in the NIR
    assert "1 pair: S1 2019-09-17 -> S2 2019-09-18, dt = 1 days 00:00:00" in text
    water = re.search(r"^water\s+(-[\d.]+)\s+([\d.]+)$", text, flags=re.M).groups()
    dry = re.search(r"^dry land\s+(-[\d.]+)\s+([\d.]+)$", text, flags=re.M).groups()
    assert float(water[0]) < float(dry[0]) - 5 and float(water[1]) < float(dry[1])
    # the sample scene through STAC: 4 pairs (S2 2023-10-26 stays unpaired)
    assert "S2 {'time': 5, 'band': 12, 'y': 256, 'x': 256} EPSG:32630" in text
    rows = re.findall(
        r"^\d\s+(2023-10-\d\d [\d:]+)\s+(2023-10-\d\d [\d:]+)\s+\d days [\d:]+$", text, flags=re.M
    )
    assert [s2 for s2, _ in rows] == [f"2023-10-{d} 10:50:31" for d in ("06", "11", "16", "21")]
    assert _figures(nb) == 2


def test_02_pretrain_and_embed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = _run("02_pretrain_and_embed.ipynb", tmp_path, monkeypatch)
    text = _text(nb)
    first, last = map(float, re.search(r"loss: ([\d.]+) -> ([\d.]+)", text).groups())
    assert last < first - 0.5  # the brief pretraining learns
    top5 = {
        name: tuple(
            map(float, re.match(r"S1->S2 ([\d.]+), S2->S1 ([\d.]+), chance ([\d.]+)", v).groups())
        )
        for name, v in _scores(text, "retrieval top-5").items()
    }
    assert set(top5) == {
        "untrained (same architecture, seed 0)",
        "fresh (pretrained above)",
        "default weights",
    }
    # on the held-out eastern half: both trained models retrieve well above chance
    for name in ("fresh (pretrained above)", "default weights"):
        s1_to_s2, s2_to_s1, chance = top5[name]
        assert chance == pytest.approx(5 / 128, abs=1e-3)
        assert (s1_to_s2 + s2_to_s1) / 2 > 2 * chance, (name, top5[name])
    # embeddings: one 128-d vector per 16 px tile of the 256 px scene, CRS kept
    assert "default: {'time': 5, 'feature': 128, 'y': 16, 'x': 16} EPSG:32630" in text
    assert "fresh:   {'time': 5, 'feature': 128, 'y': 16, 'x': 16} EPSG:32630" in text
    assert _figures(nb) == 2  # the loss curve; S2 RGB beside the PCA-RGB of both models


def test_03_flood_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    nb = _run(
        "03_flood_mapping.ipynb", tmp_path, monkeypatch, EO_CONTRAST_SHARED_DATA=str(shared_data)
    )
    text = _text(nb)
    # one model trained on five events' chips, each on its own grid, maps the sixth
    assert "trained on 5 chips: ['Ghana_53713', 'Mekong_333434', 'Pakistan_849790', " in text
    assert "50 updates per epoch, 150 in all" in text  # FAST: 3 epochs of MIN_STEPS_PER_EPOCH
    held = {k: float(v) for k, v in _scores(text, "water IoU (Spain_7370579, held out)").items()}
    assert held["VH < -21 dB (fitted on the five events)"] == pytest.approx(0.565, abs=0.001)
    # water is 27 % of the chip: mapping everything as water scores 0.27
    assert held["fit_segmentation on five events"] > 0.4, held
    assert "train: x columns [0, 256) (west); test: x columns [256, 512) (east)" in text
    assert "prediction: {'y': 512, 'x': 256} int16 EPSG:4326" in text
    iou = {k: float(v) for k, v in _scores(text, "water IoU (east half)").items()}
    learned = [iou[f"fit_segmentation, {s} features"] for s in ("S1", "S2", "S1 + S2")]
    floor = iou["everything water"]
    assert floor == pytest.approx(0.363, abs=0.001)  # water is 36 % of the eastern half
    # every fitted map beats "everything water"; the best clearly
    assert min(learned) > floor and max(learned) > 0.45, iou
    baseline = next(v for k, v in iou.items() if k.startswith("VH <"))
    assert 0.55 < baseline < 0.75
    assert _figures(nb) == 2  # the held-out chip's maps; S2 RGB, S1 VH, label, prediction, errors


def test_04_land_cover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    nb = _run(
        "04_land_cover.ipynb", tmp_path, monkeypatch, EO_CONTRAST_SHARED_DATA=str(shared_data)
    )
    text = _text(nb)
    assert "{'time': 5, 'band': 13, 'y': 101, 'x': 100} EPSG:32633" in text
    assert "prediction: {'time': 5, 'y': 51, 'x': 100} EPSG:32633" in text
    scores = {
        k: tuple(map(float, re.match(r"mIoU ([\d.]+), overall accuracy ([\d.]+)", v).groups()))
        for k, v in _scores(text, "land cover (south half)").items()
    }
    seg = scores["fit_segmentation, vote over 5 dates"]
    majority = scores["majority class (forest)"]
    assert majority[1] == pytest.approx(3767 / 5100, abs=1e-3)  # forest share of the south
    # the frozen encoder + decoder beats the majority map on both scores
    assert seg[0] > majority[0] + 0.05 and seg[1] > majority[1], scores
    assert _figures(nb) == 1


@pytest.mark.network_server
def test_05_pangeo_object_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server
) -> None:
    pytest.importorskip("distributed")
    pytest.importorskip("rioxarray")  # registers .rio
    xr = pytest.importorskip("xarray")
    bucket = "notebook-05"
    nb = _run(
        "05_pangeo_object_storage.ipynb",
        tmp_path,
        monkeypatch,
        EO_CONTRAST_BUCKET=bucket,
        **s3_server.env,
    )
    text = _text(nb)
    assert f"S3 endpoint {s3_server.endpoint} (from AWS_ENDPOINT_URL)" in text
    assert "largest difference, cluster vs single process: 0.0e+00" in text
    assert _figures(nb) == 1
    # credentials never appear in what the notebook shows
    sources = "\n".join(c["source"] for c in nb["cells"])
    assert s3_server.secret not in text and s3_server.secret not in sources
    # the stores are on the S3 server, complete, with the CRS
    store = f"s3://{bucket}/sample-scene/embeddings.zarr"
    emb = xr.open_zarr(store, storage_options=s3_server.storage_options)
    assert dict(emb.sizes) == {"pair": 4, "feature": 128, "y": 16, "x": 16}
    assert emb.s1.dims == emb.s2.dims == ("pair", "feature", "y", "x")
    assert {"s1_time", "s2_time", "dt"} <= set(emb.coords)
    assert emb.attrs["eo_contrast_status"] == "complete"
    assert emb.rio.crs.to_epsg() == 32630
    assert bool(emb.s1.notnull().all()) and bool(emb.s2.notnull().all())
    pairs = xr.open_zarr(
        f"s3://{bucket}/sample-scene/pairs.zarr", storage_options=s3_server.storage_options
    )
    assert pairs.sizes["pair"] == 4 and pairs.rio.crs == emb.rio.crs
