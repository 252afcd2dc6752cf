"""Config files for the command line: TOML (or YAML) mappings of a verb's options."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def read_config(path: str | Path, *, verb: str, allowed: Iterable[str]) -> dict[str, Any]:
    """Read the options of ``verb`` from a TOML or YAML file, checking every key.

    The file holds the options either at top level or under a table named after the verb
    (``[pretrain]``). Keys use the option names with ``_`` or ``-`` (``batch_size`` or
    ``batch-size``).

    Raises
    ------
    ValueError
        When the file cannot be parsed or has a key the verb does not take (named, with the
        keys it does take).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
    >>> _ = p.write_text('[pretrain]\\nepochs = 3\\nbatch-size = 16\\n')
    >>> read_config(p, verb="pretrain", allowed=["epochs", "batch_size"])
    {'epochs': 3, 'batch_size': 16}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # lazily: only YAML configs need it

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as err:  # parse errors of either format
        raise ValueError(f"config file {path} could not be parsed: {err}") from err
    if not isinstance(data, Mapping):
        raise ValueError(
            f"config file {path} must hold a table of options, not {type(data).__name__}"
        )
    section = data.get(verb, data)
    if not isinstance(section, Mapping):
        raise ValueError(f"config file {path}: [{verb}] must be a table of options")
    allowed = sorted(allowed)
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            raise ValueError(
                f"config file {path}: unknown key {key!r} for '{verb}'; valid keys: {allowed}"
            )
        out[name] = value
    return out


def parse_storage_options(value: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Storage options for fsspec from a JSON object string (a flag) or a mapping (a config key).

    The message of a bad value says what is wrong without repeating the value, which may hold
    credentials.

    Raises
    ------
    ValueError
        When the string is not JSON or the value is not a JSON object / mapping.

    Examples
    --------
    >>> parse_storage_options('{"anon": true}')
    {'anon': True}
    >>> parse_storage_options(None) is None
    True
    >>> parse_storage_options("anon")
    Traceback (most recent call last):
    ...
    ValueError: --storage-options / storage_options must be a JSON object ...
    """
    import json

    if value is None:
        return None
    hint = (
        "--storage-options / storage_options must be a JSON object such as "
        '\'{"anon": true}\' or \'{"key": "...", "secret": "..."}\''
    )
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        raise ValueError(f"{hint}, not a {type(value).__name__}")
    try:
        data = json.loads(value)
    except json.JSONDecodeError as err:  # position only: the text may hold credentials
        raise ValueError(
            f"{hint}; the value given is not valid JSON (line {err.lineno} column {err.colno})"
        ) from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{hint}, not a JSON {type(data).__name__}")
    return dict(data)


#: Shortest value treated as a secret (shorter ones would mask ordinary words in messages)
_MIN_SECRET = 8
#: Name fragments of storage options whose values are secrets (hidden from messages)
_SECRET_NAMES = ("secret", "token", "password", "key", "credential", "sas", "connection")
#: Environment variables whose values are secrets (hidden from messages)
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
)


def secret_values(options: Mapping[str, Any] | None, environ: Mapping[str, str]) -> set[str]:
    """String values that are credentials: in ``options`` (by key name, nested) and ``environ``.

    Used to mask them in any message the command line prints (values of 8 characters or more).

    Examples
    --------
    >>> sorted(secret_values({"key": "AKIAEXAMPLE1", "client_kwargs": {"region_name": "eu"}},
    ...                      {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "HOME": "/root"}))
    ['AKIAEXAMPLE1', 's3cr3t-value']
    """
    found: set[str] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if isinstance(v, str) and any(s in str(k).lower() for s in _SECRET_NAMES):
                    if len(v) >= _MIN_SECRET:
                        found.add(v)
                else:
                    walk(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                walk(v)

    walk(options or {})
    found.update(v for k in SECRET_ENV if len(v := environ.get(k, "")) >= _MIN_SECRET)
    return found
