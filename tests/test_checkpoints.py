"""Checkpoint reading: both file formats, strict matching with a useful message, unsafe files refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ingest.checkpoints import CheckpointError, file_sha256, load_checkpoint, read_state_dict
from ingest.models.edm import EDMConfig, EDMPrecond

SMALL = EDMConfig(img_resolution=8, label_dim=10, model_channels=16, channel_mult=(1, 2), num_blocks=1,
                  attn_resolutions=(4,))


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = EDMPrecond(SMALL)
    for p in model.parameters():
        torch.nn.init.normal_(p)  # non-zero everywhere, so a load is visible
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_loaded(model: EDMPrecond, state: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_loads_dmd2_bin_with_module_prefix(tmp_path: Path, small_state):
    path = tmp_path / "pytorch_model.bin"
    torch.save({f"module.{k}": v for k, v in small_state.items()}, path)
    model = load_checkpoint(EDMPrecond(SMALL), path)
    assert_loaded(model, small_state)


def test_loads_safetensors(tmp_path: Path, small_state):
    path = tmp_path / "model.safetensors"
    save_file(small_state, str(path))
    assert_loaded(load_checkpoint(EDMPrecond(SMALL), path), small_state)


def test_loads_onto_meta_without_copy(tmp_path: Path, small_state):
    path = tmp_path / "model.pt"
    torch.save(small_state, path)
    with torch.device("meta"):
        model = EDMPrecond(SMALL)
    load_checkpoint(model, path)
    assert not any(p.is_meta for p in model.parameters())
    assert_loaded(model, small_state)


def test_reference_checkpoint_loads_strictly(tmp_path: Path, tiny_edm_dir: Path, tiny_edm_config):
    path = tiny_edm_dir / "pytorch_model.bin"
    on_disk = {k.removeprefix("module."): v for k, v in torch.load(path, weights_only=True, map_location="cpu").items()}
    assert all(k.startswith("model.") for k in on_disk)
    assert read_state_dict(path).keys() == on_disk.keys()
    torch.manual_seed(0)
    model = load_checkpoint(EDMPrecond(tiny_edm_config), path)
    assert model.state_dict().keys() == on_disk.keys()
    assert_loaded(model, on_disk)  # every tensor is the file's, not the random initialisation
    some_key = sorted(on_disk)[0]
    for name, state, count in [("missing", {k: v for k, v in on_disk.items() if k != some_key}, "1 missing, 0 unexpected"),
                               ("extra", {**on_disk, "model.extra.weight": torch.zeros(2)}, "0 missing, 1 unexpected")]:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(CheckpointError, match=count):
            load_checkpoint(EDMPrecond(tiny_edm_config), tmp_path / f"{name}.safetensors")


def test_mismatch_names_counts_and_first_keys(tmp_path: Path, small_state):
    state = dict(small_state)
    del state["model.map_layer0.weight"]
    state["model.extra.weight"] = torch.zeros(3)
    state["model.out_conv.bias"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(EDMPrecond(SMALL), path)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing, 1 unexpected, 1 wrong-shape" in message
    assert "model.map_layer0.weight" in message and "model.extra.weight" in message
    assert "model.out_conv.bias [7] vs [3]" in message


def test_imagenet_checkpoint_given_to_other_architecture(tiny_edm_dir: Path):
    with pytest.raises(CheckpointError, match="wrong-shape"):
        load_checkpoint(EDMPrecond(SMALL), tiny_edm_dir / "pytorch_model.bin")


def test_truncated_files_are_refused(tmp_path: Path, small_state):
    for name, save in [("t.bin", lambda p: torch.save(small_state, p)), ("t.safetensors", lambda p: save_file(small_state, str(p)))]:
        path = tmp_path / name
        save(path)
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        with pytest.raises(CheckpointError, match="truncated"):
            read_state_dict(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.bin"
    torch.save({"model.x": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="would import posix.system, which could run code"):
        read_state_dict(path)
    assert not (tmp_path / "EXPLOITED").exists()
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(raw)
    assert not (tmp_path / "EXPLOITED").exists()


def test_non_weights_files_are_refused(tmp_path: Path):
    text = tmp_path / "notes.bin"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a plain tensor checkpoint"):
        read_state_dict(text)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="unknown checkpoint type .json"):
        read_state_dict(config)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_state_dict(tmp_path / "missing.bin")
    not_tensors = tmp_path / "dict.pt"
    torch.save({"step": 3}, not_tensors)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(not_tensors)


def test_sha256_matches_hashlib(tmp_path: Path):
    import hashlib

    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(100_000))
    assert file_sha256(path, chunk_bytes=4096) == hashlib.sha256(path.read_bytes()).hexdigest()
