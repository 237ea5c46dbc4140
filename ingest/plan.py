"""Sample plans: the exact list of samples a run generates, each with its own seed and class or prompt.

A plan is deterministic given its arguments, so a killed run can be resumed and any single sample
regenerated from its recorded seed. Class-conditional plans: random labels, a balanced plan (every
class `per_class` times, interleaved so that any prefix is balanced too), or an explicit class list.
Text plans: a prompt file (one prompt per line, stripped of leading and trailing spaces; or JSONL objects
with `prompt`, kept exactly, and optional `tags`), each prompt `per_prompt` times.

Limits, each refused in one line before anything runs: a run holds at most `MAX_SAMPLES` samples (its plan
is held in memory, ~40 bytes a sample while it is built), a prompt at most `MAX_PROMPT_CHARS` characters (CLIP
reads 77 tokens, about 300 characters), a prompt file at most `MAX_PROMPT_FILE_BYTES`; the file is read a line
at a time, never more than `MAX_LINE_CHARS` of one line, so one enormous line cannot exhaust memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from store.options import MAX_SAMPLES, SEED_MAX, check_range, spell

SEED_MASK = SEED_MAX  # per-sample seeds keep 63 bits: non-negative int64, as the lake stores them
MAX_PROMPT_CHARS = 4_000
MAX_LINE_CHARS = 64 * 1024  # one line of a prompt file: a JSONL line holds escapes and tags besides the prompt
MAX_PROMPT_FILE_BYTES = 256 * 1024**2


class PlanError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """Columns of the plan; row i is sample `sample_id[i]`. Exactly one of class_id / prompt_index is set."""

    sample_id: np.ndarray  # int64, 0..n-1
    seed: np.ndarray  # int64, the noise seed of each sample
    class_id: np.ndarray | None = None  # int64
    prompt_index: np.ndarray | None = None  # int64 into `prompts`
    prompts: tuple[Prompt, ...] = ()
    description: dict = dataclasses.field(default_factory=dict)  # how it was made, for the runs table

    def __len__(self) -> int:
        return len(self.sample_id)

    def take(self, rows: np.ndarray | slice) -> "SamplePlan":
        """A sub-plan of the given rows (same prompts list)."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return dataclasses.replace(self, sample_id=self.sample_id[rows], seed=self.seed[rows],
                                   class_id=pick(self.class_id), prompt_index=pick(self.prompt_index))

    def prompt_texts(self) -> list[str]:
        return [self.prompts[i].text for i in self.prompt_index] if self.prompt_index is not None else []


def check_run_seed(seed: int) -> None:
    check_range("--seed", seed, 0, SEED_MAX, "seeds are stored as 64-bit integers", PlanError)


def sample_seeds(run_seed: int, sample_ids: np.ndarray) -> np.ndarray:
    """Per-sample noise seeds: a splitmix64 hash of (run seed, sample id), as non-negative int64. The hash
    wraps in uint64 on purpose, so no run seed in range and no sample id overflows anything."""
    check_run_seed(run_seed)
    with np.errstate(over="ignore"):
        z = np.uint64(run_seed & SEED_MASK) * np.uint64(0x9E3779B97F4A7C15) + sample_ids.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z & np.uint64(SEED_MASK)).astype(np.int64)


def check_classes(classes: list[int], num_classes: int | None) -> None:
    """Every class id within the model's classes, 0 to num_classes - 1."""
    bad = [c for c in classes if num_classes is not None and not 0 <= c < num_classes]
    if bad:
        raise PlanError(f"--classes {bad[0]} is out of range (0 to {num_classes - 1}); this model has "
                        f"{num_classes} classes, 0 to {num_classes - 1}")


def check_count(count: int, what: str) -> None:
    """A plan's size: at most MAX_SAMPLES (`what` says how it was asked for)."""
    if count > MAX_SAMPLES:
        raise PlanError(f"{what} make {count:,} samples, more than the {spell(MAX_SAMPLES)} a run holds; "
                        "split the plan into several runs")


