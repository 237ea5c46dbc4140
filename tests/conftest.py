"""Shared test fixtures: the reference data of the original implementation, and the tiny EDM model.

Reference fixtures live in `../shared/fixtures` (override with DMD2_FIXTURES). In a user's clone
without them, the tests that need them skip with a reason; CI sets DMD2_REQUIRE_FIXTURES=1 so that
their absence fails instead.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dashboards.browser import CHROMIUM, free_port, launch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
# Tests never touch the network, and never see a user's hub cache: an empty one, offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="dmd2-lens-test-hub-")


def _remove_test_hub(path: str = os.environ["HF_HUB_CACHE"], owner: int = os.getpid()) -> None:
    if os.getpid() == owner:  # not in a forked child (mutmut forks the test process): the parent still uses it
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_remove_test_hub)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}


def fixtures_dir() -> Path:
    return Path(os.environ.get("DMD2_FIXTURES", REPO.parent / "shared" / "fixtures")).resolve()


def require_fixture(relative: str) -> Path:
    """Path of a reference fixture; skip (or fail under DMD2_REQUIRE_FIXTURES=1) when it is absent."""
    path = fixtures_dir() / relative
    if not path.exists():
        reason = f"reference fixture {path} is absent (set DMD2_FIXTURES to the shared/fixtures folder)"
        if _flag("DMD2_REQUIRE_FIXTURES"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def tiny_edm_dir() -> Path:
    return require_fixture("edm_dhariwal_tiny")


@pytest.fixture(scope="session")
def tiny_edm_config(tiny_edm_dir: Path):
    from ingest.models.edm import EDMConfig

    return EDMConfig.from_dict(json.loads((tiny_edm_dir / "config.json").read_text()))


@pytest.fixture(scope="session")
def tiny_edm_io(tiny_edm_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(tiny_edm_dir / "io.safetensors"))


@pytest.fixture(scope="session")
def tiny_edm(tiny_edm_dir: Path, tiny_edm_config):
    """The reference tiny EDMPrecond with its original weights, in eval mode (do not modify)."""
    from ingest.checkpoints import load_checkpoint
    from ingest.models.edm import EDMPrecond

    return load_checkpoint(EDMPrecond(tiny_edm_config), tiny_edm_dir / "pytorch_model.bin").eval()


DIGITS_LAYERS = "enc.8x8_block0,enc.2x2_block0,dec.8x8_block1"


@pytest.fixture(scope="session")
def digits_lake(tmp_path_factory) -> dict:
    """A real lake filled by ingest with the embedded student: 300 samples in 3 chunks (do not modify)."""
    from ingest.run import IngestConfig, run_ingest

    lake = tmp_path_factory.mktemp("lake")
    config = IngestConfig(lake=str(lake), n=300, layers=DIGITS_LAYERS, poolings=("mean", "grid2"), seed=11,
                          batch=50, chunk_size=128, progress=False)
    result = run_ingest(config)
    return {"lake": lake, "config": config, "result": result}


@pytest.fixture(scope="session")
def embedded_lake(tmp_path_factory, digits_lake) -> dict:
    """A copy of `digits_lake` with `make embed` done (graphs and aligned layouts; do not modify)."""
    import shutil

    from store.embed import embed_run

    lake = tmp_path_factory.mktemp("embedded") / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    results = embed_run(str(lake), progress=False)
    return {"lake": lake, "results": results, "run_id": digits_lake["result"].run_id}


@pytest.fixture(scope="session")
def paired_lake(tmp_path_factory, digits_lake, embedded_lake) -> dict:
    """`embedded_lake` plus the teacher (`digits-edm`) on the same plan, laid out at its last step and at
    step 0, compared with the student at steps 0/0 and at each run's last step, and with per-class
    diversity of every layer of both runs: what `make demo` builds, small (do not modify)."""
    import shutil

    from ingest.run import IngestConfig, run_ingest
    from store.compare import compare_runs
    from store.diversity import diversity
    from store.embed import embed_run

    lake = tmp_path_factory.mktemp("paired") / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    student = digits_lake["config"]
    teacher = run_ingest(IngestConfig(model="digits-edm", lake=str(lake), n=student.n, layers=DIGITS_LAYERS,
                                      poolings=student.poolings, seed=student.seed, batch=50,
                                      chunk_size=student.chunk_size, progress=False)).run_id
    embed_run(str(lake), teacher, progress=False)
    embed_run(str(lake), teacher, step=0, progress=False)
    compare_runs(lake, embedded_lake["run_id"], teacher, step_a=0, step_b=0)
    compare_runs(lake, embedded_lake["run_id"], teacher)
    for run_id in (embedded_lake["run_id"], teacher):
        for layer in DIGITS_LAYERS.split(","):
            diversity(lake, run_id, layer)
    return {"lake": lake, "student": embedded_lake["run_id"], "teacher": teacher}


@pytest.fixture(scope="session")
def featured_lake(tmp_path_factory, paired_lake) -> dict:
    """`paired_lake` plus the real scikit-learn digits as run `real-digits`, the shipped digits features
    (`features.digits`) of all three runs, laid out for the student and the real digits, and the student and
    the teacher measured against the real digits in that space: what `make demo` adds (do not modify)."""
    import shutil

    from ingest.features import extract_features
    from ingest.real_images import ingest_real_digits
    from store.embed import embed_run
    from store.fidelity import fidelity

    lake = tmp_path_factory.mktemp("featured") / "lake"
    shutil.copytree(paired_lake["lake"], lake)
    ingest_real_digits(lake, "real-digits", progress=False)
    for run_id in (paired_lake["student"], paired_lake["teacher"], "real-digits"):
        extract_features(lake, run_id, "digits", device="cpu", progress=False)
    for run_id in (paired_lake["student"], "real-digits"):
        embed_run(str(lake), run_id, layers=["features.digits"], progress=False)
    for run_id in (paired_lake["student"], paired_lake["teacher"]):
        fidelity(lake, run_id, "real-digits", "features.digits")
    return {**paired_lake, "lake": lake, "real": "real-digits", "layer": "features.digits"}


HOSTILE_PROMPT = "<script>alert(1)</script>"
HOSTILE_PROMPTS = [HOSTILE_PROMPT, "<img src=x onerror=alert(2)>", "a photo of a 'quoted\" cat"]


@pytest.fixture(scope="session")
def hostile_lake(tmp_path_factory, embedded_lake) -> dict:
    """`embedded_lake` plus a synthetic prompt run `hostile` (600 samples) whose prompts and tags are
    hostile HTML (do not modify)."""
    import shutil

    from store.synthetic import write_run

    lake = tmp_path_factory.mktemp("hostile") / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    write_run(lake, "hostile", 600, HOSTILE_PROMPTS, tags=["<b>bold</b>", "plain"])
    return {"lake": lake, "run_id": embedded_lake["run_id"]}


TINY_PROMPTS = ["a red cat", "<script>alert(1)</script> on a table", "mountains at dawn"]


@pytest.fixture(scope="session")
def bases(tmp_path_factory) -> dict:
    """Tiny SDXL and SD1.5 base pipelines built in code, DMD2-style UNet checkpoints and an SDXL LoRA (do not
    modify)."""
    import torch

    from ingest.models import random_pipelines as tiny

    root = tmp_path_factory.mktemp("tiny-pipelines")
    sdxl = tiny.save_base(root / "sdxl", sdxl=True)
    sd15 = tiny.save_base(root / "sd15", sdxl=False)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(TINY_PROMPTS) + "\n")
    return {
        "root": root, "sdxl": sdxl, "sd15": sd15, "prompts": prompts,
        "sdxl_bin": tiny.save_dmd2_unet(sdxl, root / "dmd2_sdxl_unet_fp16.bin", seed=1),
        "sdxl_safetensors": tiny.save_dmd2_unet(sdxl, root / "dmd2_sdxl_unet_fp16.safetensors", seed=1),
        "sd15_bin": tiny.save_dmd2_unet(sd15, root / "sd15_pytorch_model.bin", seed=2, dtype=torch.float32),
        "lora": tiny.save_lora(sdxl, root / "lora" / "dmd2_sdxl_4step_lora_fp16.safetensors", seed=3),
    }


TINY_LAYERS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory) -> dict:
    """Tiny random image encoders built in code and saved as the hub's repos hold them (save_pretrained, with
    their image processor's config): a whole CLIP (text and vision towers, projection 16) and a DINOv2
    (hidden 32); both 2 layers, images 32 px (do not modify)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    root = tmp_path_factory.mktemp("tiny-encoders")
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=dict(TINY_LAYERS, vocab_size=99, max_position_embeddings=16),
                                vision_config=dict(TINY_LAYERS, image_size=32, patch_size=8, projection_dim=16),
                                projection_dim=16))
    clip.save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    dinov2 = Dinov2Model(Dinov2Config(**TINY_LAYERS, image_size=32, patch_size=8))
    dinov2.save_pretrained(root / "dinov2")
    BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(root / "dinov2")
    return {"clip": root / "clip", "dinov2": root / "dinov2", "dims": {"clip": 16, "dinov2": 32}}


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch) -> Path:
    """A fresh, empty hub cache, offline (huggingface_hub reads its cache and offline flag from its constants,
    which the environment set at its import: both are patched)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture()
def encoder_hub(offline_hub, tiny_encoders) -> dict:
    """`offline_hub` holding the tiny encoders under the presets' repo ids and under `tiny-org/clip` and
    `tiny-org/dinov2`."""
    from ingest.extractors import PRESETS
    from ingest.models.random_pipelines import hub_cache

    cache = offline_hub
    snapshots = {}
    for family in ("clip", "dinov2"):
        for repo in (PRESETS[family].repo, f"tiny-org/{family}"):
            snapshots[repo] = hub_cache(cache, repo, {".": tiny_encoders[family]}, commit=f"{len(snapshots) + 1:040x}")
    return {"cache": cache, "snapshots": snapshots, **tiny_encoders}



# --- the browser: Debian's Chromium driven by Playwright ------------------------------------------



@pytest.fixture(scope="session")
def browser():
    """Headless Chromium; skips when absent, fails instead under DMD2_REQUIRE_BROWSER=1 (CI)."""
    if not Path(CHROMIUM).exists():
        reason = f"Chromium not found at {CHROMIUM} (apt install chromium, or set DMD2_CHROMIUM)"
        if _flag("DMD2_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = launch(playwright)
        yield instance
        instance.close()


class Server:
    """A real `python -m dashboards serve` process on an ephemeral port."""

    def __init__(self, lake: Path, timeout: float = 120, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        import time
        import urllib.request

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(lake.parent / f"serve-{self.port}.log", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "dashboards", "serve", "--lake", str(lake),
                                         "--port", str(self.port), *args], cwd=REPO, stdout=self.log,
                                        stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                urllib.request.urlopen(self.url + "/liveness-probe-not-found", timeout=2)
            except urllib.error.HTTPError:
                return  # the server answers (404 is an answer)
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"server did not start in {timeout} s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()
        self.log.close()


def recording_page(browser):
    """A page in a new browser context that records console errors, page errors and dialogs (as `problems`,
    `dialogs`) and console warnings (`warnings`)."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.problems, page.dialogs, page.warnings = [], [], []
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("console", lambda m: page.warnings.append(m.text) if m.type == "warning" else None)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return page


