"""The lake's contract, in one place: every table's folder layout, file naming and Arrow schema, the
keys that name stored layouts and graphs, and the only way a shard is written.

    <lake>/runs/<run_id>/r<rank>-<utc time>-<status>.parquet                one row per status change
    <lake>/samples/<run_id>/chunk-000042.parquet                            images and metadata of a chunk
    <lake>/activations/<run_id>/<layer>/<pooling>/chunk-000042.parquet      pooled vectors of a chunk
    <lake>/indexes/<run_id>/<layer>/<pooling>/step-0000-<inputs hash>.parquet     neighbour graph
    <lake>/embeddings/<run_id>/<layer>/<pooling>/step-0000-<params hash>.parquet  2-D layout
    <lake>/comparisons/<run_a>/<run_b>/...parquet, <lake>/diversity/<run_id>/<layer>/<pooling>/step-...,
    <lake>/fidelity/<run_id>/<reference run>/<layer>/<pooling>/step-..., <lake>/selections/<name>.parquet
                                                                            (see docs/ARCHITECTURE.md)

`ingest/` writes runs, samples and activations through this module; `store/` writes the rest and reads
everything. A shard is written to a hidden temporary name in its folder, fsynced, then renamed, so a
reader never sees a partial file; on object stores (s3://, gs://) a PUT is atomic already. A temporary
name carries the writer's process id, so `remove_orphan_temporaries` can delete what a killed writer left
without touching the files of one still running.

A chunk is committed when its samples shard exists: activation shards are written first and the samples
shard last, so a crash in between leaves activation rows without samples, which a resumed run overwrites
under the same names.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from store.failpoints import failpoint
from store.shards import footer_problem, outside, warn_skipped

SCHEMA_VERSION = 1
TEMPORARY_OWNER = f"{socket.gethostname()}~{os.getpid()}"  # host~pid: whose temporary file it is
TEMPORARY_NAME = re.compile(r"\.parquet\.(?P<host>[^~/]+)~(?P<pid>\d+)-[0-9a-f]{32}\.tmp$")
REAL_MODEL_PREFIX = "real:"  # the model of a run of real images (`ingest.real_images`): real:<name>
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # always matched whole (fullmatch)

RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("rank", pa.int32()),
    ("world_size", pa.int32()),
    ("status", pa.string()),  # running | complete | failed
    ("model", pa.string()),
    ("checkpoint", pa.string()),  # path or hub id of the weights
    ("checkpoint_sha256", pa.string()),
    ("sampler", pa.string()),  # JSON: kind, steps, sigmas or timesteps
    ("layers", pa.list_(pa.string())),
    ("poolings", pa.list_(pa.string())),
    ("plan", pa.string()),  # JSON description of the sample plan
    ("n_samples", pa.int64()),
    ("seed", pa.int64()),
    ("config_hash", pa.string()),  # identity of everything that shapes the data
    ("config", pa.string()),  # JSON of the full run configuration
    ("versions", pa.string()),  # JSON: package versions
    ("device", pa.string()),
    ("dtype", pa.string()),
    ("host", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("updated_at", pa.timestamp("us", tz="UTC")),
    ("error", pa.string()),
    ("schema_version", pa.int32()),
])

SAMPLES_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("sample_id", pa.int64()),
    ("chunk", pa.int32()),
    ("seed", pa.int64()),
    ("class_id", pa.int32()),  # null for text-to-image
    ("class_name", pa.string()),
    ("prompt", pa.string()),  # null for class-conditional
    ("tags", pa.list_(pa.string())),
    ("steps", pa.int16()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("image_png", pa.binary()),
    ("thumbnail", pa.binary()),  # WebP; null when the image itself is small enough to serve as one
])


# How activation vectors are stored. Every shard records its format in its metadata (VECTOR_FORMAT_KEY);
# readers accept them all, and shards written before formats were recorded (format 1: nullable lists,
# dictionary + zstd) read as before.
VECTOR_FORMAT_KEY = b"vector_format"
VECTOR_FORMATS = {
    "half": "float32 rounded to float16 precision, byte-stream-split, zstd level 1",
    "full": "float32, byte-stream-split, zstd level 1",
}
UNRECORDED_VECTOR_FORMAT = "format 1 (nullable float32 lists, dictionary + zstd)"
VECTOR_PRECISIONS = {"full": 23, "half": 10}  # mantissa bits kept in the stored float32 vectors (VECTOR_FORMATS)


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to `bits` mantissa bits (10 = float16 precision, float32 range).

    The result is still float32 (DuckDB reads it as FLOAT), but its low bytes are zero, so Parquet's
    byte-stream-split + zstd encoding stores it in about half the space.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if bits >= 23:
        return values
    drop = 23 - bits
    raw = values.view(np.uint32)
    rounded = (raw + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    finite = np.isfinite(values)
    return np.where(finite, rounded.view(np.float32), values)


# Required (non-null) lists and values spare Parquet's definition levels, and byte-stream-split puts the
# zero low bytes of rounded values side by side, where zstd removes them: reads are about 1.5x faster than
# format 1 and files a little smaller (docs/BENCHMARKS.md, vector formats).
ACTIVATIONS_WRITE_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": ["run_id", "layer", "step", "noise_level", "pooling"],
    "use_byte_stream_split": ["vector.list.element"],
}


def activations_schema(dim: int, precision: str = "half") -> pa.Schema:
    if precision not in VECTOR_FORMATS:
        raise ValueError(f"unknown vector precision {precision!r}; use {' or '.join(VECTOR_FORMATS)}")
    vector = pa.list_(pa.field("element", pa.float32(), nullable=False), dim)
    return pa.schema([
        ("run_id", pa.string()),
        ("sample_id", pa.int64()),
        ("layer", pa.string()),
        ("step", pa.int16()),
        ("noise_level", pa.float32()),  # sigma (EDM) or timestep (diffusers) the step started from
        ("pooling", pa.string()),
        pa.field("vector", vector, nullable=False),  # fixed size: DuckDB casts it to FLOAT[dim]
    ], metadata={VECTOR_FORMAT_KEY: precision.encode()})


def vector_format(schema: pa.Schema) -> str:
    """What an activations shard's footer says about its vectors: a key of VECTOR_FORMATS, or format 1's name."""
    recorded = (schema.metadata or {}).get(VECTOR_FORMAT_KEY)
    return recorded.decode() if recorded is not None and recorded.decode() in VECTOR_FORMATS else UNRECORDED_VECTOR_FORMAT


def activations_table(run_id: str, layer: str, pooling: str, sample_ids: np.ndarray, noise_levels: np.ndarray,
                      vectors: np.ndarray, precision: str, metadata: dict[bytes, bytes] | None = None) -> pa.Table:
    """One chunk of one (layer, pooling): `vectors` (n, steps, dim) float32, already rounded to `precision`
    (ingest.writer.round_mantissa); one row per (sample, step)."""
    n, steps, dim = vectors.shape
    schema = activations_schema(dim, precision)
    if metadata:
        schema = schema.with_metadata({**schema.metadata, **metadata})
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))  # zero-copy for float32
    return pa.table({
        "run_id": constant_strings(run_id, n * steps),
        "sample_id": np.repeat(np.asarray(sample_ids, dtype=np.int64), steps),
        "layer": constant_strings(layer, n * steps),
        "step": np.tile(np.arange(steps, dtype=np.int16), n),
        "noise_level": np.tile(np.asarray(noise_levels, dtype=np.float32), n),
        "pooling": constant_strings(pooling, n * steps),
        "vector": pa.FixedSizeListArray.from_arrays(flat, type=schema.field("vector").type),
    }, schema=schema)


def constant_strings(value: str, n: int) -> pa.Array:
    """A string column of `n` copies of `value`, built from buffers (no Python objects per row)."""
    encoded = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(encoded)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(encoded * n))


class LakeError(ValueError):
    pass


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise LakeError(f"invalid run id {run_id!r}; use letters, digits, '_', '.', '-' (at most 128)")
    return run_id


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}.parquet"


def chunk_of(filename: str) -> int | None:
    match = re.fullmatch(r"chunk-(\d{6})\.parquet", filename)
    return int(match.group(1)) if match else None


class Lake:
    """Paths and atomic Parquet writes for one lake root."""

    def __init__(self, uri: str | Path) -> None:
        uri = str(uri)
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.uri = uri
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def local_root(self) -> Path:
        if not self.is_local:
            raise LakeError(f"{self.uri} is not a local folder")
        return Path(self.root)

    # --- writing ------------------------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Fail early, with a clear message, if the lake cannot be written."""
        probe = self.path(f".write-probe-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as err:
            raise LakeError(f"lake {self.uri} is not writable ({err.strerror or err}); choose another --lake") from None

    def write_parquet(self, table: pa.Table, *parts: str, **options) -> str:
        """Write `table` at lake path `parts` atomically; returns the final path."""
        final = self.path(*parts)
        folder, name = final.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        options.setdefault("compression", "zstd")
        if not self.is_local:
            pq.write_table(table, final, filesystem=self.fs, **options)
            return final
        # hidden (globs for *.parquet skip it), and named by its writer (see remove_orphan_temporaries)
        temporary = f"{folder}/.{name}.{TEMPORARY_OWNER}-{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, **options)
                failpoint("while-writing")  # the shard is in the temporary file, maybe not yet on disk
                handle.flush()
                os.fsync(handle.fileno())
            failpoint("before-rename")
            os.replace(temporary, final)
            failpoint("after-rename")
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        return final

    # --- reading ------------------------------------------------------------------------------

    def list_names(self, *parts: str) -> list[str]:
        """File names (not hidden) directly inside a lake folder; empty if it does not exist. A link that
        leads outside the lake is left out, with a warning."""
        return sorted(name for name, _ in self._entries(parts, files=True))

    def list_folders(self, *parts: str) -> list[str]:
        """Sub-folder names directly inside a lake folder; empty if it does not exist (links out of the lake
        left out, as in `list_names`)."""
        return sorted(name for name, _ in self._entries(parts, files=False))

    def shard_names(self, *parts: str) -> list[str]:
        """The Parquet shards of a lake folder that readers may use: every `.parquet` file of `list_names`
        whose footer is readable and whose columns are those of its table (`parts[0]`); each other one is
        named in a warning (`store.shards`)."""
        expected = TABLE_SCHEMAS[parts[0]]
        good = []
        for name, info in sorted(self._entries(parts, files=True)):
            if not name.endswith(".parquet"):
                continue
            path = self.path(*parts, name)
            problem = footer_problem(path, None if self.is_local else self.fs, expected, info.size, info.mtime_ns)
            if problem:
                warn_skipped(path, problem, stacklevel=3)
            else:
                good.append(name)
        return good

    def table_shards(self, table: str) -> list[str]:
        """Paths of every usable shard of a table (`shard_names` of each of its folders)."""
        folders = [()]
        for _ in range(TABLE_DEPTHS[table]):
            folders = [(*f, sub) for f in folders for sub in self.list_folders(table, *f)]
        return [self.path(table, *f, name) for f in folders for name in self.shard_names(table, *f)]

    def _entries(self, parts: tuple[str, ...], files: bool) -> list[tuple[str, pafs.FileInfo]]:
        """(name, info) of the visible files (or folders) directly inside a lake folder, followed through
        links that stay inside the lake."""
        folder = self.path(*parts)
        wanted = pafs.FileType.File if files else pafs.FileType.Directory
        if self.is_local and (where := outside(folder, self._real_root())):
            if os.path.exists(folder):
                warn_skipped(folder, f"outside the lake: a link to {where}", stacklevel=4)
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        entries = []
        for info in infos:
            if info.base_name.startswith("."):
                continue
            if self.is_local and os.path.islink(info.path) and (where := outside(info.path, self._real_root())):
                warn_skipped(info.path, f"outside the lake: a link to {where}", stacklevel=4)
                continue
            if info.type == wanted:
                entries.append((info.base_name, info))
        return entries

    def _real_root(self) -> str:
        return os.path.realpath(self.root)

    def committed_chunks(self, run_id: str) -> set[int]:
        """Chunks of a run whose samples shard exists and is usable (the commit point)."""
        return {c for c in map(chunk_of, self.shard_names("samples", run_id)) if c is not None}

    def read_runs(self, run_id: str) -> pa.Table:
        names = self.shard_names("runs", run_id)
        tables = [pq.read_table(self.path("runs", run_id, n), filesystem=self.fs) for n in names]
        return pa.concat_tables(tables, promote_options="permissive") if tables else RUNS_SCHEMA.empty_table()

    def remove_orphan_temporaries(self, *parts: str) -> int:
        """Delete the temporaries under a lake folder that a killed writer of this machine left (its
        process is gone); returns how many. A live writer's temporaries are kept."""
        base = Path(self.path(*parts)) if self.is_local else None
        if base is None or not base.exists():
            return 0
        removed = 0
        for stale in base.rglob(".*.tmp"):
            owner = TEMPORARY_NAME.search(stale.name)
            if owner and owner["host"] == socket.gethostname() and not process_alive(int(owner["pid"])):
                stale.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove_temporaries(self, run_id: str, chunks: list[int]) -> int:
        """Delete temporaries a killed writer left for these chunks of a run; returns how many.

        Only chunks this worker owns are touched, so other workers' writes in progress are safe.
        """
        if not self.is_local or not chunks:
            return 0
        wanted = {chunk_name(c) for c in chunks}
        removed = 0
        for table in ("samples", "activations"):
            base = Path(self.path(table, run_id))
            if not base.exists():
                continue
            for stale in base.rglob(".chunk-*.tmp"):
                if stale.name[1:].split(".parquet")[0] + ".parquet" in wanted:
                    stale.unlink(missing_ok=True)
                    removed += 1
        return removed


# --- the tables store/ writes ---------------------------------------------------------------------------

EMBEDDINGS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int16()), ("pooling", pa.string()),
    ("method", pa.string()), ("params_hash", pa.string()), ("params", pa.string()), ("sample_id", pa.int64()),
    ("x", pa.float32()), ("y", pa.float32()), ("knn_overlap", pa.float32()),
])
def indexes_schema(k: int) -> pa.Schema:
    """A neighbour graph file: each sample's k nearest (ids and cosine distances, nearest first) as
    fixed-size lists, which DuckDB reads as arrays."""
    return pa.schema([
        ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int16()), ("pooling", pa.string()),
        ("sample_id", pa.int64()), ("neighbour_ids", pa.list_(pa.int64(), k)), ("distances", pa.list_(pa.float32(), k)),
    ])


