"""store.shards: a shard whose Parquet footer cannot be read is recognised, with a reason, and named in a
CorruptShardWarning that says how to repair it."""

from __future__ import annotations

import os
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.shards import CorruptShardWarning, schema_mismatch, unreadable, warn_skipped


@pytest.fixture()
def good(tmp_path):
    path = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": list(range(1000)), "b": [str(i) for i in range(1000)]}), path)
    return path


def test_good_shard_is_readable(good):
    assert unreadable(str(good)) is None
    assert pq.read_table(good).num_rows == 1000  # the file really is good


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_shard_has_a_reason(good, tmp_path, cut):
    data = good.read_bytes()
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: int(len(data) * cut)])
    why = unreadable(str(path))
    assert isinstance(why, str) and why.strip()
    assert "\n" not in why and len(why) <= 120
    with pytest.raises((OSError, pa.ArrowException)):
        pq.read_table(path)  # the reason stands for a real failure


def test_non_parquet_and_empty_files_have_a_reason(tmp_path):
    text = tmp_path / "notes.parquet"
    text.write_text("this is not a parquet file\n" * 50)
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    for path in (text, empty):
        why = unreadable(str(path))
        assert isinstance(why, str) and why.strip(), path


def test_warn_skipped_names_the_path_and_the_fix(tmp_path):
    path = tmp_path / "samples" / "run" / "chunk-000003.parquet"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_skipped(path, "Parquet magic bytes not found")
    assert len(caught) == 1
    warning = caught[0]
    assert issubclass(warning.category, CorruptShardWarning) and issubclass(warning.category, UserWarning)
    message = str(warning.message)
    assert str(path) in message
    assert "Parquet magic bytes not found" in message
    assert "delete it" in message and "repeat the command" in message



# --- every table, every reader: damaged, foreign and older-version shards are named and left out ------------

TABLES = ["runs", "samples", "activations", "embeddings", "indexes", "comparisons", "diversity", "selections"]
DAMAGES = ["truncated", "foreign", "older types"]


@pytest.fixture(scope="module")
def lake_copy(paired_lake, tmp_path_factory):
    """A copy of the paired lake with a saved selection, so that every table has shards."""
    import shutil

    import numpy as np

    from store.catalogue import list_layouts
    from store.maps import load_points, selection_frame
    from store.selections import save_selection

    root = tmp_path_factory.mktemp("shards") / "lake"
    shutil.copytree(paired_lake["lake"], root)
    points = load_points(root, list_layouts(root)[0])
    save_selection(root, "kept", selection_frame(points, np.arange(5)))
    return {"lake": root, "student": paired_lake["student"], "teacher": paired_lake["teacher"]}


def planted_name(table: str, existing: str, number: int) -> str:
    """A shard name of `table` that no command wrote (`number` tells plants apart)."""
    from store.lake import chunk_name, parse_step_file_name, step_file_name

    if table in ("samples", "activations"):
        return chunk_name(90 + number)
    if table in ("embeddings", "indexes", "diversity"):
        return step_file_name(parse_step_file_name(existing)[0], f"planted{number}")
    return (f"r999{number}-" if table == "runs" else f"planted{number}-") + existing


