"""`python -m dashboards serve`: lake checks, loopback by default, the panel command it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dashboards.serve import is_loopback, panel_command
from tests.conftest import REPO


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboards", "serve", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_missing_lake_is_one_clear_line(tmp_path):
    result = serve("--lake", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr and "make demo" in result.stderr


def test_lake_without_layouts_is_refused(digits_lake):
    result = serve("--lake", str(digits_lake["lake"]))
    assert result.returncode == 2
    assert "no layouts" in result.stderr and "make embed" in result.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_loopback_detection(host, loopback):
    assert is_loopback(host) == loopback


def test_panel_command_binds_where_told():
    command = panel_command("lake", "127.0.0.1", 5123)
    assert command[command.index("--address") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert "dashboards.images" in command
    assert "--allow-websocket-origin" in command and "*" not in " ".join(command)


def test_binding_beyond_this_machine_warns(embedded_lake):
    # 192.0.2.1 is a documentation address no interface has: the warning comes first, then binding fails.
    result = serve("--lake", str(embedded_lake["lake"]), "--host", "192.0.2.1", "--port", "5999")
    assert result.stderr.startswith("warning: binding to 192.0.2.1 exposes")
    assert "no authentication" in result.stderr.splitlines()[0]
    assert result.returncode != 0
