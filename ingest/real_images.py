"""Real images as a run of the lake: a folder of image files, or scikit-learn's handwritten digits, stored in
the `samples` table exactly as generated samples are (PNG, thumbnail, class or prompt, size), so real and
generated images sit in the same tables and views. No activations are written: features come later, from
a separate command.

- Files: every image file (`IMAGE_SUFFIXES`, any case) under the folder, hidden files and folders left out,
  sorted by relative path; sample ids 0..n-1 follow that order.
- Labels: the first-level sub-folder is a file's class (class ids by sorted folder name, the folder name as
  class name), or a CSV with a header row: `file,class_id[,class_name]`, or `file,prompt[,tags]` for
  text-to-image references (tags separated by `;`); `file` is the path relative to the folder, and every
  image needs exactly one row.
- Pixels: each image is decoded by Pillow, turned upright by its EXIF orientation, converted to 8-bit grey
  (modes 1, L, LA, I, I;16, F) or RGB (every other mode; alpha is dropped) and, with `size`, centre-cropped
  to a square and resized to size x size (Lanczos). The PNG and thumbnail come from `ingest.writer`'s
  encoders, as for generated samples. The real digits go through the generators' own conversion of their
  [-1, 1] output, `ingest.samplers.to_uint8`: trunc((x + 1) * 127.5) of x = v / 16 * 2 - 1 for sklearn's
  value v in 0..16, which is exactly floor(v * 255 / 16), so real and generated digits share one 0..255 scale.
- A real sample has no noise and no sampling: `seed` 0 (the column is read as an integer everywhere: maps,
  selections, exports) and `steps` 0. The run's model is `real:<name>` (the folder's name, or `digits`),
  its sampler `{"kind": "real"}`, its layers and poolings empty, its plan a JSON description of the source.
- Identity and resume, as for ingest: the files' relative paths and sha256, their labels, `size` and the
  chunk size are hashed into the run's config hash; a chunk is committed when its samples shard exists, a
  re-run writes only the missing chunks, and a run id that holds other content is refused
  (`RunConflictError`). Every input is checked, every image decoded, before the first write; a problem
  is one line (`RealImagesError`).

`ingest.run` and `ingest.writer` (and so torch) are imported where they are used, so that
`python -m ingest --help`, which reads this module's constants, answers at once.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import posixpath
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ingest.plan import check_prompt_length
from store.lake import (REAL_MODEL_PREFIX, RUNS_SCHEMA, SAMPLES_SCHEMA, SCHEMA_VERSION, Lake, as_lake, check_run_id,
                        runs_parts, samples_parts)
from store.options import INT32_MAX, MAX_SAMPLES, MAX_WORKERS, OptionError, check_range, parse_bounded

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
TAG_SEPARATOR = ";"
MAX_SIDE = 16384  # --size
DEFAULT_CHUNK_SIZE = 1024
REAL_DIGITS_RUN = "real-digits"
DIGITS_GENERATOR = "digits-dmd2"  # the preset whose class names the real digits take
CONVERSION = 1  # version of the pixel conversion above, part of a run's identity
CSV_COLUMNS = {"class_id": ("file", "class_id", "class_name"), "prompt": ("file", "prompt", "tags")}


class RealImagesError(ValueError):
    """A problem with the images or labels given (one line: problem; fix)."""


@dataclasses.dataclass(frozen=True)
class Labels:
    """Per sample (by sample id): class id and name, or prompt and tags."""

    class_id: list[int | None]
    class_name: list[str | None]
    prompt: list[str | None]
    tags: list[list[str]]

    @classmethod
    def of_classes(cls, ids: list[int], names: list[str]) -> "Labels":
        return cls(ids, names, [None] * len(ids), [[] for _ in ids])


@dataclasses.dataclass(frozen=True)
class RealSource:
    """Everything a real run stores, checked: its labels, each sample's pixels (uint8 HWC, by sample id),
    the plan recorded in `runs` and the identity hashed into its config hash."""

    name: str
    labels: Labels
    pixels: Callable[[int], np.ndarray]
    plan: dict
    identity: dict
    config: dict  # what `runs.config` records besides the identity's hash (no per-file lists)

    @property
    def model(self) -> str:
        return f"{REAL_MODEL_PREFIX}{self.name}"

    def __len__(self) -> int:
        return len(self.labels.class_id)


@dataclasses.dataclass(frozen=True)
class RealResult:
    run_id: str
    planned: int
    written: int  # samples written by this call (0 if the run was complete)
    seconds: float


def ordered_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """`function` over `items` in `workers` threads, results in order, at most 4 per worker in flight (a
    million files are never a million futures); on an error the tasks not yet started are cancelled."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


