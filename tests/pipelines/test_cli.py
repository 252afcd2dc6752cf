"""The `eo-contrast` command line: the offline demo end to end, and one-line errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
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
    emb = xr.open_zarr(out / "embeddings.zarr")
    assert set(emb.data_vars) == {"s1", "s2"}  # the pairs Dataset embedded as it is
    for sensor in ("s1", "s2"):
        assert emb[sensor].dims == ("pair", "feature", "y", "x") and emb.sizes["y"] == 128 // 64
        assert bool(emb[sensor].notnull().any())
    assert not np.allclose(emb.s1.values, emb.s2.values)  # one encoder each
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

    # --max-steps (a flag, which wins over the file) caps the updates
    capped = CliRunner().invoke(
        main, ["pretrain", "--config", str(config), "--no-progress", "--max-steps", "2"]
    )
    assert capped.exit_code == 0, capped.output
    assert capped.output.startswith("trained 2 steps")

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


# ----------------------------------------------------------------------------- object storage

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzS3cr3tCl1Pr0be"
ACCESS_KEY = "AKIACLIPROBE7EXAMPLE"


def _small_cube() -> xr.DataArray:
    """An S1-like cube in dB, 1 x 2 x 64 x 64 in four 32 px chunks, EPSG:32630."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:64, 0:64]
    water = (np.sin(yy / 9.0) + np.cos(xx / 13.0)) > 0.8
    data = np.stack([np.where(water, -22.0, -9.0), np.where(water, -28.0, -15.0)]) + rng.normal(
        0, 2, (2, 64, 64)
    )
    cube = xr.DataArray(
        data[None].astype("float32"),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array(["2023-10-14"], dtype="datetime64[ns]"),
            "band": ["vv", "vh"],
            "units": ("band", ["dB", "dB"]),
            "y": 4_500_000.0 - 10.0 * np.arange(64) - 5.0,
            "x": 500_000.0 + 10.0 * np.arange(64) + 5.0,
        },
        name="cube",
    )
    return cube.rio.write_crs("EPSG:32630").chunk({"time": 1, "band": -1, "y": 32, "x": 32})


