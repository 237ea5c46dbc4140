"""The dashboard benchmark's own arithmetic: the counts a filter must show come from DuckDB over the
lake's shards, independently of the dashboard's filter code."""

from __future__ import annotations

from dashboards.bench import FIGURES, FILTERS, PROMPTS, expected_counts
from store.synthetic import write_run


def test_expected_counts_are_the_lakes(tmp_path):
    lake = tmp_path / "lake"
    write_run(lake, "synthetic", 3000, PROMPTS, tags=["a"], clusters=10)
    counts = expected_counts(lake, "synthetic", FILTERS)
    import pyarrow.parquet as pq

    prompts = pq.read_table(lake / "samples" / "synthetic", columns=["prompt"]).column("prompt").to_pylist()
    for text in FILTERS:
        assert counts[text] == sum(text.lower() in p.lower() for p in prompts)
    assert counts[""] == 3000 and 0 < counts["prompt 7:"] < 3000
    assert {key for key, _, _ in FIGURES} >= {"filter_median_s", "zoom_median_s", "open_first_s"}
