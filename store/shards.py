"""Reading shards defensively: a Parquet file whose footer cannot be read (a disk error, a copy cut
short) is named in a warning and left out, so one bad file never makes a whole table unreadable."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pyarrow.parquet as pq


class CorruptShardWarning(UserWarning):
    pass


def why_unreadable(err: Exception) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


def unreadable(path, filesystem=None) -> str | None:
    """Why a shard's Parquet footer cannot be read, or None when it can."""
    try:
        pq.read_metadata(path, filesystem=filesystem)
        return None
    except (OSError, pa.ArrowException) as err:
        return why_unreadable(err)


def warn_skipped(path, why: str, stacklevel: int = 3) -> None:
    warnings.warn(f"skipping corrupt shard {path} ({why}); delete it and repeat the command that wrote it to "
                  "rewrite it", CorruptShardWarning, stacklevel=stacklevel)
