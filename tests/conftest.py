"""Shared fixtures: the real data folder, temporary stores, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the real EO data lives: ``$EO_CONTRAST_SHARED_DATA`` or ``../shared/data``."""
    env = os.environ.get("EO_CONTRAST_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests that need it are skipped, saying why, where it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(
            f"real data folder {root} not found: set EO_CONTRAST_SHARED_DATA to the shared/data "
            "folder (CI always has it)"
        )
    return root
