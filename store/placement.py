"""Placing samples that a layout was not computed from (freshly generated ones, say) onto it: each goes
to the inverse-distance-weighted mean position of its k nearest layout samples in raw activation space
(cosine, exact), the interpolation `embed` uses for points beyond its fit sample; those neighbours are
returned too, so "where would it land, and what does it resemble" is one call:

    >>> placed = place_run("lake", layout_key, "gen-demo-digits-dmd2-10fd25c2")
    >>> placed[["sample_id", "x", "y", "neighbour_ids"]]
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from store.lake import Lake
from store.layouts import weighted_position
from store.lake import LayoutKey, as_lake
from store.catalogue import read_run_samples
from store.maps import points_for
from store.neighbours import exact_knn, normalise
from store.vectors import load_matrix


@functools.lru_cache(maxsize=2)
def layout_vectors(lake_root: str, key: LayoutKey, stamp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample ids, unit vectors, layout xy) of the samples a layout holds (`stamp`: the file's mtime)."""
    ids, vectors = load_matrix(lake_root, key.run_id, key.layer, key.pooling, key.step)
    points = points_for(lake_root, key)
    rows = points.rows_of(ids)
    inside = rows >= 0
    xy = points.frame[["x", "y"]].to_numpy(np.float32)[rows[inside]]
    return ids[inside], normalise(vectors[inside].astype(np.float32)), xy


def place_vectors(lake: Lake | str, key: LayoutKey, vectors: np.ndarray, k: int = 10) -> pd.DataFrame:
    """x, y, neighbour_ids and distances (cosine) for each row of `vectors` (the layout's layer and pooling)."""
    lake = as_lake(lake)
    info = lake.fs.get_file_info(lake.path(*key.parts()))
    ids, unit, xy = layout_vectors(lake.root, key, info.mtime_ns or 0)
    queries = normalise(np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1))
    if queries.shape[1] != unit.shape[1]:
        raise ValueError(f"vectors have {queries.shape[1]} values; layer {key.layer} has {unit.shape[1]}")
    rows, distances = exact_knn(unit, min(k, len(ids)), queries=queries, exclude_self=False)
    positions = weighted_position(xy, rows, distances)
    return pd.DataFrame({"x": positions[:, 0], "y": positions[:, 1], "neighbour_ids": list(ids[rows]),
                         "distances": list(distances.astype(np.float32))})


def place_run(lake: Lake | str, key: LayoutKey, run_id: str, k: int = 10) -> pd.DataFrame:
    """Every sample of `run_id` placed on the layout `key` (of another run of the same model's layer),
    from its vectors at the layout's step: sample_id, x, y, neighbour_ids, distances."""
    new_ids, vectors = load_matrix(lake, run_id, key.layer, key.pooling, key.step)
    placed = place_vectors(lake, key, vectors, k)
    placed.insert(0, "sample_id", new_ids)
    return placed


def placeable_runs(lake: Lake | str, key: LayoutKey) -> list[str]:
    """Other runs with vectors of this layout's layer and pooling (a shared feature layer such as
    `features.digits`, or the same model's layer): the runs that can be shown on the layout's map."""
    lake = as_lake(lake)
    return [run for run in lake.list_folders("activations")
            if run != key.run_id and key.pooling in lake.list_folders("activations", run, key.layer)]


@functools.lru_cache(maxsize=8)
def _overlay(lake_root: str, key: LayoutKey, run_id: str, stamp: int) -> pd.DataFrame:
    placed = place_run(lake_root, key, run_id)[["sample_id", "x", "y"]]
    samples = read_run_samples(as_lake(lake_root), run_id)
    classes = pd.DataFrame({"sample_id": samples.column("sample_id").to_numpy(),
                            "class_id": samples.column("class_id").fill_null(-1).to_numpy()})
    return placed.merge(classes, on="sample_id", how="left")


def overlay_points(lake: Lake | str, key: LayoutKey, run_id: str) -> pd.DataFrame:
    """Every sample of `run_id` placed on layout `key` (as `place_run` places them), with its class id (-1
    for none): sample_id, x, y, class_id. Remembered per layout file (its name carries its inputs)."""
    lake = as_lake(lake)
    stamp = lake.fs.get_file_info(lake.path(*key.parts())).mtime_ns or 0
    return _overlay(lake.root, key, run_id, stamp)
