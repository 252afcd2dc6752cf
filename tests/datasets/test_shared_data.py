"""The shared data folder's one home: its environment variable and its default place."""

from __future__ import annotations

from pathlib import Path

import pytest

from eo_contrast.datasets.shared_data import ENV_VAR, example_path, shared_data_dir

REPO = Path(__file__).resolve().parents[2]


def test_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert shared_data_dir() == tmp_path
    assert example_path("sen1floods11_handlabeled") == tmp_path / "sen1floods11_handlabeled"


def test_default_is_next_to_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert shared_data_dir() == REPO.parent / "shared" / "data"
    monkeypatch.setenv(ENV_VAR, "")
    assert shared_data_dir() == REPO.parent / "shared" / "data"
