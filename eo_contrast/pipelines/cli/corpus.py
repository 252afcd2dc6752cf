"""``eo-contrast corpus``: a sharded S1/S2 chip corpus from STAC files, built with Dask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from eo_contrast.pipelines.cli.common import (
    apply_config,
    dask_context,
    left_incomplete,
    options_for,
    refuse_existing,
    required,
    storage_options,
    with_run_options,
)

__all__ = ["corpus_cmd"]


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise ValueError(f"{what} {text!r} must be {n} comma-separated numbers")
    return values


def _region(text: str | None) -> Any:
    """``--region``: ``min_lon,min_lat,max_lon,max_lat`` or a GeoJSON file."""
    if text is None:
        return None
    if Path(text).suffix.lower() in (".json", ".geojson"):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"--region file {text!r} not found")
        return json.loads(path.read_text())
    return _floats(text, 4, "--region")


def _points(text: str) -> Any:
    """``--points``: a GeoJSON file (points and/or polygons) or a CSV of ``lon,lat`` lines.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.csv"
    >>> _ = path.write_text("lon,lat\\n3.0,39.7\\n3.1,39.8\\n")
    >>> _points(str(path))
    [(3.0, 39.7), (3.1, 39.8)]
    """
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"--points file {text!r} not found")
    if path.suffix.lower() in (".json", ".geojson"):
        return str(path)
    points: list[tuple[float, ...]] = []
    for k, line in enumerate(path.read_text().splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            points.append(_floats(line, 2, f"line {k + 1} of --points"))
        except ValueError:
            if k == 0:  # a header such as "lon,lat"
                continue
            raise
    if not points:
        raise ValueError(f"--points file {text!r} holds no 'lon,lat' line")
    return points


def _sample(v: dict[str, Any]) -> Any:
    chosen = [k for k in ("points", "grid", "random_n") if v.get(k)]
    if len(chosen) > 1:
        flags = {"points": "--points", "grid": "--grid", "random_n": "--random"}
        raise ValueError(f"give one sampling rule, not {' and '.join(flags[k] for k in chosen)}")
    if v.get("points"):
        return _points(str(v["points"]))
    if v.get("random_n"):
        return int(v["random_n"])
    return None  # --grid, the default


@click.command("corpus")
@click.argument("s1_items", required=False)
@click.argument("s2_items", required=False)
@click.option("--out", help="Output Zarr store (path or fsspec URL).  [required]")
@click.option(
    "--chip", type=click.IntRange(min=8), default=256, show_default=True, help="Chip edge (px)."
)
@click.option("--max-dt", default="3D", show_default=True, help="Largest S1/S2 time gap of a pair.")
@click.option("--points", help="Chips centred on these: a GeoJSON file, or a CSV of lon,lat lines.")
@click.option("--grid", is_flag=True, help="Every lattice chip inside --region (the default).")
@click.option(
    "--random", "random_n", type=click.IntRange(min=1), help="N random points in --region."
)
@click.option("--region", help="min_lon,min_lat,max_lon,max_lat or a GeoJSON file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random.")
@click.option("--s2-bands", help="Comma-separated S2 bands (default: all the items share).")
@click.option(
    "--max-nan-fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True,
    help="Largest NaN fraction of a valid chip, per sensor.",
)  # fmt: skip
@click.option(
    "--max-cloud-fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True,
    help="Largest cloud fraction (S2 SCL) of a valid chip.",
)  # fmt: skip
@click.option("--chips-per-shard", type=click.IntRange(min=1), help="Default: ~64 MiB shards.")
@click.option("--dry-run", is_flag=True, help="Plan only: print the chip count, write nothing.")
@with_run_options
def corpus_cmd(config_path: Path | None, **values: Any) -> None:
    """Cut co-registered S1/S2 chips from STAC Items and write a sharded Zarr corpus.

    S1_ITEMS and S2_ITEMS are STAC JSON files (FeatureCollection, list of Items, Catalog).
    Each S2 scene is paired with the nearest S1 pass within --max-dt at each chip position;
    chips failing the NaN or cloud rule are kept in the corpus as invalid (valid = False).
    The build runs as a Dask graph (--workers N for a local cluster, --scheduler for a
    running one) and can be resumed after an interruption with --resume.

    \b
    Examples:
      eo-contrast corpus s1.json s2.json --out corpus.zarr --chip 256 --grid
      eo-contrast corpus s1.json s2.json --out s3://bucket/c.zarr --random 10000 \\
          --region 2.5,39.3,3.5,40.0 --seed 1 --workers 8
    """
    from eo_contrast.corpus import build_corpus, plan_corpus

    v = apply_config("corpus", config_path, values)
    s1_items = required(v, "s1_items", "S1_ITEMS")
    s2_items = required(v, "s2_items", "S2_ITEMS")
    kwargs: dict[str, Any] = {
        "chip": v["chip"],
        "max_dt": v["max_dt"],
        "sample": _sample(v),
        "region": _region(v["region"]),
        "seed": v["seed"],
        "max_nan_fraction": v["max_nan_fraction"],
        "s2_bands": [b.strip() for b in v["s2_bands"].split(",")] if v["s2_bands"] else None,
    }
    if v["dry_run"]:
        plan = plan_corpus(s1_items, s2_items, **kwargs)
        scenes = plan["s2_item"].nunique()
        click.echo(f"would write {len(plan)} chips from {scenes} S2 scene(s)")
        return
    out = str(required(v, "out", "--out"))
    so_out = options_for(out, storage_options(v["storage_options"]))
    refuse_existing(out, so_out, v["overwrite"], v["resume"])
    with (
        left_incomplete(out, doing="building", parts="shards"),
        dask_context(v["scheduler"], v["workers"], "cpu"),
    ):
        ds = build_corpus(
            s1_items, s2_items, out, **kwargs,
            max_cloud_fraction=v["max_cloud_fraction"],
            chips_per_shard=v["chips_per_shard"],
            mode="w" if v["overwrite"] else "w-",
            resume=v["resume"],
            storage_options=so_out,
            progress=not v["no_progress"],
        )  # fmt: skip
    click.echo(
        f"wrote {ds.sizes['chip']} chips ({int(ds.attrs['n_valid'])} valid) "
        f"{dict(ds.sizes)} to {out}"
    )
