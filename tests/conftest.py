"""Shared test fixtures: the reference data of the original implementation, and the tiny EDM model.

Reference fixtures live in `../shared/fixtures` (override with DMD2_FIXTURES). In a user's clone
without them, the tests that need them skip with a reason; CI sets DMD2_REQUIRE_FIXTURES=1 so that
their absence fails instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))


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
