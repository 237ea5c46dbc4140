"""What a map browser asks of the lake, answered read-only: which layouts exist, one layout's points
with their metadata (held in memory as compact columns), filters, the nearest point to a click, raw-space
and 2-D neighbours, selections, and sample images.

Every query that carries a user value is parameterised; lake paths are built only from names listed in
the lake or checked against the run-id pattern, so no id can reach a file outside it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.lake import Lake, check_run_id, chunk_name
from store.shards import warn_skipped, why_unreadable

MISSING_LABEL = "(none)"


@dataclasses.dataclass(frozen=True, order=True)
class LayoutKey:
    """One stored layout: a file `embeddings/<run>/<layer>/<pooling>/step-<step>-<params_hash>.parquet`."""

    run_id: str
    layer: str
    pooling: str
    step: int
    params_hash: str

    def parts(self) -> tuple[str, ...]:
        return ("embeddings", self.run_id, self.layer, self.pooling, f"step-{self.step:04d}-{self.params_hash}.parquet")

    @property
    def label(self) -> str:
        return f"{self.run_id} · {self.layer} · step {self.step} · {self.pooling} · {self.params_hash[:8]}"


def list_layouts(lake: Lake | str) -> list[LayoutKey]:
    """Every stored layout, by run, layer, pooling and step (file listing only: cheap at any size)."""
    lake = as_lake(lake)
    found = []
    for run_id in lake.list_folders("embeddings"):
        for layer in lake.list_folders("embeddings", run_id):
            for pooling in lake.list_folders("embeddings", run_id, layer):
                for name in lake.list_names("embeddings", run_id, layer, pooling):
                    if name.startswith("step-") and name.endswith(".parquet"):
                        step, digest = name[len("step-"):-len(".parquet")].split("-", 1)
                        found.append(LayoutKey(run_id, layer, pooling, int(step), digest))
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


def run_layers(con, run_id: str) -> list[str]:
    """A run's layers in capture order (input to output), as its log records them."""
    rows = con.sql("SELECT layers FROM runs WHERE run_id = $run", params={"run": run_id}).fetchall()
    return list(rows[0][0] or []) if rows else []


def run_models(con) -> dict[str, str]:
    """Model name of every run."""
    return {run_id: model for run_id, model in con.sql("SELECT run_id, model FROM runs").fetchall()}


def as_lake(lake: Lake | str | Path) -> Lake:
    return lake if isinstance(lake, Lake) else Lake(lake)


