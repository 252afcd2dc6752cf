"""benchmarks/paper_comparison.py end to end, with its smallest settings (--quick, one seed)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "paper_comparison.py"
ENCODERS = {"multimodal", "simclr", "random"}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paper_comparison", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paper")
    code = _load().main(
        [
            "--quick",
            "--seeds",
            "1",
            "--device",
            "cpu",
            "--data",
            str(shared_data),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return out


def test_every_encoder_is_scored_on_every_task(quick_run: Path) -> None:
    result = json.loads((quick_run / "results.json").read_text())
    records = pd.DataFrame(result["records"])
    assert result["config"]["quick"] and result["config"]["seeds"] == [0]
    headline = {
        ("flood", "water_iou"),
        ("flood", "miou"),
        ("flood", "overall_accuracy"),
        ("lulc", "miou"),
        ("lulc", "overall_accuracy"),
        ("bigearthnet", "map_macro"),
        ("bigearthnet", "map_micro"),
    }
    for task, metric in headline:
        rows = records[
            (records.task == task) & (records.metric == metric) & (records.input == "s2")
        ]
        assert set(rows.encoder) == ENCODERS, (task, metric)
        assert rows["value"].map(math.isfinite).all(), (task, metric)
        assert rows["value"].between(0, 1).all(), (task, metric)
    # frozen and fine-tuned segmentation; both label fractions of --quick for the flood task
    flood = records[(records.task == "flood") & (records.metric == "water_iou")]
    assert set(flood["mode"]) == {"frozen", "finetuned"}
    assert set(flood.fraction) == {0.1, 1.0}
    assert len(flood) == 3 * 2 * 2
    # retrieval only for the encoders with both sensors, chance = 1 / n_tiles
    retrieval = records[records.task == "retrieval"]
    assert set(retrieval.encoder) == {"multimodal", "random"}
    chance = retrieval[retrieval.metric == "chance_top1"]["value"]
    assert (chance == 1 / 64).all()  # 16 held-out patches x 4 tiles of 60 px


def test_pretraining_log_and_summary(quick_run: Path) -> None:
    result = json.loads((quick_run / "results.json").read_text())
    log = {row["encoder"]: row for row in result["pretraining"]}
    assert set(log) == {"multimodal", "simclr"}
    for row in log.values():  # same budget for both methods: 8 patches x 4 tiles / batch 16
        assert row["steps"] == 2 and row["tiles_seen"] == 32
        assert all(math.isfinite(v) and v > 0 for v in row["loss"])
    summary = pd.read_csv(quick_run / "summary.csv")
    assert (summary["n"] == 1).all() and (summary["std"] == 0).all()
    csv = pd.read_csv(quick_run / "results.csv")
    assert len(csv) == len(result["records"])


def test_references_and_label_subsets(quick_run: Path) -> None:
    result = json.loads((quick_run / "results.json").read_text())
    refs = pd.DataFrame(result["references"])
    assert set(refs.task) == {"flood", "lulc", "bigearthnet"}
    assert refs["value"].between(0, 1).all()
    forest = refs[(refs.task == "lulc") & (refs.metric == "overall_accuracy")]["value"].item()
    assert forest == pytest.approx(3767 / 5100, abs=1e-3)  # forest share of the southern half
    subsets = {row["fraction"]: row for row in result["label_subsets"]}
    ratio = subsets[0.1]["labelled_pixels"] / subsets[1.0]["labelled_pixels"]
    assert 0.05 < ratio < 0.2
    assert 0 <= subsets[0.1]["water_share"] <= 1


def test_label_fractions_keep_whole_blocks(shared_data: Path) -> None:
    import eo_contrast as ec

    subsample_labels = _load().subsample_labels
    chip = ec.read_sen1floods11(shared_data / "sen1floods11_spain", "Spain_7370579")
    label = chip.label.isel(x=slice(0, 256))
    half = subsample_labels(label, 0.5, seed=0).values
    kept = (half >= 0).reshape(16, 32, 8, 32).any(axis=(1, 3))  # 32 px blocks kept
    assert kept.sum() == 64  # half of the 16 x 8 blocks (all hold labels)
    full = label.values.reshape(16, 32, 8, 32).transpose(0, 2, 1, 3)
    part = half.reshape(16, 32, 8, 32).transpose(0, 2, 1, 3)
    assert (part[kept] == full[kept]).all() and (part[~kept] == -1).all()
    assert (subsample_labels(label, 0.5, seed=0).values == half).all()
    assert (subsample_labels(label, 0.5, seed=1).values != half).any()
    assert subsample_labels(label, 1.0, seed=0) is label


def test_plots_are_written(quick_run: Path) -> None:
    for name in ("results-overview", "results-label-fraction", "results-pretrain-loss"):
        png = quick_run / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 5_000 < png.stat().st_size < 150_000


def test_bad_options_exit_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    main = _load().main
    with pytest.raises(SystemExit):
        main(["--out", "x", "--fractions", "0.1,2"])
    assert "values in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", "x", "--pretrain-steps", "0"])
    assert "--pretrain-steps must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", "x", "--threads", "0"])
    assert "--threads must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", "x", "--data", "/no/such/folder"])
    assert "lacks sen1floods11_spain" in capsys.readouterr().err
