"""A run owns its output folder while it trains: a lock keeps a second run out, files of an
earlier run are never replaced without `--overwrite`, and what a killed run left half-written is
cleared away before anything new is written."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from ..errors import LorakitError
from ..runs import RUN_FILE, RunFolder, RunRecord
from ..utils.files import leftover_temps
from ..utils.lock import FolderLock

LOCK_FILE = ".lorakit.lock"


class FolderTaken(LorakitError):
    """The output folder holds another run's files."""


@contextmanager
def lock_folder(folder: RunFolder, log):
    """Hold the output folder for this run, and clear what an earlier crash left behind."""
    with FolderLock(folder.root / LOCK_FILE, what=f"the training run '{folder.name}'") as lock:
        if lock.took_over:
            log(
                f"note: took over the lock of process {lock.took_over.get('pid')}, which is no longer running."
            )
        leftovers = [p for where in (folder.root, folder.samples) for p in leftover_temps(where)]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        if leftovers:
            log(
                f"note: removed {len(leftovers)} half-written file(s) an interrupted run left in {folder.root}."
            )
        yield lock


def check_owner(folder: RunFolder, resuming: bool, overwrite: bool, log) -> None:
    """A new run (not a resume) starts only in a folder without another run's record or this
    name's files; with `overwrite` those are deleted first."""
    if resuming:
        return
    record = folder.record
    other = None
    if record.exists():
        try:
            other = RunRecord(folder.root, json.loads(record.read_text(encoding="utf-8")))
        except ValueError:
            other = RunRecord(folder.root, {})
    own = folder.files()
    if other is None and not own:
        return
    if overwrite:
        for path in own:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        log(
            f"--overwrite: removed {len(own)} file(s) of the earlier run and its {RUN_FILE} in {folder.root}."
        )
        return
    if other is not None and other.output_name not in (None, folder.name):
        raise FolderTaken(
            f"{folder.root} holds another run ('{other.output_name}', {other.data.get('status', '?')} "
            f"{other.data.get('finished_at') or other.data.get('started_at', '')}). Use its own output folder, "
            f'for example output_dir = "{(folder.root / folder.name).as_posix()}", or --overwrite to replace '
            f"that run's {RUN_FILE}."
        )
    names = ", ".join(p.name for p in own[:3]) + (" ..." if len(own) > 3 else "")
    raise FolderTaken(
        f"{folder.root} holds an earlier run of '{folder.name}' ({names}). To continue it: --resume auto "
        "(it needs a saved state); to start over and replace its files: --overwrite; or choose another "
        "output_name or output_dir."
    )


def as_os_error(error: Exception) -> OSError | None:
    """The OSError behind a failed write: itself, or the one safetensors reports as text
    ("I/O error: No space left on device (os error 28)")."""
    if isinstance(error, OSError):
        return error
    found = re.search(r"\(os error (\d+)\)", str(error))
    if isinstance(error, SafetensorError) and found:
        number = int(found[1])
        return OSError(number, os.strerror(number))
    return None


def disk_message(error: OSError, path: Path, needed: int | None = None) -> str:
    """What a failed write means for the user, in words: the folder, the space, what to do."""
    folder = path.parent
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        need = f"; the file needs about {_size(needed)}" if needed else ""
        return (
            f"could not write {path}: no space left ({_size(free)} free in {folder}{need}). Free some space "
            "or choose another output_dir, then continue with --resume auto"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"could not write {path}: {error.strerror} ({folder} is read-only or not yours). Choose an "
            "output_dir you can write to, then continue with --resume auto"
        )
    return f"could not write {path}: {error.strerror or error}"


def _size(n: int | None) -> str:
    n = n or 0
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
