"""The catalogue of bad inputs: every one is listed here, with what the toolkit does about it.

Most bad inputs get a clear exception: the test checks its type and that the message names the
offending input and says what to do. A few have a well-defined result instead of an error, which
the test asserts: NaN-only tiles and chunks give NaN embeddings and nodata (-1) classes, bands in
another order than the model's are reordered by name, and a write that fails part-way is left
marked incomplete, so that nothing partially written looks complete.

The catalogue's size is quoted in ``docs/reliability.md``; :func:`test_reliability_page_quotes_the_catalogue`
keeps the two in step.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import zarr
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

torch = pytest.importorskip("torch")

import eo_contrast as ec  # noqa: E402
from eo_contrast.models import CheckpointError, DualEncoder  # noqa: E402
from eo_contrast.models.checkpoint import write_checkpoint  # noqa: E402
from eo_contrast.pipelines.config import read_config  # noqa: E402
from eo_contrast.segmentation import SegmentationModel  # noqa: E402
from eo_contrast.stac import AssetReadError, BandNotFoundError  # noqa: E402
from eo_contrast.store import STATUS_ATTR  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CRS = "EPSG:32630"
N = 64  # pixels per side of the test cubes
TILE = 16


# ------------------------------------------------------------------------------------------
# realistic small inputs
# ------------------------------------------------------------------------------------------


def _cube(
    bands: list[str],
    units: list[str],
    values: np.ndarray,
    *,
    times: list[str] | None = None,
    x0: float = 500_000.0,
    y0: float = 4_500_000.0,
    crs: str | None = CRS,
) -> xr.DataArray:
    times = times or ["2024-03-01", "2024-03-13"][: values.shape[0]]
    ny, nx = values.shape[-2:]
    arr = xr.DataArray(
        values.astype(np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": pd.to_datetime(times).values.astype("datetime64[ns]"),
            "band": bands,
            "units": ("band", units),
            "y": y0 - 10.0 * (np.arange(ny) + 0.5),
            "x": x0 + 10.0 * (np.arange(nx) + 0.5),
        },
    )
    return arr.rio.write_crs(crs) if crs is not None else arr


def s1_cube(seed: int = 0, **kw: Any) -> xr.DataArray:
    """Sentinel-1 backscatter in dB: a water body (-22/-28 dB) in land (-8/-14 dB), speckled."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:N, 0:N]
    water = (yy - 20) ** 2 + (xx - 40) ** 2 < 15**2
    base = np.stack([np.where(water, -22.0, -8.0), np.where(water, -28.0, -14.0)])
    values = base[None] + rng.normal(0, 1.5, (2, 2, N, N))
    return _cube(["vv", "vh"], ["dB", "dB"], values, **kw)


