"""Fidelity and diversity of a run against a reference run (its teacher, or a run of real data) in one
feature layer: per class (class-conditional runs, matched by class id) or per prompt (text runs, matched by
prompt), and over all samples. The layer is any layer of the activations table; comparisons mean most in
a fixed feature space that both runs share (e.g. a feature extractor's layer stored for each run).

Metrics on feature matrices (rows are samples), all on the features as they are, with Euclidean distances,
as FID and the k-NN manifold metrics are defined:

- `frechet_distance`: ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^1/2) of the Gaussians fitted to each
  set (FID's formula; covariances with ddof 1). The trace of the root is taken as the sum of the square
  roots of the eigenvalues of C_a^1/2 C_b C_a^1/2, a symmetric positive semi-definite matrix, which is
  stable for singular covariances. A set with no more samples than dimensions has a rank-deficient
  covariance: the distance is still defined but biased upwards and noisy (`dim` is stored beside the
  counts, and the command line marks such rows).
- `precision_recall` (Kynkäänniemi et al. 2019): each set's manifold is the union of balls around its
  samples reaching their k-th nearest other sample; precision is the share of generated samples inside
  the reference manifold, recall the share of reference samples inside the generated manifold.
- `density_coverage` (Naeem et al. 2020): density counts how many reference balls hold each generated
  sample, over k (about 1 when both sets come from one distribution, exactly 1 for identical sets);
  coverage is the share of reference balls holding at least one generated sample.
- "Inside a ball" means strictly closer than its radius, as in Naeem et al.'s reference code (prdc), so
  identical sets score precision = recall = density = coverage = 1, and a ball of radius 0 (a sample with
  k exact copies, i.e. collapse) holds nothing: a set of copies of one sample has recall 0.
- Vendi score: `store.metrics.vendi_score` (cosine kernel) of each side on its own features centred on
  its run's mean over all its samples (`store.diversity.centred`), the convention of `store.diversity`,
  so a run's figures here equal its `diversity` table's. Centring removes the large direction pooled
  activations share (every cosine similarity near 1 otherwise); a common origin would not do for two
  runs far apart in the layer, since the offset between them would become that shared direction.

`fidelity` measures one run against a reference and stores the table in the lake (the `fidelity` view):

    <lake>/fidelity/<run_id>/<reference run>/<layer>/<pooling>/step-NNNN-k<k>-refNNNN.parquet

`reading` turns two runs' rows against the same reference into one line for a dashboard, e.g.
"class 1: student recall 0.41 vs teacher 0.78 against real digits".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.diversity import MAX_GROUP, centred
from store.lake import FIDELITY_SCHEMA, Lake, as_lake, check_run_id, fidelity_parts
from store.metrics import vendi_score

BLOCK = 1024  # rows of a distance matrix computed at once (1024 x 5,000 float64: 40 MB)
MIN_SAMPLES = 10  # per side, for the Fréchet distance and the k-NN metrics
METRICS = ("frechet_distance", "precision", "recall", "density", "coverage", "vendi_score")
BOUNDED = ("precision", "recall", "coverage")  # shares in [0, 1]


class FidelityError(ValueError):
    """A comparison that cannot be made (one line: the problem; the fix)."""


# --- metrics on feature matrices -------------------------------------------------------------------------

def features(x: np.ndarray, name: str = "features") -> np.ndarray:
    """`x` as a float64 matrix of rows (a 1-D array is one feature per sample)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise FidelityError(f"{name} must be a matrix of samples (rows) by features; got shape {x.shape}")
    return x


