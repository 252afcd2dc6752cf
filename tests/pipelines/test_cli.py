"""The `eo-contrast` command line: the offline demo end to end, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr
from click.testing import CliRunner

from eo_contrast.pipelines.cli import main


def test_demo_runs_offline_and_writes_pairs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--size", "128", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "pairs (max_dt=3D): 4" in result.output
    pairs = xr.open_zarr(out / "pairs.zarr")
    assert pairs.sizes["pair"] == 4
    assert set(pairs.data_vars) >= {"s1", "s2"}
    assert pairs.rio.crs is not None
    assert pd.to_timedelta(pairs.dt.values).max() <= pd.Timedelta("3D")  # every pair within max_dt
    # S1 in dB, S2 reflectance: physical units after the STAC scale/offset and dB conversion
    s1 = pairs.s1.values
    s2 = pairs.s2.values
    assert -40 < float(xr.DataArray(s1).median()) < 5
    assert 0 <= float(xr.DataArray(s2).median()) <= 1

    # running again without --overwrite refuses, in one line, with a non-zero status
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--size", "128", "--no-progress"])
    assert again.exit_code != 0
    assert "--overwrite" in again.output
    assert len(again.output.strip().splitlines()) == 1


def test_bad_max_dt_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["demo", "--out", str(tmp_path / "x"), "--size", "64", "--max-dt", "soon", "--no-progress"],
    )
    assert result.exit_code == 2
    assert "max_dt" in result.output
    assert len(result.output.strip().splitlines()) == 1
