"""Store arguments: local paths and fsspec URLs.

Examples
--------
>>> from eo_contrast._io.urls import is_url, protocol, store_url
>>> is_url("s3://bucket/cube.zarr"), is_url("data/cube.zarr"), is_url("file:///data/cube.zarr")
(True, False, False)
>>> protocol("S3://bucket/cube.zarr"), protocol("data/cube.zarr")
('s3', 'file')
>>> store_url("file:///data/cube.zarr")
'/data/cube.zarr'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

__all__ = ["filesystem", "is_url", "protocol", "store_url", "zarr_kw"]


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL other than a local ``file:`` one.

    Parameters
    ----------
    path
        A local path or a URL.

    Returns
    -------
    bool
        True when ``path`` has a URL scheme of two characters or more other than ``file``
        (``"s3://b/x"``, ``"memory://x"``, ``"https://host/x.json"``); False for local paths,
        Windows drive letters (``"C:\\\\data"``) and ``file:`` URLs.

    Examples
    --------
    >>> is_url("https://example.com/items.json"), is_url("C:\\\\data\\\\items.json")
    (True, False)
    """
    scheme = urlparse(path).scheme
    return scheme != "file" and len(scheme) > 1


def protocol(url: str) -> str:
    """The fsspec protocol of ``url`` (lower case), ``"file"`` for a local path.

    Parameters
    ----------
    url
        A local path or an fsspec URL.

    Returns
    -------
    str
        What comes before ``://`` (``"s3"``, ``"memory"``, ``"simplecache::s3"``), or
        ``"file"`` when there is no ``://``.

    Examples
    --------
    >>> protocol("gs://bucket/x.zarr"), protocol("/data/x.zarr")
    ('gs', 'file')
    """
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def store_url(store: Any) -> str:
    """The path or URL zarr opens for ``store`` (``file://`` and ``local://`` made plain paths).

    Parameters
    ----------
    store
        A local path (``str`` or :class:`os.PathLike`) or an fsspec URL string.

    Returns
    -------
    str
        The URL, or the local path.

    Raises
    ------
    TypeError
        ``store`` is empty or not a path or string.

    Examples
    --------
    >>> store_url("memory://x.zarr")
    'memory://x.zarr'
    """
    if isinstance(store, str | os.PathLike):
        url = os.fspath(store)
        if not isinstance(url, str) or not url:
            raise TypeError(f"store={store!r} must be a non-empty path or URL string")
        if url.startswith(("file://", "local://")):
            # plain local path: zarr's local store creates folders as needed
            from fsspec.implementations.local import LocalFileSystem

            url = str(LocalFileSystem._strip_protocol(url))
        return url
    raise TypeError(
        f"store must be a local path (str or pathlib.Path) or an fsspec URL string such as "
        f"'s3://bucket/cube.zarr', not {type(store).__name__}"
    )


def zarr_kw(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments passing ``storage_options`` on to zarr / xarray (URLs only).

    Parameters
    ----------
    url
        The store, as :func:`store_url` gives it.
    storage_options
        fsspec options (credentials, endpoint, ...) or None.

    Returns
    -------
    dict
        ``{"storage_options": {...}}`` when options are given, else ``{}``.

    Raises
    ------
    ValueError
        Options given for a local path.

    Examples
    --------
    >>> zarr_kw("s3://bucket/x.zarr", {"anon": True}), zarr_kw("x.zarr", None)
    ({'storage_options': {'anon': True}}, {})
    """
    if storage_options:
        if not is_url(url):
            raise ValueError(
                f"storage_options are only used with fsspec URLs, but store={url!r} is a local "
                "path: drop storage_options or pass a URL such as 's3://bucket/cube.zarr'"
            )
        return {"storage_options": dict(storage_options)}
    return {}


def filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path on it.

    Parameters
    ----------
    url
        A local path or an fsspec URL.
    storage_options
        fsspec options or None.

    Returns
    -------
    tuple
        ``(filesystem, path)`` as :func:`fsspec.core.url_to_fs` gives them.

    Examples
    --------
    >>> fs, path = filesystem("memory://doc/x.zarr", None)
    >>> type(fs).__name__, path
    ('MemoryFileSystem', '/doc/x.zarr')
    """
    import fsspec

    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
