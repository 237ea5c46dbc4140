"""`python -m ingest ...`: the command line of the ingest stage.

Heavy packages (torch, diffusers) are imported inside the commands, so `--help` answers at once.
Every expected failure prints one line `error: <problem>; <fix>` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys

from store.options import (INT32_MAX, MAX_SAMPLES, MAX_WORKERS, SEED_MAX, OneLineParser, bounded_int,
                           int_list)
from store.shards import plain_warning_lines

# Every integer option's range (store/options.py says why each bound is what it is).
SAMPLES = bounded_int(1, MAX_SAMPLES, "split a bigger plan into several runs")
BATCH = bounded_int(1, MAX_SAMPLES)
SEED = bounded_int(0, SEED_MAX, "seeds are stored as 64-bit integers")
SEEDS = int_list(0, SEED_MAX, "seeds are stored as 64-bit integers")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m ingest", description="Generate, capture and store.")
    commands = parser.add_subparsers(dest="command", required=True)

    layers = commands.add_parser("layers", help="list a model's hookable layers and output shapes (no weights)")
    layers.add_argument("--model", default="digits-dmd2", help="preset name or EDM config.json path (default: the embedded digits-dmd2)")
    layers.add_argument("--base", help="text-to-image: base pipeline folder whose UNet config to use")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(handler=run_layers)

    est = commands.add_parser("estimate", help="bytes per sample and in total, and peak generation memory")
    est.add_argument("--model", default="digits-dmd2", help="preset name or EDM config.json path (default: the embedded digits-dmd2)")
    est.add_argument("--layers", default="all", help="comma-separated layer names or globs (default: all)")
    est.add_argument("--pool", default="mean", help="comma-separated poolings: mean, max, grid2")
    est.add_argument("--n", type=SAMPLES, default=1000, help="number of samples")
    est.add_argument("--batch", type=BATCH, default=64, help="generation batch size")
    est.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                     help="generator precision (auto: fp16 for SDXL/SD1.5, else fp32)")
    est.add_argument("--json", action="store_true", help="print JSON instead of text")
    est.set_defaults(handler=run_estimate)

    run = commands.add_parser("run", help="generate samples and pooled activations into the lake")
    run.add_argument("--model", default="digits-dmd2",
                     help="preset name or EDM config.json path (default: digits-dmd2); several, comma-separated, "
                          "run the same plan through each into paired runs (e.g. digits-dmd2,digits-edm)")
    run.add_argument("--checkpoint", help="weights file (default: the preset's, from the hub cache)")
    run.add_argument("--base", help="text-to-image: local base pipeline folder (default: the preset's hub base)")
    run.add_argument("--vae", help="text-to-image: another VAE, folder or hub id (e.g. madebyollin/sdxl-vae-fp16-fix)")
    run.add_argument("--lake", default="lake", help="lake folder or pyarrow.fs URI (default: ./lake)")
    run.add_argument("--run-id", help="run id (default: model + hash of the configuration, so re-running resumes)")
    # --num-samples is the same option, for torchrun: its own parser mistakes --n for an abbreviation.
    run.add_argument("--n", "--num-samples", dest="n", type=SAMPLES,
                     help="number of samples (random labels, or cycled --classes / prompts)")
    run.add_argument("--per-class", type=SAMPLES, help="balanced plan: every class (or each of --classes) K times")
    run.add_argument("--classes", type=int_list(0, INT32_MAX), help="comma-separated class ids")
    run.add_argument("--sample-seeds", type=SEEDS,
                     help="explicit noise seeds, e.g. 42,43: one sample each, with --classes (one class for all, or "
                          "one per seed) or --prompts")
    run.add_argument("--prompts", help="prompt file: one prompt per line, or JSONL with prompt and tags")
    run.add_argument("--per-prompt", type=SAMPLES, default=1, help="samples per prompt")
    run.add_argument("--layers", default="all", help="comma-separated layer names or globs (default: all)")
    run.add_argument("--pool", default="mean", help="comma-separated poolings: mean, max, grid2")
    run.add_argument("--seed", type=SEED, default=0,
                     help="run seed, 0 to 2**63-1; each sample's seed derives from it")
    run.add_argument("--batch", type=BATCH, default=64, help="generation batch size")
    run.add_argument("--chunk-size", type=BATCH, default=1024, help="samples per shard")
    run.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    run.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                     help="generator precision (auto: fp16 for SDXL/SD1.5 on CUDA, else fp32)")
    run.add_argument("--vector-precision", default="half", choices=["half", "full"],
                     help="stored vector precision: half = float16 mantissa in float32 (default), full")
    run.add_argument("--workers", type=bounded_int(1, MAX_WORKERS), default=2, help="encoding threads")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=run_run)

    add_features_command(commands)

    download = commands.add_parser("download", help="fetch a preset's files into the hub cache ahead of a run")
    download.add_argument("model", help="preset name, e.g. sdxl-1step or imagenet, or an image encoder for "
                          "`features`: clip, dinov2 or a hub repo id")
    download.set_defaults(handler=run_download)
    add_real_image_commands(commands)
    return parser


def add_features_command(commands) -> None:
    """`features`: a run's images through a fixed image encoder, stored as its layer features.<name>."""
    features = commands.add_parser("features", help="store a run's reference features (an image encoder's "
                                   "output) as its layer features.<name>")
    features.add_argument("--run", required=True, help="run id whose committed samples to encode")
    features.add_argument("--extractor", default="digits",
                          help="digits, clip, dinov2, a model folder, a digits .safetensors file or a hub repo id")
    features.add_argument("--name", help="layer name features.<name> (default: the extractor's)")
    features.add_argument("--lake", default="lake", help="lake folder or pyarrow.fs URI (default: ./lake)")
    features.add_argument("--batch", type=BATCH, default=256, help="images per encoder call")
    features.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    features.add_argument("--vector-precision", default="half", choices=["half", "full"],
                          help="stored vector precision: half = float16 mantissa in float32 (default), full")
    features.add_argument("--workers", type=bounded_int(1, MAX_WORKERS), default=2, help="image decoding threads")
    features.add_argument("--quiet", action="store_true", help="no progress bar")
    features.set_defaults(handler=run_features)