@contextlib.contextmanager
def checked_page(browser, server: "Server"):
    """A `recording_page`; on leaving, the server's log must show no new traceback."""
    page = recording_page(browser)
    logged = len(server.output())
    yield page
    page.context.close()
    assert server_errors(server.output()[logged:]) == []


# Warnings that are not ours: Panel's bundled Choices.js deprecation notice, Chromium's software WebGL.
FOREIGN_WARNINGS = ("Deprecation warning: allowHTML", "GL Driver Message")


def our_warnings(page) -> list[str]:
    """Console warnings a page logged, except the known ones of third-party code (Bokeh's warnings, such
    as "nonexistent field", count as ours: they come from what we send it)."""
    return [w for w in page.warnings if not w.startswith(FOREIGN_WARNINGS) and "GL Driver Message" not in w]


def server_errors(log: str) -> list[str]:
    """Tracebacks in a server's log, except a closed websocket (a test closing its browser tab)."""
    blocks = log.split("Traceback (most recent call last):")[1:]
    return [b for b in blocks if "WebSocketClosedError" not in b and "StreamClosedError" not in b]


@pytest.fixture(scope="session")
def served(hostile_lake, tmp_path_factory):
    """`python -m dashboards serve` on a copy of the hostile lake, the explorer's and the filter panel's
    browser tests' server (they write layouts and selections into the copy)."""
    lake = tmp_path_factory.mktemp("served") / "lake"
    shutil.copytree(hostile_lake["lake"], lake)
    server = Server(lake)
    yield {"url": server.url, "lake": lake, "run_id": hostile_lake["run_id"], "server": server}
    server.stop()