# --- the folder: files, labels, pixels -------------------------------------------------------------------

def image_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the image files under `folder`, sorted (hidden files and folders left out)."""
    if not folder.is_dir():
        raise RealImagesError(f"{folder}: no such folder; give --folder a folder of images (one sub-folder "
                              "per class, or any layout with --labels)")
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in relative.parts) \
                and path.is_file():
            found.append(relative.as_posix())
    if not found:
        raise RealImagesError(f"{folder}: no image files ({' '.join(IMAGE_SUFFIXES)}) in it or its sub-folders; "
                              "give a folder that holds images")
    return sorted(found)


def others(items: list, shown: int = 1) -> str:
    """' (and 3 more)' after the first `shown` of `items` named in a message."""
    return f" (and {len(items) - shown:,} more)" if len(items) > shown else ""


def folder_labels(folder: Path, files: list[str]) -> Labels:
    """Class by first-level sub-folder: ids by sorted folder name, the folder name as class name."""
    flat = [f for f in files if "/" not in f]
    if flat:
        raise RealImagesError(f"{folder / flat[0]}{others(flat)} lies directly in {folder}, outside a class "
                              "sub-folder; put each class's images in a sub-folder named after it, or give "
                              "--labels CSV")
    names = [f.split("/", 1)[0] for f in files]
    ids = {name: i for i, name in enumerate(sorted(set(names)))}
    return Labels.of_classes([ids[n] for n in names], names)


def csv_rows(path: Path) -> tuple[str, dict[str, tuple[int, dict[str, str]]]]:
    """A labels CSV: its kind (`class_id` or `prompt`) and, by normalised file path, (line, row)."""
    if not path.is_file():
        raise RealImagesError(f"{path}: no such labels file; give --labels a CSV file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, restkey="(extra cells)")
        header = [name.strip().lower() for name in reader.fieldnames or []]
        kinds = [kind for kind in CSV_COLUMNS if kind in header]
        unknown = [name for name in header if name not in CSV_COLUMNS.get(kinds[0] if kinds else "", ())]
        if "file" not in header or len(kinds) != 1 or unknown:
            raise RealImagesError(f"{path}: header {','.join(header) or '(empty)'} is not file,class_id[,class_name] "
                                  "nor file,prompt[,tags]; give one of those header rows")
        reader.fieldnames = header
        rows: dict[str, tuple[int, dict[str, str]]] = {}
        for row in reader:
            if "(extra cells)" in row:
                raise RealImagesError(f"{path}:{reader.line_num}: more cells than the header's {len(header)}; "
                                      "quote a cell that holds a comma")
            name = posixpath.normpath((row["file"] or "").strip().replace("\\", "/"))
            if name in rows:
                raise RealImagesError(f"{path}:{reader.line_num}: {name!r} is labelled again (first on line "
                                      f"{rows[name][0]}); give each image one row")
            rows[name] = (reader.line_num, {k: (v or "").strip() for k, v in row.items()})
    return kinds[0], rows


def check_csv_files(path: Path, folder: Path, files: list[str], rows: dict) -> None:
    """Every row names an image under the folder, and every image has a row."""
    known = set(files)
    for name, (line, _) in rows.items():
        if name not in known:
            what = "an image file" if (folder / name).is_file() else "a file"
            raise RealImagesError(f"{path}:{line}: {name!r} is not {what} under {folder} (the file column is a "
                                  "path relative to --folder); fix the name or remove the line")
    unlabelled = [f for f in files if f not in rows]
    if unlabelled:
        raise RealImagesError(f"{path}: no row for {unlabelled[0]}{others(unlabelled)}; give every image under "
                              f"{folder} a row (a label is missing)")


def class_labels(path: Path, files: list[str], rows: dict) -> Labels:
    """`file,class_id[,class_name]`: one name per class id (a missing name is the id itself)."""
    ids, names = [], {}
    for name in files:
        line, row = rows[name]
        try:
            class_id = parse_bounded(row["class_id"], 0, INT32_MAX)
        except OptionError as err:
            raise RealImagesError(f"{path}:{line}: class_id {err}") from None
        given = row.get("class_name") or None
        if given is not None and names.setdefault(class_id, given) != given:
            raise RealImagesError(f"{path}:{line}: class {class_id} is named {given!r} here and "
                                  f"{names[class_id]!r} before; give each class id one name")
        ids.append(class_id)
    return Labels.of_classes(ids, [names.get(i, str(i)) for i in ids])


def prompt_labels(path: Path, files: list[str], rows: dict) -> Labels:
    """`file,prompt[,tags]`: a prompt each (no class), tags separated by `;`."""
    prompts, tags = [], []
    for name in files:
        line, row = rows[name]
        if not row["prompt"]:
            raise RealImagesError(f"{path}:{line}: empty prompt for {name}; give each image its prompt")
        check_prompt_length(row["prompt"], f"{path}:{line}")
        prompts.append(row["prompt"])
        tags.append([t.strip() for t in (row.get("tags") or "").split(TAG_SEPARATOR) if t.strip()])
    return Labels([None] * len(files), [None] * len(files), prompts, tags)


def csv_labels(path: Path, folder: Path, files: list[str]) -> Labels:
    kind, rows = csv_rows(path)
    check_csv_files(path, folder, files, rows)
    return (class_labels if kind == "class_id" else prompt_labels)(path, files, rows)


def centre_square(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square, resized to size x size (Lanczos)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))


def decode(data: bytes, size: int | None) -> np.ndarray:
    """Image file bytes to uint8 HWC pixels (C = 1 grey or 3 RGB), upright, optionally squared to `size`."""
    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")  # a palette's transparency, then dropped like any alpha
        image = image.convert("L" if image.mode in GREY_MODES else "RGB")
        if size is not None:
            image = centre_square(image, size)
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def checked_image(path: Path, size: int | None) -> str:
    """The sha256 of an image file that decodes; RealImagesError (one line) when it does not."""
    try:
        data = path.read_bytes()
        decode(data, size)
    except Exception as err:  # Pillow raises many kinds: OSError, SyntaxError, ValueError, DecompressionBombError
        why = ("not a format Pillow reads, or damaged" if isinstance(err, UnidentifiedImageError)
               else " ".join(str(err).split()) or type(err).__name__)
        raise RealImagesError(f"{path}: not a readable image ({why[:200]}); remove or replace it") from None
    return hashlib.sha256(data).hexdigest()


def file_pixels(folder: Path, files: list[str], digests: list[str], size: int | None) -> Callable[[int], np.ndarray]:
    """Sample id -> pixels, refusing a file that changed since it was checked."""
    def pixels(sample_id: int) -> np.ndarray:
        path = folder / files[sample_id]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digests[sample_id]:
            raise RealImagesError(f"{path} changed while it was being stored; repeat the command to resume")
        return decode(data, size)
    return pixels


def folder_source(folder: str | Path, labels_csv: str | Path | None, size: int | None, workers: int,
                  progress: bool) -> RealSource:
    """A folder of images, checked: files, labels, and every image decoded once."""
    if not str(folder).strip():
        raise RealImagesError("no --folder given; give a folder of images")
    folder = Path(folder).expanduser().absolute()
    files = image_files(folder)
    labels = (csv_labels(Path(labels_csv).expanduser(), folder, files) if labels_csv is not None
              else folder_labels(folder, files))
    digests = list(tqdm(ordered_map(lambda f: checked_image(folder / f, size), files, workers), total=len(files),
                        desc=f"check {folder.name}", unit="image", disable=not progress))
    content = hashlib.sha256(json.dumps([files, digests, dataclasses.astuple(labels)]).encode()).hexdigest()
    plan = {"kind": "real-images", "folder": str(folder), "files": len(files),
            "labels": "csv" if labels_csv is not None else "sub-folders",
            "labels_csv": str(labels_csv) if labels_csv is not None else None, "size": size,
            "classes": len({c for c in labels.class_id if c is not None}), "content_sha256": content}
    identity = {"kind": "real-images", "content_sha256": content, "size": size, "conversion": CONVERSION}
    config = {"folder": str(folder), "labels_csv": plan["labels_csv"], "size": size}
    return RealSource(folder.name or "images", labels, file_pixels(folder, files, digests, size), plan, identity,
                      config)


# --- scikit-learn's digits ----------------------------------------------------------------------------------

def digits_source() -> RealSource:
    """The 1,797 real digits, through the generators' [-1, 1] -> uint8 conversion, named like their classes."""
    import torch

    from ingest.digits import load_digits_dataset
    from ingest.models.presets import get_spec
    from ingest.samplers import to_uint8

    images, targets = load_digits_dataset()
    pixels = to_uint8(torch.from_numpy(images)).numpy()  # (N, 8, 8, 1) uint8, as the generators store theirs
    names = get_spec(DIGITS_GENERATOR).class_names
    labels = Labels.of_classes([int(t) for t in targets], [names[t] for t in targets])
    content = hashlib.sha256(pixels.tobytes() + targets.astype(np.int64).tobytes()
                             + json.dumps(list(names)).encode()).hexdigest()
    plan = {"kind": "real-digits", "source": "sklearn.datasets.load_digits", "files": len(targets),
            "classes": len(names), "conversion": "ingest.samplers.to_uint8 of v / 16 * 2 - 1 = floor(v * 255 / 16)",
            "content_sha256": content}
    identity = {"kind": "real-digits", "content_sha256": content, "conversion": CONVERSION}
    return RealSource("digits", labels, lambda i: pixels[i], plan, identity, {"source": plan["source"]})