def class_plan(
    num_classes: int,
    seed: int,
    n: int | None = None,
    per_class: int | None = None,
    classes: list[int] | None = None,
) -> SamplePlan:
    """Random labels (`n`), balanced (`per_class`), or an explicit class list (cycled to `n`, or each
    `per_class` times)."""
    check_run_seed(seed)
    if classes is not None:
        check_classes(classes, num_classes)
        if not classes:
            raise PlanError("empty class list; name at least one class id")
    chosen = np.asarray(classes if classes is not None else range(num_classes), dtype=np.int64)
    if n is not None:
        check_range("--n", n, 1, MAX_SAMPLES, "split a bigger plan into several runs", PlanError)
    if per_class is not None:
        check_range("--per-class", per_class, 1, MAX_SAMPLES, error=PlanError)
        check_count(per_class * len(chosen), f"--per-class {per_class} x {len(chosen)} classes")
        labels = np.tile(chosen, per_class)  # interleaved: 0,1,...,9,0,1,...
        kind = "balanced"
    elif n is None:
        raise PlanError("give --n (number of samples, at least 1) or --per-class")
    elif classes is not None:
        labels = np.resize(chosen, n)
        kind = "classes"
    else:
        labels = np.random.default_rng(seed).integers(0, num_classes, size=n, dtype=np.int64)
        kind = "random"
    if n is not None and per_class is not None and n != len(labels):
        raise PlanError(f"--n {n} disagrees with --per-class {per_class} x {len(chosen)} classes; give one of them")
    ids = np.arange(len(labels), dtype=np.int64)
    description = {"kind": kind, "n": len(labels), "per_class": per_class, "classes": classes, "seed": seed}
    return SamplePlan(sample_id=ids, seed=sample_seeds(seed, ids), class_id=labels, description=description)


def explicit_plan(seeds: list[int], classes: list[int] | None = None, prompts: list[Prompt] | None = None,
                  num_classes: int | None = None) -> SamplePlan:
    """Samples with the given noise seeds, one class or prompt each (a user's "class 7, seed 42"; a
    class or prompt given once applies to every seed)."""
    if not seeds:
        raise PlanError("no seeds given; name at least one noise seed")
    check_count(len(seeds), f"{len(seeds):,} seeds")
    for seed in seeds:
        check_range("--sample-seeds", int(seed), 0, SEED_MAX, "seeds are stored as 64-bit integers", PlanError)
    labels = classes if classes is not None else prompts
    if not labels:
        raise PlanError("give a class or a prompt for the seeds")
    if len(labels) not in (1, len(seeds)):
        raise PlanError(f"{len(seeds)} seeds but {len(labels)} classes or prompts; give one, or one per seed")
    if prompts is not None and any(not p.text.strip() for p in prompts):
        raise PlanError("empty prompt; type the text to generate from")
    for prompt in prompts or ():
        check_prompt_length(prompt.text)
    labels = list(labels) * len(seeds) if len(labels) == 1 else list(labels)
    ids = np.arange(len(seeds), dtype=np.int64)
    seed_array = np.asarray([int(s) for s in seeds], dtype=np.int64)
    if classes is not None:
        check_classes(labels, num_classes)
        return SamplePlan(sample_id=ids, seed=seed_array, class_id=np.asarray(labels, dtype=np.int64),
                          description={"kind": "explicit", "seeds": seed_array.tolist(), "classes": labels})
    unique = list(dict.fromkeys(labels))
    return SamplePlan(sample_id=ids, seed=seed_array,
                      prompt_index=np.asarray([unique.index(p) for p in labels], dtype=np.int64),
                      prompts=tuple(unique), description={"kind": "explicit", "seeds": seed_array.tolist(),
                                                          "prompts": [p.text for p in labels]})


