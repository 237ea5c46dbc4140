"""store.shards: a shard whose Parquet footer cannot be read is recognised, with a reason, and named in a
CorruptShardWarning that says how to repair it."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.shards import CorruptShardWarning, unreadable, warn_skipped


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

