"""Atomic writes and file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import LorakitError
from . import faults

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed over `target`.

    A crash or an exception leaves `target` as it was (absent or the old file), never a
    truncated file. Works for files and for folders.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if staged.is_file():
            with open(staged, "rb") as f:
                os.fsync(f.fileno())
        faults.point(f"rename:{target.name}")
        if target.is_dir() and staged.is_dir():
            old = tmp / (target.name + ".old")
            os.replace(target, old)
            os.replace(staged, target)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def leftover_temps(folder: Path, prefix: str = "") -> list[Path]:
    """The temporary folders `atomic_path` leaves when its process is killed mid-write (only
    those whose target name starts with `prefix`)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith("." + prefix) and p.name.endswith(TMP_SUFFIX)
    )


def refuse_input(out: str | os.PathLike, inputs, flag: str = "--out") -> None:
    """Stop before a command writes over one of its own inputs."""
    target = Path(out).resolve()
    for source in inputs:
        if source is not None and Path(source).resolve() == target:
            raise LorakitError(
                f"{flag} {out} is also an input of this command: writing it would destroy the input "
                "before it is read. Choose another output name."
            )


def sha256_file(path: str | os.PathLike, start: int = 0, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            block = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not block:
                break
            h.update(block)
            if remaining is not None:
                remaining -= len(block)
    return h.hexdigest()


def a1111_hashes(path: str | os.PathLike) -> dict[str, str]:
    """The hashes A1111 shows: sha256 (its short hash is the first 10 characters) and the
    legacy 8-character hash of the 64 KiB at offset 1 MiB."""
    full = sha256_file(path)
    return {
        "sha256": full,
        "short_hash": full[:10],
        "legacy_hash": sha256_file(path, start=0x100000, length=0x10000)[:8],
    }
