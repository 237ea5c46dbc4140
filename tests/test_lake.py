"""The lake's atomic shard writes, listing and commit points."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.lake import SAMPLES_SCHEMA, Lake, LakeError, check_run_id, chunk_name, chunk_of


def samples_table(*ids: int) -> pa.Table:
    """A samples shard holding these sample ids (other columns empty)."""
    columns = {f.name: pa.nulls(len(ids), f.type) for f in SAMPLES_SCHEMA}
    columns["sample_id"] = pa.array(ids, pa.int64())
    return pa.table(columns, schema=SAMPLES_SCHEMA)


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    lake = Lake(tmp_path)
    table = samples_table(1, 2, 3)
    path = lake.write_parquet(table, "samples", "run1", chunk_name(4))
    assert path.endswith("samples/run1/chunk-000004.parquet")
    assert os.listdir(tmp_path / "samples" / "run1") == ["chunk-000004.parquet"]
    assert pq.read_table(path).equals(table)
    assert lake.committed_chunks("run1") == {4}


def test_failed_write_removes_its_temporary(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(Exception):
        lake.write_parquet(pa.table({"x": [1]}), "samples", "run1", "chunk-000000.parquet", compression="nope")
    assert os.listdir(tmp_path / "samples" / "run1") == []


def test_listing_ignores_hidden_and_other_files(tmp_path):
    lake = Lake(tmp_path)
    folder = tmp_path / "samples" / "r"
    folder.mkdir(parents=True)
    for name in [".chunk-000002.parquet.abc.tmp", "notes.txt", "chunk-3.parquet"]:
        (folder / name).write_bytes(b"")
    pq.write_table(samples_table(7), folder / "chunk-000001.parquet")
    assert lake.list_names("samples", "r") == ["chunk-000001.parquet", "chunk-3.parquet", "notes.txt"]
    assert lake.committed_chunks("r") == {1}
    assert lake.list_names("samples", "missing") == []
    assert lake.remove_temporaries("r", [2]) == 1 and not (folder / ".chunk-000002.parquet.abc.tmp").exists()


def test_run_ids_are_checked():
    assert check_run_id("digits-dmd2-abc_1.0") == "digits-dmd2-abc_1.0"
    for bad in ["", "../etc", "a/b", ".hidden", "x" * 200, "a b"]:
        with pytest.raises(LakeError, match="invalid run id"):
            check_run_id(bad)
    assert chunk_of("chunk-000042.parquet") == 42 and chunk_of("chunk-42.parquet") is None


def test_unwritable_lake_is_reported(tmp_path):
    # A path below a regular file cannot be created, even by root.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LakeError, match="is not writable"):
        Lake(blocker / "lake").ensure_writable()


def test_object_store_uris_write_in_place():
    # pyarrow's in-memory "mock" filesystem stands in for s3:// or gs:// (not local: no rename step).
    lake = Lake("mock:///lake")
    assert not lake.is_local
    lake.ensure_writable()
    lake.write_parquet(samples_table(1), "samples", "run1", chunk_name(0))
    lake.write_parquet(samples_table(2), "samples", "run1", chunk_name(3))
    lake.write_parquet(pa.table({"x": [2]}), "samples", "run1", chunk_name(5))  # not a samples shard
    with pytest.warns(UserWarning, match="chunk-000005.parquet"):
        assert lake.committed_chunks("run1") == {0, 3}
    table = pq.read_table(lake.path("samples", "run1", chunk_name(3)), filesystem=lake.fs)
    assert table.column("sample_id").to_pylist() == [2]
    assert lake.remove_temporaries("run1", [0]) == 0


def test_run_ids_are_matched_whole():
    for bad in ("abc\n", "abc\nrm", "", "-x", "a/b", None, "a" * 129):
        with pytest.raises(LakeError):
            check_run_id(bad)
    assert check_run_id("a" * 128) == "a" * 128


def test_file_names_round_trip():
    from store.lake import LayoutKey, graph_parts, parse_step_file_name, step_file_name

    assert parse_step_file_name(step_file_name(7, "abc")) == (7, "abc")
    assert parse_step_file_name("chunk-000001.parquet") is None and parse_step_file_name(".step-0001-x.tmp") is None
    assert LayoutKey("r", "l", "mean", 3, "h").parts()[-1] == "step-0003-h.parquet"
    assert graph_parts("r", "l", "mean", 3, "i") == ("indexes", "r", "l", "mean", "step-0003-i.parquet")
    with pytest.raises(LakeError):
        graph_parts("../x", "l", "mean", 0, "i")


def test_orphan_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import socket
    import subprocess
    import sys
    import uuid

    from store.lake import TEMPORARY_OWNER

    lake = Lake(tmp_path)
    folder = tmp_path / "embeddings" / "run" / "layer"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    orphan = folder / f".step-0000-a.parquet.{host}~{int(dead.stdout)}-{uuid.uuid4().hex}.tmp"
    live = folder / f".step-0000-b.parquet.{TEMPORARY_OWNER}-{uuid.uuid4().hex}.tmp"
    elsewhere = folder / f".step-0000-c.parquet.other-host~1-{uuid.uuid4().hex}.tmp"
    for path in (orphan, live, elsewhere):
        path.write_bytes(b"partial")
    assert lake.remove_orphan_temporaries("embeddings") == 1
    assert not orphan.exists() and live.exists() and elsewhere.exists()


# --- links out of the lake ---------------------------------------------------------------------------------

def test_links_out_of_the_lake_are_not_followed(digits_lake, tmp_path):
    """A shard or a folder that is a symbolic link resolving outside the lake is left out of every listing,
    with a warning; a link that stays inside the lake is followed."""
    import shutil

    from store.maps import sample_image
    from store.shards import CorruptShardWarning
    from store.views import connect

    lake_dir = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake_dir)
    run_id = digits_lake["result"].run_id
    lake = Lake(lake_dir)
    before = connect(lake_dir).sql("SELECT count(*) FROM samples").fetchall()[0][0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = elsewhere / "secret.parquet"
    shutil.copy(lake_dir / "samples" / run_id / chunk_name(0), secret)
    (lake_dir / "samples" / run_id / chunk_name(7)).symlink_to(secret)
    (lake_dir / "samples" / run_id / chunk_name(8)).symlink_to(Path("..") / run_id / chunk_name(1))  # inside
    (elsewhere / "selections").mkdir()
    pq.write_table(pa.table({"x": [1]}), elsewhere / "selections" / "stolen.parquet")
    (lake_dir / "selections").symlink_to(elsewhere / "selections", target_is_directory=True)

    with pytest.warns(CorruptShardWarning, match="outside the lake") as caught:
        names = lake.list_names("samples", run_id)
        assert chunk_name(7) not in names and chunk_name(8) in names
        assert lake.list_names("selections") == []
        assert lake.committed_chunks(run_id) == {0, 1, 2, 8}
        after = connect(lake_dir).sql("SELECT count(*) FROM samples").fetchall()[0][0]
        with pytest.raises(KeyError):
            sample_image(lake, run_id, 7, 0)
    assert after == before + 128  # the inside link's chunk counts, the outside one does not
    messages = " ".join(str(w.message) for w in caught)
    assert str(secret) in messages and str(elsewhere / "selections") in messages
