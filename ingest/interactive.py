"""Generating on demand, the way a recorded run did: a few new samples with chosen seeds and classes
or prompts (written to the lake as a run of their own, through `run_ingest`), and the regeneration of
an existing sample from its recorded seed, compared with what the lake holds.

The dashboard's "Generate and place" and "Regenerate" buttons call these; so can a notebook:

    >>> from ingest.interactive import generate_like, regenerate
    >>> run_id = generate_like("lake", "demo-digits-dmd2", seeds=[42], classes=[7])
    >>> regenerate("lake", "demo-digits-dmd2", sample_id=5).verdict
    'identical'

A sample regenerated alone is computed in a batch of 1; the run generated it in a batch of --batch
(64 by default), and CPU and GPU kernels may sum in another order for another batch size, which can
move a pixel value by a level. `regenerate` says which it found: "identical", "rounding" (a difference
that small, when the batch size or device differs) or "different"; `batch="original"` regenerates the
whole original batch instead, which on the same device gives the stored image bit for bit.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pyarrow.parquet as pq

from store.lake import Lake, check_run_id, chunk_of
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


ROUNDING_MAX_LEVELS = 2  # batch-size rounding moves a value by at most this many levels (of 255) ...
ROUNDING_MAX_SHARE = 0.01  # ... in at most this share of an image's values (or in one value, for tiny images)
VECTOR_TOLERANCE = 1e-3  # activations agree when every vector is this close, relative to its largest value


@dataclasses.dataclass(frozen=True)
class PixelDifference:
    """How a regenerated image differs from the stored one, counted per value: a 32x32 RGB image has
    3,072 values (height x width x channels), each 0..255."""

    max_levels: int  # the largest difference of one value, in levels of 255
    differing: int  # values that differ
    total: int  # values of the stored image
    same_shape: bool = True

    @classmethod
    def between(cls, stored: np.ndarray, fresh: np.ndarray) -> "PixelDifference":
        if stored.size != fresh.size:
            return cls(255, stored.size, stored.size, same_shape=False)
        difference = np.abs(stored.astype(np.int16) - fresh.reshape(stored.shape).astype(np.int16))
        return cls(int(difference.max(initial=0)), int(np.count_nonzero(difference)), int(stored.size))

    @property
    def none(self) -> bool:
        return self.same_shape and self.differing == 0

    @property
    def small(self) -> bool:
        """At most `ROUNDING_MAX_LEVELS` levels in at most `ROUNDING_MAX_SHARE` of the values, or in a single
        value (1 % of an 8x8 digit is less than one)."""
        return (self.same_shape and self.max_levels <= ROUNDING_MAX_LEVELS
                and self.differing <= max(1.0, ROUNDING_MAX_SHARE * self.total))


def judge(pixels: PixelDifference, conditions_differ: bool, vectors_compared: int, max_relative: float) -> str:
    """The verdict on a regenerated sample:

    - "identical": the image is bit-identical and every captured vector agrees within `VECTOR_TOLERANCE`
      (relative to its largest stored value; a vector stored at half precision may round the other way);
    - "rounding": the image differs by at most `ROUNDING_MAX_LEVELS` (2) levels in at most
      `ROUNDING_MAX_SHARE` (1 %) of its values or in one value, the vectors agree as above, and the sample
      was generated under other conditions than now (another or an unknown batch size, or another device),
      whose kernels sum in another order;
    - "different": anything else, including any pixel difference under the same batch size and device.
    """
    if vectors_compared == 0 or not max_relative <= VECTOR_TOLERANCE:  # NaN and inf fail too
        return "different"
    if pixels.none:
        return "identical"
    return "rounding" if conditions_differ and pixels.small else "different"


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """A sample regenerated from its recorded seed, compared with the lake."""

    run_id: str
    sample_id: int
    seed: int
    pixels: PixelDifference
    vectors_compared: int  # (layer, pooling, step) vectors
    max_vector_difference: float  # after the run's stored rounding; 0.0 when identical; inf: a vector missing
    max_relative_difference: float  # the same, relative to the largest stored value of that vector
    batch_at_ingest: int | None  # size of the batch the sample was generated in; None: unknown
    batch_now: int
    device_at_ingest: str | None  # "cpu" or "cuda"; None: unknown
    device_now: str
    png: bytes  # the regenerated image

    @property
    def image_identical(self) -> bool:
        return self.pixels.none

    @property
    def identical(self) -> bool:
        return self.image_identical and self.max_vector_difference == 0.0

    @property
    def conditions_differ(self) -> bool:
        return self.batch_at_ingest != self.batch_now or self.device_at_ingest != self.device_now

    @property
    def verdict(self) -> str:
        """"identical", "rounding" or "different" (see `judge`)."""
        return judge(self.pixels, self.conditions_differ, self.vectors_compared, self.max_relative_difference)

    def reproduced(self, tolerance: float = VECTOR_TOLERANCE) -> bool:
        """Identical or equal up to rounding, with every vector within `tolerance` (relative)."""
        return self.verdict != "different" and self.max_relative_difference <= tolerance

    def summary(self) -> str:
        """The verdict in one line, e.g. "Equal up to batch-size rounding: max difference 1/255 in 1 of
        3,072 pixel values (batch of 64 at ingest, batch of 1 now); activations within 2.4e-4."."""
        verdict, pixels = self.verdict, self.pixels
        if verdict == "identical":
            return f"Identical image (bit for bit); {self.activations_text()}."
        if verdict == "rounding":
            causes = " and ".join(cause for cause, differs in (
                ("batch-size", self.batch_at_ingest != self.batch_now),
                ("device", self.device_at_ingest != self.device_now)) if differs)
            return (f"Equal up to {causes} rounding: {pixels_text(pixels)} ({self.conditions_text()}); "
                    f"{self.activations_text()}.")
        image = "identical image (bit for bit)" if pixels.none else pixels_text(pixels)
        return f"Different: {image} ({self.conditions_text()}); {self.activations_text()}."

    def conditions_text(self) -> str:
        """"batch of 64 at ingest, batch of 1 now", with the devices when they differ."""
        def batch(size: int | None, device: str | None) -> str:
            text = "batch size unknown" if size is None else f"batch of {size:,}"
            if self.device_at_ingest != self.device_now:
                text += f" on {device or 'an unknown device'}"
            return text
        then, now = batch(self.batch_at_ingest, self.device_at_ingest), batch(self.batch_now, self.device_now)
        return f"{then} at ingest, {now} now"

    def activations_text(self) -> str:
        if self.vectors_compared == 0:
            return "no activations to compare"
        if not np.isfinite(self.max_vector_difference):
            return "some captured activation is missing from the lake or has another shape"
        if self.max_vector_difference == 0.0:
            return f"activations equal ({self.vectors_compared:,} vectors)"
        relative = ("" if self.max_relative_difference <= VECTOR_TOLERANCE
                    else f" ({short(self.max_relative_difference)} of the largest value)")
        return f"activations within {short(self.max_vector_difference)}{relative} ({self.vectors_compared:,} vectors)"


