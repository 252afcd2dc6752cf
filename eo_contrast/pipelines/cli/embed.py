"""``eo-contrast embed``: a cube embedded by a dual encoder, written to Zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from eo_contrast.pipelines.cli.common import (
    apply_config,
    check_store,
    dask_context,
    open_input,
    options_for,
    refuse_existing,
    required,
    storage_options,
    with_run_options,
    write,
)

__all__ = ["embed_cmd"]


@click.command("embed")
@click.argument("source", required=False)
@click.option("--out", help="Output Zarr store (path or fsspec URL).  [required]")
@click.option("--model", "model_path", help="DualEncoder checkpoint (default: packaged weights).")
@click.option("--var", help="Variable of a Zarr input with several (e.g. s1 or s2 of pairs).")
@click.option("--level", type=click.Choice(["tile", "pixel"]), default="tile", show_default=True)
@click.option("--tile", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@with_run_options
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

    v = apply_config("embed", config_path, values)
    source = str(required(v, "source", "SOURCE"))
    out = str(required(v, "out", "--out"))
    storage = storage_options(v["storage_options"])
    so_out = options_for(out, storage)
    refuse_existing(out, so_out, v["overwrite"], v["resume"])
    so_in = options_for(source, storage)
    if not source.lower().endswith((".json", ".geojson")):
        check_store(source, so_in, "input")
    with dask_context(v["scheduler"], v["workers"], v["device"]):
        cube = open_input(source, v["var"], so_in)
        emb = embed(
            cube, v["model_path"], level=v["level"], tile=v["tile"], batch_size=v["batch_size"],
            device=v["device"],
        )  # fmt: skip
        write(
            emb.rename("embedding"), out, so_out, overwrite=v["overwrite"], resume=v["resume"],
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(f"wrote embedding {dict(emb.sizes)} to {out}")
