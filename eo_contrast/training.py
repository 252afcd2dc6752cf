"""Contrastive pretraining on paired S1/S2 datacubes, resumable checkpoints, retrieval evaluation.

- :func:`pretrain` trains a :class:`~eo_contrast.models.DualEncoder` on a paired Dataset (as made
  by :func:`eo_contrast.pair` or :func:`eo_contrast.read_bigearthnet`): ``method="multimodal"``
  treats the S1 and S2 tiles of one place and pair as positives (symmetric InfoNCE with a
  learnable temperature); ``method="simclr"`` is the single-sensor baseline (two augmented views
  of the same tile, NT-Xent).
- :func:`retrieval_accuracy` embeds (held-out) tile pairs and measures cross-modal retrieval:
  how often the S2 tile of a place is the nearest neighbour of its S1 tile, and the reverse.

Building blocks: the pieces :func:`pretrain` is made of, public for code that times or reuses
them (the benchmarks compare the whole loop against the bare step) but not part of the
package's top-level API:

- :func:`corpus_input`: a corpus path/URL opened, with its valid-chip mask and band statistics;
- :func:`build_model`: the fresh model ``pretrain`` builds for a paired Dataset;
- :func:`optimizer_for`: its AdamW optimizer (no weight decay on biases, norms, temperature);
- :func:`lr_at`: its learning-rate schedule (linear warm-up, cosine decay);
- :func:`train_step`: one contrastive update.

Batches come from :class:`eo_contrast.tiling.TileStream` (chunks read once, in background
threads; NaN-heavy tiles dropped; normalisation with the model's statistics). Torch is imported
when a function runs, not when this module is imported.

Examples
--------
>>> from eo_contrast.training import METHODS, pretrain, retrieval_accuracy
>>> METHODS
('multimodal', 'simclr')
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eo_contrast.cube import canonical_band_names
from eo_contrast.readguard import guard_reads
from eo_contrast.runtime import tune_allocator
from eo_contrast.units import check_values

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from eo_contrast.models import DualEncoder

__all__ = ["ENCODERS", "METHODS", "STATE_FORMAT", "pretrain", "retrieval_accuracy"]

#: Pretraining methods.
METHODS: tuple[str, ...] = ("multimodal", "simclr")
#: Encoder layouts.
ENCODERS: tuple[str, ...] = ("resnet18", "resnet50")
_STEMS: tuple[str, ...] = ("imagenet", "small")
#: ``format`` of a training-state checkpoint (model + optimizer + schedule + step + log).
STATE_FORMAT = "eo-contrast.training-state"
_STATE_VERSION = 1
_HISTORY_COLUMNS = ("step", "epoch", "loss", "lr", "temperature", "pairs_per_s")
#: Configuration entries that must match when a run is resumed.
#: Upper bound of the learnable log inverse temperature (temperature >= 0.01), as in CLIP.
_MAX_LOG_SCALE = math.log(100.0)
_RESUME_KEYS = ("method", "tile", "batch_size", "seed", "encoder", "stem", "width", "sensor")
_CKPT_RE = re.compile(r"^step-(\d+)\.safetensors$")
#: Temporary files of checkpoint writes (see ``write_checkpoint``) left by a killed process.
_TMP_RE = re.compile(r"^\.step-\d+\.safetensors\.[0-9a-f]+\.tmp$")
#: Values sampled per band to estimate statistics of bands without defaults.
_SAMPLE_VALUES = 1_000_000
#: Pixels per band and sampled pair whose values are checked against the units before training.
_CHECK_PIXELS = 16_384


# --------------------------------------------------------------------------------------------
# Input checks, bands and statistics
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _sensors_for(method: str, sensor: str) -> tuple[str, ...]:
    return ("s1", "s2") if method == "multimodal" else (sensor,)


def _check_pairs(pairs: Any, sensors: Sequence[str], method: str) -> xr.Dataset:
    """The variables of ``pairs`` that training reads, or a clear error."""
    if not isinstance(pairs, xr.Dataset):
        raise TypeError(
            f"pretrain needs a paired xarray.Dataset with variables 's1' (pair, s1_band, y, x) "
            f"and 's2' (pair, s2_band, y, x), e.g. from ec.pair(s1, s2), or the path or URL of "
            f"a corpus from eo_contrast.corpus.build_corpus, not {type(pairs).__name__}"
        )
    have = [str(v) for v in pairs.data_vars]
    missing = [s for s in sensors if s not in pairs.data_vars]
    if missing:
        need = " and ".join(repr(s) for s in sensors)
        raise ValueError(
            f"the Dataset lacks variable(s) {missing} needed by method={method!r} (it needs "
            f"{need}; it has {have}); make a paired dataset with ec.pair(s1, s2) or "
            "ec.read_bigearthnet(...)"
            + ("" if method == "simclr" else ", or use method='simclr' with sensor='s1'/'s2'")
        )
    for s in sensors:
        var = pairs[s]
        band_dim = f"{s}_band"
        if band_dim not in var.dims or "y" not in var.dims or "x" not in var.dims:
            raise ValueError(
                f"variable {s!r} has dims {tuple(var.dims)}; expected ('pair', {band_dim!r}, 'y', "
                "'x') as made by ec.pair"
            )
        if band_dim not in pairs.coords:
            raise ValueError(
                f"variable {s!r} has no {band_dim!r} coordinate naming its bands; the model is "
                "built from the band names"
            )
    return pairs[list(sensors)]


def _data_units(pairs: xr.Dataset, sensor: str) -> str | None:
    name = f"{sensor}_units"
    if name not in pairs.coords:
        return None
    values = {str(u) for u in np.atleast_1d(pairs.coords[name].values)}
    return values.pop() if len(values) == 1 else ",".join(sorted(values))


def _check_units(data: xr.Dataset, sensors: Sequence[str], expected: Mapping[str, str]) -> None:
    """Refuse data whose ``<sensor>_units`` coordinate differs from the model's units."""
    for s in sensors:
        unit = _data_units(data, s)
        if unit is not None and unit != expected[s]:
            hint = (
                "convert linear backscatter with ec.linear_to_db"
                if s == "s1"
                else "scale reflectance to 0..1"
            )
            raise ValueError(
                f"{s} is in units {unit!r} but the model's {s} encoder expects "
                f"{expected[s]!r}; {hint}"
            )