def same_width(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = features(a), features(b)
    if a.shape[1] != b.shape[1]:
        raise FidelityError(f"the sets have {a.shape[1]} and {b.shape[1]} features; compare them in one feature space")
    return a, b


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of `a` and of `b` (each at least 2 rows)."""
    a, b = same_width(a, b)
    if min(len(a), len(b)) < 2:
        raise FidelityError(f"a Fréchet distance needs at least 2 samples per set; got {len(a)} and {len(b)}")
    shift = a.mean(axis=0) - b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    value = shift @ shift + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return float(max(value, 0.0))


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of `x` and of `y`, summed from the differences: exactly
    symmetric, and exactly 0 between equal rows (the ball tests below compare a distance with a radius
    computed from the same pair, which a |x|^2 + |y|^2 - 2xy expansion would round differently)."""
    from scipy.spatial.distance import cdist

    return cdist(x, y, "sqeuclidean")


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    if k < 1 or len(x) <= k:
        raise FidelityError(f"{len(x)} samples cannot each have {k} nearest other samples; give 1 <= k < {len(x)}")
    radii = np.empty(len(x))
    for start in range(0, len(x), BLOCK):
        block = squared_distances(x[start:start + BLOCK], x)
        rows = np.arange(len(block))
        block[rows, start + rows] = np.inf  # not its own neighbour
        radii[start:start + len(block)] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return radii


def ball_hits(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point, how many balls (centres, squared radii) hold it strictly inside; for each ball, whether
    it holds a point."""
    counts = np.zeros(len(points), dtype=np.int64)
    covered = np.zeros(len(centres), dtype=bool)
    for start in range(0, len(points), BLOCK):
        inside = squared_distances(points[start:start + BLOCK], centres) < radii[None, :]
        counts[start:start + len(inside)] = inside.sum(axis=1)
        covered |= inside.any(axis=0)
    return counts, covered


def manifold_scores(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real` (k-NN balls, Euclidean)."""
    real, fake = same_width(real, fake)
    held, covered = ball_hits(fake, real, knn_radii(real, k))
    in_fake, _ = ball_hits(real, fake, knn_radii(fake, k))
    return {"precision": float(np.mean(held > 0)), "recall": float(np.mean(in_fake > 0)),
            "density": float(held.sum() / (k * len(fake))), "coverage": float(np.mean(covered))}


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """(precision, recall) of generated samples `fake` against `real` (Kynkäänniemi et al. 2019)."""
    scores = manifold_scores(real, fake, k)
    return scores["precision"], scores["recall"]


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of generated samples `fake` against `real` (Naeem et al. 2020)."""
    real, fake = same_width(real, fake)
    held, covered = ball_hits(fake, real, knn_radii(real, k))
    return float(held.sum() / (k * len(fake))), float(np.mean(covered))


# --- one run against a reference, per class or prompt ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Group:
    """The samples of one class or prompt (`rows`: positions in a side's matrix)."""

    kind: str  # "class" or "prompt"
    class_id: int | None
    label: str
    rows: np.ndarray


@dataclasses.dataclass(frozen=True)
class Side:
    """One run's vectors of a layer at one step, and its samples grouped by class or prompt."""

    run_id: str
    step: int
    vectors: np.ndarray  # as stored (float32): the Fréchet distance and the k-NN metrics
    centred: np.ndarray  # on the run's mean: the Vendi score
    groups: dict[tuple, Group]

    def everything(self) -> np.ndarray:
        return np.arange(len(self.vectors))


def sample_rows(samples: pa.Table, ids: np.ndarray, run_id: str) -> np.ndarray:
    """Positions in `samples` of each sample id (every id must be there)."""
    sample_ids = samples.column("sample_id").to_numpy()
    order = np.argsort(sample_ids, kind="stable")
    at = np.minimum(np.searchsorted(sample_ids, ids, sorter=order), len(order) - 1)
    rows = order[at]
    if not np.array_equal(sample_ids[rows], ids):
        raise FidelityError(f"run {run_id} has vectors of samples without metadata; is an ingest still writing it?")
    return rows


def sample_groups(lake: Lake, run_id: str, ids: np.ndarray) -> dict[tuple, Group]:
    """The samples `ids` of a run grouped by class id (class-conditional) or prompt (text), keyed
    ("class", id) or ("prompt", text)."""
    from store.catalogue import read_run_samples, sample_label

    samples = read_run_samples(lake, run_id)
    rows = sample_rows(samples, ids, run_id)
    class_ids = samples.column("class_id").take(pa.array(rows))
    has_class = np.asarray(pc.is_valid(class_ids).to_numpy(), dtype=bool)
    class_ids = class_ids.fill_null(-1).to_numpy()
    groups = {}
    for class_id in np.unique(class_ids[has_class]).tolist():
        members = np.flatnonzero(has_class & (class_ids == class_id))
        name = samples.column("class_name")[int(rows[members[0]])].as_py()
        groups[("class", class_id)] = Group("class", class_id, sample_label(class_id, name, None), members)
    by_prompt: dict[str, list[int]] = {}
    texts = np.flatnonzero(~has_class)
    for position, prompt in zip(texts.tolist(), samples.column("prompt").take(pa.array(rows[texts])).to_pylist()):
        by_prompt.setdefault(sample_label(None, None, prompt), []).append(position)
    for prompt, members in by_prompt.items():
        groups[("prompt", prompt)] = Group("prompt", None, prompt, np.array(members, dtype=np.int64))
    return groups


def load_side(lake: Lake, run_id: str, layer: str, pooling: str, step: int | None) -> Side:
    from store.neighbours import resolve_step
    from store.vectors import load_matrix

    step = resolve_step(lake, check_run_id(run_id), layer, pooling, step)
    ids, vectors = load_matrix(lake, run_id, layer, pooling, step)
    return Side(run_id, step, vectors, centred(vectors), sample_groups(lake, run_id, ids))


def measured_rows(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All of `rows`, or a seeded sample of `MAX_GROUP` of them (the k-NN metrics and Vendi cost n^2)."""
    return rows if len(rows) <= MAX_GROUP else np.sort(rng.choice(rows, MAX_GROUP, replace=False))


def compare_group(run: Side, reference: Side, rows: np.ndarray, reference_rows: np.ndarray, k: int,
                  min_samples: int, rng: np.random.Generator) -> dict:
    """Every metric of one group, the run's `rows` (generated) against the reference's `reference_rows`,
    with nulls where a side is too small (see `fidelity`)."""
    measured, reference_measured = measured_rows(rows, rng), measured_rows(reference_rows, rng)
    row = {"samples": len(rows), "reference_samples": len(reference_rows), "measured": len(measured),
           "reference_measured": len(reference_measured),
           "vendi_score": vendi_score(run.centred[measured]) if len(rows) else None,
           "reference_vendi_score": vendi_score(reference.centred[reference_measured]) if len(reference_rows) else None,
           "frechet_distance": None, "precision": None, "recall": None, "density": None, "coverage": None}
    if min(len(rows), len(reference_rows)) >= min_samples:
        row["frechet_distance"] = frechet_distance(run.vectors[rows], reference.vectors[reference_rows])
        if min(len(measured), len(reference_measured)) > k:
            row |= manifold_scores(reference.vectors[reference_measured], run.vectors[measured], k)
    return row


def fidelity(lake: Lake | str, run_id: str, reference_run: str, layer: str, pooling: str = "mean",
             step: int | None = None, k: int = 5, min_samples: int = MIN_SAMPLES, reference_step: int | None = None,
             seed: int = 0) -> pa.Table:
    """Fidelity and diversity of `run_id` against `reference_run` in one layer: an "all" row (every sample
    of both runs), then one row per class id or prompt found in either run, in order; stored in the lake.

    `step` and `reference_step` default to each run's last captured step. Nulls: the Fréchet distance needs
    at least `min_samples` (>= 2) samples on both sides, precision, recall, density and coverage that and
    more than `k` measured samples on both sides; a Vendi score needs one sample on its side (a class that
    only one run has gets its counts, its own Vendi score and nulls elsewhere). The Fréchet distance uses
    every sample; the k-NN metrics and Vendi scores use at most `MAX_GROUP` per side (`measured`, seeded).
    """
    lake = as_lake(lake)
    if k < 1 or min_samples < 2:
        raise FidelityError(f"k {k} and min_samples {min_samples} are out of range; give k >= 1 and min_samples >= 2")
    run = load_side(lake, run_id, layer, pooling, step)
    reference = load_side(lake, reference_run, layer, pooling, reference_step)
    dim = run.vectors.shape[1]
    if dim != reference.vectors.shape[1]:
        raise FidelityError(f"layer {layer} has {dim} dimensions in run {run_id} but {reference.vectors.shape[1]} in "
                            f"reference {reference_run}; compare runs in one feature space (one extractor's layer)")
    rng = np.random.default_rng(seed)
    base = {"run_id": run_id, "reference_run": reference_run, "layer": layer, "pooling": pooling, "step": run.step,
            "reference_step": reference.step, "dim": dim, "k": k}
    rows = [base | {"kind": "all", "class_id": None, "label": "all"}
            | compare_group(run, reference, run.everything(), reference.everything(), k, min_samples, rng)]
    for key in sorted(run.groups.keys() | reference.groups.keys()):
        mine, other = run.groups.get(key), reference.groups.get(key)
        named = mine or other
        members = mine.rows if mine else np.empty(0, dtype=np.int64)
        reference_members = other.rows if other else np.empty(0, dtype=np.int64)
        rows.append(base | {"kind": named.kind, "class_id": named.class_id, "label": named.label}
                    | compare_group(run, reference, members, reference_members, k, min_samples, rng))
    table = pa.Table.from_pylist(rows, schema=FIDELITY_SCHEMA)
    lake.remove_orphan_temporaries("fidelity", run_id)  # what a killed run of this left behind
    lake.write_parquet(table, *fidelity_parts(run_id, reference_run, layer, pooling, run.step, k, reference.step))
    return table


# --- reading two runs against one reference ---------------------------------------------------------------

def shown_value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if metric in BOUNDED or metric == "density" else f"{value:.3g}"


def reading(row: Mapping, other: Mapping, metric: str = "recall", names: Mapping[str, str] | None = None) -> str:
    """One line comparing two runs' rows of the same class (or prompt) against the same reference, e.g.
    "class 1: student recall 0.41 vs teacher 0.78 against real digits". `names` maps run ids to the names
    shown (default: the run ids)."""
    if metric not in METRICS:
        raise FidelityError(f"unknown metric {metric!r}; give one of {', '.join(METRICS)}")
    for key in ("reference_run", "layer", "pooling", "kind", "label"):
        if row[key] != other[key]:
            raise FidelityError(f"the rows differ in {key} ({row[key]!r} and {other[key]!r}); "
                                "compare two runs' rows of one label against one reference")
    names = names or {}
    group = {"all": "all samples", "class": f"class {row['label']}", "prompt": f"prompt {row['label']!r}"}[row["kind"]]
    return (f"{group}: {names.get(row['run_id'], row['run_id'])} {metric.replace('_', ' ')} "
            f"{shown_value(metric, row[metric])} vs {names.get(other['run_id'], other['run_id'])} "
            f"{shown_value(metric, other[metric])} against {names.get(row['reference_run'], row['reference_run'])}")


def readings(rows: list[Mapping], others: list[Mapping], metric: str = "recall",
             names: Mapping[str, str] | None = None) -> list[str]:
    """`reading` of every label that both tables have, in the first table's order."""
    theirs = {(r["kind"], r["label"]): r for r in others}
    return [reading(r, theirs[key], metric, names) for r in rows if (key := (r["kind"], r["label"])) in theirs]


# --- reading stored tables (the dashboard) -----------------------------------------------------------------

def stored_references(con, run_id: str) -> list[tuple[str, str]]:
    """(reference run, layer) pairs a run was measured against, as stored."""
    return [tuple(r) for r in con.sql("SELECT DISTINCT reference_run, layer FROM fidelity WHERE run_id = $run "
                                      "ORDER BY 1, 2", params={"run": run_id}).fetchall()]


def stored_fidelity(con, run_id: str, reference_run: str, layer: str):
    """A run's stored rows against one reference in one layer (the newest table when several steps or k were
    measured): the "all" row first, then classes by id or prompts by name. A pandas DataFrame."""
    frame = con.sql(
        "SELECT * FROM fidelity WHERE run_id = $run AND reference_run = $ref AND layer = $layer "
        "QUALIFY dense_rank() OVER (ORDER BY step DESC, reference_step DESC, k) = 1",
        params={"run": run_id, "ref": reference_run, "layer": layer}).df()
    order = frame["kind"].map({"all": 0, "class": 1, "prompt": 2})
    return frame.assign(_order=order).sort_values(["_order", "class_id", "label"]).drop(columns="_order") \
        .reset_index(drop=True)