# --- writing ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Encoded:
    png: bytes
    thumbnail: bytes | None
    height: int
    width: int


def encode(pixels: np.ndarray) -> Encoded:
    from ingest.writer import encode_png, encode_thumbnail

    return Encoded(encode_png(pixels), encode_thumbnail(pixels), pixels.shape[0], pixels.shape[1])


def samples_table(run_id: str, chunk: int, ids: range, labels: Labels, encoded: list[Encoded]) -> pa.Table:
    """One chunk's rows in the samples schema."""
    from store.lake import constant_strings

    n, rows = len(ids), slice(ids.start, ids.stop)
    return pa.table({
        "run_id": constant_strings(run_id, n),
        "sample_id": np.arange(ids.start, ids.stop, dtype=np.int64),
        "chunk": np.full(n, chunk, dtype=np.int32),
        "seed": np.zeros(n, dtype=np.int64),
        "class_id": pa.array(labels.class_id[rows], pa.int32()),
        "class_name": pa.array(labels.class_name[rows], pa.string()),
        "prompt": pa.array(labels.prompt[rows], pa.string()),
        "tags": pa.array(labels.tags[rows], pa.list_(pa.string())),
        "steps": np.zeros(n, dtype=np.int16),
        "width": np.array([e.width for e in encoded], dtype=np.int32),
        "height": np.array([e.height for e in encoded], dtype=np.int32),
        "image_png": [e.png for e in encoded],
        "thumbnail": [e.thumbnail for e in encoded],
    }, schema=SAMPLES_SCHEMA)