INDEXES_SCHEMA = pa.schema([  # what the views read (any k)
    ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int16()), ("pooling", pa.string()),
    ("sample_id", pa.int64()), ("neighbour_ids", pa.list_(pa.int64())), ("distances", pa.list_(pa.float32())),
])
COMPARISONS_SCHEMA = pa.schema([
    ("run_a", pa.string()), ("run_b", pa.string()), ("layer", pa.string()), ("pooling", pa.string()),
    ("step_a", pa.int16()), ("step_b", pa.int16()), ("samples", pa.int64()), ("k", pa.int32()),
    ("mean_knn_jaccard", pa.float64()), ("linear_cka", pa.float64()), ("most_changed", pa.list_(pa.int64())),
    ("most_changed_jaccard", pa.list_(pa.float64())),
])
DIVERSITY_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("layer", pa.string()), ("pooling", pa.string()), ("step", pa.int16()),
    ("label", pa.string()), ("samples", pa.int64()), ("measured", pa.int64()), ("mean_pairwise_distance", pa.float64()),
    ("knn_purity", pa.float64()), ("near_duplicate_pairs", pa.int64()), ("threshold", pa.float64()),
    ("vendi_score", pa.float64()), ("example_pair", pa.list_(pa.int64())),
])
FIDELITY_SCHEMA = pa.schema([  # a run against a reference run in one feature layer (store/fidelity.py)
    ("run_id", pa.string()), ("reference_run", pa.string()), ("layer", pa.string()), ("pooling", pa.string()),
    ("step", pa.int16()), ("reference_step", pa.int16()), ("kind", pa.string()), ("class_id", pa.int32()),
    ("label", pa.string()), ("samples", pa.int64()), ("reference_samples", pa.int64()), ("measured", pa.int64()),
    ("reference_measured", pa.int64()), ("dim", pa.int32()), ("k", pa.int32()), ("frechet_distance", pa.float64()),
    ("precision", pa.float64()), ("recall", pa.float64()), ("density", pa.float64()), ("coverage", pa.float64()),
    ("vendi_score", pa.float64()), ("reference_vendi_score", pa.float64()),
])
SELECTIONS_SCHEMA = pa.schema([
    ("selection", pa.string()), ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int64()),
    ("sample_id", pa.int64()), ("seed", pa.int64()), ("class_id", pa.int64()), ("label", pa.string()),
    ("prompt", pa.string()), ("tags", pa.string()), ("x", pa.float32()), ("y", pa.float32()),
    ("saved_at", pa.timestamp("us", tz="UTC")),
])
# How many folder levels lie between a table's folder and its shards.
TABLE_DEPTHS = {"runs": 1, "samples": 1, "activations": 3, "embeddings": 3, "indexes": 3, "comparisons": 1,
                "diversity": 3, "selections": 0, "fidelity": 4}
