"""The dual encoder: one ResNet per sensor, projection heads, metadata, safetensors checkpoints."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eo_contrast.models.checkpoint import (
    CheckpointError,
    check_tensors,
    read_checkpoint,
    write_checkpoint,
)
from eo_contrast.models.device import resolve_device
from eo_contrast.models.encoders import ResNetEncoder
from eo_contrast.models.heads import ProjectionHead
from eo_contrast.models.losses import info_nce, nt_xent

__all__ = [
    "BAND_STATS",
    "DEFAULT_BANDS",
    "DEFAULT_UNITS",
    "FORMAT",
    "FORMAT_VERSION",
    "METHODS",
    "SENSORS",
    "DualEncoder",
]

SENSORS: tuple[str, ...] = ("s1", "s2")
METHODS: tuple[str, ...] = ("multimodal", "simclr")
FORMAT = "eo-contrast.dual-encoder"
FORMAT_VERSION = 1
_SUPPORTED_VERSIONS = (1,)
_REQUIRED_KEYS = (
    "format",
    "format_version",
    "architecture",
    "bands",
    "units",
    "normalization",
    "method",
    "trained_on",
    "version",
)
#: The default weights shipped inside the package (see :meth:`DualEncoder.default`).
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parents[1] / "weights" / "default.safetensors"
#: Upper bound of ``exp(logit_scale)`` (CLIP's clamp): temperature never goes below 0.01.
MAX_LOGIT_SCALE = 100.0

#: Bands each encoder expects when none are given: S1 VV/VH, and the 12 Sentinel-2 L2A bands.
DEFAULT_BANDS: dict[str, tuple[str, ...]] = {
    "s1": ("vv", "vh"),
    "s2": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
}
#: Physical units each sensor's cube is in (see ``eo_contrast.cube``).
DEFAULT_UNITS: dict[str, str] = {"s1": "dB", "s2": "1"}

#: Default per-band (mean, std) in physical units. S1: SSL4EO-S12 GRD backscatter in dB.
#: S2: SSL4EO-S12 Level-2A surface reflectance (published digital numbers / 10000); B10 (absent
#: from L2A) from SSL4EO-S12 Level-1C. Wang et al. (2023), "SSL4EO-S12", IEEE GRSM.
BAND_STATS: dict[str, tuple[float, float]] = {
    "vv": (-12.548473, 5.256977),
    "vh": (-20.192371, 5.911509),
    "B01": (0.0752401, 0.1108029),
    "B02": (0.0884297, 0.1155152),
    "B03": (0.1144162, 0.1183629),
    "B04": (0.1297473, 0.1368114),
    "B05": (0.1624910, 0.1370265),
    "B06": (0.2194642, 0.1355554),
    "B07": (0.2422212, 0.1416515),
    "B08": (0.2517761, 0.1474789),
    "B8A": (0.2581647, 0.1439309),
    "B09": (0.2645519, 0.1582280),
    "B10": (0.0022104, 0.0051154),
    "B11": (0.2368512, 0.1455521),
    "B12": (0.1805068, 0.1343484),
}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eo-contrast")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0.0.0"


def _check_real(sensor: str, dtype: Any, refused: bool) -> None:
    """Refuse complex, boolean, string and object input to the encoders' normalisation."""
    if refused:
        raise TypeError(
            f"{sensor} input has dtype {dtype}, but the encoder takes real numbers in physical "
            "units (float32: S1 in dB, S2 reflectance 0..1); convert it first (complex SAR: "
            "abs(x) ** 2, then eo_contrast.linear_to_db)"
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class DualEncoder(nn.Module):
    """One ResNet encoder per sensor (separate weights) with projection heads and metadata.

    The same class serves both pretraining methods: ``method="multimodal"`` (S1/S2 pairs,
    symmetric InfoNCE) needs both sensors; ``method="simclr"`` (augmented views of one sensor,
    NT-Xent) is usually built with a single sensor, e.g. ``DualEncoder({"s2": [...]})``. Both
    save to the same checkpoint format.

    Inputs to :meth:`encoder`, :meth:`embed`, :meth:`features` and :meth:`forward` are
    *normalised* tensors ``(B, C, H, W)``, as produced by :meth:`normalize` from arrays in
    physical units (S1 in dB, S2 reflectance 0..1) with bands in the order of ``bands[sensor]``.

    Parameters
    ----------
    bands
        Sensor -> band names in encoder order, sensors among ``"s1"``/``"s2"``.
        ``None`` means :data:`DEFAULT_BANDS` (both sensors).
    arch
        Encoder layout: ``"resnet18"`` or ``"resnet50"``.
    stem
        Encoder stem: ``"imagenet"`` or ``"small"`` (for small tiles such as 64x64; see
        :class:`~eo_contrast.models.ResNetEncoder`).
    width
        Channels of the encoders' first stage (64: the standard ResNet; smaller is lighter, see
        :class:`~eo_contrast.models.ResNetEncoder`).
    embed_dim
        Length of the projected, L2-normalised embedding (128).
    proj_hidden
        Hidden width of the projection MLP (``None``: the encoder's output length).
    units
        Sensor -> physical units of the input; default ``{"s1": "dB", "s2": "1"}``.
    normalization
        Sensor -> ``{"mean": [...], "std": [...]}`` per band, in physical units. Sensors (or the
        whole argument) left out use :data:`BAND_STATS`; bands not in that table need explicit
        statistics.
    method
        ``"multimodal"`` or ``"simclr"``; ``None`` picks ``"multimodal"`` for two sensors and
        ``"simclr"`` for one.
    trained_on
        Free text describing the training data (``"untrained"`` for fresh weights).
    temperature
        Initial softmax temperature; :attr:`logit_scale` starts at ``log(1 / temperature)``.
    info
        Extra JSON-serialisable metadata kept in checkpoints (e.g. the training configuration).
    seed
        When given, weights are initialised from this seed without touching torch's global
        random state; otherwise from the global state.

    Attributes
    ----------
    logit_scale : torch.nn.Parameter
        Learnable log inverse temperature (CLIP's parametrisation); see :attr:`temperature`.
    history : Any
        Training log set by training loops (not stored in checkpoints; put what must be kept in
        ``info``).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> model = DualEncoder(seed=0).eval()
    >>> model.bands["s1"]
    ['vv', 'vh']
    >>> x = model.normalize("s1", np.full((2, 2, 32, 32), -15.0, dtype="float32"))
    >>> model.encoder("s1")(x).shape
    torch.Size([2, 512])
    >>> with torch.no_grad():
    ...     z = model.embed("s1", x)
    >>> z.shape, round(float(z.norm(dim=1)[0]), 4)
    (torch.Size([2, 128]), 1.0)
    >>> simclr = DualEncoder({"s2": ["B04", "B03", "B02"]}, seed=0)
    >>> simclr.method, simclr.sensors
    ('simclr', ('s2',))
    """

    history: Any

    def __init__(
        self,
        bands: Mapping[str, Sequence[str]] | None = None,
        *,
        arch: str = "resnet18",
        stem: str = "imagenet",
        width: int = 64,
        embed_dim: int = 128,
        proj_hidden: int | None = None,
        units: Mapping[str, str] | None = None,
        normalization: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        method: str | None = None,
        trained_on: str = "untrained",
        temperature: float = 0.07,
        info: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        band_map = self._check_bands(DEFAULT_BANDS if bands is None else bands)
        self._bands = band_map
        self._units = self._check_units(band_map, units)
        self._norm = self._check_normalization(band_map, normalization)
        if method is None:
            method = "multimodal" if len(band_map) == 2 else "simclr"
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        if method == "multimodal" and len(band_map) != 2:
            raise ValueError(
                f"method='multimodal' needs bands for both 's1' and 's2', got {sorted(band_map)}; "
                "use method='simclr' for a single-sensor model"
            )
        self.method = method
        if not isinstance(trained_on, str):
            raise TypeError(f"trained_on must be a string, got {type(trained_on).__name__}")
        self.trained_on = trained_on
        self.info: dict[str, Any] = dict(info or {})
        if not (isinstance(temperature, int | float) and 0 < temperature < math.inf):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.embed_dim = _positive_int("embed_dim", embed_dim)
        if proj_hidden is not None:
            _positive_int("proj_hidden", proj_hidden)
        self.version = _package_version()
        self.history = None

        ctx = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
        with ctx:
            if seed is not None:
                torch.manual_seed(seed)
            encoders: dict[str, nn.Module] = {}
            projectors: dict[str, nn.Module] = {}
            for sensor, names in band_map.items():
                enc = ResNetEncoder(arch, in_chans=len(names), stem=stem, width=width)
                encoders[sensor] = enc
                projectors[sensor] = ProjectionHead(enc.out_dim, self.embed_dim, proj_hidden)
            self.encoders = nn.ModuleDict(encoders)
            self.projectors = nn.ModuleDict(projectors)
        first = next(iter(encoders.values()))
        assert isinstance(first, ResNetEncoder)
        self.arch = arch
        self.stem = stem
        self.width = width
        self.feature_dim: int = first.out_dim
        self.proj_hidden: int = first.out_dim if proj_hidden is None else proj_hidden
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _check_bands(bands: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        if not isinstance(bands, Mapping) or not bands:
            raise ValueError(
                f"bands must be a non-empty mapping sensor -> band names, e.g. "
                f"{{'s1': ['vv', 'vh']}}, got {bands!r}"
            )
        out: dict[str, list[str]] = {}
        for sensor in SENSORS:  # canonical sensor order
            if sensor not in bands:
                continue
            names = bands[sensor]
            if isinstance(names, str) or not isinstance(names, Sequence) or not names:
                raise ValueError(
                    f"bands[{sensor!r}] must be a non-empty list of band names, got {names!r}"
                )
            if not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"bands[{sensor!r}] must contain non-empty strings, got {names!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"bands[{sensor!r}] has duplicate names: {list(names)}")
            out[sensor] = list(names)
        unknown = sorted(set(bands) - set(SENSORS))
        if unknown:
            raise ValueError(f"unknown sensor(s) {unknown} in bands; use 's1' and/or 's2'")
        return out

    @staticmethod
    def _check_units(
        bands: Mapping[str, Sequence[str]], units: Mapping[str, str] | None
    ) -> dict[str, str]:
        given = dict(units or {})
        extra = sorted(set(given) - set(bands))
        if extra:
            raise ValueError(f"units given for sensor(s) {extra} that have no bands")
        out = {}
        for sensor in bands:
            unit = given.get(sensor, DEFAULT_UNITS[sensor])
            if not isinstance(unit, str) or not unit:
                raise ValueError(f"units[{sensor!r}] must be a non-empty string, got {unit!r}")
            out[sensor] = unit
        return out

    @staticmethod
    def _check_normalization(
        bands: Mapping[str, Sequence[str]],
        normalization: Mapping[str, Mapping[str, Sequence[float]]] | None,
    ) -> dict[str, dict[str, list[float]]]:
        given = dict(normalization or {})
        extra = sorted(set(given) - set(bands))
        if extra:
            raise ValueError(f"normalization given for sensor(s) {extra} that have no bands")
        out: dict[str, dict[str, list[float]]] = {}
        for sensor, names in bands.items():
            if sensor in given:
                stats = given[sensor]
                if not isinstance(stats, Mapping) or not {"mean", "std"} <= set(stats):
                    raise ValueError(
                        f"normalization[{sensor!r}] must be a mapping with 'mean' and 'std' "
                        f"lists, got {stats!r}"
                    )
                mean = [float(v) for v in stats["mean"]]
                std = [float(v) for v in stats["std"]]
            else:
                missing = [n for n in names if n not in BAND_STATS]
                if missing:
                    raise ValueError(
                        f"no default normalisation statistics for {sensor} band(s) {missing}; "
                        f"pass normalization={{{sensor!r}: {{'mean': [...], 'std': [...]}}}} "
                        "(one value per band, physical units)"
                    )
                mean = [BAND_STATS[n][0] for n in names]
                std = [BAND_STATS[n][1] for n in names]
            if len(mean) != len(names) or len(std) != len(names):
                raise ValueError(
                    f"normalization[{sensor!r}] needs {len(names)} mean and std values (one per "
                    f"band {names}), got {len(mean)} and {len(std)}"
                )
            if not all(math.isfinite(v) for v in mean) or not all(
                math.isfinite(v) and v > 0 for v in std
            ):
                raise ValueError(
                    f"normalization[{sensor!r}] must have finite means and positive finite std, "
                    f"got mean={mean}, std={std}"
                )
            out[sensor] = {"mean": mean, "std": std}
        return out

    def _sensor(self, sensor: str) -> str:
        if sensor not in self._bands:
            raise KeyError(
                f"this model has no {sensor!r} encoder; its sensors are {list(self._bands)}"
            )
        return sensor

    # ------------------------------------------------------------------ metadata
    @property
    def sensors(self) -> tuple[str, ...]:
        """The sensors this model encodes, in order (``("s1", "s2")``, or one of them)."""
        return tuple(self._bands)

    @property
    def bands(self) -> dict[str, list[str]]:
        """Sensor -> band names each encoder expects, in order (a copy)."""
        return {s: list(b) for s, b in self._bands.items()}

    @property
    def units(self) -> dict[str, str]:
        """Sensor -> physical units of the expected input (``"dB"``, ``"1"``)."""
        return dict(self._units)

    @property
    def normalization(self) -> dict[str, dict[str, list[float]]]:
        """Sensor -> ``{"mean": [...], "std": [...]}`` per band, in physical units (a copy)."""
        return {s: {k: list(v) for k, v in d.items()} for s, d in self._norm.items()}

    @property
    def temperature(self) -> torch.Tensor:
        """Current softmax temperature ``1 / min(exp(logit_scale), 100)`` (differentiable)."""
        return 1.0 / self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON-serialisable description written into checkpoints.

        Keys: ``format``, ``format_version``, ``architecture`` (``name``, ``stem``,
        ``feature_dim``, ``embed_dim``, ``proj_hidden``), ``bands``, ``units``,
        ``normalization``, ``method``, ``trained_on``, ``version`` (package version that
        wrote it) and ``info``.
        """
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": {
                "name": self.arch,
                "stem": self.stem,
                "width": self.width,
                "feature_dim": self.feature_dim,
                "embed_dim": self.embed_dim,
                "proj_hidden": self.proj_hidden,
            },
            "bands": self.bands,
            "units": self.units,
            "normalization": self.normalization,
            "method": self.method,
            "trained_on": self.trained_on,
            "version": self.version,
            "info": dict(self.info),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> DualEncoder:
        """A freshly initialised model with the architecture and metadata of ``metadata``.

        Raises
        ------
        ValueError
            When required keys are missing, the format or its version is unknown, or the
            architecture cannot be built.

        Examples
        --------
        >>> model = DualEncoder({"s1": ["vv", "vh"]}, seed=0)
        >>> DualEncoder.from_metadata(model.metadata).bands
        {'s1': ['vv', 'vh']}
        """
        if not isinstance(metadata, Mapping):
            raise ValueError(f"metadata must be a mapping, got {type(metadata).__name__}")
        missing = [k for k in _REQUIRED_KEYS if k not in metadata]
        if missing:
            raise ValueError(f"metadata lacks required key(s) {missing}")
        if metadata["format"] != FORMAT:
            raise ValueError(f"metadata format is {metadata['format']!r}, expected {FORMAT!r}")
        if metadata["format_version"] not in _SUPPORTED_VERSIONS:
            raise ValueError(
                f"unknown checkpoint format_version {metadata['format_version']!r} (this "
                f"eo-contrast {_package_version()} reads {list(_SUPPORTED_VERSIONS)}); "
                "upgrade eo-contrast"
            )
        arch = metadata["architecture"]
        if not isinstance(arch, Mapping) or not {"name", "stem", "embed_dim"} <= set(arch):
            raise ValueError(
                f"metadata 'architecture' must have 'name', 'stem' and 'embed_dim', got {arch!r}"
            )
        model = cls(
            metadata["bands"],
            arch=arch["name"],
            stem=arch["stem"],
            width=arch.get("width", 64),
            embed_dim=arch["embed_dim"],
            proj_hidden=arch.get("proj_hidden"),
            units=metadata["units"],
            normalization=metadata["normalization"],
            method=metadata["method"],
            trained_on=metadata["trained_on"],
            info=metadata.get("info") or {},
        )
        if "feature_dim" in arch and arch["feature_dim"] != model.feature_dim:
            raise ValueError(
                f"metadata feature_dim {arch['feature_dim']} does not match {arch['name']} "
                f"({model.feature_dim})"
            )
        model.version = str(metadata["version"])
        return model

    # ------------------------------------------------------------------ computation
    def normalize(
        self,
        sensor: str,
        x: np.ndarray | torch.Tensor,
        *,
        units: str | None = None,
        device: str | torch.device | None = None,
        copy: bool = True,
    ) -> torch.Tensor:
        """Standardise an array in physical units into encoder input.

        Each band becomes ``(x - mean) / std`` with this model's statistics; then NaN and
        infinite values (nodata) become 0, i.e. the band mean.

        Parameters
        ----------
        sensor
            ``"s1"`` or ``"s2"``.
        x
            Array ``(..., C, H, W)`` (numpy, or anything :func:`numpy.asarray` accepts, or a
            torch tensor) with ``C == len(bands[sensor])`` bands in that order.
        units
            Units of ``x``, if known; must equal ``units[sensor]``.
        device
            Where the result goes; ``None`` keeps a tensor's device (CPU for arrays).
        copy
            ``False`` lets a writable float32 ``x`` be standardised in place (it is then
            overwritten), which saves a copy of large batches.

        Returns
        -------
        torch.Tensor
            float32, same shape as ``x``, finite.

        Raises
        ------
        KeyError
            When the model has no encoder for ``sensor``.
        ValueError
            When the band count or the units do not match.
        TypeError
            When ``x`` does not hold real numbers (complex, boolean, strings, objects).

        Examples
        --------
        >>> import numpy as np
        >>> model = DualEncoder({"s1": ["vv", "vh"]}, normalization={
        ...     "s1": {"mean": [-12.0, -20.0], "std": [4.0, 5.0]}})
        >>> x = np.array([[[-8.0, np.nan]], [[-25.0, -20.0]]])  # (C=2, H=1, W=2)
        >>> model.normalize("s1", x).tolist()
        [[[1.0, 0.0]], [[-1.0, 0.0]]]
        """
        self._sensor(sensor)
        if units is not None and units != self._units[sensor]:
            raise ValueError(
                f"{sensor} input is in {units!r} but this model expects {self._units[sensor]!r}; "
                + (
                    "convert linear backscatter with eo_contrast.linear_to_db"
                    if sensor == "s1"
                    else "scale reflectance to 0..1"
                )
            )
        t, mean, std = self._float_input(sensor, x, copy=copy, device=device)
        t.sub_(mean).div_(std)
        return t.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)

    def _float_input(
        self,
        sensor: str,
        x: np.ndarray | torch.Tensor,
        *,
        copy: bool,
        device: str | torch.device | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` as a writable float32 tensor (at most one copy; none when ``copy`` is False and
        ``x`` allows it), its shape checked against the bands of ``sensor``, on ``device``; with
        the band means and standard deviations shaped ``(C, 1, 1)`` on the same device."""
        if isinstance(x, torch.Tensor):
            _check_real(sensor, x.dtype, x.is_complex() or x.dtype == torch.bool)
            t = x.detach().to(torch.float32, copy=copy)
        else:
            src = np.asarray(x)
            _check_real(sensor, src.dtype, src.dtype.kind not in "iuf")
            arr = np.array(src, dtype=np.float32) if copy else src.astype(np.float32, copy=False)
            if not arr.flags.writeable:
                arr = arr.copy()
            t = torch.from_numpy(arr)
        n = len(self._bands[sensor])
        if t.ndim < 3 or t.shape[-3] != n:
            raise ValueError(
                f"{sensor} input must have shape (..., {n}, H, W) for bands "
                f"{self._bands[sensor]}, got {tuple(t.shape)}"
            )
        if device is not None:
            t = t.to(resolve_device(device))
        mean = torch.tensor(self._norm[sensor]["mean"], dtype=torch.float32, device=t.device)
        std = torch.tensor(self._norm[sensor]["std"], dtype=torch.float32, device=t.device)
        return t, mean[:, None, None], std[:, None, None]

    def denormalize(
        self, sensor: str, x: np.ndarray | torch.Tensor, *, device: str | torch.device | None = None
    ) -> torch.Tensor:
        """Undo :meth:`normalize`: encoder input back to physical units, ``x * std + mean``.

        The inverse of :meth:`normalize` for finite values: ``denormalize(s, normalize(s, x))``
        equals ``x`` up to float32 rounding. Nodata cannot be recovered: :meth:`normalize` turns
        NaN into 0, which comes back as the band mean.

        Parameters
        ----------
        sensor
            ``"s1"`` or ``"s2"``.
        x
            Normalised array ``(..., C, H, W)`` with ``C == len(bands[sensor])`` (numpy or torch;
            never modified).
        device
            Where the result goes; ``None`` keeps a tensor's device (CPU for arrays).

        Returns
        -------
        torch.Tensor
            float32, same shape as ``x``, in the units of ``units[sensor]``.

        Raises
        ------
        KeyError
            When the model has no encoder for ``sensor``.
        ValueError
            When the band count does not match.
        TypeError
            When ``x`` does not hold real numbers.

        Examples
        --------
        >>> import numpy as np
        >>> model = DualEncoder({"s1": ["vv", "vh"]}, normalization={
        ...     "s1": {"mean": [-12.0, -20.0], "std": [4.0, 5.0]}})
        >>> x = np.array([[[-8.0, -16.0]], [[-25.0, -20.0]]])  # (C=2, H=1, W=2), dB
        >>> z = model.normalize("s1", x)
        >>> z.tolist()
        [[[1.0, -1.0]], [[-1.0, 0.0]]]
        >>> model.denormalize("s1", z).tolist()
        [[[-8.0, -16.0]], [[-25.0, -20.0]]]
        """
        self._sensor(sensor)
        t, mean, std = self._float_input(sensor, x, copy=True, device=device)
        return t.mul_(std).add_(mean)

    def encoder(self, sensor: str) -> ResNetEncoder:
        """The encoder of ``sensor``: normalised ``(B, C, H, W)`` -> ``(B, feature_dim)``."""
        enc = self.encoders[self._sensor(sensor)]
        assert isinstance(enc, ResNetEncoder)
        return enc

    def projector(self, sensor: str) -> ProjectionHead:
        """The projection head of ``sensor``: ``(B, feature_dim)`` -> ``(B, embed_dim)``."""
        head = self.projectors[self._sensor(sensor)]
        assert isinstance(head, ProjectionHead)
        return head

    def embed(self, sensor: str, x: torch.Tensor) -> torch.Tensor:
        """Projected, L2-normalised embeddings ``(B, embed_dim)`` of normalised tiles ``x``."""
        return F.normalize(self.projector(sensor)(self.encoder(sensor)(x)), dim=1)

    def features(self, sensor: str, x: torch.Tensor) -> list[torch.Tensor]:
        """Dense feature pyramid of normalised tiles ``x`` (see ``ResNetEncoder.features``)."""
        return self.encoder(sensor).features(x)

    def forward(
        self, a: torch.Tensor, b: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of a positive pair.

        Two-sensor model: ``forward(s1, s2) -> (z1, z2)``. Single-sensor model: ``a`` and ``b``
        are two augmented views, both embedded by the one encoder.
        """
        if b is None:
            raise ValueError("forward needs two inputs: (s1, s2) tiles, or two augmented views")
        if len(self._bands) == 2:
            return self.embed("s1", a), self.embed("s2", b)
        sensor = self.sensors[0]
        return self.embed(sensor, a), self.embed(sensor, b)

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The loss of this model's method at the learnable :attr:`temperature`.

        Symmetric InfoNCE for ``"multimodal"``, NT-Xent for ``"simclr"``.

        Examples
        --------
        >>> import torch
        >>> model = DualEncoder({"s2": ["B04", "B03", "B02"]}, seed=0, temperature=0.5).eval()
        >>> x = torch.zeros(4, 3, 32, 32)
        >>> with torch.no_grad():
        ...     loss = model.contrastive_loss(*model(x, x))
        >>> float(loss) > 0
        True
        """
        if self.method == "multimodal":
            return info_nce(z1, z2, self.temperature)
        return nt_xent(z1, z2, self.temperature)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights and metadata to one safetensors file, atomically.

        The metadata (:attr:`metadata`) is JSON in the safetensors header metadata under the
        key ``"eo_contrast"``. Nothing is pickled.

        Returns
        -------
        pathlib.Path
            The written path.

        Examples
        --------
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> model = DualEncoder({"s1": ["vv", "vh"]}, seed=0).eval()
        >>> path = model.save(Path(tempfile.mkdtemp()) / "model.safetensors")
        >>> again = DualEncoder.load(path)
        >>> x = torch.zeros(1, 2, 32, 32)
        >>> with torch.no_grad():
        ...     same = torch.equal(model.embed("s1", x), again.embed("s1", x))
        >>> same
        True
        """
        meta = self.metadata
        meta["version"] = _package_version()
        return write_checkpoint(path, self.state_dict(), meta)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
    ) -> DualEncoder:
        """Load a model written by :meth:`save`, in eval mode.

        Checks that the file is safetensors (pickle/zip files such as ``torch.save`` output are
        refused, never unpickled), that its metadata is present, valid JSON with the required
        keys and a known format version, that the architecture can be built, and that tensor
        names and shapes match it exactly.

        Parameters
        ----------
        path
            The ``.safetensors`` file.
        device
            Where to put the model (``"auto"`` picks an accelerator when there is one).

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        CheckpointError
            (a ``ValueError``) for any other refusal, naming the path and the reason.
        """
        p = Path(path)
        target = resolve_device(device)
        tensors, meta = read_checkpoint(p)
        try:
            # built on the meta device: no time or randomness spent on an initialisation that
            # the loaded tensors replace
            with torch.device("meta"):
                model = cls.from_metadata(meta)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{p}: its metadata does not describe a model: {exc}") from exc
        check_tensors(model.state_dict(), tensors, p)
        # fresh (aligned) storage on the target device, then a strict copy of every tensor
        model.to_empty(device=target)
        model.load_state_dict(tensors, strict=True)
        return model.eval()

    @classmethod
    def default(cls, device: str | torch.device = "cpu") -> DualEncoder:
        """The package's default weights: a small multimodal model, in eval mode.

        A ResNet-18 (16 channels in the first stage) per sensor, pretrained with
        ``method="multimodal"`` on the real BigEarthNet v2 *train* patch pairs plus synthetic
        scenes, on the CPU (``python -m eo_contrast.pipelines.default_weights``). Its
        ``trained_on`` and ``info["recipe"]`` say exactly what; ``docs/pretraining.md`` reports
        its held-out retrieval and its limits (tiny data: a starting point and a working
        default, not a substitute for pretraining on a large archive).

        Parameters
        ----------
        device
            Where to put the model.

        Raises
        ------
        FileNotFoundError
            When the weights file is missing from the installation.

        Examples
        --------
        >>> model = DualEncoder.default()
        >>> model.method, model.bands["s1"], model.units
        ('multimodal', ['vv', 'vh'], {'s1': 'dB', 's2': '1'})
        """
        if not DEFAULT_WEIGHTS.is_file():
            raise FileNotFoundError(
                f"the default weights {DEFAULT_WEIGHTS} are missing from this installation of "
                "eo-contrast; reinstall the package, or rebuild them with `python -m "
                "eo_contrast.pipelines.default_weights --out <that path>`"
            )
        return cls.load(DEFAULT_WEIGHTS, device=device)

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, stem={self.stem!r}, bands={self._bands}, "
            f"embed_dim={self.embed_dim}, method={self.method!r}"
        )
