"""Bounded integer options (store/options.py): the parsing both command lines share, its one-line errors,
and the measurements behind the ranges (what torch, numpy and the lake accept)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from store.layouts import LayoutParams, layout
from store.options import (FIT_SAMPLE_MIN, INT32_MAX, MAX_SAMPLES, SEED_MAX, STEP_MAX, UMAP_SEED_MAX,
                           OneLineParser, OptionError, bounded_int, check_range, int_list, one_line,
                           parse_bounded, spell)


def test_bounds_are_spelled_as_readers_take_them_in():
    assert spell(SEED_MAX) == "2**63-1" and spell(INT32_MAX) == "2**31-1" and spell(UMAP_SEED_MAX) == "2**32-1"
    assert spell(MAX_SAMPLES) == "100,000,000" and spell(STEP_MAX) == "32,767" and spell(0) == "0"


@pytest.mark.parametrize("text, value", [("0", 0), (" 42 ", 42), ("+7", 7), ("1_000", 1000), (str(SEED_MAX), SEED_MAX)])
def test_numbers_in_range(text, value):
    assert parse_bounded(text, 0, SEED_MAX) == value


@pytest.mark.parametrize("text, message", [
    ("-1", "-1 is out of range (0 to 2**63-1); give at least 0"),
    (str(2**63), f"{2**63} is out of range (0 to 2**63-1); give at most 2**63-1"),
    ("9" * 5000, "999999999999999999999999... (5000 characters) is out of range"),  # never converted
    ("-" + "9" * 5000, "give at least 0"),
    ("1e6", "'1e6' is not a whole number; give one from 0 to 2**63-1"),
    ("_5", "'_5' is not a whole number"),
    ("٣", "is not a whole number"),  # a non-ASCII digit, which int() would take
    ("", "is not a whole number"),
])
def test_numbers_out_of_range_or_not_numbers(text, message):
    with pytest.raises(OptionError) as caught:
        parse_bounded(text, 0, SEED_MAX)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_words_and_lists():
    assert bounded_int(0, STEP_MAX, words=("all",))("all") == "all"
    assert bounded_int(0, STEP_MAX, words=("all",))("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="'last' is not a whole number or `all`"):
        bounded_int(0, STEP_MAX, words=("all",))("last")
    assert int_list(0, 9)("1, 7,,2") == [1, 7, 2] and int_list(0, 9)(",") == []
    with pytest.raises(argparse.ArgumentTypeError, match="^1,12: 12 is out of range"):
        int_list(0, 9)("1,12")


def test_check_range_for_in_process_callers():
    assert check_range("--batch", 5, 1, 10) == 5
    with pytest.raises(OptionError, match=r"^--batch 0 is out of range \(1 to 10\); give at least 1$"):
        check_range("--batch", 0, 1, 10)
    with pytest.raises(KeyError):
        check_range("--batch", 11, 1, 10, error=KeyError)  # type: ignore[arg-type]


def parser() -> OneLineParser:
    root = OneLineParser(prog="tool")
    sub = root.add_subparsers(dest="command", required=True).add_parser("go")
    sub.add_argument("--n", "--num", dest="n", type=bounded_int(1, 10, "split it"))
    sub.add_argument("--seed", type=bounded_int(0, SEED_MAX))
    sub.add_argument("--kind", choices=["a", "b"])
    sub.add_argument("--runs", required=True)
    return root


@pytest.mark.parametrize("argv, line", [
    (["go", "--runs", "x", "--n", "11"], "error: --n/--num 11 is out of range (1 to 10); give at most 10 (split it)"),
    (["go", "--runs", "x", "--seed", "99999999999999999999999"],
     "error: --seed 99999999999999999999999 is out of range (0 to 2**63-1); give at most 2**63-1"),
    (["go", "--runs", "x", "--kind", "c"], "error: --kind invalid choice: 'c' (choose from 'a', 'b'); see `tool go --help`"),
    (["go"], "error: the following arguments are required: --runs; see `tool go --help`"),
    (["stop"], "error: argument command: invalid choice: 'stop' (choose from 'go'); see `tool --help`"),
])
def test_parser_errors_are_one_line_and_exit_2(capsys, argv, line):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == line + "\n"  # no usage block


def test_one_line_joins_wrapped_messages():
    assert one_line("argument --x: a\n  b; c", "p") == "--x a b; c"


def test_torch_takes_every_seed_in_range_and_wraps_beyond_it():
    """Why seeds stop at 2**63-1: torch accepts -2**63 to 2**64-1 but wraps, so 2**64-1 would be seed -1;
    the lake stores seeds as int64 and per-sample seeds keep 63 bits."""
    assert torch.Generator().manual_seed(SEED_MAX).initial_seed() == SEED_MAX
    assert torch.Generator().manual_seed(-1).initial_seed() == 2**64 - 1  # wrapped
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        torch.Generator().manual_seed(2**64)
    assert torch.Generator().manual_seed(SEED_MAX ^ 0x5EED).initial_seed() < 2**63  # the text models' re-noise seed
    assert np.array([SEED_MAX], dtype=np.int64)[0] == SEED_MAX


def test_umap_seeds_stop_at_32_bits():
    np.random.RandomState(UMAP_SEED_MAX)
    with pytest.raises(ValueError):
        np.random.RandomState(UMAP_SEED_MAX + 1)


def test_umap_fits_on_the_fewest_points_allowed():
    data = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    xy = layout(data, LayoutParams(fit_sample=FIT_SAMPLE_MIN, n_neighbors=2))
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
