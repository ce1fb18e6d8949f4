"""Places where the fault suite (tests/reliability, benchmarks/faults.py) kills this process on
purpose, to prove that a crash at that moment loses nothing.

`LORAKIT_FAULT="<point>[@<n>]"` kills the process with SIGKILL the n-th time (default: first)
`point(name)` is reached with a name that matches (shell-style pattern, e.g. `rename:*-state`).
Without the variable a point costs one dictionary lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

_seen: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("LORAKIT_FAULT")
    if not spec:
        return
    pattern, _, nth = spec.partition("@")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    _seen[spec] = _seen.get(spec, 0) + 1
    if _seen[spec] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
