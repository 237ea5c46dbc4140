"""Export a layout for Apple's Embedding Atlas (https://apple.github.io/embedding-atlas): one Parquet file
with the layout's `x` and `y`, the raw-space `neighbors` in Atlas's format (a struct of zero-based row
`ids` and `distances`, from the stored neighbour graph), an `image` column (PNG or WebP bytes, which
Atlas recognises by their magic bytes) and the samples' metadata. Open it with

    embedding-atlas atlas.parquet --x x --y y --neighbors neighbors --image image --text label --disable-projection

(`python -m store atlas` prints this command for the file it writes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store.lake import Lake, chunk_name
from store.catalogue import graph_file
from store.lake import LayoutKey, as_lake
from store.maps import load_points

IMAGE_CHOICES = ("thumb", "full", "none")


def atlas_command(path: str | Path) -> str:
    return (f"embedding-atlas {path} --x x --y y --neighbors neighbors --image image --text label "
            "--disable-projection")


def export_atlas(lake: Lake | str, key: LayoutKey, out: str | Path, k: int = 15, images: str = "thumb") -> int:
    """Write `key`'s layout for Embedding Atlas to `out` (atomically); returns the number of rows."""
    if images not in IMAGE_CHOICES:
        raise ValueError(f"unknown --images {images!r}; use one of {', '.join(IMAGE_CHOICES)}")
    lake = as_lake(lake)
    points = load_points(lake, key)
    frame = points.frame
    ids = frame["sample_id"].to_numpy()
    graph = pq.read_table(graph_file(lake, key), filesystem=lake.fs, columns=["sample_id", "neighbour_ids", "distances"])
    order = np.argsort(graph.column("sample_id").to_numpy())
    graph = graph.take(pa.array(order))
    graph_ids = graph.column("sample_id").to_numpy()
    at = np.searchsorted(graph_ids, ids)
    neighbour_lists = graph.column("neighbour_ids").to_pylist()
    distance_lists = graph.column("distances").to_pylist()
    neighbours = []
    for sample, position in zip(ids, at):
        if position >= len(graph_ids) or graph_ids[position] != sample:
            neighbours.append({"ids": [], "distances": []})
            continue
        rows = points.rows_of(neighbour_lists[position])
        kept = [(int(r), float(d)) for r, d in zip(rows, distance_lists[position]) if r >= 0][:k]
        neighbours.append({"ids": [r for r, _ in kept], "distances": [d for _, d in kept]})
    table = pa.table({
        "sample_id": ids,
        "run_id": pa.array([key.run_id] * len(ids)),
        "layer": pa.array([key.layer] * len(ids)),
        "step": pa.array(np.full(len(ids), key.step, dtype=np.int16)),
        "x": frame["x"].to_numpy(),
        "y": frame["y"].to_numpy(),
        "label": pa.array(frame["label"].astype(str).to_numpy()),
        "class_id": pa.array(frame["class_id"].to_numpy(), mask=frame["class_id"].to_numpy() < 0),
        "prompt": strings(frame["prompt"]),
        "tags": strings(frame["tags"]),
        "seed": frame["seed"].to_numpy(),
        "knn_overlap": frame["knn_overlap"].to_numpy(),
        "neighbors": pa.array(neighbours, type=pa.struct([("ids", pa.list_(pa.int32())),
                                                         ("distances", pa.list_(pa.float32()))])),
    })
    if images != "none":
        table = table.append_column("image", image_column(lake, key.run_id, frame, images == "thumb"))
    out = Path(out)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return table.num_rows


def strings(column) -> pa.Array:
    """A categorical column as strings, missing values as nulls."""
    return pa.array([None if value != value or value is None else str(value) for value in column.astype(object)],
                    type=pa.string())


def image_column(lake: Lake, run_id: str, frame, thumbnails: bool) -> pa.Array:
    """Each row's image bytes as {"bytes": ...}, read chunk by chunk (a thumbnail when asked and stored)."""
    by_id: dict[int, bytes] = {}
    columns = ["sample_id", "image_png"] + (["thumbnail"] if thumbnails else [])
    for chunk in sorted(set(frame["chunk"].tolist())):
        table = pq.read_table(lake.path("samples", run_id, chunk_name(int(chunk))), filesystem=lake.fs,
                              columns=columns)
        thumbs = table.column("thumbnail").to_pylist() if thumbnails else [None] * table.num_rows
        for sample, png, thumb in zip(table.column("sample_id").to_pylist(), table.column("image_png").to_pylist(),
                                      thumbs):
            by_id[sample] = thumb if thumb is not None else png
    values = [{"bytes": by_id.get(int(s))} for s in frame["sample_id"]]
    return pa.array(values, type=pa.struct([("bytes", pa.binary())]))
