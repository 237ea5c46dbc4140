"""The SDXL / SD1.5 presets, offline: tiny pipelines of the same architectures built and saved by the
tests, DMD2-style UNet checkpoints (.bin and .safetensors) and an SDXL LoRA, run through exactly the
code that serves the hub presets (including hub resolution from a local cache with HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.checkpoints import CheckpointError, file_sha256
from store.lake import Lake
from ingest.generator import make_generator
from ingest.layers import discover_layers
from ingest.models import random_pipelines as tiny
from ingest.models.presets import EMBEDDED_WEIGHTS, get_spec
from ingest.text_to_image_generator import TextToImageError
from ingest.plan import Prompt, prompt_plan
from ingest.run import IngestConfig, run_ingest
from store import connect
from tests.conftest import REPO

from tests.conftest import TINY_PROMPTS as PROMPTS
CPU = torch.device("cpu")


def plan(n: int, seed: int = 0):
    return prompt_plan([Prompt(p) for p in PROMPTS], seed, 1, n)


def record_unet_calls(generator) -> list[int]:
    timesteps: list[int] = []

    def hook(_module, args, kwargs):
        timesteps.append(int(args[1].flatten()[0]))

    generator.denoiser.unet.register_forward_pre_hook(hook, with_kwargs=True)
    return timesteps


@pytest.mark.parametrize("checkpoint", ["sdxl_bin", "sdxl_safetensors"])
def test_ingest_stores_prompts_steps_and_shapes(bases, tmp_path, checkpoint):
    config = IngestConfig(model="sdxl-4step", base=str(bases["sdxl"]), checkpoint=str(bases[checkpoint]),
                          prompts=str(bases["prompts"]), n=5, batch=2, lake=str(tmp_path / "lake"), progress=False)
    result = run_ingest(config)
    con = connect(tmp_path / "lake")
    layers = discover_layers(get_spec("sdxl-4step", bases["sdxl"]))
    captured = con.sql("SELECT layer, step, noise_level, dim, vectors FROM captured ORDER BY layer, step").fetchall()
    assert len(captured) == len(layers) * 4  # four points per sample and layer, one per step
    assert {(r[1], r[2]) for r in captured} == {(0, 999.0), (1, 749.0), (2, 499.0), (3, 249.0)}
    widths = {info.name: info.shape[0] for info in layers}
    assert all(r[3] == widths[r[0]] and r[4] == 5 for r in captured)
    samples = con.sql("SELECT sample_id, prompt, width FROM samples ORDER BY sample_id").fetchall()
    assert [r[1] for r in samples] == [PROMPTS[i % 3] for i in range(5)] and samples[0][2] == 32
    run = con.sql("SELECT sampler, checkpoint_sha256, model FROM runs").fetchall()[0]
    assert '"timesteps": [999, 749, 499, 249]' in run[0] and run[1] == file_sha256(bases[checkpoint])
    assert result.generated == 5


def test_wrong_files_fail_before_generation(bases, tmp_path):
    lake = tmp_path / "lake"
    common = dict(model="sdxl-1step", base=str(bases["sdxl"]), prompts=str(bases["prompts"]), n=2,
                  lake=str(lake), progress=False)
    with pytest.raises(CheckpointError, match="does not fit UNet2DConditionModel"):
        run_ingest(IngestConfig(checkpoint=str(EMBEDDED_WEIGHTS / "digits-dmd2.safetensors"), **common))
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(bases["sdxl_bin"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        run_ingest(IngestConfig(checkpoint=str(truncated), **common))
    state = torch.load(bases["sdxl_bin"], weights_only=True)
    first = next(iter(state))
    state[first] = state[first].float()
    mixed = tmp_path / "mixed.bin"
    torch.save(state, mixed)
    with pytest.raises(TextToImageError, match="mixes float16 and float32"):
        run_ingest(IngestConfig(checkpoint=str(mixed), **common))
    with pytest.raises(TextToImageError, match="fp16 on CPU"):
        run_ingest(IngestConfig(checkpoint=str(bases["sdxl_bin"]), dtype="fp16", **common))
    # every input is checked, and the model loaded, before the first byte: not even a `failed` run is logged
    assert not list(lake.rglob("*.parquet")) if lake.exists() else True


def test_lora_is_fused_into_the_base_unet(bases):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    spec = get_spec("sdxl-4step-lora", bases["sdxl"])
    generator = make_generator(spec, bases["lora"], CPU, torch.float32)
    fused = generator.pipe.unet.state_dict()
    assert not [k for k in fused if "lora" in k]  # adapters fused and removed
    base = UNet2DConditionModel.from_pretrained(bases["sdxl"], subfolder="unet").state_dict()
    lora = load_file(bases["lora"])
    down = next(k for k in lora if k.endswith("to_q.lora_A.weight"))
    module = down.removeprefix("unet.").removesuffix(".lora_A.weight")
    a, b = lora[down].float(), lora[down.replace("lora_A", "lora_B")].float()
    expected = base[f"{module}.weight"] + b @ a  # scale 1 (alpha = rank)
    assert torch.allclose(fused[f"{module}.weight"], expected, atol=1e-3)
    assert calls_of(generator) == [999, 749, 499, 249]


def calls_of(generator) -> list[int]:
    calls = record_unet_calls(generator)
    generator.generate(plan(1))
    return calls


def test_sd15_one_step_at_999(bases, tmp_path):
    spec = get_spec("sd15", bases["sd15"])
    generator = make_generator(spec, bases["sd15_bin"], CPU, torch.float32)
    assert calls_of(generator) == [999]
    config = IngestConfig(model="sd15", base=str(bases["sd15"]), checkpoint=str(bases["sd15_bin"]),
                          prompts=str(bases["prompts"]), n=3, layers="mid_block", lake=str(tmp_path / "lake"),
                          progress=False)
    run_ingest(config)
    rows = connect(tmp_path / "lake").sql("SELECT layer, step, noise_level, vectors FROM captured").fetchall()
    assert rows == [("mid_block", 0, 999.0, 3)]


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))


def test_hub_presets_resolve_from_the_cache_offline(bases, tmp_path):
    cache = tmp_path / "hub"
    base_files = {name: bases["sdxl"] / name for name in os.listdir(bases["sdxl"])}
    tiny.hub_cache(cache, "stabilityai/stable-diffusion-xl-base-1.0", base_files)
    tiny.hub_cache(cache, "tianweiy/DMD2", {"dmd2_sdxl_1step_unet_fp16.bin": bases["sdxl_bin"]})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    lake = tmp_path / "lake"
    result = run_cli("run", "--model", "sdxl-1step", "--prompts", str(bases["prompts"]), "--n", "2",
                     "--lake", str(lake), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    run = connect(lake).sql("SELECT checkpoint, checkpoint_sha256 FROM runs").fetchall()[0]
    assert run[0].startswith(str(cache)) and run[1] == file_sha256(bases["sdxl_bin"])
    layers = run_cli("layers", "--model", "sdxl-1step", "--json", env=env)
    assert '"mid_block"' in layers.stdout and "[\n   32," in layers.stdout  # the cached tiny base's UNet
    download = run_cli("download", "sdxl-1step", env=env)
    assert download.returncode == 0 and str(cache) in download.stdout
    missing = run_cli("download", "sdxl-4step", env=env)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "not in the hub cache" in missing.stderr
    assert not list(lake.glob("samples/sdxl-4step*"))


def test_layers_without_any_weights_or_cache(tmp_path):
    result = run_cli("layers", "--model", "sdxl-1step", env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0
    lines = {line.split()[0]: line.split(None, 1)[1].strip() for line in result.stdout.splitlines()[1:-1]}
    assert lines["mid_block"] == "1280 x 32 x 32" and lines["down_blocks.0"] == "320 x 64 x 64"
    assert lines["up_blocks.1"] == "640 x 128 x 128"
    sd15 = run_cli("layers", "--model", "sd15", env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert [line.split(None, 1)[1] for line in sd15.stdout.splitlines() if line.startswith("mid_block")] == ["1280 x 8 x 8"]


def test_text_to_image_models_need_prompts(bases, tmp_path):
    with pytest.raises(ValueError, match="pass --prompts FILE"):
        run_ingest(IngestConfig(model="sdxl-1step", base=str(bases["sdxl"]), checkpoint=str(bases["sdxl_bin"]),
                                n=2, lake=str(tmp_path / "lake"), progress=False))
    with pytest.raises(ValueError, match="--base is for text-to-image"):
        get_spec("digits-dmd2", bases["sdxl"])


PROMPT_TEXT = st.text(min_size=1, max_size=60).filter(lambda t: t.strip() != "")
TAGS = st.lists(st.text(min_size=1, max_size=12), max_size=3)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.tuples(PROMPT_TEXT, TAGS), min_size=1, max_size=4))
def test_prompts_and_tags_round_trip_through_ingest_sql_and_the_dashboard(bases, records):
    import json
    import tempfile

    from store.catalogue import read_run_samples

    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text("\n".join(json.dumps({"prompt": p, "tags": t}) for p, t in records) + "\n", encoding="utf-8")
        run_ingest(IngestConfig(model="sdxl-1step", base=str(bases["sdxl"]), checkpoint=str(bases["sdxl_bin"]),
                                prompts=str(prompts), layers="mid_block", lake=f"{tmp}/lake", run_id="rt",
                                progress=False))
        expected = [(p, t) for p, t in records]
        stored = connect(f"{tmp}/lake").sql("SELECT prompt, tags FROM samples ORDER BY sample_id").fetchall()
        assert [(p, list(t)) for p, t in stored] == expected
        read = read_run_samples(Lake(f"{tmp}/lake"), "rt")  # what the dashboard reads
        assert list(zip(read.column("prompt").to_pylist(), read.column("tags").to_pylist())) == expected
        by_parameter = connect(f"{tmp}/lake").sql("SELECT count(*) FROM samples WHERE prompt = $p",
                                                  params={"p": records[0][0]}).fetchall()[0][0]
        assert by_parameter == sum(p == records[0][0] for p, _ in records)  # quotes or SQL in a value stay data


def test_generate_like_and_regenerate_a_prompt_run(bases, tmp_path):
    from ingest.interactive import generate_like, regenerate

    lake = tmp_path / "lake"
    source = run_ingest(IngestConfig(model="sdxl-1step", base=str(bases["sdxl"]), checkpoint=str(bases["sdxl_bin"]),
                                     prompts=str(bases["prompts"]), n=3, batch=3, lake=str(lake), progress=False))
    new_run = generate_like(lake, source.run_id, seeds=[42], prompts=["a red fox, <b>bold</b>"])
    rows = connect(lake).sql("SELECT seed, prompt FROM samples WHERE run_id = $r", params={"r": new_run}).fetchall()
    assert rows == [(42, "a red fox, <b>bold</b>")]
    layers = connect(lake).sql("SELECT count(DISTINCT layer) FROM captured WHERE run_id = $r GROUP BY run_id "
                               "UNION ALL SELECT count(DISTINCT layer) FROM captured WHERE run_id = $s GROUP BY run_id",
                               params={"r": new_run, "s": source.run_id}).fetchall()
    assert layers[0] == layers[1]  # the same layers as the source run
    alone = regenerate(lake, source.run_id, 1)
    assert alone.verdict in ("identical", "rounding")  # rounding: the batch of 3 at ingest, 1 now
    result = regenerate(lake, source.run_id, 1, batch="original")
    assert result.verdict == "identical" and result.image_identical and result.reproduced()