class RealRunLog:
    """The real run's rows in the `runs` table (rank 0 of 1): one file per status change."""

    def __init__(self, lake: Lake, run_id: str, source: RealSource, digest: str, chunk_size: int) -> None:
        from ingest.run import now, package_versions

        self.lake, self.run_id = lake, run_id
        config = {"model": source.model, "lake": lake.uri, "run_id": run_id, "chunk_size": chunk_size,
                  "layers": "", "poolings": [], **source.config, "identity": source.identity}
        self.row = dict(run_id=run_id, rank=0, world_size=1, model=source.model, checkpoint=None,
                        checkpoint_sha256=None, sampler=json.dumps({"kind": "real", "steps": 0}), layers=[],
                        poolings=[], plan=json.dumps(source.plan), n_samples=len(source), seed=0,
                        config_hash=digest, config=json.dumps(config), versions=json.dumps(package_versions()),
                        device="cpu", dtype=None, host=socket.gethostname(), started_at=now(), error=None,
                        schema_version=SCHEMA_VERSION)

    def record(self, status: str, error: str | None = None) -> None:
        from ingest.run import now

        stamp = now()
        table = pa.Table.from_pylist([self.row | {"status": status, "updated_at": stamp, "error": error}],
                                     schema=RUNS_SCHEMA)
        self.lake.write_parquet(table, *runs_parts(self.run_id, 0, stamp, status))