# Every table and the columns its views read (activations: any vector width, so a variable-size list).
TABLE_SCHEMAS = {
    "runs": RUNS_SCHEMA, "samples": SAMPLES_SCHEMA,
    "activations": activations_schema(1).set(6, pa.field("vector", pa.list_(pa.float32()))).remove_metadata(),
    "embeddings": EMBEDDINGS_SCHEMA, "indexes": INDEXES_SCHEMA, "comparisons": COMPARISONS_SCHEMA,
    "diversity": DIVERSITY_SCHEMA, "selections": SELECTIONS_SCHEMA, "fidelity": FIDELITY_SCHEMA,
}


# --- file names ---------------------------------------------------------------------------------------

def step_file_name(step: int, suffix: str) -> str:
    """`step-0007-<suffix>.parquet`: a layout, a neighbour graph or a diversity table of one step."""
    return f"step-{int(step):04d}-{suffix}.parquet"


def parse_step_file_name(name: str) -> tuple[int, str] | None:
    """(step, suffix) of a `step_file_name`, or None for any other name."""
    match = re.fullmatch(r"step-(\d{4})-(.+)\.parquet", name)
    return (int(match.group(1)), match.group(2)) if match else None


@dataclasses.dataclass(frozen=True, order=True)
class LayoutKey:
    """One stored layout: `embeddings/<run>/<layer>/<pooling>/step-<step>-<params_hash>.parquet`."""

    run_id: str
    layer: str
    pooling: str
    step: int
    params_hash: str

    def parts(self) -> tuple[str, ...]:
        return ("embeddings", self.run_id, self.layer, self.pooling, step_file_name(self.step, self.params_hash))

    @property
    def label(self) -> str:
        return f"{self.run_id} · {self.layer} · step {self.step} · {self.pooling} · {self.params_hash[:8]}"


