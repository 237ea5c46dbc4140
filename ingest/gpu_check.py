"""`make gpu-check`: throughput of the real-size generators on a GPU, with random weights (no download).

For the full-size ImageNet-64 generator and the full-size SDXL UNet (with the full-size SDXL VAE and
small text encoders of the real output widths, since text encoding is not what is measured), it writes
the random weights as a checkpoint, then measures side by side:

- the bare generator: the preset's sampler in a loop, images kept on the device;
- ingest: the same plan through `run_ingest` (capture hooks, pooling, PNG encoding, Parquet shards);

and prints images/s for both and their ratio (target: ingest keeps >= 90 % of the generator's rate).
Sized to fit one 10-minute run on one GPU. `--tiny` runs the same code with tiny models on the CPU.

    python -m ingest.gpu_check [--device cuda] [--tiny] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(generator, plan, batch: int, repeats: int, device: torch.device) -> float:
    rows = plan.take(slice(0, batch))
    generator.generate(rows)  # warm-up (kernels, allocator)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        generator.generate(rows)
    sync(device)
    return repeats * batch / (time.perf_counter() - start)


def ingest_rate(config) -> dict:
    """Images per second of `ingest` itself, and how many samples its lake then holds (a check that the
    figure timed a real ingest)."""
    from ingest.run import run_ingest
    from store.views import connect

    result = run_ingest(config)
    stored = connect(config.lake).sql("SELECT count(*) FROM samples").fetchall()[0][0]
    return {"ingest_images_per_s": result.generated / result.seconds, "stored_samples": stored}


def imagenet_case(workdir: Path, device: torch.device, dtype: str, tiny: bool) -> dict:
    from safetensors.torch import save_file

    from ingest.generator import DTYPES, make_generator
    from ingest.models.edm import EDMConfig, EDMPrecond
    from ingest.models.presets import IMAGENET64, edm_spec, imagenet_class_names
    from ingest.run import IngestConfig, build_plan

    config = IMAGENET64 if not tiny else EDMConfig(img_resolution=16, img_channels=3, label_dim=1000,
                                                   model_channels=32, channel_mult=(1, 2), num_blocks=1,
                                                   attn_resolutions=(8,))
    checkpoint = workdir / "imagenet-random.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in EDMPrecond(config).state_dict().items()}, checkpoint)
    spec_json = workdir / "imagenet-config.json"
    spec_json.write_text(json.dumps(config.to_dict()))
    batch, n = (64, 2048) if not tiny else (8, 32)
    ingest = IngestConfig(model=str(spec_json), checkpoint=str(checkpoint), lake=str(workdir / "lake"), n=n,
                          run_id="gpu-check-imagenet",
                          batch=batch, layers="enc.8x8_block2,dec.8x8_in0,dec.16x16_block3" if not tiny else "all",
                          device=str(device), dtype=dtype, progress=False)
    spec = edm_spec(str(spec_json), config, "gpu check", class_names=imagenet_class_names())
    generator = make_generator(spec, checkpoint, device, DTYPES[dtype])
    bare = bare_rate(generator, build_plan(ingest, spec), batch, max(2, n // batch // 4), device)
    del generator
    return {"model": "imagenet-64 (296M)" if not tiny else "imagenet-64 tiny", "batch": batch,
            "samples": n, "bare_images_per_s": bare, **ingest_rate(ingest)}


def sdxl_case(workdir: Path, device: torch.device, dtype: str, tiny: bool) -> dict:
    from ingest.generator import DTYPES, make_generator
    from ingest.models import random_pipelines
    from ingest.models.presets import get_spec
    from ingest.run import IngestConfig, build_plan

    base = random_pipelines.save_base(workdir / "sdxl-base", sdxl=True, full=not tiny)
    checkpoint = random_pipelines.save_dmd2_unet(base, workdir / "dmd2_sdxl_1step_unet_fp16.safetensors", seed=1)
    prompts = workdir / "prompts.txt"
    prompts.write_text("\n".join(f"a photo of subject {i}" for i in range(64)) + "\n")
    batch, n = (8, 96) if not tiny else (2, 8)
    ingest = IngestConfig(model="sdxl-1step", base=str(base), checkpoint=str(checkpoint), prompts=str(prompts), n=n,
                          batch=batch, layers="mid_block,up_blocks.0" if not tiny else "all",
                          lake=str(workdir / "lake"), device=str(device), dtype=dtype, progress=False)
    spec = get_spec("sdxl-1step", base)
    generator = make_generator(spec, checkpoint, device, DTYPES[dtype])
    bare = bare_rate(generator, build_plan(ingest, spec), batch, max(2, n // batch // 4), device)
    del generator
    return {"model": "sdxl-1step (2.6B UNet, 1024px)" if not tiny else "sdxl-1step tiny", "batch": batch,
            "samples": n, "bare_images_per_s": bare, **ingest_rate(ingest)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU smoke run of this script)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; run this on a GPU machine (or --device cpu --tiny to smoke-test it)",
              file=sys.stderr)
        return 2
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    results = []
    with tempfile.TemporaryDirectory(prefix="dmd2-lens-gpu-check-") as tmp:
        for case in (imagenet_case, sdxl_case):
            workdir = Path(tmp) / case.__name__
            workdir.mkdir()
            result = case(workdir, device, dtype, args.tiny)
            result["ratio"] = result["ingest_images_per_s"] / result["bare_images_per_s"]
            print(f"{result['model']:<28} batch {result['batch']:>3}: generator {result['bare_images_per_s']:8.1f} img/s, "
                  f"ingest {result['ingest_images_per_s']:8.1f} img/s, ratio {result['ratio']:.2f} (target >= 0.90)",
                  flush=True)
            results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
