"""What the lake holds, by name: runs and their models, a run's layers in capture order, its samples'
metadata and labels, the stored layouts (with human names), and the neighbour graph each layout was made
from. Reading file listings and small metadata only; a layout's points are `store.maps`' business."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store.lake import Lake, LayoutKey, as_lake, check_run_id, graph_parts, parse_step_file_name
from store.shards import warn_skipped, why_unreadable

SAMPLE_COLUMNS = ["sample_id", "seed", "chunk", "class_id", "class_name", "prompt", "tags"]


# --- runs ------------------------------------------------------------------------------------------------

def run_layers(con, run_id: str) -> list[str]:
    """A run's layers in capture order (input to output), as its log records them."""
    rows = con.sql("SELECT layers FROM runs WHERE run_id = $run", params={"run": run_id}).fetchall()
    return list(rows[0][0] or []) if rows else []


def stored_layers(lake: Lake, run_id: str, pooling: str) -> list[str]:
    """The layers of a run that have vectors with `pooling`: first those its log recorded, in capture order
    (input to output), then any added later, by name (reference features such as `features.digits`, which
    `python -m ingest features` stores beside a run's activations)."""
    recorded = lake.read_runs(check_run_id(run_id)).column("layers")
    order = (recorded[0].as_py() or []) if len(recorded) else []
    stored = [layer for layer in lake.list_folders("activations", run_id)
              if pooling in lake.list_folders("activations", run_id, layer)]
    return in_capture_order(stored, order)


def in_capture_order(layers, order: list[str]) -> list[str]:
    """`layers` sorted input to output by a run's capture `order` (unknown layers last, by name)."""
    return sorted(layers, key=lambda layer: (order.index(layer) if layer in order else len(order), layer))


def run_models(con) -> dict[str, str]:
    """Model name of every run."""
    return {run_id: model for run_id, model in con.sql("SELECT run_id, model FROM runs").fetchall()}


def sample_label(class_id: int | None, class_name: str | None, prompt: str | None) -> str:
    """How maps and tables name a sample: "id: class name" for class-conditional runs ("3", not "3: 3",
    when the name is the id), else its prompt."""
    if class_id is None:
        return str(prompt)
    return str(class_id) if class_name in (None, "", str(class_id)) else f"{class_id}: {class_name}"


def read_run_samples(lake: Lake, run_id: str) -> pa.Table:
    """A run's sample metadata (no images), strings read dictionary-encoded straight from Parquet, so 10M
    rows of repeated prompts cost a few bytes each instead of a Python string each."""
    names = lake.shard_names("samples", check_run_id(run_id))
    tables = []
    for name in names:
        path = lake.path("samples", run_id, name)
        try:
            tables.append(pq.read_table(path, filesystem=lake.fs, columns=SAMPLE_COLUMNS,
                                        read_dictionary=["class_name", "prompt"]))
        except (OSError, pa.ArrowException) as err:  # as the views do: name it, read the rest
            warn_skipped(path, why_unreadable(err))
    if not tables:
        raise FileNotFoundError(f"run {run_id} has no committed samples in {lake.uri}")
    return pa.concat_tables(tables).unify_dictionaries().combine_chunks()


def run_class_names(samples: pa.Table) -> dict[int, str]:
    """Class id -> name of every class in a run's samples (a class without a name is named by its id)."""
    class_id = samples.column("class_id").fill_null(-1).to_numpy()
    names = {}
    unique, first = np.unique(class_id, return_index=True)
    for cid, row in zip(unique, first):
        if cid >= 0:
            name = samples.column("class_name")[int(row)].as_py()
            names[int(cid)] = name if name is not None else str(cid)
    return names


# --- layouts -----------------------------------------------------------------------------------------------

def list_layouts(lake: Lake | str) -> list[LayoutKey]:
    """Every stored layout, by run, layer, pooling and step (file listing only: cheap at any size)."""
    lake = as_lake(lake)
    found = []
    for run_id in lake.list_folders("embeddings"):
        for layer in lake.list_folders("embeddings", run_id):
            for pooling in lake.list_folders("embeddings", run_id, layer):
                for name in lake.shard_names("embeddings", run_id, layer, pooling):
                    parsed = parse_step_file_name(name)
                    if parsed is not None:
                        found.append(LayoutKey(run_id, layer, pooling, *parsed))
    return found


def layout_params(lake: Lake | str, key: LayoutKey) -> dict:
    lake = as_lake(lake)
    table = pq.ParquetFile(lake.path(*key.parts()), filesystem=lake.fs).read_row_group(0, columns=["params"])
    return json.loads(table.column("params")[0].as_py())


@dataclasses.dataclass(frozen=True)
class LayoutInfo:
    """What a person needs to tell layouts apart: method and parameters, point count, full or subset (and
    of what), and when it was made."""

    key: LayoutKey
    points: int
    created: float  # seconds since the epoch (the file's modification time)
    params: dict

    @property
    def subset(self) -> bool:
        return "subset" in self.params

    @property
    def name(self) -> str:
        p = self.params
        method = "UMAP (GPU)" if p.get("umap") == "cuml" else "UMAP"
        what = f"subset: {p.get('description') or 'picked samples'}" if self.subset else "full"
        when = datetime.datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M")
        return (f"{method} n_neighbors {p.get('n_neighbors')}, min_dist {p.get('min_dist')}, seed {p.get('seed')}"
                f" · {self.points} points · {what} · {when}")


@functools.lru_cache(maxsize=4096)
def _layout_info(lake_root: str, key: LayoutKey, stamp: int) -> LayoutInfo:
    # A layout file never changes once written (its name carries its parameters' hash); `stamp` is its mtime.
    lake = as_lake(lake_root)
    count = pq.ParquetFile(lake.path(*key.parts()), filesystem=lake.fs).metadata.num_rows
    return LayoutInfo(key, int(count), stamp / 1e9, layout_params(lake, key))


def layout_info(lake: Lake | str, key: LayoutKey) -> LayoutInfo:
    lake = as_lake(lake)
    info = lake.fs.get_file_info(lake.path(*key.parts()))
    return _layout_info(lake.root, key, info.mtime_ns or 0)


def newest_full_layout(lake: Lake | str, keys: list[LayoutKey]) -> LayoutKey | None:
    """The layout a view starts from: the newest full layout among `keys` (a subset only when there is
    nothing else)."""
    if not keys:
        return None
    infos = [layout_info(lake, k) for k in keys]
    return max(infos, key=lambda i: (not i.subset, i.created, i.key)).key


def full_layouts(lake: Lake | str, keys: list[LayoutKey]) -> list[LayoutKey]:
    """The layouts of all of a layer's samples, without the "recompute layout" subsets."""
    return [k for k in keys if not layout_info(lake, k).subset]


def graph_file(lake: Lake | str, key: LayoutKey) -> str:
    """The neighbour graph the layout was computed from (its inputs hash is in the layout's params)."""
    lake = as_lake(lake)
    parts = graph_parts(key.run_id, key.layer, key.pooling, key.step, layout_params(lake, key).get("inputs"))
    if parts[-1] not in lake.shard_names(*parts[:-1]):
        raise FileNotFoundError(f"no neighbour graph {parts[-1]} for {key.label}; run `make embed`")
    return lake.path(*parts)