def graph_parts(run_id: str, layer: str, pooling: str, step: int, inputs_hash: str) -> tuple[str, ...]:
    """A neighbour graph: `indexes/<run>/<layer>/<pooling>/step-<step>-<inputs hash>.parquet`."""
    return ("indexes", check_run_id(run_id), layer, pooling, step_file_name(step, inputs_hash))


def as_lake(lake: "Lake | str | Path") -> Lake:
    return lake if isinstance(lake, Lake) else Lake(lake)


# --- one path builder per table (parts below the lake root) ------------------------------------------------

def runs_parts(run_id: str, rank: int, stamp, status: str) -> tuple[str, ...]:
    """A run's status event: `runs/<run>/r<rank>-<UTC time>-<status>.parquet` (`stamp`: a datetime)."""
    return ("runs", check_run_id(run_id), f"r{rank:04d}-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-{status}.parquet")


def samples_parts(run_id: str, chunk: int) -> tuple[str, ...]:
    return ("samples", check_run_id(run_id), chunk_name(chunk))


def activations_parts(run_id: str, layer: str, pooling: str, chunk: int) -> tuple[str, ...]:
    return ("activations", check_run_id(run_id), layer, pooling, chunk_name(chunk))


def comparison_parts(run_a: str, run_b: str, pooling: str, k: int, steps: tuple[int, int] | None) -> tuple[str, ...]:
    """`comparisons/<run_a>--<run_b>/<pooling>-k<k>[-steps<a>-<b>].parquet` (no steps: each run's last)."""
    suffix = "" if steps is None else f"-steps{steps[0]}-{steps[1]}"
    return ("comparisons", f"{check_run_id(run_a)}--{check_run_id(run_b)}", f"{pooling}-k{k}{suffix}.parquet")


def diversity_parts(run_id: str, layer: str, pooling: str, step: int, threshold: float) -> tuple[str, ...]:
    return ("diversity", check_run_id(run_id), layer, pooling, step_file_name(step, f"t{threshold:g}"))


def fidelity_parts(run_id: str, reference_run: str, layer: str, pooling: str, step: int, k: int,
                   reference_step: int) -> tuple[str, ...]:
    """`fidelity/<run>/<reference>/<layer>/<pooling>/step-<step>-k<k>-ref<reference step>.parquet`."""
    return ("fidelity", check_run_id(run_id), check_run_id(reference_run), layer, pooling,
            step_file_name(step, f"k{k}-ref{int(reference_step):04d}"))


def selection_parts(name: str) -> tuple[str, ...]:
    return ("selections", f"{name}.parquet")
