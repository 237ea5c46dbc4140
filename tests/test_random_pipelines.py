"""ingest.models.random_pipelines: the byte-level symbols of the tiny tokenizers, and tiny random base
pipelines that diffusers loads, reproducible by seed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ingest.models.random_pipelines import TINY_TEXT_WIDTH, byte_symbols, clip_tokenizer, hub_cache, save_base

COMPONENTS = ("unet", "vae", "text_encoder")


def test_byte_symbols_are_256_distinct_printable_characters():
    symbols = byte_symbols()
    assert len(symbols) == 256 and len(set(symbols)) == 256
    assert all(len(s) == 1 and s.isprintable() and not s.isspace() for s in symbols)
    # printable ASCII stands for itself; no control character or space is a symbol
    assert set("abcXYZ019!~") <= set(symbols)
    assert not {chr(b) for b in range(0, 33)} & set(symbols)


def test_byte_symbols_are_gpt2_byte_to_unicode():
    """Byte b's symbol is the b-th in GPT-2 / CLIP order (transformers' reference table)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    reference = bytes_to_unicode()
    assert sorted(reference) == list(range(256))
    assert byte_symbols() == list(reference.values())


def test_clip_tokenizer_covers_every_byte(tmp_path):
    tokenizer = clip_tokenizer(tmp_path / "tok")
    vocab = json.loads((tmp_path / "tok" / "vocab.json").read_text())
    assert len(tokenizer) == len(vocab) == 2 + 2 * 256
    text = "a cat; ünïcode"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 1  # <|startoftext|> ... <|endoftext|>
    # no merges: one token per UTF-8 byte of each word (spaces split words), none unknown
    assert len(ids) - 2 == len(text.replace(" ", "").encode())
    assert not {0, 1} & set(ids[1:-1])
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a cat ; ünïcode"


def weights(folder) -> dict[str, dict[str, torch.Tensor]]:
    return {c: load_file(next((folder / c).glob("*.safetensors"))) for c in COMPONENTS}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("random-pipelines")
    return {name: save_base(root / name, sdxl=False, seed=seed) for name, seed in
            (("a", 3), ("again", 3), ("other", 4))}


def test_saved_base_loads_with_diffusers(bases):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    folder = bases["a"]
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    assert unet.config.cross_attention_dim == TINY_TEXT_WIDTH and unet.config.in_channels == 4
    assert sum(p.numel() for p in unet.parameters()) < 1_000_000  # tiny
    stored = weights(folder)["unet"]
    assert set(stored) == set(unet.state_dict())
    assert all(torch.equal(stored[k], v) for k, v in unet.state_dict().items())
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=torch.randn(1, 77, TINY_TEXT_WIDTH)).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    assert pipe.text_encoder.config.hidden_size == TINY_TEXT_WIDTH
    assert len(pipe.tokenizer) == 2 + 2 * 256


def test_same_seed_same_weights_other_seed_different(bases):
    a, again, other = (weights(bases[name]) for name in ("a", "again", "other"))
    for component in COMPONENTS:
        assert a[component].keys() == again[component].keys() == other[component].keys()
        assert all(torch.equal(a[component][k], again[component][k]) for k in a[component]), component
    # randomly initialised tensors (not the constant ones: norms, biases) differ with the seed
    assert any(not torch.equal(a["unet"][k], other["unet"][k]) for k in a["unet"])
    assert any(not torch.equal(a["text_encoder"][k], other["text_encoder"][k]) for k in a["text_encoder"])
    assert (bases["a"] / "unet" / "config.json").read_text() == (bases["other"] / "unet" / "config.json").read_text()


def test_hub_cache_layout(tmp_path):
    source = tmp_path / "w.bin"
    source.write_bytes(b"weights")
    snapshot = hub_cache(tmp_path / "cache", "owner/name", {"sub/w.bin": source}, commit="ab" * 20)
    root = tmp_path / "cache" / "models--owner--name"
    assert snapshot == root / "snapshots" / ("ab" * 20)
    assert (snapshot / "sub" / "w.bin").read_bytes() == b"weights"
    assert (root / "refs" / "main").read_text() == "ab" * 20
