"""A lock file that says who holds a folder: process, host, start time. A lock whose process is
gone (killed, crashed, the machine restarted) is stale and taken over; a live one is refused
with who holds it."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import LorakitError


class FolderBusy(LorakitError):
    """Another live process holds the folder."""


def process_start(pid: int) -> str | None:
    """The start time of process `pid` as the kernel counts it (Linux), to tell a live process
    from a new one that got the same number; None where /proc is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int, start: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return start is None or process_start(pid) in (None, start)


class FolderLock:
    """`with FolderLock(path, what="training run 'lora'"):` holds `path` until the block ends."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        self.took_over: dict | None = None  # the stale lock that was replaced, if any

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = {
            "pid": os.getpid(),
            "start": process_start(os.getpid()),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "what": self.what,
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            return self
        raise FolderBusy(f"{self.path.parent}: could not take the lock file {self.path.name}.")

    def _take_over_if_stale(self) -> None:
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            held = {}
        here = held.get("host") == socket.gethostname()
        if here and held.get("pid") and not alive(int(held["pid"]), held.get("start")):
            self.took_over = held
            self.path.unlink(missing_ok=True)
            return
        who = held.get("what", "another lorakit process")
        where = f"process {held.get('pid', '?')} on {held.get('host', '?')}, since {held.get('since', '?')}"
        raise FolderBusy(
            f"{self.path.parent} is in use by {who} ({where}). Wait for it to finish or stop it, or use "
            f"another folder. If you are sure nothing runs there, delete {self.path}."
        )

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