def run_features(args: argparse.Namespace) -> int:
    from ingest.features import extract_features

    result = extract_features(args.lake, args.run, args.extractor, device=args.device, batch=args.batch,
                              progress=not args.quiet, name=args.name, workers=args.workers,
                              vector_precision=args.vector_precision)
    state = f"{result.samples} samples in {len(result.written)} chunks" if result.written else "already complete"
    print(f"run {result.run_id}, layer {result.layer}: {state} ({result.skipped} chunks were done, "
          f"{result.seconds:.1f} s) in {args.lake}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ingest.extractors import HUB_REPO_PATTERN, PRESETS as EXTRACTORS, hub_folder
    from ingest.hub import base_folder, hub_file
    from ingest.models.presets import PRESETS, UnknownModelError

    extractor = EXTRACTORS.get(args.model)
    if (extractor and extractor.repo) or HUB_REPO_PATTERN.fullmatch(args.model):  # an image encoder (features)
        repo = extractor.repo if extractor else args.model
        print(f"extractor {args.model}: hf://{repo}", flush=True)
        print(f"  -> {hub_folder(repo, preset=args.model)}")
        return 0
    spec = PRESETS.get(args.model)
    if spec is None or spec.hub_checkpoint is None:
        hubbed = [name for name, s in PRESETS.items() if s.hub_checkpoint is not None]
        hubbed += [name for name, e in EXTRACTORS.items() if e.repo is not None]
        raise UnknownModelError(f"no hub files for {args.model!r}; choose one of {', '.join(hubbed)}")
    print(f"{spec.name}: {spec.hub_checkpoint}", flush=True)
    print(f"  -> {hub_file(spec.hub_checkpoint)}")
    if spec.text_to_image is not None:
        print(f"base pipeline {spec.text_to_image.base_repo} (text encoders, tokenizers, VAE, scheduler)", flush=True)
        print(f"  -> {base_folder(spec.text_to_image, with_unet=spec.lora)}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    classes, seeds = args.classes, args.sample_seeds  # lists of integers in range, or None (argparse checked them)
    prompt_texts, prompts = None, args.prompts
    if seeds is not None:
        if args.prompts:
            from ingest.plan import read_prompt_file

            prompt_texts, prompts = [p.text for p in read_prompt_file(args.prompts)], None
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    run_ids = [r.strip() for r in args.run_id.split(",")] if args.run_id else [None] * len(models)
    checkpoints = [c.strip() for c in args.checkpoint.split(",")] if args.checkpoint else [None] * len(models)
    if len(run_ids) != len(models) or len(checkpoints) != len(models):
        raise ValueError(f"{len(models)} models need as many comma-separated --run-id and --checkpoint values "
                         "(or none)")
    if len(models) > 1:
        from ingest.models.presets import get_spec

        for model in models:  # every name checked before anything is generated
            get_spec(model, args.base)
    results = []
    for model, run_id, checkpoint in zip(models, run_ids, checkpoints):
        results.append(run_one(args, model, run_id, checkpoint, classes, seeds, prompt_texts, prompts))
    if len(results) > 1:
        print(f"paired runs (one plan, {len(results)} models): compare them with "
              f"make compare RUNS={','.join(results[:2])}")
    return 0


def run_one(args: argparse.Namespace, model: str, run_id: str | None, checkpoint: str | None, classes, seeds,
            prompt_texts, prompts) -> str:
    from ingest.run import IngestConfig, run_ingest

    config = IngestConfig(
        sample_seeds=seeds, prompt_texts=prompt_texts,
        model=model, checkpoint=checkpoint, base=args.base, vae=args.vae, lake=args.lake, run_id=run_id, n=args.n,
        per_class=args.per_class, classes=classes, prompts=prompts, per_prompt=args.per_prompt,
        layers=args.layers, poolings=tuple(p.strip() for p in args.pool.split(",") if p.strip()), seed=args.seed,
        batch=args.batch, chunk_size=args.chunk_size, device=args.device, dtype=args.dtype,
        vector_precision=args.vector_precision, workers=args.workers, progress=not args.quiet,
    )
    result = run_ingest(config)
    state = "already complete" if result.generated == 0 else f"generated {result.generated} samples"
    print(f"run {result.run_id}: {state} of {result.planned} planned "
          f"(worker {result.rank + 1}/{result.world_size}, {result.seconds:.1f} s) in {config.lake}")
    return result.run_id


def run_layers(args: argparse.Namespace) -> int:
    from ingest.layers import discover_layers
    from ingest.models.presets import get_spec

    infos = discover_layers(get_spec(args.model, args.base))
    if args.json:
        print(json.dumps([{"name": i.name, "shape": list(i.shape)} for i in infos], indent=1))
        return 0
    width = max(len(i.name) for i in infos)
    print(f"{'layer':<{width}}  output (C x H x W)")
    for info in infos:
        print(f"{info.name:<{width}}  {' x '.join(map(str, info.shape))}")
    print(f"{len(infos)} layers")
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    from ingest.capture import POOLINGS
    from ingest.estimate import estimate, human_bytes
    from ingest.layers import discover_layers, select_layers
    from ingest.models.presets import get_spec

    spec = get_spec(args.model)
    poolings = [p.strip() for p in args.pool.split(",") if p.strip()]
    bad = [p for p in poolings if p not in POOLINGS]
    if bad or not poolings:
        raise ValueError(f"unknown pooling {','.join(bad) or '(none)'}; choose from {', '.join(POOLINGS)}")
    layers = select_layers(discover_layers(spec), args.layers)
    if args.dtype == "auto":
        args.dtype = "fp16" if spec.text_to_image is not None else "fp32"
    est = estimate(spec, layers, poolings, n=args.n, batch=args.batch, dtype=args.dtype)
    if args.json:
        fields = dict(vars(est), sample_bytes=est.sample_bytes, total_bytes=est.total_bytes,
                      peak_generation_bytes=est.peak_generation_bytes, layers=[l.name for l in layers])
        print(json.dumps(fields, indent=1))
        return 0
    print(f"model {spec.name}: {len(layers)} layers, pooling {','.join(poolings)}, "
          f"{spec.denoiser_calls} captured step(s) per sample")
    print("per sample:")
    print(f"  image       <= {human_bytes(est.image_bytes)}  (raw pixels; PNG is smaller)")
    print(f"  thumbnail   <= {human_bytes(est.thumbnail_bytes)}")
    print(f"  activations  = {human_bytes(est.activation_bytes)}  (float32)")
    print(f"  total       <= {human_bytes(est.sample_bytes)}")
    print(f"for {args.n} samples: <= {human_bytes(est.total_bytes)}")
    print(f"peak generation memory at batch {args.batch} ({args.dtype}): "
          f"{human_bytes(est.peak_generation_bytes)} = weights {human_bytes(est.weight_bytes)} "
          f"+ activations {human_bytes(est.peak_activation_bytes)}")
    return 0


def add_real_image_commands(commands) -> None:
    """`images` and `real-digits`: real images stored as runs (ingest/real_images.py), no activations."""
    from ingest.real_images import DEFAULT_CHUNK_SIZE, MAX_SIDE, REAL_DIGITS_RUN  # no torch at import

    images = commands.add_parser("images", help="store a folder of real images as a run (no activations)")
    images.add_argument("--folder", required=True, help="folder of images: one sub-folder per class, or any "
                        "layout with --labels")
    images.add_argument("--run-id", required=True, help="run id (re-running the same command resumes it)")
    images.add_argument("--labels", help="CSV with a header row: file,class_id[,class_name] or file,prompt[,tags] "
                        "(file relative to --folder, tags separated by ;)")
    images.add_argument("--size", type=bounded_int(1, MAX_SIDE),
                        help="centre-crop each image to a square and resize it to SIZE x SIZE (default: as it is)")
    digits = commands.add_parser("real-digits", help="store scikit-learn's 1,797 real digits as a run")
    digits.add_argument("--run-id", default=REAL_DIGITS_RUN, help=f"run id (default: {REAL_DIGITS_RUN})")
    for command in (images, digits):
        command.add_argument("--lake", default="lake", help="lake folder or pyarrow.fs URI (default: ./lake)")
        command.add_argument("--chunk-size", type=BATCH, default=DEFAULT_CHUNK_SIZE, help="samples per shard")
        command.add_argument("--workers", type=bounded_int(1, MAX_WORKERS), default=2, help="decoding threads")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
    images.set_defaults(handler=run_images)
    digits.set_defaults(handler=run_real_digits)


def run_images(args: argparse.Namespace) -> int:
    from ingest.real_images import ingest_folder, summary

    result = ingest_folder(args.lake, args.folder, args.run_id, labels_csv=args.labels, size=args.size,
                           chunk_size=args.chunk_size, workers=args.workers, progress=not args.quiet)
    print(summary(result, args.lake))
    return 0


def run_real_digits(args: argparse.Namespace) -> int:
    from ingest.real_images import ingest_real_digits, summary

    result = ingest_real_digits(args.lake, args.run_id, chunk_size=args.chunk_size, workers=args.workers,
                                progress=not args.quiet)
    print(summary(result, args.lake))
    return 0


def main(argv: list[str] | None = None) -> int:
    plain_warning_lines()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad option: its one line is printed (2)
        return int(stop.code or 0)
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:  # our error types derive from ValueError
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            err = f"no space left on the lake's disk ({err.strerror}); nothing half-written was kept: free " \
                  "space or choose another --lake, then repeat the same command to resume"
        print(f"error: {err}", file=sys.stderr)
        return 2