def pixels_text(pixels: PixelDifference) -> str:
    if not pixels.same_shape:
        return f"the regenerated image does not have the stored one's {pixels.total:,} pixel values"
    return f"max difference {pixels.max_levels}/255 in {pixels.differing:,} of {pixels.total:,} pixel values"


def short(value: float) -> str:
    """2.4e-4, 0.031, 1.5, 1.2e3: two significant digits, exponents without padding."""
    if value == 0 or 1e-3 <= abs(value) < 100 or not np.isfinite(value):
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


@dataclasses.dataclass(frozen=True)
class IngestBatch:
    """The batch a stored sample was generated in, as far as the run's log tells: the attempts that
    generated its chunk (rank = chunk % world size) and the --batch and device they used."""

    size: int | None  # None: those attempts used different --batch values (a resume with another one)
    device: str | None  # None: those attempts ran on different devices
    rows: list[dict]  # sample_id, seed, class_id, prompt of the batch's samples, in order; [] when size is None


def ingest_batch(lake: Lake, run_id: str, shard: str, sample_id: int) -> IngestBatch:
    """The samples generated in one batch with `sample_id` (chunks are cut into batches of --batch in
    sample order, the last one shorter), from the chunk's samples shard and the run's log."""
    chunk = chunk_of(shard)
    attempts = [row for row in lake.read_runs(run_id).to_pylist() if row["status"] == "running"
                and chunk is not None and chunk % max(1, row["world_size"] or 1) == (row["rank"] or 0)]
    sizes = {json.loads(row["config"]).get("batch") for row in attempts}
    devices = {str(row["device"]).split(":")[0] for row in attempts}
    size = next(iter(sizes)) if len(sizes) == 1 and isinstance(next(iter(sizes)), int) else None
    device = next(iter(devices)) if len(devices) == 1 else None
    if size is None:
        return IngestBatch(None, device, [])
    table = pq.read_table(lake.path("samples", run_id, shard), filesystem=lake.fs,
                          columns=["sample_id", "seed", "class_id", "prompt"]).sort_by("sample_id")
    position = table.column("sample_id").to_pylist().index(int(sample_id))
    start = position // size * size
    return IngestBatch(size, device, table.slice(start, size).to_pylist())


