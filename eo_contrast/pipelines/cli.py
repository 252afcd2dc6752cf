"""The ``eo-contrast`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


class _OneLineErrors(click.Group):
    """Turn any failure of a verb into a one-line message and a non-zero exit status."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (
            ValueError,
            TypeError,
            KeyError,
            FileExistsError,
            FileNotFoundError,
            PermissionError,
        ) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            click.echo(f"eo-contrast: error: {msg}", err=True)
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
    encoder briefly on them (OUT/model.safetensors), embeds the S2 scenes (OUT/embeddings.zarr),
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


_PRETRAIN_KEYS = (
    "pairs", "out", "method", "epochs", "tile", "batch_size", "encoder", "width", "stem",
    "device", "seed", "lr", "checkpoint_dir", "checkpoint_every", "resume", "sensor",
    "max_nan_fraction",
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
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def pretrain(config_path: Path | None, no_progress: bool, **flags: object) -> None:
    """Pretrain a dual encoder on S1/S2 pairs stored in Zarr (PAIRS: a path or fsspec URL).

    PAIRS is a store written by `ec.to_zarr(ec.pair(s1, s2), ...)` or by `eo-contrast demo`
    (OUT/pairs.zarr). The model is saved as one safetensors file with its bands, units and
    normalisation statistics.

    \b
    Examples:
      eo-contrast pretrain demo-output/pairs.zarr --epochs 5 --out model.safetensors
      eo-contrast pretrain --config pretrain.toml --device cuda
    """
    import xarray as xr

    from eo_contrast.pipelines.config import read_config
    from eo_contrast.training import pretrain as run_pretrain

    options = (
        read_config(config_path, verb="pretrain", allowed=_PRETRAIN_KEYS) if config_path else {}
    )
    options.update({k: v for k, v in flags.items() if v is not None})
    store = options.pop("pairs", None)
    if store is None:
        raise click.UsageError("give the pairs store as PAIRS or as 'pairs' in --config")
    out = Path(str(options.pop("out", "model.safetensors")))
    try:
        pairs = xr.open_zarr(str(store))
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot open the pairs store {store!r} as Zarr: {err}") from err
    model = run_pretrain(pairs, progress=not no_progress, **options)
    path = model.save(out)
    hist = model.history
    click.echo(
        f"trained {len(hist)} steps: loss {hist['loss'].iloc[0]:.3f} -> {hist['loss'].iloc[-1]:.3f}; "
        f"wrote {path}"
    )


def _scheduler(scheduler: str | None, workers: int | None) -> Any:
    """A context running dask work on ``scheduler`` (an address), ``workers`` local processes,
    or dask's local threads."""
    import contextlib

    if scheduler and workers:
        raise click.UsageError("give --scheduler or --workers, not both")
    if not scheduler and not workers:
        return contextlib.nullcontext()
    from distributed import Client, LocalCluster

    stack = contextlib.ExitStack()
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ValueError(
                f"cannot reach the Dask scheduler at {scheduler!r} within 10 s ({err}); check "
                "the address (tcp://host:8786) and that the scheduler is running"
            ) from None
        stack.enter_context(client)
    else:
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        )
        stack.enter_context(Client(cluster))
    return stack


def _write(obj: Any, out: str, *, overwrite: bool, resume: bool, progress: bool) -> None:
    from eo_contrast.store import to_zarr

    if overwrite and resume:
        raise click.UsageError("give --overwrite or --resume, not both")
    mode = "w" if overwrite else "w-"
    try:
        from distributed import get_client

        get_client()
        distributed = True
    except (ImportError, ValueError):
        distributed = False
    try:
        if progress and not distributed:
            from dask.diagnostics import ProgressBar

            with ProgressBar(minimum=1.0):
                to_zarr(obj, out, mode=mode, resume=resume)
        else:
            to_zarr(obj, out, mode=mode, resume=resume)
    except FileExistsError:
        raise FileExistsError(
            f"{out} already exists: pass --overwrite to replace it, or --resume to finish an "
            "interrupted write"
        ) from None


def _open_input(path: str, var: str | None) -> Any:
    """A cube from a STAC JSON file or a Zarr store (a cube, or one sensor of a pairs store)."""
    import xarray as xr

    from eo_contrast.stac import load_stac

    if path.lower().endswith((".json", ".geojson")):
        return load_stac(path)
    try:
        ds = xr.open_zarr(path)
    except (FileNotFoundError, OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"cannot open {path!r} as a STAC JSON file or a Zarr store: {err}"
        ) from err
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


_SCHEDULER_OPTIONS = [
    click.option("--scheduler", help="Address of a running Dask scheduler (tcp://host:8786)."),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="Run on a local Dask cluster of this many worker processes.",
    ),
    click.option("--overwrite", is_flag=True, help="Replace an existing output store."),
    click.option("--resume", is_flag=True, help="Finish an interrupted write of the output store."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
]


def _with_run_options(f: Any) -> Any:
    for option in reversed(_SCHEDULER_OPTIONS):
        f = option(f)
    return f


