"""Safetensors checkpoints: round trip, atomic writes, and every refusal."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eo_contrast.models import CheckpointError, DualEncoder, read_metadata
from eo_contrast.models.checkpoint import METADATA_KEY, read_checkpoint, write_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained() -> DualEncoder:
    """A model whose weights, BatchNorm statistics and temperature moved away from init."""
    model = DualEncoder(
        {"s1": ["vv", "vh"], "s2": ["B02", "B03", "B04", "B08"]},
        seed=0,
        trained_on="two random batches",
        info={"epochs": 1, "tile": 16},
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        s1, s2 = torch.randn(4, 2, 16, 16, generator=g), torch.randn(4, 4, 16, 16, generator=g)
        loss = model.contrastive_loss(*model(s1, s2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def small() -> DualEncoder:
    """The smallest model (one sensor, two bands), for the refusal tests."""
    return DualEncoder({"s1": ["vv", "vh"]}, seed=0).eval()


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    trained.save(path)
    return path


def _tiny(tmp_path, name, tensors, meta):
    path = tmp_path / name
    save_file(tensors, str(path), metadata=meta)
    return path


def test_round_trip_gives_identical_outputs(trained, saved):
    loaded = DualEncoder.load(saved)
    assert not loaded.training
    assert loaded.metadata == trained.metadata
    assert loaded.bands == trained.bands and loaded.units == trained.units
    assert loaded.normalization == trained.normalization
    assert loaded.trained_on == "two random batches" and loaded.info == {"epochs": 1, "tile": 16}
    assert torch.equal(loaded.logit_scale, trained.logit_scale)
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randn(2, 2, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    with torch.no_grad():
        for a, b in zip(trained(s1, s2), loaded(s1, s2), strict=True):
            assert torch.equal(a, b)
        for fa, fb in zip(trained.features("s2", s2), loaded.features("s2", s2), strict=True):
            assert torch.equal(fa, fb)
    sa, sb = trained.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the loaded model trains like any other, and its tensors do not write back to the file
    before = saved.read_bytes()
    loaded.train()
    assert all(p.requires_grad for p in loaded.parameters())
    opt = torch.optim.SGD(loaded.parameters(), lr=0.1)
    loss = loaded.contrastive_loss(*loaded(s1, s2))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(loaded.logit_scale, trained.logit_scale)
    assert saved.read_bytes() == before


def test_file_is_plain_safetensors_with_json_metadata(trained, saved):
    raw = saved.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"][METADATA_KEY])
    assert meta["bands"] == {"s1": ["vv", "vh"], "s2": ["B02", "B03", "B04", "B08"]}
    assert meta["units"] == {"s1": "dB", "s2": "1"}
    assert meta["architecture"]["name"] == "resnet18"
    assert meta["method"] == "multimodal"
    assert "logit_scale" in header
    assert read_metadata(saved) == meta
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")


def test_single_sensor_model_round_trips(tmp_path):
    model = DualEncoder({"s2": ["B04", "B03", "B02"]}, stem="small", seed=3).eval()
    path = model.save(tmp_path / "sub" / "simclr.safetensors")
    loaded = DualEncoder.load(path)
    assert loaded.method == "simclr" and loaded.sensors == ("s2",) and loaded.stem == "small"
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.embed("s2", x), loaded.embed("s2", x))


def test_save_is_atomic_and_overwrites(trained, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    trained.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left over
    assert DualEncoder.load(path).bands == trained.bands
    # a failed write leaves the previous file in place and no temporary
    bad = DualEncoder({"s1": ["vv", "vh"]}, seed=0, info={"x": float("nan")})
    with pytest.raises(ValueError, match=r"not strict JSON"):
        bad.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert DualEncoder.load(path).bands == trained.bands


def test_load_never_unpickles(trained, tmp_path, monkeypatch):
    zipped = tmp_path / "model.pt"
    torch.save(trained.state_dict(), zipped)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", forbidden)
    for path in (zipped, legacy, plain):
        with pytest.raises(
            CheckpointError, match=rf"{path.name} is a pickle/zip file.*never unpickles"
        ):
            DualEncoder.load(path)


def test_missing_folder_garbage_empty_and_truncated_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file at .*nope.safetensors"):
        DualEncoder.load(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match=r"is a folder"):
        DualEncoder.load(tmp_path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"empty.safetensors is truncated or not a safetensors file \(0 bytes"
    ):
        DualEncoder.load(empty)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        CheckpointError, match=r"garbage.safetensors is truncated or not a safetensors"
    ):
        DualEncoder.load(garbage)
    raw = saved.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[: len(raw) // 2])  # interrupted copy: header intact, data missing
    with pytest.raises(
        CheckpointError, match=r"cut.safetensors is truncated: its header needs \d+ bytes"
    ):
        DualEncoder.load(cut)
    head_cut = tmp_path / "headcut.safetensors"
    head_cut.write_bytes(raw[:100])  # cut inside the header
    with pytest.raises(
        CheckpointError, match=r"headcut.safetensors is truncated or not a safetensors"
    ):
        DualEncoder.load(head_cut)
    (n,) = struct.unpack("<Q", raw[:8])
    bad_json = tmp_path / "badjson.safetensors"
    bad_json.write_bytes(raw[:8] + b"{" + b"x" * (n - 1) + raw[8 + n :])
    with pytest.raises(
        CheckpointError, match=r"badjson.safetensors is corrupt.*header is not JSON"
    ):
        DualEncoder.load(bad_json)


def test_metadata_refusals(small, tmp_path):
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    no_meta = _tiny(tmp_path, "nometa.safetensors", state, None)
    with pytest.raises(
        CheckpointError,
        match=r"nometa.safetensors is a safetensors file without eo-contrast metadata",
    ):
        DualEncoder.load(no_meta)
    not_json = _tiny(tmp_path, "notjson.safetensors", state, {METADATA_KEY: "{bands: s1"})
    with pytest.raises(
        CheckpointError, match=r"notjson.safetensors: the eo-contrast metadata is not valid JSON"
    ):
        DualEncoder.load(not_json)

    def with_meta(name, **changes):
        meta = {**small.metadata, **changes}
        for key, value in list(changes.items()):
            if value is None:
                del meta[key]
        return _tiny(tmp_path, name, state, {METADATA_KEY: json.dumps(meta)})

    with pytest.raises(
        CheckpointError, match=r"nobands.safetensors: .*lacks required key\(s\) \['bands'\]"
    ):
        DualEncoder.load(with_meta("nobands.safetensors", bands=None))
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format_version 99"):
        DualEncoder.load(with_meta("future.safetensors", format_version=99))
    with pytest.raises(CheckpointError, match=r"format is 'something-else'"):
        DualEncoder.load(with_meta("other.safetensors", format="something-else"))
    arch = {**small.metadata["architecture"], "name": "resnet1000"}
    with pytest.raises(
        CheckpointError, match=r"arch.safetensors: .*unknown encoder architecture 'resnet1000'"
    ):
        DualEncoder.load(with_meta("arch.safetensors", architecture=arch))
    with pytest.raises(CheckpointError, match=r"norm.safetensors: .*needs 2 mean and std values"):
        DualEncoder.load(
            with_meta(
                "norm.safetensors",
                normalization={
                    "s1": {"mean": [0.1], "std": [0.1]},
                },
            )
        )


def test_tensor_mismatch_refusals(small, tmp_path):
    meta = {METADATA_KEY: json.dumps(small.metadata)}
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    missing = dict(state)
    del missing["projectors.s1.net.2.weight"]
    path = _tiny(tmp_path, "missing.safetensors", missing, meta)
    with pytest.raises(
        CheckpointError,
        match=r"missing.safetensors does not match.*missing tensors \['projectors.s1.net.2.weight'\]",
    ):
        DualEncoder.load(path)
    extra = {**state, "decoder.weight": torch.zeros(3)}
    path = _tiny(tmp_path, "extra.safetensors", extra, meta)
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['decoder.weight'\]"):
        DualEncoder.load(path)
    shaped = {**state, "encoders.s1.stem.0.weight": torch.zeros(64, 3, 7, 7)}
    path = _tiny(tmp_path, "shape.safetensors", shaped, meta)
    with pytest.raises(
        CheckpointError,
        match=r"mismatched tensors \['encoders.s1.stem.0.weight \(file \(64, 3, 7, 7\), model \(64, 2, 7, 7\)\)'\]",
    ):
        DualEncoder.load(path)
    typed = {**state, "logit_scale": torch.tensor(3)}
    path = _tiny(tmp_path, "dtype.safetensors", typed, meta)
    with pytest.raises(CheckpointError, match=r"logit_scale \(file dtype torch.int64"):
        DualEncoder.load(path)


def test_generic_checkpoint_helpers(tmp_path):
    path = write_checkpoint(
        tmp_path / "a" / "b.safetensors", {"w": torch.arange(3.0)}, {"k": [1, "x"]}
    )
    tensors, meta = read_checkpoint(path)
    assert tensors["w"].tolist() == [0.0, 1.0, 2.0] and meta == {"k": [1, "x"]}
    with pytest.raises(ValueError, match=r"not strict JSON"):
        write_checkpoint(tmp_path / "c.safetensors", {}, {"bad": object()})
