"""The ``eo-contrast`` command line."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

#: Credentials seen by this run (storage options, environment): never printed
_SECRETS: set[str] = set()


class RunStopped(RuntimeError):
    """A write that started and stopped before the end (the store is left incomplete)."""


def _one_line(msg: object) -> str:
    text = " ".join(str(msg).split())
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class _OneLineErrors(click.Group):
    """Turn any failure of a verb into a one-line message and a non-zero exit status.

    Bad input exits with status 2; a write that stopped half-way (its store can be resumed)
    with status 1; an interrupted run (Ctrl-C) with 130.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except RunStopped as err:
            click.echo(f"eo-contrast: error: {_one_line(err)}", err=True)
            sys.exit(1)
        except (
            ValueError,
            TypeError,
            KeyError,
            FileExistsError,
            FileNotFoundError,
            PermissionError,
        ) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            click.echo(f"eo-contrast: error: {_one_line(msg)}", err=True)
            sys.exit(2)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eo-contrast")
def main() -> None:
    """Multimodal (Sentinel-1 / Sentinel-2) contrastive learning on xarray datacubes."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    # odc-geo's dask reprojection hands rasterio bare arrays with explicit transforms; rasterio
    # still warns about the missing geotransform of those in-memory arrays. Not actionable.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--size",
    type=click.IntRange(64, 4096),
    default=256,
    show_default=True,
    help="Edge of the sample scene, in 10 m pixels.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample scene.")
@click.option("--max-dt", default="3D", show_default=True, help="Largest S1/S2 time gap of a pair.")
@click.option(
    "--pretrain-epochs",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Epochs of the brief pretraining on the pairs (0 skips it).",
)
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def demo(
    out: Path,
    size: int,
    seed: int,
    max_dt: str,
    pretrain_epochs: int,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Run the main job offline on the embedded sample scene.

    Builds the sample S1/S2 scene as COGs with a STAC catalogue, loads it through STAC, pairs
    S1 and S2 in time on one grid, writes the pairs to OUT/pairs.zarr, pretrains a dual
    encoder briefly on them (OUT/model.safetensors), embeds the pairs (OUT/embeddings.zarr),
    fits and applies a flood segmentation (OUT/flood.zarr) and draws OUT/preview.png.

    \b
    Example:
      eo-contrast demo --out demo-output --overwrite
    """
    from eo_contrast.pipelines.demo import run_demo

    result = run_demo(
        out,
        size=size,
        seed=seed,
        max_dt=max_dt,
        overwrite=overwrite,
        progress=not no_progress,
        pretrain_epochs=pretrain_epochs,
    )
    click.echo(result.summary())


# ----------------------------------------------------------------------------- object storage


def _is_remote(path: str) -> bool:
    """A URL fsspec opens through a filesystem of its own (not a local path or file://)."""
    return "://" in path and not path.lower().startswith(("file://", "local://"))