def regenerate(lake: Lake | str, run_id: str, sample_id: int, device: str | None = None,
               batch: str = "alone") -> Reproduction:
    """Regenerate one stored sample from its seed and class or prompt with its run's model and compare
    the image and every captured vector with the stored ones (nothing is written). `device` None: the
    device the run was generated on (CPU when that was CUDA and none is visible here), since another
    device's kernels round differently. `batch`: "alone" generates the sample by itself (a batch of 1,
    whose sums may round differently from the ingest batch's: see `judge`); "original" generates the
    whole batch it was generated in at ingest (the same seeds and classes or prompts, in order), which
    on the same device gives the stored image bit for bit, at the cost of that batch."""
    import torch
    from PIL import Image

    from ingest.writer import encode_png

    if batch not in ("alone", "original"):
        raise ValueError(f"batch must be 'alone' or 'original', not {batch!r}")
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    recorded = recorded_config(lake, run_id)
    if device is None:
        device = "cuda" if recorded.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    stored = stored_sample(lake, run_id, sample_id)
    at_ingest = ingest_batch(lake, run_id, stored["shard"], sample_id)
    if batch == "original" and at_ingest.size is None:
        raise ValueError(f"run {run_id} was resumed with another --batch; the batch of sample {sample_id} is unknown")
    rows = at_ingest.rows if batch == "original" else [stored]
    fresh, captured = generate_rows(recorded, device, rows)
    row = [int(r["sample_id"]) for r in rows].index(int(sample_id))
    worst, worst_relative, compared = compare_vectors(captured, row, stored["vectors"], recorded.vector_precision)
    original = np.asarray(Image.open(io.BytesIO(stored["image_png"])))
    return Reproduction(run_id, int(sample_id), int(stored["seed"]), PixelDifference.between(original, fresh[row]),
                        compared, worst, worst_relative, at_ingest.size, len(rows), at_ingest.device,
                        device.split(":")[0], encode_png(fresh[row]))


def generate_rows(recorded: IngestConfig, device: str, rows: list[dict]) -> tuple[np.ndarray, dict]:
    """Generate stored samples (dicts with seed and class_id or prompt) in one batch, by the model of a
    recorded run on `device`, capturing its layers: (uint8 images NHWC, {(layer, step, pooling): tensor})."""
    import torch

    from ingest.capture import ActivationCapture
    from ingest.generator import DTYPES, resident_generator
    from ingest.models.presets import get_spec
    from ingest.plan import Prompt, explicit_plan
    from ingest.run import resolve_checkpoint, resolve_device_and_dtype, with_base_pipeline

    spec = get_spec(recorded.model, recorded.base)
    config = resolve_device_and_dtype(dataclasses.replace(recorded, device=device), spec)
    spec = with_base_pipeline(spec, config)
    prompts = [Prompt(r["prompt"]) for r in rows] if rows[0]["prompt"] is not None else None
    plan = explicit_plan([int(r["seed"]) for r in rows], None if prompts else [int(r["class_id"]) for r in rows],
                         prompts, len(spec.class_names) or None)
    generator = resident_generator(spec, resolve_checkpoint(spec, config.checkpoint), torch.device(config.device),
                                   DTYPES[config.dtype], vae=config.vae)
    layers = [layer for layer in config.layers.split(",") if layer]
    with ActivationCapture({name: generator.layers[name] for name in layers}, list(config.poolings)) as capture:
        images = generator.generate(plan, capture)
        captured = capture.collect()
    return images.cpu().numpy(), captured


def compare_vectors(captured: dict, row: int, stored: dict, precision: str) -> tuple[float, float, int]:
    """(largest absolute difference, largest difference relative to its vector's largest stored value,
    vectors compared) between row `row` of captured tensors, rounded as the run stored them, and the
    stored vectors {(layer, pooling, step): vector}; inf when one is missing or of another shape."""
    from ingest.writer import VECTOR_PRECISIONS, round_mantissa

    worst, worst_relative, compared = 0.0, 0.0, 0
    for (layer, step, pooling), tensor in captured.items():
        fresh = round_mantissa(tensor.float().cpu().numpy()[row], VECTOR_PRECISIONS[precision])
        kept = stored.get((layer, pooling, step))
        if kept is None or kept.shape != fresh.shape:
            worst = worst_relative = float("inf")
            continue
        difference = float(np.max(np.abs(fresh - kept))) if fresh.size else 0.0
        worst = max(worst, difference)
        worst_relative = max(worst_relative, difference / max(float(np.max(np.abs(kept))), 1e-12))
        compared += 1
    return worst, worst_relative, compared


def stored_sample(lake: Lake, run_id: str, sample_id: int) -> dict:
    """A sample's seed, class, prompt, PNG, every stored vector {(layer, pooling, step): vector} and the
    name of its chunk's shard."""
    for name in lake.shard_names("samples", check_run_id(run_id)):
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
            if name not in lake.shard_names("activations", run_id, layer, pooling):
                continue
            shard = pq.read_table(lake.path("activations", run_id, layer, pooling, name), filesystem=lake.fs,
                                  columns=["sample_id", "step", "vector"], filters=[("sample_id", "=", int(sample_id))])
            for step, vector in zip(shard.column("step").to_pylist(), shard.column("vector").to_pylist()):
                vectors[(layer, pooling, int(step))] = np.asarray(vector, dtype=np.float32)
    return row | {"vectors": vectors, "shard": name}
