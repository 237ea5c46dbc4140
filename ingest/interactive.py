"""Generating on demand, the way a recorded run did: a few new samples with chosen seeds and classes
or prompts (written to the lake as a run of their own, through `run_ingest`), and the regeneration of
an existing sample from its recorded seed, compared with what the lake holds.

The dashboard's "Generate and place" and "Regenerate" buttons call these; so can a notebook:

    >>> from ingest.interactive import generate_like, regenerate
    >>> run_id = generate_like("lake", "demo-digits-dmd2", seeds=[42], classes=[7])
    >>> regenerate("lake", "demo-digits-dmd2", sample_id=5).identical
    True
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pyarrow.parquet as pq

from store.lake import Lake, check_run_id
from ingest.run import IngestConfig, run_ingest

GENERATED_PREFIX = "gen"


def recorded_config(lake: Lake | str, run_id: str) -> IngestConfig:
    """The configuration a run was ingested with (from its log in the `runs` table)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    runs = lake.read_runs(check_run_id(run_id))
    if runs.num_rows == 0:
        raise ValueError(f"no run {run_id} in {lake.uri}")
    recorded = json.loads(runs.column("config")[0].as_py())
    fields = {f.name for f in dataclasses.fields(IngestConfig)}
    values = {k: v for k, v in recorded.items() if k in fields}
    values["poolings"] = tuple(values.get("poolings") or ("mean",))
    values["layers"] = ",".join(runs.column("layers")[0].as_py())  # the layers it captured, by name
    return IngestConfig(**values)


