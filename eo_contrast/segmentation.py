"""Semantic segmentation on the dual encoder's dense features: the model and its training loop.

A :class:`SegmentationModel` holds a copy of a :class:`~eo_contrast.models.DualEncoder` (frozen
or fine-tuned) and a UNet-like decoder (:class:`~eo_contrast.models.UNetHead`) with skip
connections from every level of the encoder's feature pyramid down to the normalised input
itself. It uses one sensor's feature pyramid, or both (S1 + S2: the two pyramids are concatenated
level by level, and the two inputs band by band). :func:`fit_segmentation` trains it on one
labelled cube or on a list of labelled chips, each on its own grid; ``cube.contrast.segment(seg)``
(see ``eo_contrast.inference``) applies it to a whole datacube, chunk by chunk.

Models saved with format version 1 (a feature-pyramid decoder,
:class:`~eo_contrast.models.SegmentationHead`) still load and predict as before.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from eo_contrast.cube import as_cube, band_units
from eo_contrast.models.checkpoint import (
    CheckpointError,
    check_tensors,
    json_safe,
    read_checkpoint,
    write_checkpoint,
)
from eo_contrast.models.device import resolve_device
from eo_contrast.models.dual import FORMAT as ENCODER_FORMAT
from eo_contrast.models.dual import DualEncoder
from eo_contrast.models.heads import SegmentationHead, UNetHead
from eo_contrast.runtime import tune_allocator
from eo_contrast.units import check_values

__all__ = ["FORMAT", "FORMAT_VERSION", "SegmentationModel", "fit_segmentation"]

#: ``format`` of segmentation checkpoints (``DualEncoder`` files have another one).
FORMAT = "eo-contrast.segmentation"
#: Version 2: UNet decoder (``"unet"``) with skips down to the input; version 1: FPN decoder.
FORMAT_VERSION = 2
_SUPPORTED_VERSIONS = (1, 2)
#: Decoder names, the checkpoint format version that introduced each.
DECODERS = {"fpn": 1, "unet": 2}
_REQUIRED_KEYS = ("format", "format_version", "encoder", "sensors", "classes", "tile", "decoder")
_SENSOR_ORDER = ("s1", "s2")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eo-contrast")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0.0.0"


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({"step": [], "epoch": [], "loss": []}).astype(
        {"step": "int64", "epoch": "int64", "loss": "float64"}
    )


class SegmentationModel(nn.Module):
    """A dual encoder's feature pyramid(s) plus a light decoder: per-pixel class logits.

    Parameters
    ----------
    encoder
        The :class:`~eo_contrast.models.DualEncoder` whose dense features are decoded. It is
        *copied*: training the segmentation model never changes the object passed in.
    classes
        Class names, in class-id order (``["dry", "water"]``).
    sensors
        Sensors whose features are used, among the encoder's: ``("s1",)``, ``("s2",)`` or
        ``("s1", "s2")`` (features concatenated per pyramid level). ``None``: all of the
        encoder's sensors.
    tile
        Tile size the model is trained and applied on (pixels).
    decoder_width
        Channels of the decoder's deepest levels (:class:`~eo_contrast.models.UNetHead`).
    seed
        Seed of the decoder's initial weights (``None``: torch's global random state).
    decoder
        ``"unet"`` (skip connections down to the normalised input; the default) or ``"fpn"``
        (the light feature-pyramid decoder of format version 1, kept to read older models).

    Attributes
    ----------
    sensors : tuple of str
        Sensors used, in canonical order.
    classes : list of str
        Class names by id.
    tile : int
        Training tile size.
    encoder : DualEncoder
        The (copied) encoder; frozen when :attr:`frozen`.
    head : UNetHead or SegmentationHead
        The decoder.
    frozen : bool
        Whether the encoder is frozen (kept in eval mode, no gradients).
    training_info : dict
        How the model was trained (JSON, written into checkpoints).
    history : pandas.DataFrame
        Training log: ``step``, ``epoch``, ``loss`` (empty before training).

    Examples
    --------
    >>> import torch
    >>> from eo_contrast.models import DualEncoder
    >>> enc = DualEncoder(width=8, seed=0)
    >>> seg = SegmentationModel(enc, ["dry", "water"], sensors=("s1", "s2"), tile=32, seed=0)
    >>> seg.sensors, seg.bands["s1"], seg.units
    (('s1', 's2'), ['vv', 'vh'], {'s1': 'dB', 's2': '1'})
    >>> x = {"s1": torch.zeros(2, 2, 32, 32), "s2": torch.zeros(2, 12, 32, 32)}
    >>> seg.eval()(x).shape
    torch.Size([2, 2, 32, 32])
    """

    history: pd.DataFrame

    def __init__(
        self,
        encoder: DualEncoder,
        classes: Sequence[str],
        *,
        sensors: Sequence[str] | None = None,
        tile: int = 64,
        decoder_width: int = 64,
        seed: int | None = None,
        decoder: str = "unet",
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder={decoder!r} is not one of {sorted(DECODERS)}")
        if not isinstance(encoder, DualEncoder):
            raise TypeError(
                f"encoder must be an eo_contrast DualEncoder, got {type(encoder).__name__}; "
                "load one with ec.DualEncoder.load(path) or ec.DualEncoder.default()"
            )
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise ValueError(f"classes must be a non-empty list of names, got {classes!r}")
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"classes has duplicate names: {names}")
        if sensors is None:
            chosen = tuple(encoder.sensors)
        else:
            if isinstance(sensors, str):
                sensors = (sensors,)
            unknown = [s for s in sensors if s not in encoder.sensors]
            if unknown or not sensors:
                raise ValueError(
                    f"sensors={list(sensors)!r}: this encoder has sensors "
                    f"{list(encoder.sensors)}; pick among them"
                )
            chosen = tuple(s for s in _SENSOR_ORDER if s in sensors)
        if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < 8:
            raise ValueError(f"tile must be an integer of at least 8 pixels, got {tile!r}")
        if (
            isinstance(decoder_width, bool)
            or not isinstance(decoder_width, int)
            or decoder_width < 1
        ):
            raise ValueError(f"decoder_width must be a positive integer, got {decoder_width!r}")
        self.sensors: tuple[str, ...] = chosen
        self.classes: list[str] = names
        self.tile = int(tile)
        self.decoder_width = decoder_width
        self.decoder = decoder
        self.encoder = copy.deepcopy(encoder)
        self.frozen = False
        self.training_info: dict[str, Any] = {}
        self.history = _empty_history()
        pyramids = [self.encoder.encoder(s).feature_channels for s in chosen]
        channels = [sum(level) for level in zip(*pyramids, strict=True)]
        ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
        with ctx:
            if seed is not None:
                torch.manual_seed(seed)
            self.head: UNetHead | SegmentationHead
            if decoder == "unet":
                in_chans = sum(len(encoder.bands[s]) for s in chosen)
                self.head = UNetHead(channels, len(names), in_chans=in_chans, width=decoder_width)
            else:
                self.head = SegmentationHead(channels, len(names), width=decoder_width)

    # ------------------------------------------------------------------ description
    @property
    def bands(self) -> dict[str, list[str]]:
        """Sensor -> band names each used encoder expects, in order."""
        all_bands = self.encoder.bands
        return {s: all_bands[s] for s in self.sensors}

    @property
    def units(self) -> dict[str, str]:
        """Sensor -> physical units of the expected input."""
        all_units = self.encoder.units
        return {s: all_units[s] for s in self.sensors}

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.classes)

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON description written into checkpoints.

        Keys: ``format``, ``format_version``, ``encoder`` (the encoder's own metadata),
        ``sensors``, ``classes``, ``tile``, ``decoder`` (``name``, ``width``,
        ``feature_channels``), ``frozen``, ``training`` (how it was trained), ``history``
        (the training log as lists) and ``version``.
        """
        hist = self.history
        return json_safe(
            {
                "format": FORMAT,
                "format_version": DECODERS[self.decoder],
                "encoder": self.encoder.metadata,
                "sensors": list(self.sensors),
                "classes": list(self.classes),
                "tile": self.tile,
                "decoder": {
                    "name": self.decoder,
                    "width": self.decoder_width,
                    "feature_channels": list(self.head.feature_channels),
                },
                "frozen": self.frozen,
                "training": dict(self.training_info),
                "history": {c: hist[c].tolist() for c in ("step", "epoch", "loss")},
                "version": _package_version(),
            }
        )

    def extra_repr(self) -> str:
        return (
            f"sensors={self.sensors}, classes={self.classes}, tile={self.tile}, "
            f"decoder={self.decoder!r}"
        )

    # ------------------------------------------------------------------ computation
    def normalize(
        self,
        sensor: str,
        x: np.ndarray | torch.Tensor,
        *,
        units: str | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Physical units -> encoder input (see :meth:`DualEncoder.normalize`); NaN becomes 0."""
        if sensor not in self.sensors:
            raise KeyError(
                f"this segmentation model uses sensors {list(self.sensors)}, not {sensor!r}"
            )
        return self.encoder.normalize(sensor, x, units=units, device=device)

    def train(self, mode: bool = True) -> SegmentationModel:
        """Set training mode; a frozen encoder always stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Freeze (no gradients, eval mode) or unfreeze the encoder."""
        self.frozen = bool(frozen)
        for p in self.encoder.parameters():
            p.requires_grad_(not self.frozen)
        self.train(self.training)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` from normalised tiles ``{sensor: (B, C_s, H, W)}``."""
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"inputs must be a mapping {{sensor: tensor}} for sensors {list(self.sensors)}, "
                f"got {type(inputs).__name__}"
            )
        missing = [s for s in self.sensors if s not in inputs]
        if missing:
            raise KeyError(
                f"inputs lack sensor(s) {missing}; this model needs {list(self.sensors)} "
                f"(got {sorted(inputs)})"
            )
        shapes = {s: tuple(inputs[s].shape[-2:]) for s in self.sensors}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"the sensors' tiles must have one size, got {shapes}")
        size = next(iter(shapes.values()))
        pyramids = [self.encoder.features(s, inputs[s]) for s in self.sensors]
        if len(pyramids) == 1:
            feats = pyramids[0]
        else:
            feats = [torch.cat(level, dim=1) for level in zip(*pyramids, strict=True)]
        if isinstance(self.head, UNetHead):
            x = [inputs[s] for s in self.sensors]
            return self.head(feats, x[0] if len(x) == 1 else torch.cat(x, dim=1))
        return self.head(feats, size=size)

    def predict(
        self,
        inputs: Mapping[str, np.ndarray | torch.Tensor],
        *,
        probabilities: bool = False,
        batch_size: int = 8,
        device: str | torch.device | None = None,
    ) -> np.ndarray:
        """Classify in-memory images given in physical units, tile by tile, as ``segment`` does.

        The images are cut into the same overlapping tiles of :attr:`tile` pixels the model was
        trained on, and the tiles' probabilities are blended: the result equals
        :func:`eo_contrast.segment` of the same pixels (which this calls on a NumPy-backed cube).

        Parameters
        ----------
        inputs
            ``{sensor: array (..., C_s, H, W)}`` in physical units (S1 dB, S2 reflectance),
            bands in the order of :attr:`bands`; NaN is nodata. All sensors share the leading
            dims and ``H, W`` (at least :attr:`tile` pixels each).
        probabilities
            Return class probabilities instead of class ids.
        batch_size
            Tiles per forward pass.
        device
            Where to compute; ``None``: where the model is.

        Returns
        -------
        numpy.ndarray
            int16 class ids ``(..., H, W)`` with -1 where any band of any sensor is NaN; or
            float32 probabilities ``(..., K, H, W)``, NaN there.

        Examples
        --------
        >>> import numpy as np
        >>> from eo_contrast.models import DualEncoder
        >>> seg = SegmentationModel(DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0),
        ...                         ["dry", "water"], tile=32, seed=0).eval()
        >>> x = np.full((2, 40, 48), -12.0, dtype="f4")
        >>> x[:, 0, 0] = np.nan
        >>> pred = seg.predict({"s1": x})
        >>> pred.shape, pred.dtype, int(pred[0, 0])
        ((40, 48), dtype('int16'), -1)
        """
        from eo_contrast.inference import segment

        arrays: dict[str, np.ndarray] = {}
        for s in self.sensors:
            if s not in inputs:
                raise KeyError(f"inputs lack sensor {s!r}; this model needs {list(self.sensors)}")
            v = inputs[s]
            a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            n = len(self.bands[s])
            if a.ndim < 3 or a.shape[-3] != n:
                raise ValueError(
                    f"{s} input must have shape (..., {n}, H, W) for bands {self.bands[s]}, "
                    f"got {a.shape}"
                )
            arrays[s] = a.astype(np.float32, copy=False)
        lead_shapes = {s: a.shape[:-3] + a.shape[-2:] for s, a in arrays.items()}
        if len(set(lead_shapes.values())) != 1:
            raise ValueError(f"inputs must share leading dims and H, W; got {lead_shapes}")
        first = arrays[self.sensors[0]]
        lead, (h, w) = first.shape[:-3], first.shape[-2:]
        grid = {"y": np.arange(h, dtype=np.float64), "x": np.arange(w, dtype=np.float64)}

        def var(s: str, band_dim: str, units_name: str) -> xr.DataArray:
            bands = self.bands[s]
            return xr.DataArray(
                arrays[s].reshape(-1, len(bands), h, w),
                dims=("time", band_dim, "y", "x"),
                coords={
                    **grid,
                    band_dim: bands,
                    units_name: (band_dim, [self.units[s]] * len(bands)),
                },
            )

        cube: xr.DataArray | xr.Dataset
        if len(self.sensors) == 1:
            cube = var(self.sensors[0], "band", "units")
        else:
            cube = xr.Dataset({s: var(s, f"{s}_band", f"{s}_units") for s in self.sensors})
        target = resolve_device(device) if device is not None else next(self.parameters()).device
        out = segment(
            cube, self, probabilities=probabilities, batch_size=batch_size, device=str(target)
        )
        values = np.asarray(out.transpose("time", ...).values)
        if probabilities:
            return values.reshape(*lead, self.num_classes, h, w)
        return values.reshape(*lead, h, w)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights and metadata to one safetensors file, atomically (never pickled).

        Returns
        -------
        pathlib.Path
            The written path.

        Examples
        --------
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from eo_contrast.models import DualEncoder
        >>> seg = SegmentationModel(DualEncoder({"s1": ["vv", "vh"]}, width=8, seed=0),
        ...                         ["dry", "water"], tile=32, seed=0).eval()
        >>> path = seg.save(Path(tempfile.mkdtemp()) / "seg.safetensors")
        >>> again = SegmentationModel.load(path)
        >>> x = {"s1": torch.randn(1, 2, 32, 32)}
        >>> again.classes, bool(torch.equal(seg(x), again(x)))
        (['dry', 'water'], True)
        """
        return write_checkpoint(path, self.state_dict(), self.metadata)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
    ) -> SegmentationModel:
        """Load a model written by :meth:`save`, in eval mode.

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        CheckpointError
            (a ``ValueError``) when the file is not a segmentation checkpoint (e.g. a
            ``DualEncoder`` file), has an unknown format version, incomplete or inconsistent
            metadata, or tensors that do not match the architecture it describes.
        """
        p = Path(path)
        target = resolve_device(device)
        tensors, meta = read_checkpoint(p)
        fmt = meta.get("format")
        if fmt == ENCODER_FORMAT:
            raise CheckpointError(
                f"{p} is a DualEncoder checkpoint, not a segmentation model; load it with "
                "ec.DualEncoder.load and train a segmentation model with ec.fit_segmentation"
            )
        if fmt != FORMAT:
            raise CheckpointError(f"{p} has format {fmt!r}; a segmentation model has {FORMAT!r}")
        version = meta.get("format_version")
        if version not in _SUPPORTED_VERSIONS:
            raise CheckpointError(
                f"{p} has segmentation format_version {version!r}; this "
                f"eo-contrast {_package_version()} reads {list(_SUPPORTED_VERSIONS)}; upgrade it"
            )
        missing = [k for k in _REQUIRED_KEYS if k not in meta]
        if missing:
            raise CheckpointError(f"{p}: its metadata lacks required key(s) {missing}")
        decoder = meta["decoder"]
        name = decoder.get("name", "fpn") if isinstance(decoder, Mapping) else None
        if name not in DECODERS or DECODERS[name] > int(version):
            raise CheckpointError(
                f"{p}: segmentation format_version {version} with decoder {name!r}; "
                f"format_version 1 has decoder 'fpn', version 2 adds 'unet'"
            )
        try:
            with torch.device("meta"):
                encoder = DualEncoder.from_metadata(meta["encoder"])
                model = cls(
                    encoder,
                    meta["classes"],
                    sensors=meta["sensors"],
                    tile=int(meta["tile"]),
                    decoder_width=int(decoder["width"]),
                    decoder=name,
                )
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(
                f"{p}: its metadata does not describe a segmentation model: {exc}"
            ) from exc
        if list(decoder.get("feature_channels", model.head.feature_channels)) != list(
            model.head.feature_channels
        ):
            raise CheckpointError(
                f"{p}: decoder feature_channels {decoder.get('feature_channels')} do not match "
                f"the encoder's pyramid {list(model.head.feature_channels)}"
            )
        check_tensors(model.state_dict(), tensors, p)
        model.to_empty(device=target)
        model.load_state_dict(tensors, strict=True)
        model.encoder.version = str(meta["encoder"].get("version", model.encoder.version))
        model.training_info = dict(meta.get("training") or {})
        hist = meta.get("history") or {}
        if hist and all(c in hist for c in ("step", "epoch", "loss")):
            model.history = pd.DataFrame({c: hist[c] for c in ("step", "epoch", "loss")}).astype(
                {"step": "int64", "epoch": "int64", "loss": "float64"}
            )
        model.freeze_encoder(bool(meta.get("frozen", False)))
        return model.eval()


# ------------------------------------------------------------------------------------------
# Input handling
# ------------------------------------------------------------------------------------------
def _describe_grid(obj: xr.DataArray) -> str:
    crs = None
    try:
        crs = obj.rio.crs
    except Exception:  # pragma: no cover - rioxarray cannot read the CRS
        crs = None
    parts = [f"{obj.sizes.get('y', '?')} x {obj.sizes.get('x', '?')} pixels"]
    for d in ("x", "y"):
        if d in obj.coords and obj.sizes.get(d, 0):
            v = np.asarray(obj[d].values, dtype=float)
            parts.append(f"{d} {v[0]:.6g}..{v[-1]:.6g}")
    parts.append(f"CRS {crs.to_string() if crs is not None else None}")
    return "(" + ", ".join(parts) + ")"


def _sensor_vars(data: Any) -> dict[str, xr.DataArray]:
    """The input as named cubes: ``{"s1": cube}``/``{"s2": cube}``/both, or ``{"": cube}``."""
    if isinstance(data, xr.Dataset) and any(v in data.data_vars for v in ("s1", "s2")):
        out = {}
        for name in ("s1", "s2"):
            if name not in data.data_vars:
                continue
            var = data[name]
            if "pair" in var.dims:
                var = var.rename(pair="time")
            band_dims = [d for d in var.dims if d not in ("time", "y", "x")]
            if len(band_dims) != 1:
                raise ValueError(
                    f"cube variable {name!r} has dims {tuple(var.dims)}; expected "
                    "([time|pair], band, y, x)"
                )
            bdim = band_dims[0]
            units_name = f"{name}_units"
            if bdim != "band":
                var = var.rename({bdim: "band"})
            if units_name in var.coords and "units" not in var.coords:
                var = var.rename({units_name: "units"})
            out[name] = as_cube(var, name=f"cube[{name!r}]")
        return out
    if isinstance(data, xr.DataArray | xr.Dataset):
        return {"": as_cube(data)}
    raise TypeError(
        "cube must be a cube DataArray (time, band, y, x), a Dataset with 's1' and/or 's2' "
        f"variables (e.g. from ec.pair), or an odc-stac style Dataset, not {type(data).__name__}"
    )


def _select_sensors(
    named: dict[str, xr.DataArray], encoder: DualEncoder, sensors: Sequence[str] | None
) -> dict[str, xr.DataArray]:
    """Match the cube(s) to the encoder's sensors by band names; select and order bands."""
    expect = "; ".join(f"its {s} encoder expects {b}" for s, b in encoder.bands.items())
    found: dict[str, xr.DataArray] = {}
    for name, cube in named.items():
        have = [str(b) for b in cube["band"].values]
        candidates = [name] if name else list(encoder.sensors)
        matched = [
            s for s in candidates if s in encoder.bands and set(encoder.bands[s]) <= set(have)
        ]
        if not matched:
            what = f"cube variable {name!r}" if name else "the cube"
            raise ValueError(
                f"the bands of {what} {have} match neither encoder of this model: {expect}. "
                "Give a cube with those band names (canonical names, e.g. 'vv', 'B04'), or an "
                "encoder trained on these bands"
            )
        s = matched[0]
        found[s] = cube.sel(band=encoder.bands[s])
    if sensors is not None:
        wanted = (sensors,) if isinstance(sensors, str) else tuple(sensors)
        bad = [s for s in wanted if s not in found]
        if bad or not wanted:
            raise ValueError(
                f"sensors={list(wanted)!r} but the cube provides {sorted(found)} for this "
                f"encoder ({expect}); pass sensors among {sorted(found)}"
            )
        found = {s: found[s] for s in _SENSOR_ORDER if s in wanted}
    for s, cube in found.items():
        units = band_units(cube)
        wrong = {b: u for b, u in units.items() if u != encoder.units[s]}
        if wrong:
            hint = (
                "convert linear backscatter with ec.linear_to_db"
                if s == "s1"
                else "scale reflectance to 0..1"
            )
            raise ValueError(
                f"{s} bands are in units {wrong} but this encoder expects "
                f"{encoder.units[s]!r}; {hint}"
            )
    return found


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> bool:
    if (a.sizes.get("y"), a.sizes.get("x")) != (b.sizes.get("y"), b.sizes.get("x")):
        return False
    for d in ("y", "x"):
        if d not in a.coords or d not in b.coords:
            continue
        va = np.asarray(a[d].values, dtype=float)
        vb = np.asarray(b[d].values, dtype=float)
        step = abs(va[1] - va[0]) if va.size > 1 else 1.0
        if not np.allclose(va, vb, rtol=0, atol=1e-3 * step):
            return False
    try:
        ca, cb = a.rio.crs, b.rio.crs
    except Exception:  # pragma: no cover
        return True
    return ca is None or cb is None or ca == cb


