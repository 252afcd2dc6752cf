"""Readers for real formats and a synthetic scene maker (being written)."""
from typing import Any

def read_sen1floods11(*a: Any, **k: Any) -> Any:
    raise NotImplementedError

def read_bigearthnet(*a: Any, **k: Any) -> Any:
    raise NotImplementedError

def synthetic_scene(*a: Any, **k: Any) -> Any:
    raise NotImplementedError
