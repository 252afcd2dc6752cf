"""``eo-contrast demo``: the main job, offline, on the embedded sample scene."""

from __future__ import annotations

from pathlib import Path

import click

from eo_contrast.pipelines.cli.common import dask_context, with_dask_options

__all__ = ["demo_cmd"]


@click.command("demo")
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
@with_dask_options
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def demo_cmd(
    out: Path,
    size: int,
    seed: int,
    max_dt: str,
    pretrain_epochs: int,
    scheduler: str | None,
    workers: int | None,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Run the main job offline on the embedded sample scene.

    Builds the sample S1/S2 scene as COGs with a STAC catalogue, loads it through STAC, pairs
    S1 and S2 in time on one grid, writes the pairs to OUT/pairs.zarr, pretrains a dual
    encoder briefly on them (OUT/model.safetensors), embeds the pairs (OUT/embeddings.zarr),
    fits and applies a flood segmentation (OUT/flood.zarr) and draws OUT/preview.png.

    \b
    Examples:
      eo-contrast demo --out demo-output --overwrite
      eo-contrast demo --out demo-output --overwrite --workers 2
    """
    from eo_contrast.pipelines.demo import run_demo

    with dask_context(scheduler, workers, "auto"):
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
