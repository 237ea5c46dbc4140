"""store.failpoints: a named point SIGKILLs its process at the N-th pass, or raises ENOSPC there; any other
name, or no DMD2_LENS_FAILPOINT at all, is a no-op. Each case runs in a real subprocess (the spec is read at
import, and a kill must kill a process of its own)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

from tests.conftest import REPO

# Passes the point "x" four times, printing a marker after each pass (flushed, so a kill loses nothing
# already printed); an OSError is reported with its errno.
SCRIPT = """
import sys
from store.failpoints import failpoint
for i in range(1, 5):
    try:
        failpoint("x")
    except OSError as err:
        print(f"oserror {err.errno} at {i}", flush=True)
        sys.exit(3)
    print(f"passed {i}", flush=True)
print("done", flush=True)
"""


def run(spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DMD2_LENS_FAILPOINT"}
    if spec is not None:
        env["DMD2_LENS_FAILPOINT"] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_kill_at_the_second_pass():
    result = run("x:2")
    assert result.returncode == -signal.SIGKILL == -9, result.stderr
    # the first pass went through, the process died inside the second one
    assert result.stdout.splitlines() == ["passed 1"]
    assert result.stderr == ""


def test_kill_at_the_first_pass_by_default():
    result = run("x")
    assert result.returncode == -9, result.stderr
    assert result.stdout == ""


def test_enospc_raises_oserror_at_its_pass():
    result = run("x:1:enospc")
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == [f"oserror {errno.ENOSPC} at 1"]

    later = run("x:3:enospc")
    assert later.stdout.splitlines() == ["passed 1", "passed 2", f"oserror {errno.ENOSPC} at 3"]


def test_enospc_message_says_it_was_injected():
    code = ("from store.failpoints import failpoint\n"
            "try:\n    failpoint('x')\nexcept OSError as err:\n    print(err.strerror)\n")
    env = dict(os.environ, DMD2_LENS_FAILPOINT="x:1:enospc")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert "No space left on device" in result.stdout and "DMD2_LENS_FAILPOINT" in result.stdout


def test_other_name_or_unset_is_a_no_op():
    expected = ["passed 1", "passed 2", "passed 3", "passed 4", "done"]
    for spec in ("y:1", "x-other:1:enospc", None, ""):
        result = run(spec)
        assert result.returncode == 0, (spec, result.stderr)
        assert result.stdout.splitlines() == expected, spec
