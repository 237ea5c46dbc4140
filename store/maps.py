"""What a map browser asks of the lake, answered read-only: one layout's points with their metadata (held
in memory as compact columns), filters, the nearest point to a click, raw-space and 2-D neighbours,
alignment and trajectories between layouts, selections, and sample images. Which runs and layouts exist
is `store.catalogue`'s business.

Every query that carries a user value is parameterised; lake paths are built only from names listed in
the lake or checked against the run-id pattern, so no id can reach a file outside it.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.catalogue import graph_file, in_capture_order, read_run_samples, run_class_names, sample_label
from store.lake import Lake, LayoutKey, as_lake, check_run_id, chunk_name


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
    layers = in_capture_order({k.layer for k in same if k.step == key.step}, layer_order)
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
    if name not in lake.shard_names("samples", run_id):
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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as formulas (a prompt "=HYPERLINK(...)") prefixed with a single
    quote, which spreadsheets show as text; numbers are left alone."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or isinstance(out[column].dtype, (pd.CategoricalDtype, pd.StringDtype)):
            out[column] = [f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v
                           for v in out[column].astype(object)]
    return out


def export_selection(frame: pd.DataFrame, fmt: str) -> io.BytesIO:
    """CSV or Parquet bytes of a selection frame. CSV cells that would run as spreadsheet formulas are
    neutralised; Parquet keeps the exact text."""
    buffer = io.BytesIO()
    if fmt == "csv":
        # RFC 4180 line ends: a carriage return inside a cell is then quoted, not read as a new row
        neutralise_formulas(frame).to_csv(buffer, index=False, lineterminator="\r\n")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
    buffer.seek(0)
    return buffer
