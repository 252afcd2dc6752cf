"""S1/S2 time-proximity pairing on one grid (being written)."""
from __future__ import annotations
from typing import Any
import xarray as xr

def pair(s1: Any, s2: Any, *, max_dt: Any = "3D", one_to_one: bool = True) -> xr.Dataset:
    raise NotImplementedError
