"""``python -m eo_contrast.pipelines.cli VERB ...``: the ``eo-contrast`` command line."""

from eo_contrast.pipelines.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
