"""What the verbs of the ``eo-contrast`` command line share.

One-line errors and exit statuses, the run options (``--config``, ``--scheduler``,
``--workers``, ``--storage-options``, ``--overwrite``, ``--resume``, ``--no-progress``), config
files, object-store checks, the opening of inputs and writing of outputs, and the Dask context
a verb computes in. Every verb module imports this one and nothing else of the package.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "DASK_OPTIONS",
    "RUN_OPTIONS",
    "SECRETS",
    "OneLineErrors",
    "RunStopped",
    "apply_config",
    "check_store",
    "dask_context",
    "is_remote",
    "left_incomplete",
    "one_line",
    "open_input",
    "open_zarr",
    "options_for",
    "refuse_existing",
    "required",
    "storage_options",
    "with_dask_options",
    "with_run_options",
    "write",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Credentials seen by this run (storage options, environment): never printed
SECRETS: set[str] = set()


# ----------------------------------------------------------------------------- errors


class RunStopped(RuntimeError):
    """A write that started and stopped before the end (the store is left incomplete)."""


def one_line(msg: object) -> str:
    """``msg`` on one line, with the credentials of this run replaced by ``***``.

    Examples
    --------
    >>> one_line("bad\\n   value")
    'bad value'
    """
    text = " ".join(str(msg).split())
    for secret in sorted(SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class OneLineErrors(click.Group):
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
            click.echo(f"eo-contrast: error: {one_line(err)}", err=True)
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
            click.echo(f"eo-contrast: error: {one_line(msg)}", err=True)
            sys.exit(2)


# ----------------------------------------------------------------------------- object storage


def is_remote(path: str) -> bool:
    """A URL fsspec opens through a filesystem of its own: not a local path, nor a ``file://``
    or ``local://`` URL (both the local filesystem, which takes no storage options).

    Examples
    --------
    >>> is_remote("s3://bucket/x.zarr"), is_remote("memory://x.zarr")
    (True, True)
    >>> is_remote("x.zarr"), is_remote("file:///tmp/x.zarr"), is_remote("local:///tmp/x.zarr")
    (False, False, False)
    """
    from eo_contrast._io.urls import is_url, protocol

    return is_url(path) and protocol(path) not in ("file", "local")


def storage_options(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Parsed ``--storage-options``; its credentials (and those in the environment) hidden."""
    from eo_contrast.pipelines.config import parse_storage_options, secret_values

    options = parse_storage_options(raw)
    SECRETS.update(secret_values(options, os.environ))
    return options


def options_for(path: str, options: dict[str, Any] | None) -> dict[str, Any] | None:
    """``options`` for a remote ``path``; None for a local one."""
    return options if options and is_remote(path) else None


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


def check_store(path: str, options: dict[str, Any] | None, role: str) -> None:
    """Fail early, in one line, on missing credentials or a missing bucket of a remote store."""
    from eo_contrast._io.remote import check_bucket, credentials_hint
    from eo_contrast._io.urls import protocol

    if not is_remote(path):
        return
    scheme = protocol(path)
    if scheme in ("s3", "s3a") and not _has_s3_credentials(options):
        raise PermissionError(
            f"no credentials found for the {role} {path!r}: "
            f"{credentials_hint(scheme, '--storage-options')}"
        )
    try:
        check_bucket(path, options)
    except (PermissionError, FileNotFoundError) as err:
        raise type(err)(f"{role}: {err}") from None


def open_zarr(path: str, options: dict[str, Any] | None, what: str) -> Any:
    """``xr.open_zarr`` with a one-line error naming the store."""
    import xarray as xr

    from eo_contrast._io.remote import remote_failure

    check_store(path, options, "input")
    kw: dict[str, Any] = {"storage_options": options} if options else {}
    try:
        return xr.open_zarr(path, **kw)
    except Exception as err:
        clear = remote_failure(err, path)
        if clear is not None:
            raise clear from None
        if isinstance(err, OSError | ValueError | KeyError):
            raise ValueError(f"cannot open {path!r} as {what}: {err}") from None
        raise


