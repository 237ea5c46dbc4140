"""ingest.hub: hub files and base pipelines resolved offline from a hub cache laid out on disk as
huggingface_hub lays it out (`ingest.models.random_pipelines.hub_cache`), and one clear error line when a
file is not there.

huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE once, into `huggingface_hub.constants`, when it is
first imported, and `hf_hub_download` / `snapshot_download` take `constants.HF_HUB_CACHE` at each call
when no cache_dir is passed (ingest.hub passes none): so the tests set both the environment and the
constants. Offline is forced too, so a missing file can never turn into a download."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ingest.hub import HubError, HubFile, base_folder, cached_base_folder, hub_file
from ingest.models.random_pipelines import hub_cache
from ingest.models.text_to_image import SD15

REPO_ID = "someone/dmd2-like"
COMMIT = "1234567890abcdef1234567890abcdef12345678"


@pytest.fixture()
def cache(offline_hub) -> Path:
    return offline_hub


@pytest.fixture()
def weights(tmp_path) -> Path:
    path = tmp_path / "source" / "unet.bin"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 37 + b"\x00end")
    return path


def test_hub_file_returns_the_cached_file(cache, weights):
    snapshot = hub_cache(cache, REPO_ID, {"weights/unet.bin": weights, "config.json": weights}, commit=COMMIT)
    for offline_only in (False, True):
        path = hub_file(HubFile(REPO_ID, "weights/unet.bin"), offline_only=offline_only)
        assert path == snapshot / "weights" / "unet.bin"
        assert path.is_relative_to(cache / "models--someone--dmd2-like" / "snapshots" / COMMIT)
        assert path.read_bytes() == weights.read_bytes()


def test_missing_file_is_one_clear_line(cache, weights):
    hub_cache(cache, REPO_ID, {"weights/unet.bin": weights})
    for file in (HubFile(REPO_ID, "weights/other.bin"), HubFile("nobody/absent", "model.safetensors")):
        for offline_only in (False, True):
            with pytest.raises(HubError) as caught:
                hub_file(file, offline_only=offline_only)
            message = str(caught.value)
            assert "\n" not in message
            assert f"hf://{file.repo}/{file.filename}" in message
            assert "not in the hub cache" in message
            assert "python -m ingest download" in message and "local file" in message
            assert caught.value.__suppress_context__  # no huggingface_hub traceback chained to it


def test_hub_error_is_a_value_error():
    # ingest.cli prints a ValueError as its one-line message instead of a traceback
    assert issubclass(HubError, ValueError)


def base_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for relative, text in {"model_index.json": "{}", "unet/config.json": '{"sample_size": 8}',
                           "scheduler/scheduler_config.json": "{}", "vae/config.json": "{}"}.items():
        source = tmp_path / "base-source" / relative
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(text)
        files[relative] = source
    return files


def test_base_folder_and_cached_base_folder(cache, tmp_path):
    family = dataclasses.replace(SD15, base_repo="someone/base-pipeline")
    assert cached_base_folder(family) is None  # empty cache
    with pytest.raises(HubError) as caught:
        base_folder(family, offline_only=True)
    message = str(caught.value)
    assert "\n" not in message and "someone/base-pipeline" in message and "--base FOLDER" in message

    snapshot = hub_cache(cache, family.base_repo, base_files(tmp_path), commit=COMMIT)
    assert cached_base_folder(family) == snapshot
    folder = base_folder(family, offline_only=True)
    assert folder == snapshot
    assert (folder / "unet" / "config.json").read_text() == '{"sample_size": 8}'
