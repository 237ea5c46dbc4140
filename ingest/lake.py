"""The lake: a folder (or any `pyarrow.fs` URI) of immutable Parquet shards, one folder per table.

    <lake>/runs/<run_id>/<rank>-<utc time>-<status>.parquet       one row per status change
    <lake>/samples/<run_id>/chunk-000042.parquet                  images and metadata of one chunk
    <lake>/activations/<run_id>/<layer>/<pooling>/chunk-000042.parquet
    <lake>/indexes/<run_id>/<layer>/<pooling>/step-0000-<hash>.parquet     (written by store/)
    <lake>/embeddings/<run_id>/<layer>/<pooling>/step-0000-<hash>.parquet  (written by store/)

This module owns the schemas (the contract with `store/`) and the only way shards are written: to a
hidden temporary name in the target folder, then renamed, so a reader never sees a partial file.
On object stores (s3://, gs://) a PUT is atomic already, so shards are written in place.

A chunk is committed when its samples shard exists: activation shards are written first and the
samples shard last, so a crash in between leaves activation rows without samples, which a resumed
run overwrites under the same names.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ingest.failpoints import failpoint

SCHEMA_VERSION = 1
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

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


def activations_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("run_id", pa.string()),
        ("sample_id", pa.int64()),
        ("layer", pa.string()),
        ("step", pa.int16()),
        ("noise_level", pa.float32()),  # sigma (EDM) or timestep (diffusers) the step started from
        ("pooling", pa.string()),
        ("vector", pa.list_(pa.float32(), dim)),  # fixed size: DuckDB casts it to FLOAT[dim]
    ])


class LakeError(ValueError):
    pass


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id or ""):
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
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"  # hidden: globs for *.parquet skip it
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
        """File names (not hidden) directly inside a lake folder; empty if it does not exist."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        names = [info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File]
        return sorted(n for n in names if not n.startswith("."))

    def list_folders(self, *parts: str) -> list[str]:
        """Sub-folder names directly inside a lake folder; empty if it does not exist."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))

    def committed_chunks(self, run_id: str) -> set[int]:
        """Chunks of a run whose samples shard exists (the commit point)."""
        return {c for c in map(chunk_of, self.list_names("samples", run_id)) if c is not None}

    def read_runs(self, run_id: str) -> pa.Table:
        names = [n for n in self.list_names("runs", run_id) if n.endswith(".parquet")]
        tables = [pq.read_table(self.path("runs", run_id, n), filesystem=self.fs) for n in names]
        return pa.concat_tables(tables) if tables else RUNS_SCHEMA.empty_table()

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
