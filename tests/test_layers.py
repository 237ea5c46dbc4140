"""Layer discovery on the meta device (on the CPU for small models), and layer selection."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ingest.layers
from ingest.layers import LayerInfo, UnknownLayerError, discover_layers, select_layers
from ingest.models.presets import UnknownModelError, get_spec
from tests.conftest import REPO


@pytest.fixture(scope="module")
def imagenet_layers() -> list[LayerInfo]:
    return list(discover_layers(get_spec("imagenet")))


def test_imagenet_has_37_blocks_with_real_shapes(imagenet_layers):
    shapes = {info.name: info.shape for info in imagenet_layers}
    assert len(shapes) == 37
    assert imagenet_layers[0].name == "enc.64x64_conv" and imagenet_layers[-1].name == "dec.64x64_block3"
    assert shapes["enc.8x8_block2"] == (768, 8, 8)
    assert shapes["dec.8x8_in0"] == shapes["dec.8x8_in1"] == (768, 8, 8)
    assert shapes["enc.32x32_down"] == (192, 32, 32)
    assert shapes["dec.16x16_up"] == (768, 16, 16)
    assert shapes["dec.64x64_block3"] == (192, 64, 64)
    # The facts sheet: all blocks ~26 MB per image in fp16, mean-pooled ~36 KB.
    assert round(sum(i.numel for i in imagenet_layers) * 2 / 1e6) == 26
    assert round(sum(i.channels for i in imagenet_layers) * 2 / 1e3) == 36


def test_custom_config_matches_reference_block_shapes(tiny_edm_dir, tiny_edm_io):
    layers = discover_layers(get_spec(str(tiny_edm_dir / "config.json")))
    expected = {k[len("act/model."):]: tuple(v.shape[1:]) for k, v in tiny_edm_io.items() if k.startswith("act/")}
    assert {i.name: i.shape for i in layers} == expected


def test_small_models_dry_run_on_the_cpu_with_the_meta_shapes(monkeypatch):
    spec = get_spec("digits-dmd2")
    on_cpu = discover_layers.__wrapped__(spec)
    monkeypatch.setattr(ingest.layers, "CPU_DRY_RUN_PARAMETERS", 0)
    assert discover_layers.__wrapped__(spec) == on_cpu and len(on_cpu) > 5
    # the meta device's kernels import torch._dynamo (~1 s); the CPU dry run of a digits model does not
    code = ("import sys; from ingest.layers import discover_layers; from ingest.models.presets import get_spec; "
            "discover_layers(get_spec('digits-dmd2')); print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_select_layers_by_name_glob_and_all(imagenet_layers):
    assert select_layers(imagenet_layers, None) == imagenet_layers
    assert select_layers(imagenet_layers, "all") == imagenet_layers
    picked = select_layers(imagenet_layers, "dec.8x8_in1, enc.8x8_block2")
    assert [i.name for i in picked] == ["enc.8x8_block2", "dec.8x8_in1"]  # forward order
    assert len(select_layers(imagenet_layers, "dec.*_up")) == 3
    assert len(select_layers(imagenet_layers, ["enc.*", "enc.8x8_block2"])) == 16


def test_unknown_layer_lists_valid_ones(imagenet_layers):
    with pytest.raises(UnknownLayerError, match="unknown layer 'mid_block'; valid layers: enc.64x64_conv"):
        select_layers(imagenet_layers, "mid_block")


def test_unknown_model_lists_presets():
    with pytest.raises(UnknownModelError, match="choose one of digits-dmd2, digits-edm, imagenet"):
        get_spec("sdxl-2step")