def _storage_options(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Parsed ``--storage-options``; its credentials (and those in the environment) hidden."""
    from eo_contrast.pipelines.config import parse_storage_options, secret_values

    options = parse_storage_options(raw)
    _SECRETS.update(secret_values(options, os.environ))
    return options


def _options_for(path: str, options: dict[str, Any] | None) -> dict[str, Any] | None:
    return options if options and _is_remote(path) else None


def _has_s3_credentials(options: Mapping[str, Any] | None) -> bool:
    """Whether s3fs will find credentials: in the options, the environment or botocore's chain."""
    opts = dict(options or {})
    if opts.get("anon") or any(opts.get(k) for k in ("key", "secret", "token", "profile")):
        return True
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return True
    try:
        import botocore.session
    except ImportError:  # s3fs is missing: fsspec says so when the store is opened
        return True
    try:
        return botocore.session.Session().get_credentials() is not None
    except Exception:  # a broken profile: let s3fs report it
        return True


def _check_store(path: str, options: dict[str, Any] | None, role: str) -> None:
    """Fail early, in one line, on missing credentials or a missing bucket of a remote store."""
    from eo_contrast.store import _check_bucket, _credentials_hint, _protocol

    if not _is_remote(path):
        return
    protocol = _protocol(path)
    if protocol in ("s3", "s3a") and not _has_s3_credentials(options):
        raise PermissionError(
            f"no credentials found for the {role} {path!r}: "
            f"{_credentials_hint(protocol, '--storage-options')}"
        )
    try:
        _check_bucket(path, options)
    except (PermissionError, FileNotFoundError) as err:
        raise type(err)(f"{role}: {err}") from None


def _open_zarr(path: str, options: dict[str, Any] | None, what: str) -> Any:
    """``xr.open_zarr`` with a one-line error naming the store."""
    import xarray as xr

    from eo_contrast.store import _remote_failure

    _check_store(path, options, "input")
    kw: dict[str, Any] = {"storage_options": options} if options else {}
    try:
        return xr.open_zarr(path, **kw)
    except Exception as err:
        clear = _remote_failure(err, path)
        if clear is not None:
            raise clear from None
        if isinstance(err, OSError | ValueError | KeyError):
            raise ValueError(f"cannot open {path!r} as {what}: {err}") from None
        raise


# ----------------------------------------------------------------------------- config files


def _config_keys(command: click.Command) -> dict[str, click.Parameter]:
    """Config-file key (the long option name, or the argument's name) -> parameter."""
    keys: dict[str, click.Parameter] = {}
    for param in command.params:
        if param.name in (None, "config_path"):
            continue
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        key = longs[0][2:] if isinstance(param, click.Option) and longs else str(param.name)
        keys[key.replace("-", "_")] = param
    return keys


def _apply_config(verb: str, path: Path | None, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the options of ``verb`` read from ``path`` where no flag gave them."""
    from click.core import ParameterSource

    from eo_contrast.pipelines.config import read_config

    if path is None:
        return values
    ctx = click.get_current_context()
    keys = _config_keys(ctx.command)
    options = read_config(path, verb=verb, allowed=keys)
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)
    out = dict(values)
    for key, value in options.items():
        param = keys[key]
        name = str(param.name)
        if ctx.get_parameter_source(name) in given:
            continue  # flags win
        if key == "storage_options":
            out[name] = value  # a table, or a JSON string; never echoed
            continue
        try:
            out[name] = param.type_cast_value(ctx, value)
        except click.BadParameter as err:
            raise ValueError(f"config file {path}: {key} = {value!r}: {err.message}") from None
    return out


_PRETRAIN_KEYS = (
    "pairs", "out", "method", "epochs", "tile", "batch_size", "encoder", "width", "stem",
    "device", "seed", "lr", "checkpoint_dir", "checkpoint_every", "resume", "sensor",
    "max_nan_fraction", "storage_options", "max_steps",
)  # fmt: skip


@main.command()
@click.argument("pairs", required=False)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML/YAML file of options (top level or a [pretrain] table); flags win.",
)
@click.option("--out", help="Where to save the model (.safetensors).  [default: model.safetensors]")
@click.option(
    "--method",
    type=click.Choice(["multimodal", "simclr"]),
    help="multimodal: S1/S2 pairs as positives; simclr: augmentation baseline.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the pairs.  [default: 1]")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    help="Stop after this many updates in all, even inside an epoch.",
)
@click.option("--tile", type=click.IntRange(min=8), help="Tile edge in pixels.  [default: 64]")
@click.option("--batch-size", type=click.IntRange(min=2), help="Tiles per batch.  [default: 32]")
@click.option("--encoder", type=click.Choice(["resnet18", "resnet50"]), help="[default: resnet18]")
@click.option("--width", type=click.IntRange(min=1), help="Encoder width.  [default: 64]")
@click.option("--stem", type=click.Choice(["imagenet", "small"]), help="[default: imagenet]")
@click.option("--device", help="auto, cpu, cuda, cuda:1, mps.  [default: auto]")
@click.option("--seed", type=int, help="[default: 0]")
@click.option("--lr", type=float, help="Peak learning rate.  [default: 1e-3]")
@click.option("--checkpoint-dir", help="Folder for periodic training checkpoints.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Steps between checkpoints.")
@click.option("--resume", help="Training checkpoint (file or folder) to continue from.")
@click.option("--sensor", type=click.Choice(["s1", "s2"]), help="Sensor of --method simclr.")
@click.option("--max-nan-fraction", type=click.FloatRange(0, 1), help="[default: 0.5]")
@click.option(
    "--storage-options",
    help="JSON object of fsspec options for a PAIRS URL (credentials, endpoint_url, ...).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def pretrain(config_path: Path | None, no_progress: bool, **flags: object) -> None:
    """Pretrain a dual encoder on S1/S2 pairs stored in Zarr (PAIRS: a path or fsspec URL).

    PAIRS is a store written by `ec.to_zarr(ec.pair(s1, s2), ...)`, by `eo-contrast demo`
    (OUT/pairs.zarr) or by `eo-contrast corpus` (streamed shard by shard, valid chips only).
    The model is saved as one safetensors file with its bands, units and normalisation
    statistics.

    \b
    Examples:
      eo-contrast pretrain demo-output/pairs.zarr --epochs 5 --out model.safetensors
      eo-contrast pretrain --config pretrain.toml --device cuda
      eo-contrast pretrain s3://bucket/pairs.zarr --out model.safetensors
    """
    from eo_contrast.corpus import CORPUS_FORMAT, open_corpus
    from eo_contrast.pipelines.config import read_config
    from eo_contrast.training import pretrain as run_pretrain

    options = (
        read_config(config_path, verb="pretrain", allowed=_PRETRAIN_KEYS) if config_path else {}
    )
    options.update({k: v for k, v in flags.items() if v is not None})
    storage = _storage_options(options.pop("storage_options", None))
    store = options.pop("pairs", None)
    if store is None:
        raise click.UsageError("give the pairs store as PAIRS or as 'pairs' in --config")
    out = Path(str(options.pop("out", "model.safetensors")))
    store = str(store)
    pairs = _open_zarr(store, _options_for(store, storage), "the pairs store (Zarr)")
    if pairs.attrs.get("eo_contrast_format") == CORPUS_FORMAT:
        # a pair corpus (eo-contrast corpus): streamed shard by shard, valid chips only
        pairs = open_corpus(store, storage_options=_options_for(store, storage))
    model = run_pretrain(pairs, progress=not no_progress, **options)
    path = model.save(out)
    hist = model.history
    click.echo(
        f"trained {len(hist)} steps: loss {hist['loss'].iloc[0]:.3f} -> {hist['loss'].iloc[-1]:.3f}; "
        f"wrote {path}"
    )


# ----------------------------------------------------------------------------- Dask


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a tcp:// (or tls://) scheduler address."""
    import socket

    proto, _, rest = address.rpartition("://")
    if (proto or "tcp") not in ("tcp", "tls"):
        return  # other transports (ucx, ws, inproc): distributed's own timeout applies
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"--scheduler {address!r} is not a scheduler address such as tcp://host:8786"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(
            f"cannot reach the Dask scheduler at {address!r} ({reason}); check the address "
            "(tcp://host:8786) and that the scheduler is running"
        ) from None


def _local_gpus(device: str) -> list[str]:
    """The CUDA devices local workers share out, one each: for ``device`` auto or cuda."""
    if device.strip().lower() not in ("auto", "cuda"):
        return []  # cpu, mps, or one named device (cuda:1) that every worker uses
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _worker_options(workers: int, gpus: list[str]) -> list[dict[str, Any]]:
    """Options of each local worker (a Nanny): one thread; with GPUs, one device each.

    With GPUs, worker ``i`` sees only device ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``)
    and declares the Dask resource ``GPU=1``, so that it runs one model task at a time.

    Examples
    --------
    >>> [o.get("env") for o in _worker_options(3, ["0", "1"])]
    [{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}, {'CUDA_VISIBLE_DEVICES': '0'}]
    >>> _worker_options(1, [])
    [{'nthreads': 1}]
    """
    options: list[dict[str, Any]] = []
    for i in range(workers):
        opts: dict[str, Any] = {"nthreads": 1}
        if gpus:
            opts["resources"] = {"GPU": 1}
            opts["env"] = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}
        options.append(opts)
    return options


@contextlib.contextmanager
def _dask_context(scheduler: str | None, workers: int | None, device: str) -> Iterator[Any]:
    """Run dask work on ``scheduler`` (an address), ``workers`` local processes, or dask's
    local threads; yields the distributed client or None."""
    if scheduler and workers:
        raise ValueError("give --scheduler or --workers, not both")
    if not scheduler and not workers:
        yield None
        return
    from distributed import Client

    if scheduler:
        _check_reachable(scheduler)
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ValueError(
                f"cannot reach the Dask scheduler at {scheduler!r} within 10 s ({err}); check "
                "the address (tcp://host:8786) and that the scheduler is running"
            ) from None
        with client:
            yield client
        return
    assert workers is not None
    gpus = _local_gpus(device)
    if gpus:
        from distributed import Nanny, Scheduler, SpecCluster

        specs = {
            i: {"cls": Nanny, "options": opts}
            for i, opts in enumerate(_worker_options(workers, gpus))
        }
        cluster: Any = SpecCluster(
            workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard": False}}
        )
    else:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with cluster, Client(cluster) as client:
        yield client


def _refuse_existing(
    out: str, options: dict[str, Any] | None, overwrite: bool, resume: bool
) -> None:
    """Refuse an existing output store (before any work) unless --overwrite or --resume."""
    from eo_contrast.store import _store_state

    if overwrite and resume:
        raise ValueError("give --overwrite or --resume, not both")
    _check_store(out, options, "output")
    if not (overwrite or resume) and _store_state(out, options) != "missing":
        raise FileExistsError(
            f"{out} already exists: pass --overwrite to replace it, or --resume to finish an "
            "interrupted write"
        )


def _write(
    obj: Any,
    out: str,
    options: dict[str, Any] | None,
    *,
    overwrite: bool,
    resume: bool,
    progress: bool,
) -> None:
    from eo_contrast.store import _to_zarr

    mode = "w" if overwrite else "w-"
    try:
        with _left_incomplete(out, doing="writing", parts="chunks"):
            _to_zarr(obj, out, mode=mode, resume=resume, storage_options=options, progress=progress)
    except FileExistsError:
        raise FileExistsError(
            f"{out} already exists: pass --overwrite to replace it, or --resume to finish an "
            "interrupted write"
        ) from None


@contextlib.contextmanager
def _left_incomplete(out: str, *, doing: str, parts: str) -> Iterator[None]:
    """Say how to finish ``out`` when a resumable write into it stops part-way.

    Ctrl-C exits with status 130; a failure that left the store incomplete (a note on the
    exception says so) becomes a :class:`RunStopped` naming ``--resume``; other errors pass.
    """
    try:
        yield
    except KeyboardInterrupt:
        click.echo(
            f"eo-contrast: interrupted; {out} is left incomplete: rerun the same command with "
            f"--resume to write the {parts} still missing",
            err=True,
        )
        sys.exit(130)
    except Exception as err:
        if not any("left incomplete" in n for n in getattr(err, "__notes__", [])):
            raise
        raise RunStopped(
            f"{doing} {out} stopped ({type(err).__name__}: {err}); the store is left "
            f"incomplete: rerun the same command with --resume to write the {parts} still missing"
        ) from err


def _open_input(path: str, var: str | None, options: dict[str, Any] | None) -> Any:
    """A cube from a STAC JSON file or a Zarr store (a cube, or one sensor of a pairs store)."""
    from eo_contrast.stac import load_stac

    if path.lower().endswith((".json", ".geojson")):
        return load_stac(path)
    ds = _open_zarr(path, options, "a STAC JSON file or a Zarr store")
    names = [v for v in ds.data_vars if v != "spatial_ref"]
    if var is None:
        if len(names) != 1:
            raise ValueError(f"{path} holds the variables {names}: pick one with --var")
        var = names[0]
    if var not in ds.data_vars:
        raise ValueError(f"{path} has no variable {var!r}; it has {names}")
    da = ds[var]
    band = next((d for d in da.dims if str(d).endswith("band")), None)
    if band is not None and band != "band":
        da = da.rename({band: "band"})
        units = f"{str(band)[: -len('band')]}units"
        if units in da.coords:
            da = da.rename({units: "units"})
    if "pair" in da.dims:
        # one sensor of a pairs store: its scenes along time
        t = f"{var}_time"
        times = da[t].values if t in da.coords else None
        da = da.drop_vars([c for c in ("s1_time", "s2_time", "dt") if c in da.coords])
        da = da.rename({"pair": "time"})
        if times is not None:
            da = da.assign_coords(time=times)
    return da


_RUN_OPTIONS = [
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML/YAML file of options (top level or a table named after the verb); flags win.",
    ),
    click.option("--scheduler", help="Address of a running Dask scheduler (tcp://host:8786)."),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Run on a local Dask cluster of this many worker processes (one GPU each when "
        "the device is a GPU).",
    ),
    click.option(
        "--storage-options",
        help="JSON object of fsspec options for URL inputs/outputs (credentials, "
        "endpoint_url, anon, ...). Default: credentials from the environment (AWS_*).",
    ),
    click.option("--overwrite", is_flag=True, help="Replace an existing output store."),
    click.option("--resume", is_flag=True, help="Finish an interrupted write of the output store."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
]


def _with_run_options(f: Any) -> Any:
    for option in reversed(_RUN_OPTIONS):
        f = option(f)
    return f


def _required(values: dict[str, Any], name: str, flag: str) -> Any:
    value = values.get(name)
    if value is None:
        raise ValueError(f"give {flag} (or '{name}' in --config)")
    return value


@main.command("pair")
@click.argument("s1_items", required=False)
@click.argument("s2_items", required=False)
@click.option("--out", help="Output Zarr store (path or fsspec URL).  [required]")
@click.option("--max-dt", default="3D", show_default=True, help="Largest S1/S2 time gap.")
@click.option("--s2-bands", help="Comma-separated S2 bands (default: all).")
@click.option(
    "--chunks",
    type=click.IntRange(min=16),
    default=512,
    show_default=True,
    help="Spatial chunk edge in pixels (a multiple of your tile).",
)
@_with_run_options
def pair_cmd(config_path: Path | None, **values: Any) -> None:
    """Pair S1 and S2 scenes from STAC JSON files by time and write the pairs to Zarr.

    \b
    Examples:
      eo-contrast pair s1_items.json s2_items.json --out pairs.zarr --max-dt 3D
      eo-contrast pair s1_items.json s2_items.json --out s3://bucket/pairs.zarr --workers 2
    """
    from eo_contrast.pairing import pair
    from eo_contrast.stac import load_stac

    v = _apply_config("pair", config_path, values)
    s1_items = _required(v, "s1_items", "S1_ITEMS")
    s2_items = _required(v, "s2_items", "S2_ITEMS")
    out = str(_required(v, "out", "--out"))
    storage = _storage_options(v["storage_options"])
    so_out = _options_for(out, storage)
    _refuse_existing(out, so_out, v["overwrite"], v["resume"])
    bands = [b.strip() for b in v["s2_bands"].split(",")] if v["s2_bands"] else None
    with _dask_context(v["scheduler"], v["workers"], "cpu"):
        s1 = load_stac(s1_items, chunks=v["chunks"])
        s2 = load_stac(s2_items, bands, chunks=v["chunks"])
        pairs = pair(s1, s2, max_dt=v["max_dt"])
        _write(
            pairs, out, so_out, overwrite=v["overwrite"], resume=v["resume"],
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(f"wrote {pairs.sizes['pair']} pairs {dict(pairs.sizes)} to {out}")


@main.command("embed")
@click.argument("source", required=False)
@click.option("--out", help="Output Zarr store (path or fsspec URL).  [required]")
@click.option("--model", "model_path", help="DualEncoder checkpoint (default: packaged weights).")
@click.option("--var", help="Variable of a Zarr input with several (e.g. s1 or s2 of pairs).")
@click.option("--level", type=click.Choice(["tile", "pixel"]), default="tile", show_default=True)
@click.option("--tile", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@_with_run_options
def embed_cmd(config_path: Path | None, **values: Any) -> None:
    """Embed a cube (STAC JSON file or Zarr store) and write the embeddings to Zarr.

    SOURCE and --out are local paths or fsspec URLs (s3://bucket/cube.zarr, ...); credentials
    come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) or
    --storage-options, and are never printed or written.

    \b
    Examples:
      eo-contrast embed demo-output/pairs.zarr --var s2 --out emb.zarr
      eo-contrast embed s1_items.json --out emb.zarr --workers 2 --model model.safetensors
      eo-contrast embed s3://bucket/pairs.zarr --var s2 --out s3://bucket/emb.zarr \\
          --scheduler tcp://scheduler:8786
    """
    from eo_contrast.inference import embed

    v = _apply_config("embed", config_path, values)
    source = str(_required(v, "source", "SOURCE"))
    out = str(_required(v, "out", "--out"))
    storage = _storage_options(v["storage_options"])
    so_out = _options_for(out, storage)
    _refuse_existing(out, so_out, v["overwrite"], v["resume"])
    so_in = _options_for(source, storage)
    if not source.lower().endswith((".json", ".geojson")):
        _check_store(source, so_in, "input")
    with _dask_context(v["scheduler"], v["workers"], v["device"]):
        cube = _open_input(source, v["var"], so_in)
        emb = embed(
            cube, v["model_path"], level=v["level"], tile=v["tile"], batch_size=v["batch_size"],
            device=v["device"],
        )  # fmt: skip
        _write(
            emb.rename("embedding"), out, so_out, overwrite=v["overwrite"], resume=v["resume"],
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(f"wrote embedding {dict(emb.sizes)} to {out}")


@main.command("segment")
@click.argument("source", required=False)
@click.option(
    "--model",
    "model_path",
    help="Segmentation model file (SegmentationModel.save / eo-contrast demo).  [required]",
)
@click.option("--out", help="Output Zarr store (path or fsspec URL).  [required]")
@click.option("--var", help="Variable of a Zarr input with several, for a one-sensor model.")
@click.option("--probabilities", is_flag=True, help="Write class probabilities, not class ids.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@_with_run_options
def segment_cmd(config_path: Path | None, **values: Any) -> None:
    """Segment a cube (STAC JSON file or Zarr store) with a fitted model, write it to Zarr.

    A model using S1 and S2 reads both from a pairs store (`s1` and `s2` variables); a
    one-sensor model reads that sensor's variable (or --var) or a STAC JSON file. The output
    holds class ids (-1 where there is no data) or, with --probabilities, one layer per class.

    \b
    Example:
      eo-contrast segment demo-output/pairs.zarr --model demo-output/flood_model.safetensors \\
          --out flood.zarr
    """
    from eo_contrast.inference import segment
    from eo_contrast.segmentation import SegmentationModel

    v = _apply_config("segment", config_path, values)
    source = str(_required(v, "source", "SOURCE"))
    model_path = _required(v, "model_path", "--model")
    out = str(_required(v, "out", "--out"))
    storage = _storage_options(v["storage_options"])
    so_out = _options_for(out, storage)
    so_in = _options_for(source, storage)
    _refuse_existing(out, so_out, v["overwrite"], v["resume"])
    is_stac = source.lower().endswith((".json", ".geojson"))
    if not is_stac:
        _check_store(source, so_in, "input")
    seg = SegmentationModel.load(model_path)
    var = v["var"]
    with _dask_context(v["scheduler"], v["workers"], v["device"]):
        if len(seg.sensors) == 2 and not is_stac:
            cube: Any = _open_zarr(source, so_in, "a pairs store (Zarr)")
            missing = [s for s in seg.sensors if s not in cube.data_vars]
            if missing:
                raise ValueError(
                    f"{model_path} uses S1 and S2 but {source} has no {missing} variable(s); "
                    "give a pairs store (eo-contrast pair)"
                )
        else:
            if var is None and not is_stac:
                # a pairs store: the model's sensor; a one-variable store: that variable
                names = list(_open_zarr(source, so_in, "a Zarr store").data_vars)
                var = seg.sensors[0] if seg.sensors[0] in names else None
            cube = _open_input(source, var, so_in)
        pred = segment(
            cube, seg, probabilities=v["probabilities"], batch_size=v["batch_size"],
            device=v["device"],
        )  # fmt: skip
        name = "probability" if v["probabilities"] else "classes"
        _write(
            pred.rename(name), out, so_out, overwrite=v["overwrite"], resume=v["resume"],
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(f"wrote {name} {dict(pred.sizes)} (classes {list(seg.classes)}) to {out}")


if __name__ == "__main__":  # pragma: no cover
    main()


from eo_contrast.pipelines import corpus_cli  # noqa: E402,F401  (registers the corpus verb)
