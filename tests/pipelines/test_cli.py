"""The `eo-contrast` command line: the offline demo end to end, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from click.testing import CliRunner

from eo_contrast.pipelines.cli import main


def test_demo_runs_offline_and_writes_pairs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        main,
        ["demo", "--out", str(out), "--size", "128", "--pretrain-epochs", "1", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "pairs (max_dt=3D): 4" in result.output
    # the brief pretraining saved a loadable model for these bands
    import eo_contrast as ec

    model = ec.DualEncoder.load(out / "model.safetensors")
    assert model.bands["s1"] == ["vv", "vh"]
    assert model.method == "multimodal"
    # embeddings and the flood map went to Zarr with the CRS, and a preview was drawn
    emb = xr.open_zarr(out / "embeddings.zarr")["embedding"]
    assert emb.dims == ("time", "feature", "y", "x") and emb.sizes["y"] == 128 // 64
    assert emb.rio.crs == xr.open_zarr(out / "pairs.zarr").rio.crs
    flood = xr.open_zarr(out / "flood.zarr")["flood"]
    assert flood.dims == ("pair", "y", "x") and flood.shape == (4, 128, 128)
    assert set(np.unique(flood.values)) <= {-1, 0, 1}
    assert (out / "preview.png").stat().st_size > 10_000
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


def test_pretrain_verb_from_config_file(tmp_path: Path, shared_data: Path) -> None:
    import eo_contrast as ec

    pairs = ec.read_bigearthnet(shared_data / "bigearthnet_v2_subset", split="train")
    store = tmp_path / "pairs.zarr"
    ec.to_zarr(pairs[["s1", "s2"]].chunk({"pair": 4}), store)
    config = tmp_path / "pretrain.toml"
    config.write_text(
        f'[pretrain]\npairs = "{store}"\nepochs = 1\ntile = 32\nbatch-size = 8\nwidth = 8\n'
        f'device = "cpu"\nout = "{tmp_path / "m.safetensors"}"\n'
    )
    result = CliRunner().invoke(main, ["pretrain", "--config", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained" in result.output
    model = ec.DualEncoder.load(tmp_path / "m.safetensors")
    assert model.width == 8
    assert model.bands["s1"] == ["vv", "vh"]
    assert len(model.bands["s2"]) == 12

    # a key the verb does not take is named, in one line, with a non-zero status
    config.write_text("[pretrain]\nepoch = 2\n")
    bad = CliRunner().invoke(main, ["pretrain", str(store), "--config", str(config)])
    assert bad.exit_code == 2
    assert "unknown key 'epoch'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1

    missing = CliRunner().invoke(main, ["pretrain", str(tmp_path / "nope.zarr")])
    assert missing.exit_code == 2
    assert "nope.zarr" in missing.output


def test_pair_and_embed_verbs(tmp_path: Path) -> None:
    import time

    import eo_contrast as ec

    scene = ec.synthetic_scene(tmp_path / "scene", size=128, seed=1)
    pairs_store = tmp_path / "pairs.zarr"
    run = CliRunner().invoke(
        main,
        ["pair", str(scene.s1_items), str(scene.s2_items), "--out", str(pairs_store),
         "--chunks", "64", "--no-progress"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    pairs = xr.open_zarr(pairs_store)
    assert pairs.sizes["pair"] == 4 and pairs.rio.crs is not None

    model = ec.DualEncoder(width=8, seed=0).save(tmp_path / "tiny.safetensors")
    emb_store = tmp_path / "emb.zarr"
    args = ["embed", str(pairs_store), "--var", "s2", "--model", str(model), "--out",
            str(emb_store), "--device", "cpu", "--no-progress"]  # fmt: skip
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    emb = xr.open_zarr(emb_store)["embedding"]
    assert emb.dims == ("time", "feature", "y", "x") and emb.shape[0] == 4
    assert emb.rio.crs == pairs.rio.crs
    np.testing.assert_array_equal(emb["time"].values, pairs.s2_time.values)

    # an existing output is refused unless --overwrite (one line, non-zero status)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    # a Zarr input with several variables needs --var
    novar = CliRunner().invoke(main, ["embed", str(pairs_store), "--out", str(tmp_path / "x")])
    assert novar.exit_code == 2 and "--var" in novar.output

    # an unreachable scheduler is reported within seconds, not a hang
    start = time.monotonic()
    down = CliRunner().invoke(main, [*args[:-1], "--overwrite", "--scheduler", "tcp://127.0.0.1:9"])
    assert down.exit_code == 2 and "cannot reach the Dask scheduler" in down.output
    assert time.monotonic() - start < 30


def test_segment_verb_with_a_fitted_model(tmp_path: Path) -> None:
    import eo_contrast as ec

    scene = ec.synthetic_scene(tmp_path / "scene", size=128, seed=2)
    pairs_store = tmp_path / "pairs.zarr"
    ec.to_zarr(
        ec.pair(ec.load_stac(scene.s1_items, chunks=64), ec.load_stac(scene.s2_items, chunks=64)),
        pairs_store,
    )
    pairs = xr.open_zarr(pairs_store)
    label = xr.open_dataarray(scene.label, engine="rasterio", mask_and_scale=False)
    label = label.squeeze("band", drop=True).astype("int16").assign_coords(y=pairs.y, x=pairs.x)
    encoder = ec.DualEncoder(width=8, seed=0)
    for sensors in (["s1", "s2"], ["s1"]):
        seg = ec.fit_segmentation(
            pairs.isel(pair=[2]), label, encoder=encoder, classes=["dry", "water"], epochs=1,
            tile=32, batch_size=8, device="cpu", progress=False, sensors=sensors,
        )  # fmt: skip
        model = seg.save(tmp_path / f"seg-{len(sensors)}.safetensors")
        out = tmp_path / f"flood-{len(sensors)}.zarr"
        run = CliRunner().invoke(
            main,
            ["segment", str(pairs_store), "--model", str(model), "--out", str(out),
             "--device", "cpu", "--no-progress"],
        )  # fmt: skip
        assert run.exit_code == 0, run.output
        classes = xr.open_zarr(out)["classes"]
        assert classes.shape == (4, 128, 128)
        assert set(np.unique(classes.values)) <= {-1, 0, 1}
        assert classes.rio.crs == pairs.rio.crs
        expected = ec.segment(pairs if len(sensors) == 2 else _s1_cube(pairs), seg).values
        np.testing.assert_array_equal(classes.values, expected)

    bad = CliRunner().invoke(
        main, ["segment", str(pairs_store), "--model", str(tmp_path / "none.safetensors"),
               "--out", str(tmp_path / "x.zarr")],
    )  # fmt: skip
    assert bad.exit_code == 2 and "none.safetensors" in bad.output


def _s1_cube(pairs: xr.Dataset) -> xr.DataArray:
    s1 = pairs["s1"].rename({"pair": "time", "s1_band": "band", "s1_units": "units"})
    s1 = s1.drop_vars(["s1_time", "s2_time", "dt"]).assign_coords(time=pairs.s1_time.values)
    return s1
