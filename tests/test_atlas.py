"""The Embedding Atlas export: x, y, neighbours as zero-based row ids from the stored graph, images."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from store import catalogue, maps
from store.atlas import atlas_command, export_atlas
from store.neighbours import build_graph
from tests.conftest import REPO


@pytest.fixture(scope="module")
def exported(embedded_lake, tmp_path_factory):
    lake = embedded_lake["lake"]
    key = next(k for k in catalogue.list_layouts(lake) if k.run_id == embedded_lake["run_id"])
    out = tmp_path_factory.mktemp("atlas") / "atlas.parquet"
    rows = export_atlas(lake, key, out, k=10)
    return {"lake": lake, "key": key, "out": out, "rows": rows, "table": pq.read_table(out)}


def test_rows_and_coordinates_are_the_layout_s(exported):
    points = maps.load_points(exported["lake"], exported["key"])
    table = exported["table"]
    assert exported["rows"] == table.num_rows == len(points)
    assert table.column("sample_id").to_pylist() == points.frame["sample_id"].tolist()
    assert np.allclose(table.column("x").to_numpy(), points.frame["x"])
    assert table.column("label").to_pylist() == points.frame["label"].astype(str).tolist()


def test_neighbours_are_row_ids_of_the_true_neighbours(exported):
    key, table = exported["key"], exported["table"]
    graph = build_graph(exported["lake"], key.run_id, key.layer, key.pooling)
    ids = table.column("sample_id").to_pylist()
    for row in (0, 17, table.num_rows - 1):
        entry = table.column("neighbors")[row].as_py()
        expected, distances = graph.of(ids[row], 10)
        assert [ids[r] for r in entry["ids"]] == [int(i) for i in expected]  # zero-based rows of this file
        assert np.allclose(entry["distances"], distances, atol=1e-6)


def test_images_are_png_or_webp_bytes(exported):
    for value in exported["table"].column("image").to_pylist()[:5]:
        image = Image.open(io.BytesIO(value["bytes"]))
        assert image.size[0] > 0 and image.format in ("PNG", "WEBP")


def test_cli_writes_the_file_and_prints_the_command(exported, tmp_path):
    key, out = exported["key"], tmp_path / "cli.parquet"
    done = subprocess.run([sys.executable, "-m", "store", "atlas", "--lake", str(exported["lake"]), "--run", key.run_id,
                           "--layer", key.layer, "--images", "none", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert atlas_command(out) in done.stdout
    assert "image" not in pq.read_schema(out).names
    missing = subprocess.run([sys.executable, "-m", "store", "atlas", "--lake", str(exported["lake"]), "--run", key.run_id,
                              "--layer", "nope", "--out", str(tmp_path / "x.parquet")], cwd=REPO, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "make embed" in missing.stderr
    assert not (tmp_path / "x.parquet").exists()
