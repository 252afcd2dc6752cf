"""``eo-contrast pair``: S1 and S2 scenes paired by time, written to Zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from eo_contrast.pipelines.cli.common import (
    apply_config,
    dask_context,
    options_for,
    refuse_existing,
    required,
    storage_options,
    with_run_options,
    write,
)

__all__ = ["pair_cmd"]


@click.command("pair")
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
@with_run_options
def pair_cmd(config_path: Path | None, **values: Any) -> None:
    """Pair S1 and S2 scenes from STAC JSON files by time and write the pairs to Zarr.

    \b
    Examples:
      eo-contrast pair s1_items.json s2_items.json --out pairs.zarr --max-dt 3D
      eo-contrast pair s1_items.json s2_items.json --out s3://bucket/pairs.zarr --workers 2
    """
    from eo_contrast.pairing import pair
    from eo_contrast.stac import load_stac

    v = apply_config("pair", config_path, values)
    s1_items = required(v, "s1_items", "S1_ITEMS")
    s2_items = required(v, "s2_items", "S2_ITEMS")
    out = str(required(v, "out", "--out"))
    storage = storage_options(v["storage_options"])
    so_out = options_for(out, storage)
    refuse_existing(out, so_out, v["overwrite"], v["resume"])
    bands = [b.strip() for b in v["s2_bands"].split(",")] if v["s2_bands"] else None
    with dask_context(v["scheduler"], v["workers"], "cpu"):
        s1 = load_stac(s1_items, chunks=v["chunks"])
        s2 = load_stac(s2_items, bands, chunks=v["chunks"])
        pairs = pair(s1, s2, max_dt=v["max_dt"])
        write(
            pairs, out, so_out, overwrite=v["overwrite"], resume=v["resume"],
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(f"wrote {pairs.sizes['pair']} pairs {dict(pairs.sizes)} to {out}")
