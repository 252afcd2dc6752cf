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
