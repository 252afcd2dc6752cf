"""``.contrast``: a thin shell over the plain functions of eo_contrast.

Every method here only handles arguments and calls one function below it; anything the accessor
does, a plain function offers too (:func:`eo_contrast.pair`, :func:`eo_contrast.to_zarr`,
:func:`eo_contrast.pretrain`, :func:`eo_contrast.embed`, :func:`eo_contrast.segment`).

The objects the verbs take:

* a single-sensor cube, a DataArray ``(time, band, y, x)`` (``cube.contrast``);
* odc-stac's form of a cube, a Dataset with one variable per band (``ds.contrast``);
* a pairs Dataset as :func:`eo_contrast.pair` makes, variables ``"s1"`` and/or ``"s2"``
  (``pairs.contrast``).

``pair``, ``embed``, ``segment`` and ``to_zarr`` are shared by both accessors (each says which
forms it takes); ``pretrain`` is on the Dataset accessor only (it trains on pairs), ``sensor``
on the DataArray accessor only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xarray as xr

from eo_contrast import inference, pairing, store, training

if TYPE_CHECKING:  # pragma: no cover
    from eo_contrast.models import DualEncoder
    from eo_contrast.segmentation import SegmentationModel


class _ContrastBase:
    """The verbs of both accessors."""

    _obj: xr.DataArray | xr.Dataset

    def __init__(self, xarray_obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = xarray_obj

    def pair(self, s2: xr.DataArray | xr.Dataset, **kwargs: Any) -> xr.Dataset:
        """Pair this S1 cube with an S2 cube by time; see :func:`eo_contrast.pair`.

        Takes an S1 cube, as a DataArray or as a Dataset with one variable per band; ``s2``
        takes the same two forms. Returns the pairs Dataset.
        """
        return pairing.pair(self._obj, s2, **kwargs)

    def embed(
        self,
        model: DualEncoder | str | None = None,
        *,
        level: str = "tile",
        tile: int = 64,
        overlap: int = 0,
        batch_size: int = 64,
        device: Any = "auto",
        **kwargs: Any,
    ) -> xr.DataArray | xr.Dataset:
        """Embed this object with a dual encoder, lazily; see :func:`eo_contrast.embed`.

        Takes every form: a cube or a Dataset with one variable per band gives a DataArray
        ``(time, feature, y, x)`` (the same for both forms); a pairs Dataset gives a Dataset
        with variables ``"s1"`` and/or ``"s2"``, each ``(pair, feature, y, x)`` from that
        sensor's encoder, on one grid. ``model=None`` uses the packaged default weights
        (:meth:`DualEncoder.default`).
        """
        return inference.embed(
            self._obj,
            model,
            level=level,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            device=device,
            **kwargs,
        )

    def segment(
        self, seg: SegmentationModel, *, probabilities: bool = False, **kwargs: Any
    ) -> xr.DataArray:
        """Segment this object with a fitted model; see :func:`eo_contrast.segment`.

        Takes a cube or a Dataset with one variable per band (for a single-sensor model), or a
        pairs Dataset (for a model of the sensors it holds, one or both). Class ids
        ``(time, y, x)`` (``(pair, y, x)`` for pairs), -1 where the input has no data, or
        probabilities ``(time, class, y, x)``.
        """
        return inference.segment(self._obj, seg, probabilities=probabilities, **kwargs)

    def to_zarr(
        self,
        store_: Any,
        *,
        mode: str = "w-",
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> Any:
        """Write this object to Zarr; see :func:`eo_contrast.to_zarr`.

        Takes every form: a cube, an embedding or a prediction (DataArray), or a Dataset.
        """
        return store.to_zarr(
            self._obj, store_, mode=mode, resume=resume, storage_options=storage_options
        )


@xr.register_dataarray_accessor("contrast")
class ContrastArrayAccessor(_ContrastBase):
    """``cube.contrast``: contrastive-learning verbs on a single-sensor cube.

    Verbs: ``pair``, ``embed``, ``segment``, ``to_zarr`` (shared with the Dataset accessor) and
    the ``sensor`` property.

    Examples
    --------
    >>> import eo_contrast  # registers the accessor
    >>> import numpy as np, xarray as xr
    >>> cube = xr.DataArray(np.zeros((1, 2, 4, 4), "float32"), dims=("time", "band", "y", "x"),
    ...                     coords={"band": ["vv", "vh"]})
    >>> cube.contrast.sensor
    's1'
    """

    _obj: xr.DataArray

    @property
    def sensor(self) -> str:
        """``"s1"`` or ``"s2"``, from the band names."""
        from eo_contrast.cube import sensor_of

        return sensor_of(self._obj)


@xr.register_dataset_accessor("contrast")
class ContrastDatasetAccessor(_ContrastBase):
    """``ds.contrast``: verbs on a Dataset (odc-stac's one-variable-per-band cube, or pairs).

    Verbs: ``pair``, ``embed``, ``segment``, ``to_zarr`` (shared with the DataArray accessor)
    and ``pretrain`` (pairs only).
    """

    _obj: xr.Dataset

    def pretrain(
        self,
        *,
        method: str = "multimodal",
        epochs: int = 1,
        tile: int = 64,
        batch_size: int = 32,
        device: Any = "auto",
        seed: int = 0,
        encoder: str = "resnet18",
        progress: bool = True,
        **kwargs: Any,
    ) -> DualEncoder:
        """Contrastive pretraining on these S1/S2 pairs; see :func:`eo_contrast.pretrain`.

        Takes a pairs Dataset (``method="multimodal"`` needs both ``"s1"`` and ``"s2"``).
        Returns the trained :class:`~eo_contrast.models.DualEncoder`, its training log in
        ``model.history``.
        """
        return training.pretrain(
            self._obj,
            method=method,
            epochs=epochs,
            tile=tile,
            batch_size=batch_size,
            device=device,
            seed=seed,
            encoder=encoder,
            progress=progress,
            **kwargs,
        )
