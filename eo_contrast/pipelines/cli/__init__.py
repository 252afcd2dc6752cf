"""The ``eo-contrast`` command line: the group :func:`main` and its verbs, one module each.

:mod:`~eo_contrast.pipelines.cli.common` holds what the verbs share (one-line errors, run
options, config files, object-store checks, the Dask context); each verb module
(``demo``, ``pair``, ``pretrain``, ``embed``, ``segment``, ``corpus``) imports it and defines
one command, which this module adds to the group.

Examples
--------
>>> sorted(main.commands)
['corpus', 'demo', 'embed', 'pair', 'pretrain', 'segment']
"""

from __future__ import annotations

import click

from eo_contrast.pipelines.cli import corpus, demo, embed, pair, pretrain, segment
from eo_contrast.pipelines.cli.common import OneLineErrors

__all__ = ["main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eo-contrast")
def main() -> None:
    """Multimodal (Sentinel-1 / Sentinel-2) contrastive learning on xarray datacubes."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    # odc-geo's dask reprojection hands rasterio bare arrays with explicit transforms; rasterio
    # still warns about the missing geotransform of those in-memory arrays. Not actionable.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


for _command in (
    demo.demo_cmd,
    pair.pair_cmd,
    pretrain.pretrain_cmd,
    embed.embed_cmd,
    segment.segment_cmd,
    corpus.corpus_cmd,
):
    main.add_command(_command)
