"""The ``eo-contrast`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

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


if __name__ == "__main__":  # pragma: no cover
    main()