@pytest.fixture(scope="session")
def paired_server(paired_lake, tmp_path_factory):
    """`python -m dashboards serve` on a copy of the paired lake (the copy may be written to)."""
    import shutil

    lake = tmp_path_factory.mktemp("paired-served") / "lake"
    shutil.copytree(paired_lake["lake"], lake)
    server = Server(lake)
    yield {"url": server.url, "lake": lake, "student": paired_lake["student"], "teacher": paired_lake["teacher"],
           "server": server}
    server.stop()


@pytest.fixture(scope="session")
def featured_server(featured_lake):
    """`python -m dashboards serve` on `featured_lake` itself: the tests through it only read."""
    server = Server(featured_lake["lake"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hostile_pair_server(tmp_path_factory):
    """`python -m dashboards serve` on two compared runs whose class names are HTML/JS
    (`tests.test_comparison_view.write_hostile_pair`), for the Compare and Diversity tabs' tests."""
    from tests.test_comparison_view import write_hostile_pair

    lake = tmp_path_factory.mktemp("hostile-pair") / "lake"
    write_hostile_pair(lake)
    server = Server(lake)
    yield {"url": server.url, "lake": lake, "server": server}
    server.stop()


@pytest.fixture()
def paired_page(browser, paired_server):
    with checked_page(browser, paired_server["server"]) as page:
        yield page


def isolated_point(points, rng) -> int:
    """A row of a layout (`store.maps.MapPoints`) whose nearest other point is far enough that a click
    cannot pick a neighbour instead."""
    import numpy as np

    xy = points.frame[["x", "y"]].to_numpy()
    span = xy.max(0) - xy.min(0)
    for row in rng.permutation(len(xy)):
        d = np.abs((xy - xy[row]) / span)
        d[row] = np.inf
        if (d.max(1) > 0.04).all():
            return int(row)
    raise AssertionError("no isolated point in the layout")


def images_loaded(page, selector: str) -> bool:
    return page.locator(selector).evaluate_all(
        "els => els.length > 0 && els.every(e => e.complete && e.naturalWidth > 0)")


def click_in_plot(page, plot: dict, x: float, y: float) -> None:
    """Click data point (x, y) of a plot whose geometry came from ALL_PLOTS_JS / PLOT_JS."""
    px = plot["left"] + (x - plot["x0"]) / (plot["x1"] - plot["x0"]) * plot["width"]
    py = plot["top"] + (plot["y1"] - y) / (plot["y1"] - plot["y0"]) * plot["height"]
    page.mouse.click(px, py)


def class_colour_shares(pixels, class_ids) -> dict[int, float]:
    """For a map's pixels: the share of its clearly coloured pixels (not white, grey or black) whose
    nearest class colour (`dashboards.render.category_colour(class id)`) is each class's."""
    import numpy as np

    from dashboards.render import category_colour

    colours = np.array([[int(category_colour(c)[i:i + 2], 16) for i in (1, 3, 5)] for c in class_ids], dtype=float)
    flat = pixels.reshape(-1, 3).astype(float)
    chromatic = flat[(flat.max(1) - flat.min(1)) > 40]
    if not len(chromatic):
        return {c: 0.0 for c in class_ids}
    nearest = np.argmin(((chromatic[:, None, :] - colours[None]) ** 2).sum(2), axis=1)
    counts = np.bincount(nearest, minlength=len(class_ids)) / len(chromatic)
    return {c: float(counts[i]) for i, c in enumerate(class_ids)}


def dark_pixels_near(pixels, px: float, py: float, radius: int = 12) -> int:
    """How many near-black pixels lie within `radius` pixels of (px, py) of a map's pixels (rings)."""
    h, w = pixels.shape[:2]
    y0, y1, x0, x1 = max(0, int(py) - radius), min(h, int(py) + radius), max(0, int(px) - radius), min(w, int(px) + radius)
    window = pixels[y0:y1, x0:x1].astype(int)
    return int((window.max(2) < 60).sum())