@dataclasses.dataclass
class MapPoints:
    """One layout's points, sorted by sample id, as compact numpy/categorical columns.

    `frame` columns: sample_id, x, y, knn_overlap, seed, chunk, class_id (-1: none), label (categorical
    "id: name" or the prompt), prompt (categorical), tags (categorical, comma-joined), and label_code /
    tags_code (the categories' integer codes, -1 for none).
    """

    key: LayoutKey
    frame: pd.DataFrame
    class_names: dict[int, str]  # every class of the run, so colours never depend on a filter
    model: str | None
    _tree: object = dataclasses.field(default=None, repr=False)
    _tree_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    @functools.cached_property
    def extent(self) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of all points, computed once (the map's home view is drawn from it)."""
        if not len(self.frame):
            return (0.0, 1.0, 0.0, 1.0)
        xs, ys = self.frame["x"].to_numpy(), self.frame["y"].to_numpy()
        return (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))

    @property
    def has_classes(self) -> bool:
        return bool(self.class_names)

    def class_options(self) -> dict[str, int]:
        """Label -> class id of every class of the run, in id order (for class pickers)."""
        return {sample_label(i, name, None): i for i, name in sorted(self.class_names.items())}

    def class_of_label(self, label: str) -> int | None:
        """The class id a map label names ("3", "417: balloon", or an older lake's "3: 3"), or None."""
        options = self.class_options()
        if label in options:
            return options[label]
        head = label.split(":", 1)[0]
        return int(head) if ":" in label and head.isdigit() and int(head) in self.class_names else None

    def colour_codes(self, column: str) -> np.ndarray:
        """A fixed palette index for each category of `column` ("label" or "tags"): the class id for a
        class-conditional run's labels (the same colour in every layout, subset and tab), else the
        category's position in the run's list of prompts or tags."""
        categories = self.frame[column].cat.categories
        if column == "label" and self.class_names:
            return np.array(sorted(self.class_names), dtype=np.int64)
        return np.arange(len(categories), dtype=np.int64)

    def rows_of(self, sample_ids: np.ndarray | list[int]) -> np.ndarray:
        """Row positions of these sample ids (-1 where absent)."""
        ids = self.frame["sample_id"].to_numpy()
        wanted = np.asarray(sample_ids, dtype=np.int64)
        rows = np.searchsorted(ids, wanted)
        rows = np.minimum(rows, len(ids) - 1) if len(ids) else rows
        found = (len(ids) > 0) & (ids[rows] == wanted) if len(ids) else np.zeros(len(wanted), bool)
        return np.where(found, rows, -1)

    def mask(self, classes: list[int] | None = None, prompt: str = "", tag: str = "") -> np.ndarray:
        """Rows passing the filters: any of `classes` (empty: all), prompt and tag substrings (case-blind)."""
        frame = self.frame
        keep = np.ones(len(frame), dtype=bool)
        if classes:
            keep &= np.isin(frame["class_id"].to_numpy(), np.asarray(classes, dtype=np.int64))
        for column, text in (("prompt", prompt), ("tags", tag)):
            if text:
                values = frame[column]
                matching = [i for i, v in enumerate(values.cat.categories) if text.lower() in str(v).lower()]
                keep &= np.isin(values.cat.codes.to_numpy(), matching)
        return keep

    def nearest(self, x: float, y: float, radius: float, keep: np.ndarray | None = None) -> int | None:
        """Row of the point nearest (x, y) within `radius` among `keep` rows, or None."""
        xs, ys = self.frame["x"].to_numpy(), self.frame["y"].to_numpy()
        near = (np.abs(xs - x) <= radius) & (np.abs(ys - y) <= radius)
        if keep is not None:
            near &= keep
        rows = np.flatnonzero(near)
        if not len(rows):
            return None
        d2 = (xs[rows] - x) ** 2 + (ys[rows] - y) ** 2
        return int(rows[np.argmin(d2)])

    def in_box(self, x0: float, y0: float, x1: float, y1: float, keep: np.ndarray | None = None) -> np.ndarray:
        xs, ys = self.frame["x"].to_numpy(), self.frame["y"].to_numpy()
        inside = (xs >= min(x0, x1)) & (xs <= max(x0, x1)) & (ys >= min(y0, y1)) & (ys <= max(y0, y1))
        return np.flatnonzero(inside & keep if keep is not None else inside)

    def in_polygon(self, xs_poly: list[float], ys_poly: list[float], keep: np.ndarray | None = None) -> np.ndarray:
        """Rows inside a lasso polygon (even-odd rule), among `keep` rows."""
        rows = self.in_box(min(xs_poly), min(ys_poly), max(xs_poly), max(ys_poly), keep)
        px, py = self.frame["x"].to_numpy()[rows], self.frame["y"].to_numpy()[rows]
        inside = np.zeros(len(rows), dtype=bool)
        vx, vy = np.asarray(xs_poly, dtype=np.float64), np.asarray(ys_poly, dtype=np.float64)
        for i in range(len(vx)):  # one pass per edge, vectorised over points
            x0, y0, x1, y1 = vx[i - 1], vy[i - 1], vx[i], vy[i]
            crosses = (y0 > py) != (y1 > py)
            with np.errstate(divide="ignore", invalid="ignore"):
                at_x = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (px < at_x)
        return rows[inside]

    def map_neighbours(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest points on the 2-D map (rows, distances), the point itself excluded."""
        from scipy.spatial import cKDTree

        with self._tree_lock:
            if self._tree is None:
                self._tree = cKDTree(self.frame[["x", "y"]].to_numpy())
        distances, rows = self._tree.query(self.frame[["x", "y"]].to_numpy()[row], k=min(k + 1, len(self)))
        keep = rows != row
        return rows[keep][:k], distances[keep][:k]

    def describe(self, row: int) -> dict:
        r = self.frame.iloc[row]
        return {"run_id": self.key.run_id, "sample_id": int(r.sample_id), "seed": int(r.seed),
                "chunk": int(r.chunk), "class_id": None if r.class_id < 0 else int(r.class_id),
                "label": str(r.label), "prompt": None if pd.isna(r.prompt) else str(r.prompt),
                "tags": None if pd.isna(r.tags) else str(r.tags),
                "x": float(r.x), "y": float(r.y), "knn_overlap": float(r.knn_overlap)}


SAMPLE_COLUMNS = ["sample_id", "seed", "chunk", "class_id", "class_name", "prompt", "tags"]


def read_run_samples(lake: Lake, run_id: str) -> pa.Table:
    """A run's sample metadata (no images), strings read dictionary-encoded straight from Parquet, so 10M
    rows of repeated prompts cost a few bytes each instead of a Python string each."""
    names = [n for n in lake.list_names("samples", check_run_id(run_id)) if n.endswith(".parquet")]
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


def load_points(lake: Lake | str, key: LayoutKey) -> MapPoints:
    """One layout's coordinates aligned with its samples' metadata by sample id (the same rows as the
    `map_points` view, read directly from the layout's and samples' shards to keep memory small)."""
    import pyarrow.compute as pc

    lake = as_lake(lake)
    layout = pq.read_table(lake.path(*key.parts()), filesystem=lake.fs,
                           columns=["sample_id", "x", "y", "knn_overlap"])
    layout = layout.take(pc.sort_indices(layout.column("sample_id")))
    ids = layout.column("sample_id").to_numpy()
    samples = run_samples = read_run_samples(lake, key.run_id)
    sample_ids = samples.column("sample_id").to_numpy()
    order = np.argsort(sample_ids, kind="stable")
    at = order[np.minimum(np.searchsorted(sample_ids, ids, sorter=order), len(order) - 1)]
    present = sample_ids[at] == ids  # a layout row whose sample is not committed is left out, as in the view
    if not present.all():
        layout, ids, at = layout.filter(pa.array(present)), ids[present], at[present]
    samples = samples.take(pa.array(at))

    def categorical(column: pa.Array) -> pd.Categorical:
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        return column.to_pandas()

    tags = pc.binary_join(samples.column("tags").combine_chunks(), ", ")
    class_id = samples.column("class_id").fill_null(-1).to_numpy().astype(np.int32)
    frame = pd.DataFrame({
        "sample_id": ids,
        "x": layout.column("x").to_numpy(),
        "y": layout.column("y").to_numpy(),
        "knn_overlap": layout.column("knn_overlap").to_numpy(),
        "seed": samples.column("seed").to_numpy(),
        "chunk": samples.column("chunk").to_numpy(),
        "class_id": class_id,
        "prompt": categorical(samples.column("prompt").combine_chunks()),
        "tags": categorical(tags),
    })
    class_names = run_class_names(run_samples)  # every class of the run, so colours never depend on a subset
    if class_names:
        labels = [sample_label(i, class_names[i], None) for i in sorted(class_names)]
        codes = np.searchsorted(np.array(sorted(class_names)), np.maximum(class_id, 0))
        frame["label"] = pd.Categorical.from_codes(np.where(class_id >= 0, codes, -1), categories=labels)
    else:
        frame["label"] = frame["prompt"]
    for column in ("label", "tags"):  # integer codes for drawing (the categories fix each one's colour)
        frame[f"{column}_code"] = frame[column].cat.codes.astype(np.int32)
    runs = lake.read_runs(key.run_id)
    model = runs.column("model")[0].as_py() if runs.num_rows else None
    return MapPoints(key, frame, class_names, model)


@functools.lru_cache(maxsize=8)  # a session may show up to six at once (map, 4 side by side, ...)
def cached_points(lake_root: str, key: LayoutKey, stamp: float) -> MapPoints:
    """load_points shared by every session of a server (`stamp`: the layout file's mtime)."""
    return load_points(lake_root, key)


def points_for(lake: Lake | str, key: LayoutKey) -> MapPoints:
    lake = as_lake(lake)
    info = lake.fs.get_file_info(lake.path(*key.parts()))
    return cached_points(lake.root, key, info.mtime_ns or 0)


def aligned_onto(reference: MapPoints, moving: MapPoints) -> MapPoints:
    """`moving` with its coordinates rotated (or reflected), scaled and shifted onto `reference` by
    Procrustes over the samples both layouts hold, so the same sample sits in about the same place when
    two layouts (of paired runs, or of layers and steps not aligned at embed time) are shown side by side."""
    from store.layouts import procrustes_fit

    rows_ref = reference.rows_of(moving.frame["sample_id"].to_numpy())
    shared = rows_ref >= 0
    if shared.sum() < 3:
        return moving
    mov_xy = moving.frame[["x", "y"]].to_numpy(np.float64)
    fitted = procrustes_fit(reference.frame[["x", "y"]].to_numpy(np.float64)[rows_ref[shared]], mov_xy[shared])
    moved = fitted(mov_xy).astype(np.float32)
    frame = moving.frame.assign(x=moved[:, 0], y=moved[:, 1])
    return MapPoints(moving.key, frame, moving.class_names, moving.model)


def trajectory_layouts(layouts: list[LayoutKey], key: LayoutKey, layer_order: list[str]) -> tuple[str, list[LayoutKey]]:
    """The layouts a sample's path runs through, seen from layout `key`: ("steps", its layer's layouts at
    every laid-out step) for a multi-step run, else ("layers", its step's layouts of every layer in capture
    order). One layout per step or layer, of the same pooling; pass full layouts only (no subsets)."""
    same = [k for k in layouts if k.run_id == key.run_id and k.pooling == key.pooling]
    steps = sorted({k.step for k in same if k.layer == key.layer})
    if len(steps) > 1:
        return "steps", [pick_layout(same, key, layer=key.layer, step=s) for s in steps]
    layers = sorted({k.layer for k in same if k.step == key.step},
                    key=lambda layer: (layer_order.index(layer) if layer in layer_order else len(layer_order), layer))
    return "layers", [pick_layout(same, key, layer=layer, step=key.step) for layer in layers]


def pick_layout(keys: list[LayoutKey], current: LayoutKey, layer: str, step: int) -> LayoutKey:
    if (current.layer, current.step) == (layer, step):
        return current
    return sorted(k for k in keys if (k.layer, k.step) == (layer, step))[0]


def trajectories(lake: Lake | str, reference: MapPoints, keys: list[LayoutKey], sample_ids: np.ndarray) -> np.ndarray:
    """(samples, len(keys), 2): each sample's position in each layout, Procrustes-aligned onto
    `reference` (NaN where a layout lacks the sample)."""
    ids = np.asarray(sample_ids, dtype=np.int64)
    paths = np.full((len(ids), len(keys), 2), np.nan, dtype=np.float32)
    for j, key in enumerate(keys):
        points = reference if key == reference.key else aligned_onto(reference, points_for(lake, key))
        rows = points.rows_of(ids)
        found = rows >= 0
        paths[found, j] = points.frame[["x", "y"]].to_numpy(np.float32)[rows[found]]
    return paths


def sample_label(class_id: int | None, class_name: str | None, prompt: str | None) -> str:
    """How maps and tables name a sample: "id: class name" for class-conditional runs ("3", not "3: 3",
    when the name is the id), else its prompt."""
    if class_id is None:
        return str(prompt)
    return str(class_id) if class_name in (None, "", str(class_id)) else f"{class_id}: {class_name}"


def sample_rows(con, run_id: str, sample_ids: list[int]) -> pd.DataFrame:
    """Metadata of some samples of a run (no images), in the order asked; absent ids are left out."""
    ids = [int(i) for i in sample_ids]
    frame = con.sql("SELECT sample_id, chunk, seed, class_id, class_name, prompt FROM points "
                    "WHERE run_id = $run AND list_contains($ids, sample_id)",
                    params={"run": run_id, "ids": ids}).df()
    frame["label"] = [sample_label(None if pd.isna(c) else int(c), n, p) for c, n, p in
                      zip(frame["class_id"], frame["class_name"], frame["prompt"])]
    position = {sample: i for i, sample in enumerate(ids)}
    return frame.sort_values("sample_id", key=lambda s: s.map(position)).reset_index(drop=True)


# --- raw-space neighbours --------------------------------------------------------------------------

def graph_file(lake: Lake | str, key: LayoutKey) -> str:
    """The neighbour graph the layout was computed from (its inputs hash is in the layout's params)."""
    lake = as_lake(lake)
    inputs = layout_params(lake, key).get("inputs")
    name = f"step-{key.step:04d}-{inputs}.parquet"
    if name not in lake.list_names("indexes", key.run_id, key.layer, key.pooling):
        raise FileNotFoundError(f"no neighbour graph {name} for {key.label}; run `make embed`")
    return lake.path("indexes", key.run_id, key.layer, key.pooling, name)


def raw_neighbours(con, lake: Lake | str, key: LayoutKey, sample_id: int, k: int) -> tuple[list[int], list[float]]:
    """The k nearest samples in raw activation space (cosine), from the stored graph."""
    rows = con.sql("SELECT neighbour_ids, distances FROM read_parquet($file) WHERE sample_id = $sample",
                   params={"file": graph_file(lake, key), "sample": int(sample_id)}).fetchall()
    if not rows:
        return [], []
    ids, distances = rows[0]
    return list(ids[:k]), [float(d) for d in distances[:k]]


# --- images ------------------------------------------------------------------------------------------

def sample_image(lake: Lake | str, run_id: str, chunk: int, sample_id: int, thumbnail: bool = False) -> tuple[bytes, str]:
    """(bytes, mime type) of a sample's image or thumbnail; KeyError when there is no such sample."""
    lake = as_lake(lake)
    check_run_id(run_id)
    name = chunk_name(int(chunk))
    if name not in lake.list_names("samples", run_id):
        raise KeyError(f"no chunk {chunk} in run {run_id}")
    columns = ["sample_id", "thumbnail", "image_png"] if thumbnail else ["sample_id", "image_png"]
    table = pq.read_table(lake.path("samples", run_id, name), filesystem=lake.fs, columns=columns,
                          filters=[("sample_id", "=", int(sample_id))])
    if table.num_rows == 0:
        raise KeyError(f"no sample {sample_id} in chunk {chunk} of run {run_id}")
    if thumbnail and table.column("thumbnail")[0].is_valid:
        return table.column("thumbnail")[0].as_py(), "image/webp"
    return table.column("image_png")[0].as_py(), "image/png"


# --- selections ---------------------------------------------------------------------------------------

def selection_frame(points: MapPoints, rows: np.ndarray) -> pd.DataFrame:
    """Ids and metadata of selected rows, ready to export."""
    frame = points.frame.iloc[np.asarray(rows, dtype=np.int64)]
    out = pd.DataFrame({
        "run_id": points.key.run_id, "layer": points.key.layer, "step": points.key.step,
        "sample_id": frame["sample_id"].to_numpy(), "seed": frame["seed"].to_numpy(),
        "class_id": frame["class_id"].where(frame["class_id"] >= 0).astype("Int64").to_numpy(),
        "label": frame["label"].astype(str).to_numpy(),
        "prompt": frame["prompt"].astype(object).to_numpy(), "tags": frame["tags"].astype(object).to_numpy(),
        "x": frame["x"].to_numpy(), "y": frame["y"].to_numpy(),
    })
    return out


def export_selection(frame: pd.DataFrame, fmt: str) -> io.BytesIO:
    """CSV or Parquet bytes of a selection frame."""
    buffer = io.BytesIO()
    if fmt == "csv":
        frame.to_csv(buffer, index=False)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
    buffer.seek(0)
    return buffer
