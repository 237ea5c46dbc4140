"""Shared test fixtures: the reference data of the original implementation, and the tiny EDM model.

Reference fixtures live in `../shared/fixtures` (override with DMD2_FIXTURES). In a user's clone
without them, the tests that need them skip with a reason; CI sets DMD2_REQUIRE_FIXTURES=1 so that
their absence fails instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from dashboards.browser import CHROMIUM, free_port, launch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
# Tests never touch the network, and never see a user's hub cache: an empty one, offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="dmd2-lens-test-hub-")


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

    def __init__(self, lake: Path, timeout: float = 120) -> None:
        import subprocess
        import sys
        import time
        import urllib.request

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(lake.parent / f"serve-{self.port}.log", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "dashboards", "serve", "--lake", str(lake),
                                         "--port", str(self.port)], cwd=REPO, stdout=self.log,
                                        stderr=subprocess.STDOUT)
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
