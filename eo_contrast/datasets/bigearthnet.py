"""Reader for BigEarthNet v2 (reBEN) S1/S2 patch pairs with multi-labels.

The subset read here (see the data folder's ``SOURCE.txt``) is one ``.npz`` of arrays plus the
dataset's two metadata tables::

    benv2_mock_s1s2.npz
        s1_vv_vh_db                     (n, 2, 120, 120)  float32  S1 VV, VH in dB
        s2_10m_B02_B03_B04_B08          (n, 4, 120, 120)  uint16   S2 L2A reflectance x 10000
        s2_20m_B05_B06_B07_B8A_B11_B12  (n, 6, 60, 60)    uint16
        s2_60m_B01_B09                  (n, 2, 20, 20)    uint16
        labels_multihot                 (n, 19)           uint8
        class_names                     (19,)             str
        patch_id, s1_name, split, country                 object arrays (pickled: never loaded)
    metadata.parquet, metadata_for_patches_with_snow_cloud_or_shadow.parquet
        patch_id, labels, split, country, s1_name, s2v1_name, contains_* flags

The npz's object arrays would need ``allow_pickle=True``, which runs code from the file: this
reader never does that. Identifiers, splits and countries come from the parquet tables; the row
order of the npz is read from the *text* of its ``patch_id`` array with :mod:`pickletools`
(which only parses opcodes, never executes them), and checked against the multi-labels.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["BIGEARTHNET_S2_BANDS", "SPLITS", "read_bigearthnet"]

NPZ_NAME = "benv2_mock_s1s2.npz"
METADATA_NAMES = ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet")
#: The 12 Sentinel-2 L2A bands of BigEarthNet, in canonical order (no B10 in L2A).
BIGEARTHNET_S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)  # fmt: skip
#: Valid values of ``split``.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# npz array -> (band names, upsampling factor to the 10 m grid)
_S2_ARRAYS = {
    "s2_10m_B02_B03_B04_B08": (("B02", "B03", "B04", "B08"), 1),
    "s2_20m_B05_B06_B07_B8A_B11_B12": (("B05", "B06", "B07", "B8A", "B11", "B12"), 2),
    "s2_60m_B01_B09": (("B01", "B09"), 6),
}
_TIME = re.compile(r"_(\d{8}T\d{6})(?:_|$)")


def _product_time(name: str, what: str) -> np.datetime64:
    match = _TIME.search(name)
    if match is None:
        raise ValueError(f"cannot read an acquisition time (YYYYMMDDTHHMMSS) from {what} {name!r}")
    return np.datetime64(pd.Timestamp(match.group(1)).to_datetime64(), "ns")


def _npz_object_strings(npz: Path, key: str) -> list[str] | None:
    """The strings of a pickled 1-D object array in an npz, read without unpickling.

    Walks the pickle's opcodes (:func:`pickletools.genops` parses, it never executes) and takes
    the last ``n`` string operands, ``n`` being the array length from the ``.npy`` header.
    Returns ``None`` when the member is absent or not a plain array of ``n`` distinct strings.
    """
    try:
        with zipfile.ZipFile(npz) as zf:
            raw = zf.read(f"{key}.npy")
        buf = io.BytesIO(raw)
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(buf)
        if dtype != np.dtype(object) or len(shape) != 1:
            return None
        texts = [
            arg
            for op, arg, _ in pickletools.genops(buf.read())
            if "UNICODE" in op.name and isinstance(arg, str)
        ]
    except (KeyError, ValueError, zipfile.BadZipFile, OSError):
        return None
    n = shape[0]
    values = texts[-n:] if n else []
    if len(values) != n or len(set(values)) != n:
        return None
    return values


def _multihot(labels: pd.Series, class_names: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    out = np.zeros((len(labels), len(class_names)), dtype=np.uint8)
    for row, names in enumerate(labels):
        for name in names:
            if name not in index:
                raise ValueError(f"label {name!r} is not one of the 19 classes {class_names}")
            out[row, index[name]] = 1
    return out


def _metadata(root: Path, npz: Path, class_names: list[str], multihot: np.ndarray) -> pd.DataFrame:
    frames = []
    for name in METADATA_NAMES:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(
                f"BigEarthNet metadata {path} not found; the reader needs both "
                f"{list(METADATA_NAMES)} next to {NPZ_NAME}"
            )
        frames.append(pd.read_parquet(path))
    meta = pd.concat(frames, ignore_index=True)
    if meta["patch_id"].duplicated().any():
        dup = meta.loc[meta["patch_id"].duplicated(), "patch_id"].tolist()
        raise ValueError(f"patch ids {dup} appear twice in {list(METADATA_NAMES)}")
    # Row order of the npz: its patch_id array, read as text; else the tables' order.
    order = _npz_object_strings(npz, "patch_id")
    if order is not None:
        missing = sorted(set(order) - set(meta["patch_id"]))
        if missing:
            raise ValueError(f"patches {missing} of {npz} have no row in {list(METADATA_NAMES)}")
        meta = meta.set_index("patch_id").loc[order].reset_index()
    if len(meta) != len(multihot):
        raise ValueError(
            f"{npz} has {len(multihot)} patches but the metadata tables have {len(meta)} rows"
        )
    if not np.array_equal(_multihot(meta["labels"], class_names), multihot):
        raise ValueError(
            f"the labels in {list(METADATA_NAMES)} do not match labels_multihot of {npz} row by "
            "row: the row order of the arrays could not be established"
        )
    return meta


def read_bigearthnet(root: str | Path, split: str | None = None) -> xr.Dataset:
    """Read BigEarthNet v2 S1/S2 patch pairs as a paired dataset (the shape of ``ec.pair``'s).

    Parameters
    ----------
    root
        Folder holding ``benv2_mock_s1s2.npz``, ``metadata.parquet`` and
        ``metadata_for_patches_with_snow_cloud_or_shadow.parquet``.
    split
        Keep only the patches of one split: ``"train"``, ``"validation"`` or ``"test"``;
        ``None`` keeps all.

    Returns
    -------
    xarray.Dataset
        Data variables ``s1`` ``(pair, s1_band, y, x)`` float32 backscatter in dB (VV, VH);
        ``s2`` ``(pair, s2_band, y, x)`` float32 L2A surface reflectance = DN * 1e-4 (DN 0 ->
        NaN), the 12 L2A bands in canonical order on the 10 m 120 x 120 grid; ``labels``
        ``(pair, class)`` uint8 multi-hot over the 19 BigEarthNet classes. Coordinates along
        ``pair``: ``patch_id``, ``split``, ``country``, ``s1_name``, ``s2_name``,
        ``contains_seasonal_snow``, ``contains_cloud_or_shadow``, ``s1_time`` and ``s2_time``
        (naive UTC, parsed from the S1 product name and the S2 patch id) and
        ``dt = |s1_time - s2_time|``; ``s1_band``, ``s2_band``, ``class``.

    Notes
    -----
    The 20 m bands (B05, B06, B07, B8A, B11, B12) and 60 m bands (B01, B09) are brought to the
    10 m grid by nearest-neighbour replication (each 20 m pixel becomes 2 x 2 pixels, each
    60 m pixel 6 x 6): the coarse pixels tile the 1200 m patch exactly, so this keeps every
    value unchanged and adds no interpolation artefacts.

    The patches carry no CRS or geotransform (BigEarthNet stores none; the patch name encodes
    its S2 tile and row/column), so ``y`` and ``x`` have no coordinates and ``.rio.crs`` is
    ``None``. S1 was aligned to the S2 patch by the dataset's producers.

    Raises
    ------
    FileNotFoundError
        When a file is missing.
    ValueError
        For an unknown ``split``, or when the arrays and the metadata do not match.

    Examples
    --------
    >>> import eo_contrast as ec
    >>> from eo_contrast.datasets.shared_data import example_path
    >>> root = example_path("bigearthnet_v2_subset")
    >>> ds = ec.read_bigearthnet(root, split="test")
    >>> dict(ds.sizes)
    {'pair': 8, 's1_band': 2, 'y': 120, 'x': 120, 's2_band': 12, 'class': 19}
    >>> str(ds.s2_time.values[0])[:19], str(ds.dt.values[0].astype("timedelta64[m]"))
    ('2017-06-13T10:10:31', '1032 minutes')
    >>> ec.read_bigearthnet(root, split="val")
    Traceback (most recent call last):
    ...
    ValueError: split='val' is not a BigEarthNet split; use one of ('train', 'validation', 'test') or None
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r} is not a BigEarthNet split; use one of {SPLITS} or None")
    root = Path(root)
    npz_path = root / NPZ_NAME
    if not npz_path.is_file():
        raise FileNotFoundError(
            f"BigEarthNet arrays {npz_path} not found; `root` must be the folder holding "
            f"{NPZ_NAME} and {list(METADATA_NAMES)}"
        )
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ("s1_vv_vh_db", "labels_multihot", "class_names", *_S2_ARRAYS)}
    class_names = [str(c) for c in arrays["class_names"]]
    multihot = arrays["labels_multihot"].astype(np.uint8)
    meta = _metadata(root, npz_path, class_names, multihot)

    s1 = arrays["s1_vv_vh_db"].astype(np.float32)
    n, _, height, width = s1.shape
    s2 = np.empty((n, len(BIGEARTHNET_S2_BANDS), height, width), dtype=np.float32)
    for key, (bands, factor) in _S2_ARRAYS.items():
        dn = arrays[key]
        if dn.shape[-2] * factor != height or dn.shape[-1] * factor != width:
            raise ValueError(
                f"{npz_path}: {key} has shape {dn.shape}, not 1/{factor} of the 10 m grid"
            )
        if factor > 1:
            dn = np.repeat(np.repeat(dn, factor, axis=-2), factor, axis=-1)
        refl = np.where(dn == 0, np.float32(np.nan), dn.astype(np.float32) * np.float32(1e-4))
        for i, band in enumerate(bands):
            s2[:, BIGEARTHNET_S2_BANDS.index(band)] = refl[:, i]

    s1_time = np.array([_product_time(s, "S1 product") for s in meta["s1_name"]], "datetime64[ns]")
    s2_time = np.array(
        [_product_time(s, "S2 patch id") for s in meta["patch_id"]], "datetime64[ns]"
    )
    dt = np.abs(s1_time - s2_time)
    ds = xr.Dataset(
        {
            "s1": (
                ("pair", "s1_band", "y", "x"),
                s1,
                {"long_name": "Sentinel-1 GRD backscatter", "units": "dB"},
            ),
            "s2": (
                ("pair", "s2_band", "y", "x"),
                s2,
                {"long_name": "Sentinel-2 L2A surface reflectance", "units": "1"},
            ),
            "labels": (
                ("pair", "class"),
                multihot,
                {"long_name": "BigEarthNet v2 multi-labels (CLC2018, 19 classes)"},
            ),
        },
        coords={
            "s1_band": ["vv", "vh"],
            "s2_band": list(BIGEARTHNET_S2_BANDS),
            "class": class_names,
            "patch_id": ("pair", meta["patch_id"].to_numpy(dtype=str)),
            "split": ("pair", meta["split"].to_numpy(dtype=str)),
            "country": ("pair", meta["country"].to_numpy(dtype=str)),
            "s1_name": ("pair", meta["s1_name"].to_numpy(dtype=str)),
            "s2_name": ("pair", meta["s2v1_name"].to_numpy(dtype=str)),
            "contains_seasonal_snow": ("pair", meta["contains_seasonal_snow"].to_numpy(bool)),
            "contains_cloud_or_shadow": ("pair", meta["contains_cloud_or_shadow"].to_numpy(bool)),
            "s1_time": ("pair", s1_time),
            "s2_time": ("pair", s2_time),
            "dt": ("pair", dt),
        },
        attrs={
            "source": "BigEarthNet v2.0 (reBEN)",
            "s2_upsampling": "nearest-neighbour replication of the 20 m and 60 m bands to 10 m",
            "georeferencing": "none: BigEarthNet patches carry no CRS or geotransform",
        },
    )
    if split is not None:
        ds = ds.isel(pair=np.flatnonzero(ds["split"].values == split))
    return ds
