"""Which files of a lake folder readers may use. A shard is left out, and named in a warning that says how
to repair it, when it cannot be trusted:

- it is damaged: its Parquet footer cannot be read (a disk error, a copy cut short);
- it is foreign: its columns or their types are not those of its table (an older version's file, a file
  that is not ours);
- it lies outside the lake: a symbolic link whose target resolves outside the lake's root.

`store.lake.Lake.shard_names` applies these checks to every listing readers use, so one bad file never makes
a whole table unreadable and no reader follows a link out of the lake. A verdict is remembered per file
(path, size, modification time): shards are written once, by rename, so a listing checks each footer once.
"""

from __future__ import annotations

import os
import warnings

import pyarrow as pa
import pyarrow.parquet as pq


class CorruptShardWarning(UserWarning):
    """A shard left out because it is damaged, foreign or outside the lake."""


def why_unreadable(err: Exception) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


def unreadable(path, filesystem=None) -> str | None:
    """Why a shard's Parquet footer cannot be read, or None when it can."""
    try:
        pq.read_metadata(path, filesystem=filesystem)
        return None
    except (OSError, pa.ArrowException) as err:
        return why_unreadable(err)


def same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Equal types, where an expected variable-size list also accepts a fixed-size list of the same values
    (vectors and neighbour lists are written fixed-size, of any width)."""
    if pa.types.is_list(expected) and pa.types.is_fixed_size_list(actual):
        return actual.value_type == expected.value_type
    return actual == expected


def schema_mismatch(actual: pa.Schema, expected: pa.Schema) -> str | None:
    """How a shard's columns differ from its table's, or None when they are the same."""
    missing = [name for name in expected.names if name not in actual.names]
    if missing:
        return f"no column {missing[0]!r}"
    extra = [name for name in actual.names if name not in expected.names]
    if extra:
        return f"unknown column {extra[0]!r}"
    for field in expected:
        found = actual.field(field.name).type
        if not same_type(found, field.type):
            return f"column {field.name!r} is {found}, not {field.type}"
    return None


_verdicts: dict[tuple, str | None] = {}  # (path, expected schema, size, mtime) -> problem


def footer_problem(path: str, filesystem, expected: pa.Schema, size: int | None, mtime_ns: int | None) -> str | None:
    """Why a shard cannot be read as one of a table with schema `expected`, or None when it can. Remembered
    per (path, size, modification time): a rewritten file is checked again."""
    key = (path, expected, size, mtime_ns)
    if key not in _verdicts:
        if len(_verdicts) > 1 << 18:
            _verdicts.clear()
        _verdicts[key] = _check_footer(path, filesystem, expected)
    return _verdicts[key]


def _check_footer(path: str, filesystem, expected: pa.Schema) -> str | None:
    try:
        schema = pq.read_schema(path, filesystem=filesystem)
    except (OSError, pa.ArrowException) as err:
        return f"damaged: {why_unreadable(err)}"
    mismatch = schema_mismatch(schema, expected)
    return f"not a shard of this table: {mismatch}" if mismatch else None


def outside(path: str, root_real: str) -> str | None:
    """Where a local path really leads when that is outside the lake root (already resolved), else None."""
    real = os.path.realpath(path)
    return real if not (real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)) else None


def plain_warning_lines() -> None:
    """Show these warnings on a terminal as one `warning: ...` line each (commands call this), not as
    Python's `file:line: Category: ...` plus a source line."""
    shown = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, CorruptShardWarning):
            return f"warning: {message}\n"
        return shown(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning


def warn_skipped(path, why: str, stacklevel: int = 3) -> None:
    if why.startswith("outside the lake"):
        fix = "replace the link with a copy of the file, or move the lake"
    elif why.startswith("not a shard"):
        fix = "move it out of the lake (it was not written by this version's commands)"
    else:
        fix = "delete it and repeat the command that wrote it to rewrite it"
    warnings.warn(f"skipping shard {path} ({why}); {fix}", CorruptShardWarning, stacklevel=stacklevel)
