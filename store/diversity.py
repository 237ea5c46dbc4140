"""Per-class (or per-prompt) diversity of one layer of a run: signals of mode collapse, a known risk of
distilled one-step generators. For every class or prompt: the mean pairwise cosine distance, the k-NN
class purity (share of each sample's k nearest neighbours, among all samples, with its own label), the
number of near-duplicate pairs (cosine distance at most `threshold`) and the Vendi score (the effective
number of distinct samples). Distances are taken between activations centred on the layer's mean over all
samples: pooled activations share a large common direction (all cosine distances near 0 otherwise), and
centring measures how samples differ from each other rather than from the origin. Stored in the lake and read by the `diversity` view:

    <lake>/diversity/<run_id>/<layer>/<pooling>/step-NNNN-t<threshold>.parquet
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from store.lake import DIVERSITY_SCHEMA, Lake, check_run_id, diversity_parts
from store.metrics import mean_pairwise_distance, near_duplicate_pairs, vendi_score
from store.neighbours import exact_knn, normalise
from store.vectors import load_matrix

MAX_GROUP = 5_000  # larger groups are measured on a seeded sample of this many (pairwise costs n^2)


def labels_of(lake: Lake, run_id: str, ids: np.ndarray) -> np.ndarray:
    """The class name (as "id: name") or the prompt of each sample id."""
    from store.catalogue import read_run_samples, sample_label

    samples = read_run_samples(lake, run_id)
    order = np.argsort(samples.column("sample_id").to_numpy())
    rows = order[np.searchsorted(samples.column("sample_id").to_numpy(), ids, sorter=order)]
    class_ids = samples.column("class_id").to_pylist()
    names = samples.column("class_name").to_pylist()
    prompts = samples.column("prompt").to_pylist()
    return np.array([sample_label(class_ids[r], names[r], prompts[r]) for r in rows], dtype=object)


def centred(vectors: np.ndarray) -> np.ndarray:
    """Vectors minus their mean (float32)."""
    vectors = vectors.astype(np.float32)
    return vectors - vectors.mean(axis=0, dtype=np.float64).astype(np.float32)


def diversity(lake: Lake | str, run_id: str, layer: str, pooling: str = "mean", step: int | None = None,
              k: int = 10, threshold: float = 0.01, seed: int = 0) -> pa.Table:
    """One row per class or prompt, most collapsed (lowest Vendi score) first; stored in the lake."""
    from store.neighbours import resolve_step

    lake = lake if isinstance(lake, Lake) else Lake(lake)
    lake.remove_orphan_temporaries("diversity", check_run_id(run_id))  # what a killed run of this left behind
    step = resolve_step(lake, check_run_id(run_id), layer, pooling, step)
    ids, vectors = load_matrix(lake, run_id, layer, pooling, step)
    vectors = centred(vectors)
    labels = labels_of(lake, run_id, ids)
    neighbours, _ = exact_knn(normalise(vectors.astype(np.float32)), min(k, len(ids) - 1))
    purity = (labels[neighbours] == labels[:, None]).mean(axis=1)
    rng = np.random.default_rng(seed)
    rows = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels == label)
        measured = members if len(members) <= MAX_GROUP else np.sort(rng.choice(members, MAX_GROUP, replace=False))
        group = vectors[measured]
        pairs = near_duplicate_pairs(group, threshold) if len(group) > 1 else []
        rows.append({"run_id": run_id, "layer": layer, "pooling": pooling, "step": step, "label": label,
                     "samples": len(members), "measured": len(measured),
                     "mean_pairwise_distance": mean_pairwise_distance(group), "knn_purity": float(purity[members].mean()),
                     "near_duplicate_pairs": len(pairs), "threshold": threshold, "vendi_score": vendi_score(group),
                     "example_pair": [int(ids[measured[pairs[0][0]]]), int(ids[measured[pairs[0][1]]])] if pairs else []})
    rows.sort(key=lambda r: (r["vendi_score"], r["label"]))
    table = pa.Table.from_pylist(rows, schema=DIVERSITY_SCHEMA)
    lake.write_parquet(table, *diversity_parts(run_id, layer, pooling, step, threshold))
    return table


# --- reading stored tables (the dashboard's diversity view) -------------------------------------------

def stored_diversity(con, run_id: str, layer: str, pooling: str = "mean", threshold: float | None = None,
                     partner: str | None = None):
    """A stored diversity table as a DataFrame, most collapsed first. With `partner` (a paired run, e.g.
    the teacher), its figures for the same label and layer are added as `<column>_partner` columns."""
    thresholds = stored_thresholds(con, run_id, layer, pooling)
    if not thresholds:
        return None
    chosen = threshold if threshold is not None else thresholds[0]
    query = ("SELECT label, samples, measured, mean_pairwise_distance, knn_purity, near_duplicate_pairs, "
             "vendi_score, example_pair, step, threshold FROM diversity WHERE run_id = $r AND layer = $l "
             "AND pooling = $p AND threshold = $t AND step = (SELECT max(step) FROM diversity WHERE run_id = $r "
             "AND layer = $l AND pooling = $p AND threshold = $t)")
    frame = con.sql(query, params={"r": run_id, "l": layer, "p": pooling, "t": chosen}).df()
    if partner:
        theirs = con.sql(query, params={"r": partner, "l": layer, "p": pooling, "t": chosen}).df()
        if len(theirs):
            columns = ["mean_pairwise_distance", "knn_purity", "near_duplicate_pairs", "vendi_score"]
            theirs = theirs[["label", *columns]].rename(columns={c: f"{c}_partner" for c in columns})
            frame = frame.merge(theirs, on="label", how="left")
    return frame.sort_values(["vendi_score", "label"]).reset_index(drop=True)


def stored_thresholds(con, run_id: str, layer: str, pooling: str = "mean") -> list[float]:
    """Near-duplicate thresholds a run's layer has stored tables for, smallest first."""
    rows = con.sql("SELECT DISTINCT threshold FROM diversity WHERE run_id = $r AND layer = $l AND pooling = $p "
                   "ORDER BY 1", params={"r": run_id, "l": layer, "p": pooling}).fetchall()
    return [r[0] for r in rows]


def stored_diversity_layers(con, run_id: str) -> list[str]:
    """Layers of a run with a stored diversity table, in capture order."""
    from store.catalogue import in_capture_order, run_layers

    stored = {r[0] for r in con.sql("SELECT DISTINCT layer FROM diversity WHERE run_id = $r",
                                    params={"r": run_id}).fetchall()}
    order = run_layers(con, run_id)
    return in_capture_order(stored, order)