def _label_array(labels: Any, ref: xr.DataArray, n_time: int) -> np.ndarray:
    if not isinstance(labels, xr.DataArray):
        raise TypeError(
            f"labels must be an xarray DataArray (y, x) of class ids on the cube's grid, not "
            f"{type(labels).__name__}"
        )
    if set(labels.dims) not in ({"y", "x"}, {"time", "y", "x"}):
        raise ValueError(
            f"labels have dims {tuple(labels.dims)}; expected ('y', 'x') or ('time', 'y', 'x') "
            "(squeeze a band dim away with labels.squeeze('band', drop=True))"
        )
    if not _same_grid(labels, ref):
        raise ValueError(
            f"labels are on another grid than the cube: labels {_describe_grid(labels)}, cube "
            f"{_describe_grid(ref)}. Put the labels on the cube's grid, e.g. "
            "labels.rio.reproject_match(cube, resampling=rasterio.enums.Resampling.nearest)"
        )
    lab = labels.transpose(*[d for d in ("time", "y", "x") if d in labels.dims])
    values = np.asarray(lab.values)
    if values.ndim == 2:
        values = np.broadcast_to(values, (n_time, *values.shape))
    elif values.shape[0] != n_time:
        raise ValueError(
            f"labels have {values.shape[0]} times but the cube has {n_time}; give labels (y, x) "
            "to use the same labels at every time"
        )
    if np.issubdtype(values.dtype, np.floating):
        values = np.where(np.isnan(values), -1, values)
        if not np.all(values == np.round(values)):
            raise ValueError("labels must be integer class ids (-1 for nodata), got fractions")
    elif not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {values.dtype}")
    return values.astype(np.int64)


