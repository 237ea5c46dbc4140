"""Named crash points for the crash-safety tests: SIGKILL this process at the N-th pass of a point.

    DMD2_LENS_FAILPOINT=before-rename:3 python -m ingest run ...

kills the process right before the third shard rename; `before-rename:3:enospc` raises "no space left
on device" there instead (a full disk, injected), and `before-rename:1:error` raises a RuntimeError (any
other failure). Unset (always, outside tests), a failpoint costs one
dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

_target: tuple[str, int, str] | None = None
_seen: dict[str, int] = {}

_spec = os.environ.get("DMD2_LENS_FAILPOINT", "")
if _spec:
    _name, _count, _action = (_spec.split(":") + ["1", "kill"])[:3]
    _target = (_name, int(_count or 1), _action)


def failpoint(name: str) -> None:
    if _target is None or _target[0] != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == _target[1]:
        if _target[2] == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device (injected by DMD2_LENS_FAILPOINT)")
        if _target[2] == "error":
            raise RuntimeError(f"failure injected by DMD2_LENS_FAILPOINT at {name}")
        os.kill(os.getpid(), signal.SIGKILL)