def damaged_copy(source: str, damage: str) -> pa.Table | bytes:
    """The bytes (truncated) or table (foreign, older types) of a bad shard made from a good one."""
    if damage == "truncated":
        data = open(source, "rb").read()
        return data[: len(data) // 2]
    if damage == "foreign":
        return pa.table({"x": [1, 2, 3]})
    table = pq.read_table(source)
    index = next(i for i, f in enumerate(table.schema) if pa.types.is_integer(f.type))
    older = pa.int32() if table.schema.field(index).type == pa.int64() else pa.int64()
    return table.set_column(index, table.schema.field(index).name, table.column(index).cast(older))


def plant(lake, table: str, damage: str):
    from store.lake import Lake

    source = Lake(lake).table_shards(table)[0]
    folder, name = source.rsplit("/", 1)
    target = f"{folder}/{planted_name(table, name, DAMAGES.index(damage))}"
    bad = damaged_copy(source, damage)
    if isinstance(bad, bytes):
        open(target, "wb").write(bad)
    else:
        pq.write_table(bad, target)
    return target


def view_counts(lake) -> dict[str, int]:
    from store.views import connect

    con = connect(lake)
    views = {t: {"runs": "run_events", "indexes": "neighbours"}.get(t, t) for t in TABLES}
    return {t: con.sql(f"SELECT count(*) FROM {view}").fetchall()[0][0] for t, view in views.items()}


def reader_results(lake, run_id: str) -> dict:
    """What each table's own reader (not the views) returns."""
    from store.catalogue import list_layouts, read_run_samples
    from store.lake import Lake
    from store.selections import list_selections
    from store.vectors import load_matrix

    layouts = list_layouts(lake)
    key = next(k for k in layouts if k.run_id == run_id)
    return {"runs": Lake(lake).read_runs(run_id).num_rows, "committed": Lake(lake).committed_chunks(run_id),
            "samples": read_run_samples(Lake(lake), run_id).num_rows, "layouts": sorted(layouts),
            "vectors": load_matrix(lake, run_id, key.layer, key.pooling, key.step)[1].shape,
            "selections": list_selections(lake)}


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_bad_shard_is_named_and_left_out_by_the_views_and_readers(lake_copy, table, damage):
    lake = lake_copy["lake"]
    counts, results = view_counts(lake), reader_results(lake, lake_copy["student"])
    target = plant(lake, table, damage)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert view_counts(lake) == counts
            assert reader_results(lake, lake_copy["student"]) == results
        named = [str(w.message) for w in caught if issubclass(w.category, CorruptShardWarning)]
        assert named and all(target in message for message in named), named
        kind = "damaged" if damage == "truncated" else "not a shard of this table"
        assert kind in named[0]
    finally:
        os.remove(target)


def test_schema_mismatch_names_the_difference():
    from store.lake import SAMPLES_SCHEMA, TABLE_SCHEMAS, activations_schema

    assert schema_mismatch(SAMPLES_SCHEMA, SAMPLES_SCHEMA) is None
    assert schema_mismatch(activations_schema(32), TABLE_SCHEMAS["activations"]) is None  # any width
    assert "sample_id" in schema_mismatch(SAMPLES_SCHEMA.remove(1), SAMPLES_SCHEMA)
    assert "'extra'" in schema_mismatch(SAMPLES_SCHEMA.append(pa.field("extra", pa.int8())), SAMPLES_SCHEMA)
    older = SAMPLES_SCHEMA.set(1, pa.field("sample_id", pa.int32()))
    assert "int32" in schema_mismatch(older, SAMPLES_SCHEMA)
    wrong_values = activations_schema(4).set(6, pa.field("vector", pa.list_(pa.float64(), 4)))
    assert "vector" in schema_mismatch(wrong_values, TABLE_SCHEMAS["activations"])


def test_every_command_works_on_a_lake_with_bad_shards_in_every_table(lake_copy, tmp_path):
    """embed, compare, diversity and ingest's resume read past a damaged and a foreign shard in every table;
    a damaged samples shard of a real chunk is regenerated by the resumed run."""
    import shutil

    from ingest.run import run_ingest
    from store.compare import compare_runs
    from store.diversity import diversity
    from store.embed import embed_run
    from store.lake import Lake, chunk_name
    from store.views import connect

    lake = tmp_path / "lake"
    shutil.copytree(lake_copy["lake"], lake)
    student, teacher = lake_copy["student"], lake_copy["teacher"]
    for table in TABLES:
        plant(lake, table, "truncated")  # a samples shard of a chunk the plan does not have
    real_chunk = lake / "samples" / student / chunk_name(1)
    real_chunk.write_bytes(real_chunk.read_bytes()[:100])
    with pytest.warns(CorruptShardWarning, match="chunk-000001"):
        result = run_ingest(_student_config(lake, student))  # resumes: chunk 1 is not committed
    assert result.run_id == student
    assert unreadable(str(real_chunk)) is None
    assert 1 in Lake(lake).committed_chunks(student)
    with pytest.warns(CorruptShardWarning):
        assert connect(lake).sql(f"SELECT count(*) FROM samples WHERE run_id = '{student}'").fetchall()[0][0] == 300
        layouts = embed_run(str(lake), student, progress=False)
        assert {r.samples for r in layouts} == {300}
        assert compare_runs(lake, student, teacher).num_rows > 0
        assert len(diversity(lake, student, "enc.8x8_block0")) > 0


def _student_config(lake, run_id: str):
    """The configuration the run recorded, pointed at this lake (ingest.interactive.recorded_config)."""
    import dataclasses

    from ingest.interactive import recorded_config

    return dataclasses.replace(recorded_config(lake, run_id), lake=str(lake), progress=False)