def s2_cube(bands: list[str], seed: int = 1, **kw: Any) -> xr.DataArray:
    """Sentinel-2 reflectance 0..1 on the same grid, a day after each S1 scene."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.02, 0.4, (2, len(bands), N, N))
    kw.setdefault("times", ["2024-03-02", "2024-03-14"])
    return _cube(bands, ["1"] * len(bands), values, **kw)


def _pickle_bomb(marker: Path, protocol: int = 4) -> bytes:
    """A pickle that would create ``marker`` if it were ever unpickled."""

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Payload(), protocol=protocol)


@dataclass
class Cogs:
    """Two Sentinel-1 STAC items with real COG assets (asset keys 'VV'/'VH') in a folder."""

    items: list[dict[str, Any]]
    paths: dict[tuple[str, str], Path]

    def corrupt(self, item: str, key: str, how: str) -> Path:
        path = self.paths[item, key]
        raw = path.read_bytes()
        if how == "truncated":
            path.write_bytes(raw[: len(raw) // 2])
        elif how == "garbage":
            path.write_bytes(np.random.default_rng(0).bytes(len(raw)))
        elif how == "bad header":
            path.write_bytes(b"\0" * 16 + raw[16:])
        elif how == "missing":
            path.unlink()
        else:  # pragma: no cover - test bug
            raise ValueError(how)
        return path


def write_cogs(folder: Path) -> Cogs:
    """Real COGs (linear backscatter power, 64 x 64, 32-pixel blocks) and items pointing at them."""
    folder.mkdir(parents=True, exist_ok=True)
    transform = from_origin(500_000, 4_500_000, 10, 10)
    west, south, east, north = transform_bounds(
        CRS, "EPSG:4326", 500_000, 4_499_360, 500_640, 4_500_000
    )
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    rng = np.random.default_rng(0)
    items, paths = [], {}
    for item_id, when in (("S1A_20240301", "2024-03-01"), ("S1A_20240313", "2024-03-13")):
        assets = {}
        for key in ("VV", "VH"):
            path = folder / f"{item_id}_{key}.tif"
            with rasterio.open(
                path, "w", driver="COG", width=N, height=N, count=1, dtype="float32",
                crs=CRS, transform=transform, blocksize=32, nodata=-32768.0,
            ) as dst:  # fmt: skip
                dst.write(rng.uniform(0.002, 0.3, (1, N, N)).astype("float32"))
            paths[item_id, key] = path
            assets[key] = {
                "href": str(path),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "raster:bands": [{"nodata": -32768.0, "unit": "linear"}],
            }
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": item_id,
                "collection": "sentinel-1-rtc",
                "bbox": [west, south, east, north],
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "datetime": f"{when}T06:00:00Z",
                    "platform": "sentinel-1a",
                    "proj:epsg": 32630,
                    "proj:shape": [N, N],
                    "proj:transform": [10, 0, 500_000, 0, -10, 4_500_000],
                },
                "links": [],
                "assets": assets,
            }
        )
    return Cogs(items, paths)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Shared inputs; cases that modify files work on copies in their own folder."""
    root = tmp_path_factory.mktemp("bad_inputs")
    model = DualEncoder(width=8, seed=0).eval()
    s2_bands = model.bands["s2"]
    s1 = s1_cube().chunk({"time": 1, "y": 32, "x": 32})
    s2 = s2_cube(s2_bands).chunk({"time": 1, "y": 32, "x": 32})
    seg = SegmentationModel(model, ["dry", "water"], sensors=("s1",), tile=TILE, seed=0)
    seg = seg.eval()
    model_file = model.save(root / "model.safetensors")
    seg_file = seg.save(root / "seg.safetensors")
    return SimpleNamespace(
        root=root,
        model=model,
        seg=seg,
        s1=s1,
        s2=s2,
        pairs=ec.pair(s1, s2),
        model_file=model_file,
        seg_file=seg_file,
    )


def _copy(path: Path, tmp: Path, name: str | None = None) -> Path:
    out = tmp / (name or path.name)
    shutil.copyfile(path, out)
    return out


def _pretrain(pairs: xr.Dataset, **kw: Any) -> DualEncoder:
    opts: dict[str, Any] = {
        "tile": TILE, "batch_size": 8, "epochs": 1, "device": "cpu", "progress": False,
    }  # fmt: skip
    opts.update(kw)
    return ec.pretrain(pairs, **opts)


# ------------------------------------------------------------------------------------------
# bad inputs that raise: (what is done, the exception, what the message must say)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """One bad input: ``run(env, tmp_path)`` must raise ``error`` matching ``match``."""

    run: Callable[[SimpleNamespace, Path], Any]
    error: type[BaseException]
    match: str


def _compute(obj: Any) -> Any:
    return obj.compute() if hasattr(obj, "compute") else obj


def _embed(cube: xr.DataArray, env: SimpleNamespace, **kw: Any) -> Any:
    return _compute(ec.embed(cube, env.model, tile=TILE, device="cpu", **kw))


def _segment(cube: Any, env: SimpleNamespace) -> Any:
    return _compute(ec.segment(cube, env.seg, device="cpu"))


def _linear(env: SimpleNamespace) -> xr.DataArray:
    return ec.db_to_linear(env.s1).assign_coords(units=("band", ["linear", "linear"]))


def _typed(env: SimpleNamespace, dtype: str) -> xr.DataArray:
    """The S1 cube's values in another dtype (numpy-backed)."""
    cube = env.s1.load()
    if dtype == "str":
        data: np.ndarray = np.char.mod("%.2f", cube.values)
    elif dtype == "object":
        data = cube.values.astype(object)
    elif dtype == "datetime64[ns]":
        data = np.full(cube.shape, np.datetime64("2024-03-01", "ns"))
    else:
        data = cube.values.astype(dtype)
    return cube.copy(data=data)


def _load_cogs(tmp: Path, engine: str, how: str) -> Any:
    cogs = write_cogs(tmp / "cogs")
    cogs.corrupt("S1A_20240313", "VH", how)
    cube = ec.load_stac(cogs.items, chunks=32, engine=engine)
    return cube.compute()