def _class_weights(spec: Any, counts: np.ndarray) -> np.ndarray | None:
    k = counts.size
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(
                f"class_weights={spec!r}: use 'balanced', None or a list of {k} numbers"
            )
        present = counts > 0
        w = np.zeros(k, dtype=np.float64)
        w[present] = counts.sum() / (present.sum() * counts[present])
        return w
    w = np.asarray(spec, dtype=np.float64)
    if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(
            f"class_weights must be 'balanced', None or {k} non-negative numbers (one per "
            f"class), got {spec!r}"
        )
    return w


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
#: An epoch of :func:`fit_segmentation` is at least this many updates, however small the
#: labelled area: tiles are drawn with replacement, so a short fit on one small area still trains.
MIN_STEPS_PER_EPOCH = 50
#: Labelled chips held in memory at once by :func:`fit_segmentation` (``chips_in_memory``).
CHIPS_IN_MEMORY = 8


@dataclass
class _Chip:
    """One labelled chip of a fit: where it comes from and what it holds (no pixel arrays)."""

    index: int
    name: str
    cube: Any
    labels: xr.DataArray
    n_valid: int = 0
    n_positions: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grid: dict[str, Any] = field(default_factory=dict)
    many: bool = True

    @property
    def where(self) -> str:
        """How errors name the chip: ``chip 3 (USA_905409)``, or ``the cube`` for one chip."""
        if not self.many:
            return "the cube"
        return f"chip {self.index} ({self.name})" if self.name else f"chip {self.index}"

    def tag(self, message: str) -> str:
        """``message`` prefixed with the chip's name when the fit has several chips."""
        return f"{self.where}: {message}" if self.many else message