@main.command("pair")
@click.argument("s1_items")
@click.argument("s2_items")
@click.option("--out", required=True, help="Output Zarr store (path or fsspec URL).")
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
def pair_cmd(
    s1_items: str,
    s2_items: str,
    out: str,
    max_dt: str,
    s2_bands: str | None,
    chunks: int,
    scheduler: str | None,
    workers: int | None,
    overwrite: bool,
    resume: bool,
    no_progress: bool,
) -> None:
    """Pair S1 and S2 scenes from STAC JSON files by time and write the pairs to Zarr.

    \b
    Example:
      eo-contrast pair s1_items.json s2_items.json --out pairs.zarr --max-dt 3D
    """
    from eo_contrast.pairing import pair
    from eo_contrast.stac import load_stac

    bands = [b.strip() for b in s2_bands.split(",")] if s2_bands else None
    with _scheduler(scheduler, workers):
        s1 = load_stac(s1_items, chunks=chunks)
        s2 = load_stac(s2_items, bands, chunks=chunks)
        pairs = pair(s1, s2, max_dt=max_dt)
        _write(pairs, out, overwrite=overwrite, resume=resume, progress=not no_progress)
    click.echo(f"wrote {pairs.sizes['pair']} pairs {dict(pairs.sizes)} to {out}")


@main.command("embed")
@click.argument("source")
@click.option("--out", required=True, help="Output Zarr store (path or fsspec URL).")
@click.option("--model", "model_path", help="DualEncoder checkpoint (default: packaged weights).")
@click.option("--var", help="Variable of a Zarr input with several (e.g. s1 or s2 of pairs).")
@click.option("--level", type=click.Choice(["tile", "pixel"]), default="tile", show_default=True)
@click.option("--tile", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@_with_run_options
def embed_cmd(
    source: str,
    out: str,
    model_path: str | None,
    var: str | None,
    level: str,
    tile: int,
    batch_size: int,
    device: str,
    scheduler: str | None,
    workers: int | None,
    overwrite: bool,
    resume: bool,
    no_progress: bool,
) -> None:
    """Embed a cube (STAC JSON file or Zarr store) and write the embeddings to Zarr.

    \b
    Examples:
      eo-contrast embed demo-output/pairs.zarr --var s2 --out emb.zarr
      eo-contrast embed s1_items.json --out emb.zarr --workers 2 --model model.safetensors
    """
    from eo_contrast.inference import embed

    with _scheduler(scheduler, workers):
        cube = _open_input(source, var)
        emb = embed(cube, model_path, level=level, tile=tile, batch_size=batch_size, device=device)
        _write(
            emb.rename("embedding"),
            out,
            overwrite=overwrite,
            resume=resume,
            progress=not no_progress,
        )
    click.echo(f"wrote embedding {dict(emb.sizes)} to {out}")


@main.command("segment")
@click.argument("source")
@click.option(
    "--model",
    "model_path",
    required=True,
    help="Segmentation model file (SegmentationModel.save / eo-contrast demo).",
)
@click.option("--out", required=True, help="Output Zarr store (path or fsspec URL).")
@click.option("--var", help="Variable of a Zarr input with several, for a one-sensor model.")
@click.option("--probabilities", is_flag=True, help="Write class probabilities, not class ids.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@_with_run_options
def segment_cmd(
    source: str,
    model_path: str,
    out: str,
    var: str | None,
    probabilities: bool,
    batch_size: int,
    device: str,
    scheduler: str | None,
    workers: int | None,
    overwrite: bool,
    resume: bool,
    no_progress: bool,
) -> None:
    """Segment a cube (STAC JSON file or Zarr store) with a fitted model, write it to Zarr.

    A model using S1 and S2 reads both from a pairs store (`s1` and `s2` variables); a
    one-sensor model reads that sensor's variable (or --var) or a STAC JSON file. The output
    holds class ids (-1 where there is no data) or, with --probabilities, one layer per class.

    \b
    Example:
      eo-contrast segment demo-output/pairs.zarr --model demo-output/flood_model.safetensors \\
          --out flood.zarr
    """
    import xarray as xr

    from eo_contrast.inference import segment
    from eo_contrast.segmentation import SegmentationModel

    seg = SegmentationModel.load(model_path)
    with _scheduler(scheduler, workers):
        if len(seg.sensors) == 2 and not source.lower().endswith((".json", ".geojson")):
            cube: Any = xr.open_zarr(source)
            missing = [s for s in seg.sensors if s not in cube.data_vars]
            if missing:
                raise ValueError(
                    f"{model_path} uses S1 and S2 but {source} has no {missing} variable(s); "
                    "give a pairs store (eo-contrast pair)"
                )
        else:
            if var is None and not source.lower().endswith((".json", ".geojson")):
                # a pairs store: the model's sensor; a one-variable store: that variable
                names = list(xr.open_zarr(source).data_vars)
                var = seg.sensors[0] if seg.sensors[0] in names else None
            cube = _open_input(source, var)
        pred = segment(cube, seg, probabilities=probabilities, batch_size=batch_size, device=device)
        name = "probability" if probabilities else "classes"
        _write(pred.rename(name), out, overwrite=overwrite, resume=resume, progress=not no_progress)
    click.echo(f"wrote {name} {dict(pred.sizes)} (classes {list(seg.classes)}) to {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
