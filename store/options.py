"""Bounded integer options, the one place both command lines (`python -m ingest`, `python -m store`) parse
numbers: every integer option accepts only its sensible range, and anything else (a sample count of 10**30,
a seed beyond 64 bits, a batch of 0, a word) is one line on stderr and exit status 2, before anything runs:

    error: --seed 99999999999999999999999 is out of range (0 to 2**63-1); give at most 2**63-1 (...)

- `bounded_int(lo, hi)` and `int_list(lo, hi)` are argparse types; `OneLineParser` is the
  `ArgumentParser` whose errors are that one line (no usage block), with the option's name in front.
- `check_range` is the same check for in-process callers (`ingest.run.IngestConfig`, `ingest.plan`).
- The ranges follow what stores or consumes the number (measured, see tests/test_options.py):
  seeds are stored as int64 and `ingest.plan.sample_seeds` keeps 63 bits, so 0 to 2**63-1 (torch's
  `Generator.manual_seed` takes -2**63 to 2**64-1, but wraps); steps are int16 columns; `k` and class ids
  int32; UMAP's seed goes to numpy's `RandomState`, which takes 0 to 2**32-1; and a run's plan holds ~40
  bytes per sample in memory while it is built, so a run holds at most 10**8 samples (~4 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import NoReturn

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SEED_MAX = INT64_MAX  # noise and run seeds: int64 in the lake
UMAP_SEED_MAX = 2**32 - 1  # numpy.random.RandomState (UMAP's and scikit-learn's random_state)
STEP_MAX = 2**15 - 1  # sampling steps: int16 in the lake
MAX_SAMPLES = 10**8  # samples in one run (and any count of samples: batch, chunk, per class, per prompt)
MAX_WORKERS = 1024  # encoding threads
FIT_SAMPLE_MIN = 4  # UMAP's spectral start fails on 3 points (measured); 2 neighbours is its least
LONGEST_NUMBER = 40  # characters: anything longer is out of every range here, and is never converted


class OptionError(ValueError):
    """A number outside its option's range (one line: problem; fix)."""


def spell(number: int) -> str:
    """A bound as a reader takes it in: 2**63-1 for a large power of two minus one, else 100,000,000."""
    if number >= 2**16 and number & (number + 1) == 0:
        return f"2**{number.bit_length()}-1"
    return f"{number:,}"


def shown(text: str) -> str:
    """The value a user typed, shortened when it is very long."""
    text = text.strip()
    return text if len(text) <= LONGEST_NUMBER else f"{text[:24]}... ({len(text)} characters)"


def range_message(value: str, lo: int, hi: int, below: bool, note: str = "") -> str:
    """`<value> is out of range (lo to hi); give at least lo`, or `give at most hi (note)` (why the cap)."""
    problem = f"{value} is out of range ({spell(lo)} to {spell(hi)})"
    if below:
        return f"{problem}; give at least {spell(lo)}"
    return f"{problem}; give at most {spell(hi)}" + (f" ({note})" if note else "")


def check_range(option: str, value: int, lo: int, hi: int, note: str = "",
                error: type[ValueError] = OptionError) -> int:
    """`value` if lo <= value <= hi, else `error` with the one-line message naming `option`."""
    if not lo <= value <= hi:
        raise error(f"{option} {range_message(str(value), lo, hi, value < lo, note)}")
    return value


def not_a_number(text: str, lo: int, hi: int, words: tuple[str, ...] = ()) -> OptionError:
    alternatives = "".join(f" or `{word}`" for word in words)
    return OptionError(f"{shown(text)!r} is not a whole number{alternatives}; give one from {spell(lo)} to "
                       f"{spell(hi)}{alternatives}")


def parse_bounded(text: str, lo: int, hi: int, note: str = "", words: tuple[str, ...] = ()) -> int | str:
    """`text` as an integer in [lo, hi] (or one of `words`, as it is), else OptionError with a message that
    starts with the value (the caller puts the option's name in front). A 10,000-digit number is refused
    without converting it."""
    if text.strip() in words:
        return text.strip()
    digits = text.strip().removeprefix("-").removeprefix("+").replace("_", "")
    if not digits.isascii() or not digits.isdigit():
        raise not_a_number(text, lo, hi, words)
    if len(digits) > LONGEST_NUMBER:
        raise OptionError(range_message(shown(text), lo, hi, text.strip().startswith("-"), note))
    try:
        value = int(text)
    except ValueError:  # "_5", "5__0": digits, but not a number
        raise not_a_number(text, lo, hi, words) from None
    if not lo <= value <= hi:
        raise OptionError(range_message(shown(text), lo, hi, value < lo, note))
    return value


@dataclasses.dataclass(frozen=True)
class BoundedInt:
    """argparse type: an integer in [lo, hi]; `words` are also accepted as they are (e.g. `all`)."""

    lo: int
    hi: int
    note: str = ""
    words: tuple[str, ...] = ()

    def __call__(self, text: str) -> int | str:
        try:
            return parse_bounded(text, self.lo, self.hi, self.note, self.words)
        except OptionError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


@dataclasses.dataclass(frozen=True)
class IntList:
    """argparse type: comma-separated integers, each in [lo, hi] (empty items are skipped)."""

    lo: int
    hi: int
    note: str = ""

    def __call__(self, text: str) -> list[int]:
        try:
            return [parse_bounded(item, self.lo, self.hi, self.note) for item in text.split(",") if item.strip()]
        except OptionError as err:
            raise argparse.ArgumentTypeError(f"{shown(text)}: {err}") from None


def bounded_int(lo: int, hi: int, note: str = "", words: tuple[str, ...] = ()) -> BoundedInt:
    return BoundedInt(lo, hi, note, words)


def int_list(lo: int, hi: int, note: str = "") -> IntList:
    return IntList(lo, hi, note)


OPTION_PREFIX = re.compile(r"argument (-[^\s:]+): ")


def one_line(message: str, prog: str) -> str:
    """argparse's `argument --seed: 1e99 is not a whole number; ...` as `--seed 1e99 is not a whole number; ...`
    (an option with aliases keeps them: `--n/--num-samples 0 ...`); argparse's own messages, which name no fix
    (`the following arguments are required: --runs`), get a pointer to --help."""
    message = " ".join(message.split())
    named = OPTION_PREFIX.match(message)
    if named:
        message = f"{named.group(1)} {message[named.end():]}"
    return message if "; " in message else f"{message}; see `{prog} --help`"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser (and its subcommands') whose every error is one line on stderr, `error: <problem>;
    <fix>`, and exit status 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message, self.prog)}\n")
