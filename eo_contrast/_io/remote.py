"""Object storage: whether a store exists, missing buckets and credentials, clear messages.

Messages name the store and what to set, never credential values.

Examples
--------
>>> from eo_contrast._io.remote import remote_failure, store_state
>>> store_state("memory://doc/remote/none.zarr", None)
'missing'
>>> remote_failure(PermissionError("denied"), "/data/x.zarr") is None  # local: nothing to add
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eo_contrast._io.urls import filesystem, protocol

__all__ = ["check_bucket", "credentials_hint", "remote_failure", "store_state"]

#: fsspec protocols whose first path element is a bucket (or container)
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss")
#: exception class names (botocore, google-auth, azure) meaning "no credentials were found"
_NO_CREDENTIALS = ("NoCredentialsError", "DefaultCredentialsError", "ClientAuthenticationError")


def credentials_hint(protocol: str, options: str = "storage_options") -> str:
    """What to set so that fsspec finds credentials for ``protocol`` (no values shown).

    Parameters
    ----------
    protocol
        An fsspec protocol (``"s3"``, ``"gs"``, ``"az"``, ...).
    options
        How the caller names its storage options (``"--storage-options"`` on the command line).

    Returns
    -------
    str
        The environment variables or options to set.

    Examples
    --------
    >>> credentials_hint("gs")
    "set GOOGLE_APPLICATION_CREDENTIALS, or give storage_options with 'token'"
    """
    if protocol in ("s3", "s3a"):
        return (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_ENDPOINT_URL for an S3 "
            f"server other than AWS) or AWS_PROFILE, or give {options} with 'key' and 'secret' "
            "('anon': true for a public bucket)"
        )
    if protocol in ("gs", "gcs"):
        return f"set GOOGLE_APPLICATION_CREDENTIALS, or give {options} with 'token'"
    if protocol in ("az", "abfs", "abfss"):
        return (
            "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or "
            f"AZURE_STORAGE_CONNECTION_STRING), or give {options} with 'account_name' and "
            "'account_key'"
        )
    return f"give the credentials in {options}"


def remote_failure(err: BaseException, url: str) -> Exception | None:
    """A clear exception for a failure of an object store's filesystem, else None.

    Covers missing or partial credentials, access denied and storage options the filesystem
    does not take. The message names the store and what to set, never credential values.

    Parameters
    ----------
    err
        The exception the filesystem raised.
    url
        The store it was raised for.

    Returns
    -------
    Exception or None
        The exception to raise instead (``from None``), or None to let ``err`` through.

    Examples
    --------
    >>> remote_failure(PermissionError("403"), "s3://bucket/x.zarr")
    PermissionError("access to 's3://bucket/x.zarr' was denied (403): set AWS_ACCESS_KEY_ID ...
    """
    if protocol(url) in ("file", "local", "memory"):
        return None
    name = type(err).__name__
    hint = credentials_hint(protocol(url))
    if name in _NO_CREDENTIALS:
        return PermissionError(f"no credentials found for {url!r}: {hint}")
    if name == "PartialCredentialsError":  # botocore names what is missing, not the values
        return PermissionError(f"incomplete credentials for {url!r} ({err}): {hint}")
    if isinstance(err, TypeError) and "unexpected keyword argument" in str(err):
        return ValueError(
            f"the filesystem of {url!r} does not take one of the storage_options ({err}): "
            "check their names"
        )
    if isinstance(err, PermissionError):
        return PermissionError(f"access to {url!r} was denied ({err}): {hint}")
    return None


def _bucket(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The bucket of an object-store URL, or None for other stores."""
    if protocol(url) not in _BUCKET_PROTOCOLS:
        return None
    _, root = filesystem(url, storage_options)
    return root.strip("/").split("/", 1)[0] or None


def check_bucket(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raise FileNotFoundError naming the bucket when ``url``'s bucket does not exist.

    Parameters
    ----------
    url
        A local path or an fsspec URL; only object-store URLs (``s3://``, ``gs://``, ``az://``,
        ...) are checked.
    storage_options
        fsspec options or None.

    Raises
    ------
    FileNotFoundError
        The bucket does not exist.
    PermissionError, ValueError
        No credentials, access denied or unknown storage options (see :func:`remote_failure`).

    Examples
    --------
    >>> check_bucket("memory://doc/remote/x.zarr", None)  # no bucket to check
    """
    bucket = _bucket(url, storage_options)
    if bucket is None:
        return
    try:
        fs, _ = filesystem(url, storage_options)
        fs.invalidate_cache(bucket)
        fs.info(bucket)  # unlike fs.exists, says why when it cannot tell
    except FileNotFoundError:
        raise FileNotFoundError(
            f"bucket {bucket!r} of {url!r} does not exist: create the bucket first or fix the URL"
        ) from None
    except Exception as err:
        clear = remote_failure(err, url)
        if clear is not None:
            raise clear from None
        raise


def store_state(url: str, storage_options: Mapping[str, Any] | None) -> str:
    """What is at ``url``: nothing, a Zarr store or something else (one listing request).

    Parameters
    ----------
    url
        A local path or an fsspec URL.
    storage_options
        fsspec options or None.

    Returns
    -------
    str
        ``"missing"`` (nothing, or an empty folder), ``"zarr"`` (holds Zarr metadata) or
        ``"other"`` (a file, or a folder that is not a Zarr store).

    Raises
    ------
    PermissionError, ValueError
        No credentials, access denied or unknown storage options (see :func:`remote_failure`).

    Examples
    --------
    >>> store_state("memory://doc/remote/none.zarr", None)
    'missing'
    """
    try:
        fs, root = filesystem(url, storage_options)
        root = root.rstrip("/")
        fs.invalidate_cache(root)
        try:
            entries = fs.ls(root, detail=False)  # one listing request on object storage
        except (FileNotFoundError, NotADirectoryError):
            return "other" if fs.isfile(root) else "missing"
    except Exception as err:
        clear = remote_failure(err, url)
        if clear is not None:
            raise clear from None
        raise
    names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
    if names & {"zarr.json", ".zgroup", ".zarray"}:
        return "zarr"
    return "other" if entries else "missing"  # a file or a non-Zarr folder / an empty folder
