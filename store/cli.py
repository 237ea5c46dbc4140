"""`python -m store ...`: ad hoc SQL over the lake, layouts and neighbours.

    python -m store sql --lake lake "SELECT class_name, count(*) FROM samples GROUP BY 1"
    python -m store sql --lake lake            # an SQL prompt on the views (store/sql_shell.py)
    python -m store embed --lake lake          # neighbour graphs + aligned UMAP layouts, latest complete run
    python -m store neighbours --layer enc.4x4_block0 --sample 42 --k 10
    python -m store fidelity --run student,teacher --reference real --layer features.digits --k 5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from store.options import (FIT_SAMPLE_MIN, INT32_MAX, INT64_MAX, MAX_SAMPLES, STEP_MAX, UMAP_SEED_MAX,
                           OneLineParser, bounded_int, int_list)
from store.shards import plain_warning_lines

# Every integer option's range (store/options.py says why each bound is what it is).
COUNT = bounded_int(1, INT32_MAX)
K = bounded_int(1, INT32_MAX, "k is stored as a 32-bit integer")
STEP = bounded_int(0, STEP_MAX, "steps are stored as 16-bit integers")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m store", description="Query the lake.")
    commands = parser.add_subparsers(dest="command", required=True)
    sql = commands.add_parser("sql", help="run one query, or open an SQL prompt on the views")
    sql.add_argument("query", nargs="?", help="SQL to run; omit it for an SQL prompt (statements end with ;)")
    sql.add_argument("--lake", default="lake", help="lake folder (default: ./lake)")
    sql.add_argument("--max-rows", type=COUNT, default=100, help="rows to print")
    sql.set_defaults(handler=run_sql)

    embed = commands.add_parser("embed", help="neighbour graphs and aligned UMAP layouts for a run's layers")
    embed.add_argument("--lake", default="lake", help="lake folder (default: ./lake)")
    embed.add_argument("--run", help="run id, comma-separated run ids, or `all` (default: the latest complete run)")
    embed.add_argument("--layers", help="comma-separated layers (default: every captured layer)")
    embed.add_argument("--step", type=bounded_int(0, STEP_MAX, words=("all",)),
                       help="sampling step, or `all` for every captured step (default: the last)")
    embed.add_argument("--pool", default="mean", help="pooling (default: mean)")
    embed.add_argument("--n-neighbors", type=bounded_int(2, INT32_MAX), default=15)
    embed.add_argument("--min-dist", type=float, default=0.1)
    embed.add_argument("--pca", type=bounded_int(0, INT32_MAX), default=50,
                       help="PCA width for wider layers; 0 turns PCA off")
    embed.add_argument("--standardize", action="store_true", help="z-score each dimension first")
    embed.add_argument("--seed", type=bounded_int(0, UMAP_SEED_MAX, "UMAP takes 32-bit seeds"), default=0)
    embed.add_argument("--fit-sample", type=bounded_int(FIT_SAMPLE_MIN, INT32_MAX), default=50_000,
                       help="fit UMAP on this many points, place the rest")
    embed.add_argument("--no-align", action="store_true", help="lay out every layer independently")
    embed.add_argument("--quiet", action="store_true")
    embed.set_defaults(handler=run_embed)

    compare = commands.add_parser("compare", help="paired runs (same plan, two models): Jaccard and CKA per layer")
    compare.add_argument("--lake", default="lake")
    compare.add_argument("--runs", required=True, help="two run ids, comma-separated: A,B")
    compare.add_argument("--pool", default="mean")
    compare.add_argument("--k", type=K, default=10)
    compare.add_argument("--steps", type=int_list(0, STEP_MAX, "steps are stored as 16-bit integers"),
                         help="steps to compare, A,B (default: each run's last step)")
    compare.set_defaults(handler=run_compare)

    atlas = commands.add_parser("atlas", help="export a layout for Apple's Embedding Atlas (one Parquet file)")
    atlas.add_argument("--lake", default="lake")
    atlas.add_argument("--run", required=True)
    atlas.add_argument("--layer", required=True)
    atlas.add_argument("--step", type=STEP, help="step (default: the last laid out)")
    atlas.add_argument("--pool", default="mean")
    atlas.add_argument("--k", type=K, default=15, help="neighbours per point (default 15)")
    atlas.add_argument("--images", default="thumb", help="thumb (default), full or none")
    atlas.add_argument("--out", default="atlas.parquet", help="output file (default: atlas.parquet)")
    atlas.set_defaults(handler=run_atlas)

    div = commands.add_parser("diversity", help="per-class (or per-prompt) diversity per layer: mode-collapse signals")
    div.add_argument("--lake", default="lake")
    div.add_argument("--run", required=True, help="run id, or comma-separated run ids")
    div.add_argument("--layer", help="layer, or comma-separated layers (default: every captured layer)")
    div.add_argument("--pool", default="mean")
    div.add_argument("--step", type=STEP)
    div.add_argument("--threshold", type=float, default=0.01, help="cosine distance of a near-duplicate pair")
    div.set_defaults(handler=run_diversity)
    add_fidelity_parser(commands)
    commands.add_parser("warm-cache", help="compile and cache the numba kernels a layout uses (make setup does)"
                        ).set_defaults(handler=run_warm_cache)

    knn = commands.add_parser("neighbours", help="k nearest neighbours of a sample in raw activation space")
    knn.add_argument("--lake", default="lake")
    knn.add_argument("--run", help="run id (default: the latest complete run)")
    knn.add_argument("--layer", required=True)
    knn.add_argument("--sample", type=bounded_int(0, INT64_MAX, "sample ids are 64-bit integers"), required=True,
                     help="sample id")
    knn.add_argument("--k", type=K, default=10)
    knn.add_argument("--pool", default="mean")
    knn.add_argument("--step", type=STEP)
    knn.set_defaults(handler=run_neighbours)
    return parser


def run_warm_cache(args: argparse.Namespace) -> int:
    from store.embed import warm_kernels

    seconds = warm_kernels()
    print(f"numba kernels cached in {os.environ.get('NUMBA_CACHE_DIR')} ({seconds:.1f} s)")
    return 0


def add_fidelity_parser(commands: argparse._SubParsersAction) -> None:
    """`fidelity`: runs against a reference run in one feature layer (store/fidelity.py)."""
    fid = commands.add_parser("fidelity", help="fidelity and diversity of runs against a reference run, per class")
    fid.add_argument("--lake", default="lake")
    fid.add_argument("--run", required=True, help="run id, or comma-separated run ids (e.g. student,teacher)")
    fid.add_argument("--reference", required=True, help="the reference run (real data, or the teacher)")
    fid.add_argument("--layer", required=True, help="the feature layer both runs captured")
    fid.add_argument("--pool", default="mean")
    fid.add_argument("--step", type=STEP, help="the runs' step (default: each run's last)")
    fid.add_argument("--reference-step", type=STEP, help="the reference's step (default: its last)")
    fid.add_argument("--k", type=K, default=5, help="neighbours of the k-NN manifolds (default 5)")
    fid.add_argument("--min-samples", type=bounded_int(2, MAX_SAMPLES), default=10,
                     help="samples per side below which a class gets no Fréchet distance or k-NN metrics (default 10)")
    fid.set_defaults(handler=run_fidelity)


def run_embed(args: argparse.Namespace) -> int:
    from store.lake import Lake
    from store.embed import embed_run
    from store.layouts import LayoutParams

    require_lake(args.lake)
    params = LayoutParams(n_neighbors=args.n_neighbors, min_dist=args.min_dist, pca=args.pca or None,
                          standardize=args.standardize, seed=args.seed, fit_sample=args.fit_sample)
    layers = [name.strip() for name in args.layers.split(",") if name.strip()] if args.layers else None
    if args.run == "all":
        runs = Lake(args.lake).list_folders("runs")
    else:
        runs = [r.strip() for r in args.run.split(",") if r.strip()] if args.run else [None]
    results = []
    for run_id in runs:
        for step in embed_steps(args.lake, run_id, layers, args.pool, args.step):
            results += embed_run(args.lake, run_id, layers, step, args.pool, params, align=not args.no_align,
                                 progress=not args.quiet)
    print(f"{'run':<24} {'layer':<20} {'step':>4} {'points':>8} {'audit':>6} {'moved':>6}  layout")
    for r in results:
        moved = f"{r.displacement:.2f}" if r.displacement is not None else "-"
        print(f"{r.run_id:<24} {r.layer:<20} {r.step:>4} {r.samples:>8} {r.mean_overlap:>6.2f} {moved:>6}  "
              f"{r.params_hash}{' (reused)' if r.reused else ''}")
    print("audit: mean share of each point's 15 raw-space neighbours kept on the map; "
          "moved: mean displacement from the previous layer, in map radii")
    return 0


def embed_steps(lake: str, run_id: str | None, layers: list[str] | None, pooling: str, step: int | str | None) -> list:
    """--step: None (the last), a number (argparse checked its range), or `all` (every step the run captured)."""
    if step is None:
        return [None]
    if step != "all":
        return [step]
    from store.lake import Lake
    from store.embed import captured_layers, latest_run
    from store.neighbours import captured_steps

    run_id = run_id or latest_run(Lake(lake))
    layer = (layers or captured_layers(Lake(lake), run_id, pooling) or [None])[0]
    if layer is None:
        raise ValueError(f"run {run_id} has no captured layers with pooling {pooling}")
    return captured_steps(lake, run_id, layer, pooling)


def run_compare(args: argparse.Namespace) -> int:
    from store.compare import compare_runs

    require_lake(args.lake)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if len(runs) != 2:
        raise ValueError(f"--runs {args.runs!r} must name two runs, e.g. --runs demo-digits-dmd2,demo-digits-edm")
    steps = [None, None] if args.steps is None else args.steps  # step numbers in range (argparse checked them)
    if len(steps) != 2:
        raise ValueError(f"--steps {','.join(map(str, steps))} must be two step numbers, e.g. --steps 0,0")
    table = compare_runs(args.lake, runs[0], runs[1], args.pool, args.k, step_a=steps[0], step_b=steps[1])
    print(f"{'layer':<20} {'steps':>7} {'samples':>8} {'jaccard':>8} {'cka':>6}  most changed")
    for row in table.to_pylist():
        print(f"{row['layer']:<20} {row['step_a']:>3}/{row['step_b']:<3} {row['samples']:>8} "
              f"{row['mean_knn_jaccard']:>8.3f} {row['linear_cka']:>6.3f}  {row['most_changed'][:5]}")
    print(f"jaccard: mean overlap of each sample's {args.k} nearest neighbours in the two runs (1 = same "
          "neighbourhoods); cka: linear CKA of the two activation matrices (1 = same up to rotation and scale)")
    return 0


def run_diversity(args: argparse.Namespace) -> int:
    from store.lake import Lake
    from store.diversity import diversity
    from store.embed import captured_layers

    require_lake(args.lake)
    for run_id in [r.strip() for r in args.run.split(",") if r.strip()]:
        layers = ([layer.strip() for layer in args.layer.split(",") if layer.strip()] if args.layer
                  else captured_layers(Lake(args.lake), run_id, args.pool))
        if not layers:
            raise ValueError(f"run {run_id} has no captured layers with pooling {args.pool} in {args.lake}")
        for layer in layers:
            table = diversity(args.lake, run_id, layer, args.pool, args.step, threshold=args.threshold)
            print(f"{run_id} · {layer} · step {table.column('step')[0].as_py()}")
            print(f"  {'class or prompt':<28} {'samples':>7} {'distance':>8} {'purity':>6} {'near-dup':>8} {'vendi':>6}")
            for row in table.to_pylist():
                print(f"  {row['label'][:28]:<28} {row['samples']:>7} {row['mean_pairwise_distance']:>8.3f} "
                      f"{row['knn_purity']:>6.3f} {row['near_duplicate_pairs']:>8} {row['vendi_score']:>6.2f}")
    print("most collapsed first (lowest Vendi score: the effective number of distinct samples); distance: mean "
          f"pairwise cosine distance; near-dup: pairs closer than {args.threshold:g}")
    return 0


def run_fidelity(args: argparse.Namespace) -> int:
    from store.fidelity import fidelity, readings

    require_lake(args.lake)
    runs = [r.strip() for r in args.run.split(",") if r.strip()]
    if not runs:
        raise ValueError(f"--run {args.run!r} names no run; e.g. --run demo-digits-dmd2,demo-digits-edm")
    tables = []
    for run_id in runs:
        tables.append(fidelity(args.lake, run_id, args.reference, args.layer, args.pool, args.step, k=args.k,
                               min_samples=args.min_samples, reference_step=args.reference_step).to_pylist())
        print_fidelity(tables[-1])
    for other in tables[1:]:
        for line in readings(tables[0], other, "recall"):
            print(line)
    print(f"FD: Fréchet distance (* a side has no more samples than the layer's {tables[0][0]['dim']} dimensions: "
          f"biased up); prec/recall, dens/cover: k-NN manifolds (k {args.k}, Euclidean) of the run against the "
          "reference; vendi: effective number of distinct samples, run/reference; -: too few samples")
    return 0


def print_fidelity(rows: list[dict]) -> None:
    """One run's fidelity table, compact: a title line, then a line per row ("all" first)."""
    def cell(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    first = rows[0]
    print(f"{first['run_id']} against {first['reference_run']} · {first['layer']} · {first['pooling']} · "
          f"steps {first['step']}/{first['reference_step']}")
    print(f"  {'class or prompt':<24} {'samples':>11} {'FD':>9} {'prec':>5} {'recall':>6} {'dens':>5} {'cover':>5}"
          f" {'vendi':>13}")
    for row in rows:
        thin = row["frechet_distance"] is not None and min(row["samples"], row["reference_samples"]) <= row["dim"]
        counts = f"{row['samples']}/{row['reference_samples']}"
        distance = cell(row["frechet_distance"], ".3g") + ("*" if thin else "")
        vendi = f"{cell(row['vendi_score'], '.1f')}/{cell(row['reference_vendi_score'], '.1f')}"
        print(f"  {row['label'][:24]:<24} {counts:>11} {distance:>9} "
              f"{cell(row['precision'], '.2f'):>5} {cell(row['recall'], '.2f'):>6} {cell(row['density'], '.2f'):>5} "
              f"{cell(row['coverage'], '.2f'):>5} {vendi:>13}")


def run_atlas(args: argparse.Namespace) -> int:
    from store.atlas import atlas_command, export_atlas
    from store.catalogue import full_layouts, list_layouts

    require_lake(args.lake)
    keys = full_layouts(args.lake, [k for k in list_layouts(args.lake)
                                    if (k.run_id, k.layer, k.pooling) == (args.run, args.layer, args.pool)
                                    and (args.step is None or k.step == args.step)])
    if not keys:
        raise ValueError(f"no layout of run {args.run}, layer {args.layer}, pooling {args.pool}"
                         f"{'' if args.step is None else f', step {args.step}'}; run `make embed` first")
    key = max(keys, key=lambda k: k.step)
    rows = export_atlas(args.lake, key, args.out, args.k, args.images)
    print(f"wrote {rows:,} points of {key.label} to {args.out}; open it with:")
    print(f"  {atlas_command(args.out)}")
    return 0


def run_neighbours(args: argparse.Namespace) -> int:
    from store.catalogue import read_run_samples
    from store.embed import latest_run
    from store.neighbours import build_graph
    from store.lake import Lake

    require_lake(args.lake)
    run_id = args.run or latest_run(Lake(args.lake))
    if args.sample not in set(read_run_samples(Lake(args.lake), run_id).column("sample_id").to_pylist()):
        raise ValueError(f"no sample {args.sample} in run {run_id}; see `make sql Q=\"SELECT sample_id FROM points\"`")
    graph = build_graph(args.lake, run_id, args.layer, args.pool, args.step)
    try:
        ids, distances = graph.of(args.sample, args.k)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    for sample_id, distance in zip(ids, distances):
        print(f"{sample_id}\t{distance:.6f}")
    return 0


def require_lake(lake: str) -> None:
    if not Path(lake).is_dir():
        raise ValueError(f"no lake at {lake}; run `make ingest` first or pass --lake")


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    from store.sql_shell import run_shell
    from store.views import connect

    require_lake(args.lake)
    if args.query:
        con = connect(args.lake)
        try:
            relation = con.sql(args.query)
        except duckdb.Error as err:
            raise ValueError(f"SQL error: {str(err).splitlines()[0]}") from None
        if relation is not None:
            relation.show(max_rows=args.max_rows, max_width=200)
        return 0
    return run_shell(connect(args.lake), args.lake, args.max_rows)


def main(argv: list[str] | None = None) -> int:
    plain_warning_lines()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0), or a bad option: its one line is printed (2)
        return int(stop.code or 0)
    try:
        return args.handler(args)
    except (ValueError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