def open_input(path: str, var: str | None, options: dict[str, Any] | None) -> Any:
    """A cube from a STAC JSON file or a Zarr store (a cube, or one sensor of a pairs store)."""
    from eo_contrast.stac import load_stac

    if path.lower().endswith((".json", ".geojson")):
        return load_stac(path)
    ds = open_zarr(path, options, "a STAC JSON file or a Zarr store")
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


def refuse_existing(
    out: str, options: dict[str, Any] | None, overwrite: bool, resume: bool
) -> None:
    """Refuse an existing output store (before any work) unless --overwrite or --resume."""
    from eo_contrast._io.remote import store_state

    if overwrite and resume:
        raise ValueError("give --overwrite or --resume, not both")
    check_store(out, options, "output")
    if not (overwrite or resume) and store_state(out, options) != "missing":
        raise FileExistsError(
            f"{out} already exists: pass --overwrite to replace it, or --resume to finish an "
            "interrupted write"
        )


@contextlib.contextmanager
def left_incomplete(out: str, *, doing: str, parts: str) -> Iterator[None]:
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


def write(
    obj: Any,
    out: str,
    options: dict[str, Any] | None,
    *,
    overwrite: bool,
    resume: bool,
    progress: bool,
) -> None:
    """Write ``obj`` to the Zarr store ``out``, chunk by chunk, resumably."""
    from eo_contrast.store import to_zarr

    mode = "w" if overwrite else "w-"
    try:
        with left_incomplete(out, doing="writing", parts="chunks"):
            to_zarr(obj, out, mode=mode, resume=resume, storage_options=options, progress=progress)
    except FileExistsError:
        raise FileExistsError(
            f"{out} already exists: pass --overwrite to replace it, or --resume to finish an "
            "interrupted write"
        ) from None


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


def apply_config(verb: str, path: Path | None, values: dict[str, Any]) -> dict[str, Any]:
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


def required(values: dict[str, Any], name: str, flag: str) -> Any:
    """``values[name]``; a one-line error naming ``flag`` when it is missing."""
    value = values.get(name)
    if value is None:
        raise ValueError(f"give {flag} (or '{name}' in --config)")
    return value


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
def dask_context(scheduler: str | None, workers: int | None, device: str) -> Iterator[Any]:
    """Run dask work on ``scheduler`` (an address), ``workers`` local processes, or dask's
    local threads; yields the distributed client or None.

    ``device`` is where the workers run a model: with ``auto`` or ``cuda`` and local GPUs,
    each local worker gets one of them; ``cpu`` for work that runs no model on the workers.

    Examples
    --------
    >>> with dask_context(None, None, "cpu") as client:
    ...     print(client)
    None
    """
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


# ----------------------------------------------------------------------------- run options

#: ``--scheduler`` and ``--workers``: where a verb's Dask work runs (see :func:`dask_context`)
DASK_OPTIONS = [
    click.option("--scheduler", help="Address of a running Dask scheduler (tcp://host:8786)."),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Run on a local Dask cluster of this many worker processes (one GPU each where "
        "they run a model on a GPU).",
    ),
]

#: The options of the verbs that write a Zarr store: ``--config``, the Dask options, object
#: storage, ``--overwrite`` / ``--resume`` and ``--no-progress``
RUN_OPTIONS = [
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="TOML/YAML file of options (top level or a table named after the verb); flags win.",
    ),
    *DASK_OPTIONS,
    click.option(
        "--storage-options",
        help="JSON object of fsspec options for URL inputs/outputs (credentials, "
        "endpoint_url, anon, ...). Default: credentials from the environment (AWS_*).",
    ),
    click.option("--overwrite", is_flag=True, help="Replace an existing output store."),
    click.option("--resume", is_flag=True, help="Finish an interrupted write of the output store."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
]


def _with(options: list[Any], f: Any) -> Any:
    for option in reversed(options):
        f = option(f)
    return f


def with_dask_options(f: F) -> F:
    """Decorate a verb with ``--scheduler`` and ``--workers``."""
    return _with(DASK_OPTIONS, f)


def with_run_options(f: F) -> F:
    """Decorate a verb with :data:`RUN_OPTIONS`."""
    return _with(RUN_OPTIONS, f)
