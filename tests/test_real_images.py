"""ingest/real_images.py: folders of real images and scikit-learn's digits stored as runs, read back through the
same readers as generated runs (catalogue, views, the image route), resumed chunk by chunk, refused on bad
input with one line and nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ingest.cli import main
from ingest.real_images import RealImagesError, ingest_folder
from ingest.run import RunConflictError
from store.catalogue import read_run_samples, run_models, stored_layers
from store.lake import Lake
from store.maps import sample_image
from store.views import connect

RNG = np.random.default_rng(0)


def save(path: Path, pixels: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **options)
    return path


def decoded(data: bytes) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def expected_pixels(path: Path) -> np.ndarray:
    """What a file holds, decoded independently: grey stays grey, everything else RGB."""
    image = Image.open(path)
    pixels = np.asarray(image.convert("L" if image.mode == "L" else "RGB"))
    return pixels[..., None] if pixels.ndim == 2 else pixels


def listing(root: Path) -> list[tuple[str, int]]:
    """Every file and folder under a lake (hidden ones too) with its modification time."""
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture()
def pets(tmp_path: Path) -> Path:
    """Two class folders: PNG and JPEG in colour, a large grey PNG (thumbnailed), a nested RGBA PNG."""
    folder = tmp_path / "pets"
    save(folder / "cats" / "a.png", RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    save(folder / "cats" / "b.jpg", RNG.integers(0, 256, (20, 16, 3), dtype=np.uint8), quality=90)
    save(folder / "dogs" / "c.png", RNG.integers(0, 256, (80, 90), dtype=np.uint8))
    save(folder / "dogs" / "deep" / "d.PNG", RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    save(folder / ".hidden" / "e.png", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (folder / "dogs" / "notes.txt").write_text("not an image")
    return folder


PET_FILES = ["cats/a.png", "cats/b.jpg", "dogs/c.png", "dogs/deep/d.PNG"]


def test_a_folder_round_trips_through_the_readers(tmp_path, pets):
    lake = tmp_path / "lake"
    result = ingest_folder(lake, pets, "real-pets", chunk_size=3, progress=False)
    assert (result.run_id, result.planned, result.written) == ("real-pets", 4, 4)

    samples = read_run_samples(Lake(lake), "real-pets").to_pydict()
    assert samples["sample_id"] == [0, 1, 2, 3]
    assert samples["chunk"] == [0, 0, 0, 1]
    assert samples["class_id"] == [0, 0, 1, 1]
    assert samples["class_name"] == ["cats", "cats", "dogs", "dogs"]
    assert samples["seed"] == [0] * 4 and samples["prompt"] == [None] * 4 and samples["tags"] == [[]] * 4
    for sample_id, name in enumerate(PET_FILES):
        data, mime = sample_image(lake, "real-pets", samples["chunk"][sample_id], sample_id)
        assert mime == "image/png"
        assert np.array_equal(decoded(data), expected_pixels(pets / name)), name
        thumb, thumb_mime = sample_image(lake, "real-pets", samples["chunk"][sample_id], sample_id, thumbnail=True)
        if name == "dogs/c.png":  # 80 x 90: larger than a thumbnail
            assert thumb_mime == "image/webp" and max(Image.open(io.BytesIO(thumb)).size) == 64
        else:
            assert (thumb, thumb_mime) == (data, "image/png")

    con = connect(lake)
    run = con.sql("SELECT status, model, n_samples, layers, poolings, seed FROM runs "
                  "WHERE run_id = 'real-pets'").fetchall()
    assert run == [("complete", "real:pets", 4, [], [], 0)]
    events = con.sql("SELECT status FROM run_events ORDER BY updated_at").fetchall()
    assert events == [("running",), ("complete",)]
    points = con.sql("SELECT sample_id, width, height, steps FROM points ORDER BY sample_id").fetchall()
    assert points == [(0, 12, 10, 0), (1, 16, 20, 0), (2, 90, 80, 0), (3, 8, 8, 0)]
    assert con.sql("SELECT count(*) FROM samples WHERE image_png IS NOT NULL").fetchall() == [(4,)]
    assert con.sql("SELECT count(*) FROM activations").fetchall() == [(0,)]


def test_readers_that_expect_a_model_run_do_not_crash_on_a_real_run(tmp_path, pets):
    from ingest.interactive import generate_like, recorded_config

    lake = tmp_path / "lake"
    ingest_folder(lake, pets, "real-pets", progress=False)
    assert run_models(connect(lake)) == {"real-pets": "real:pets"}
    assert stored_layers(Lake(lake), "real-pets", "mean") == []
    recorded = recorded_config(lake, "real-pets")
    assert (recorded.model, recorded.layers) == ("real:pets", "")
    before = listing(lake)
    with pytest.raises(ValueError, match="real:pets"):  # nothing to generate like: a clear refusal
        generate_like(lake, "real-pets", [1])
    assert listing(lake) == before


def test_size_squares_every_image_and_another_size_is_another_run(tmp_path, pets):
    lake = tmp_path / "lake"
    ingest_folder(lake, pets, "real-pets", progress=False)
    ingest_folder(lake, pets, "real-pets-8", size=8, progress=False)
    con = connect(lake)
    sizes = con.sql("SELECT DISTINCT width, height FROM points WHERE run_id = 'real-pets-8'").fetchall()
    assert sizes == [(8, 8)]
    thumbnails = "SELECT count(*) FROM samples WHERE run_id = 'real-pets-8' AND thumbnail IS NOT NULL"
    assert con.sql(thumbnails).fetchall() == [(0,)]
    before = listing(lake)
    with pytest.raises(RunConflictError, match="other content"):
        ingest_folder(lake, pets, "real-pets", size=8, progress=False)
    assert listing(lake) == before


def test_class_labels_from_a_csv(tmp_path):
    folder = tmp_path / "flat"
    for name in ("x.png", "y.png", "sub/z.png"):
        save(folder / name, RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_id,class_name\nx.png,3,three\n./sub/z.png,3,\ny.png,5,\n")
    ingest_folder(tmp_path / "lake", folder, "real-flat", labels_csv=labels, progress=False)
    samples = read_run_samples(Lake(tmp_path / "lake"), "real-flat").to_pydict()
    assert samples["class_id"] == [3, 3, 5]  # sub/z.png, x.png, y.png
    assert samples["class_name"] == ["three", "three", "5"]


def test_prompts_and_tags_from_a_csv(tmp_path):
    folder = tmp_path / "refs"
    save(folder / "one.png", RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    save(folder / "two.jpeg", RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    labels = tmp_path / "prompts.csv"
    labels.write_text('file,prompt,tags\none.png,"a cat, sitting",animal; indoor\ntwo.jpeg,a red car,\n')
    ingest_folder(tmp_path / "lake", folder, "real-refs", labels_csv=labels, progress=False)
    con = connect(tmp_path / "lake")
    rows = con.sql("SELECT sample_id, class_id, class_name, prompt, tags FROM points ORDER BY sample_id").fetchall()
    assert rows == [(0, None, None, "a cat, sitting", ["animal", "indoor"]), (1, None, None, "a red car", [])]


def test_the_real_digits_are_one_command_and_converted_like_generated_ones(tmp_path, capsys):
    import torch
    from sklearn.datasets import load_digits

    from ingest.digits import load_digits_dataset
    from ingest.models.presets import get_spec
    from ingest.samplers import to_uint8
    from ingest.writer import encode_png

    lake = tmp_path / "lake"
    assert main(["real-digits", "--lake", str(lake), "--quiet"]) == 0
    assert "stored 1797 real images of 1797" in capsys.readouterr().out
    table = pq.read_table(lake / "samples" / "real-digits").sort_by("sample_id")
    assert table.num_rows == 1797
    data = load_digits()
    assert np.array_equal(table.column("class_id").to_numpy(), data.target)
    assert np.array_equal(np.bincount(table.column("class_id").to_numpy()), np.bincount(data.target))
    names = get_spec("digits-dmd2").class_names
    assert table.column("class_name").to_pylist() == [names[t] for t in data.target]
    assert set(table.column("width").to_pylist()) == {8} and table.column("thumbnail").null_count == 1797
    pixels = np.stack([decoded(png) for png in table.column("image_png").to_pylist()])
    documented = (data.images.astype(np.int64) * 255 // 16).astype(np.uint8)[..., None]  # floor(v * 255 / 16)
    assert np.array_equal(pixels, documented)
    generators_way = to_uint8(torch.from_numpy(load_digits_dataset()[0])).numpy()  # the generated digits' path
    assert np.array_equal(pixels, generators_way)
    assert table.column("image_png")[5].as_py() == encode_png(generators_way[5])
    runs = connect(lake).sql("SELECT status, model FROM runs").fetchall()
    assert runs == [("complete", "real:digits")]
    before = listing(lake)
    assert main(["real-digits", "--lake", str(lake), "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert [name for name, _ in listing(lake)] == [name for name, _ in before]


def test_resume_rewrites_exactly_the_missing_chunk(tmp_path):
    folder = tmp_path / "five"
    for i in range(5):
        save(folder / "only" / f"{i}.png", RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8))
    lake = tmp_path / "lake"
    assert ingest_folder(lake, folder, "real-five", chunk_size=2, progress=False).written == 5
    shards = lake / "samples" / "real-five"
    original = pq.read_table(shards / "chunk-000001.parquet")
    (shards / "chunk-000001.parquet").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.parquet")}
    assert ingest_folder(lake, folder, "real-five", chunk_size=2, progress=False).written == 2
    assert pq.read_table(shards / "chunk-000001.parquet").equals(original)
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("*.parquet") if p.name in kept} == kept
    assert sorted(p.name for p in shards.glob("*.parquet")) == [f"chunk-00000{k}.parquet" for k in range(3)]
    runs_before = sorted(p.name for p in (lake / "runs" / "real-five").glob("*.parquet"))
    assert ingest_folder(lake, folder, "real-five", chunk_size=2, progress=False).written == 0
    assert sorted(p.name for p in (lake / "runs" / "real-five").glob("*.parquet")) == runs_before
    save(folder / "only" / "5.png", RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8))  # other content
    before = listing(lake)
    with pytest.raises(RunConflictError):
        ingest_folder(lake, folder, "real-five", chunk_size=2, progress=False)
    assert listing(lake) == before


def bad_folder(tmp_path: Path, case: str) -> list[str]:
    """The command line of each refused input."""
    folder = tmp_path / case
    good = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    if case == "missing":
        return ["--folder", str(folder)]
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    if case in ("broken", "truncated"):
        save(folder / "cats" / "ok.png", good)
        data = (folder / "cats" / "ok.png").read_bytes()
        (folder / "cats" / "bad.png").write_bytes(b"not a png" if case == "broken" else data[: len(data) // 2])
    if case in ("flat", "csv-missing-file", "csv-missing-label", "csv-header"):
        save(folder / "a.png", good)
        save(folder / "b.png", good)
    labels = tmp_path / "labels.csv"
    rows = {"csv-missing-file": "a.png,0\nb.png,1\nc.png,1\n", "csv-missing-label": "a.png,0\n",
            "csv-header": None}.get(case, "")
    if case == "csv-header":
        labels.write_text("path,label\na.png,0\nb.png,1\n")
    elif rows:
        labels.write_text("file,class_id\n" + rows)
    return ["--folder", str(folder)] + (["--labels", str(labels)] if case.startswith("csv") else [])


BAD_INPUTS = {
    "missing": "no such folder", "empty": "no image files", "broken": "not a readable image",
    "truncated": "not a readable image", "flat": "outside a class sub-folder",
    "csv-missing-file": "'c.png' is not a file",
    "csv-missing-label": "no row for b.png", "csv-header": "header path,label",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_one_line_and_nothing_is_written(tmp_path, pets, capsys, case):
    lake = tmp_path / "lake"
    ingest_folder(lake, pets, "real-pets", progress=False)
    capsys.readouterr()
    before = listing(lake)
    argv = ["images", *bad_folder(tmp_path, case), "--run-id", "real-bad", "--lake", str(lake), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and BAD_INPUTS[case] in err, err
    assert listing(lake) == before


def test_the_command_line_stores_a_folder_and_bounds_its_numbers(tmp_path, pets, capsys):
    lake = tmp_path / "lake"
    assert main(["images", "--folder", str(pets), "--run-id", "real-pets", "--lake", str(lake), "--quiet"]) == 0
    assert "stored 4 real images of 4" in capsys.readouterr().out
    assert main(["images", "--folder", str(pets), "--run-id", "real-x", "--lake", str(lake), "--size", "0"]) == 2
    assert "--size" in capsys.readouterr().err
    with pytest.raises(RealImagesError, match="no --folder"):
        ingest_folder(lake, "", "real-x", progress=False)
