"""Safetensors checkpoints with JSON metadata in the file header; never pickle.

One design: a checkpoint is a single ``.safetensors`` file. The tensors are the module's
``state_dict``; the model description (bands, units, normalisation, architecture, ...) is a JSON
document stored as the string value of the key ``"eo_contrast"`` in the safetensors header
metadata (``"__metadata__"``), so the file is self-contained and readable by any safetensors
reader. There is no sidecar file.

Writes are atomic: the bytes go to a temporary file in the target folder, which is flushed,
synced and then renamed over the target with :func:`os.replace`. Reads check the file before
trusting it: pickle/zip files (``torch.save``) are refused without being opened by torch,
truncated or corrupt files raise :class:`CheckpointError` naming the path. The SHA-256 of the
tensors (names, dtypes, shapes and bytes) is recorded in the header metadata under
``"eo_contrast.sha256"`` and checked on read, so damage inside the tensor data (which the
safetensors format itself cannot notice) is refused too; files without it (older ones) are read
without that check.
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DIGEST_KEY",
    "METADATA_KEY",
    "CheckpointError",
    "check_tensors",
    "json_safe",
    "read_checkpoint",
    "read_metadata",
    "write_checkpoint",
]


def json_safe(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers, tuples as lists, keys as strings, and
    non-finite floats as ``None``: what the JSON metadata of a checkpoint may hold.

    Examples
    --------
    >>> import numpy as np
    >>> json_safe({1: (np.int64(2), np.float32(np.nan), np.bool_(True))})
    {'1': [2, None, True]}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer | np.floating | np.bool_):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Key of the JSON metadata document in the safetensors header metadata.
METADATA_KEY = "eo_contrast"
#: Key of the SHA-256 of the tensors (see :func:`tensor_digest`) in the header metadata.
DIGEST_KEY = "eo_contrast.sha256"
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A file is not a valid eo-contrast checkpoint (wrong format, corrupt, or mismatched)."""


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of tensors: their names, dtypes, shapes and bytes, in name order.

    It does not depend on where the tensors live or on the file layout, so the digest recorded
    by :func:`write_checkpoint` can be checked on the tensors read back.

    Examples
    --------
    >>> import torch
    >>> a = tensor_digest({"w": torch.ones(2)})
    >>> a == tensor_digest({"w": torch.ones(2)}), a == tensor_digest({"w": torch.zeros(2)})
    (True, False)
    """
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_checkpoint(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]
) -> Path:
    """Write ``tensors`` and JSON ``metadata`` to a safetensors file, atomically.

    Parameters
    ----------
    path
        Target file (conventionally ``*.safetensors``); parent folders are created.
    tensors
        Name -> tensor (e.g. a ``state_dict``); copied to CPU, contiguous.
    metadata
        JSON-serialisable mapping (strict JSON: no NaN/inf).

    Returns
    -------
    pathlib.Path
        The written path.

    Examples
    --------
    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "t.safetensors"
    >>> _ = write_checkpoint(path, {"w": torch.ones(2)}, {"note": "demo"})
    >>> tensors, meta = read_checkpoint(path)
    >>> tensors["w"].tolist(), meta
    ([1.0, 1.0], {'note': 'demo'})
    """
    from safetensors.torch import save

    target = Path(path)
    try:
        text = json.dumps(dict(metadata), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata for {target} is not strict JSON: {exc}") from exc
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    blob = save(
        data, metadata={"format": "pt", METADATA_KEY: text, DIGEST_KEY: tensor_digest(data)}
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse and sanity-check the safetensors header of ``path``; returns (header, file size)."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a .safetensors checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        fits = 0 <= n <= _MAX_HEADER and 8 + n <= size
        raw = fh.read(n) if fits else b""
    if not fits or not raw.startswith(b"{"):
        # a safetensors header is a JSON object; anything else is another format or damaged
        zipped = head[:4] == b"PK\x03\x04"
        pickled = len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)
        if zipped or pickled:
            raise CheckpointError(
                f"{path} is a pickle/zip file (as written by torch.save), not a safetensors "
                "file; eo-contrast never unpickles checkpoints because unpickling can run "
                "arbitrary code. Convert it to safetensors in a trusted environment, or re-save "
                "the model with DualEncoder.save()"
            )
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file ({size} bytes; "
            + (f"header length {n} does not fit in the file)" if not fits else "no JSON header)")
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} is corrupt or not a safetensors file: its header is not JSON ({exc})"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not a JSON object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise CheckpointError(f"{path} is corrupt: tensor {name!r} has no valid data_offsets")
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: its header needs {8 + n + end} bytes but the file has {size}; "
            "the write was probably interrupted, save the model again"
        )
    return header, size


def _metadata(path: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or METADATA_KEY not in meta:
        raise CheckpointError(
            f"{path} is a safetensors file without eo-contrast metadata (no {METADATA_KEY!r} key "
            "in its header metadata); it was not written by eo-contrast, so bands, units and "
            "normalisation are unknown"
        )
    try:
        doc = json.loads(meta[METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path}: the eo-contrast metadata is not valid JSON ({exc})"
        ) from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: the eo-contrast metadata must be a JSON object")
    return doc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without loading its tensors.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointError
        When the file is not a readable safetensors file with eo-contrast metadata.

    Examples
    --------
    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "t.safetensors"
    >>> _ = write_checkpoint(path, {"w": torch.zeros(1)}, {"format_version": 1})
    >>> read_metadata(path)
    {'format_version': 1}
    """
    p = Path(path)
    header, _ = _header(p)
    return _metadata(p, header)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON metadata of a checkpoint written by :func:`write_checkpoint`.

    Never calls :func:`torch.load`; refuses pickle/zip files with a :class:`CheckpointError`.

    Returns
    -------
    tuple of (dict of str to torch.Tensor, dict)
        Tensors on the CPU, and the metadata document.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointError
        When the file is a pickle/zip file, truncated, corrupt (also inside the tensor data,
        when the file records its SHA-256), or lacks eo-contrast metadata.
    """
    from safetensors.torch import load_file

    p = Path(path)
    header, _ = _header(p)
    meta = _metadata(p, header)
    try:
        tensors = load_file(p, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise CheckpointError(f"{p} is corrupt: safetensors could not read it ({exc})") from exc
    recorded = (header.get("__metadata__") or {}).get(DIGEST_KEY)
    if recorded is not None and recorded != tensor_digest(tensors):
        raise CheckpointError(
            f"{p} is corrupt: its tensor data does not match the SHA-256 recorded when it was "
            "written, so the file was damaged afterwards (disk, copy or download); restore it "
            "from a good copy or save the model again"
        )
    return tensors, meta


def check_tensors(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
) -> None:
    """Check that ``found`` has exactly the names and shapes of ``expected``.

    Raises
    ------
    CheckpointError
        Listing the missing, unexpected and mis-shaped tensors (and any whose dtype is not
        floating point where a floating-point tensor is expected, or the reverse).

    Examples
    --------
    >>> import torch
    >>> check_tensors({"a": torch.zeros(2)}, {"a": torch.ones(2)}, "x.safetensors")
    >>> check_tensors({"a": torch.zeros(2)}, {"a": torch.ones(3), "b": torch.ones(1)}, "x")
    Traceback (most recent call last):
    ...
    eo_contrast.models.checkpoint.CheckpointError: x does not match the architecture ...
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = []
    for name in sorted(set(expected) & set(found)):
        want, got = expected[name], found[name]
        if tuple(want.shape) != tuple(got.shape):
            wrong.append(f"{name} (file {tuple(got.shape)}, model {tuple(want.shape)})")
        elif want.is_floating_point() != got.is_floating_point():
            wrong.append(f"{name} (file dtype {got.dtype}, model {want.dtype})")
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected}")
        if wrong:
            parts.append(f"mismatched tensors {wrong}")
        raise CheckpointError(
            f"{path} does not match the architecture in its metadata: " + "; ".join(parts)
        )