def write_chunks(lake: Lake, run_id: str, source: RealSource, chunk_size: int, chunks: list[int], workers: int,
                 progress: bool) -> int:
    """Encode and store these chunks, each samples shard in one atomic write (the commit); returns the
    samples written."""
    from ingest.writer import SAMPLES_COMPRESSION

    spans = {k: range(k * chunk_size, min(len(source), (k + 1) * chunk_size)) for k in chunks}
    bar = tqdm(total=sum(map(len, spans.values())), desc=f"store {run_id}", unit="image", disable=not progress)
    try:
        for chunk, ids in spans.items():
            encoded = []
            for item in ordered_map(lambda i: encode(source.pixels(i)), ids, workers):
                encoded.append(item)
                bar.update()
            lake.write_parquet(samples_table(run_id, chunk, ids, source.labels, encoded),
                               *samples_parts(run_id, chunk), compression=SAMPLES_COMPRESSION)
    finally:
        bar.close()
    return sum(map(len, spans.values()))


def previous_chunks(lake: Lake, run_id: str, digest: str) -> tuple[list[str], set[int]]:
    """The statuses the run recorded and its committed chunks; a run id holding other content is refused."""
    from ingest.run import RunConflictError

    previous = lake.read_runs(run_id)
    if set(previous.column("config_hash").to_pylist()) - {digest}:
        raise RunConflictError(f"run id {run_id} already holds a run with other content (other images, labels, "
                               "--size or --chunk-size); use a new --run-id, or repeat the original command to "
                               "resume it")
    return previous.column("status").to_pylist(), lake.committed_chunks(run_id)


def store_source(lake: Lake | str, source: RealSource, run_id: str, chunk_size: int, workers: int,
                 progress: bool) -> RealResult:
    """Write a checked source's missing chunks as run `run_id`, with its `runs` log (running, then complete)."""
    from ingest.run import RunLock, config_hash, failure_logged

    started = time.perf_counter()
    lake = as_lake(lake)
    identity = source.identity | {"chunk_size": chunk_size, "schema_version": SCHEMA_VERSION}
    source = dataclasses.replace(source, identity=identity)
    digest = config_hash(identity)
    previous_chunks(lake, run_id, digest)  # refused before anything is written
    lake.ensure_writable()
    with RunLock(lake, run_id, 0):
        statuses, done = previous_chunks(lake, run_id, digest)
        log = RealRunLog(lake, run_id, source, digest, chunk_size)
        pending = [k for k in range(-(-len(source) // chunk_size)) if k not in done]
        if not pending:
            if "complete" not in statuses:
                log.record("complete")
            return RealResult(run_id, len(source), 0, time.perf_counter() - started)
        lake.remove_temporaries(run_id, pending)  # left by a killed earlier attempt at these chunks
        log.record("running")
        with failure_logged(log):
            written = write_chunks(lake, run_id, source, chunk_size, pending, workers, progress)
        log.record("complete")
    return RealResult(run_id, len(source), written, time.perf_counter() - started)


def check_numbers(chunk_size: int, workers: int, size: int | None = None) -> None:
    check_range("--chunk-size", chunk_size, 1, MAX_SAMPLES)
    check_range("--workers", workers, 1, MAX_WORKERS)
    if size is not None:
        check_range("--size", size, 1, MAX_SIDE)


# --- the two entry points -----------------------------------------------------------------------------------

def ingest_folder(lake: Lake | str, folder: str | Path, run_id: str, labels_csv: str | Path | None = None,
                  size: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 2,
                  progress: bool = True) -> RealResult:
    """Store every image under `folder` as run `run_id` (class from sub-folders or `labels_csv`; see the
    module's docstring). Resumable; every input is checked before the first write."""
    check_numbers(chunk_size, workers, size)
    check_run_id(run_id)
    source = folder_source(folder, labels_csv, size, workers, progress)
    return store_source(lake, source, run_id, chunk_size, workers, progress)


def ingest_real_digits(lake: Lake | str, run_id: str = REAL_DIGITS_RUN, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       workers: int = 2, progress: bool = True) -> RealResult:
    """Store scikit-learn's 1,797 real digits as run `run_id` (classes 0..9, named as the digits generators
    name them; pixels converted exactly as the generators convert theirs)."""
    check_numbers(chunk_size, workers)
    check_run_id(run_id)
    return store_source(lake, digits_source(), run_id, chunk_size, workers, progress)


def summary(result: RealResult, lake: str) -> str:
    """The command line's closing line."""
    plural = "s" if result.written != 1 else ""
    state = "already complete" if result.written == 0 else f"stored {result.written} real image{plural}"
    return (f"run {result.run_id}: {state} of {result.planned} ({result.seconds:.1f} s) in {lake}; no "
            "activations yet (features come from a separate command)")
