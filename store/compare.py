"""Paired runs: the same plan (sample ids, seeds, classes or prompts) through two models, e.g. the
one-step student `digits-dmd2` against its teacher `digits-edm` (`make demo` writes both).

For every layer both runs captured (each at its last step), `compare_runs` measures how alike the two
models' representations of the same samples are: the mean k-NN Jaccard overlap in raw activation space,
linear CKA, and the samples whose neighbourhoods changed most. The table is stored in the lake and read
by the `comparisons` view:

    <lake>/comparisons/<run_a>--<run_b>/<pooling>-k<k>.parquet
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from store.catalogue import stored_layers
from store.lake import COMPARISONS_SCHEMA, Lake, check_run_id, comparison_parts
from store.metrics import linear_cka
from store.neighbours import exact_knn, normalise
from store.vectors import load_matrix


MOST_CHANGED = 20


class PairingError(ValueError):
    pass


def check_paired(lake: Lake, run_a: str, run_b: str) -> int:
    """Number of paired samples; refuses runs whose plans differ (ids, seeds, classes, prompts)."""
    from store.views import connect

    rows = connect(lake.root).sql(
        "SELECT count(*) FILTER (WHERE a.sample_id IS NULL OR b.sample_id IS NULL "
        "  OR a.seed <> b.seed OR a.class_id IS DISTINCT FROM b.class_id OR a.prompt IS DISTINCT FROM b.prompt), "
        "count(*) FROM (SELECT * FROM points WHERE run_id = $a) a "
        "FULL JOIN (SELECT * FROM points WHERE run_id = $b) b USING (sample_id)",
        params={"a": check_run_id(run_a), "b": check_run_id(run_b)}).fetchall()[0]
    mismatched, total = rows
    if total == 0:
        raise PairingError(f"runs {run_a} and {run_b} have no samples in {lake.uri}")
    if mismatched:
        raise PairingError(f"runs {run_a} and {run_b} are not paired: {mismatched} of {total} samples differ in "
                           "id, seed, class or prompt; ingest both with the same plan and --seed")
    return total


def knn_jaccard_rows(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per row: Jaccard overlap of its k nearest rows (cosine, exact, blocked) in `a` and in `b`."""
    na, _ = exact_knn(normalise(a.astype(np.float32)), k)
    nb, _ = exact_knn(normalise(b.astype(np.float32)), k)
    shared = (na[:, :, None] == nb[:, None, :]).any(2).sum(1)
    return shared / (2 * k - shared)


def compare_runs(lake: Lake | str, run_a: str, run_b: str, pooling: str = "mean", k: int = 10,
                 layers: list[str] | None = None, step_a: int | None = None, step_b: int | None = None) -> pa.Table:
    """Per common layer: mean k-NN Jaccard, linear CKA and the most changed samples; stored in the lake.
    Each run is read at `step_a` / `step_b` (default: its last step)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    lake.remove_orphan_temporaries("comparisons")  # what a killed compare left behind
    check_paired(lake, run_a, run_b)
    common = [layer for layer in stored_layers(lake, run_a, pooling) if layer in stored_layers(lake, run_b, pooling)]
    chosen = layers or common
    missing = [layer for layer in chosen if layer not in common]
    if missing:
        raise PairingError(f"layer {missing[0]} was not captured by both runs; common layers: {', '.join(common)}")
    rows = []
    for layer in chosen:
        sa = step_a if step_a is not None else step_of(lake, run_a, layer, pooling)
        sb = step_b if step_b is not None else step_of(lake, run_b, layer, pooling)
        ids_a, a = load_matrix(lake, run_a, layer, pooling, sa)
        ids_b, b = load_matrix(lake, run_b, layer, pooling, sb)
        if not np.array_equal(ids_a, ids_b):
            raise PairingError(f"layer {layer}: the runs' committed samples differ; finish both runs first")
        jaccard = knn_jaccard_rows(a, b, min(k, len(a) - 1))
        order = np.argsort(jaccard, kind="stable")[:MOST_CHANGED]
        rows.append({"run_a": run_a, "run_b": run_b, "layer": layer, "pooling": pooling,
                     "step_a": sa, "step_b": sb,
                     "samples": len(ids_a), "k": k, "mean_knn_jaccard": float(jaccard.mean()),
                     "linear_cka": linear_cka(a, b), "most_changed": ids_a[order].tolist(),
                     "most_changed_jaccard": jaccard[order].tolist()})
    table = pa.Table.from_pylist(rows, schema=COMPARISONS_SCHEMA)
    steps = None if step_a is None and step_b is None else (step_a, step_b)
    lake.write_parquet(table, *comparison_parts(run_a, run_b, pooling, k, steps))
    return table


def step_of(lake: Lake, run_id: str, layer: str, pooling: str) -> int:
    from store.neighbours import resolve_step

    return resolve_step(lake, run_id, layer, pooling, None)


# --- reading stored comparisons (the dashboard's comparison view) ------------------------------------

def stored_comparisons(con) -> list[dict]:
    """Every stored comparison: one dict per (run_a, run_b, pooling, k, step_a, step_b)."""
    rows = con.sql("SELECT DISTINCT run_a, run_b, pooling, k, step_a, step_b FROM comparisons "
                   "ORDER BY run_a, run_b, pooling, k, step_a, step_b").fetchall()
    return [dict(zip(("run_a", "run_b", "pooling", "k", "step_a", "step_b"), r)) for r in rows]


def comparison_table(con, run_a: str, run_b: str, pooling: str, k: int, step_a: int, step_b: int):
    """One stored comparison's rows as a DataFrame, layers in capture order (input to output)."""
    from store.catalogue import in_capture_order, run_layers

    frame = con.sql("SELECT * FROM comparisons WHERE run_a = $a AND run_b = $b AND pooling = $pooling AND k = $k "
                    "AND step_a = $sa AND step_b = $sb",
                    params={"a": run_a, "b": run_b, "pooling": pooling, "k": int(k), "sa": int(step_a),
                            "sb": int(step_b)}).df()
    depth = {layer: i for i, layer in enumerate(in_capture_order(set(frame["layer"]), run_layers(con, run_a)))}
    return frame.sort_values("layer", key=lambda layers: layers.map(depth), kind="stable").reset_index(drop=True)


def partners(con, run_id: str) -> list[str]:
    """Runs compared with this one (paired: same plan), e.g. the teacher of a student."""
    rows = con.sql("SELECT DISTINCT CASE WHEN run_a = $r THEN run_b ELSE run_a END FROM comparisons "
                   "WHERE (run_a = $r OR run_b = $r) AND run_a <> run_b ORDER BY 1", params={"r": run_id}).fetchall()
    return [r[0] for r in rows]
