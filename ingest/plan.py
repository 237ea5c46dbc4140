"""Sample plans: the exact list of samples a run generates, each with its own seed and class or prompt.

A plan is deterministic given its arguments, so a killed run can be resumed and any single sample
regenerated from its recorded seed. Class-conditional plans: random labels, a balanced plan (every
class `per_class` times, interleaved so that any prefix is balanced too), or an explicit class list.
Text plans: a prompt file (one prompt per line, or JSONL objects with `prompt` and optional `tags`),
each prompt `per_prompt` times.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

SEED_MASK = (1 << 63) - 1


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


def sample_seeds(run_seed: int, sample_ids: np.ndarray) -> np.ndarray:
    """Per-sample noise seeds: a splitmix64 hash of (run seed, sample id), as non-negative int64."""
    with np.errstate(over="ignore"):
        z = np.uint64(run_seed & SEED_MASK) * np.uint64(0x9E3779B97F4A7C15) + sample_ids.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z & np.uint64(SEED_MASK)).astype(np.int64)


def class_plan(
    num_classes: int,
    seed: int,
    n: int | None = None,
    per_class: int | None = None,
    classes: list[int] | None = None,
) -> SamplePlan:
    """Random labels (`n`), balanced (`per_class`), or an explicit class list (cycled to `n`, or each
    `per_class` times)."""
    if classes is not None:
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise PlanError(f"class id {bad[0]} out of range; this model has classes 0..{num_classes - 1}")
        if not classes:
            raise PlanError("empty class list; name at least one class id")
    chosen = np.asarray(classes if classes is not None else range(num_classes), dtype=np.int64)
    if per_class is not None:
        if per_class < 1:
            raise PlanError("--per-class must be at least 1")
        labels = np.tile(chosen, per_class)  # interleaved: 0,1,...,9,0,1,...
        kind = "balanced"
    elif n is None or n < 1:
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
    if any(not 0 <= int(s) <= SEED_MASK for s in seeds):
        raise PlanError(f"seeds must be between 0 and {SEED_MASK}")
    labels = classes if classes is not None else prompts
    if not labels:
        raise PlanError("give a class or a prompt for the seeds")
    if len(labels) not in (1, len(seeds)):
        raise PlanError(f"{len(seeds)} seeds but {len(labels)} classes or prompts; give one, or one per seed")
    if prompts is not None and any(not p.text.strip() for p in prompts):
        raise PlanError("empty prompt; type the text to generate from")
    labels = list(labels) * len(seeds) if len(labels) == 1 else list(labels)
    ids = np.arange(len(seeds), dtype=np.int64)
    seed_array = np.asarray([int(s) for s in seeds], dtype=np.int64)
    if classes is not None:
        bad = [c for c in labels if num_classes is not None and not 0 <= c < num_classes]
        if bad:
            raise PlanError(f"class id {bad[0]} out of range; this model has classes 0..{num_classes - 1}")
        return SamplePlan(sample_id=ids, seed=seed_array, class_id=np.asarray(labels, dtype=np.int64),
                          description={"kind": "explicit", "seeds": seed_array.tolist(), "classes": labels})
    unique = list(dict.fromkeys(labels))
    return SamplePlan(sample_id=ids, seed=seed_array,
                      prompt_index=np.asarray([unique.index(p) for p in labels], dtype=np.int64),
                      prompts=tuple(unique), description={"kind": "explicit", "seeds": seed_array.tolist(),
                                                          "prompts": [p.text for p in labels]})


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """Prompts from a text file (one per non-blank line) or JSONL (`{"prompt": ..., "tags": [...]}`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{path}: no such prompt file") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path}: not UTF-8 text; save the prompt file as UTF-8") from None
    prompts = []
    jsonl = path.suffix.lower() in {".jsonl", ".ndjson"}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(Prompt(line.strip()))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PlanError(f"{path}:{number}: not valid JSON ({err.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise PlanError(f'{path}:{number}: needs a non-empty "prompt" string, e.g. {{"prompt": "a cat", "tags": ["animal"]}}')
        tags = record.get("tags", [])
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise PlanError(f'{path}:{number}: "tags" must be a list of strings')
        prompts.append(Prompt(record["prompt"], tuple(tags)))
    if not prompts:
        raise PlanError(f"{path}: the prompt file holds no prompts; write one prompt per line")
    return prompts


def prompt_plan(prompts: list[Prompt], seed: int, per_prompt: int = 1, n: int | None = None) -> SamplePlan:
    """Each prompt `per_prompt` times (interleaved), or prompts cycled to `n` samples."""
    if per_prompt < 1:
        raise PlanError("--per-prompt must be at least 1")
    if not prompts:
        raise PlanError("no prompts given")
    count = n if n is not None else len(prompts) * per_prompt
    if count < 1:
        raise PlanError("--n must be at least 1")
    index = np.resize(np.arange(len(prompts), dtype=np.int64), count)
    ids = np.arange(count, dtype=np.int64)
    description = {"kind": "prompts", "n": count, "per_prompt": per_prompt, "prompts": len(prompts), "seed": seed}
    return SamplePlan(sample_id=ids, seed=sample_seeds(seed, ids), prompt_index=index, prompts=tuple(prompts),
                      description=description)
