"""``eo-contrast pretrain``: a dual encoder pretrained on S1/S2 pairs stored in Zarr."""

from __future__ import annotations

from pathlib import Path

import click

from eo_contrast.pipelines.cli.common import (
    dask_context,
    open_zarr,
    options_for,
    storage_options,
    with_dask_options,
)

__all__ = ["pretrain_cmd"]

_PRETRAIN_KEYS = (
    "pairs", "out", "method", "epochs", "tile", "batch_size", "encoder", "width", "stem",
    "device", "seed", "lr", "checkpoint_dir", "checkpoint_every", "resume", "sensor",
    "max_nan_fraction", "storage_options", "max_steps", "scheduler", "workers",
)  # fmt: skip


@click.command("pretrain")
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
@with_dask_options
@click.option(
    "--storage-options",
    help="JSON object of fsspec options for a PAIRS URL (credentials, endpoint_url, ...).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def pretrain_cmd(config_path: Path | None, no_progress: bool, **flags: object) -> None:
    """Pretrain a dual encoder on S1/S2 pairs stored in Zarr (PAIRS: a path or fsspec URL).

    PAIRS is a store written by `ec.to_zarr(ec.pair(s1, s2), ...)`, by `eo-contrast demo`
    (OUT/pairs.zarr) or by `eo-contrast corpus` (streamed shard by shard, valid chips only).
    The model is saved as one safetensors file with its bands, units and normalisation
    statistics. With --workers or --scheduler the chunks are read on the Dask cluster; the
    model trains in this process, on --device.

    \b
    Examples:
      eo-contrast pretrain demo-output/pairs.zarr --epochs 5 --out model.safetensors
      eo-contrast pretrain --config pretrain.toml --device cuda
      eo-contrast pretrain s3://bucket/pairs.zarr --out model.safetensors --workers 4
    """
    from eo_contrast.corpus import CORPUS_FORMAT, open_corpus
    from eo_contrast.pipelines.config import read_config
    from eo_contrast.training import pretrain as run_pretrain

    options = (
        read_config(config_path, verb="pretrain", allowed=_PRETRAIN_KEYS) if config_path else {}
    )
    options.update({k: v for k, v in flags.items() if v is not None})
    storage = storage_options(options.pop("storage_options", None))
    scheduler = options.pop("scheduler", None)
    workers = options.pop("workers", None)
    if workers is not None and (type(workers) is not int or workers < 1):
        raise ValueError(
            f"config file {config_path}: workers = {workers!r} must be an integer >= 1"
        )
    store = options.pop("pairs", None)
    if store is None:
        raise click.UsageError("give the pairs store as PAIRS or as 'pairs' in --config")
    out = Path(str(options.pop("out", "model.safetensors")))
    store = str(store)
    pairs = open_zarr(store, options_for(store, storage), "the pairs store (Zarr)")
    if pairs.attrs.get("eo_contrast_format") == CORPUS_FORMAT:
        # a pair corpus (eo-contrast corpus): streamed shard by shard, valid chips only
        pairs = open_corpus(store, storage_options=options_for(store, storage))
    # the workers read the chunks; the model trains here, so they need no GPU of their own
    with dask_context(scheduler, workers, "cpu"):
        model = run_pretrain(pairs, progress=not no_progress, **options)
    path = model.save(out)
    hist = model.history
    click.echo(
        f"trained {len(hist)} steps: loss {hist['loss'].iloc[0]:.3f} -> {hist['loss'].iloc[-1]:.3f}; "
        f"wrote {path}"
    )
