"""STAC items -> datacube (being written)."""
from __future__ import annotations
from typing import Any

def load_stac(items: Any, bands: Any = None, **kwargs: Any) -> Any:
    raise NotImplementedError
