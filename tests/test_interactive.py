"""Generating on demand and regenerating from recorded seeds, on CPU, with the embedded digits models."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.interactive import generate_like, recorded_config, regenerate
from store import connect
from store.vectors import load_matrix
from tests.conftest import DIGITS_LAYERS


@pytest.fixture(scope="module")
def lake(paired_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("interactive") / "lake"
    shutil.copytree(paired_lake["lake"], root)
    return {"root": root, "student": paired_lake["student"], "teacher": paired_lake["teacher"]}


def test_recorded_config_is_the_run_s(lake):
    config = recorded_config(lake["root"], lake["student"])
    assert config.model == "digits-dmd2" and config.layers == DIGITS_LAYERS
    assert config.poolings == ("mean", "grid2") and config.seed == 11


def test_generate_like_writes_a_run_of_its_own(lake):
    run_id = generate_like(lake["root"], lake["student"], seeds=[42, 43], classes=[7])
    assert run_id.startswith(f"gen-{lake['student']}-")
    rows = connect(lake["root"]).sql("SELECT sample_id, seed, class_id FROM samples WHERE run_id = $r ORDER BY 1",
                                     params={"r": run_id}).fetchall()
    assert rows == [(0, 42, 7), (1, 43, 7)]
    for layer in DIGITS_LAYERS.split(","):  # the same layers and poolings as the source run
        for pooling in ("mean", "grid2"):
            ids, vectors = load_matrix(lake["root"], run_id, layer, pooling)
            assert ids.tolist() == [0, 1] and np.isfinite(vectors).all()
    assert generate_like(lake["root"], lake["student"], seeds=[42, 43], classes=[7]) == run_id  # reused
    other = generate_like(lake["root"], lake["student"], seeds=[42], classes=[3])
    assert other != run_id


def test_the_same_seed_and_class_give_the_same_sample(lake):
    first = generate_like(lake["root"], lake["student"], seeds=[42], classes=[7])
    stored = connect(lake["root"]).sql(
        "SELECT sample_id, seed, class_id FROM samples WHERE run_id = $r", params={"r": lake["student"]}).fetchall()
    sample_id, seed, class_id = stored[0]
    again = generate_like(lake["root"], lake["student"], seeds=[seed], classes=[class_id])
    image = connect(lake["root"]).sql(
        "SELECT run_id, image_png FROM samples WHERE (run_id = $a AND sample_id = $s) OR run_id = $b",
        params={"a": lake["student"], "s": sample_id, "b": again}).fetchall()
    assert len(image) == 2 and image[0][1] == image[1][1]  # a plan's sample, regenerated alone: same PNG
    assert first != again


def test_regenerate_reproduces_the_student(lake):
    result = regenerate(lake["root"], lake["student"], 5)
    # The image is the same to the bit; vectors agree to float rounding (this sample was generated in a
    # batch of 50, here alone, and CPU kernels may sum in another order for another batch size).
    assert result.image_identical and result.reproduced(), result.max_relative_difference
    assert result.vectors_compared == len(DIGITS_LAYERS.split(",")) * 2  # layers x poolings, one step


def test_regenerate_reproduces_the_teacher_s_eight_steps(lake):
    result = regenerate(lake["root"], lake["teacher"], 5)
    assert result.image_identical and result.reproduced()
    assert result.vectors_compared == len(DIGITS_LAYERS.split(",")) * 2 * 8


def test_regenerate_notices_a_changed_vector(lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(lake["root"], root)
    layer = DIGITS_LAYERS.split(",")[0]
    shard = root / "activations" / lake["student"] / layer / "mean" / "chunk-000000.parquet"
    table = pq.read_table(shard)
    vectors = table.column("vector").to_pylist()
    row = table.column("sample_id").to_pylist().index(5)
    vectors[row] = [v + 1.0 for v in vectors[row]]
    column = pa.array(vectors, type=table.schema.field("vector").type)
    pq.write_table(table.set_column(table.schema.get_field_index("vector"), "vector", column), shard)
    result = regenerate(root, lake["student"], 5)
    assert result.image_identical and not result.identical and not result.reproduced()
    assert result.max_vector_difference == pytest.approx(1.0, abs=0.01)


def test_generate_like_refuses_bad_requests_in_one_line(lake):
    from ingest.plan import PlanError

    with pytest.raises(PlanError, match="out of range"):
        generate_like(lake["root"], lake["student"], seeds=[1], classes=[12])
    with pytest.raises(PlanError, match="class-conditional"):
        generate_like(lake["root"], lake["student"], seeds=[1], prompts=["a cat"])
    with pytest.raises(ValueError, match="no run nope"):
        generate_like(lake["root"], "nope", seeds=[1], classes=[1])


def test_the_model_stays_loaded_between_requests(lake):
    from ingest import generator as generators

    generate_like(lake["root"], lake["student"], seeds=[101], classes=[1])
    first = generators._resident["generator"]
    generate_like(lake["root"], lake["student"], seeds=[102], classes=[2])
    regenerate(lake["root"], lake["student"], 3)
    assert generators._resident["generator"] is first  # loaded once for all three
    generate_like(lake["root"], lake["teacher"], seeds=[103], classes=[3])
    assert generators._resident["generator"] is not first and generators._resident["key"][0] == "digits-edm"