def generate_like(lake: Lake | str, source_run: str, seeds: list[int], classes: list[int] | None = None,
                  prompts: list[str] | None = None, device: str = "auto") -> str:
    """Generate samples with these noise seeds (and a class or prompt each, or one for all) by the model
    of `source_run`, capturing the same layers and poolings, into a new run; returns its id. Asking for
    the same samples again returns the same run without generating anything."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    source = recorded_config(lake, source_run)
    config = dataclasses.replace(
        source, lake=lake.root, run_id=None, n=None, per_class=None, prompts=None, classes=classes,
        sample_seeds=[int(s) for s in seeds], prompt_texts=prompts, device=device,
        dtype="auto" if device == "auto" else source.dtype, batch=max(1, len(seeds)), chunk_size=max(1, len(seeds)),
        workers=1, progress=False, keep_model_loaded=True)
    config = dataclasses.replace(config, run_id=generated_run_id(source_run, config))
    return run_ingest(config).run_id


def generated_run_id(source_run: str, config: IngestConfig) -> str:
    """`gen-<source run>-<hash of the seeds and classes or prompts>` (at most 128 characters)."""
    import hashlib

    wanted = json.dumps([config.sample_seeds, config.classes, config.prompt_texts])
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:8]
    return check_run_id(f"{GENERATED_PREFIX}-{source_run[:100]}-{digest}")


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """A sample regenerated from its recorded seed, compared with the lake."""

    run_id: str
    sample_id: int
    seed: int
    image_identical: bool
    vectors_compared: int  # (layer, pooling, step) vectors
    max_vector_difference: float  # after the run's stored rounding; 0.0 when identical
    max_relative_difference: float  # the same, relative to the largest stored value of that vector
    png: bytes  # the regenerated image

    @property
    def identical(self) -> bool:
        return self.image_identical and self.max_vector_difference == 0.0

    def reproduced(self, tolerance: float = 1e-3) -> bool:
        """The same image, and every vector equal up to float rounding (a sample generated alone can
        differ in the last bits from the same sample generated in a batch)."""
        return self.image_identical and self.vectors_compared > 0 and self.max_relative_difference <= tolerance


def regenerate(lake: Lake | str, run_id: str, sample_id: int, device: str | None = None) -> Reproduction:
    """Regenerate one stored sample from its seed and class or prompt with its run's model and compare
    the image and every captured vector with the stored ones (nothing is written). `device` None: the
    device the run was generated on (CPU when that was CUDA and none is visible here), since another
    device's kernels round differently."""
    import torch
    from PIL import Image

    from ingest.capture import ActivationCapture
    from ingest.generator import DTYPES, resident_generator
    from ingest.models.presets import get_spec
    from ingest.plan import Prompt, explicit_plan
    from ingest.run import resolve_checkpoint, resolve_device_and_dtype, with_base_pipeline
    from ingest.writer import VECTOR_PRECISIONS, encode_png, round_mantissa

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    recorded = recorded_config(lake, run_id)
    spec = get_spec(recorded.model, recorded.base)
    if device is None:
        device = recorded.device if recorded.device in ("cpu", "cuda") else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            device = "cpu"
    config = resolve_device_and_dtype(dataclasses.replace(recorded, device=device), spec)
    stored = stored_sample(lake, run_id, sample_id)
    spec = with_base_pipeline(spec, config)
    prompts = [Prompt(stored["prompt"])] if stored["prompt"] is not None else None
    plan = explicit_plan([stored["seed"]], None if prompts else [stored["class_id"]], prompts,
                         len(spec.class_names) or None)
    generator = resident_generator(spec, resolve_checkpoint(spec, config.checkpoint), torch.device(config.device),
                                   DTYPES[config.dtype], vae=config.vae)
    layers = [layer for layer in config.layers.split(",") if layer]
    with ActivationCapture({name: generator.layers[name] for name in layers}, list(config.poolings)) as capture:
        images = generator.generate(plan, capture)
        captured = capture.collect()
    pixels = images.cpu().numpy()[0]
    original = np.asarray(Image.open(io.BytesIO(stored["image_png"])))
    bits = VECTOR_PRECISIONS[config.vector_precision]
    worst, worst_relative, compared = 0.0, 0.0, 0
    for (layer, step, pooling), tensor in captured.items():
        fresh = round_mantissa(tensor.float().cpu().numpy()[0], bits)
        kept = stored["vectors"].get((layer, pooling, step))
        if kept is None or kept.shape != fresh.shape:
            worst = worst_relative = float("inf")
            continue
        difference = float(np.max(np.abs(fresh - kept))) if fresh.size else 0.0
        worst = max(worst, difference)
        worst_relative = max(worst_relative, difference / max(float(np.max(np.abs(kept))), 1e-12))
        compared += 1
    same_image = pixels.size == original.size and bool(np.array_equal(original, pixels.reshape(original.shape)))
    return Reproduction(run_id, int(sample_id), int(stored["seed"]), same_image, compared, worst, worst_relative,
                        encode_png(pixels))


def stored_sample(lake: Lake, run_id: str, sample_id: int) -> dict:
    """A sample's seed, class, prompt, PNG and every stored vector {(layer, pooling, step): vector}."""
    for name in lake.list_names("samples", check_run_id(run_id)):
        table = pq.read_table(lake.path("samples", run_id, name), filesystem=lake.fs,
                              columns=["sample_id", "seed", "class_id", "prompt", "image_png"],
                              filters=[("sample_id", "=", int(sample_id))])
        if table.num_rows:
            row = table.to_pylist()[0]
            break
    else:
        raise KeyError(f"no sample {sample_id} in run {run_id}")
    vectors = {}
    for layer in lake.list_folders("activations", run_id):
        for pooling in lake.list_folders("activations", run_id, layer):
            if name not in lake.list_names("activations", run_id, layer, pooling):
                continue
            shard = pq.read_table(lake.path("activations", run_id, layer, pooling, name), filesystem=lake.fs,
                                  columns=["sample_id", "step", "vector"], filters=[("sample_id", "=", int(sample_id))])
            for step, vector in zip(shard.column("step").to_pylist(), shard.column("vector").to_pylist()):
                vectors[(layer, pooling, int(step))] = np.asarray(vector, dtype=np.float32)
    return row | {"vectors": vectors}