@dataclass
class _Loaded:
    """A chip's pixels in memory: per-sensor arrays, the training target and tile positions."""

    arrays: dict[str, np.ndarray]
    target: np.ndarray
    positions: np.ndarray


def _chip_name(cube: Any, labels: Any) -> str:
    for obj in (cube, labels):
        name = getattr(obj, "attrs", {}).get("chip")
        if name:
            return str(name)
    return ""


def _as_chips(cube: Any, labels: Any) -> list[_Chip]:
    """The input as a list of chips; one chip for the single forms."""
    many = isinstance(cube, list | tuple)
    if many != isinstance(labels, list | tuple):
        what = "cube is a list" if many else "labels is a list"
        raise ValueError(
            f"{what} but the other is not: give cube and labels both as lists of equal length "
            "(one labelled chip per entry) or both as single objects"
        )
    if not many:
        return [_Chip(0, _chip_name(cube, labels), cube, labels, many=False)]
    if len(cube) != len(labels):
        raise ValueError(
            f"cube and labels are lists of unequal length ({len(cube)} cubes, {len(labels)} "
            "labels); give one labels array per chip, in the same order"
        )
    if not cube:
        raise ValueError("cube and labels are empty lists; give at least one labelled chip")
    return [
        _Chip(i, _chip_name(c, lab), c, lab)
        for i, (c, lab) in enumerate(zip(cube, labels, strict=True))
    ]


