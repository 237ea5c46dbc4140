"""Named selections: sets of samples picked in the explorer (collected points, a box or lasso), saved in
the lake so a notebook can read them back as DataFrames, and SQL as the `selections` view:

    >>> from store.selections import list_selections, read_selection
    >>> read_selection("lake", "odd-sevens")          # run_id, layer, step, sample_id, seed, label, ...

    <lake>/selections/<name>.parquet
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.lake import RUN_ID_PATTERN, SELECTIONS_SCHEMA, Lake, as_lake, selection_parts


class SelectionError(ValueError):
    pass


def check_name(name: str) -> str:
    if not (isinstance(name, str) and RUN_ID_PATTERN.fullmatch(name)):
        raise SelectionError(f"invalid selection name {name!r}; use letters, digits, '_', '.', '-' (at most 128)")
    return name


def save_selection(lake: Lake | str, name: str, frame: pd.DataFrame) -> str:
    """Store a selection frame (as `store.maps.selection_frame` makes) under `name`, replacing any earlier
    one of that name (atomically); returns the file's path."""
    lake = as_lake(lake)
    lake.remove_orphan_temporaries("selections")
    if not len(frame):
        raise SelectionError("the selection is empty; collect points or box-select some first")
    table = pa.Table.from_pandas(frame.assign(selection=check_name(name), saved_at=dt.datetime.now(dt.timezone.utc)),
                                 preserve_index=False).select(SELECTIONS_SCHEMA.names).cast(SELECTIONS_SCHEMA)
    return lake.write_parquet(table, *selection_parts(name))


def read_selection(lake: Lake | str, name: str) -> pd.DataFrame:
    """A saved selection as a DataFrame; KeyError names the saved ones when `name` is not among them."""
    lake = as_lake(lake)
    if name not in list_selections(lake):
        raise KeyError(f"no selection {name!r} in {lake.uri}; saved: {', '.join(list_selections(lake)) or '(none)'}")
    return pq.read_table(lake.path("selections", f"{name}.parquet"), filesystem=lake.fs).to_pandas()


def list_selections(lake: Lake | str) -> list[str]:
    return [n[: -len(".parquet")] for n in as_lake(lake).shard_names("selections")]
