"""ingest.extractors: the shipped digits network and tiny random CLIP / DINOv2 models (built in code, laid out as
the hub's cache holds them, read offline) as extractors: dims, determinism, preprocessing as transformers' own
processors do it, and one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ingest.digits import load_digits_dataset
from ingest.extractors import (PRESETS, ExtractorError, ImageTransform, digits_transform, resolve_device,
                               resolve_extractor)
from ingest.hub import HubError
from ingest.samplers import to_uint8
from ingest.writer import encode_png


def digit_pngs(images: np.ndarray) -> list[bytes]:
    """[-1, 1] digits (n, 1, 8, 8) as the generators store them: uint8 as DMD2 rounds, then PNG."""
    return [encode_png(p) for p in to_uint8(torch.from_numpy(images)).numpy()]


def pictures(n: int = 5, seed: int = 0) -> list[bytes]:
    """Random RGB PNGs of assorted sizes."""
    rng = np.random.default_rng(seed)
    shapes = [(32, 32), (48, 40), (20, 64), (8, 8), (33, 31)]
    return [encode_png(rng.integers(0, 256, (*shapes[i % len(shapes)], 3), dtype=np.uint8)) for i in range(n)]


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "; " in message
    return message


# --- digits -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return resolve_extractor("digits")


def test_digits_preset(digits):
    assert (digits.name, digits.layer, digits.dim) == ("digits", "features.digits", 64)
    assert digits.source.endswith("digits-features.safetensors")
    assert digits.identity() == {"extractor": "digits", "source": digits.source, "dim": 64}


def test_digits_preprocessing_inverts_the_generators_uint8(digits):
    images, _ = load_digits_dataset()
    pngs = digit_pngs(images[:20])
    batch = digits.preprocess(pngs)
    assert batch.shape == (20, 1, 8, 8) and batch.dtype == torch.float32
    assert np.abs(batch.numpy() - images[:20]).max() <= 1 / 127.5 + 1e-6  # one uint8 step
    same = digits.preprocess([Image.open(io.BytesIO(p)) for p in pngs])
    assert torch.equal(batch, same)  # PNG bytes or PIL images alike
    rgb = Image.fromarray(np.repeat(to_uint8(torch.from_numpy(images[:1])).numpy()[0], 3, axis=2))
    assert torch.equal(digits_transform(rgb), batch[0])  # RGB digits are read as grey


def test_digits_features_are_deterministic(digits):
    images, _ = load_digits_dataset()
    batch = digits.preprocess(digit_pngs(images[:64]))
    first = digits(batch)
    assert first.shape == (64, 64) and first.dtype == np.float32
    assert np.array_equal(first, digits(batch))
    assert np.array_equal(first, resolve_extractor("digits")(batch))  # another load of the same file
    assert np.allclose(digits(batch[:7]), first[:7], atol=1e-6)  # batch composition aside


def test_real_digits_of_a_class_are_closer_than_across_classes(digits):
    images, labels = load_digits_dataset()
    unit = digits(torch.from_numpy(images))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    distance = 1 - unit @ unit.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    across = labels[:, None] != labels[None, :]
    within, between = distance[same].mean(), distance[across].mean()
    assert within < 0.5 * between, (within, between)
    np.fill_diagonal(distance, np.inf)
    assert (labels[distance.argmin(1)] == labels).mean() > 0.97  # nearest other digit: same class


# --- CLIP and DINOv2 from a hub-shaped cache, offline ----------------------------------------------------


@pytest.mark.parametrize("family", ["clip", "dinov2"])
def test_tiny_encoders_load_offline_by_repo_id(encoder_hub, family):
    repo = f"tiny-org/{family}"
    extractor = resolve_extractor(repo)
    assert (extractor.name, extractor.layer) == (family, f"features.{family}")
    assert extractor.dim == encoder_hub["dims"][family]
    assert extractor.source == f"hf://{repo}@{encoder_hub['snapshots'][repo].name}"
    batch = extractor.preprocess(pictures())
    assert batch.shape == (5, 3, 32, 32)
    features = extractor(batch)
    assert features.shape == (5, extractor.dim) and features.dtype == np.float32 and np.isfinite(features).all()
    assert np.array_equal(features, extractor(batch))
    assert np.array_equal(features, resolve_extractor(repo, name="again")(batch))  # a second load, same bits


@pytest.mark.parametrize("family", ["clip", "dinov2"])
def test_presets_resolve_through_the_cache(encoder_hub, family):
    extractor = resolve_extractor(family)
    repo = PRESETS[family].repo
    assert extractor.name == family and extractor.source.startswith(f"hf://{repo}@")
    assert extractor.dim == encoder_hub["dims"][family]


@pytest.mark.parametrize("family", ["clip", "dinov2"])
def test_features_are_the_models_own_output_of_its_processors_input(tiny_encoders, family):
    """Our preprocessing equals transformers' (PIL) processor's, and the vector is image_embeds (CLIP) or
    pooler_output (DINOv2) of the model as transformers loads it."""
    from transformers import CLIPVisionModelWithProjection, Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tiny_encoders[family]
    extractor = resolve_extractor(str(folder))
    assert extractor.source == str(folder.resolve()) and extractor.name == family
    images = [Image.open(io.BytesIO(p)) for p in pictures()]
    processor = (CLIPImageProcessorPil if family == "clip" else BitImageProcessorPil).from_pretrained(folder)
    expected_input = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = extractor.preprocess(images)
    assert torch.allclose(ours, expected_input, atol=1e-6), (ours - expected_input).abs().max()
    model = (CLIPVisionModelWithProjection if family == "clip" else Dinov2Model).from_pretrained(folder).eval()
    with torch.inference_mode():
        out = model(pixel_values=ours)
    expected = out.image_embeds if family == "clip" else out.pooler_output
    assert np.array_equal(extractor(ours), expected.numpy())


def test_preprocessing_follows_the_processor_config(tiny_encoders):
    dinov2 = resolve_extractor(str(tiny_encoders["dinov2"]))
    transform = dinov2.transform
    assert isinstance(transform, ImageTransform)
    assert transform.size == {"shortest_edge": 36} and transform.crop == {"height": 32, "width": 32}
    assert transform.resized(72, 48) == (54, 36)
    white = transform(Image.new("RGB", (64, 48), "white"))
    expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert white.shape == (3, 32, 32)
    assert np.allclose(white.numpy().reshape(3, -1).mean(1), expected, atol=1e-5)


def test_a_name_gives_another_layer(tiny_encoders):
    extractor = resolve_extractor(str(tiny_encoders["clip"]), name="clip-tiny")
    assert extractor.layer == "features.clip-tiny"
    with pytest.raises(ExtractorError) as err:
        resolve_extractor("digits", name="../escape")
    assert "invalid feature name" in one_line(err)


# --- errors: one line each ------------------------------------------------------------------------------


def test_a_preset_missing_from_the_cache_is_one_line(encoder_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    empty = tmp_path / "empty-hub"
    empty.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty))
    for spec in ("clip", "someone/absent"):
        hint = f"python -m ingest download {spec}"
        with pytest.raises(HubError) as err:
            resolve_extractor(spec)
        message = one_line(err)
        assert "not in the hub cache" in message and hint in message and err.value.__suppress_context__


@pytest.mark.parametrize("spec", ["clipp", "", "no/such/folder", "digits.safetensors"])
def test_unknown_extractor_is_one_line(spec):
    with pytest.raises(ExtractorError) as err:
        resolve_extractor(spec)
    message = one_line(err)
    assert message.startswith(f"unknown extractor {spec!r}") and "digits, clip, dinov2" in message


def test_folders_that_are_not_encoders_are_refused(tmp_path, tiny_encoders):
    (tmp_path / "empty").mkdir()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_encoders["dinov2"] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    mixed = tmp_path / "mixed"  # DINOv2's config, CLIP's weights
    mixed.mkdir()
    (mixed / "config.json").write_text((tiny_encoders["dinov2"] / "config.json").read_text())
    (mixed / "model.safetensors").write_bytes((tiny_encoders["clip"] / "model.safetensors").read_bytes())
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((tiny_encoders["dinov2"] / "config.json").read_text())
    (damaged / "model.safetensors").write_bytes(b"garbage")
    for folder, expected in ((tmp_path / "empty", "no config.json"), (bert, "'bert' model"),
                             (pickled, "no .safetensors weights"), (mixed, "is it a dinov2 checkpoint"),
                             (damaged, "cannot load a dinov2 model")):
        with pytest.raises(ExtractorError) as err:
            resolve_extractor(str(folder))
        assert expected in one_line(err)


def test_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ExtractorError) as err:
        resolve_device("cuda")
    assert "--device cpu" in one_line(err)
    with pytest.raises(ExtractorError) as err:
        resolve_device("quantum")
    assert "unknown --device" in one_line(err)


@pytest.mark.parametrize("spec", ["clip", "tiny-org/dinov2"])
def test_download_puts_an_encoder_in_the_cache(encoder_hub, spec, capsys):
    from ingest.cli import main

    repo = PRESETS[spec].repo if spec in PRESETS else spec
    assert main(["download", spec]) == 0
    out = capsys.readouterr().out
    assert f"hf://{repo}" in out and str(encoder_hub["snapshots"][repo]) in out