def _check_sample_values(
    data: xr.Dataset, sensors: Sequence[str], units: Mapping[str, str], keep: np.ndarray | None
) -> None:
    """Refuse data whose values plainly contradict the units (linear S1, S2 digital numbers).

    Only the first and the last (valid) pair of each sensor are read, strided to about
    :data:`_CHECK_PIXELS` pixels per band: at most a few chunks, never the whole cube.
    """
    for s in sensors:
        var = data[s]
        band_dim = f"{s}_band"
        lead = [d for d in var.dims if d not in (band_dim, "y", "x")]
        step = max(1, math.ceil(math.sqrt(var.sizes["y"] * var.sizes["x"] / _CHECK_PIXELS)))
        index: dict[Any, Any] = {"y": slice(None, None, step), "x": slice(None, None, step)}
        where = ""
        if lead:
            n = var.sizes[lead[0]]
            idx = np.flatnonzero(keep) if keep is not None and keep.size == n else np.arange(n)
            if not idx.size:
                continue
            picks = sorted({int(idx[0]), int(idx[-1])})
            index[lead[0]] = picks
            where = f"{lead[0]} {picks}, sampled before training"
        sample = var.isel(index).transpose(*lead, band_dim, "y", "x")
        check_values(np.asarray(sample.values), s, units[s], name=f"pairs[{s!r}]", where=where)


