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
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def demo(out: Path, size: int, seed: int, max_dt: str, overwrite: bool, no_progress: bool) -> None:
    """Run the main job offline on the embedded sample scene.

    Builds the sample S1/S2 scene as COGs with a STAC catalogue, loads it through STAC, pairs
    S1 and S2 in time on one grid and writes the pairs to OUT/pairs.zarr.

    \b
    Example:
      eo-contrast demo --out demo-output --overwrite
    """
    from eo_contrast.pipelines.demo import run_demo

    result = run_demo(
        out, size=size, seed=seed, max_dt=max_dt, overwrite=overwrite, progress=not no_progress
    )
    click.echo(result.summary())


if __name__ == "__main__":  # pragma: no cover
    main()
