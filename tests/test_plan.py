"""Sample plans: balanced, random and explicit class plans, prompt files, per-sample seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest.plan import PlanError, Prompt, class_plan, explicit_plan, prompt_plan, read_prompt_file, sample_seeds


def test_balanced_plan_is_interleaved_so_every_prefix_is_balanced():
    plan = class_plan(10, seed=1, per_class=3)
    assert len(plan) == 30
    assert plan.class_id[:10].tolist() == list(range(10))
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
    (dict(n=5, classes=[10]), "class id 10 out of range; this model has classes 0..9"),
    (dict(n=5, classes=[-1]), "out of range"),
    (dict(), "give --n"),
    (dict(n=0), "give --n"),
    (dict(per_class=0), "at least 1"),
    (dict(n=7, per_class=2), "disagrees"),
])
def test_bad_class_plans(kwargs, message):
    with pytest.raises(PlanError, match=message):
        class_plan(10, seed=0, **kwargs)


def test_sample_seeds_are_distinct_positive_and_stable():
    seeds = sample_seeds(123, np.arange(100_000))
    assert len(np.unique(seeds)) == 100_000 and seeds.min() >= 0
    assert sample_seeds(123, np.array([5]))[0] == seeds[5]  # a sample's seed does not depend on the plan size
    assert sample_seeds(124, np.array([5]))[0] != seeds[5]


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
    ({"seeds": [-1], "classes": [1]}, "seeds must be between"),
    ({"seeds": [1, 2, 3], "classes": [1, 2]}, "3 seeds but 2"),
    ({"seeds": [1], "classes": [10]}, "out of range"),
    ({"seeds": [1]}, "give a class or a prompt"),
    ({"seeds": [1], "prompts": [Prompt("  ")]}, "empty prompt"),
])
def test_bad_explicit_plans(kwargs, message):
    with pytest.raises(PlanError, match=message):
        explicit_plan(num_classes=10, **kwargs)
