"""Sample plans: balanced, random and explicit class plans, prompt files, per-sample seeds."""

from __future__ import annotations

import json
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from ingest import plan as plan_module
from ingest.plan import (MAX_LINE_CHARS, MAX_PROMPT_CHARS, PlanError, Prompt, class_plan, explicit_plan, prompt_plan,
                         read_prompt_file, sample_seeds)
from store.options import MAX_SAMPLES, SEED_MAX


def test_balanced_plan_is_interleaved_so_every_prefix_is_balanced():
    plan = class_plan(10, seed=1, per_class=3)
    assert len(plan) == 30
    assert plan.class_id[:10].tolist() == list(range(10))
    for k in range(1, 31):  # every prefix: no class more than one sample ahead of another
        counts = np.bincount(plan.class_id[:k], minlength=10)
        assert counts.max() - counts.min() <= 1, k
    assert np.bincount(plan.class_id).tolist() == [3] * 10
    assert plan.sample_id.tolist() == list(range(30))


def test_random_plan_is_reproducible_from_its_seed():
    a, b, c = class_plan(10, seed=7, n=500), class_plan(10, seed=7, n=500), class_plan(10, seed=8, n=500)
    assert np.array_equal(a.class_id, b.class_id) and np.array_equal(a.seed, b.seed)
    assert not np.array_equal(a.class_id, c.class_id)
    assert set(a.class_id.tolist()) == set(range(10))


def test_explicit_classes():
    plan = class_plan(10, seed=0, n=5, classes=[7, 1])
    assert plan.class_id.tolist() == [7, 1, 7, 1, 7]
    assert class_plan(10, seed=0, per_class=2, classes=[3]).class_id.tolist() == [3, 3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=5, classes=[10]), r"--classes 10 is out of range \(0 to 9\); this model has 10 classes"),
    (dict(n=5, classes=[-1]), "out of range"),
    (dict(), "give --n"),
    (dict(n=0), r"--n 0 is out of range \(1 to 100,000,000\); give at least 1"),
    (dict(n=MAX_SAMPLES + 1), "give at most 100,000,000"),
    (dict(per_class=0), "--per-class 0 is out of range"),
    (dict(per_class=MAX_SAMPLES // 5), r"--per-class 20000000 x 10 classes make 200,000,000 samples, more than"),
    (dict(n=7, per_class=2), "disagrees"),
    (dict(n=5, seed=-1), "--seed -1 is out of range"),
    (dict(n=5, seed=2**63), r"--seed 9223372036854775808 is out of range \(0 to 2\*\*63-1\)"),
])
def test_bad_class_plans(kwargs, message):
    with pytest.raises(PlanError, match=message):
        class_plan(10, **{"seed": 0, **kwargs})


def test_sample_seeds_are_distinct_positive_and_stable():
    seeds = sample_seeds(123, np.arange(100_000))
    assert len(np.unique(seeds)) == 100_000 and seeds.min() >= 0
    assert sample_seeds(123, np.array([5]))[0] == seeds[5]  # a sample's seed does not depend on the plan size
    assert sample_seeds(124, np.array([5]))[0] != seeds[5]
    for sample_id in (0, 1, 5, 99_999):  # recomputed independently: splitmix64 in Python's integers
        assert seeds[sample_id] == splitmix64(123, sample_id)


def splitmix64(run_seed: int, sample_id: int) -> int:
    """The documented per-sample seed: splitmix64 of (run seed, sample id) in uint64, keeping 63 bits."""
    mask = 2**64 - 1
    z = (run_seed * 0x9E3779B97F4A7C15 + sample_id) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & (2**63 - 1)


def test_seeds_derived_from_the_largest_run_seed_do_not_overflow():
    """The run seed's range ends at 2**63-1 (the lake's int64); with the last sample ids a run may hold, the
    derived seeds are still non-negative int64 that torch takes, with no overflow warning or error."""
    ids = np.array([0, 1, MAX_SAMPLES - 2, MAX_SAMPLES - 1], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            for run_seed in (0, 1, SEED_MAX - 1, SEED_MAX):
                seeds = sample_seeds(run_seed, ids)
                assert seeds.dtype == np.int64 and (seeds >= 0).all() and len(set(seeds.tolist())) == len(ids)
                for seed in seeds.tolist():
                    assert torch.Generator().manual_seed(seed).initial_seed() == seed
                    assert torch.Generator().manual_seed(seed ^ 0x5EED).initial_seed() < 2**63  # text models' re-noise
    plan = class_plan(10, seed=SEED_MAX, n=3)
    assert plan.seed.tolist() == sample_seeds(SEED_MAX, np.arange(3)).tolist()
    assert prompt_plan([Prompt("a cat")], seed=SEED_MAX, n=2).seed.min() >= 0


def test_prompt_files(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("a cat\n\n  a dog on a sofa  \n", encoding="utf-8")
    assert read_prompt_file(text) == [Prompt("a cat"), Prompt("a dog on a sofa")]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a <b>red</b> fox", "tags": ["animal", "red"]}) + "\n"
                     + json.dumps({"prompt": "über", "tags": "word"}) + "\n", encoding="utf-8")
    assert read_prompt_file(jsonl) == [Prompt("a <b>red</b> fox", ("animal", "red")), Prompt("über", ("word",))]
    plan = prompt_plan(read_prompt_file(jsonl), seed=0, per_prompt=3)
    assert plan.prompt_index.tolist() == [0, 1, 0, 1, 0, 1]
    assert plan.prompt_texts()[:2] == ["a <b>red</b> fox", "über"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "\n \n", "holds no prompts"),
    ("bad.jsonl", '{"prompt": "ok"}\n{not json}\n', r"bad.jsonl:2: not valid JSON"),
    ("noprompt.jsonl", '{"text": "x"}\n', 'needs a non-empty "prompt"'),
    ("tags.jsonl", '{"prompt": "x", "tags": [1]}\n', '"tags" must be a list of strings'),
])
def test_bad_prompt_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PlanError, match=message):
        read_prompt_file(path)


