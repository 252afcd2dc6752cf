"""``eo-contrast segment``: a cube segmented by a fitted model, written to Zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from eo_contrast.pipelines.cli.common import (
    apply_config,
    check_store,
    dask_context,
    open_input,
    open_zarr,
    options_for,
    refuse_existing,
    required,
    storage_options,
    with_run_options,
    write,
)

__all__ = ["segment_cmd"]


@click.command("segment")
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
@with_run_options
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

    v = apply_config("segment", config_path, values)
    source = str(required(v, "source", "SOURCE"))
    model_path = required(v, "model_path", "--model")
    out = str(required(v, "out", "--out"))
    storage = storage_options(v["storage_options"])
    so_out = options_for(out, storage)
    so_in = options_for(source, storage)
    refuse_existing(out, so_out, v["overwrite"], v["resume"])
    is_stac = source.lower().endswith((".json", ".geojson"))
    if not is_stac:
        check_store(source, so_in, "input")
    seg = SegmentationModel.load(model_path)
    var = v["var"]
    with dask_context(v["scheduler"], v["workers"], v["device"]):
        if len(seg.sensors) == 2 and not is_stac:
            cube: Any = open_zarr(source, so_in, "a pairs store (Zarr)")
            missing = [s for s in seg.sensors if s not in cube.data_vars]
            if missing:
                raise ValueError(
                    f"{model_path} uses S1 and S2 but {source} has no {missing} variable(s); "
                    "give a pairs store (eo-contrast pair)"
                )
        else:
            if var is None and not is_stac:
                # a pairs store: the model's sensor; a one-variable store: that variable
                names = list(open_zarr(source, so_in, "a Zarr store").data_vars)
                var = seg.sensors[0] if seg.sensors[0] in names else None
            cube = open_input(source, var, so_in)
        pred = segment(
            cube, seg, probabilities=v["probabilities"], batch_size=v["batch_size"],
            device=v["device"],
        )  # fmt: skip
        name = "probability" if v["probabilities"] else "classes"
        write(
            pred.rename(name), out, so_out, overwrite=v["overwrite"], resume=v["resume"],
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(f"wrote {name} {dict(pred.sizes)} (classes {list(seg.classes)}) to {out}")
