"""Generating on demand and regenerating from recorded seeds, on CPU, with the embedded digits models; the
verdict on a regenerated sample (identical, equal up to batch-size rounding, different) on planted
differences and on synthetic arrays."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.interactive import (PixelDifference, Reproduction, generate_like, ingest_batch, judge, recorded_config,
                                 regenerate, stored_sample)
from store import connect
from store.lake import Lake
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
    assert result.verdict == "identical" and result.summary().startswith("Identical image (bit for bit); activations")
    assert (result.batch_at_ingest, result.batch_now) == (50, 1)
    assert result.device_at_ingest == result.device_now == "cpu"
    assert result.vectors_compared == len(DIGITS_LAYERS.split(",")) * 2  # layers x poolings, one step


def test_regenerate_in_the_original_batch_is_bit_identical(lake):
    result = regenerate(lake["root"], lake["student"], 5, batch="original")
    assert result.identical and result.verdict == "identical"  # vectors too, to the last bit
    assert result.batch_at_ingest == result.batch_now == 50
    assert result.summary() == f"Identical image (bit for bit); activations equal ({result.vectors_compared} vectors)."
    teacher = regenerate(lake["root"], lake["teacher"], 130, batch="original")
    assert teacher.identical and teacher.batch_now == 50


def test_the_ingest_batch_is_the_one_the_sample_was_generated_in(lake):
    lake_ = Lake(lake["root"])
    # 300 samples, chunks of 128, batches of 50: 0-49, 50-99, 100-127 | 128-177, ... | 256-299
    for sample, first, size in ((5, 0, 50), (120, 100, 28), (130, 128, 50), (299, 256, 44)):
        found = ingest_batch(lake_, lake["student"], stored_sample(lake_, lake["student"], sample)["shard"], sample)
        assert found.size == 50 and found.device == "cpu"
        assert [r["sample_id"] for r in found.rows] == list(range(first, first + size))
    stored = connect(lake["root"]).sql("SELECT seed, class_id FROM samples WHERE run_id = $r AND sample_id = 120",
                                       params={"r": lake["student"]}).fetchall()[0]
    assert (found := ingest_batch(lake_, lake["student"], "chunk-000000.parquet", 120)).rows[20]["seed"] == stored[0]
    assert found.rows[20]["class_id"] == stored[1]
    with pytest.raises(ValueError, match="batch must be"):
        regenerate(lake["root"], lake["student"], 5, batch="all")


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
    assert result.verdict == "different"
    assert result.summary().startswith("Different: identical image (bit for bit) (batch of 50 at ingest, batch of 1 "
                                       "now); activations within 1 (")


def tamper_image(root, run_id: str, sample_id: int, change) -> tuple[np.ndarray, np.ndarray]:
    """Replace a stored PNG by `change(pixels)` in a copied lake; returns (before, after)."""
    from PIL import Image

    shard = root / "samples" / run_id / "chunk-000000.parquet"
    table = pq.read_table(shard)
    images = table.column("image_png").to_pylist()
    row = table.column("sample_id").to_pylist().index(sample_id)
    before = np.asarray(Image.open(io.BytesIO(images[row])))
    after = change(before.copy())
    buffer = io.BytesIO()
    Image.fromarray(after).save(buffer, format="PNG")
    images[row] = buffer.getvalue()
    column = pa.array(images, type=table.schema.field("image_png").type)
    pq.write_table(table.set_column(table.schema.get_field_index("image_png"), "image_png", column), shard)
    return before, after


def one_level_up(pixels: np.ndarray) -> np.ndarray:
    flat = pixels.reshape(-1)
    where = int(np.argmin(flat))  # far from 255
    flat[where] += 1
    return pixels


def test_a_one_level_difference_is_rounding_only_when_the_batch_differs(lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(lake["root"], root)
    before, after = tamper_image(root, lake["student"], 5, one_level_up)
    assert np.count_nonzero(before != after) == 1
    alone = regenerate(root, lake["student"], 5)
    assert alone.verdict == "rounding" and alone.reproduced() and not alone.image_identical
    assert alone.pixels == PixelDifference(1, 1, before.size)
    assert alone.summary().startswith(f"Equal up to batch-size rounding: max difference 1/255 in 1 of {before.size} "
                                      "pixel values (batch of 50 at ingest, batch of 1 now); activations ")
    same_batch = regenerate(root, lake["student"], 5, batch="original")  # no batch-size rounding to blame
    assert same_batch.verdict == "different" and not same_batch.reproduced()
    assert same_batch.summary().startswith(f"Different: max difference 1/255 in 1 of {before.size} pixel values "
                                           "(batch of 50 at ingest, batch of 50 now)")


def test_a_large_difference_is_different_in_any_batch(lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(lake["root"], root)
    before, after = tamper_image(root, lake["student"], 5, lambda pixels: 255 - pixels)
    result = regenerate(root, lake["student"], 5)
    assert result.verdict == "different" and not result.reproduced() and result.batch_now == 1
    assert result.pixels.max_levels == int(np.abs(before.astype(int) - after.astype(int)).max()) > 100
    assert result.summary().startswith(f"Different: max difference {result.pixels.max_levels}/255 in ")


def test_a_run_resumed_with_another_batch_has_no_known_batch(lake, tmp_path):
    from store.lake import runs_parts

    root = tmp_path / "lake"
    shutil.copytree(lake["root"], root)
    lake_ = Lake(root)
    log = lake_.read_runs(lake["student"])
    row = log.filter(pa.compute.equal(log.column("status"), "running")).slice(0, 1).to_pylist()[0]
    config = json.loads(row["config"]) | {"batch": 32}
    stamp = row["started_at"].replace(year=row["started_at"].year + 1)
    resumed = pa.Table.from_pylist([row | {"config": json.dumps(config), "updated_at": stamp}], schema=log.schema)
    lake_.write_parquet(resumed, *runs_parts(lake["student"], 0, stamp, "running"))
    assert ingest_batch(lake_, lake["student"], "chunk-000000.parquet", 5).size is None
    assert "batch size unknown at ingest" in regenerate(root, lake["student"], 5).conditions_text()
    with pytest.raises(ValueError, match="resumed with another --batch"):
        regenerate(root, lake["student"], 5, batch="original")


def reproduction(pixels: PixelDifference, batch_at_ingest: int | None = 64, batch_now: int = 1,
                 devices: tuple[str | None, str] = ("cpu", "cpu"), relative: float = 1e-6) -> Reproduction:
    return Reproduction("run", 5, 42, pixels, 12, relative * 3, relative, batch_at_ingest, batch_now, *devices,
                        png=b"")


def test_pixel_differences_are_counted_per_value():
    stored = np.zeros((32, 32, 3), dtype=np.uint8)
    fresh = stored.copy()
    assert PixelDifference.between(stored, fresh) == PixelDifference(0, 0, 3072)
    fresh[3, 4, 2], fresh[0, 0, 0] = 2, 1
    assert PixelDifference.between(stored, fresh) == PixelDifference(2, 2, 3072)
    fresh[5, 5] = 255
    assert PixelDifference.between(stored, fresh) == PixelDifference(255, 5, 3072)
    assert PixelDifference.between(255 - stored, stored).max_levels == 255  # no uint8 wrap-around
    gray = np.zeros((8, 8), dtype=np.uint8)
    assert PixelDifference.between(gray, np.zeros((8, 8, 1), dtype=np.uint8)) == PixelDifference(0, 0, 64)
    assert not PixelDifference.between(gray, np.zeros((8, 8, 3), dtype=np.uint8)).same_shape


@pytest.mark.parametrize("levels, differing, total, expected", [
    (0, 0, 1000, "identical"), (1, 1, 1000, "rounding"), (2, 10, 1000, "rounding"),  # <= 2 levels in <= 1 %
    (3, 1, 1000, "different"), (1, 11, 1000, "different"), (255, 1000, 1000, "different"),
    (2, 1, 64, "rounding"), (1, 2, 64, "different"),  # or in one value, when 1 % is less than one
    (1, 30, 3072, "rounding"), (1, 31, 3072, "different")])
def test_rounding_needs_a_small_difference(levels, differing, total, expected):
    pixels = PixelDifference(levels, differing, total)
    assert judge(pixels, True, 12, 1e-6) == expected
    assert reproduction(pixels).verdict == expected


def test_rounding_needs_another_batch_size_or_device():
    small = PixelDifference(1, 1, 3072)
    assert judge(small, False, 12, 1e-6) == "different"
    assert reproduction(small, 64, 64).verdict == "different"
    assert reproduction(small, 64, 1).verdict == "rounding"
    assert reproduction(small, None, 1).verdict == "rounding"  # unknown: resumed with another --batch
    assert reproduction(small, 64, 64, ("cuda", "cpu")).verdict == "rounding"
    assert reproduction(small, 64, 64, (None, "cpu")).verdict == "rounding"
    assert reproduction(PixelDifference(0, 0, 3072), 64, 64).verdict == "identical"


def test_activations_must_agree_for_any_verdict_but_different():
    for pixels in (PixelDifference(0, 0, 3072), PixelDifference(1, 1, 3072)):
        assert judge(pixels, True, 12, 1e-3) != "different"  # the tolerance itself is accepted
        assert judge(pixels, True, 12, 1.1e-3) == "different"
        assert judge(pixels, True, 12, float("inf")) == "different"  # a vector missing from the lake
        assert judge(pixels, True, 12, float("nan")) == "different"
        assert judge(pixels, True, 0, 0.0) == "different"  # nothing compared
    assert not judge(PixelDifference(1, 1, 3072, same_shape=False), True, 12, 0.0) == "rounding"


def test_the_summary_line_says_what_was_found():
    assert reproduction(PixelDifference(0, 0, 3072), relative=1e-7).summary() == (
        "Identical image (bit for bit); activations within 3e-7 (12 vectors).")
    assert reproduction(PixelDifference(1, 1, 3072), relative=8e-5).summary() == (
        "Equal up to batch-size rounding: max difference 1/255 in 1 of 3,072 pixel values (batch of 64 at ingest, "
        "batch of 1 now); activations within 2.4e-4 (12 vectors).")
    assert reproduction(PixelDifference(2, 3, 3072), 64, 64, ("cuda", "cpu")).summary().startswith(
        "Equal up to device rounding: max difference 2/255 in 3 of 3,072 pixel values (batch of 64 on cuda at "
        "ingest, batch of 64 on cpu now)")
    assert reproduction(PixelDifference(1, 1, 3072), 64, 1, ("cuda", "cpu")).summary().startswith(
        "Equal up to batch-size and device rounding: ")
    different = reproduction(PixelDifference(87, 2900, 3072), relative=0.3)
    assert different.summary() == (
        "Different: max difference 87/255 in 2,900 of 3,072 pixel values (batch of 64 at ingest, batch of 1 now); "
        "activations within 0.9 (0.3 of the largest value) (12 vectors).")
    missing = dataclasses.replace(different, max_vector_difference=float("inf"), max_relative_difference=float("inf"))
    assert "some captured activation is missing from the lake or has another shape" in missing.summary()
    shape = reproduction(PixelDifference(255, 3072, 3072, same_shape=False)).summary()
    assert shape.startswith("Different: the regenerated image does not have the stored one's 3,072 pixel values")


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