@pytest.fixture(scope="module")
def s3_cube(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bucket holding the small cube, a tiny model file, and the expected embedding."""
    import eo_contrast as ec

    name = f"cli-{uuid.uuid4().hex[:10]}"
    bucket = s3_server.make_bucket(name)
    cube = _small_cube()
    ec.to_zarr(cube, f"{bucket}/cube.zarr", storage_options=s3_server.storage_options)
    folder = tmp_path_factory.mktemp("s3-cli")
    model = ec.DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0).save(folder / "m.safetensors")
    expected = ec.embed(cube, model, tile=16, device="cpu").values
    return {"bucket": bucket, "name": name, "model": model, "expected": expected}


@pytest.fixture(autouse=True)
def _fresh_filesystems() -> None:
    """fsspec caches filesystems by their arguments: each test starts from fresh ones, which
    read the environment of that test's runs."""
    import sys

    if "s3fs" in sys.modules:
        sys.modules["s3fs"].S3FileSystem.clear_instance_cache()


def _embed_args(source: str, out: str, model: Path, *extra: str) -> list[str]:
    return ["embed", source, "--out", out, "--model", str(model), "--tile", "16",
            "--device", "cpu", *extra]  # fmt: skip


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("eo-contrast: error: ")
    return lines[0]


def _objects(s3_server: Any, root: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    return {path: fs.cat_file(path) for path in fs.find(root)}


@pytest.mark.network_server
def test_embed_reads_and_writes_s3_with_credentials_from_the_environment(s3_server, s3_cube):
    bucket, model = s3_cube["bucket"], s3_cube["model"]
    out = f"{bucket}/emb.zarr"
    args = _embed_args(f"{bucket}/cube.zarr", out, model, "--no-progress")
    run = CliRunner().invoke(main, args, env=s3_server.env)
    assert run.exit_code == 0, run.output
    emb = xr.open_zarr(out, storage_options=s3_server.storage_options)["embedding"]
    np.testing.assert_array_equal(emb.values, s3_cube["expected"])
    assert emb.rio.crs.to_epsg() == 32630

    # an existing output store is refused (before any work) unless --overwrite or --resume
    again = _one_line_error(CliRunner().invoke(main, args, env=s3_server.env))
    assert "already exists" in again and "--overwrite" in again and "--resume" in again
    resumed = CliRunner().invoke(main, [*args, "--resume"], env=s3_server.env)
    assert resumed.exit_code == 0, resumed.output  # complete already: nothing to do
    both = _one_line_error(CliRunner().invoke(main, [*args, "--overwrite", "--resume"]))
    assert "--overwrite or --resume, not both" in both


@pytest.mark.network_server
def test_storage_options_from_a_flag_or_a_config_file(s3_server, s3_cube, tmp_path):
    bucket, model = s3_cube["bucket"], s3_cube["model"]
    no_env = {k: None for k in s3_server.env}  # credentials only from the options
    options = {
        "key": ACCESS_KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
    }
    run = CliRunner().invoke(
        main,
        _embed_args(f"{bucket}/cube.zarr", f"{bucket}/a.zarr", model, "--no-progress",
                    "--storage-options", json.dumps(options)),
        env=no_env,
    )  # fmt: skip
    assert run.exit_code == 0, run.output

    config = tmp_path / "embed.toml"
    config.write_text(
        f'[embed]\nsource = "{bucket}/cube.zarr"\nout = "{bucket}/b.zarr"\n'
        f'model = "{model}"\ntile = 16\ndevice = "cpu"\nno-progress = true\n'
        f'[embed.storage_options]\nkey = "{ACCESS_KEY}"\nsecret = "{SECRET}"\n'
        f'client_kwargs = {{ endpoint_url = "{s3_server.endpoint}", region_name = "us-east-1" }}\n'
    )
    # the file gives the credentials; flags win over its other keys (here the tile size)
    run = CliRunner().invoke(main, ["embed", "--config", str(config), "--tile", "32"], env=no_env)
    assert run.exit_code == 0, run.output
    flagged = xr.open_zarr(f"{bucket}/a.zarr", storage_options=s3_server.storage_options)
    np.testing.assert_array_equal(flagged["embedding"].values, s3_cube["expected"])
    from_file = xr.open_zarr(f"{bucket}/b.zarr", storage_options=s3_server.storage_options)
    assert from_file["embedding"].sizes["y"] == 64 // 32  # --tile 32, not the file's 16
    import eo_contrast as ec

    expected = ec.embed(_small_cube(), model, tile=32, device="cpu").values
    np.testing.assert_array_equal(from_file["embedding"].values, expected)

    # bad keys and values are named
    config.write_text("[embed]\ntiles = 16\n")
    assert "unknown key 'tiles'" in _one_line_error(
        CliRunner().invoke(main, ["embed", "--config", str(config)])
    )
    config.write_text('[embed]\ntile = "big"\n')
    assert "tile = 'big'" in _one_line_error(
        CliRunner().invoke(main, ["embed", "--config", str(config)])
    )


@pytest.mark.network_server
def test_object_storage_errors_are_one_line(s3_server, s3_cube):
    bucket, model = s3_cube["bucket"], s3_cube["model"]
    source = f"{bucket}/cube.zarr"
    env = s3_server.env

    out_missing = _one_line_error(
        CliRunner().invoke(main, _embed_args(source, "s3://no-such-bucket/e.zarr", model), env=env)
    )
    assert "bucket 'no-such-bucket'" in out_missing and "does not exist" in out_missing
    in_missing = _one_line_error(
        CliRunner().invoke(
            main, _embed_args("s3://gone-bucket/c.zarr", f"{bucket}/e.zarr", model), env=env
        )
    )
    assert "bucket 'gone-bucket'" in in_missing and "input" in in_missing

    no_credentials = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
        "AWS_CONFIG_FILE": "/nonexistent/config",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": s3_server.endpoint,
    }
    missing = _one_line_error(
        CliRunner().invoke(main, _embed_args(source, f"{bucket}/e.zarr", model), env=no_credentials)
    )
    assert "no credentials found" in missing and bucket in missing
    assert "AWS_ACCESS_KEY_ID" in missing and "AWS_SECRET_ACCESS_KEY" in missing
    assert "--storage-options" in missing

    bad = _one_line_error(
        CliRunner().invoke(
            main,
            _embed_args(source, f"{bucket}/e.zarr", model, "--storage-options",
                        f'{{"secret": "{SECRET}"'),
        )
    )  # fmt: skip
    assert "must be a JSON object" in bad and "not valid JSON" in bad
    assert SECRET not in bad


@pytest.mark.network_server
def test_credentials_are_never_printed_or_written(s3_server, s3_cube):
    bucket, model = s3_cube["bucket"], s3_cube["model"]
    env = {**s3_server.env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    out = f"{bucket}/secret-test.zarr"
    run = CliRunner().invoke(main, _embed_args(f"{bucket}/cube.zarr", out, model), env=env)
    assert run.exit_code == 0, run.output
    # runs that fail print no credentials either: an existing store, a missing bucket, a bad
    # option whose value would leak if it were echoed
    failed = [
        CliRunner().invoke(main, _embed_args(f"{bucket}/cube.zarr", out, model), env=env),
        CliRunner().invoke(
            main, _embed_args(f"{bucket}/cube.zarr", "s3://nope-bucket/x.zarr", model), env=env
        ),
        CliRunner().invoke(
            main,
            _embed_args(f"{bucket}/cube.zarr", f"{bucket}/y.zarr", model,
                        "--storage-options", json.dumps({"secret": SECRET, "bogus_option": 1})),
            env=env,
        ),
    ]  # fmt: skip
    assert all(r.exit_code != 0 for r in failed)
    assert "already exists" in failed[0].output
    assert "bucket 'nope-bucket'" in failed[1].output
    assert "does not take one of the storage_options" in failed[2].output
    assert "bogus_option" in failed[2].output
    objects = _objects(s3_server, f"{s3_cube['name']}/secret-test.zarr")
    assert len(objects) > 4 and any(p.endswith("zarr.json") for p in objects)
    opened = xr.open_zarr(out, storage_options=s3_server.storage_options)
    attrs = json.dumps([opened.attrs, *(v.attrs for v in opened.variables.values())], default=str)
    for secret in (SECRET, ACCESS_KEY):
        assert secret not in run.output
        for r in failed:
            assert secret not in r.output
        assert secret not in attrs
        for path, blob in objects.items():
            assert secret.encode() not in blob, path


def test_scheduler_address_errors_are_one_line_and_fast(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source, out = str(tmp_path / "in.zarr"), str(tmp_path / "out.zarr")
    start = time.monotonic()
    down = _one_line_error(
        CliRunner().invoke(main, ["embed", source, "--out", out, "--scheduler",
                                  f"tcp://127.0.0.1:{port}"])
    )  # fmt: skip
    assert f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'" in down
    assert time.monotonic() - start < 30
    malformed = _one_line_error(
        CliRunner().invoke(main, ["embed", source, "--out", out, "--scheduler", "localhost"])
    )
    assert "not a scheduler address such as tcp://host:8786" in malformed
    both = _one_line_error(
        CliRunner().invoke(main, ["embed", source, "--out", out, "--scheduler",
                                  "tcp://127.0.0.1:1", "--workers", "2"])
    )  # fmt: skip
    assert "--scheduler or --workers, not both" in both


# ----------------------------------------------------------------------------- the package


def test_every_verb_that_computes_takes_scheduler_and_workers() -> None:
    from eo_contrast.pipelines.cli.common import DASK_OPTIONS

    assert len(DASK_OPTIONS) == 2
    for verb in ("demo", "pair", "pretrain", "embed", "segment", "corpus"):
        command = main.commands[verb]
        opts = {o: p for p in command.params for o in getattr(p, "opts", [])}
        assert "--scheduler" in opts and "--workers" in opts, verb
        assert opts["--workers"].type.min == 1, verb
    # one shared definition: the same help on every verb
    helps = {
        str(p.help)
        for c in main.commands.values()
        for p in c.params
        if "--workers" in getattr(p, "opts", [])
    }
    assert len(helps) == 1


def test_python_dash_m_runs_every_verb() -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "eo_contrast.pipelines.cli", "corpus", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "--chips-per-shard" in run.stdout and "--scheduler" in run.stdout


def _tiny_pairs(tmp_path: Path) -> Path:
    import eo_contrast as ec

    scene = ec.synthetic_scene(tmp_path / "scene", size=64, seed=3)
    store = tmp_path / "pairs.zarr"
    ec.to_zarr(
        ec.pair(ec.load_stac(scene.s1_items, chunks=32), ec.load_stac(scene.s2_items, chunks=32)),
        store,
    )
    return store


def test_pretrain_on_local_workers_and_scheduler_errors(tmp_path: Path) -> None:
    store = _tiny_pairs(tmp_path)
    args = ["pretrain", str(store), "--tile", "32", "--batch-size", "4", "--width", "8",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "m.safetensors")]  # fmt: skip
    run = CliRunner().invoke(main, [*args, "--workers", "1"])
    assert run.exit_code == 0, run.output
    assert run.output.startswith("trained ") and (tmp_path / "m.safetensors").is_file()

    both = _one_line_error(
        CliRunner().invoke(main, [*args, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    )
    assert "--scheduler or --workers, not both" in both
    malformed = _one_line_error(CliRunner().invoke(main, [*args, "--scheduler", "localhost"]))
    assert "not a scheduler address such as tcp://host:8786" in malformed
    # from a config file, like the other options
    config = tmp_path / "pretrain.toml"
    config.write_text('[pretrain]\nworkers = "two"\n')
    bad = _one_line_error(CliRunner().invoke(main, [*args, "--config", str(config)]))
    assert "workers = 'two'" in bad
    config.write_text('[pretrain]\nscheduler = "localhost"\n')
    from_file = _one_line_error(CliRunner().invoke(main, [*args, "--config", str(config)]))
    assert "not a scheduler address" in from_file


def test_demo_scheduler_errors_are_one_line(tmp_path: Path) -> None:
    args = ["demo", "--out", str(tmp_path / "d"), "--size", "64", "--no-progress"]
    both = _one_line_error(
        CliRunner().invoke(main, [*args, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    )
    assert "--scheduler or --workers, not both" in both
    malformed = _one_line_error(CliRunner().invoke(main, [*args, "--scheduler", "localhost"]))
    assert "not a scheduler address such as tcp://host:8786" in malformed