def _yaml_config(tmp: Path) -> Any:
    marker = tmp / "owned"
    config = tmp / "pretrain.yaml"
    config.write_text(f'epochs: !!python/object/apply:os.system ["touch {marker}"]\n')
    try:
        return read_config(config, verb="pretrain", allowed=["epochs"])
    finally:
        assert not marker.exists(), "the YAML config ran code"


def _bomb(tmp: Path, name: str, load: Callable[[Path], Any], protocol: int = 4) -> Any:
    marker = tmp / "owned"
    path = tmp / name
    path.write_bytes(_pickle_bomb(marker, protocol))
    try:
        return load(path)
    finally:
        assert not marker.exists(), "a pickle in a checkpoint was unpickled"


def _zip_bomb(tmp: Path) -> Any:
    marker = tmp / "owned"
    path = tmp / "model.pt"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    torch.save({"weights": Payload()}, path)
    try:
        return DualEncoder.load(path)
    finally:
        assert not marker.exists(), "a torch.save file was unpickled"


def _damaged(env: SimpleNamespace, tmp: Path, source: str, how: str) -> Path:
    """A damaged copy of the model (or segmentation) checkpoint."""
    src = env.model_file if source == "model" else env.seg_file
    path = _copy(src, tmp, f"{how}.safetensors")
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    if how == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    elif how == "flipped":
        raw[8 + n + (len(raw) - 8 - n) // 2] ^= 0xFF  # one byte of tensor data
    elif how == "header":
        raw[8 + n // 2] = ord("}")
    path.write_bytes(bytes(raw))
    return path


def _mismatched(env: SimpleNamespace, tmp: Path) -> Path:
    """Tensors of a wider model under the metadata of the narrow one."""
    wide = DualEncoder(width=16, seed=0)
    return write_checkpoint(tmp / "mismatched.safetensors", wide.state_dict(), env.model.metadata)


REFUSED: dict[str, Refused] = {
    # -- a missing band ------------------------------------------------------------------------
    "missing band: embed": Refused(
        lambda e, t: _embed(e.s1.sel(band=["vv"]), e),
        ValueError,
        r"cube bands \['vv'\] match none of the model's encoders \(s1 encoder: \['vv', 'vh'\].*"
        r"give a cube with all the bands of one encoder",
    ),
    "missing band: segment": Refused(
        lambda e, t: _segment(e.s1.sel(band=["vh"]), e),
        ValueError,
        r"cube bands \['vh'\] match none.*give a cube with all the bands",
    ),
    "missing band: pretrain": Refused(
        lambda e, t: _pretrain(e.pairs.isel(s2_band=slice(0, 4)), model=copy.deepcopy(e.model)),
        ValueError,
        r"variable 's2' lacks bands \['B05', .*'B12'\].*needs \['B01'",
    ),
    "missing band: fit_segmentation": Refused(
        lambda e, t: ec.fit_segmentation(
            e.s1.sel(band=["vv"]),
            e.s1.isel(time=0, band=0).astype("int16") * 0,
            encoder=e.model,
            epochs=1,
            tile=TILE,
            device="cpu",
            progress=False,
        ),
        ValueError,
        r"bands of the cube \['vv'\] match neither encoder.*Give a cube with those band names",
    ),
    "missing band: load_stac": Refused(
        lambda e, t: ec.load_stac(write_cogs(t / "cogs").items, bands=["B04"]),
        BandNotFoundError,
        r"band 'B04' is in none of the 2 items; available bands.*sentinel-1-rtc: \['vv', 'vh'\]",
    ),
    # -- wrong units ---------------------------------------------------------------------------
    "linear S1 into a dB model: embed": Refused(
        lambda e, t: _embed(_linear(e), e),
        ValueError,
        r"cube bands \['vh', 'vv'\] are in \['linear'\] but the model's s1 encoder expects "
        r"'dB'; convert linear backscatter with eo_contrast\.linear_to_db",
    ),
    "linear S1 into a dB model: segment": Refused(
        lambda e, t: _segment(_linear(e), e),
        ValueError,
        r"expects 'dB'; convert linear backscatter with eo_contrast\.linear_to_db",
    ),
    "linear S1 into a dB model: pretrain": Refused(
        lambda e, t: _pretrain(
            e.pairs.assign_coords(s1_units=("s1_band", ["linear", "linear"])),
            model=copy.deepcopy(e.model),
        ),
        ValueError,
        r"s1 is in units 'linear'.*linear_to_db",
    ),
    "linear S1 into a dB model: normalize": Refused(
        lambda e, t: e.model.normalize("s1", np.zeros((2, 4, 4)), units="linear"),
        ValueError,
        r"s1 input is in 'linear' but this model expects 'dB'; convert linear backscatter",
    ),
    "S2 digital numbers into a reflectance model": Refused(
        lambda e, t: _embed(e.s2.assign_coords(units=("band", ["DN"] * 12)), e),
        ValueError,
        r"are in \['DN'\] but the model's s2 encoder expects '1'; scale reflectance to 0\.\.1",
    ),
    # -- CRS that cannot be reconciled --------------------------------------------------------
    "no CRS on s1: pair": Refused(
        lambda e, t: ec.pair(e.s1.drop_vars("spatial_ref"), e.s2),
        ValueError,
        r"s1 has no CRS: record one with s1\.rio\.write_crs",
    ),
    "no CRS on s2: pair": Refused(
        lambda e, t: ec.pair(e.s1, e.s2.drop_vars("spatial_ref")),
        ValueError,
        r"s2 has no CRS: record one with s2\.rio\.write_crs",
    ),
    "engineering CRS (no Earth datum): pair": Refused(
        lambda e, t: ec.pair(e.s1.rio.write_crs('LOCAL_CS["site grid",UNIT["metre",1]]'), e.s2),
        ValueError,
        r"the CRS of s1 \(LOCAL_CS.*\) cannot be transformed to the CRS of s2 \(EPSG:32630\).*"
        r"Give both cubes Earth CRSs",
    ),
    "CRS of another planet: pair": Refused(
        lambda e, t: ec.pair(
            e.s1.assign_coords(x=e.s1.x / 1e5, y=e.s1.y / 1e5).rio.write_crs("IAU_2015:49900"),
            e.s2,
        ),
        ValueError,
        r"the CRS of s1 .*Mars.* cannot be transformed to the CRS of s2.*same celestial body.*"
        r"Give both cubes Earth CRSs",
    ),
    "geographic CRS on metre coordinates: pair": Refused(
        lambda e, t: ec.pair(e.s1.rio.write_crs("EPSG:4326"), e.s2),
        ValueError,
        r"s1 has the geographic CRS EPSG:4326 \(degrees\), but its coordinates span x 500005"
        r".*not longitudes/latitudes.*s1\.rio\.write_crs",
    ),
    "labels on another CRS: fit_segmentation": Refused(
        lambda e, t: ec.fit_segmentation(
            e.s1,
            (e.s1.isel(time=0, band=0) * 0).astype("int16").rio.write_crs("EPSG:4326"),
            encoder=e.model,
            epochs=1,
            tile=TILE,
            device="cpu",
            progress=False,
        ),
        ValueError,
        r"another grid than the cube.*EPSG:4326",
    ),
    # -- footprints that do not overlap -------------------------------------------------------
    "non-overlapping footprints: pair": Refused(
        lambda e, t: ec.pair(s1_cube(x0=600_000.0), e.s2),
        ValueError,
        r"the s1 and s2 footprints do not overlap: s1 covers lon/lat bounds .* pair cubes of "
        r"the same area",
    ),
    "bbox outside the items: load_stac": Refused(
        lambda e, t: ec.load_stac(write_cogs(t / "cogs").items, bbox=(10.0, 10.0, 10.1, 10.1)),
        ValueError,
        r"bbox \(10\.0, 10\.0, 10\.1, 10\.1\) does not intersect the items' footprints.*pass a "
        r"bbox .* inside them",
    ),
    # -- times ---------------------------------------------------------------------------------
    "non-monotonic times: pair": Refused(
        lambda e, t: ec.pair(e.s1.isel(time=[1, 0]), e.s2),
        ValueError,
        r"s1 times are not sorted: sort them with s1\.sortby\('time'\)",
    ),
    "duplicate times: pair": Refused(
        lambda e, t: ec.pair(e.s1, e.s2.assign_coords(time=[e.s2.time.values[0]] * 2)),
        ValueError,
        r"s2 has duplicate times \['2024-03-02 00:00:00'\]: merge those scenes first "
        r"\(e\.g\. s2\.groupby\('time'\)\.first\(\)\)",
    ),
    "missing times (NaT): pair": Refused(
        lambda e, t: ec.pair(
            e.s1.assign_coords(time=[e.s1.time.values[0], np.datetime64("NaT", "ns")]), e.s2
        ),
        ValueError,
        r"s1 has 1 missing time\(s\) \(NaT\) in its time coordinate: drop those scenes",
    ),
    "no time dim: pair": Refused(
        lambda e, t: ec.pair(e.s1.isel(time=0), e.s2),
        ValueError,
        r"s1 has no 'time' dim; acquisition times are needed here",
    ),
    "times too far apart: pair": Refused(
        lambda e, t: ec.pair(e.s1, e.s2, max_dt="12h"),
        ValueError,
        r"no S1/S2 pair within max_dt: the closest S1/S2 gap is 1 days.*raise max_dt "
        r"\(e\.g\. max_dt='1D'\)",
    ),
    # -- empty cubes ---------------------------------------------------------------------------
    "empty cube (no pixels): embed": Refused(
        lambda e, t: _embed(e.s1.isel(x=slice(0, 0)), e),
        ValueError,
        r"cube is empty: its shape is \{'time': 2, 'band': 2, 'y': 64, 'x': 0\}; select a "
        r"non-empty",
    ),
    "empty cube (no time): pair": Refused(
        lambda e, t: ec.pair(e.s1.isel(time=slice(0, 0)), e.s2),
        ValueError,
        r"s1 is empty: its shape is \{'time': 0,.*select a non-empty time range",
    ),
    "empty cube (no band): segment": Refused(
        lambda e, t: _segment(e.s1.isel(band=slice(0, 0)), e),
        ValueError,
        r"cube is empty: its shape is \{'time': 2, 'band': 0,.*select a non-empty",
    ),
    "empty cube: to_zarr": Refused(
        lambda e, t: ec.to_zarr(e.s1.isel(y=slice(0, 0)), t / "empty.zarr"),
        ValueError,
        r"data variable 'cube' is empty \(shape \(2, 2, 0, 64\)\): nothing to write",
    ),
    "no items: load_stac": Refused(
        lambda e, t: ec.load_stac([]),
        ValueError,
        r"items is empty: there is no STAC Item to load \(check the search or the file\)",
    ),
    "cube smaller than a tile: embed": Refused(
        lambda e, t: _embed(e.s1.isel(y=slice(0, 10)), e),
        ValueError,
        r"tile=16 is larger than the cube \(10 x 64 pixels\); use a smaller tile",
    ),
    # -- unsupported dtypes --------------------------------------------------------------------
    **{
        f"{dtype} data: embed": Refused(
            lambda e, t, dtype=dtype: _embed(_typed(e, dtype), e),
            TypeError,
            rf"cube has dtype {re.escape(shown)}\w*, but a cube holds real numbers in physical "
            rf"units.*{hint}",
        )
        for dtype, shown, hint in (
            ("complex64", "complex64", r"take the backscatter power \(abs\(x\) \*\* 2\)"),
            ("bool", "bool", r"a boolean mask is not a cube: apply it with cube\.where"),
            ("str", "<U", r"parse the strings into numbers"),
            ("object", "object", r"convert the Python objects into numbers"),
            ("datetime64[ns]", "datetime64[ns]", r"put them in a 'time' coordinate"),
        )
    },
    "complex data: pair": Refused(
        lambda e, t: ec.pair(_typed(e, "complex64"), e.s2),
        TypeError,
        r"s1 has dtype complex64, but a cube holds real numbers.*linear_to_db",
    ),
    "boolean data: segment": Refused(
        lambda e, t: _segment(_typed(e, "bool"), e),
        TypeError,
        r"cube has dtype bool, but a cube holds real numbers.*cube\.where\(mask\)",
    ),
    "string data: normalize": Refused(
        lambda e, t: e.model.normalize("s1", np.full((2, 4, 4), "-12.5")),
        TypeError,
        r"s1 input has dtype <U5, but the encoder takes real numbers.*convert it first",
    ),
    "complex tensor: normalize": Refused(
        lambda e, t: e.model.normalize("s1", torch.zeros(2, 4, 4, dtype=torch.complex64)),
        TypeError,
        r"s1 input has dtype torch\.complex64, but the encoder takes real numbers",
    ),
    "Python objects: to_zarr": Refused(
        lambda e, t: ec.to_zarr(_typed(e, "object"), t / "objects.zarr"),
        TypeError,
        r"'cube' has dtype object.*astype",
    ),
    # -- truncated or corrupt COGs (the error names the item and the asset) -----------------
    **{
        f"{how} COG: load_stac ({engine})": Refused(
            lambda e, t, how=how, engine=engine: _load_cogs(t, engine, how),
            AssetReadError,
            r"cannot read asset 'VH' of STAC item 'S1A_20240313' \(.*S1A_20240313_VH\.tif\): "
            r".*re-download or repair it, point href_map at a good copy, or leave that item out",
        )
        for how, engine in (
            ("truncated", "odc"),
            ("truncated", "stackstac"),
            ("garbage", "odc"),
            ("bad header", "odc"),
            ("missing", "odc"),
            ("missing", "stackstac"),
        )
    },
    # -- corrupt, truncated or mismatched checkpoints -----------------------------------------
    "truncated checkpoint: DualEncoder.load": Refused(
        lambda e, t: DualEncoder.load(_damaged(e, t, "model", "truncated")),
        CheckpointError,
        r"truncated\.safetensors is truncated: its header needs \d+ bytes but the file has \d+; "
        r"the write was probably interrupted, save the model again",
    ),
    "flipped byte in the weights: DualEncoder.load": Refused(
        lambda e, t: DualEncoder.load(_damaged(e, t, "model", "flipped")),
        CheckpointError,
        r"flipped\.safetensors is corrupt: its tensor data does not match the SHA-256 recorded "
        r"when it was written.*restore it from a good copy or save the model again",
    ),
    "corrupt header: DualEncoder.load": Refused(
        lambda e, t: DualEncoder.load(_damaged(e, t, "model", "header")),
        CheckpointError,
        r"header\.safetensors is corrupt or not a safetensors file: its header is not JSON",
    ),
    "mismatched tensors: DualEncoder.load": Refused(
        lambda e, t: DualEncoder.load(_mismatched(e, t)),
        CheckpointError,
        r"mismatched\.safetensors does not match the architecture in its metadata: mismatched "
        r"tensors",
    ),
    "truncated checkpoint: embed(model=path)": Refused(
        lambda e, t: ec.embed(e.s1, _damaged(e, t, "model", "truncated"), tile=TILE),
        CheckpointError,
        r"truncated\.safetensors is truncated: its header needs",
    ),
    "truncated checkpoint: SegmentationModel.load": Refused(
        lambda e, t: SegmentationModel.load(_damaged(e, t, "seg", "truncated")),
        CheckpointError,
        r"truncated\.safetensors is truncated.*save the model again",
    ),
    "flipped byte in the weights: SegmentationModel.load": Refused(
        lambda e, t: SegmentationModel.load(_damaged(e, t, "seg", "flipped")),
        CheckpointError,
        r"flipped\.safetensors is corrupt: its tensor data does not match the SHA-256",
    ),
    "encoder checkpoint: SegmentationModel.load": Refused(
        lambda e, t: SegmentationModel.load(e.model_file),
        CheckpointError,
        r"model\.safetensors is a DualEncoder checkpoint, not a segmentation model; load it "
        r"with ec\.DualEncoder\.load",
    ),
    "truncated training checkpoint: pretrain(resume=)": Refused(
        lambda e, t: _pretrain(e.pairs, resume=_damaged(e, t, "model", "truncated")),
        CheckpointError,
        r"truncated\.safetensors is truncated",
    ),
    "model file as training state: pretrain(resume=)": Refused(
        lambda e, t: _pretrain(e.pairs, resume=e.model_file),
        CheckpointError,
        r"model\.safetensors is not a training checkpoint.*use model=DualEncoder\.load",
    ),
    # -- files that would run code ------------------------------------------------------------
    "pickle renamed .safetensors: DualEncoder.load": Refused(
        lambda e, t: _bomb(t, "model.safetensors", DualEncoder.load),
        CheckpointError,
        r"model\.safetensors is a pickle/zip file .*never unpickles checkpoints because "
        r"unpickling can run arbitrary code",
    ),
    "pickle renamed .pt: DualEncoder.load": Refused(
        lambda e, t: _bomb(t, "model.pt", DualEncoder.load),
        CheckpointError,
        r"model\.pt is a pickle/zip file.*re-save the model with DualEncoder\.save\(\)",
    ),
    "protocol-0 pickle: DualEncoder.load": Refused(
        lambda e, t: _bomb(t, "old.safetensors", DualEncoder.load, protocol=0),
        CheckpointError,
        r"old\.safetensors is truncated or not a safetensors file",
    ),
    "torch.save zip with a payload: DualEncoder.load": Refused(
        lambda e, t: _zip_bomb(t),
        CheckpointError,
        r"model\.pt is a pickle/zip file \(as written by torch\.save\)",
    ),
    "pickle: SegmentationModel.load": Refused(
        lambda e, t: _bomb(t, "seg.safetensors", SegmentationModel.load),
        CheckpointError,
        r"seg\.safetensors is a pickle/zip file.*never unpickles",
    ),
    "pickle: embed(model=path)": Refused(
        lambda e, t: _bomb(t, "m.safetensors", lambda p: ec.embed(e.s1, p, tile=TILE)),
        CheckpointError,
        r"m\.safetensors is a pickle/zip file.*never unpickles",
    ),
    "pickle: pretrain(resume=)": Refused(
        lambda e, t: _bomb(t, "step-00000001.safetensors", lambda p: _pretrain(e.pairs, resume=p)),
        CheckpointError,
        r"step-00000001\.safetensors is a pickle/zip file.*never unpickles",
    ),
    "YAML config with a python/object tag": Refused(
        lambda e, t: _yaml_config(t),
        ValueError,
        r"config file .*pretrain\.yaml could not be parsed: could not determine a constructor "
        r"for the tag 'tag:yaml\.org,2002:python/object/apply:os\.system'",
    ),
}


@pytest.mark.parametrize(
    "name",
    list(REFUSED),
)
def test_bad_input_is_refused_clearly(name: str, env: SimpleNamespace, tmp_path: Path) -> None:
    case = REFUSED[name]
    with pytest.raises(case.error, match=case.match):
        case.run(env, tmp_path)


# ------------------------------------------------------------------------------------------
# bad inputs with a defined result
# ------------------------------------------------------------------------------------------


def _holed(env: SimpleNamespace) -> xr.DataArray:
    """The S1 cube with an all-NaN chunk (32 x 32 at the top left) and an all-NaN tile."""
    values = env.s1.values.copy()
    values[:, :, :32, :32] = np.nan  # a whole chunk
    values[:, :, 48:64, 32:48] = np.nan  # one tile of another chunk
    return env.s1.copy(data=values).chunk({"time": 1, "y": 32, "x": 32})


def test_nan_only_tiles_and_chunks_embed_to_nan(env: SimpleNamespace) -> None:
    emb = ec.embed(_holed(env), env.model, tile=TILE, device="cpu").values  # (2, D, 4, 4)
    nan_tiles = np.zeros((4, 4), dtype=bool)
    nan_tiles[:2, :2] = True  # the NaN chunk
    nan_tiles[3, 2] = True  # the NaN tile
    assert np.isnan(emb[:, :, nan_tiles]).all()
    assert np.isfinite(emb[:, :, ~nan_tiles]).all()
    # and the other tiles are exactly what the intact cube gives
    full = ec.embed(env.s1, env.model, tile=TILE, device="cpu").values
    np.testing.assert_array_equal(emb[:, :, ~nan_tiles], full[:, :, ~nan_tiles])


def test_nan_only_chunks_segment_to_nodata(env: SimpleNamespace) -> None:
    holed = _holed(env)
    classes = ec.segment(holed, env.seg, device="cpu").values
    nodata = np.isnan(holed.values).all(axis=1)
    assert (classes[nodata] == -1).all()
    assert np.isin(classes[~nodata], [0, 1]).all()
    probs = ec.segment(holed, env.seg, probabilities=True, device="cpu").values
    assert np.isnan(probs.transpose(0, 2, 3, 1)[nodata]).all()
    np.testing.assert_allclose(probs.sum(axis=1)[~nodata], 1.0, rtol=1e-5)


def test_all_nan_cube_gives_nan_and_nodata_without_error(env: SimpleNamespace) -> None:
    empty = env.s1 * np.nan
    assert np.isnan(ec.embed(empty, env.model, tile=TILE, device="cpu").values).all()
    assert np.isnan(ec.embed(empty, env.model, level="pixel", tile=TILE, device="cpu")).all()
    assert (ec.segment(empty, env.seg, device="cpu").values == -1).all()
    with pytest.raises(ValueError, match=r"yielded no tile: all 32 tiles were dropped.*raise "):
        _pretrain(env.pairs * np.nan)  # nothing to learn from: said so, with the way out


ORDERED: dict[str, Callable[[SimpleNamespace, bool], Any]] = {
    "embed (tile)": lambda e, swap: (
        ec.embed(e.s1.isel(band=[1, 0]) if swap else e.s1, e.model, tile=TILE, device="cpu").values
    ),
    "embed (pixel)": lambda e, swap: (
        ec.embed(
            e.s1.isel(band=[1, 0]) if swap else e.s1,
            e.model,
            level="pixel",
            tile=TILE,
            device="cpu",
        ).values
    ),
    "segment": lambda e, swap: (
        ec.segment(
            e.s1.isel(band=[1, 0]) if swap else e.s1, e.seg, probabilities=True, device="cpu"
        ).values
    ),
    "pretrain": lambda e, swap: (
        _pretrain(
            e.pairs.isel(s2_band=slice(None, None, -1)) if swap else e.pairs,
            model=copy.deepcopy(e.model),
            log_every=1,
        )
        .history[["step", "loss", "temperature"]]
        .to_numpy()
    ),
}


@pytest.mark.parametrize("name", list(ORDERED))
def test_band_order_differing_from_the_model_is_reordered_by_name(
    name: str, env: SimpleNamespace
) -> None:
    run = ORDERED[name]
    np.testing.assert_array_equal(run(env, True), run(env, False))


def test_items_without_geometry_load_alike_with_both_engines(tmp_path: Path) -> None:
    """STAC allows ``geometry: null`` (with a bbox): both engines read the same pixels."""
    cogs = write_cogs(tmp_path / "cogs")
    for item in cogs.items:
        item["geometry"] = None
    odc = ec.load_stac(cogs.items, chunks=32).values
    stackstac = ec.load_stac(cogs.items, chunks=32, engine="stackstac").values
    assert odc.shape == (2, 2, N, N) and np.isfinite(odc).all()
    np.testing.assert_array_equal(stackstac, odc)


def test_write_failing_mid_way_is_left_incomplete_and_resumes(
    env: SimpleNamespace, tmp_path: Path
) -> None:
    """A corrupt COG stops embed -> to_zarr part-way: nothing looks complete, resume finishes."""
    cogs = write_cogs(tmp_path / "cogs")
    good = cogs.paths["S1A_20240313", "VH"].read_bytes()
    cogs.corrupt("S1A_20240313", "VH", "truncated")

    def embedding() -> xr.DataArray:
        cube = ec.load_stac(cogs.items, chunks=32)
        return ec.embed(cube, env.model_file, tile=TILE, device="cpu")

    store = tmp_path / "emb.zarr"
    with pytest.raises(AssetReadError, match=r"asset 'VH' of STAC item 'S1A_20240313'") as info:
        ec.to_zarr(embedding(), store)
    assert any("resume=True" in note for note in getattr(info.value, "__notes__", []))

    # every way of opening the store says it is incomplete
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"
    assert xr.open_zarr(store).attrs[STATUS_ATTR] == "incomplete"
    with pytest.raises(FileExistsError, match="resume=True to finish an interrupted write"):
        ec.to_zarr(embedding(), store)
    with pytest.raises(AssetReadError, match="S1A_20240313"):  # still broken: still incomplete
        ec.to_zarr(embedding(), store, resume=True)
    assert zarr.open_group(store, mode="r").attrs[STATUS_ATTR] == "incomplete"

    cogs.paths["S1A_20240313", "VH"].write_bytes(good)  # the file is repaired
    done = ec.to_zarr(embedding(), store, resume=True)
    clean = ec.to_zarr(embedding(), tmp_path / "clean.zarr")
    assert xr.open_zarr(store).attrs[STATUS_ATTR] == "complete"
    assert done.values.tobytes() == clean.values.tobytes()
    assert np.isfinite(done.values).all()


# ------------------------------------------------------------------------------------------
# the catalogue's size, as the reliability page quotes it
# ------------------------------------------------------------------------------------------

#: Bad inputs with a defined result instead of an error (see the tests above).
DEFINED = [
    "NaN-only tiles and chunks: embed",
    "NaN-only chunks: segment",
    "all-NaN cube: embed, segment, pretrain",
    *(f"band order differing from the model's: {n}" for n in ORDERED),
    "STAC items without a geometry: load_stac (stackstac)",
    "write failing mid-way: to_zarr",
]


def catalogue_size() -> int:
    """How many bad inputs the catalogue tries (refused ones plus those with a defined result)."""
    return len(REFUSED) + len(DEFINED)


def test_reliability_page_quotes_the_catalogue() -> None:
    page = (REPO / "docs" / "reliability.md").read_text()
    n = catalogue_size()
    assert f"{n} bad inputs" in page, f"docs/reliability.md should quote '{n} bad inputs'"