def _check_fit_params(
    *,
    epochs: Any,
    batch_size: Any,
    seed: Any,
    tile: Any,
    max_nan_fraction: Any,
    lr: Any,
    encoder_lr_scale: Any,
    tiles_per_epoch: Any,
    chips_in_memory: Any,
) -> None:
    for pname, value, low in (
        ("epochs", epochs, 1),
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
        ("chips_in_memory", chips_in_memory, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{pname} must be an integer >= {low}, got {value!r}")
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < 8:
        raise ValueError(f"tile must be an integer of at least 8 pixels, got {tile!r}")
    if not isinstance(max_nan_fraction, int | float) or not 0 <= max_nan_fraction < 1:
        raise ValueError(f"max_nan_fraction must be in [0, 1), got {max_nan_fraction!r}")
    for pname, fvalue in (("lr", lr), ("encoder_lr_scale", encoder_lr_scale)):
        if not isinstance(fvalue, int | float) or not 0 < fvalue < math.inf:
            raise ValueError(f"{pname} must be a positive number, got {fvalue!r}")
    if tiles_per_epoch is not None and (
        isinstance(tiles_per_epoch, bool)
        or not isinstance(tiles_per_epoch, int)
        or tiles_per_epoch < 1
    ):
        raise ValueError(f"tiles_per_epoch must be a positive integer, got {tiles_per_epoch!r}")


def _chip_sensors(
    chip: _Chip, encoder: DualEncoder, sensors: Sequence[str] | None, tile: int
) -> dict[str, xr.DataArray]:
    """The chip's cubes per sensor (bands selected, units checked), on one grid, tile checked."""
    try:
        found = _select_sensors(_sensor_vars(chip.cube), encoder, sensors)
    except (ValueError, TypeError) as exc:
        raise type(exc)(chip.tag(str(exc))) from exc
    names = tuple(found)
    ref = found[names[0]]
    for s in names[1:]:
        if not _same_grid(found[s], ref) or found[s].sizes.get("time", 1) != ref.sizes.get(
            "time", 1
        ):
            raise ValueError(
                chip.tag(
                    f"the cube's {s} and {names[0]} variables are not on one grid / time axis: "
                    f"{_describe_grid(found[s])} vs {_describe_grid(ref)}; pair them with ec.pair"
                )
            )
    height, width = int(ref.sizes["y"]), int(ref.sizes["x"])
    if tile > min(height, width):
        raise ValueError(
            chip.tag(
                f"tile={tile} is larger than the cube ({height} x {width} pixels); use a tile of "
                f"at most {min(height, width)}" + (", or leave this chip out" if chip.many else "")
            )
        )
    return found


def _chip_labels(chip: _Chip, ref: xr.DataArray) -> np.ndarray:
    try:
        return _label_array(chip.labels, ref, int(ref.sizes.get("time", 1)))
    except (ValueError, TypeError) as exc:
        raise type(exc)(chip.tag(str(exc))) from exc


def _load_chip(
    chip: _Chip,
    encoder: DualEncoder,
    sensors: Sequence[str] | None,
    tile: int,
    max_nan_fraction: float,
) -> _Loaded:
    """Read one chip into memory: arrays ``(time, band, y, x)``, target and tile positions."""
    found = _chip_sensors(chip, encoder, sensors, tile)
    ref = next(iter(found.values()))
    target = _chip_labels(chip, ref).copy()
    arrays: dict[str, np.ndarray] = {}
    for s, c in found.items():
        if "time" not in c.dims:
            c = c.expand_dims("time")
        arr = np.asarray(c.transpose("time", "band", "y", "x").values, dtype=np.float32)
        check_values(arr, s, encoder.units[s], name=f"{s} cube", where=chip.where)
        arrays[s] = arr
        target[~np.isfinite(arr).all(axis=1)] = -1
    valid = target >= 0
    n_time, height, width = target.shape
    integral = np.zeros((n_time, height + 1, width + 1), dtype=np.int64)
    integral[:, 1:, 1:] = valid.cumsum(axis=1).cumsum(axis=2)
    win = (
        integral[:, tile:, tile:]
        - integral[:, :-tile, tile:]
        - integral[:, tile:, :-tile]
        + integral[:, :-tile, :-tile]
    )
    ok = win >= max(1.0, (1 - max_nan_fraction) * tile * tile)
    return _Loaded(arrays, target, np.argwhere(ok))


class _ChipCache:
    """At most ``capacity`` chips in memory, least recently used dropped first."""

    def __init__(self, load: Any, capacity: int) -> None:
        self._load = load
        self.capacity = capacity
        self._items: dict[int, _Loaded] = {}
        self.loads = 0
        self.peak = 0

    def get(self, chip: _Chip) -> _Loaded:
        hit = self._items.pop(chip.index, None)
        if hit is None:
            while len(self._items) >= self.capacity:
                self._items.pop(next(iter(self._items)))
            hit = self._load(chip)
            self.loads += 1
        self._items[chip.index] = hit
        self.peak = max(self.peak, len(self._items))
        return hit


def _survey(
    chips: list[_Chip], cache: _ChipCache, classes: Sequence[str] | None, top: int
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """One pass over the chips: class names, class pixel counts and the sensors used.

    ``top`` is the largest label value over all chips. Chips are read one at a time (through
    ``cache``, so a fit on a few chips reads each once).
    """
    names: tuple[str, ...] | None = None
    if classes is None:
        if top < 0:
            raise ValueError(
                "labels have no labelled pixel (all -1 / nodata); label some pixels with class "
                "ids 0, 1, ..."
            )
        class_names = [f"class_{i}" for i in range(top + 1)]
    else:
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise ValueError(f"classes must be a non-empty list of names, got {classes!r}")
        class_names = [str(c) for c in classes]
    k = len(class_names)
    total = np.zeros(k, dtype=np.float64)
    for chip in chips:
        loaded = cache.get(chip)
        bad = np.unique(loaded.target[(loaded.target < -1) | (loaded.target >= k)])
        if bad.size:
            raise ValueError(
                chip.tag(
                    f"labels contain values {bad.tolist()[:10]} outside the classes "
                    f"{class_names} (ids 0..{k - 1}, -1 for nodata); pass classes naming every "
                    "label value"
                )
            )
        chip_names = tuple(loaded.arrays)
        if names is None:
            names = chip_names
        elif chip_names != names:
            raise ValueError(
                f"{chip.where} provides sensors {list(chip_names)} but chip 0 provides "
                f"{list(names)}; give every chip the same sensors, or pass sensors=..."
            )
        valid = loaded.target >= 0
        chip.n_valid = int(valid.sum())
        chip.n_positions = len(loaded.positions)
        chip.counts = np.bincount(loaded.target[valid], minlength=k)[:k].astype(np.float64)
        chip.grid = {
            "height": int(loaded.target.shape[1]),
            "width": int(loaded.target.shape[2]),
            "times": int(loaded.target.shape[0]),
        }
        total += chip.counts
    assert names is not None
    return class_names, total, names


def _plan_epoch(
    chips: list[_Chip], per_epoch: int, chips_in_memory: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """The epoch's tiles as ``(chip index, position index)``, in the order they are trained.

    Tiles are drawn uniformly, with replacement, over the usable tile positions of all chips
    together (a chip holds a share of the epoch proportional to its usable positions). They
    are then ordered chip group by chip group: the chips are shuffled and taken
    ``chips_in_memory`` at a time, and each group's tiles are shuffled among themselves.
    """
    weights = np.array([c.n_positions for c in chips], dtype=np.float64)
    use = np.flatnonzero(weights > 0)
    p = weights[use] / weights[use].sum()
    chip_ids = use[rng.choice(len(use), size=per_epoch, replace=True, p=p)]
    pos_ids = (rng.random(per_epoch) * weights[chip_ids]).astype(np.int64)
    order = rng.permutation(len(chips))
    group_of = np.empty(len(chips), dtype=np.int64)
    group_of[order] = np.arange(len(chips)) // chips_in_memory
    keys = group_of[chip_ids]
    plan: list[tuple[int, int]] = []
    for g in np.unique(keys):
        members = np.flatnonzero(keys == g)
        members = members[rng.permutation(len(members))]
        plan.extend((int(chip_ids[i]), int(pos_ids[i])) for i in members)
    return plan


def _batch_tiles(
    batch: Sequence[tuple[int, int]],
    chips: list[_Chip],
    cache: _ChipCache,
    tile: int,
    augment: bool,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Cut the tiles of one batch (chip by chip), with random flips and rotations."""
    names = None
    tiles: dict[str, list[np.ndarray]] = {}
    labs: list[np.ndarray] = []
    rot = rng.integers(0, 4, size=len(batch)) if augment else np.zeros(len(batch), int)
    flip = rng.random(len(batch)) < 0.5 if augment else np.zeros(len(batch), bool)
    for i, (c, r) in enumerate(batch):
        loaded = cache.get(chips[c])
        t, y0, x0 = (int(v) for v in loaded.positions[r])
        win = (slice(y0, y0 + tile), slice(x0, x0 + tile))
        labs.append(_augment(loaded.target[t][win], rot[i], flip[i]))
        if names is None:
            names = list(loaded.arrays)
            tiles = {s: [] for s in names}
        for s, a in loaded.arrays.items():
            tiles[s].append(_augment(a[t][(slice(None), *win)], rot[i], flip[i]))
    out = {s: np.ascontiguousarray(np.stack(v)) for s, v in tiles.items()}
    return out, np.ascontiguousarray(np.stack(labs))


def _optimizer(
    model: SegmentationModel, lr: float, weight_decay: float, encoder_lr_scale: float
) -> torch.optim.Optimizer:
    """AdamW: no weight decay on biases and norms; the encoder at ``lr * encoder_lr_scale``."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    enc_decay: list[nn.Parameter] = []
    enc_no_decay: list[nn.Parameter] = []
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_enc = pname.startswith("encoder.")
        if p.ndim >= 2:
            (enc_decay if is_enc else decay).append(p)
        else:
            (enc_no_decay if is_enc else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "scale": 1.0},
        {"params": enc_decay, "weight_decay": weight_decay, "scale": encoder_lr_scale},
        {"params": enc_no_decay, "weight_decay": 0.0, "scale": encoder_lr_scale},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def fit_segmentation(
    cube: xr.DataArray | xr.Dataset | Sequence[xr.DataArray | xr.Dataset],
    labels: xr.DataArray | Sequence[xr.DataArray],
    *,
    encoder: DualEncoder | None = None,
    classes: Sequence[str] | None = None,
    freeze_encoder: bool = True,
    epochs: int = 5,
    tile: int = 64,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    lr: float = 1e-3,
    encoder_lr_scale: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
    sensors: Sequence[str] | None = None,
    tiles_per_epoch: int | None = None,
    decoder_width: int = 64,
    decoder: str = "unet",
    augment: bool = True,
    progress: bool = True,
    max_nan_fraction: float = 0.5,
    class_weights: str | Sequence[float] | None = None,
    chips_in_memory: int = CHIPS_IN_MEMORY,
) -> SegmentationModel:
    """Train a segmentation model on an encoder's features, from one or many labelled chips.

    Accepted cubes (sensors are recognised by band names, as for embedding):

    * a single-sensor cube DataArray ``([time,] band, y, x)`` (or an odc-stac style Dataset,
      one variable per band): the encoder whose bands it holds is used (S1 or S2);
    * a Dataset with variables ``"s1"`` and/or ``"s2"`` on one grid, each
      ``([time|pair,] band-dim, y, x)``, e.g. from :func:`eo_contrast.pair` (``s1_band``,
      ``s2_band`` and ``s1_units``/``s2_units`` are understood): both sensors' features are
      used (fused per pyramid level), unless ``sensors`` says otherwise;
    * a **list** of such cubes, one labelled chip per entry, with ``labels`` a list of equal
      length; each chip is on its own grid and CRS (as Sen1Floods11 chips are, see
      :func:`eo_contrast.read_sen1floods11`). Every chip must provide the same sensors.

    Bands are selected and ordered as the encoder expects (extra bands are ignored); units are
    checked on the attributes and on the values (linear S1 power or S2 digital numbers are
    refused).

    **How tiles are drawn.** A tile position is usable where at most ``max_nan_fraction`` of
    its pixels are unlabelled (-1) or have NaN input. Each epoch draws its tiles uniformly,
    with replacement, over the usable positions of all chips together, so every chip holds a
    share of the epoch proportional to its usable area. Chips are then visited in groups of
    ``chips_in_memory`` (the chips shuffled each epoch, each group's tiles shuffled among
    themselves), so at most ``chips_in_memory`` chips are in memory at a time, however many
    chips there are. With random flips and 90-degree rotations when ``augment``.

    **What an epoch is.** ``tiles_per_epoch`` tiles; by default enough to cover the labelled
    pixels twice, and never fewer than :data:`MIN_STEPS_PER_EPOCH` updates
    (``MIN_STEPS_PER_EPOCH * batch_size`` tiles): a small labelled area is sampled with
    replacement, so even a short fit trains. Updates per epoch: ``ceil(tiles_per_epoch /
    batch_size)``.

    The loss is cross-entropy ignoring unlabelled and nodata pixels (``ignore_index=-1``),
    optionally class-weighted over all chips (``class_weights``). AdamW; the learning rate decays on a cosine from ``lr``.
    With ``freeze_encoder`` only the decoder trains (the encoder stays in eval mode without
    gradients); otherwise the encoder is fine-tuned at ``lr * encoder_lr_scale``. On the CPU,
    the same seed gives the same model.

    Parameters
    ----------
    cube
        The input (or a list of inputs, one per chip), see above; physical units (S1 dB, S2
        reflectance 0..1), NaN = nodata.
    labels
        Class ids ``(y, x)`` (or ``(time, y, x)``) on the cube's grid; -1 (or NaN) = nodata. A
        list of such arrays when ``cube`` is a list, each on its chip's grid.
    encoder
        The :class:`~eo_contrast.models.DualEncoder` to build on; ``None``:
        :meth:`DualEncoder.default`. It is copied, never modified.
    classes
        Class names by id; ``None``: ``class_0``.. ``class_{K-1}`` with ``K`` = the largest
        label + 1 over all chips.
    freeze_encoder
        Train the decoder only (``True``) or fine-tune the encoder too.
    epochs, tile, batch_size, lr
        Training length in epochs (see above), tile size (pixels), tiles per update, decoder
        learning rate.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    encoder_lr_scale
        Encoder learning rate relative to ``lr`` when fine-tuning.
    weight_decay
        AdamW weight decay (not applied to biases and norms).
    seed
        Seed of the decoder's initialisation, the tile draws and the augmentations.
    sensors
        Restrict to these sensors (e.g. ``["s1"]`` with a two-sensor Dataset).
    tiles_per_epoch
        Tiles per epoch; ``None``: see "What an epoch is".
    decoder_width
        Channels of the decoder's deepest levels (:class:`~eo_contrast.models.UNetHead`).
    decoder
        ``"unet"`` (skips down to the normalised input, full resolution) or ``"fpn"`` (the
        light feature-pyramid decoder of format version 1, for comparisons).
    augment
        Random flips and 90-degree rotations of the training tiles.
    progress
        Show a progress bar (tqdm).
    max_nan_fraction
        Largest fraction of unlabelled or nodata pixels in a training tile.
    class_weights
        ``None`` (unweighted, the default: the model's probabilities stay calibrated, which
        is what IoU rewards), ``"balanced"`` (``n_labelled / (n_present_classes * n_class)``:
        the weighted mean over labelled pixels is 1; absent classes get 0; for rare classes
        that must not be missed) or one weight per class.
    chips_in_memory
        Chips held in memory at once. It bounds memory, and sets the grouping of the draws
        (so the exact model, not how it is trained).

    Returns
    -------
    SegmentationModel
        In eval mode, on ``device``; ``.history`` holds ``step``, ``epoch`` and ``loss``;
        ``.training_info`` how it was trained, chips included.

    Raises
    ------
    ValueError
        On lists of unequal length, labels on another grid than their cube (both grids are
        named), a chip smaller than a tile, label values outside the classes, no labelled
        pixel, cube bands matching neither encoder (both are listed), wrong units, and bad
        parameters. Errors about one chip name it (``chip 3 (USA_905409)``: its index, and
        its ``attrs["chip"]`` when set).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from eo_contrast.models import DualEncoder
    >>> rng = np.random.default_rng(0)
    >>> water = np.zeros((48, 48), dtype="i2"); water[:, :20] = 1
    >>> vv = np.where(water == 1, -22.0, -8.0) + rng.normal(0, 1, (48, 48))
    >>> cube = xr.DataArray(np.stack([vv, vv - 7]).astype("f4"), dims=("band", "y", "x"),
    ...                     coords={"band": ["vv", "vh"], "y": np.arange(48), "x": np.arange(48)})
    >>> labels = xr.DataArray(water, dims=("y", "x"), coords={"y": cube.y, "x": cube.x})
    >>> seg = fit_segmentation(cube, labels, encoder=DualEncoder(width=8, seed=0),
    ...                        classes=["dry", "water"], epochs=1, tile=32, batch_size=4,
    ...                        device="cpu", progress=False)
    >>> seg.sensors, seg.classes, len(seg.history) == MIN_STEPS_PER_EPOCH
    (('s1',), ['dry', 'water'], True)

    Two chips on their own grids (here, the same scene shifted by 1 km):

    >>> shifted = cube.assign_coords(x=cube.x + 1000)
    >>> seg = fit_segmentation([cube, shifted], [labels, labels.assign_coords(x=shifted.x)],
    ...                        encoder=DualEncoder(width=8, seed=0), classes=["dry", "water"],
    ...                        epochs=1, tile=32, batch_size=4, device="cpu", progress=False)
    >>> seg.training_info["chips"]
    2
    """
    _check_fit_params(
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        tile=tile,
        max_nan_fraction=max_nan_fraction,
        lr=lr,
        encoder_lr_scale=encoder_lr_scale,
        tiles_per_epoch=tiles_per_epoch,
        chips_in_memory=chips_in_memory,
    )
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r} is not one of {sorted(DECODERS)}")
    if encoder is None:
        encoder = DualEncoder.default()
    if not isinstance(encoder, DualEncoder):
        raise TypeError(f"encoder must be a DualEncoder, got {type(encoder).__name__}")
    tile = int(tile)
    chips = _as_chips(cube, labels)
    top = -1  # the largest label value, for the default class names
    for chip in chips:  # cheap checks first: bands, units, grids, sizes, labels
        ref = next(iter(_chip_sensors(chip, encoder, sensors, tile).values()))
        top = max(top, int(_chip_labels(chip, ref).max(initial=-1)))
    enc = encoder

    def load(chip: _Chip) -> _Loaded:
        return _load_chip(chip, enc, sensors, tile, float(max_nan_fraction))

    cache = _ChipCache(load, int(chips_in_memory))
    class_names, counts, names = _survey(chips, cache, classes, top)
    n_valid = sum(c.n_valid for c in chips)
    if n_valid == 0:
        raise ValueError(
            "no labelled pixel with valid input: every pixel is either -1 in labels or NaN in "
            "the cube; check that labels and cube cover the same area"
        )
    if not any(c.n_positions for c in chips):
        raise ValueError(
            f"no {tile} x {tile} tile has at least {1 - max_nan_fraction:.0%} labelled pixels with "
            f"valid input ({n_valid} such pixels in all); use a smaller tile or a larger "
            "max_nan_fraction"
        )
    unused = [c.where for c in chips if not c.n_positions]
    if unused:
        import warnings

        warnings.warn(
            f"{len(unused)} chip(s) have no usable {tile} x {tile} tile and are not trained on: "
            f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}; use a smaller tile or "
            "a larger max_nan_fraction to include them",
            UserWarning,
            stacklevel=2,
        )
    weights = _class_weights(class_weights, counts)
    per_epoch = tiles_per_epoch or max(
        MIN_STEPS_PER_EPOCH * batch_size, math.ceil(2 * n_valid / tile**2)
    )
    model, history = _train(
        chips,
        cache,
        encoder,
        class_names,
        names,
        weights,
        tile=tile,
        epochs=int(epochs),
        per_epoch=int(per_epoch),
        batch_size=int(batch_size),
        chips_in_memory=int(chips_in_memory),
        device=device,
        lr=float(lr),
        encoder_lr_scale=float(encoder_lr_scale),
        weight_decay=float(weight_decay),
        seed=int(seed),
        freeze_encoder=bool(freeze_encoder),
        decoder_width=decoder_width,
        decoder=decoder,
        augment=bool(augment),
        progress=bool(progress),
    )
    model.history = history
    model.training_info = json_safe(
        {
            "freeze_encoder": bool(freeze_encoder),
            "epochs": int(epochs),
            "tile": tile,
            "batch_size": int(batch_size),
            "lr": float(lr),
            "encoder_lr_scale": float(encoder_lr_scale),
            "weight_decay": float(weight_decay),
            "seed": int(seed),
            "tiles_per_epoch": int(per_epoch),
            "steps_per_epoch": math.ceil(per_epoch / batch_size),
            "augment": bool(augment),
            "max_nan_fraction": float(max_nan_fraction),
            "class_weights": None if weights is None else weights.tolist(),
            "class_pixels": counts.tolist(),
            "labelled_pixels": n_valid,
            "chips": len(chips),
            "chip_names": [c.name for c in chips],
            "chips_in_memory": int(chips_in_memory),
            "chip_reads": cache.loads,
            "peak_chips_in_memory": cache.peak,
            "grid": chips[0].grid if len(chips) == 1 else [c.grid for c in chips],
            "encoder_trained_on": encoder.trained_on,
        }
    )
    return model


def _train(
    chips: list[_Chip],
    cache: _ChipCache,
    encoder: DualEncoder,
    class_names: list[str],
    names: tuple[str, ...],
    weights: np.ndarray | None,
    *,
    tile: int,
    epochs: int,
    per_epoch: int,
    batch_size: int,
    chips_in_memory: int,
    device: Any,
    lr: float,
    encoder_lr_scale: float,
    weight_decay: float,
    seed: int,
    freeze_encoder: bool,
    decoder_width: int,
    decoder: str,
    augment: bool,
    progress: bool,
) -> tuple[SegmentationModel, pd.DataFrame]:
    """The training loop of :func:`fit_segmentation`: the model and its log."""
    dev = resolve_device(device)
    tune_allocator()  # training allocates megabytes per layer and step
    model = SegmentationModel(
        encoder,
        class_names,
        sensors=names,
        tile=tile,
        decoder_width=decoder_width,
        decoder=decoder,
        seed=seed,
    ).to(dev)
    model.freeze_encoder(freeze_encoder)
    optimizer = _optimizer(model, lr, weight_decay, encoder_lr_scale)
    weight_t = (
        torch.tensor(weights, dtype=torch.float32, device=dev) if weights is not None else None
    )
    steps_per_epoch = math.ceil(per_epoch / batch_size)
    total = epochs * steps_per_epoch
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="fit_segmentation", unit="step")
    rows: dict[str, list[Any]] = {"step": [], "epoch": [], "loss": []}
    model.train()
    step = 0
    try:
        for epoch in range(epochs):
            rng = np.random.default_rng([seed, epoch])
            plan = _plan_epoch(chips, per_epoch, chips_in_memory, rng)
            for b in range(steps_per_epoch):
                batch = plan[b * batch_size : (b + 1) * batch_size]
                tiles, lab = _batch_tiles(batch, chips, cache, tile, augment, rng)
                inputs = {s: model.normalize(s, tiles[s], device=dev) for s in names}
                y = torch.from_numpy(lab).to(dev)
                lr_now = lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))
                for g in optimizer.param_groups:
                    g["lr"] = lr_now * g["scale"]
                loss = F.cross_entropy(model(inputs), y, weight=weight_t, ignore_index=-1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_value = float(loss.detach())
                rows["step"].append(step)
                rows["epoch"].append(epoch)
                rows["loss"].append(loss_value)
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}")
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    history = pd.DataFrame(rows).astype({"step": "int64", "epoch": "int64", "loss": "float64"})
    return model, history


def _augment(a: np.ndarray, rot: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``rot`` quarter turns, then flip left-right."""
    out = np.rot90(a, k=int(rot), axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return out