def test_missing_and_binary_prompt_files(tmp_path):
    with pytest.raises(PlanError, match="no such prompt file"):
        read_prompt_file(tmp_path / "none.txt")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PlanError, match="not UTF-8"):
        read_prompt_file(binary)


def test_explicit_seeds_with_one_class_or_one_each():
    plan = explicit_plan([42, 43], classes=[7], num_classes=10)
    assert plan.seed.tolist() == [42, 43] and plan.class_id.tolist() == [7, 7]
    assert plan.sample_id.tolist() == [0, 1] and plan.description["kind"] == "explicit"
    each = explicit_plan([1, 2, 3], classes=[3, 1, 4], num_classes=10)
    assert each.class_id.tolist() == [3, 1, 4]
    texts = explicit_plan([5, 6], prompts=[Prompt("a cat"), Prompt("a dog")])
    assert texts.prompt_texts() == ["a cat", "a dog"] and texts.class_id is None


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": [], "classes": [1]}, "no seeds"),
    ({"seeds": [-1], "classes": [1]}, "--sample-seeds -1 is out of range"),
    ({"seeds": [2**63], "classes": [1]}, r"--sample-seeds 9223372036854775808 is out of range \(0 to 2\*\*63-1\)"),
    ({"seeds": [1, 2, 3], "classes": [1, 2]}, "3 seeds but 2"),
    ({"seeds": [1], "classes": [10]}, "--classes 10 is out of range"),
    ({"seeds": [1], "prompts": [Prompt("x" * (MAX_PROMPT_CHARS + 1))]}, "prompt of 4,001 characters, longer than"),
    ({"seeds": [1]}, "give a class or a prompt"),
    ({"seeds": [1], "prompts": [Prompt("  ")]}, "empty prompt"),
])
def test_bad_explicit_plans(kwargs, message):
    with pytest.raises(PlanError, match=message):
        explicit_plan(num_classes=10, **kwargs)


def test_plain_text_prompts_are_stripped_and_jsonl_prompts_kept_exactly(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("  a cat \t\n\ta dog\r\n", encoding="utf-8")
    assert [p.text for p in read_prompt_file(text)] == ["a cat", "a dog"]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": "  a cat \t"}) + "\n", encoding="utf-8")
    assert [p.text for p in read_prompt_file(jsonl)] == ["  a cat \t"]


def test_lines_are_numbered_as_before_the_file_was_streamed(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\r\n\n{"prompt": "b"}\f{oops}\n', encoding="utf-8")
    with pytest.raises(PlanError, match=r"p.jsonl:4: not valid JSON"):
        read_prompt_file(path)


@pytest.mark.parametrize("name, content, message", [
    ("long.txt", "a cat\n" + "x" * (MAX_PROMPT_CHARS + 1) + "\n",
     r"long.txt:2: prompt of 4,001 characters, longer than the limit of 4,000; shorten it"),
    ("long.jsonl", json.dumps({"prompt": "é" * (MAX_PROMPT_CHARS + 1)}) + "\n", r"long.jsonl:1: prompt of 4,001"),
    ("huge.txt", "a cat\n\n" + "x" * (MAX_LINE_CHARS * 30), r"huge.txt:3: line longer than 65,536 characters"),
])
def test_prompt_length_limits_name_the_file_line_and_limit(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlanError, match=message):
        read_prompt_file(path)
    fits = tmp_path / "fits.txt"
    fits.write_text("y" * MAX_PROMPT_CHARS)
    assert read_prompt_file(fits) == [Prompt("y" * MAX_PROMPT_CHARS)]  # the limit itself is allowed


def test_a_giant_line_is_never_read_whole(tmp_path):
    """Reading stops at the line limit: a 32 MB line costs about as much memory as a 64 KB one."""
    path = tmp_path / "giant.txt"
    path.write_text("x" * 32 * 1024**2, encoding="utf-8")
    tracemalloc.start()
    try:
        with pytest.raises(PlanError, match="giant.txt:1: line longer than"):
            read_prompt_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024**2


def test_prompt_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(plan_module, "MAX_PROMPT_FILE_BYTES", 1024**2)
    path = tmp_path / "big.txt"
    path.write_text("a cat\n" * 200_000, encoding="utf-8")
    with pytest.raises(PlanError, match=r"big.txt: 1 MiB, larger than the limit of 1 MiB; split it"):
        read_prompt_file(path)


def test_a_folder_is_not_a_prompt_file(tmp_path):
    with pytest.raises(PlanError, match="a folder, not a prompt file"):
        read_prompt_file(tmp_path)
