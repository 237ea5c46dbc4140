"""Generation from plan rows: per-sample noise makes every sample reproducible on its own."""

from __future__ import annotations

import torch

from ingest.generator import EDMGenerator
from ingest.samplers import per_sample_noise
from ingest.models.presets import get_spec, load_denoiser
from ingest.plan import class_plan


def test_noise_depends_only_on_the_seed():
    a = per_sample_noise([1, 2, 3], (1, 8, 8))
    b = per_sample_noise([3], (1, 8, 8))
    assert torch.equal(a[2], b[0]) and not torch.equal(a[0], a[1])


def test_a_sample_regenerates_exactly_alone():
    spec = get_spec("digits-dmd2")
    generator = EDMGenerator(spec, load_denoiser(spec), torch.device("cpu"))
    plan = class_plan(10, seed=4, n=12)
    batch = generator.generate(plan)
    alone = generator.generate(plan.take(slice(7, 8)))
    assert batch.shape == (12, 8, 8, 1) and batch.dtype == torch.uint8
    assert torch.equal(batch[7], alone[0])
    assert generator.step_levels == [80.0]


def test_teacher_steps_are_the_heun_levels():
    spec = get_spec("digits-edm")
    generator = EDMGenerator(spec, load_denoiser(spec), torch.device("cpu"))
    assert len(generator.step_levels) == spec.sampler.steps == 8
    assert generator.step_levels[0] == 80.0


def test_a_stored_sample_regenerates_from_its_recorded_seed(digits_lake):
    import numpy as np

    from ingest.plan import SamplePlan
    from ingest.writer import encode_png
    from store import connect

    row = connect(digits_lake["lake"]).sql(
        "SELECT sample_id, seed, class_id, image_png FROM samples WHERE sample_id = 123").fetchall()[0]
    spec = get_spec("digits-dmd2")
    generator = EDMGenerator(spec, load_denoiser(spec), torch.device("cpu"))
    rows = SamplePlan(sample_id=np.array([row[0]]), seed=np.array([row[1]]), class_id=np.array([row[2]]))
    assert encode_png(generator.generate(rows)[0].numpy()) == row[3]
