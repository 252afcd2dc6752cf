"""Shared I/O plumbing of the writers: store URLs, object storage, resumable Zarr writes.

The package is private (its name starts with an underscore) but its modules and names are not,
so that :mod:`eo_contrast.store`, :mod:`eo_contrast.corpus`, :mod:`eo_contrast.stac` and the
command line share one implementation without reaching into each other's private names:

:mod:`eo_contrast._io.urls`
    What a store argument names: local path or fsspec URL, its protocol, the keyword arguments
    passing ``storage_options`` on to zarr and xarray.
:mod:`eo_contrast._io.remote`
    Object storage: whether a store exists, a missing bucket, clear messages for missing
    credentials or access denied (never showing credential values).
:mod:`eo_contrast._io.resumable`
    The resume protocol of a chunk-by-chunk write: the status attribute, the completion
    records, running the write tasks and finishing the store.
"""