def check_prompt_length(text: str, where: str = "") -> None:
    """At most MAX_PROMPT_CHARS characters (`where`: the file and line it came from, if any)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise PlanError(f"{where}{': ' if where else ''}prompt of {len(text):,} characters, longer than the limit "
                        f"of {MAX_PROMPT_CHARS:,}; shorten it (CLIP reads only its first 77 tokens, about 300 "
                        "characters)")


def numbered_lines(path: Path, handle: IO[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) of an open prompt file, reading at most MAX_LINE_CHARS of a line and
    MAX_PROMPT_FILE_BYTES in all. Lines end where `str.splitlines` ends them (newline, carriage return, form
    feed, ...), as when the whole file was read at once."""
    number = read = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        read += len(line)
        if read > MAX_PROMPT_FILE_BYTES:
            raise PlanError(f"{path}: longer than {MAX_PROMPT_FILE_BYTES // 1024**2} MiB; split it into several "
                            "prompt files, one run each")
        if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
            raise PlanError(f"{path}:{number + 1}: line longer than {MAX_LINE_CHARS:,} characters; a prompt may "
                            f"hold at most {MAX_PROMPT_CHARS:,} (CLIP reads only its first 77 tokens)")
        for part in line.splitlines():
            number += 1
            yield number, part


def parse_prompt_line(where: str, line: str, jsonl: bool) -> Prompt:
    """One non-blank line: the stripped text, or a JSONL object with `prompt` (kept exactly) and `tags`."""
    if not jsonl:
        prompt = Prompt(line.strip())
    else:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PlanError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise PlanError(f'{where}: needs a non-empty "prompt" string, e.g. {{"prompt": "a cat", "tags": ["animal"]}}')
        tags = record.get("tags", [])
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise PlanError(f'{where}: "tags" must be a list of strings')
        prompt = Prompt(record["prompt"], tuple(tags))
    check_prompt_length(prompt.text, where)
    return prompt


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """Prompts from a text file (one per non-blank line, stripped of leading and trailing spaces) or JSONL
    (`{"prompt": ..., "tags": [...]}`, the prompt kept exactly), within the limits above."""
    path = Path(path)
    jsonl = path.suffix.lower() in {".jsonl", ".ndjson"}
    try:
        with path.open(encoding="utf-8") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_PROMPT_FILE_BYTES:
                raise PlanError(f"{path}: {size / 1024**2:,.0f} MiB, larger than the limit of "
                                f"{MAX_PROMPT_FILE_BYTES // 1024**2} MiB; split it into several prompt files, "
                                "one run each")
            prompts = [parse_prompt_line(f"{path}:{number}", line, jsonl)
                       for number, line in numbered_lines(path, handle) if line.strip()]
    except FileNotFoundError:
        raise PlanError(f"{path}: no such prompt file") from None
    except IsADirectoryError:
        raise PlanError(f"{path}: a folder, not a prompt file; pass the file itself") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path}: not UTF-8 text; save the prompt file as UTF-8") from None
    if not prompts:
        raise PlanError(f"{path}: the prompt file holds no prompts; write one prompt per line")
    return prompts


def prompt_plan(prompts: list[Prompt], seed: int, per_prompt: int = 1, n: int | None = None) -> SamplePlan:
    """Each prompt `per_prompt` times (interleaved), or prompts cycled to `n` samples."""
    check_range("--per-prompt", per_prompt, 1, MAX_SAMPLES, error=PlanError)
    if not prompts:
        raise PlanError("no prompts given")
    if n is not None:
        check_range("--n", n, 1, MAX_SAMPLES, "split a bigger plan into several runs", PlanError)
    count = n if n is not None else len(prompts) * per_prompt
    check_count(count, f"{len(prompts):,} prompts x --per-prompt {per_prompt}")
    index = np.resize(np.arange(len(prompts), dtype=np.int64), count)
    ids = np.arange(count, dtype=np.int64)
    description = {"kind": "prompts", "n": count, "per_prompt": per_prompt, "prompts": len(prompts), "seed": seed}
    return SamplePlan(sample_id=ids, seed=sample_seeds(seed, ids), prompt_index=index, prompts=tuple(prompts),
                      description=description)
