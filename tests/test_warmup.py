"""dashboards.warmup: the `panel serve --setup` script loads the default layout and renders every colouring
of it before the first visitor, in a real process; on a lake without layouts it fails with the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from dashboards.explorer import LAKE_ENV
from tests.conftest import REPO


def warm_up(lake) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{LAKE_ENV: str(lake)})
    return subprocess.run([sys.executable, "-c", "import dashboards.warmup"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_warm_up_on_an_embedded_lake(embedded_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    result = warm_up(lake)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_warm_up_without_layouts_fails_clearly(tmp_path):
    lake = tmp_path / "empty-lake"
    lake.mkdir()
    result = warm_up(lake)
    assert result.returncode != 0
    assert f"no layouts in lake {lake}" in result.stderr
    assert "make embed" in result.stderr