def _sample_stats(
    var: xr.DataArray, band_dim: str, idx: list[int]
) -> tuple[list[float], list[float]]:
    """Mean and std of the bands ``idx`` of ``var`` from a strided sample of its pixels."""
    sub = var.isel({band_dim: idx})
    per_band = max(1, sub.size // max(1, len(idx)))
    step = max(1, math.ceil(math.sqrt(per_band / _SAMPLE_VALUES)))
    sample = sub.isel(y=slice(None, None, step), x=slice(None, None, step))
    values = np.asarray(sample.transpose(band_dim, ...).values, dtype=np.float64)
    values = values.reshape(len(idx), -1)
    means, stds = [], []
    for row, b in zip(values, idx, strict=True):
        finite = row[np.isfinite(row)]
        if not finite.size:
            name = str(var[band_dim].values[b])
            raise ValueError(
                f"band {name!r} of {var.name!r} has no default normalisation statistics and no "
                "valid pixel to estimate them from; pass a model built with explicit "
                "normalization=..."
            )
        std = float(finite.std())
        means.append(float(finite.mean()))
        stds.append(std if std > 0 and math.isfinite(std) else 1.0)
    return means, stds


def _stats_or_defaults(
    names: Sequence[str],
    stats: Mapping[str, Sequence[float]],
    defaults: Mapping[str, tuple[float, float]],
) -> dict[str, list[float]]:
    """Per-band mean/std from ``stats``; a band without a usable figure takes its default."""
    mean, std = [], []
    for name, m, sd in zip(names, stats["mean"], stats["std"], strict=True):
        m, sd = float(m), float(sd)
        fallback = defaults.get(name, (0.0, 1.0))
        ok = math.isfinite(m) and math.isfinite(sd) and sd > 0
        mean.append(m if ok else float(fallback[0]))
        std.append(sd if ok else float(fallback[1]))
    return {"mean": mean, "std": std}


def _describe(data: xr.Dataset, sensors: Sequence[str], keep: np.ndarray | None = None) -> str:
    """A one-line description of the training data for ``model.trained_on``."""
    if "chip" in data.dims:
        n = int(data.sizes["chip"]) if keep is None else int(keep.sum())
        what = "corpus chip(s)"
    else:
        n = int(data.sizes.get("pair", 1))
        what = "pair(s)"
    parts = [f"{n} {what} of {int(data.sizes['y'])}x{int(data.sizes['x'])} px"]
    parts.extend(
        f"{s}: {', '.join(canonical_band_names(data[f'{s}_band'].values))}" for s in sensors
    )
    for key in ("s2_time", "s1_time"):
        if key in data.coords and data.coords[key].size:
            t = np.asarray(data.coords[key].values).astype("datetime64[D]")
            parts.append(f"{key} {t.min()}..{t.max()}")
            break
    if "spatial_ref" in data.coords:
        wkt = data.coords["spatial_ref"].attrs.get("crs_wkt")
        if wkt:
            try:
                from pyproj import CRS

                epsg = CRS.from_wkt(wkt).to_epsg()
                parts.append(f"EPSG:{epsg}" if epsg else "custom CRS")
            except Exception:  # pragma: no cover - description only
                pass
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _history_frame(rows: dict[str, list[Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({c: rows[c] for c in _HISTORY_COLUMNS})
    return frame.astype(
        {
            "step": "int64",
            "epoch": "int64",
            "loss": "float64",
            "lr": "float64",
            "temperature": "float64",
            "pairs_per_s": "float64",
        }
    )


def _write_state(
    path: Path,
    model: DualEncoder,
    optimizer: Any,
    state: dict[str, Any],
    config: dict[str, Any],
    history: dict[str, list[Any]],
    generator: torch.Generator | None,
) -> Path:
    """Model, optimizer, schedule position, log and RNG state: one safetensors file, atomic.

    Tensors (weights, AdamW moments and step counters, the augmentation generator state) go in
    safetensors; everything else is JSON in the header metadata. Nothing is pickled.
    """
    from eo_contrast.models import write_checkpoint
    from eo_contrast.models.checkpoint import json_safe

    tensors: dict[str, Any] = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_json: dict[str, Any] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if hasattr(value, "detach"):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                opt_json.setdefault(str(idx), {})[key] = json_safe(value)
    if generator is not None:
        tensors["rng/augment"] = generator.get_state()
    groups = [
        {k: json_safe(v) for k, v in g.items() if k not in ("foreach", "fused")}
        for g in opt["param_groups"]
    ]
    meta = {
        "format": STATE_FORMAT,
        "format_version": _STATE_VERSION,
        "model": model.metadata,
        "optimizer": {"param_groups": groups, "state": opt_json},
        "state": state,
        "config": json_safe(config),
        "history": json_safe(history),
    }
    return write_checkpoint(path, tensors, meta)


def _find_checkpoint(resume: str | os.PathLike[str]) -> Path:
    p = Path(resume)
    if p.is_dir():
        found = sorted((int(m.group(1)), f) for f in p.iterdir() if (m := _CKPT_RE.match(f.name)))
        if not found:
            raise FileNotFoundError(
                f"resume={str(resume)!r} is a folder without training checkpoints "
                "(step-*.safetensors); give a checkpoint file or the checkpoint_dir of a run"
            )
        return found[-1][1]
    if not p.exists():
        raise FileNotFoundError(f"resume={str(resume)!r}: no such checkpoint file")
    return p


def _read_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from eo_contrast.models import CheckpointError, read_checkpoint

    tensors, meta = read_checkpoint(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{path} is not a training checkpoint (format {meta.get('format')!r}, expected "
            f"{STATE_FORMAT!r}); to continue from saved weights use model=DualEncoder.load(...)"
        )
    if meta.get("format_version") != _STATE_VERSION:
        raise CheckpointError(
            f"{path} has training-checkpoint version {meta.get('format_version')!r}; this "
            f"eo-contrast reads version {_STATE_VERSION}"
        )
    return tensors, meta


def _load_optimizer(optimizer: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    current = optimizer.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["optimizer"]["state"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for saved, cur in zip(meta["optimizer"]["param_groups"], current["param_groups"], strict=True):
        g = dict(cur)
        g.update({k: v for k, v in saved.items() if k != "params"})
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --------------------------------------------------------------------------------------------
# Building blocks (public): the pieces pretrain() is made of, for code that times or reuses them
# --------------------------------------------------------------------------------------------


def corpus_input(
    pairs: Any, storage_options: Mapping[str, Any] | None
) -> tuple[Any, np.ndarray | None, dict[str, dict[str, list[float]]] | None]:
    """``pairs`` (a corpus path/URL opened), the corpus's ``valid`` mask and band statistics.

    The first step of :func:`pretrain`: a path or URL of a corpus made by
    :func:`eo_contrast.corpus.build_corpus` is opened (with ``storage_options``); for a corpus,
    the mask of its valid chips and its per-sensor band statistics
    (``{"s1": {"mean": [...], "std": [...]}, ...}``, for :func:`build_model`) come with it. For a
    Dataset that is not a corpus the mask and statistics are None.

    Raises
    ------
    ValueError
        For ``storage_options`` with an opened Dataset, or a corpus without a valid chip.
    """
    from eo_contrast.corpus import CORPUS_FORMAT, open_corpus

    if isinstance(pairs, str | os.PathLike):
        pairs = open_corpus(pairs, storage_options=storage_options)
    elif storage_options is not None:
        raise ValueError(
            "storage_options are for a corpus given as a path or URL; an opened Dataset "
            "already knows its store"
        )
    if not isinstance(pairs, xr.Dataset) or pairs.attrs.get("eo_contrast_format") != CORPUS_FORMAT:
        return pairs, None, None
    keep = np.asarray(pairs["valid"].values, dtype=bool) if "valid" in pairs.coords else None
    if keep is not None and not keep.any():
        raise ValueError(
            f"the corpus has no valid chip (all {keep.size} failed the NaN or cloud rule of its "
            "build); rebuild it with other sampling or a higher max_nan_fraction / "
            "max_cloud_fraction"
        )
    stats = {
        s: {"mean": list(pairs[s].attrs["mean"]), "std": list(pairs[s].attrs["std"])}
        for s in ("s1", "s2")
        if s in pairs.data_vars and {"mean", "std"} <= set(pairs[s].attrs)
    }
    return pairs, keep, stats or None


def build_model(
    data: xr.Dataset,
    sensors: Sequence[str],
    method: str,
    encoder: str,
    stem: str,
    seed: int,
    temperature: float,
    embed_dim: int,
    width: int = 64,
    stats: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> DualEncoder:
    """A fresh :class:`~eo_contrast.models.DualEncoder` for ``data``, as :func:`pretrain` builds it.

    One encoder per sensor of ``sensors``, for the bands named by the coordinates
    ``<sensor>_band`` of the paired Dataset ``data``. Normalisation: ``stats`` of a sensor (a
    corpus's, from :func:`corpus_input`; a band without a usable figure takes its default),
    else the defaults of :data:`eo_contrast.models.BAND_STATS`, and for bands without defaults
    the mean and standard deviation of a strided sample of their pixels. ``encoder``, ``stem``,
    ``width``, ``embed_dim``, ``method``, ``temperature`` and ``seed`` are those of
    :func:`pretrain`.

    Raises
    ------
    ValueError
        When the data's units (``<sensor>_units``) are not the default encoders' units, or a
        band without default statistics has no valid pixel.
    """
    from eo_contrast.models import BAND_STATS, DEFAULT_UNITS, DualEncoder

    if not isinstance(data, xr.Dataset):
        raise TypeError(f"build_model needs a paired xarray.Dataset, not {type(data).__name__}")
    bands: dict[str, list[str]] = {}
    normalization: dict[str, dict[str, list[float]]] = {}
    for s in sensors:
        names = canonical_band_names(data[f"{s}_band"].values)
        bands[s] = names
        if stats is not None and s in stats:  # a corpus's own statistics, band by band
            normalization[s] = _stats_or_defaults(names, stats[s], BAND_STATS)
            continue
        unknown = [i for i, n in enumerate(names) if n not in BAND_STATS]
        if unknown:
            m, sd = _sample_stats(data[s], f"{s}_band", unknown)
            mean = [BAND_STATS[n][0] if n in BAND_STATS else 0.0 for n in names]
            std = [BAND_STATS[n][1] if n in BAND_STATS else 1.0 for n in names]
            for i, mi, si in zip(unknown, m, sd, strict=True):
                mean[i], std[i] = mi, si
            normalization[s] = {"mean": mean, "std": std}
    _check_units(data, sensors, DEFAULT_UNITS)
    return DualEncoder(
        bands,
        arch=encoder,
        stem=stem,
        width=width,
        embed_dim=embed_dim,
        normalization=normalization or None,
        method=method,
        temperature=temperature,
        seed=seed,
    )


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up, then cosine decay to 0.

    The schedule of :func:`pretrain`: ``base`` peak rate, ``warmup`` updates of linear warm-up,
    cosine decay over the ``total`` planned updates.

    >>> [round(lr_at(s, 1.0, 2, 6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def optimizer_for(model: DualEncoder, lr: float, weight_decay: float, fused: bool) -> Any:
    """The AdamW optimizer of :func:`pretrain` for ``model``.

    Betas (0.9, 0.999); decoupled weight decay ``weight_decay`` on weights of two or more
    dimensions only (none on biases, normalisation weights and the temperature); ``fused``
    kernels when true (CUDA).
    """
    import torch

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on biases, norms, temperature
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused or None)


def train_step(model: DualEncoder, optimizer: Any, a: Any, b: Any, lr: float, *, cuda: bool) -> Any:
    """One contrastive update of ``model`` on a positive batch ``(a, b)`` at learning rate ``lr``.

    The step :func:`pretrain` runs (and the throughput benchmark times): forward of both views
    (bf16 autocast and channels-last on CUDA), the model's loss in float32, AdamW update, the
    temperature clamped. Returns ``[loss, temperature]`` as a detached tensor on the device, so
    the caller decides when to synchronise with the host.
    """
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    if cuda:
        a = a.contiguous(memory_format=torch.channels_last)
        b = b.contiguous(memory_format=torch.channels_last)
        autocast: Any = torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        autocast = torch.autocast("cpu", enabled=False)
    with autocast:
        z1, z2 = model(a, b)
    # the loss in float32: bf16 logits at a low temperature would be too coarse
    temp = model.temperature
    loss = model.contrastive_loss(z1.float(), z2.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, _MAX_LOG_SCALE)
    return torch.stack([loss.detach().float(), temp.detach().float()])


# --------------------------------------------------------------------------------------------
# Pretraining: the steps of pretrain()
# --------------------------------------------------------------------------------------------


def _check_choices(method: str, encoder: str, stem: str, sensor: str) -> None:
    """Refuse an unknown ``method``, ``encoder``, ``stem`` or ``sensor``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {list(ENCODERS)}")
    if stem not in _STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {list(_STEMS)}")
    if sensor not in ("s1", "s2"):
        raise ValueError(f"unknown sensor {sensor!r} for method='simclr'; use 's1' or 's2'")


def _check_optimisation(lr: Any, weight_decay: Any, warmup_fraction: Any) -> None:
    """Refuse a learning rate, weight decay or warm-up fraction out of range."""
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not (isinstance(warmup_fraction, (int, float)) and 0 <= warmup_fraction < 1):
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")


def _check_start(resume: Any, model: Any) -> None:
    """Refuse ``resume`` and ``model`` together, and a ``model`` that is not a DualEncoder."""
    from eo_contrast.models import DualEncoder

    if resume is not None and model is not None:
        raise ValueError("give either resume=<checkpoint> or model=<DualEncoder>, not both")
    if model is not None and not isinstance(model, DualEncoder):
        raise TypeError(f"model must be an eo_contrast DualEncoder, got {type(model).__name__}")


def _read_resume(
    resume: str | os.PathLike[str], config: Mapping[str, Any]
) -> tuple[DualEncoder, dict[str, Any], dict[str, Any]]:
    """The model of checkpoint ``resume`` with its weights, the checkpoint's tensors and metadata.

    The configuration entries of :data:`_RESUME_KEYS` must equal those of ``config``.
    """
    from eo_contrast.models import DualEncoder

    tensors, meta = _read_state(_find_checkpoint(resume))
    saved = meta["config"]
    diff = {k: (saved.get(k), config[k]) for k in _RESUME_KEYS if saved.get(k) != config[k]}
    if diff:
        text = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"resume={str(resume)!r} was written with a different configuration ({text}); "
            "pass the checkpoint's values to continue it"
        )
    model = DualEncoder.from_metadata(meta["model"])
    model.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True
    )
    return model, tensors, meta


def _check_given_model(model: DualEncoder, method: str, sensors: Sequence[str]) -> None:
    """Refuse a ``model=`` built for another method or lacking an encoder of ``sensors``."""
    if model.method != method:
        raise ValueError(
            f"model was built for method={model.method!r} but method={method!r}; pass "
            f"method={model.method!r} or a model built for {method!r}"
        )
    lacking = [s for s in sensors if s not in model.sensors]
    if lacking:
        raise ValueError(f"model has no encoder for {lacking} (its sensors: {list(model.sensors)})")


def _plan_steps(
    tiles_per_epoch: int,
    batch_size: int,
    epochs: int,
    max_steps: int | None,
    warmup_steps: int | None,
    warmup_fraction: float,
) -> tuple[int, int]:
    """The planned number of updates and the warm-up length of the learning-rate schedule."""
    per_epoch = max(1, tiles_per_epoch // batch_size)
    total = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    warmup = (
        _check_int("warmup_steps", warmup_steps, 0)
        if warmup_steps is not None
        else round(warmup_fraction * total)
    )
    return total, warmup


def _to_device(model: DualEncoder, dev: Any) -> bool:
    """Move ``model`` to ``dev`` (channels-last on CUDA) in train mode; whether it is CUDA."""
    import torch

    model.to(dev)
    cuda = bool(dev.type == "cuda")
    if cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    return cuda


@dataclass
class _Loop:
    """One pretraining run: the update loop, its log and its checkpoints.

    Loss and temperature stay on the device (``pending``) and are read back every
    ``log_every`` updates (:meth:`flush`, the one host synchronisation).
    """

    model: DualEncoder
    optimizer: Any
    stream: Any
    augment: Any
    generator: torch.Generator | None
    sensors: list[str]
    config: dict[str, Any]
    lr: float
    warmup: int
    total: int
    epochs: int
    batch_size: int
    log_every: int
    max_steps: int | None
    cuda: bool
    ckpt_dir: Path | None
    checkpoint_every: int | None
    keep_checkpoints: int | None
    history: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _HISTORY_COLUMNS})
    step: int = 0
    pending: list[Any] = field(default_factory=list)  # per update: [loss, temperature]
    pending_meta: list[tuple[int, int, float]] = field(default_factory=list)  # (step, epoch, lr)
    window_start: float = 0.0
    bar: Any = None

    def restore(self, tensors: dict[str, Any], meta: dict[str, Any]) -> tuple[int, int]:
        """Optimizer, position, log and RNG state of a checkpoint; (epoch, batches done in it)."""
        _load_optimizer(self.optimizer, tensors, meta)
        st = meta["state"]
        self.step = int(st["step"])
        self.history = {c: list(meta["history"].get(c, [])) for c in _HISTORY_COLUMNS}
        if self.generator is not None and "rng/augment" in tensors:
            self.generator.set_state(tensors["rng/augment"])
        return int(st["epoch"]), int(st["batch_in_epoch"])

    def flush(self) -> None:
        """Read the pending values back (one host sync) and append them to the log."""
        import torch

        if not self.pending:
            return
        values = torch.stack(self.pending).float().cpu().tolist()  # the one host sync
        now = time.perf_counter()
        rate = len(self.pending) * self.batch_size / max(now - self.window_start, 1e-9)
        self.window_start = now
        for (s, e, lr_s), (loss_v, temp_v) in zip(self.pending_meta, values, strict=True):
            for key, v in zip(_HISTORY_COLUMNS, (s, e, loss_v, lr_s, temp_v, rate), strict=True):
                self.history[key].append(v)
        if self.bar is not None:
            self.bar.update(len(self.pending))
            self.bar.set_postfix(loss=f"{values[-1][0]:.4f}", pairs_per_s=f"{rate:.1f}")
        self.pending.clear()
        self.pending_meta.clear()

    def _checkpoint(self) -> Path:
        assert self.ckpt_dir is not None
        return self.ckpt_dir / f"step-{self.step:08d}.safetensors"

    def save(self, epoch: int, batch_in_epoch: int) -> None:
        """Write the checkpoint of this step; remove stale temporary files and old checkpoints."""
        assert self.ckpt_dir is not None
        self.flush()
        state = {"step": self.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}
        _write_state(
            self._checkpoint(), self.model, self.optimizer, state, self.config, self.history,
            self.generator,
        )  # fmt: skip
        # temporary files of writes cut short by a killed process are never checkpoints
        for stale in self.ckpt_dir.iterdir():
            if _TMP_RE.match(stale.name):
                stale.unlink(missing_ok=True)
        if self.keep_checkpoints is not None:
            found = sorted(
                (int(m.group(1)), f)
                for f in self.ckpt_dir.iterdir()
                if (m := _CKPT_RE.match(f.name))
            )
            for _, old in found[: -self.keep_checkpoints]:
                old.unlink(missing_ok=True)

    def _epoch(self, epoch: int, skip: int) -> tuple[int, int] | None:
        """The updates of one epoch (its first ``skip`` batches passed over); where
        ``max_steps`` stopped it, if it did."""
        self.stream.set_epoch(epoch)
        done = 0
        for batch in self.stream:
            if done < skip:
                done += 1
                continue
            lr_now = lr_at(self.step, self.lr, self.warmup, self.total)
            if self.augment is not None:
                a, b = self.augment.views(batch[self.sensors[0]], self.generator)
            else:
                a, b = batch["s1"], batch["s2"]
            self.pending.append(
                train_step(self.model, self.optimizer, a, b, lr_now, cuda=self.cuda)
            )
            self.pending_meta.append((self.step + 1, epoch, lr_now))
            self.step += 1
            done += 1
            if len(self.pending) >= self.log_every:
                self.flush()
            every = self.checkpoint_every
            if self.ckpt_dir is not None and every and self.step % every == 0:
                self.save(epoch, done)
            if self.max_steps is not None and self.step >= self.max_steps:
                return (epoch, done)
        return None

    def _epochs(self, start_epoch: int, skip: int) -> None:
        stopped: tuple[int, int] | None = None  # (epoch, batches done in it) where it stopped
        for epoch in range(start_epoch, self.epochs):
            skip_now = skip if epoch == start_epoch else 0
            if self.max_steps is not None and self.step >= self.max_steps:
                stopped = (epoch, skip_now)
                break
            stopped = self._epoch(epoch, skip_now)
            self.flush()
            if stopped is not None:
                break
            if self.ckpt_dir is not None and self.checkpoint_every is None:
                self.save(epoch + 1, 0)
        self.flush()
        if stopped is not None:
            if self.ckpt_dir is not None and not self._checkpoint().exists():
                self.save(*stopped)
        elif (
            self.ckpt_dir is not None
            and self.checkpoint_every is not None
            and (not self.history["step"] or not self._checkpoint().exists())
        ):
            self.save(self.epochs, 0)

    def run(self, start_epoch: int, skip: int, *, progress: bool, method: str) -> None:
        """Train from batch ``skip`` of epoch ``start_epoch`` to the end of the run."""
        self.window_start = time.perf_counter()
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total, initial=self.step, desc=f"pretrain {method}", unit="step"
            )
        try:
            self._epochs(start_epoch, skip)
        finally:
            if self.bar is not None:
                self.bar.close()


def _finish(model: DualEncoder, loop: _Loop) -> DualEncoder:
    """The trained model in eval mode (contiguous layout), with its log and run summary."""
    import torch

    if loop.cuda:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model.eval()
    model.history = _history_frame(loop.history)
    losses = [v for v in loop.history["loss"] if v is not None]
    model.info = {
        **model.info,
        "pretrain": {**model.info["pretrain"], "steps": loop.step},
        "tiles": loop.stream.stats.summary(),
    }
    if losses:
        model.info["final_loss"] = float(losses[-1])
        model.info["final_temperature"] = float(model.temperature.detach().cpu())
    return model


# --------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------


def pretrain(
    pairs: xr.Dataset | str | os.PathLike[str],
    *,
    method: str = "multimodal",
    epochs: int = 1,
    tile: int = 64,
    batch_size: int = 32,
    device: str | Any = "auto",
    seed: int = 0,
    encoder: str = "resnet18",
    progress: bool = True,
    max_steps: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    stem: str = "imagenet",
    width: int = 64,
    sensor: str = "s2",
    temperature: float = 0.07,
    embed_dim: int = 128,
    max_nan_fraction: float = 0.5,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int | None = 3,
    resume: str | os.PathLike[str] | None = None,
    model: DualEncoder | None = None,
    prefetch: int = 2,
    log_every: int = 10,
    shuffle_buffer: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> DualEncoder:
    """Contrastive pretraining of a dual encoder on a paired S1/S2 Dataset.

    Each epoch streams the tiles of ``pairs`` once (chunk order shuffled with ``seed``, next
    chunks read in background threads, tiles with more than ``max_nan_fraction`` NaN pixels
    dropped, the rest normalised with the model's statistics and NaN-filled with the band mean)
    into batches of ``batch_size`` tiles (an incomplete last batch is dropped).

    ``method="multimodal"``: the S1 and S2 tiles of the same place and pair are positives, the
    other tiles of the batch negatives; symmetric InfoNCE (CLIP) with a learnable temperature.
    ``method="simclr"``: tiles of one sensor only (``sensor``), two augmented views per tile
    (:class:`~eo_contrast.models.SimCLRAugment`, driven by a seeded :class:`torch.Generator`),
    NT-Xent with a learnable temperature; the model then has a single encoder.

    Optimisation: AdamW (no weight decay on biases, normalisation weights and the
    temperature), learning rate warmed up linearly over the first ``warmup_steps`` updates and
    then decayed to 0 along a cosine over the planned number of updates (``epochs`` times the
    tiles per epoch divided by ``batch_size``, or ``max_steps`` when that is fewer; when tiles
    are dropped for NaN, fewer updates run and the rate ends above 0). On CUDA the forward pass
    runs under bf16 autocast, with channels-last memory layout. On the CPU a run is deterministic for a ``seed``.

    Parameters
    ----------
    pairs
        A paired Dataset: ``s1`` ``(pair, s1_band, y, x)`` in dB and ``s2``
        ``(pair, s2_band, y, x)`` reflectance 0..1, with band-name coordinates ``s1_band`` and
        ``s2_band``, as made by :func:`eo_contrast.pair` or :func:`eo_contrast.read_bigearthnet`
        (other variables are ignored). ``method="simclr"`` needs only the ``sensor`` variable.
        Or a corpus made by :func:`eo_contrast.corpus.build_corpus`: its path or URL, or the
        Dataset :func:`eo_contrast.corpus.open_corpus` returns. A corpus is streamed shard by
        shard (shard order shuffled, next shards read in background threads, tiles drawn
        from a shuffle buffer), so memory is bounded by ``shuffle_buffer`` and ``prefetch``,
        not by the corpus's size; only its valid chips are used, and a new model is
        normalised with the corpus's per-band statistics.
    method
        ``"multimodal"`` or ``"simclr"``.
    epochs
        Passes over the data.
    tile
        Tile size in pixels (the model's input window).
    batch_size
        Tiles (pairs of tiles) per update, at least 2 (the other tiles are the negatives).
    device
        ``"auto"`` (CUDA, then Apple MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"`` or a :class:`torch.device`.
    seed
        Seed of the weight initialisation, the chunk and tile order and the augmentations.
    encoder
        ``"resnet18"`` or ``"resnet50"``.
    progress
        Show a progress bar (tqdm) with the loss and pairs per second.
    max_steps
        Stop after this many updates in all (counted from the start of the run, resumed runs
        included), even inside an epoch: a budget for a large corpus, of which one epoch may be
        more than needed. The learning-rate schedule is planned over it. ``None``: ``epochs``
        whole epochs. With ``checkpoint_dir``, a checkpoint is written where it stops, and
        ``resume=`` with a larger ``max_steps`` (or none) continues from there.
    lr, weight_decay
        AdamW peak learning rate and decoupled weight decay.
    warmup_steps, warmup_fraction
        Linear warm-up length in updates; ``None`` means ``warmup_fraction`` of the planned
        updates.
    stem
        Encoder stem. ``"imagenet"`` (default: 7x7 stride-2 convolution and max-pool; a 64 px
        tile ends as a 2x2 map) is the cheapest and enough for tile embeddings; ``"small"``
        (3x3 stride-1, no max-pool) keeps 4x finer feature maps, better for segmenting small
        tiles, at about 16 times the compute.
    width
        Channels of the encoders' first stage: 64 is the standard ResNet; smaller widths make
        lighter models (parameters scale with ``width**2``).
    sensor
        The sensor of ``method="simclr"``: ``"s2"`` (default) or ``"s1"``.
    temperature
        Initial softmax temperature (learned from there).
    embed_dim
        Length of the projected embedding.
    max_nan_fraction
        Tiles with more than this fraction of NaN pixels (in any variable used) are dropped.
    checkpoint_dir
        Folder for training checkpoints ``step-NNNNNNNN.safetensors`` (weights, AdamW state,
        schedule position, augmentation RNG state, the log so far; tensors in safetensors,
        the rest JSON; written atomically through a temporary file and :func:`os.replace`;
        temporary files left by a killed run are removed at the next checkpoint).
    checkpoint_every
        Write a checkpoint every this many updates; ``None``: at the end of every epoch. A last
        one is always written at the end of the run.
    keep_checkpoints
        Keep only this many most recent checkpoints (``None``: all).
    resume
        A checkpoint file (or a ``checkpoint_dir``: its latest checkpoint) to continue from:
        the model, optimizer, schedule and position in the data are restored, so the run goes
        on as if it had not stopped (on the CPU: the same losses and weights). ``method``,
        ``tile``, ``batch_size``, ``seed``, ``encoder``, ``stem`` and ``sensor`` must match the
        checkpoint; ``epochs`` may be raised to train longer.
    model
        Continue training this :class:`~eo_contrast.models.DualEncoder` (fresh optimizer and
        schedule) instead of a new one built from the data's bands; its method and sensors must
        fit ``method`` and ``pairs``.
    prefetch
        Chunks read ahead (and batches assembled ahead) in background threads.
    log_every
        The loss is read back from the device (one synchronisation) every this many updates;
        every update still gets a row in the log.
    shuffle_buffer
        Tiles held by the shuffle buffer batches are drawn from (see
        :class:`~eo_contrast.tiling.TileStream`; default: four chunks' worth, at most 256 MiB).
    storage_options
        fsspec options (credentials, endpoint) for a corpus given as a URL.

    Returns
    -------
    DualEncoder
        The trained model, in eval mode, on ``device``. ``model.history`` is a
        :class:`pandas.DataFrame` with one row per update: ``step`` (1-based), ``epoch``
        (0-based), ``loss``, ``lr``, ``temperature`` (at that update) and ``pairs_per_s``
        (throughput over the logging window). ``model.trained_on`` describes the data;
        ``model.info`` holds the configuration (``"pretrain"``) and the tile statistics
        (``"tiles"``).

    Raises
    ------
    TypeError
        When ``pairs`` is not a Dataset.
    ValueError
        For an unknown ``method``, ``encoder``, ``stem`` or ``sensor``; when ``pairs`` lacks
        the variables the method needs; when ``tile`` is larger than the cube; when every
        tile is dropped for NaN (the message says how many and why); when data units do not
        match; when a resumed checkpoint's configuration differs.
    eo_contrast.UnitsError
        (a ``ValueError``) When the values of the first and last pair of a sensor plainly
        contradict the units (linear S1 backscatter, S2 digital numbers), checked before
        training (see :func:`eo_contrast.check_values`).
    eo_contrast.ChunkReadError
        (an ``OSError``) When a stored chunk of ``pairs`` cannot be read or decoded: it names
        the store and the chunk (see :func:`eo_contrast.guard_reads`).
    FileNotFoundError
        When ``resume`` does not exist.

    Notes
    -----
    The model is built from the band names of ``pairs`` (coordinates ``s1_band`` and
    ``s2_band``). Bands with default statistics (:data:`eo_contrast.models.BAND_STATS`) use
    them; the mean and standard deviation of any other band are estimated from a strided
    sample of about a million of its pixels (NaN ignored) and recorded in the model.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> pairs = xr.Dataset({"s2": (("pair", "s2_band", "y", "x"),
    ...     rng.uniform(0, .4, (2, 3, 32, 32)).astype("f4"))}, coords={"s2_band": ["B04", "B03", "B02"]})
    >>> model = pretrain(pairs, method="simclr", tile=16, batch_size=4, progress=False)
    >>> model.method, model.sensors, model.history["step"].tolist()
    ('simclr', ('s2',), [1, 2])
    >>> pretrain(pairs, tile=16)
    Traceback (most recent call last):
    ...
    ValueError: the Dataset lacks variable(s) ['s1'] needed by method='multimodal' ...
    """
    import torch

    from eo_contrast.models import SimCLRAugment, resolve_device
    from eo_contrast.tiling import TileStream

    # -- input checks ----------------------------------------------------------------------------
    _check_choices(method, encoder, stem, sensor)
    epochs = _check_int("epochs", epochs, 1)
    tile = _check_int("tile", tile, 1)
    batch_size = _check_int("batch_size", batch_size, 2)
    seed = _check_int("seed", seed, 0)
    log_every = _check_int("log_every", log_every, 1)
    if max_steps is not None:
        max_steps = _check_int("max_steps", max_steps, 1)
    if checkpoint_every is not None:
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
    if keep_checkpoints is not None:
        keep_checkpoints = _check_int("keep_checkpoints", keep_checkpoints, 1)
    _check_optimisation(lr, weight_decay, warmup_fraction)
    _check_start(resume, model)

    sensors = _sensors_for(method, sensor)
    pairs, keep, corpus_stats = corpus_input(pairs, storage_options)
    data = guard_reads(_check_pairs(pairs, sensors, method))  # damaged chunks are named
    dev = resolve_device(device)
    tune_allocator()  # training allocates megabytes per layer and step
    config: dict[str, Any] = {
        "method": method,
        "epochs": epochs,
        "tile": tile,
        "batch_size": batch_size,
        "seed": seed,
        "encoder": encoder,
        "stem": stem,
        "width": width,
        "sensor": sensor if method == "simclr" else None,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "max_nan_fraction": float(max_nan_fraction),
        "temperature_init": float(temperature),
        "max_steps": max_steps,
    }

    # -- model -----------------------------------------------------------------------------------
    ckpt_tensors: dict[str, Any] | None = None
    ckpt_meta: dict[str, Any] | None = None
    if resume is not None:
        model, ckpt_tensors, ckpt_meta = _read_resume(resume, config)
    elif model is not None:
        _check_given_model(model, method, sensors)
        config["encoder"], config["stem"] = model.arch, model.stem
        config["width"] = model.width
    else:
        model = build_model(
            data, sensors, method, encoder, stem, seed, temperature, embed_dim, width,
            stats=corpus_stats,
        )  # fmt: skip
    assert model is not None
    _check_units(data, sensors, model.units)
    _check_sample_values(data, sensors, model.units, keep)

    # -- data and schedule -----------------------------------------------------------------------
    # TileStream raises (ValueError) for a tile larger than the cube or its chunks, with advice
    stream = TileStream(
        data,
        tile=tile,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        prefetch=prefetch,
        max_nan_fraction=max_nan_fraction,
        normalize=model,
        drop_last=True,
        device=dev,
        epochs=1,
        keep=keep,
        shuffle_buffer=shuffle_buffer,
    )
    total, warmup = _plan_steps(
        stream.tiles_per_epoch, batch_size, epochs, max_steps, warmup_steps, warmup_fraction
    )
    config.update({"planned_steps": total, "warmup_steps": warmup})
    if resume is None:
        desc = _describe(data, sensors, keep)
        old = model.trained_on
        model.trained_on = desc if old in ("", "untrained") else f"{old}; then {desc}"
    from eo_contrast.models.checkpoint import json_safe

    model.info = {**model.info, "pretrain": json_safe({**config, "device": dev.type})}

    # -- optimizer, augmentation, resumed state --------------------------------------------------
    cuda = _to_device(model, dev)
    optimizer = optimizer_for(model, float(lr), float(weight_decay), fused=cuda)
    augment = SimCLRAugment() if method == "simclr" else None
    generator: torch.Generator | None = None
    if augment is not None:
        generator = torch.Generator(device=dev if cuda else "cpu")
        generator.manual_seed(seed)
    loop = _Loop(
        model=model,
        optimizer=optimizer,
        stream=stream,
        augment=augment,
        generator=generator,
        sensors=list(sensors),
        config=config,
        lr=float(lr),
        warmup=warmup,
        total=total,
        epochs=epochs,
        batch_size=batch_size,
        log_every=log_every,
        max_steps=max_steps,
        cuda=cuda,
        ckpt_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
    )
    start_epoch, skip = 0, 0
    if ckpt_meta is not None and ckpt_tensors is not None:
        start_epoch, skip = loop.restore(ckpt_tensors, ckpt_meta)

    # -- the loop, checkpoints, the trained model ------------------------------------------------
    loop.run(start_epoch, skip, progress=progress, method=method)
    return _finish(model, loop)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _embed_pairs(
    model: DualEncoder,
    data: xr.Dataset,
    tile: int,
    batch_size: int,
    dev: Any,
    max_nan_fraction: float,
    max_tiles: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    from eo_contrast.tiling import TileStream

    stream = TileStream(
        data,
        tile=tile,
        batch_size=batch_size,
        shuffle=False,
        prefetch=1,
        max_nan_fraction=max_nan_fraction,
        normalize=model,
        device=dev,
    )
    cuda = dev.type == "cuda"
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cuda
        else torch.autocast("cpu", enabled=False)
    )
    z1s, z2s = [], []
    n = 0
    with torch.no_grad(), autocast:
        for batch in stream:
            z1s.append(model.embed("s1", batch["s1"]).float())
            z2s.append(model.embed("s2", batch["s2"]).float())
            n += len(z1s[-1])
            if max_tiles is not None and n >= max_tiles:
                break
    z1, z2 = torch.cat(z1s), torch.cat(z2s)
    if max_tiles is not None:
        z1, z2 = z1[:max_tiles], z2[:max_tiles]
    return z1, z2


def retrieval_accuracy(
    model: DualEncoder,
    pairs: xr.Dataset,
    *,
    tile: int = 64,
    batch_size: int = 64,
    device: str | Any = "auto",
    max_nan_fraction: float = 0.5,
    max_tiles: int | None = None,
    k: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Cross-modal retrieval accuracy of a multimodal model on the tile pairs of ``pairs``.

    All tiles of ``pairs`` (in plan order, NaN-heavy tiles dropped) are embedded with both
    encoders. For each S1 tile, the S2 tiles are ranked by cosine similarity; a hit at ``k``
    means the S2 tile of the same place and pair is among the ``k`` nearest (S1->S2), and the
    same the other way (S2->S1). Use held-out tiles (another area, or other dates) to measure
    what the model learnt rather than what it remembers. Note that the same place at two close
    dates forms near-duplicate candidates, which lowers the scores.

    Parameters
    ----------
    model
        A two-sensor :class:`~eo_contrast.models.DualEncoder` (``bands`` of ``"s1"`` and ``"s2"``).
    pairs
        A paired Dataset with ``s1`` and ``s2`` (see :func:`pretrain`).
    tile, batch_size, max_nan_fraction
        Tiling of the evaluation (as in :func:`pretrain`).
    device
        Where to run the encoders.
    max_tiles
        Use only the first this many tiles.
    k
        Ranks to report.

    Returns
    -------
    dict
        ``n_tiles``; for each ``k``: ``chance_topk`` (``k / n_tiles``), ``s1_to_s2_topk`` and
        ``s2_to_s1_topk`` (fractions of hits in [0, 1]).

    Raises
    ------
    ValueError
        When the model lacks an S1 or S2 encoder, ``pairs`` lacks ``s1``/``s2``, or their
        units (``s1_units``/``s2_units``) are not the model's.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from eo_contrast.models import DEFAULT_BANDS, DualEncoder
    >>> rng = np.random.default_rng(0)
    >>> pairs = xr.Dataset({
    ...     "s1": (("pair", "s1_band", "y", "x"), rng.normal(-12, 3, (1, 2, 64, 64)).astype("f4")),
    ...     "s2": (("pair", "s2_band", "y", "x"), rng.uniform(0, .4, (1, 12, 64, 64)).astype("f4")),
    ... }, coords={"s1_band": ["vv", "vh"], "s2_band": list(DEFAULT_BANDS["s2"])})
    >>> scores = retrieval_accuracy(DualEncoder(seed=0), pairs, tile=16, device="cpu")
    >>> scores["n_tiles"], scores["chance_top1"], 0 <= scores["s1_to_s2_top1"] <= 1
    (16, 0.0625, True)
    """
    import torch

    from eo_contrast.models import resolve_device

    lacking = [s for s in ("s1", "s2") if s not in getattr(model, "sensors", ())]
    if lacking:
        raise ValueError(
            f"retrieval needs a two-sensor (multimodal) model; this one has no encoder for "
            f"{lacking}"
        )
    data = _check_pairs(pairs, ("s1", "s2"), "multimodal")
    _check_units(data, ("s1", "s2"), model.units)
    ks = [_check_int("k", v, 1) for v in k]
    if max_tiles is not None:
        max_tiles = _check_int("max_tiles", max_tiles, 2)
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        z1, z2 = _embed_pairs(
            model, data, _check_int("tile", tile, 1), _check_int("batch_size", batch_size, 1),
            dev, max_nan_fraction, max_tiles,
        )  # fmt: skip
    finally:
        model.train(was_training)
    sim = z1 @ z2.T
    diag = sim.diagonal()
    rank_12 = (sim > diag[:, None]).sum(dim=1)  # S2 tiles scoring above the true one
    rank_21 = (sim > diag[None, :]).sum(dim=0)
    n = int(sim.shape[0])
    out: dict[str, float] = {"n_tiles": n}
    for kk in ks:
        out[f"chance_top{kk}"] = min(kk, n) / n
        out[f"s1_to_s2_top{kk}"] = float((rank_12 < kk).to(torch.float64).mean())
        out[f"s2_to_s1_top{kk}"] = float((rank_21 < kk).to(torch.float64).mean())
    return out
