"""The EDM generator reproduces the original implementation exactly and has DMD2's checkpoint layout."""

from __future__ import annotations

import json

import pytest
import torch

from ingest.models.edm import IMAGENET64, EDMConfig, EDMPrecond, noise_embedding, one_hot
from tests.conftest import require_fixture

TOLERANCE = 1e-4


def run_with_block_outputs(model: EDMPrecond, io: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    outputs: dict[str, torch.Tensor] = {}
    blocks = {f"model.enc.{k}": m for k, m in model.model.enc.items()}
    blocks.update({f"model.dec.{k}": m for k, m in model.model.dec.items()})
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out)) for n, m in blocks.items()]
    try:
        with torch.no_grad():
            d_x = model(io["input/x"], io["input/sigma"], io["input/class_labels"])
    finally:
        for handle in handles:
            handle.remove()
    return d_x, outputs


def test_output_matches_reference(tiny_edm, tiny_edm_io):
    d_x, _ = run_with_block_outputs(tiny_edm, tiny_edm_io)
    assert d_x.dtype == torch.float32
    assert (d_x - tiny_edm_io["output/D_x"]).abs().max().item() <= TOLERANCE


def test_every_block_output_matches_reference(tiny_edm, tiny_edm_io):
    _, outputs = run_with_block_outputs(tiny_edm, tiny_edm_io)
    reference = {k[len("act/"):]: v for k, v in tiny_edm_io.items() if k.startswith("act/")}
    assert reference, "the fixture holds no act/ tensors"
    assert set(reference) == set(outputs)
    for name, expected in reference.items():
        error = (outputs[name] - expected).abs().max().item()
        assert error <= TOLERANCE, f"{name}: max abs error {error}"


def test_reference_inputs_span_the_noise_range(tiny_edm_io):
    # The comparison is only meaningful if it covers high and low noise and several classes.
    sigma = tiny_edm_io["input/sigma"]
    assert sigma.max() >= 80 and sigma.min() <= 0.05
    assert tiny_edm_io["input/class_labels"].argmax(1).unique().numel() >= 3


def test_full_imagenet_config_has_dmd2_checkpoint_keys_and_shapes():
    reference = json.loads(require_fixture("dmd2_imagenet64_state_dict_shapes.json").read_text())
    assert EDMConfig.from_dict(reference["config"]) == IMAGENET64
    with torch.device("meta"):
        model = EDMPrecond(IMAGENET64)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == reference["num_tensors"] == 553
    assert shapes == reference["state_dict_shapes"]
    assert list(shapes) == list(reference["state_dict_shapes"])  # same registration order
    assert sum(p.numel() for p in model.parameters()) == 295_899_267


def test_resample_filters_are_quarter_buffers():
    model = EDMPrecond(EDMConfig(img_resolution=16, label_dim=10, model_channels=32, channel_mult=(1, 2, 4),
                                 num_blocks=1, attn_resolutions=(8, 4)))
    filters = {k: v for k, v in model.state_dict().items() if k.endswith("resample_filter")}
    assert len(filters) == 8  # 2 down blocks and 2 up blocks, each with conv0 and skip
    for tensor in filters.values():
        assert tensor.shape == (1, 1, 2, 2) and torch.all(tensor == 0.25)


def test_resampling_is_average_pool_and_nearest_upsample():
    from ingest.models.edm import Conv2d

    x = torch.randn(2, 3, 8, 8)
    down = Conv2d(3, 3, kernel=0, down=True)
    up = Conv2d(3, 3, kernel=0, up=True)
    assert torch.allclose(down(x), torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    assert torch.allclose(up(x), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-6)


def test_noise_embedding_puts_cosines_first():
    emb = noise_embedding(torch.tensor([0.0, 1.0]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.tensor([1.0, 0.1, 0.01, 0.001])
    assert torch.allclose(emb[1], torch.cat([freqs.cos(), freqs.sin()]), atol=1e-6)


def test_labels_none_means_zero_vector(tiny_edm, tiny_edm_io):
    x, sigma = tiny_edm_io["input/x"][:2], tiny_edm_io["input/sigma"][:2]
    with torch.no_grad():
        unconditional = tiny_edm(x, sigma, None)
        zeros = tiny_edm(x, sigma, torch.zeros(2, 10))
        conditional = tiny_edm(x, sigma, one_hot([1, 2], 10))
    assert torch.equal(unconditional, zeros)
    assert not torch.allclose(unconditional, conditional)


def test_fresh_model_starts_as_skip_connection():
    # EDM zero-initialises residual outputs, so an untrained denoiser returns c_skip * x exactly.
    torch.manual_seed(0)
    model = EDMPrecond(EDMConfig(img_resolution=8, label_dim=10, model_channels=16, channel_mult=(1, 2),
                                 num_blocks=1, attn_resolutions=(4,)))
    x = torch.randn(3, 3, 8, 8)
    sigma = torch.tensor([0.5, 2.0, 80.0])
    with torch.no_grad():
        out = model(x, sigma, one_hot([0, 1, 2], 10))
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert torch.allclose(out, c_skip.reshape(-1, 1, 1, 1) * x)


def test_config_rejects_augmentation():
    with pytest.raises(ValueError, match="augment_dim"):
        EDMConfig.from_dict({"augment_dim": 9})
