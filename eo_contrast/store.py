"""Zarr write-back (being written)."""
from __future__ import annotations
from typing import Any

def to_zarr(obj: Any, store: Any, *, mode: str = "w-", resume: bool = False, storage_options: Any = None) -> Any:
    raise NotImplementedError
